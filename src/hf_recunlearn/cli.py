"""`hf-recunlearn`: the command line, a thin layer over the library."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable


logger = logging.getLogger("hf_recunlearn")

COMMANDS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {}


def command(name: str):
    def register(fn):
        COMMANDS[name] = fn
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-recunlearn",
        description="Make LLM-based recommenders forget: E2URec (approximate) and APA (exact) on transformers + PEFT.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="Run the built-in demo (synthetic data, tiny model) end to end.")
    demo.add_argument("--output-dir", default="runs/demo", help="Where the demo writes its run (default: runs/demo).")
    demo.add_argument("--seed", type=int, default=0, help="Seed of the data, models and forget request.")
    demo.add_argument("--quick", action="store_true", help="A smaller, faster demo that checks the mechanics only.")
    _add_json(demo)

    train = sub.add_parser("train", help="Train the original recommender (TALLRec recipe) on a data spec.")
    _add_data_args(train)
    train.add_argument("--model", default=None, help="Model id or path (default: a built-in tiny stand-in LLM).")
    train.add_argument("--output-dir", required=True, help="Run directory to create.")
    train.add_argument("--epochs", type=float, default=3.0, help="Training epochs (default: 3).")
    train.add_argument("--learning-rate", type=float, default=None, help="Default: 2e-3 built-in model, 1e-4 others.")
    train.add_argument("--batch-size", type=int, default=16, help="Per-device batch size (default: 16).")
    train.add_argument("--lora-r", type=int, default=8, help="LoRA rank (default: 8, as TALLRec).")
    train.add_argument("--full-finetune", action="store_true", help="Train every weight instead of a LoRA adapter.")
    train.add_argument("--seed", type=int, default=0)
    _add_json(train)

    evaluate = sub.add_parser("evaluate", help="Score a trained run on one of its splits.")
    evaluate.add_argument("--run", required=True, help="Run directory written by `train` or `demo`.")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--batch-size", type=int, default=64)
    _add_json(evaluate)
    return parser


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", dest="json_path", default=None, help="Also write the results to this JSON file.")


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    from .data import DATA_SPECS

    specs = ", ".join(k if k == "synthetic" else f"{k}:PATH" for k in DATA_SPECS)
    parser.add_argument("--data", default="synthetic", help=f"Data spec: {specs} (default: synthetic).")
    parser.add_argument("--preset", default="e2urec", choices=["e2urec", "apa"],
                        help="Split preset: e2urec (6:2:2 by time) or apa (1024/500/1000 samples).")  # fmt: skip
    parser.add_argument("--template", default="e2urec", choices=["e2urec", "tallrec"], help="Prompt template.")
    parser.add_argument("--history-len", type=int, default=10, help="History items per prompt (default: 10).")
    parser.add_argument("--num-samples", type=int, default=None, help="E2URec preset: keep the last N samples.")


@command("demo")
def _demo(args) -> dict[str, Any]:
    from .demo import QUICK, DemoSettings, run_demo

    settings = QUICK if args.quick else DemoSettings()
    settings.seed = args.seed
    return run_demo(args.output_dir, settings)


@command("train")
def _train(args) -> dict[str, Any]:
    from .pipeline import BUILTIN, build_builtin_base, prepare_data, train_recommender
    from .runs import RunDir, RunInfo
    from .trainer import RecConfig

    run = RunDir(args.output_dir)
    builtin = args.model is None
    prepared = prepare_data(
        args.data,
        preset=args.preset,
        template=args.template,
        history_len=args.history_len,
        num_samples=args.num_samples,
        pretrain_user_fraction=0.3 if builtin and not args.data.startswith("tallrec") else 0.0,
        seed=args.seed,
    )
    run.path.mkdir(parents=True, exist_ok=True)
    run.save_datasets(prepared.datasets)
    splits = prepared.datasets
    base = args.model
    if builtin:
        logger.info("Training the built-in stand-in base model")
        build_builtin_base(prepared, run.base_dir, seed=args.seed, batch_size=args.batch_size)
        base = str(run.base_dir)
    lr = args.learning_rate or (2e-3 if builtin else 1e-4)
    config = RecConfig(
        output_dir=str(run.original_dir),
        learning_rate=lr,
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r,
        use_lora=not args.full_finetune,
        lr_scheduler_type="cosine",
        warmup_steps=20,
        seed=args.seed,
        logging_steps=50,
    )
    _, metrics = train_recommender(base, splits["train"], splits["test"], run.original_dir, config)
    run.save_info(
        RunInfo(
            data=args.data,
            preset=args.preset,
            template=args.template,
            base_model=BUILTIN if builtin else args.model,
            history_len=args.history_len,
            full_finetune=args.full_finetune,
            seed=args.seed,
            metrics={"original": metrics},
        )
    )
    return metrics


@command("evaluate")
def _evaluate(args) -> dict[str, Any]:
    from .metrics import utility_metrics
    from .models import load_model
    from .runs import RunDir
    from .scoring import score

    run = RunDir(args.run)
    run.load_info()
    split = run.load_datasets()[args.split]
    model, tokenizer = load_model(str(run.original_dir))
    probs = score(model, tokenizer, split, batch_size=args.batch_size, progress=True)
    return {"split": args.split, "num_samples": len(split), **utility_metrics(split["label"], probs)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        results = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        # Bad input: a clear message, no traceback.
        print(f"hf-recunlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    text = json.dumps(results, indent=2, sort_keys=True, default=str)
    if getattr(args, "json_path", None):
        from .runs import write_json_atomic

        write_json_atomic(args.json_path, json.loads(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
