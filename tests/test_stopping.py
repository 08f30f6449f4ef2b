"""The audit-based stopping rule on real tiny models, and the relearning attack."""

import numpy as np
from datasets import concatenate_datasets
import pytest
import torch

from hf_recunlearn import E2URecConfig, E2URecTrainer, NegGradConfig, NegGradTrainer, RecConfig, RecTrainer
from hf_recunlearn.audit import ForgetAudit
from hf_recunlearn.data import make_forget_split
from hf_recunlearn.attacks import relearning_attack
from hf_recunlearn.metrics import utility_metrics
from hf_recunlearn.models import build_tiny_model
from hf_recunlearn.scoring import score


COMMON = dict(per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, use_cpu=True, report_to="none",
              audit_steps=1, audit_samples=0)  # fmt: skip


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_run_stops_at_the_step_its_audit_first_passes(tiny_data, tmp_path):
    split = make_forget_split(tiny_data["train"], fraction=0.5, seed=0)  # enough rows for a usable interval
    tokenizer, forget = tiny_data["tokenizer"], split.forget
    holdout = concatenate_datasets([tiny_data["test"], split.retain])
    # An original that memorised the forget rows (fitted hard on them), and a reference that never saw them.
    never_saw = build_tiny_model(tokenizer, "causal", "tiny")
    args = RecConfig(output_dir=str(tmp_path / "original"), use_lora=False, learning_rate=5e-2, num_train_epochs=8,
                     per_device_train_batch_size=4, disable_tqdm=True, use_cpu=True, report_to="none",
                     save_strategy="no", logging_strategy="no")  # fmt: skip
    memoriser = RecTrainer(build_tiny_model(tokenizer, "causal", "tiny"), args, train_dataset=forget,
                           processing_class=tokenizer)  # fmt: skip
    memoriser.train()
    audit = ForgetAudit(forget["label"], holdout["label"], score(never_saw, tokenizer, forget),
                        score(never_saw, tokenizer, holdout), forget_dataset=forget, holdout_dataset=holdout)  # fmt: skip
    config = NegGradConfig(output_dir=str(tmp_path / "out"), learning_rate=5e-2, forget_weight=1.0,
                           lr_scheduler_type="constant", num_train_epochs=10, **COMMON)  # fmt: skip
    trainer = NegGradTrainer(memoriser.model, args=config, retain_dataset=split.retain, forget_dataset=forget,
                             processing_class=tokenizer, forget_audit=audit)  # fmt: skip
    output = trainer.train()
    callback = trainer.audit_callback
    steps = [record.step for record in callback.history]
    assert steps == list(range(len(steps)))  # the original (step 0), then every step
    decisions = [callback.should_stop(record.result) for record in callback.history]
    trace = [(r.step, round(r.result.relative_auc, 3), r.result.relative_interval) for r in callback.history]
    assert decisions[0] is False and decisions[-1] is True and not any(decisions[:-1]), trace
    assert callback.history[0].result.side == 1  # the memorising original starts above the target
    assert callback.stopped_at == steps[-1] == trainer.state.global_step == output.global_step
    assert 1 <= callback.stopped_at < trainer.state.max_steps  # it stopped early, where the audit first passed
    assert output.metrics["audit_stopped_at_step"] == callback.stopped_at


def test_zero_steps_when_the_original_is_already_at_the_target(tiny_data, tmp_path):
    tokenizer, forget, holdout = tiny_data["tokenizer"], tiny_data["split"].forget, tiny_data["test"]
    model = build_tiny_model(tokenizer, "causal", "tiny")
    # The reference is the original itself: it sees the forget set exactly as a model that never saw it would.
    audit = ForgetAudit.from_model(model, tokenizer, forget, holdout)
    args = E2URecConfig(output_dir=str(tmp_path / "out"), num_train_epochs=2, augment_epochs=1, **COMMON)
    trainer = E2URecTrainer(model, args=args, train_dataset=tiny_data["train"], forget_dataset=forget,
                            processing_class=tokenizer, forget_audit=audit)  # fmt: skip
    before = snapshot(trainer.model)
    output = trainer.train()
    assert output.global_step == 0 and trainer.state.global_step == 0
    assert output.metrics["audit_zero_steps"] == 1.0 and output.metrics["audit_stopped_at_step"] == 0
    assert trainer.teacher_outputs is None  # not even the augmented model was trained
    assert all(torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    trainer.create_model_card()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Forgetting audit" in card and "Nothing measurable to forget" in card and "zero training steps" in card
    for user in set(forget["user_id"]):
        assert f"`{user}`" not in card


def test_e2urec_calibrates_alpha_on_the_audit(tiny_data, tmp_path):
    tokenizer, forget, holdout = tiny_data["tokenizer"], tiny_data["split"].forget, tiny_data["test"]
    model = build_tiny_model(tokenizer, "causal", "tiny")
    labels = np.asarray(forget["label"])
    audit = ForgetAudit.from_probs(forget, holdout, np.where(labels == 1, 0.2, 0.8), score(model, tokenizer, holdout))
    args = E2URecConfig(output_dir=str(tmp_path / "out"), num_train_epochs=1, augment_epochs=2,
                        augment_learning_rate=5e-2, alpha_candidates=[0.5, 4.0, 64.0], **COMMON)  # fmt: skip
    trainer = E2URecTrainer(model, args=args, train_dataset=tiny_data["train"], forget_dataset=forget,
                            processing_class=tokenizer, forget_audit=audit)  # fmt: skip
    trainer.train()
    search, target = trainer.alpha_search, audit.target_relative_auc
    assert [step["alpha"] for step in search] == [0.5, 4.0, 64.0][: len(search)]
    # α grows until the teacher reaches the target: every α tried before the last left it short of it.
    assert all(step["relative_auc"] > target for step in search[:-1])
    reached = search[-1]["relative_auc"] <= target
    assert trainer.alpha == (search[-1]["alpha"] if reached else 64.0)
    fixed = E2URecConfig(output_dir=str(tmp_path / "fixed"), calibrate_alpha=False, alpha=3.0, **COMMON)
    assert fixed.alpha == 3.0


def test_relearning_attack_fine_tunes_a_copy_and_measures_recovery(tiny_data, tmp_path):
    tokenizer, train = tiny_data["tokenizer"], tiny_data["train"]
    model = build_tiny_model(tokenizer, "causal", "tiny")
    before = snapshot(model)
    result = relearning_attack(model, tokenizer, train, fraction=0.25, epochs=2, learning_rate=5e-2, batch_size=8,
                               seed=0)  # fmt: skip
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # the attacked model is a copy
    k = round(0.25 * len(train))
    assert result["attack_samples"] == k and result["steps"] == 2 * -(-k // 8)
    order = np.random.default_rng(0).permutation(len(train))
    rest = train.select(sorted(order[k:].tolist()))
    assert result["auc_before"] == pytest.approx(utility_metrics(rest["label"], score(model, tokenizer, rest))["auc"])
    assert result["auc_after"] != pytest.approx(result["auc_before"], abs=1e-6)
    assert result["gain"] == pytest.approx(result["auc_after"] - result["auc_before"])
    with pytest.raises(ValueError, match="`fraction`"):
        relearning_attack(model, tokenizer, train, fraction=1.5)
