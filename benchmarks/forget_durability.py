"""What the durability of a forget costs: the lock, the journal and the fsyncs against a one-shard forget, in one run.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/forget_durability.py [--users 4] [--json out.json]

Trains one APA model (K = 4, user partition, the demo's synthetic population at a small size), then forgets users
one at a time, alternating two modes on copies of the same version so that both see the same machine load:

- **durable**: `APATrainer.forget` as shipped (per-directory lock, journal record and fsync before any work, fsync of
  every file and folder of the new version, journal "done" record);
- **bare**: the same forget with the lock and every `fsync` replaced by no-ops, and the journal written without
  fsync (close to what the forget cost before they existed: the journal append itself is a few microseconds).

It prints the median wall time of each and the overhead ratio, and the time of the durable steps alone measured
inside the durable runs. Identical runs vary 15-40% on a shared CPU: read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hf_recunlearn import controller
from hf_recunlearn.data import build_datasets, make_synthetic
from hf_recunlearn.models import build_tiny_model, build_tokenizer
from hf_recunlearn.trainer import APAConfig, APATrainer


@contextlib.contextmanager
def timed_durability(totals: dict[str, float], bare: bool):
    """Time (or, with `bare`, disable) every fsync, journal write and lock acquisition."""
    saved = (os.fsync, controller.Journal._append, controller.directory_lock)

    def fsync(fd):
        if bare:
            return None
        start = time.perf_counter()
        try:
            return saved[0](fd)
        finally:
            totals["fsync"] += time.perf_counter() - start

    def append(self, record):
        start = time.perf_counter()  # bare: still written (the forget reads its requests back), without fsync
        try:
            return saved[1](self, record)
        finally:
            totals["journal"] += time.perf_counter() - start

    @contextlib.contextmanager
    def lock(directory, **kwargs):
        if bare:
            yield
            return
        start = time.perf_counter()
        with saved[2](directory, **kwargs):
            totals["lock"] += time.perf_counter() - start
            yield

    os.fsync, controller.Journal._append = fsync, append
    import hf_recunlearn.trainer.apa_trainer as apa_trainer

    apa_trainer.directory_lock = lock
    try:
        yield
    finally:
        os.fsync, controller.Journal._append = saved[0], saved[1]
        apa_trainer.directory_lock = saved[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=4, help="Users forgotten in each mode.")
    parser.add_argument("--num-users", type=int, default=80)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = make_synthetic(num_users=args.num_users, num_items=80, interactions_per_user=12, seed=0)
    ds = build_datasets(data, preset="apa", sizes=(480, 120, 120), history_len=5)
    tok = build_tokenizer([p for split in ds.values() for p in split["prompt"]] + list(ds["train"]["completion"]))
    base = build_tiny_model(tok, "causal", "small", seed=0)
    work = Path(tempfile.mkdtemp(prefix="forget-durability-"))
    config = dict(num_shards=4, num_train_epochs=2, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                  use_cpu=True, disable_tqdm=True, logging_strategy="no", salt_dir=str(work / "salts"))  # fmt: skip
    base.save_pretrained(work / "base")  # a saved version names its base, so a forget can load it
    tok.save_pretrained(work / "base")
    trainer = APATrainer(str(work / "base"), APAConfig(output_dir=str(work / "v1"), **config),
                         train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]})  # fmt: skip
    trainer.train()
    users = sorted(set(ds["train"]["user_id"]))[: args.users]
    times: dict[str, list[float]] = {"durable": [], "bare": []}
    totals = {"fsync": 0.0, "journal": 0.0, "lock": 0.0}
    for i, user in enumerate(users):
        for mode in (("durable", "bare") if i % 2 == 0 else ("bare", "durable")):
            target = work / f"{mode}-{i}"
            shutil.copytree(work / "v1", target)
            forgetter = APATrainer(str(target), train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]})
            with timed_durability(totals if mode == "durable" else {"fsync": 0, "journal": 0, "lock": 0},
                                  bare=mode == "bare"):  # fmt: skip
                start = time.perf_counter()
                forgetter.forget(user_ids=[user])
                times[mode].append(time.perf_counter() - start)
    durable, bare = statistics.median(times["durable"]), statistics.median(times["bare"])
    steps = {k: v / len(users) for k, v in totals.items()}
    result = {
        "forget_seconds_durable": durable,
        "forget_seconds_bare": bare,
        "overhead_ratio": durable / bare - 1.0,
        "durable_steps_seconds_per_forget": steps,
        "durable_steps_share": sum(steps.values()) / durable,
        "users": len(users),
    }
    print("| mode | median forget (s) |\n|---|---|")
    print(f"| durable (lock, journal, fsync) | {durable:.3f} |\n| bare | {bare:.3f} |")
    print(f"\nOverhead: {100 * result['overhead_ratio']:+.1f}% of a one-shard forget; the durable steps themselves "
          f"took {sum(steps.values()) * 1000:.1f} ms per forget ({100 * result['durable_steps_share']:.2f}%): "
          + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in steps.items()))  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
