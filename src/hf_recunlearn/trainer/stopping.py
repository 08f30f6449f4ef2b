"""Stop an approximate unlearning run where a model that never saw the forgotten data would be."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from transformers import TrainerCallback

from ..audit import AuditResult, ForgetAudit


logger = logging.getLogger(__name__)


@dataclass
class AuditRecord:
    """One audit during a run: the optimizer step it followed (0 = the original, before any step) and its result."""

    step: int
    result: AuditResult


class AuditStoppingCallback(TrainerCallback):
    """
    Audit the model every `every` optimizer steps on a subsample of the forget and hold-out rows, and stop training
    as soon as the audit puts it at the target (the reference model's relative AUC, within its bootstrap interval), or
    past it (a run that jumps over the interval between two audits stops there too rather than forgetting further).

    Works with any [`UnlearningTrainer`] (E2URec, NegGrad, NegKL, Bad-T): they build it from their configuration
    when given a [`~hf_recunlearn.audit.ForgetAudit`] (`stopping="audit"`), and audit the original first — if it is
    already at the target there is nothing measurable to forget and the run trains zero steps.

    Args:
        audit ([`~hf_recunlearn.audit.ForgetAudit`]): the target, built on the full forget and hold-out sets (with its
            datasets, e.g. by `ForgetAudit.from_model`).
        every (`int`, *optional*, defaults to `10`): optimizer steps between audits.
        samples (`int`, *optional*, defaults to `256`): rows of each set scored per audit (0 = all); the interval is
            the subsample's own.
        batch_size (`int`, *optional*, defaults to `64`): scoring batch size.
        seed (`int`, *optional*, defaults to `0`): seed of the subsample.

    Attributes:
        history (`list[AuditRecord]`): every audit of the run, in order.
        stopped_at (`int` or `None`): the step training stopped at because of the audit (0: it never started).
    """

    def __init__(self, audit: ForgetAudit, every: int = 10, samples: int = 256, batch_size: int = 64, seed: int = 0):
        if every < 1:
            raise ValueError(f"`every` must be >= 1, got {every}. It is the number of optimizer steps between audits.")
        if audit.forget_dataset is None or audit.holdout_dataset is None:
            raise ValueError(
                "The stopping rule scores the model on the audit's rows: build the audit with "
                "`ForgetAudit.from_model(reference_model, tokenizer, forget_dataset, holdout_dataset)`."
            )
        self.audit = audit.sample(samples, seed=seed) if samples else audit
        self.every = every
        self.batch_size = batch_size
        self.history: list[AuditRecord] = []
        self.stopped_at: int | None = None
        self._initial_side: int | None = None

    def check(self, model, tokenizer, step: int) -> AuditResult:
        """Audit `model` now and record it under `step`."""
        result = self.audit.audit_model(model, tokenizer, batch_size=self.batch_size)
        self.history.append(AuditRecord(step, result))
        if self._initial_side is None:
            self._initial_side = result.side
        logger.info(
            "Forget audit at step %d: relative AUC %.4f (target %.4f, interval %.4f–%.4f), loss-attack AUC %.4f, KS %.3f "
            "(p %.3g)%s",
            step,
            result.relative_auc,
            result.target_relative_auc,
            *result.relative_interval,
            result.loss_auc,
            result.ks_statistic,
            result.ks_pvalue,
            ": at the target" if result.at_target else "",
        )
        return result

    def should_stop(self, result: AuditResult) -> bool:
        """At the target, or on the other side of it from where the run started."""
        return result.at_target or (self._initial_side not in (None, 0) and result.side == -self._initial_side)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every != 0 or model is None:
            return control
        if self.should_stop(self.check(model, processing_class, state.global_step)):
            self.stopped_at = state.global_step
            control.should_training_stop = True
        return control

    def report(self) -> dict[str, Any]:
        """What the audit decided, for logs, training metrics and the model card (counts and AUCs only; no ids)."""
        first = self.history[0].result if self.history else None
        last = self.history[-1].result if self.history else None
        return {
            "audit_target": self.audit.summary(),
            "audits": len(self.history),
            "stopped_at_step": self.stopped_at,
            "zero_steps": self.stopped_at == 0,
            "original_relative_auc": None if first is None else first.relative_auc,
            "final": None if last is None else last.as_dict(),
        }
