"""`hf-recunlearn`: the command line, a thin layer over the library."""

from __future__ import annotations

import argparse
import contextlib
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
    train.add_argument("--method", default="tallrec", choices=["tallrec", "apa", "sisa"],
                       help="tallrec: one recommender; apa / sisa: one LoRA adapter per data shard (default: tallrec).")  # fmt: skip
    train.add_argument("--num-shards", type=int, default=4, help="Shards K for --method apa|sisa (default: 4).")
    train.add_argument("--min-users-per-event", type=int, default=1,
                       help="apa/sisa privacy setting: carry out forget requests only once this many users are "
                       "pending, so each published event covers at least that many (default: 1).")  # fmt: skip
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--load-in-4bit", action="store_true",
                       help="Load the base model with 4-bit NF4 weights and train LoRA on it (QLoRA; needs "
                       "`pip install hf_recunlearn[kbit]`).")  # fmt: skip
    train.add_argument("--bf16", action="store_true", help="bfloat16 base weights and bf16 mixed precision.")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="Recompute activations in the backward pass: less memory, slower steps.")  # fmt: skip
    _add_json(train)

    forget = sub.add_parser("forget", help="Forget users or samples from a trained run.")
    forget.add_argument("--run", required=True, help="Run directory written by `train`.")
    forget.add_argument("--method", required=True, choices=["e2urec", "neggrad", "negkl", "badt", "apa", "sisa"],
                        help="e2urec/neggrad/negkl/badt unlearn the original recommender (approximate); apa/sisa "
                        "retrain the shards that held the data (exact; the run must be trained with that method).")  # fmt: skip
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", help="Comma-separated user ids to forget.")
    who.add_argument("--samples", help="Comma-separated sample ids to forget.")
    who.add_argument("--forget-fraction", type=float, help="Forget a seeded random fraction of the training users.")
    who.add_argument("--resume", action="store_true",
                     help="apa/sisa: only finish the requests an interrupted forget left in the run's journal.")  # fmt: skip
    forget.add_argument("--epochs", type=float, default=None, help="Unlearning epochs (approximate methods).")
    forget.add_argument("--seed", type=int, default=0)
    forget.add_argument("--flush", action="store_true",
                        help="apa/sisa: carry out queued requests now, even if fewer than min_users_per_event users "
                        "are pending.")  # fmt: skip
    forget.add_argument("--no-wait", action="store_true",
                        help="Fail at once if another process is training, forgetting or pushing on this run "
                        "(default: wait for it).")  # fmt: skip
    _add_json(forget)

    bench = sub.add_parser(
        "bench",
        help="Every unlearning method side by side on one data set: a Markdown table, JSON and plots.",
        description=(
            "Train the original, two retrained references and the shard models, unlearn one forget request with every "
            "method (Original, Retrain, SISA, RecEraser-style, NegGrad, NegKL, Bad-T, E2URec and its ablations, APA "
            "D/ND and its weightings) and measure them the same way. Prints a Markdown table on stdout; logs and "
            "progress go to stderr. See benchmarks/README.md."
        ),
    )
    bench.add_argument("--data", default="synthetic", help="Data spec (default: synthetic; e.g. movielens-100k:DIR).")
    bench.add_argument("--model", default=None, help="Base model id or path (default: the built-in stand-in LLM).")
    bench.add_argument("--preset", default="e2urec", choices=["e2urec", "apa"],
                       help="Split preset: e2urec (6:2:2 by time) or apa (1024/500/1000 samples).")  # fmt: skip
    bench.add_argument("--seeds", type=int, default=1, help="Repetitions with seeds 0..N-1; rows report mean ± std.")
    bench.add_argument("--num-shards", type=int, default=None,
                       help="Shards K of APA, SISA and RecEraser (default: 4; 2 with --tiny).")  # fmt: skip
    bench.add_argument("--forget-fraction", type=float, default=0.2,
                       help="Share of users to forget when the data has no niche users (default: 0.2, E2URec §5.1).")  # fmt: skip
    bench.add_argument("--output-dir", default="runs/bench", help="Where models are written (default: runs/bench).")
    bench.add_argument("--json", dest="bench_json", required=True, help="Write the results to this JSON file.")
    bench.add_argument("--plots", default=None, help="Write utility_vs_forgetting.png and time.png to this folder.")
    bench.add_argument("--tiny", action="store_true", help="A tiny configuration that checks the mechanics in ~1 min.")

    evaluate = sub.add_parser("evaluate", help="Score a trained run on one of its splits.")
    evaluate.add_argument("--run", required=True, help="Run directory written by `train` or `demo`.")
    evaluate.add_argument("--split", default="test", choices=["train", "valid", "test"])
    evaluate.add_argument("--batch-size", type=int, default=64)
    _add_json(evaluate)

    push = sub.add_parser(
        "push",
        help="Push a version to a Hub model repo (one commit + a vN tag; purges earlier versions after a forget).",
        description=(
            "Push the current version of a model to the Hub as one commit tagged vN. --run accepts: an APA directory "
            "(holding apa_config.json); a run directory with an apa/ subfolder (pushed as APA), else an e2urec/ or "
            "original/ PEFT adapter subfolder; or a PEFT adapter directory itself (adapter_config.json). After a "
            "forget event, earlier versions are deleted from the Hub (tags removed, history squashed) unless "
            "--keep-history is given."
        ),
    )
    push.add_argument("--run", required=True, help="APA directory, run directory, or PEFT adapter directory.")
    push.add_argument("--repo-id", required=True, help="Hub model repo, e.g. user/apa-movielens (created if missing).")
    push.add_argument("--private", action="store_true", help="Create the repo private.")
    push.add_argument("--keep-history", action="store_true",
                      help="Keep earlier versions downloadable even after a deletion request (default: purge them).")
    push.add_argument("--method", default=None, choices=["apa", "e2urec", "original"],
                      help="Which model of a run directory to push (default: apa, else e2urec, else original).")
    _add_json(push)

    pull = sub.add_parser("pull", help="Download one version of a Hub repo pushed by `push`.")
    pull.add_argument("--repo-id", required=True, help="Hub repo id.")
    pull.add_argument("--revision", default="main", help="Version tag (v2), branch or commit (default: main).")
    pull.add_argument("--output-dir", required=True, help="New (or empty) directory to write the version to.")
    _add_json(pull)

    versions = sub.add_parser("versions", help="List the versions of a Hub repo: tag, commit, event, counts, status.")
    versions.add_argument("--repo-id", required=True, help="Hub repo id.")
    _add_json(versions)
    _add_verify_parser(sub)
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
    from .trainer.rec_config import CHECKPOINTING_FIELD

    run = RunDir(args.output_dir)
    builtin = args.model is None
    prepared = prepare_data(
        args.data,
        preset=args.preset,
        template=args.template,
        history_len=args.history_len,
        num_samples=args.num_samples,
        pretrain_user_fraction=0.3 if builtin else 0.0,  # ignored for tallrec:PATH, which has no interactions
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
        load_in_4bit=args.load_in_4bit,
        bf16=args.bf16,
        **{CHECKPOINTING_FIELD: args.gradient_checkpointing},
    )
    if args.method in ("apa", "sisa"):
        metrics = _train_shards(args, base, splits, run, config)
    else:
        _, metrics = train_recommender(base, splits["train"], splits["test"], run.original_dir, config)
    run.save_info(
        RunInfo(
            data=args.data,
            preset=args.preset,
            template=args.template,
            base_model=BUILTIN if builtin else args.model,
            history_len=args.history_len,
            full_finetune=args.full_finetune,
            method=args.method,
            seed=args.seed,
            metrics={args.method if args.method != "tallrec" else "original": metrics},
        )
    )
    return metrics


def _shard_trainer_class(method: str):
    from .trainer import APAConfig, APATrainer, SISAConfig, SISATrainer

    return (APATrainer, APAConfig) if method == "apa" else (SISATrainer, SISAConfig)


def _train_shards(args, base: str, splits, run, config) -> dict[str, Any]:
    """`train --method apa|sisa`: K shard adapters with the same recipe, saved under RUN/<method>/."""
    from .metrics import utility_metrics

    if args.full_finetune:
        raise ValueError("`--full-finetune` does not apply to --method apa|sisa: shards are LoRA adapters.")
    from .trainer.rec_config import CHECKPOINTING_FIELD

    trainer_cls, config_cls = _shard_trainer_class(args.method)
    values = {k: getattr(config, k) for k in ("learning_rate", "num_train_epochs", "per_device_train_batch_size",
                                              "lora_r", "lora_alpha", "lr_scheduler_type", "warmup_steps", "seed",
                                              "load_in_4bit", "bf16", CHECKPOINTING_FIELD)}  # fmt: skip
    shard_config = config_cls(output_dir=str(run.path / args.method), num_shards=args.num_shards,
                              min_users_per_event=args.min_users_per_event, **values)  # fmt: skip
    trainer = trainer_cls(base, shard_config, train_dataset=splits["train"],
                          eval_dataset={"valid": splits["valid"], "test": splits["test"]})  # fmt: skip
    trainer.data_spec = {"data": args.data, "preset": args.preset, "template": args.template,
                         "history_len": args.history_len, "num_samples": args.num_samples, "seed": args.seed}  # fmt: skip
    trainer.train()
    report = trainer.last_report
    metrics = utility_metrics(splits["test"]["label"], trainer.predict(splits["test"]).predictions)
    return {**metrics, "train_seconds": report.seconds, "num_shards": args.num_shards, "version": report.version}


@command("forget")
def _forget(args) -> dict[str, Any]:
    from .data import make_forget_split
    from .runs import RunDir

    run = RunDir(args.run)
    info = run.load_info()
    if args.method in ("apa", "sisa"):
        return _forget_shards(args, run, info)
    if args.resume or args.flush:
        raise ValueError("`--resume` and `--flush` apply to `--method apa|sisa` (the exact methods' journal).")
    train = run.load_datasets()["train"]
    users = [u.strip() for u in args.users.split(",") if u.strip()] if args.users else None
    samples = [x.strip() for x in args.samples.split(",") if x.strip()] if args.samples else None
    request = make_forget_split(train, user_ids=users, sample_ids=samples, fraction=args.forget_fraction, seed=args.seed)
    return _forget_approximate(args, run, info, request)


def _shard_run_trainer(run, method: str, datasets=None):
    """The trainer of a run's shard model (`RUN/apa` or `RUN/sisa`), configured from the recipe stored with it."""
    trainer_cls, _ = _shard_trainer_class(method)
    splits = datasets or run.load_datasets()
    return trainer_cls(str(run.path / method), train_dataset=splits["train"],
                       eval_dataset={"valid": splits["valid"], "test": splits["test"]})  # fmt: skip


def _erase_run_copies(run, trainer):
    """The `erase_copies` hook of a run: its cached data set loses the forgotten users' and samples' rows."""
    from .partition import ShardLedger, load_or_create_salt

    ledger = trainer.apa_state.ledger
    hasher = ShardLedger(salt=load_or_create_salt(ledger["salt_id"], trainer.args.salt_dir), shards=[])

    def erase(user_digests, sample_digests):
        run.erase_rows(hasher, user_digests, sample_digests)

    return erase


def recover_run(run, info=None, *, wait: bool = True) -> dict[str, Any] | None:
    """
    Finish what an interrupted command left on a run, before any other command uses it: an interrupted version
    switch is rolled back (or forward), a half-rewritten data set is restored, and pending forget requests are carried
    out. Returns the forget report when requests were finished.
    """
    from .apa_recommender import recover_apa_directory
    from .controller import Journal, directory_lock

    info = info or run.load_info()
    run.recover()
    if info.method not in ("apa", "sisa"):
        return None
    shard_dir = run.path / info.method
    with directory_lock(shard_dir, wait=wait, reason=" (recovering the run)"):
        recover_apa_directory(shard_dir)  # rolls back an interrupted version switch
        if not Journal(shard_dir).pending():
            return None
        trainer = _shard_run_trainer(run, info.method)
        report = trainer.resume(erase_copies=_erase_run_copies(run, trainer))
    if report is None or report.event != "forget":  # nothing pending, or requests queued for min_users_per_event
        return None
    logger.info("Finished %d forget request(s) an interrupted command had left pending.", report.requests)
    _record_version_metrics(run, info.method, trainer)
    return {"recovered": True, **report.to_dict()}


def _record_version_metrics(run, method: str, trainer) -> None:
    """Test metrics of the current version in run.json, so that a push describes the version it pushes."""
    from .metrics import utility_metrics

    test = trainer.eval_dataset["test"]
    metrics = utility_metrics(test["label"], trainer.predict(test).predictions)
    info = run.load_info()
    info.metrics[method] = {**metrics, "version": trainer.apa_state.version}
    run.save_info(info)


def _forget_shards(args, run, info) -> dict[str, Any]:
    from .controller import directory_lock

    shard_dir = run.path / args.method
    if info.method != args.method:
        raise ValueError(
            f"`--method {args.method}` needs a run trained with `train --method {args.method}`; {str(run.path)!r} was "
            f"trained with {info.method!r}."
        )
    with directory_lock(shard_dir, wait=not args.no_wait, reason=" (forget)"):
        recovered = recover_run(run, info)
        if args.resume:
            return recovered or {"method": args.method, "event": "none", "pending_requests": 0}
        splits = run.load_datasets()
        trainer = _shard_run_trainer(run, args.method, splits)
        users = samples = None
        if args.users:
            users = [u.strip() for u in args.users.split(",") if u.strip()]
        elif args.samples:
            samples = [x.strip() for x in args.samples.split(",") if x.strip()]
        else:
            from .data import make_forget_split

            users = make_forget_split(splits["train"], fraction=args.forget_fraction, seed=args.seed).user_ids
        if not users and not samples:
            raise ValueError("`--users` / `--samples` names no id: pass a comma-separated list of ids to forget.")
        report = trainer.forget(user_ids=users, sample_ids=samples, flush=args.flush, wait=not args.no_wait,
                                erase_copies=_erase_run_copies(run, trainer))  # fmt: skip
        if report.event == "forget":
            _record_version_metrics(run, args.method, trainer)
    return {"method": args.method, **report.to_dict()}


def _forget_approximate(args, run, info, request) -> dict[str, Any]:
    """E2URec and the approximate baselines: a LoRA student on the original, saved under RUN/<method>/."""
    from .evaluation import predict_unlearning_sets
    from .models import load_model
    from .trainer import APPROXIMATE_METHODS

    if info.method != "tallrec" or not run.original_dir.is_dir():
        raise ValueError(f"`--method {args.method}` unlearns the original recommender of a `train --method tallrec` run.")
    trainer_cls, config_cls = APPROXIMATE_METHODS[args.method]
    test = run.load_datasets()["test"]
    model, tokenizer = load_model(str(run.original_dir))
    before = predict_unlearning_sets(model, tokenizer, request.forget, test, full_vocab=False)
    overrides = {"num_train_epochs": args.epochs} if args.epochs else {}
    config = config_cls(output_dir=str(run.path / args.method), seed=args.seed, **overrides)
    trainer = trainer_cls(model, args=config, forget_dataset=request.forget, retain_dataset=request.retain,
                          eval_dataset=test, processing_class=tokenizer)  # fmt: skip
    trainer.train()
    trainer.save_model()
    after = predict_unlearning_sets(trainer.model, tokenizer, request.forget, test, full_vocab=False)
    # No retrained reference here (that is what `hf-recunlearn demo` / `bench` measure): report utility, the forget
    # set's AUC and the membership-inference audit before and after.
    evidence = {"unlearning_time_s": trainer.unlearning_runtime,
                "trainable_parameters": trainer.num_trainable_parameters}  # fmt: skip
    for prefix, preds in (("", after), ("original_", before)):
        metrics = preds.metrics()
        evidence.update({f"{prefix}{key}": metrics[key] for key in ("test_auc", "forget_auc", "mia_auc")})
    return {
        "method": args.method,
        "users_forgotten": len(request.user_ids),
        "samples_forgotten": len(request.forget),
        "output_dir": str(run.path / args.method),
        **evidence,
    }


@command("bench")
def _bench(args) -> None:
    from dataclasses import replace

    from .bench import TINY, BenchSettings, format_markdown, run_bench

    settings = TINY if args.tiny else BenchSettings()
    shards = settings.num_shards if args.num_shards is None else args.num_shards
    settings = replace(settings, num_shards=shards, forget_fraction=args.forget_fraction)
    # Trainers print their logs on stdout: `main` sends them to stderr, and the table goes to the real stdout.
    result = run_bench(args.data, model=args.model, preset=args.preset, seeds=args.seeds, settings=settings,
                       output_dir=args.output_dir, json_path=args.bench_json, plots_dir=args.plots)  # fmt: skip
    print(format_markdown(result), file=args.stdout)
    return None


@command("evaluate")
def _evaluate(args) -> dict[str, Any]:
    from .metrics import utility_metrics
    from .runs import RunDir

    run = RunDir(Path(args.run).resolve())
    info = run.load_info()
    recover_run(run, info)
    split = run.load_datasets()[args.split]
    if info.method in ("apa", "sisa"):
        from .apa_recommender import APARecommender, read_apa_directory
        from .models import load_model
        from .trainer.apa_trainer import config_from_recipe

        # The base as the shards were trained on it: the recipe's dtype and quantization.
        _, config_cls = _shard_trainer_class(info.method)
        recipe = read_apa_directory(run.path / info.method).recipe
        load_kwargs = config_from_recipe(config_cls, recipe, output_dir=str(run.path / info.method)).model_load_kwargs()
        base, _ = load_model(run.base_model_path(info), **load_kwargs)
        recommender = APARecommender.from_pretrained(run.path / info.method, base_model=base)
        probs = recommender.predict(split, batch_size=args.batch_size)
        version = {"version": recommender.version}
    else:
        from .models import load_model
        from .scoring import score

        model, tokenizer = load_model(str(run.original_dir))
        probs = score(model, tokenizer, split, batch_size=args.batch_size, progress=True)
        version = {}
    return {"split": args.split, "num_samples": len(split), "method": info.method, **version,
            **utility_metrics(split["label"], probs)}  # fmt: skip


def resolve_push_source(run: str | Path, method: str | None = None) -> tuple[str, Path]:
    """
    What `hf-recunlearn push --run DIR` pushes: `("apa", dir)` or `(adapter method, dir)`.

    Accepts an APA directory, a PEFT adapter directory, or a run directory holding `apa/`, `e2urec/` or `original/`
    (in that order of preference unless `method` picks one).
    """
    from .apa_recommender import CONFIG_NAME

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"`--run` {str(run)!r} is not a directory.")
    candidates = [("apa", run), ("apa", run / "apa"), ("e2urec", run / "e2urec"), ("original", run / "original")]
    if (run / "adapter_config.json").is_file():
        candidates.insert(1, (method or "e2urec", run))
    for kind, folder in candidates:
        if method is not None and kind != method:
            continue
        marker = CONFIG_NAME if kind == "apa" else "adapter_config.json"
        if (folder / marker).is_file():
            return kind, folder
    wanted = f" {method!r} model" if method else " model"
    raise FileNotFoundError(
        f"`--run` {str(run)!r} holds no{wanted} to push. Pass an APA directory (with {CONFIG_NAME}), a PEFT adapter "
        "directory (with adapter_config.json), or a run directory with an apa/, e2urec/ or original/ subfolder."
    )


def _run_info(folder: Path):
    """The `run.json` of the run directory around `folder`, if any."""
    from .runs import RUN_FILE, RunDir

    for candidate in (folder, folder.parent):
        if (candidate / RUN_FILE).is_file():
            return RunDir(candidate).load_info()
    return None


@command("push")
def _push(args) -> dict[str, Any]:
    from . import hub

    from .apa_recommender import read_version
    from .controller import directory_lock
    from .runs import RUN_FILE, RunDir

    for candidate in (Path(args.run), Path(args.run).parent):
        if (candidate / RUN_FILE).is_file():
            recover_run(RunDir(candidate))
            break
    kind, folder = resolve_push_source(args.run, args.method)
    info = _run_info(folder)
    method_key = (info.method if info is not None and info.method in ("apa", "sisa") else "apa") if kind == "apa" else kind
    metrics = (info.metrics.get(method_key) if info else None) or None
    if isinstance(metrics, dict) and kind == "apa" and metrics.get("version", 1) != read_version(folder):
        metrics = None  # measured on another version: a card describes the version it is pushed with
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "version"} if metrics else None
    if kind == "apa":
        with directory_lock(folder, reason=" (push)"):
            result = hub.push(folder, args.repo_id, private=args.private, keep_history=args.keep_history,
                              metrics=metrics)  # fmt: skip
    else:
        result = hub.push_adapter(folder, args.repo_id, method=kind, private=args.private,
                                  keep_history=args.keep_history, metrics=metrics)  # fmt: skip
    return {"pushed": str(folder), "method": kind, **result.to_dict()}


@command("pull")
def _pull(args) -> dict[str, Any]:
    from . import hub

    path = hub.pull(args.repo_id, args.revision, args.output_dir)
    return {"repo_id": args.repo_id, "revision": args.revision, "output_dir": str(path)}


@command("versions")
def _versions(args) -> dict[str, Any]:
    from . import hub

    return {"repo_id": args.repo_id, "versions": [v.to_dict() for v in hub.list_versions(args.repo_id)]}


def _add_verify_parser(sub) -> None:
    verify = sub.add_parser(
        "verify",
        help="Check the forgetting receipts of a run or a Hub repo, and a deletion token (exit 1 if a check fails).",
        description=(
            "Check the forgetting receipts: --run DIR (the controller: hashes, chain, manifests against the ledger, "
            "each forgotten digest absent), --repo-id ID [--revision vN] (anyone: the published bytes only), "
            "--run DIR --retrain-shard K (retrain shard K with the stored recipe and compare bit for bit), "
            "--token T with either (a forgotten user's check). Exit 0 when everything holds, 1 with one line per "
            "failure on stderr; stdout is one JSON document."
        ),
    )
    where = verify.add_mutually_exclusive_group(required=True)
    where.add_argument("--run", help="Run directory, APA directory or adapter directory with receipts/.")
    where.add_argument("--repo-id", help="Hub repo pushed by `hf-recunlearn push`.")
    verify.add_argument("--revision", default=None, help="Revision of --repo-id to check (default: main).")
    verify.add_argument("--retrain-shard", type=int, default=None, help="With --run: retrain this shard and compare.")
    verify.add_argument("--token", default=None, help="A deletion token (hfru1....) or a file holding one.")
    _add_json(verify)


@command("verify")
def _verify(args) -> dict[str, Any]:
    from .verification import verify

    report = verify(args.run, repo_id=args.repo_id, revision=args.revision, token=args.token,
                    retrain_shard=args.retrain_shard)  # fmt: skip
    for line in report.failures:
        print(f"hf-recunlearn verify: FAIL: {line}", file=sys.stderr)
    return report.to_dict()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Trainers print their logs (`{'loss': ...}`) on stdout: stdout is kept for the one JSON document.
        args.stdout = sys.stdout  # for a command that prints its own output (bench)
        with contextlib.redirect_stdout(sys.stderr):
            results = COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, _hub_error(), _locked_error()) as err:
        # Bad input: a clear message, no traceback.
        print(f"hf-recunlearn {args.command}: error: {err}", file=sys.stderr)
        return 2
    if results is None:  # the command printed its own output
        return 0
    text = json.dumps(results, indent=2, sort_keys=True, default=str)
    if getattr(args, "json_path", None):
        from .runs import write_json_atomic

        write_json_atomic(args.json_path, json.loads(text))
    print(text)
    return 1 if results.get("ok") is False else 0  # `verify`: a check failed


def _locked_error() -> type[Exception]:
    from .controller import RunLockedError

    return RunLockedError


def _hub_error() -> type[Exception]:
    from .hub import HubOperationError

    return HubOperationError


if __name__ == "__main__":
    sys.exit(main())
