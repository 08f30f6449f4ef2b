"""Loss functions of the unlearning methods, as pure tensor functions (no model, no trainer state).

Every function takes logits at answer positions only, so padding can never enter a divergence; where several positions
per row are passed, a mask says which ones count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


TEACHER_FORMS = ("paper", "normalized")


def forgetting_teacher_logits(
    original_logits: torch.Tensor, augmented_logits: torch.Tensor, alpha: float, form: str = "paper"
) -> torch.Tensor:
    r"""
    Logits of E2URec's forgetting teacher (paper §4.2, eq. 4): the original model's logits minus `alpha` times what
    further training on the forgotten data added to them.

    - `form="paper"`: `v_f = v − α·ReLU(v_aug − v)` on raw logits, as in eq. 4 and the authors' code.
    - `form="normalized"`: `v_f = log_softmax(v) − α·ReLU(log_softmax(v_aug) − log_softmax(v))`, the same
      correction on log-probabilities over the classes of the last dimension. A shift that fine-tuning adds to every
      logit alike changes no probability, and with the paper's form it still passes the ReLU on every class; here it
      cancels, so only a change in what the augmented model *prefers* is subtracted.

    `softmax(v_f)` is the teacher distribution in both forms. Over the two answer classes `[No, Yes]` the normalized
    form subtracts from exactly the class the augmented model moved towards.

    Args:
        original_logits (`torch.Tensor` of shape `(batch, classes)`): `v`, the original model's logits.
        augmented_logits (`torch.Tensor` of shape `(batch, classes)`): `v_aug`, the augmented model's logits.
        alpha (`float`): strength of the correction, `>= 0`.
        form (`str`, *optional*, defaults to `"paper"`): `"paper"` or `"normalized"`.

    Returns:
        `torch.Tensor` of shape `(batch, classes)`: `v_f`.
    """
    if original_logits.shape != augmented_logits.shape:
        raise ValueError(
            f"`original_logits` {tuple(original_logits.shape)} and `augmented_logits` "
            f"{tuple(augmented_logits.shape)} must have the same shape."
        )
    if alpha < 0:
        raise ValueError(f"`alpha` must be >= 0, got {alpha}.")
    v = original_logits.float()
    v_aug = augmented_logits.float()
    if form == "paper":
        return v - alpha * F.relu(v_aug - v)
    if form == "normalized":
        log_p = v.log_softmax(-1)
        return log_p - alpha * F.relu(v_aug.log_softmax(-1) - log_p)
    raise ValueError(f"`form` must be one of {TEACHER_FORMS}, got {form!r}.")


def kl_divergence(
    teacher_logits: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""
    Mean over unmasked positions of `KL(softmax(teacher) ‖ softmax(student))` (natural log), summed over classes.

    The gradient flows into `student_logits` only (the teacher is detached). This is the reference code's
    soft cross-entropy minus the teacher's entropy: same gradient, but 0 when the distributions agree.

    Args:
        teacher_logits (`torch.Tensor` of shape `(..., classes)`): teacher logits (or log-probabilities).
        student_logits (`torch.Tensor` of shape `(..., classes)`): student logits.
        mask (`torch.Tensor` of shape `(...)`, *optional*): `True` (or 1) where a position counts. Positions outside
            the mask (padding, rows of the other data set) contribute nothing, not even to the denominator.

    Returns:
        Scalar `torch.Tensor`. With an all-false mask it is `0.0` and still connected to `student_logits`, so a batch
        without such rows backpropagates zeros instead of failing.
    """
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"`teacher_logits` {tuple(teacher_logits.shape)} and `student_logits` {tuple(student_logits.shape)} "
            "must have the same shape."
        )
    log_q = student_logits.float().log_softmax(-1)
    log_p = teacher_logits.detach().float().log_softmax(-1)
    per_position = (log_p.exp() * (log_p - log_q)).sum(-1)
    return _masked_mean(per_position, mask)


def token_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None, ignore_index: int = -100
) -> torch.Tensor:
    r"""
    Mean negative log-likelihood of `labels` over the label tokens of the selected rows: `L_pred` of E2URec eq. 2
    (averaged, like `transformers`' loss, instead of summed).

    Args:
        logits (`torch.Tensor` of shape `(batch, seq, vocab)`): `logits[:, t]` predicts `labels[:, t]` (shift causal
            logits before calling).
        labels (`torch.Tensor` of shape `(batch, seq)`): target ids, `ignore_index` where nothing is predicted.
        mask (`torch.Tensor` of shape `(batch,)`, *optional*): rows that count.

    Returns:
        Scalar `torch.Tensor`; `0.0` (connected to `logits`) when no token is selected.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"`logits` {tuple(logits.shape)} do not match `labels` {tuple(labels.shape)}.")
    valid = labels != ignore_index
    if mask is not None:
        valid = valid & mask.to(torch.bool).unsqueeze(-1)
    nll = F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.masked_fill(~valid, 0).reshape(-1),
        reduction="none",
    ).view_as(labels)
    return _masked_mean(nll, valid)


def e2urec_loss(
    forget_kl: torch.Tensor,
    retain_kl: torch.Tensor,
    retain_ce: torch.Tensor,
    forget_weight: float,
    remember_weight: float,
) -> torch.Tensor:
    r"""
    E2URec's objective (eqs. 5–7): `forget_weight · L_FGT + remember_weight · L_REM` with
    `L_REM = L_pred(D_r) + KL(M_r ‖ M_u)`. The paper sets `forget_weight = β`, `remember_weight = 1 − β`.

    Args:
        forget_kl (scalar `torch.Tensor`): `L_FGT`, KL from the forgetting teacher on forgotten samples.
        retain_kl (scalar `torch.Tensor`): KL from the remembering teacher on retained samples.
        retain_ce (scalar `torch.Tensor`): `L_pred` on retained samples.
        forget_weight, remember_weight (`float`): the weights of the two terms.
    """
    return forget_weight * forget_kl + remember_weight * (retain_ce + retain_kl)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean() if values.numel() else values.sum()
    mask = mask.to(device=values.device, dtype=torch.bool)
    if mask.shape != values.shape:
        raise ValueError(f"`mask` {tuple(mask.shape)} does not match the positions {tuple(values.shape)}.")
    count = mask.sum()
    total = values.masked_fill(~mask, 0.0).sum()
    return total / count.clamp(min=1)
