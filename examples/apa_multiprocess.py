"""Train APA shard adapters spread over processes, then forget one user.

    python examples/apa_multiprocess.py --output-dir runs/apa-1proc
    accelerate launch --multi_gpu --num_processes 2 examples/apa_multiprocess.py --output-dir runs/apa-2proc

(`--multi_gpu` starts the processes with torchrun; on a machine without GPUs they train on the CPU. `accelerate
launch --cpu` alone starts a single process on one machine: accelerate runs multi-CPU jobs through MPI.) Each process trains the shards i with i mod N == its rank as ordinary single-process Trainer runs; the adapters are
gathered and the main process writes the versions. Both commands write the same adapters (run with the same thread
count: OMP_NUM_THREADS=1). Data and model are the offline tiny stand-ins; pass `--model` for a real checkpoint.
"""

from __future__ import annotations

import argparse
import os

import torch

from hf_recunlearn.data import build_datasets, make_synthetic
from hf_recunlearn.models import build_tiny_model, build_tokenizer, load_model
from hf_recunlearn.trainer import APAConfig, APATrainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-shards", type=int, default=4)
    parser.add_argument("--model", default=None, help="Base model id or path (default: a tiny offline model).")
    parser.add_argument("--sizes", type=int, nargs=3, default=(96, 48, 48), help="train/valid/test samples")
    parser.add_argument("--epochs", type=float, default=1.0)
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    data = make_synthetic(num_users=30, num_items=40, interactions_per_user=9, seed=0)
    ds = build_datasets(data, preset="apa", sizes=tuple(args.sizes), history_len=3)
    if args.model:
        base, tokenizer = load_model(args.model)
    else:
        tokenizer = build_tokenizer([p for split in ds.values() for p in split["prompt"]] + list(ds["train"]["completion"]))
        base = build_tiny_model(tokenizer, "causal", "tiny", seed=0)

    config = APAConfig(
        output_dir=args.output_dir,
        num_shards=args.num_shards,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        logging_steps=1000,
        disable_tqdm=True,
        num_neighbors=5,
    )
    trainer = APATrainer(
        base,
        config,
        train_dataset=ds["train"],
        eval_dataset={"valid": ds["valid"], "test": ds["test"]},
        processing_class=tokenizer,
    )
    trained = trainer.train()
    forgot = trainer.forget(user_ids=[ds["train"][0]["user_id"]])
    if trainer.is_world_process_zero():
        print(f"trained v{trained.version} in {trained.seconds:.2f}s, shard -> process {trained.shard_processes}")
        print(f"forgot: shards {forgot.affected_shards}, {forgot.samples_removed} samples, {forgot.seconds:.2f}s "
              f"-> v{forgot.version}")  # fmt: skip
        print({k: round(v, 4) for k, v in trainer.evaluate().items()})


if __name__ == "__main__":
    main()
