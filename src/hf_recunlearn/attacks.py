"""The relearning attack: does fine-tuning on a little of the forgotten data bring the rest back?"""

from __future__ import annotations

import numpy as np

from .metrics import utility_metrics


def relearning_attack(
    model,
    tokenizer,
    forget_dataset,
    fraction: float = 0.1,
    epochs: float = 2.0,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    seed: int = 0,
    scoring_batch_size: int = 64,
) -> dict[str, float]:
    """
    The relearning attack: fine-tune a *copy* of `model` (every weight; a PEFT adapter is merged first) for a few
    steps on a seeded `fraction` of the forgotten samples and measure how far its AUC on the other samples recovers.
    Approximate unlearning that hides rather than removes knowledge recovers more than a retrained model does under
    the same attack; compare the `gain` with the retrained model's.

    Returns:
        `dict` with `auc_before`, `auc_after` (on the samples not fine-tuned on), `gain` (after − before), `steps`
        (optimizer steps of the attack) and `attack_samples`.
    """
    import copy

    from peft import PeftModel

    from .pipeline import _has_accelerator
    from .scoring import score
    from .trainer import RecConfig, RecTrainer

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"`fraction` must be in (0, 1), got {fraction}: the share of the forget set fine-tuned on.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(forget_dataset))
    k = max(1, int(round(fraction * len(forget_dataset))))
    attack, rest = forget_dataset.select(sorted(order[:k].tolist())), forget_dataset.select(sorted(order[k:].tolist()))
    labels = np.asarray(rest["label"], dtype=int)
    before = utility_metrics(labels, score(model, tokenizer, rest, batch_size=scoring_batch_size))["auc"]
    victim = copy.deepcopy(model)
    if isinstance(victim, PeftModel):
        victim = victim.merge_and_unload()
    victim.requires_grad_(True)
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        args = RecConfig(output_dir=out, use_lora=False, learning_rate=learning_rate, num_train_epochs=epochs,
                         per_device_train_batch_size=batch_size, seed=seed, save_strategy="no", logging_strategy="no",
                         report_to="none", disable_tqdm=True, use_cpu=not _has_accelerator())  # fmt: skip
        trainer = RecTrainer(victim, args, train_dataset=attack, processing_class=tokenizer)
        trainer.train()
        steps = trainer.state.global_step
    after = utility_metrics(labels, score(trainer.model, tokenizer, rest, batch_size=scoring_batch_size))["auc"]
    del trainer, victim
    return {"auc_before": before, "auc_after": after, "gain": after - before, "steps": steps, "attack_samples": k}
