"""Time per optimisation step: E2URec vs a plain LoRA fine-tuning step (RecTrainer), side by side in one run.

E2URec's teachers are fixed, so their outputs are computed once before training and a step should cost about what a
LoRA fine-tuning step on the same number of samples costs. Two comparisons are printed:

- *same samples per step*: E2URec with B/2 forgotten + B/2 paired retained samples vs RecTrainer with B samples;
- *same per_device_train_batch_size*: E2URec with B forgotten + B retained (2B samples) vs RecTrainer with B.

The one-time teacher precompute is reported separately. Runs alternate between the two trainers (`--rounds`) because
identical runs on a shared CPU vary by 15–40%; compare the ratios, not the absolute times.

    PYTHONPATH=src python benchmarks/e2urec_step_time.py [--size small] [--batch-size 16] [--steps 30]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings

import torch
from transformers import TrainerCallback

from hf_recunlearn.data import build_datasets, make_forget_split, make_synthetic
from hf_recunlearn.models import build_tiny_model, build_tokenizer
from hf_recunlearn.trainer import E2URecConfig, E2URecTrainer, RecConfig, RecTrainer


class StepTimer(TrainerCallback):
    """Wall time of each optimisation step, from the end of the previous step (so batch collation counts)."""

    def __init__(self, warmup: int):
        self.warmup = warmup
        self.times: list[float] = []
        self._last = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if state.global_step > self.warmup:
            self.times.append(now - self._last)
        self._last = now


def common_args(out: str, batch_size: int, steps: int, warmup: int) -> dict:
    return dict(
        output_dir=out,
        per_device_train_batch_size=batch_size,
        max_steps=steps + warmup,
        lora_r=16,
        lora_alpha=32,
        learning_rate=1e-3,
        logging_strategy="no",
        disable_tqdm=True,
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        seed=0,
    )


def time_lora(base, tokenizer, train, batch_size, steps, warmup) -> list[float]:
    timer = StepTimer(warmup)
    with tempfile.TemporaryDirectory() as out:
        trainer = RecTrainer(
            copy.deepcopy(base),
            RecConfig(**common_args(out, batch_size, steps, warmup)),
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    return timer.times


def time_e2urec(base, tokenizer, split, batch_size, steps, warmup) -> tuple[list[float], float]:
    timer = StepTimer(warmup)
    # The augmented model is a copy of the base on purpose (its training is not timed): silence the warning that
    # such a teacher forgets nothing.
    warnings.filterwarnings("ignore", message="The forgetting teacher's answers")
    with tempfile.TemporaryDirectory() as out:
        trainer = E2URecTrainer(
            copy.deepcopy(base),
            copy.deepcopy(base),  # an augmented model is passed in: its training is not part of a step
            args=E2URecConfig(**common_args(out, batch_size, steps, warmup)),
            forget_dataset=split.forget,
            retain_dataset=split.retain,
            processing_class=tokenizer,
            callbacks=[timer],
        )
        trainer.train()
    return timer.times, trainer.teacher_runtime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="small", choices=["tiny", "small", "base"])
    parser.add_argument("--arch", default="causal", choices=["causal", "seq2seq"])
    parser.add_argument("--batch-size", type=int, default=16, help="B: samples per RecTrainer step")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of all three runs")
    parser.add_argument("--users", type=int, default=150)
    opts = parser.parse_args()

    data = make_synthetic(num_users=opts.users, interactions_per_user=30, seed=0)
    splits = build_datasets(data, preset="e2urec")
    train = splits["train"]
    niche = sorted({u for u in train["user_id"] if data.user_groups[u] == "niche"})
    split = make_forget_split(train, user_ids=niche)
    tokenizer = build_tokenizer(list(train["prompt"]) + list(splits["test"]["prompt"]))
    base = build_tiny_model(tokenizer, opts.arch, opts.size)
    B = opts.batch_size
    params = sum(p.numel() for p in base.parameters())
    print(f"model: {opts.arch}/{opts.size}, {params:,} parameters; train {len(train)}, forget {len(split.forget)}; "
          f"B = {B}; torch threads {torch.get_num_threads()}")  # fmt: skip

    lora, half, full, teacher = [], [], [], []
    for r in range(opts.rounds):
        lora += time_lora(base, tokenizer, train, B, opts.steps, opts.warmup)
        t, pre = time_e2urec(base, tokenizer, split, max(1, B // 2), opts.steps, opts.warmup)
        half += t
        teacher.append(pre)
        t, _ = time_e2urec(base, tokenizer, split, B, opts.steps, opts.warmup)
        full += t
        ms = [statistics.median(x) * 1e3 for x in (lora, half, full)]
        print(f"round {r + 1}: LoRA {ms[0]:.1f} ms, E2URec B/2+B/2 {ms[1]:.1f} ms, E2URec B+B {ms[2]:.1f} ms")

    m_lora, m_half, m_full = (statistics.median(x) for x in (lora, half, full))
    print()
    print(f"{'run':<44}{'samples/step':>14}{'median ms/step':>16}{'ratio':>8}")
    print(f"{'RecTrainer LoRA fine-tuning':<44}{B:>14}{m_lora * 1e3:>16.1f}{1.0:>8.2f}")
    print(f"{'E2URec, same samples per step (B/2 + B/2)':<44}{2 * max(1, B // 2):>14}{m_half * 1e3:>16.1f}"
          f"{m_half / m_lora:>8.2f}")  # fmt: skip
    print(f"{'E2URec, same batch size (B + B)':<44}{2 * B:>14}{m_full * 1e3:>16.1f}{m_full / m_lora:>8.2f}")
    print(f"\nE2URec one-time teacher precompute ({len(split.forget)} forgotten + {len(split.forget)} paired retained "
          f"samples, 3 passes): median {statistics.median(teacher):.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
