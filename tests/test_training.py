import numpy as np
import pytest
import torch

from hf_recunlearn.data import build_datasets, make_synthetic
from hf_recunlearn.metrics import utility_metrics
from hf_recunlearn.models import build_tiny_model, build_tokenizer
from hf_recunlearn.scoring import score
from hf_recunlearn.trainer import RecConfig, RecTrainer

from popularity import item_popularity_auc


def _config(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=1, max_steps=6,
                learning_rate=1e-2, use_cpu=True, disable_tqdm=True, lora_dropout=0.0)  # fmt: skip
    base.update(kw)
    return RecConfig(**base)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_lora_training_changes_every_lora_weight_and_no_base_weight(arch, tmp_path, synthetic_splits, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, arch, "tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = RecTrainer(model, _config(tmp_path), train_dataset=synthetic_splits["train"], processing_class=tiny_tokenizer)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert lora_before, "LoRA was not applied"
    trainer.train()
    for name, param in trainer.model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(param, lora_before[name]), f"{name} did not change"
            assert param.requires_grad
        else:
            assert not param.requires_grad
    base = trainer.model.get_base_model().state_dict()
    for key, value in before.items():
        peft_key = next(k for k in base if k.replace(".base_layer", "") == key)
        assert torch.equal(base[peft_key], value), f"base weight {key} changed"
    trainer.save_model()
    assert (tmp_path / "adapter_config.json").is_file() and (tmp_path / "adapter_model.safetensors").is_file()


def test_evaluation_reports_auc(tmp_path, synthetic_splits, tiny_tokenizer):
    model = build_tiny_model(tiny_tokenizer, "causal", "tiny")
    trainer = RecTrainer(model, _config(tmp_path, max_steps=2), train_dataset=synthetic_splits["train"],
                         eval_dataset=synthetic_splits["test"], processing_class=tiny_tokenizer)  # fmt: skip
    metrics = trainer.evaluate()
    assert {"eval_auc", "eval_acc", "eval_logloss"} <= set(metrics)
    probs = score(trainer.model, tiny_tokenizer, synthetic_splits["test"])
    assert metrics["eval_auc"] == pytest.approx(utility_metrics(synthetic_splits["test"]["label"], probs)["auc"], abs=1e-6)


def test_training_beats_the_item_popularity_baseline(tmp_path):
    """The model learns more than how liked each item is: it beats that baseline on the same test split."""
    # Four history items show the user's generosity and tastes; with two, a small model only matched the baseline.
    splits = build_datasets(make_synthetic(num_users=100, seed=0), history_len=4)
    tok = build_tokenizer([p for s in splits for p in splits[s]["prompt"]])
    model = build_tiny_model(tok, "causal", "small", seed=0)
    args = _config(tmp_path, use_lora=False, max_steps=-1, num_train_epochs=1, learning_rate=2e-3,
                   per_device_train_batch_size=16, warmup_steps=10)  # fmt: skip
    trainer = RecTrainer(model, args, train_dataset=splits["train"], processing_class=tok)
    trainer.train()
    auc = utility_metrics(splits["test"]["label"], score(trainer.model, tok, splits["test"]))["auc"]
    baseline = item_popularity_auc(splits["train"], splits["test"])
    assert auc > baseline, (auc, baseline)


def test_config_validation_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="lora_r"):
        RecConfig(output_dir=str(tmp_path), lora_r=0)
    with pytest.raises(ValueError, match="lora_dropout"):
        RecConfig(output_dir=str(tmp_path), lora_dropout=1.5)
