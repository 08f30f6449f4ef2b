"""The audit-based stopping rule on real tiny models, and the relearning attack."""

import numpy as np
import pytest
import torch

from hf_recunlearn import E2URecConfig, E2URecTrainer, NegGradConfig, NegGradTrainer
from hf_recunlearn.audit import ForgetAudit
from hf_recunlearn.data import make_forget_split
from hf_recunlearn.evaluation import relearning_attack
from hf_recunlearn.metrics import utility_metrics
from hf_recunlearn.models import build_tiny_model
from hf_recunlearn.scoring import score


COMMON = dict(per_device_train_batch_size=2, logging_steps=1, disable_tqdm=True, use_cpu=True, report_to="none",
              audit_steps=1, audit_samples=0)  # fmt: skip


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_the_run_stops_at_the_step_its_audit_first_passes(tiny_data, tmp_path):
    tokenizer, holdout = tiny_data["tokenizer"], tiny_data["test"]
    forget = make_forget_split(tiny_data["train"], fraction=0.5, seed=0).forget  # enough rows for a tight interval

    def neggrad(out, audit=None, **overrides):
        args = NegGradConfig(output_dir=str(tmp_path / out), learning_rate=5e-2, forget_weight=1.0,
                             lr_scheduler_type="constant", **COMMON | {"per_device_train_batch_size": 4},
                             **overrides)  # fmt: skip
        return NegGradTrainer(build_tiny_model(tokenizer, "causal", "tiny"), args=args,
                              train_dataset=tiny_data["train"], forget_dataset=forget, processing_class=tokenizer,
                              forget_audit=audit)  # fmt: skip

    # The target: the same run's model after K steps (a constant learning rate and the same data order make the
    # audited run pass through exactly that model at step K), so the audit must pass at step K at the latest.
    k = 4
    ahead = neggrad("ahead", max_steps=k, stopping="fixed")
    ahead.train()
    model = ahead.model
    audit = ForgetAudit(forget["label"], holdout["label"], score(model, tokenizer, forget),
                        score(model, tokenizer, holdout), forget_dataset=forget, holdout_dataset=holdout)  # fmt: skip
    trainer = neggrad("audited", audit, num_train_epochs=5)
    output = trainer.train()
    callback = trainer.audit_callback
    steps = [record.step for record in callback.history]
    assert steps == list(range(len(steps)))  # the original (step 0), then every step
    decisions = [callback.should_stop(record.result) for record in callback.history]
    trace = [(r.step, round(r.result.relative_auc, 3), r.result.relative_interval) for r in callback.history]
    assert decisions[0] is False and decisions[-1] is True and not any(decisions[:-1]), trace
    assert 1 <= callback.stopped_at <= k
    assert callback.stopped_at == steps[-1] == trainer.state.global_step == output.global_step
    assert output.metrics["audit_stopped_at_step"] == callback.stopped_at
    if callback.stopped_at == k:  # the model the target was taken from: exactly at it
        assert callback.history[-1].result.ks_statistic == pytest.approx(0.0, abs=1e-6)


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
    # α grows until the teacher reaches the target: every α tried before the last left it short of it, and the
    # teacher's loss-attack AUC falls as α grows.
    assert all(step["relative_auc"] > target for step in search[:-1])
    values = [step["relative_auc"] for step in search]
    assert values == sorted(values, reverse=True)
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
