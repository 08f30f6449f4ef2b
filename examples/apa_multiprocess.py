"""Train APA shard adapters in a multi-process launch, forget one user, and check the retrained shard.

    python examples/apa_multiprocess.py --output-dir runs/apa-1proc
    accelerate launch --multi_gpu --num_processes 2 examples/apa_multiprocess.py --output-dir runs/apa-2proc

(`--multi_gpu` starts the processes with torchrun; on a machine without GPUs they train on the CPU, which is why the
configuration sets `use_cpu=True` there.) Each shard is trained data-parallel over all processes by its own
`Trainer`; the main process writes the versions. The process count is part of the stored recipe: the run written by
2 processes is forgotten from, and reproduced by, 2 processes. `--reproduce` retrains the shards the forget touched
from scratch with the stored recipe and reports whether they equal the stored ones bit for bit. Data and model are
the offline tiny stand-ins; pass `--model` for a real checkpoint.
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
    parser.add_argument("--reproduce", action="store_true", help="Retrain the forgotten shards and compare.")
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
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = APATrainer(
        base,
        config,
        train_dataset=ds["train"],
        eval_dataset={"valid": ds["valid"], "test": ds["test"]},
        processing_class=tokenizer,
    )
    trained = trainer.train()
    steps = trained.global_step
    report = trainer.forget(user_ids=[ds["train"][0]["user_id"]])
    identical = None
    if args.reproduce:
        identical = {}
        for k in report.affected_shards:
            again, stored = trainer.reproduce_shard(k), trainer.apa_state.shard_adapters[k]
            identical[k] = set(again) == set(stored) and all(torch.equal(again[n], stored[n]) for n in stored)
    if trainer.is_world_process_zero():
        print(f"trained v1 data-parallel over {report.num_processes} process(es): {steps} optimizer steps")
        print(f"forgot: shards {report.affected_shards}, {report.samples_removed} samples, {report.seconds:.2f}s "
              f"-> v{report.version}")  # fmt: skip
        if identical is not None:
            print(f"reproduced from the stored recipe, bit-identical: {identical}")
        print({k: round(v, 4) for k, v in trainer.evaluate().items()})

if __name__ == "__main__":
    main()
