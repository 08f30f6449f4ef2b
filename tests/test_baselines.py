"""The baselines (NegGrad, NegKL, Bad-T, retrain) and evaluate_unlearning, on tiny offline models."""

import math

import numpy as np
import pytest
import torch

from hf_recunlearn import (
    BadTeacherConfig,
    BadTeacherTrainer,
    E2URecConfig,
    ModelPredictions,
    NegGradConfig,
    NegGradTrainer,
    NegKLConfig,
    NegKLTrainer,
    Predictions,
    RecConfig,
    evaluate_unlearning,
    retrain_reference,
)
from hf_recunlearn.evaluation import EVALUATE_UNLEARNING_KEYS
from hf_recunlearn.losses import kl_divergence
from hf_recunlearn.models import build_tiny_model


COMMON = dict(num_train_epochs=2, per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, use_cpu=True)


def build(trainer_cls, config_cls, tiny_data, tmp_path, teacher=None, **overrides):
    args = config_cls(output_dir=str(tmp_path / "out"), **{**COMMON, **overrides})
    extra = (teacher,) if teacher is not None else ()
    return trainer_cls(
        build_tiny_model(tiny_data["tokenizer"], "causal", "tiny"),
        *extra,
        args=args,
        train_dataset=tiny_data["train"],
        forget_dataset=tiny_data["split"].forget,
        processing_class=tiny_data["tokenizer"],
    )


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_neggrad_ascends_the_forget_loss_and_trains_every_weight_by_default(tiny_data, tmp_path):
    trainer = build(NegGradTrainer, NegGradConfig, tiny_data, tmp_path, learning_rate=1e-2, forget_weight=1.0)
    assert trainer.num_trainable_parameters == sum(p.numel() for p in trainer.model.parameters())
    before = snapshot(trainer.model)
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss/forget" in e]
    assert logs[-1]["loss/forget"] > logs[0]["loss/forget"]  # the forgotten samples got harder to predict
    assert {"loss/forget", "loss/retain_ce"} <= set(logs[0])
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(before[n], p)]
    assert "model.layers.0.self_attn.q_proj.weight" in changed and "model.embed_tokens.weight" in changed


def test_neggrad_with_lora_changes_only_the_adapter(tiny_data, tmp_path):
    trainer = build(NegGradTrainer, NegGradConfig, tiny_data, tmp_path, use_lora=True, learning_rate=1e-2)
    before = snapshot(trainer.model)
    trainer.train()
    for name, value in trainer.model.named_parameters():
        assert torch.equal(before[name], value) != ("lora_" in name), name


def test_negkl_moves_the_forget_predictions_away_from_the_original(tiny_data, tmp_path):
    trainer = build(NegKLTrainer, NegKLConfig, tiny_data, tmp_path, learning_rate=1e-2, forget_weight=1.0)
    forget = tiny_data["split"].forget
    original = trainer.teacher_logits(trainer.model, forget)
    trainer.train()
    torch.testing.assert_close(trainer.teacher_outputs["forget"], original)  # computed before any step
    assert kl_divergence(original, trainer.teacher_logits(trainer.model, forget)).item() > 1e-3
    with pytest.raises(RuntimeError, match="original model is gone"):
        with trainer.original_model():
            pass


def test_bad_teacher_distils_the_incompetent_teacher_and_leaves_it_untouched(tiny_data, tmp_path):
    bad = build_tiny_model(tiny_data["tokenizer"], "causal", "tiny", seed=7)
    bad_before = snapshot(bad)
    trainer = build(BadTeacherTrainer, BadTeacherConfig, tiny_data, tmp_path, teacher=bad, learning_rate=1e-2,
                    num_train_epochs=4)  # fmt: skip
    forget = tiny_data["split"].forget
    before = trainer.teacher_logits(trainer.model, forget)
    trainer.train()
    teacher = trainer.teacher_outputs["forget"]
    after = trainer.teacher_logits(trainer.model, forget)
    assert kl_divergence(teacher, after).item() < kl_divergence(teacher, before).item()
    assert all(torch.equal(bad_before[n], p) for n, p in bad.named_parameters())
    assert trainer.bad_teacher_model is None  # released after its outputs were taken
    assert {"loss/forget", "loss/retain_kl"} <= {k for e in trainer.state.log_history for k in e}


def test_bad_teacher_default_is_a_seeded_random_model(tiny_data, tmp_path):
    outputs = []
    for _ in range(2):
        trainer = build(BadTeacherTrainer, BadTeacherConfig, tiny_data, tmp_path, bad_teacher_seed=3)
        outputs.append(trainer.compute_teacher_outputs()["forget"])
    torch.testing.assert_close(outputs[0], outputs[1])


def test_retrain_reference_trains_the_original_recipe_on_the_retained_data(tiny_data, tmp_path):
    split = tiny_data["split"]
    args = RecConfig(output_dir=str(tmp_path / "retrain"), max_steps=2, per_device_train_batch_size=4,
                     disable_tqdm=True, use_cpu=True)  # fmt: skip
    trainer = retrain_reference(
        lambda: build_tiny_model(tiny_data["tokenizer"], "causal", "tiny"), args, split.retain,
        processing_class=tiny_data["tokenizer"],
    )  # fmt: skip
    assert trainer.train_dataset is split.retain
    assert trainer.state.global_step == 2 and trainer.retrain_runtime > 0


def predictions(forget_probs, test_probs, forget_labels=(1, 0, 1, 0), test_labels=(1, 0, 1, 0)):
    return ModelPredictions(
        forget=Predictions(np.asarray(forget_probs, float), np.asarray(forget_labels)),
        test=Predictions(np.asarray(test_probs, float), np.asarray(test_labels)),
    )


def test_evaluate_unlearning_keys_and_values_by_hand():
    test = [0.7, 0.3, 0.6, 0.4]
    original = predictions([0.9, 0.1, 0.9, 0.1], test)  # confident on D_f: memorised
    retrained = predictions([0.6, 0.4, 0.5, 0.5], test)
    other_seed = predictions([0.55, 0.45, 0.5, 0.5], test)
    unlearned = predictions([0.6, 0.4, 0.5, 0.5], test)  # exactly the retrained model on D_f
    out = evaluate_unlearning(unlearned, original, retrained, retrained_other=other_seed, unlearning_time=1.5,
                              trainable_parameters=10, full_vocab=False)  # fmt: skip
    assert tuple(out) == EVALUATE_UNLEARNING_KEYS
    assert out["forget_jsd"] == 0.0 and out["forget_l2"] == 0.0
    assert out["gap_closed"] == pytest.approx(1.0 / (1.0 - out["noise_floor_jsd"] / out["original_forget_jsd"]))
    assert out["gap_closed"] > 1.0  # closer to the retrained model than another seed is
    assert out["original_memorised"] is True
    assert out["original_forget_confidence"] == pytest.approx(0.9)
    assert out["forget_confidence"] == pytest.approx((0.6 + 0.6 + 0.5 + 0.5) / 4)
    assert out["noise_floor_l2"] == pytest.approx(math.sqrt(2) * 0.05 / 2)
    assert out["original_mia_auc"] == 1.0  # every forgotten sample is more confident than every test sample
    assert math.isnan(out["forget_symmetrised_kl_full_vocab"])
    assert out["unlearning_time_s"] == 1.5 and out["trainable_parameters"] == 10


def test_evaluate_unlearning_scores_models_and_reads_a_trainer(tiny_data, tmp_path):
    from hf_recunlearn.evaluation import predict_unlearning_sets

    tokenizer, split, test = tiny_data["tokenizer"], tiny_data["split"], tiny_data["test"]
    trainer = build(NegGradTrainer, NegGradConfig, tiny_data, tmp_path, use_lora=True, max_steps=1)
    original = predict_unlearning_sets(trainer.model, tokenizer, split.forget, test)
    trainer.train()
    retrained = build_tiny_model(tokenizer, "causal", "tiny", seed=5)
    out = evaluate_unlearning(trainer, original, retrained, forget_dataset=split.forget, test_dataset=test)
    assert out["trainable_parameters"] == trainer.num_trainable_parameters
    assert out["unlearning_time_s"] == pytest.approx(trainer.unlearning_runtime)
    assert out["forget_symmetrised_kl_full_vocab"] >= 0.0 and out["forget_jsd"] >= 0.0
    assert math.isnan(out["gap_closed"])  # no second retrain given: no floor


def test_args_of_another_method_are_refused_by_config_class(tiny_data, tmp_path):
    args = E2URecConfig(output_dir=str(tmp_path / "out"), **COMMON)
    with pytest.raises(TypeError, match=r"`args` must be an instance of `NegGradConfig` for NegGradTrainer, got E2URec"):
        NegGradTrainer(build_tiny_model(tiny_data["tokenizer"], "causal", "tiny"), args=args,
                       train_dataset=tiny_data["train"], forget_dataset=tiny_data["split"].forget,
                       processing_class=tiny_data["tokenizer"])  # fmt: skip
    assert not (tmp_path / "out").exists()  # refused before anything is built
