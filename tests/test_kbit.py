"""Real-LLM readiness (#15): every method on a 4-bit base (QLoRA), under bf16 and with gradient checkpointing.

Real bitsandbytes `Linear4bit` layers on the CPU (bitsandbytes >= 0.45 runs them there) and real PEFT adapters, on a
tiny llama built from a config, saved, and loaded back quantized as a user's checkpoint would be. Skipped, with the
reason, when bitsandbytes is not installed (`pip install hf_recunlearn[kbit]`).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from transformers import set_seed

from hf_recunlearn.data import make_forget_split
from hf_recunlearn.models import is_quantized, load_model, require_bitsandbytes
from hf_recunlearn.scoring import AnswerTokens, score
from hf_recunlearn.trainer.rec_config import CHECKPOINTING_FIELD
from hf_recunlearn.trainer import (
    APPROXIMATE_METHODS,
    APAConfig,
    APATrainer,
    E2URecConfig,
    E2URecTrainer,
    RecConfig,
    RecTrainer,
    SISAConfig,
    SISATrainer,
)

from apa_helpers import single_thread, tiny_base, tiny_datasets, tiny_tokenizer


bnb = pytest.importorskip(
    "bitsandbytes", reason="bitsandbytes is not installed; `pip install hf_recunlearn[kbit]` runs these tests"
)

STEPS = 3  # LoRA B starts at 0, so A gets its first gradient in step 2


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def data():
    ds = tiny_datasets(num_users=12, sizes=(32, 12, 12))
    split = make_forget_split(ds["train"], user_ids=sorted(set(ds["train"]["user_id"]))[:2])
    return {**ds, "forget": split.forget}


@pytest.fixture(scope="module")
def base_dir(data, tmp_path_factory):
    """A tiny llama checkpoint on disk: what `load_model(..., load_in_4bit=True)` quantizes on load."""
    tokenizer = tiny_tokenizer(data)
    path = tmp_path_factory.mktemp("tiny-llama")
    # Hidden size 64: bitsandbytes' CPU inference kernel needs in_features >= its 64-weight quantization block.
    tiny_base(tokenizer, size="small").save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def load_4bit(base_dir, compute="float32"):
    model, tokenizer = load_model(base_dir, torch_dtype=compute, load_in_4bit=True)
    assert is_quantized(model)
    return model, tokenizer


def checkpointing(on: bool = True) -> dict:
    """`gradient_checkpointing=True` under this transformers' name for it, reentrant (the case that needs input grads)."""
    if not on:
        return {}
    return {CHECKPOINTING_FIELD: True, f"{CHECKPOINTING_FIELD}_kwargs": {"use_reentrant": True}}


def common(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=16,
        learning_rate=1e-2,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=1000,
        report_to="none",
    )
    settings.update(overrides)
    return settings


def base_weights(model) -> dict[str, torch.Tensor]:
    """Every tensor of the base model, 4-bit packed weights and their quantization state included (as float)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return {n: t.detach().float().clone() for n, t in base.state_dict().items() if ".lora_" not in n}


def trainable(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_only_lora_changed(before_base, after_base, before_lora, model):
    after = dict(model.named_parameters())
    assert before_lora, "nothing was trainable"
    assert all(".lora_" in n for n in before_lora), sorted(before_lora)
    unchanged = [n for n, t in before_lora.items() if torch.equal(t, after[n].detach())]
    assert not unchanged, f"LoRA weights that did not train: {unchanged}"
    assert before_base.keys() == after_base.keys()
    changed = [n for n in before_base if not torch.equal(before_base[n], after_base[n])]
    assert not changed, f"base weights that changed: {changed}"


# ------------------------------------------------------------------------------------------------ loading and errors


def test_load_in_4bit_gives_bitsandbytes_layers(base_dir):
    model, _ = load_4bit(base_dir)
    layers = {type(m).__name__ for m in model.modules()}
    assert "Linear4bit" in layers
    assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)


def test_a_missing_bitsandbytes_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"hf_recunlearn\[kbit\]") as err:
        require_bitsandbytes("load_in_4bit")
    assert "`load_in_4bit`" in str(err.value)
    with pytest.raises(ImportError, match=r"hf_recunlearn\[kbit\]"):
        RecConfig(output_dir="x", load_in_4bit=True)


def test_config_errors_name_the_argument(base_dir, data, tmp_path):
    with pytest.raises(ValueError, match="use_lora"):
        RecConfig(output_dir="x", load_in_4bit=True, use_lora=False)
    with pytest.raises(ValueError, match="choose one"):
        RecConfig(output_dir="x", load_in_4bit=True, load_in_8bit=True)
    with pytest.raises(ValueError, match="torch_dtype"):
        RecConfig(output_dir="x", torch_dtype="float12")
    plain, tokenizer = load_model(base_dir)
    with pytest.raises(ValueError, match="load_in_4bit=True"):
        RecTrainer(plain, RecConfig(**common(tmp_path), load_in_4bit=True), train_dataset=data["train"],
                   processing_class=tokenizer)  # fmt: skip
    # NegGrad fine-tunes every weight by default, which a 4-bit base cannot do: the error says to use a LoRA student.
    trainer_cls, config_cls = APPROXIMATE_METHODS["neggrad"]
    quantized, tokenizer = load_4bit(base_dir)
    with pytest.raises(ValueError, match="use_lora=True"):
        trainer_cls(quantized, args=config_cls(**common(tmp_path)), train_dataset=data["train"],
                    forget_dataset=data["forget"], processing_class=tokenizer)  # fmt: skip


# ------------------------------------------------------------------------------------------------ one run per method


@pytest.mark.parametrize("gradient_checkpointing", [False, True], ids=["plain", "checkpointing"])
def test_rec_trainer_qlora_trains_only_lora(base_dir, data, tmp_path, gradient_checkpointing):
    """The QLoRA recipe from a model id: 4-bit base, LoRA on it; with checkpointing too (inputs require grad)."""
    args = RecConfig(**common(tmp_path), load_in_4bit=True, **checkpointing(gradient_checkpointing))
    trainer = RecTrainer(base_dir, args, train_dataset=data["train"])
    assert is_quantized(trainer.model)
    base, lora = base_weights(trainer.model), trainable(trainer.model)
    trainer.train()
    assert_only_lora_changed(base, base_weights(trainer.model), lora, trainer.model)


def test_gradient_checkpointing_trains_every_lora_weight_on_a_full_precision_base(base_dir, data, tmp_path):
    """Without inputs that require grad, the reentrant checkpoint gives the frozen base's LoRA no gradient."""
    args = RecConfig(**common(tmp_path), **checkpointing())
    trainer = RecTrainer(base_dir, args, train_dataset=data["train"])
    base, lora = base_weights(trainer.model), trainable(trainer.model)
    trainer.train()
    assert_only_lora_changed(base, base_weights(trainer.model), lora, trainer.model)


@pytest.mark.parametrize("method", sorted(APPROXIMATE_METHODS))
def test_every_unlearning_method_trains_only_its_student_on_a_4bit_base(base_dir, data, tmp_path, method):
    trainer_cls, config_cls = APPROXIMATE_METHODS[method]
    extra = (
        {"augment_method": "lora", "augment_epochs": 1.0, "augment_learning_rate": 1e-2} if method == "e2urec" else {}
    )
    args = config_cls(**common(tmp_path), use_lora=True, **extra)  # the baselines default to full fine-tuning
    model, tokenizer = load_4bit(base_dir)
    trainer = trainer_cls(model, args=args, train_dataset=data["train"], forget_dataset=data["forget"],
                          processing_class=tokenizer)  # fmt: skip
    base, lora = base_weights(trainer.model), trainable(trainer.model)
    trainer.train()
    assert_only_lora_changed(base, base_weights(trainer.model), lora, trainer.model)


def test_e2urec_trains_the_augmented_model_as_a_lora_on_a_quantized_base(base_dir, data, tmp_path):
    """The default `augment_method='full'` cannot copy and fine-tune 4-bit weights: it warns and uses a LoRA."""
    model, tokenizer = load_4bit(base_dir)
    args = E2URecConfig(**common(tmp_path), augment_epochs=1.0, augment_learning_rate=5e-2)
    with pytest.warns(UserWarning, match="augment_method='lora'"):
        trainer = E2URecTrainer(model, args=args, train_dataset=data["train"], forget_dataset=data["forget"],
                                processing_class=tokenizer)  # fmt: skip
    base = base_weights(trainer.model)
    teachers = trainer.compute_teacher_outputs()
    assert trainer.augmented_shift > 0  # the temporary adapter did train, and moved the answers on D_f
    assert list(trainer.model.peft_config) == ["default"]  # ...and is gone
    assert teachers["forget"].shape == (len(data["forget"]), 2)
    changed = [n for n, t in base_weights(trainer.model).items() if not torch.equal(t, base[n])]
    assert not changed


def test_e2urec_keeps_a_qlora_originals_adapter_unmerged_and_frozen(base_dir, data, tmp_path):
    """
    A QLoRA original is a 4-bit base plus its adapter. Merging the adapter into 4-bit weights would round it away, so
    the student is added next to it; "the original" (the remembering teacher) is that adapter alone.
    """
    original = RecTrainer(base_dir, RecConfig(**common(tmp_path / "orig"), load_in_4bit=True),
                          train_dataset=data["train"])  # fmt: skip
    original.train()
    tokenizer = original.processing_class
    answers = AnswerTokens.from_dataset(tokenizer, data["train"])
    before = score(original.model, tokenizer, data["forget"], answers)
    args = E2URecConfig(**common(tmp_path), augment_method="lora", augment_epochs=1.0, augment_learning_rate=5e-2)
    trainer = E2URecTrainer(original.model, args=args, train_dataset=data["train"], forget_dataset=data["forget"],
                            processing_class=tokenizer)  # fmt: skip
    model = trainer.model
    assert sorted(model.peft_config) == ["default", "student"]
    assert sorted(model.active_adapters) == ["default", "student"]
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if ".default." in n}
    assert frozen and not any(p.requires_grad for n, p in model.named_parameters() if ".default." in n)
    base, lora = base_weights(model), trainable(model)
    assert all(".student." in n for n in lora)
    with trainer.original_model() as teacher:
        np.testing.assert_allclose(score(teacher, tokenizer, data["forget"], answers), before, atol=1e-6)
    trainer.train()
    assert_only_lora_changed(base, base_weights(model), lora, model)
    assert all(torch.equal(p.detach(), frozen[n]) for n, p in model.named_parameters() if n in frozen)
    with trainer.original_model() as teacher:  # the original is still exactly the QLoRA original
        np.testing.assert_allclose(score(teacher, tokenizer, data["forget"], answers), before, atol=1e-6)
    assert sorted(model.active_adapters) == ["default", "student"]


# ------------------------------------------------------------------------------------------------ APA and SISA


def initial_adapter(model, lora_config, seed):
    set_seed(seed)
    peft_model = get_peft_model(model, copy.deepcopy(lora_config))
    state = {n: t.detach().clone() for n, t in get_peft_model_state_dict(peft_model).items()}
    peft_model.unload()
    return state


def adapter_alone(model, lora_config, state, tokenizer, dataset, answers):
    peft_model = get_peft_model(model, copy.deepcopy(lora_config))
    set_peft_model_state_dict(peft_model, state)
    try:
        return score(peft_model, tokenizer, dataset, answers, batch_size=16)
    finally:
        peft_model.unload()


@pytest.mark.parametrize("trainer_cls", [APATrainer, SISATrainer], ids=["apa", "sisa"])
def test_shard_adapters_train_on_a_4bit_base_and_leave_it_untouched(base_dir, data, tmp_path, trainer_cls):
    config_cls = APAConfig if trainer_cls is APATrainer else SISAConfig
    model, tokenizer = load_4bit(base_dir)
    base = base_weights(model)
    args = config_cls(**common(tmp_path), num_shards=2, num_neighbors=4, salt_dir=str(tmp_path / "salt"))
    trainer = trainer_cls(model, args, train_dataset=data["train"], processing_class=tokenizer,
                          eval_dataset={"valid": data["valid"], "test": data["test"]})  # fmt: skip
    trainer.train()
    state = trainer.apa_state
    for k, adapter in enumerate(state.shard_adapters):
        init = initial_adapter(model, state.lora_config, trainer._shard_seed(k))
        assert adapter.keys() == init.keys()
        unchanged = [n for n in adapter if torch.equal(adapter[n], init[n])]
        assert not unchanged, f"shard {k}: LoRA weights that did not train: {unchanged}"
    after = base_weights(model)
    assert not [n for n in base if not torch.equal(base[n], after[n])]
    assert not hasattr(model, "peft_config")  # every shard adapter was removed again
    metrics = trainer.evaluate()
    assert np.isfinite(metrics["eval_test_logloss"])


@pytest.mark.parametrize(
    "variant",
    ["4bit", "4bit-checkpointing", "4bit-bf16", "bf16", "8bit"],
)
def test_apa_one_hot_aggregation_on_a_4bit_base_equals_that_shards_adapter(base_dir, data, tmp_path, variant):
    """
    The one-pass mixture hooks the base's `Linear4bit` (or `Linear8bitLt`) layers: with one-hot weights it must compute
    what PEFT computes for that shard's adapter alone, and the static merged adapter must load on the quantized base
    and match the mixture.
    """
    quantized = variant.startswith("4bit")
    bf16 = variant.endswith("bf16")
    dtype = "bfloat16" if bf16 else "float32"
    if variant == "8bit":
        model, tokenizer = load_model(base_dir, load_in_8bit=True)
        assert isinstance(model.model.layers[0].self_attn.q_proj, bnb.nn.Linear8bitLt)
    elif quantized:
        model, tokenizer = load_4bit(base_dir, compute=dtype)
    else:
        model, tokenizer = load_model(base_dir, torch_dtype=dtype)
    args = APAConfig(
        **common(tmp_path), num_shards=2, num_neighbors=4, salt_dir=str(tmp_path / "salt"), bf16=bf16,
        **checkpointing(variant.endswith("checkpointing")),
    )  # fmt: skip
    trainer = APATrainer(model, args, train_dataset=data["train"], processing_class=tokenizer,
                         eval_dataset={"valid": data["valid"], "test": data["test"]})  # fmt: skip
    trainer.train()
    rec = trainer.recommender
    test = data["test"]
    answers = rec.answer_tokens
    outputs = []
    for k in range(rec.num_shards):
        one_hot = np.zeros((len(test), rec.num_shards))
        one_hot[:, k] = 1.0
        alone = adapter_alone(model, rec.state.lora_config, rec.state.shard_adapters[k], tokenizer, test, answers)
        for level in ("ND", "D"):
            mixed = rec.predict(test, batch_size=16, weights=one_hot, level=level)
            np.testing.assert_allclose(mixed, alone, atol=1e-4, err_msg=f"shard {k}, level {level}")
        np.testing.assert_allclose(rec.predict_shard(test, k, batch_size=16), alone, atol=1e-4)
        outputs.append(alone)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # the shards differ, so matching one is not trivial
    # A static adapter for fixed weights: PEFT loads it onto the same 4-bit base and serves it alone.
    weights = [0.3, 0.7]
    rec.export_adapter(tmp_path / "merged", weights, level="ND")
    merged = PeftModel.from_pretrained(model, tmp_path / "merged")
    try:
        static = score(merged, tokenizer, test, answers, batch_size=16)
    finally:
        merged.unload()
    mixed = rec.predict(test, batch_size=16, weights=np.tile(weights, (len(test), 1)), level="ND")
    np.testing.assert_allclose(static, mixed, atol=1e-4)


# ------------------------------------------------------------------------------------------------ command line


@pytest.mark.parametrize("method", ["tallrec", "apa"])
def test_cli_train_with_4bit_and_checkpointing(tmp_path, method):
    """`train --load_in_4bit --gradient_checkpointing` reaches the recipe, for one recommender and for shards."""
    import json
    from pathlib import Path

    from hf_recunlearn.cli import main

    fixtures = Path(__file__).parent / "fixtures" / "ml-100k"
    run, out = tmp_path / "run", tmp_path / "train.json"
    args = ["train", "--data", f"movielens-100k:{fixtures}", "--output_dir", str(run), "--history_len", "3",
            "--num_train_epochs", "1", "--per_device_train_batch_size", "4", "--method", method, "--load_in_4bit",
            "--gradient_checkpointing", "--json", str(out)] + (["--num_shards", "2"] if method == "apa" else [])  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert np.isfinite(result["logloss"])
    if method == "tallrec":
        adapter = json.loads((run / "original" / "adapter_config.json").read_text())
        assert adapter["peft_type"] == "LORA"
    else:
        assert len(list((run / "apa").glob("shard_*/adapter_model.safetensors"))) == 2
