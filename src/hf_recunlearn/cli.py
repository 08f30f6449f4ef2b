"""
`hf-recunlearn`: the command line, a thin layer over the library.

Every subcommand's options are generated from dataclasses by trl's `TrlParser` (transformers' `HfArgumentParser`
plus `--config run.yaml`): the method's configuration (`RecConfig`, `APAConfig`, `E2URecConfig`, ... with every
`TrainingArguments` field) and the small dataclasses below for what only the command line has (the data spec, the
run directory, the output). An option has the name of its field, in Python and on the command line
(`--per_device_train_batch_size`, or `--per-device-train-batch-size`). Precedence: the command line, then the YAML
file, then the built-in model's recipe (`pipeline.BUILTIN_RECIPE`, only when no `--model` is given), then the
dataclass defaults.

stdout carries exactly one JSON document (NaN written as null), or nothing with `--json PATH`; logs, progress bars
and the Trainer's `{'loss': ...}` lines go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


logger = logging.getLogger("hf_recunlearn")
# peft imports bitsandbytes whenever it is installed, and bitsandbytes then warns (on a CPU with AVX512-BF16) that the
# optional `kernels` package for its CPU 4-bit matmul is missing: noise on every command, so only its errors are kept.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

APPROXIMATE = ("e2urec", "neggrad", "negkl", "badt")
EXACT = ("apa", "sisa")


# --------------------------------------------------------------------------------------------------------------------
# The command line's own fields (everything else comes from the method's config dataclass)


@dataclass
class CLIArguments:
    """Options every subcommand has."""

    json: str | None = field(
        default=None, metadata={"help": "Write the result to this JSON file instead of stdout (stdout stays empty)."}
    )
    verbose: bool = field(default=False, metadata={"help": "Log debug messages of hf_recunlearn."})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "Intra-op CPU threads of this process. Default: OMP_NUM_THREADS when set; else 1 for the "
                  "built-in tiny model (more threads only slow tiny models down, and two processes with several "
                  "threads each on a small machine run ~100x slower); else PyTorch's default. 0: PyTorch's default."},
    )  # fmt: skip


def _data_spec_help() -> str:
    from .data import DATA_SPECS

    return ", ".join(k if k == "synthetic" else f"{k}:PATH" for k in DATA_SPECS)


@dataclass
class DataArguments:
    """Which data `train` builds its splits from."""

    data: str = field(default="synthetic", metadata={"help": "Data spec (see the README): synthetic, KIND:PATH."})
    preset: str = field(
        default="e2urec",
        metadata={"help": "Split preset: e2urec (6:2:2 by time) or apa (1024/500/1000 samples).",
                  "choices": ["e2urec", "apa"]},
    )  # fmt: skip
    template: str = field(default="e2urec", metadata={"help": "Prompt template.", "choices": ["e2urec", "tallrec"]})
    history_len: int = field(default=10, metadata={"help": "History items per prompt."})
    num_samples: int | None = field(default=None, metadata={"help": "E2URec preset: keep the last N samples."})


@dataclass
class TrainArguments:
    """`train`: what to train. The run directory is `--output_dir`."""

    method: str = field(
        default="tallrec",
        metadata={"help": "tallrec: one recommender (RecConfig); apa / sisa: one LoRA adapter per data shard "
                  "(APAConfig / SISAConfig: `hf-recunlearn train --method apa --help` lists their fields).",
                  "choices": ["tallrec", *EXACT]},
    )  # fmt: skip
    model: str | None = field(
        default=None, metadata={"help": "Base model id or path (default: a built-in tiny stand-in LLM)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Replace the run already in --output_dir (default: refuse, exit 2)."}
    )


@dataclass
class ForgetArguments:
    """`forget`: which run, which method, whom."""

    run: str = field(metadata={"help": "Run directory written by `train`."})
    method: str = field(
        metadata={"help": "e2urec/neggrad/negkl/badt unlearn the original recommender (approximate; their config's "
                  "fields are options: `forget --method e2urec --help`); apa/sisa retrain the shards that held the "
                  "data with the recipe stored at train time (exact; the run must be trained with that method).",
                  "choices": [*APPROXIMATE, *EXACT]},
    )  # fmt: skip
    users: str | None = field(default=None, metadata={"help": "Comma-separated user ids to forget."})
    samples: str | None = field(default=None, metadata={"help": "Comma-separated sample ids to forget."})
    forget_fraction: float | None = field(
        default=None, metadata={"help": "Forget a seeded random fraction of the training users."}
    )
    forget_seed: int = field(default=0, metadata={"help": "Seed of the --forget_fraction draw."})
    resume: bool = field(
        default=False,
        metadata={"help": "apa/sisa: only finish the requests an interrupted forget left in the run's journal."},
    )
    flush: bool = field(
        default=False,
        metadata={"help": "apa/sisa: carry out queued requests now, even if fewer than min_users_per_event users are "
                  "pending."},
    )  # fmt: skip
    no_wait: bool = field(
        default=False,
        metadata={"help": "Fail at once (exit 2) if another process is training, forgetting or pushing on this run "
                  "(default: wait for it)."},
    )  # fmt: skip
    token_file: str | None = field(
        default=None,
        metadata={"help": "apa/sisa: also write each forgotten user's deletion token to this JSON file ({user id: "
                  "token}, readable by you only), from which you send each user theirs; they check it with "
                  "`hf-recunlearn verify --repo_id ID --token T`. Keep it out of anything you publish."},
    )  # fmt: skip


@dataclass
class EvaluateArguments:
    run: str = field(metadata={"help": "Run directory written by `train` or `demo`."})
    split: str = field(default="test", metadata={"help": "Split to score.", "choices": ["train", "valid", "test"]})
    batch_size: int = field(default=64, metadata={"help": "Prompts per forward pass."})


@dataclass
class PushArguments:
    run: str = field(metadata={"help": "APA directory, run directory, or PEFT adapter directory."})
    repo_id: str = field(metadata={"help": "Hub model repo, e.g. user/apa-movielens (created if missing)."})
    private: bool = field(default=False, metadata={"help": "Create the repo private."})
    keep_history: bool = field(
        default=False,
        metadata={"help": "Keep earlier versions downloadable even after a deletion request (default: purge them)."},
    )
    method: str | None = field(
        default=None,
        metadata={"help": "Which model of a run directory to push (default: the one the run's latest event wrote).",
                  "choices": ["apa", "sisa", *APPROXIMATE, "original"]},
    )  # fmt: skip
    license: str | None = field(
        default=None, metadata={"help": "Card metadata: a Hub license id (apache-2.0, mit, other, ...)."}
    )
    base_model: str | None = field(
        default=None, metadata={"help": "Card metadata: the base model's Hub id (default: the one the model records)."}
    )
    datasets: list[str] | None = field(default=None, metadata={"help": "Card metadata: Hub dataset ids."})
    tags: list[str] | None = field(default=None, metadata={"help": "Card metadata: tags added to the library's own."})
    library_name: str | None = field(
        default=None, metadata={"help": "Card metadata: the library that loads the model (default: peft)."}
    )


@dataclass
class PullArguments:
    repo_id: str = field(metadata={"help": "Hub repo id."})
    output_dir: str = field(metadata={"help": "New (or empty) directory to write the version to."})
    revision: str = field(default="main", metadata={"help": "Version tag (v2), branch or commit."})


@dataclass
class VersionsArguments:
    repo_id: str = field(metadata={"help": "Hub repo id."})


@dataclass
class DemoArguments:
    output_dir: str = field(default="runs/demo", metadata={"help": "Where the demo writes its run."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, models and forget request."})
    quick: bool = field(default=False, metadata={"help": "A smaller, faster demo that checks the mechanics only."})


@dataclass
class BenchArguments:
    data: str = field(default="synthetic", metadata={"help": "Data spec (e.g. movielens-100k:DIR)."})
    model: str | None = field(default=None, metadata={"help": "Base model id or path (default: built-in stand-in)."})
    preset: str = field(
        default="e2urec",
        metadata={"help": "Split preset: e2urec (6:2:2 by time) or apa (1024/500/1000 samples).",
                  "choices": ["e2urec", "apa"]},
    )  # fmt: skip
    seeds: int = field(default=1, metadata={"help": "Repetitions with seeds 0..N-1; rows report mean ± std."})
    num_shards: int | None = field(
        default=None, metadata={"help": "Shards K of APA, SISA, RecEraser (4; 2 with --tiny)."}
    )
    forget_fraction: float = field(
        default=0.2, metadata={"help": "Share of users to forget when the data has no niche users (E2URec §5.1)."}
    )
    output_dir: str = field(default="runs/bench", metadata={"help": "Where models are written."})
    plots: str | None = field(default=None, metadata={"help": "Write utility_vs_forgetting.png and time.png here."})
    tiny: bool = field(default=False, metadata={"help": "A tiny configuration that checks the mechanics in ~1 min."})
    methods: str | None = field(
        default=None,
        metadata={"help": "Comma-separated rows to run, as printed in the table (Original and Retrain always run)."},
    )
    workers: int = field(
        default=1,
        metadata={"help": "Seeds measured at once, each in its own process sharing the threads (2 on 2 cores)."},
    )


# --------------------------------------------------------------------------------------------------------------------
# Parsing


CONFIG_EPILOG = (
    "Every option can also come from a YAML file: `--config run.yaml` holding `field: value` lines with the same "
    "names (command-line options override it; an `env:` mapping sets environment variables)."
)


@dataclass
class Command:
    name: str
    help: str
    run: Callable[..., dict[str, Any] | None]
    # argv -> (dataclass types, extra defaults): the types can depend on `--method`, the defaults on the run.
    schema: Callable[[list[str]], tuple[list[type], dict[str, Any]]]
    description: str | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, schema, description: str | None = None):
    def register(fn):
        COMMANDS[name] = Command(name, help, fn, schema, description)
        return fn

    return register


def fixed(*types: type) -> Callable[[list[str]], tuple[list[type], dict[str, Any]]]:
    return lambda argv: ([*types, CLIArguments], {})


def peek(argv: list[str], name: str) -> Any:
    """The value `--name` will take: from the command line, else from the `--config` YAML file, else None."""
    for flag in (f"--{name}", f"--{name.replace('_', '-')}"):
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        import yaml

        path = Path(argv[argv.index("--config") + 1])
        config = yaml.safe_load(path.read_text()) if path.is_file() else None
        if isinstance(config, dict):
            return config.get(name)
    return None


def parse(cmd: Command, argv: list[str]) -> dict[str, Any]:
    """Parse a subcommand's arguments (and `--config`) into its dataclasses, keyed by class."""
    from trl import TrlParser

    types, defaults = cmd.schema(argv)
    parser = TrlParser(types, prog=f"hf-recunlearn {cmd.name}", description=cmd.description or cmd.help,
                       epilog=CONFIG_EPILOG, allow_abbrev=False)  # fmt: skip
    if defaults:
        parser.set_defaults_with_config(**defaults)
    return {type(obj): obj for obj in parser.parse_args_and_config(argv)}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the subcommands (each parses its own options, see `parse`)."""
    parser = argparse.ArgumentParser(
        prog="hf-recunlearn",
        description="Make LLM-based recommenders forget: E2URec (approximate) and APA (exact) on transformers + PEFT. "
        "`hf-recunlearn COMMAND --help` lists a command's options.",
        allow_abbrev=False,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        sub.add_parser(cmd.name, help=cmd.help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top, rest = build_parser().parse_known_args(argv)
    cmd = COMMANDS[top.command]
    _configure_logging(verbose="--verbose" in rest)
    try:
        parsed = parse(cmd, rest)  # --help and unknown options exit here (argparse: 0 / 2), before any work
        parsed["argv"] = rest
        cli = parsed[CLIArguments]
        _configure_logging(cli.verbose)
        # Trainers and progress bars may print on stdout: it is kept for the one JSON document.
        with contextlib.redirect_stdout(sys.stderr):
            results = cmd.run(parsed)
    except (ValueError, FileNotFoundError, FileExistsError, _hub_error(), _locked_error()) as err:
        # Bad input: a clear message, no traceback, exit 2.
        print(f"hf-recunlearn {cmd.name}: error: {err}", file=sys.stderr)
        return 2
    document = json_safe(results)
    if cli.json:
        from .runs import write_json_atomic

        write_json_atomic(cli.json, document)
    else:
        print(json.dumps(document, indent=2, sort_keys=True, allow_nan=False))
    return 1 if isinstance(results, dict) and results.get("ok") is False else 0  # `verify`: a check failed


def _config(parsed: dict):
    """The method's configuration (a `TrainingArguments` subclass) among a command's parsed dataclasses."""
    from transformers import TrainingArguments

    return next((value for value in parsed.values() if isinstance(value, TrainingArguments)), None)


def json_safe(value: Any) -> Any:
    """`value` as plain JSON: NaN and infinities become null, numpy scalars and arrays Python values, paths text."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist"):  # numpy scalars and arrays, tensors
        return json_safe(value.tolist())
    return str(value)


def _configure_logging(verbose: bool) -> None:
    """hf_recunlearn's logger to stderr (INFO, DEBUG with --verbose); other libraries' loggers at WARNING."""
    handler = next((h for h in logger.handlers if getattr(h, "_hf_recunlearn_cli", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._hf_recunlearn_cli = True
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    handler.stream = sys.stderr  # the current stderr (tests capture it per test)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    for name in ("httpx", "httpcore", "huggingface_hub", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _configure_threads(cli: CLIArguments, small_model: bool) -> None:
    """
    The CLI's thread default: `--num_threads` if given (0: PyTorch's default); else OMP_NUM_THREADS if set; else one
    intra-op thread for the built-in tiny model. Child processes (multi-process shard training) inherit it.
    """
    threads = cli.num_threads
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS") or not small_model:
            return
        threads = 1
    if threads < 0:
        raise ValueError(f"`num_threads` must be >= 0, got {threads}. Pass 0 for PyTorch's default.")
    if threads == 0:
        return
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _locked_error() -> type[Exception]:
    from .controller import RunLockedError

    return RunLockedError


def _hub_error() -> type[Exception]:
    from .hub import HubOperationError

    return HubOperationError


# --------------------------------------------------------------------------------------------------------------------
# demo, bench


@command("demo", "Run the built-in demo (synthetic data, tiny model) end to end.", fixed(DemoArguments))
def _demo(parsed) -> dict[str, Any]:
    from dataclasses import replace

    from .demo import QUICK, DemoSettings, format_summary, run_demo

    args = parsed[DemoArguments]
    _configure_threads(parsed[CLIArguments], small_model=True)
    settings = replace(QUICK if args.quick else DemoSettings(), seed=args.seed)
    result = run_demo(args.output_dir, settings, progress=True)
    print(format_summary(result), file=sys.stderr)
    return result


@command(
    "bench",
    "Every unlearning method side by side on one data set: JSON, a Markdown table (stderr) and plots.",
    fixed(BenchArguments),
    description=(
        "Train the original, two retrained references and the shard models, unlearn one forget request with every "
        "method (Original, Retrain, SISA, RecEraser-style, NegGrad, NegKL, Bad-T, E2URec and its ablations, APA "
        "D/ND and its weightings) and measure them the same way. The results are the JSON document (stdout, or "
        "--json PATH); the Markdown table, logs and progress go to stderr. See benchmarks/README.md."
    ),
)
def _bench(parsed) -> dict[str, Any]:
    from dataclasses import replace

    from .bench import TINY, BenchSettings, format_markdown, format_summary, run_bench

    args, cli = parsed[BenchArguments], parsed[CLIArguments]
    _configure_threads(cli, small_model=args.model is None)
    settings = replace(TINY if args.tiny else BenchSettings(), forget_fraction=args.forget_fraction)
    if args.num_shards is not None:
        settings = replace(settings, apa=settings.apa | {"num_shards": args.num_shards})
    result = run_bench(args.data, model=args.model, preset=args.preset, seeds=args.seeds, settings=settings,
                       output_dir=args.output_dir, json_path=cli.json, plots_dir=args.plots,
                       methods=args.methods.split(",") if args.methods else None,
                       workers=args.workers)  # fmt: skip
    print(format_markdown(result), file=sys.stderr)
    print("\n" + format_summary(result), file=sys.stderr)
    return result


# --------------------------------------------------------------------------------------------------------------------
# train


TRAIN_CONFIGS = {"tallrec": "RecConfig", "apa": "APAConfig", "sisa": "SISAConfig"}


def _train_schema(argv: list[str]):
    from . import trainer
    from .pipeline import BUILTIN_RECIPE

    method = peek(argv, "method") or "tallrec"
    config_cls = getattr(trainer, TRAIN_CONFIGS.get(method, "RecConfig"))  # an unknown --method: argparse says so
    defaults = dict(BUILTIN_RECIPE) if peek(argv, "model") is None else {}
    return [TrainArguments, DataArguments, config_cls, CLIArguments], defaults


@command(
    "train",
    "Train the original recommender (TALLRec recipe) or shard adapters (APA, SISA) into a new run directory.",
    _train_schema,
    description=(
        "Train into the run directory --output_dir (data splits, base model, the trained model, run.json). Every "
        "field of the method's config is an option: RecConfig for --method tallrec, APAConfig / SISAConfig for "
        "--method apa / sisa (`train --method apa --help`), all of TrainingArguments included. Without --model, the "
        "built-in stand-in base is trained first and the built-in recipe (pipeline.BUILTIN_RECIPE) replaces the "
        "config's defaults."
    ),
)
def _train(parsed) -> dict[str, Any]:
    from .pipeline import BUILTIN, build_builtin_base, prepare_data, train_recommender
    from .runs import RunDir, RunInfo

    args, data, cli = parsed[TrainArguments], parsed[DataArguments], parsed[CLIArguments]
    config = _config(parsed)
    if peek(parsed["argv"], "output_dir") is None:  # TrainingArguments would default to ./trainer_output
        raise ValueError("`--output_dir` is required: the run directory to create (or replace, with --overwrite).")
    run = RunDir(config.output_dir)
    _check_new_run(run, args.overwrite)
    builtin = args.model is None
    _configure_threads(cli, small_model=builtin)
    prepared = prepare_data(
        data.data,
        preset=data.preset,
        template=data.template,
        history_len=data.history_len,
        num_samples=data.num_samples,
        pretrain_user_fraction=0.3 if builtin else 0.0,  # ignored for tallrec:PATH, which has no interactions
        seed=config.seed,
    )
    if run.path.exists() and args.overwrite:
        import shutil

        shutil.rmtree(run.path)  # a run is replaced whole: nothing of the old one (an e2urec/ result) survives
    run.path.mkdir(parents=True, exist_ok=True)
    run.save_datasets(prepared.datasets)
    splits = prepared.datasets
    base = args.model
    if builtin:
        logger.info("Training the built-in stand-in base model")
        build_builtin_base(prepared, run.base_dir, seed=config.seed, batch_size=config.per_device_train_batch_size)
        base = str(run.base_dir)
    if args.method in EXACT:
        config.output_dir = str(run.path / args.method)
        metrics = _train_shards(args.method, data, base, splits, config)
    else:
        config.output_dir = str(run.original_dir)
        _, metrics = train_recommender(base, splits["train"], splits["test"], run.original_dir, config)
    key = args.method if args.method in EXACT else "original"
    info = RunInfo(
        data=data.data,
        preset=data.preset,
        template=data.template,
        base_model=BUILTIN if builtin else args.model,
        history_len=data.history_len,
        full_finetune=not config.use_lora,
        method=args.method,
        seed=config.seed,
        metrics={key: metrics},
    )
    info.record_event("train", key, **({"version": metrics["version"]} if "version" in metrics else {}))
    run.save_info(info)
    return {"method": args.method, "output_dir": str(run.path), **metrics}


def _check_new_run(run, overwrite: bool) -> None:
    """`train` never writes into an existing run unless told to, and never deletes files it did not write."""
    if not run.path.exists():
        return
    if not run.path.is_dir():
        raise FileExistsError(f"`--output_dir` {str(run.path)!r} is a file; pass a directory for the run.")
    if not any(run.path.iterdir()):
        return
    if not run.exists():
        raise FileExistsError(
            f"`--output_dir` {str(run.path)!r} is not empty and holds no run (no run.json): `train` writes a run "
            "into a new or empty directory. Pass another `--output_dir`."
        )
    if not overwrite:
        raise FileExistsError(
            f"`--output_dir` {str(run.path)!r} already holds a run. Pass `--overwrite` to replace it (its models, "
            "data and results are deleted), or another `--output_dir`."
        )


def _shard_trainer_class(method: str):
    from .trainer import APATrainer, SISATrainer

    return APATrainer if method == "apa" else SISATrainer


def _train_shards(method: str, data: DataArguments, base: str, splits, config) -> dict[str, Any]:
    """`train --method apa|sisa`: K shard adapters with one recipe, saved under RUN/<method>/."""
    from .metrics import utility_metrics

    evaluation = {"valid": splits["valid"], "test": splits["test"]}
    trainer = _shard_trainer_class(method)(base, config, train_dataset=splits["train"], eval_dataset=evaluation)
    trainer.data_spec = {"data": data.data, "preset": data.preset, "template": data.template, "seed": config.seed,
                         "history_len": data.history_len, "num_samples": data.num_samples}  # fmt: skip
    trainer.train()
    report = trainer.last_report
    metrics = utility_metrics(splits["test"]["label"], trainer.predict(splits["test"]).predictions)
    return {**metrics, "train_seconds": report.seconds, "num_shards": config.num_shards, "version": report.version}


# --------------------------------------------------------------------------------------------------------------------
# forget


def _exact_config_class(method: str):
    from .trainer import APAConfig, SISAConfig

    return APAConfig if method == "apa" else SISAConfig


def stored_recipe_defaults(directory: Path, config_cls) -> dict[str, Any]:
    """The fields of the recipe stored with an APA/SISA directory, as parser defaults ({} when there is none yet)."""
    import inspect

    from .apa_recommender import CONFIG_NAME, read_apa_directory

    if not (Path(directory) / CONFIG_NAME).is_file():
        return {}
    recipe = read_apa_directory(directory).recipe or {}
    accepted = set(inspect.signature(config_cls).parameters)
    values = {k: v for k, v in recipe.get("training_arguments", {}).items() if k in accepted}
    settings = {k: v for k, v in (recipe.get("settings") or {}).items() if k in accepted and v is not None}
    return {**values, **settings}


def _forget_schema(argv: list[str]):
    from .trainer import APPROXIMATE_METHODS

    method, run = peek(argv, "method"), peek(argv, "run")
    types: list[type] = [ForgetArguments, CLIArguments]
    defaults: dict[str, Any] = {}
    if run and method in (*APPROXIMATE, *EXACT):
        defaults["output_dir"] = str(Path(run) / method)  # where the result goes: the run's <method>/ folder
    if method in APPROXIMATE:
        types.insert(1, APPROXIMATE_METHODS[method][1])
    elif method in EXACT:
        # The recipe stored at train time is the default of every field: a forget retrains with it, and an option
        # that changes it is refused by the trainer, naming the field.
        config_cls = _exact_config_class(method)
        types.insert(1, config_cls)
        if run:
            defaults.update(stored_recipe_defaults(Path(run) / method, config_cls))
    return types, defaults


@command(
    "forget",
    "Forget users or samples from a trained run.",
    _forget_schema,
    description=(
        "Forget users or samples from a run written by `train`. Approximate methods (e2urec, neggrad, negkl, badt) "
        "unlearn the original recommender into RUN/<method>/; every field of their config is an option (`forget "
        "--method e2urec --help`). Exact methods (apa, sisa) retrain the shards that held the data with the recipe "
        "stored at train time: its values are the defaults, and an option that changes the recipe is refused."
    ),
)
def _forget(parsed) -> dict[str, Any]:
    from .runs import RunDir

    args, cli = parsed[ForgetArguments], parsed[CLIArguments]
    config = _config(parsed)
    run = RunDir(args.run)
    info = run.load_info()
    _configure_threads(cli, small_model=info.base_model == "builtin")
    expected = str(run.path / args.method)
    if Path(config.output_dir).resolve() != Path(expected).resolve():
        raise ValueError(
            f"`--output_dir` {config.output_dir!r} does not apply to `forget`: the result is written to {expected!r} "
            "in the run. Leave `--output_dir` out."
        )
    config.output_dir = expected
    whom = [name for name in ("users", "samples", "forget_fraction") if getattr(args, name) is not None]
    if len(whom) + args.resume != 1:
        given = ", ".join(f"`--{n}`" for n in whom + (["resume"] if args.resume else [])) or "none"
        raise ValueError(
            "Pass exactly one of `--users`, `--samples`, `--forget_fraction` (or `--resume` for apa/sisa); got "
            f"{given}."
        )
    if args.token_file is not None and not Path(args.token_file).parent.is_dir():
        raise ValueError(f"`--token_file` {args.token_file!r}: its folder does not exist; create it first.")
    if args.method in EXACT:
        return _forget_shards(args, parsed["argv"], run, info)
    if args.resume or args.flush or args.token_file is not None:
        raise ValueError(
            "`--resume`, `--flush` and `--token_file` apply to `--method apa|sisa` (the exact methods' journal and "
            "deletion tokens; an approximate forget issues no token)."
        )
    return _forget_approximate(args, config, run, info)


def _ids(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text is not None else None


def _shard_run_trainer(run, method: str, datasets=None, args=None):
    """The trainer of a run's shard model (`RUN/apa` or `RUN/sisa`), configured from the recipe stored with it."""
    splits = datasets or run.load_datasets()
    return _shard_trainer_class(method)(str(run.path / method), args, train_dataset=splits["train"],
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
    if info.method not in EXACT:
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
    _record_shard_event(run, info.method, trainer, report)
    return {"recovered": True, **report.to_dict()}


def _record_shard_event(run, method: str, trainer, report) -> None:
    """The forget event and the test metrics of the new version in run.json, so that a push describes it."""
    from .metrics import utility_metrics

    test = trainer.eval_dataset["test"]
    metrics = utility_metrics(test["label"], trainer.predict(test).predictions)
    info = run.load_info()
    info.metrics[method] = {**metrics, "version": trainer.apa_state.version}
    info.record_event("forget", method, version=report.version, users_forgotten=report.users_removed,
                      samples_forgotten=report.samples_removed)  # fmt: skip
    run.save_info(info)


def _forget_shards(args, argv, run, info) -> dict[str, Any]:
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
        # Parsed again now that the run is recovered: the stored recipe is read from the current version.
        config = parse(COMMANDS["forget"], argv)[_exact_config_class(args.method)]
        config.output_dir = str(shard_dir)
        splits = run.load_datasets()
        trainer = _shard_run_trainer(run, args.method, splits, args=config)
        users, samples = _ids(args.users), _ids(args.samples)
        if args.forget_fraction is not None:
            from .data import make_forget_split

            users = make_forget_split(splits["train"], fraction=args.forget_fraction, seed=args.forget_seed).user_ids
        if not users and not samples:
            raise ValueError("`--users` / `--samples` names no id: pass a comma-separated list of ids to forget.")
        report = trainer.forget(user_ids=users, sample_ids=samples, flush=args.flush, wait=not args.no_wait,
                                erase_copies=_erase_run_copies(run, trainer))  # fmt: skip
        if report.event == "forget":
            _record_shard_event(run, args.method, trainer, report)
    result = {"method": args.method, **report.to_dict()}
    if args.token_file is not None and report.tokens:
        from .controller import write_json_atomic

        write_json_atomic(args.token_file, dict(zip(users, report.tokens)))  # created 0600 (mkstemp)
        result["token_file"] = str(Path(args.token_file).resolve())
    elif args.token_file is not None:
        logger.warning("No deletion token was issued (the request is queued or named samples only): %s not written.",
                       args.token_file)  # fmt: skip
    return result


def _forget_approximate(args, config, run, info) -> dict[str, Any]:
    """E2URec and the approximate baselines: a LoRA student on the original, saved under RUN/<method>/."""
    from .data import make_forget_split
    from .evaluation import predict_unlearning_sets
    from .models import load_model
    from peft import PeftModel

    from .trainer import APPROXIMATE_METHODS

    if info.method != "tallrec" or not run.original_dir.is_dir():
        raise ValueError(
            f"`--method {args.method}` unlearns the original recommender of a `train --method tallrec` run."
        )
    splits = run.load_datasets()
    request = make_forget_split(splits["train"], user_ids=_ids(args.users), sample_ids=_ids(args.samples),
                                fraction=args.forget_fraction, seed=args.forget_seed)  # fmt: skip
    trainer_cls, _ = APPROXIMATE_METHODS[args.method]
    test = splits["test"]
    model, tokenizer = load_model(str(run.original_dir))
    before = predict_unlearning_sets(model, tokenizer, request.forget, test, full_vocab=False)
    audit = None
    if config.stopping == "audit":
        # The calibrated default: the run's base model never saw the forget set, so its view of it is the target.
        from .audit import forget_audit_for_request

        def audit_with(reference):
            return forget_audit_for_request(reference, tokenizer, request, splits,
                                            batch_size=config.per_device_eval_batch_size, seed=config.seed)[0]  # fmt: skip

        if isinstance(model, PeftModel):  # a LoRA original: its base is the same weights with the adapter off
            with model.disable_adapter():
                audit = audit_with(model)
        else:  # a full fine-tune: load the base it started from
            audit = audit_with(load_model(run.base_model_path(info))[0])
    trainer = trainer_cls(model, args=config, forget_dataset=request.forget, retain_dataset=request.retain,
                          eval_dataset=test, processing_class=tokenizer, forget_audit=audit)  # fmt: skip
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
    if trainer.audit_callback is not None:
        evidence["audit"] = trainer.audit_callback.report()  # counts and AUCs only: no ids
    counts = {"users_forgotten": len(request.user_ids), "samples_forgotten": len(request.forget)}
    info = run.load_info()
    info.metrics[args.method] = evidence
    info.record_event("forget", args.method, **counts)
    run.save_info(info)
    return {"method": args.method, **counts, "output_dir": config.output_dir, **evidence}


# --------------------------------------------------------------------------------------------------------------------
# evaluate


@command("evaluate", "Score a trained run on one of its splits.", fixed(EvaluateArguments))
def _evaluate(parsed) -> dict[str, Any]:
    from .metrics import utility_metrics
    from .runs import RunDir

    args = parsed[EvaluateArguments]
    run = RunDir(Path(args.run).resolve())
    info = run.load_info()
    _configure_threads(parsed[CLIArguments], small_model=info.base_model == "builtin")
    recover_run(run, info)
    split = run.load_datasets()[args.split]
    if info.method in EXACT:
        from .apa_recommender import APARecommender, read_apa_directory
        from .models import load_model
        from .trainer.apa_trainer import config_from_recipe

        # The base as the shards were trained on it: the recipe's dtype and quantization.
        recipe = read_apa_directory(run.path / info.method).recipe
        config = config_from_recipe(_exact_config_class(info.method), recipe, output_dir=str(run.path / info.method))
        base, _ = load_model(run.base_model_path(info), **config.model_load_kwargs())
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


# --------------------------------------------------------------------------------------------------------------------
# push, pull, versions


def resolve_push_source(run: str | Path, method: str | None = None) -> tuple[str, Path]:
    """
    What `hf-recunlearn push --run DIR` pushes: `("apa", dir)` or `(adapter method, dir)`.

    Accepts an APA directory, a PEFT adapter directory, or a run directory. In a run directory, `method` picks the
    model (`apa`, `sisa`, an approximate method, `original`); by default the one the run's latest event wrote, else
    `apa/`, `sisa/`, `e2urec/`, `original/` in that order.
    """
    from .apa_recommender import CONFIG_NAME
    from .runs import RunDir

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"`--run` {str(run)!r} is not a directory.")
    folders = ["apa", "sisa", *APPROXIMATE, "original"]
    if method is None and RunDir(run).exists():
        latest = [e["method"] for e in reversed(RunDir(run).load_info().events) if e.get("method") in folders]
        folders = list(dict.fromkeys(latest + folders))
    candidates = [("apa", run)] + [("apa" if f in EXACT else f, run / f) for f in folders]
    if (run / "adapter_config.json").is_file():
        candidates.insert(1, (method or "e2urec", run))
    for kind, folder in candidates:
        if method is not None and kind != method and not (kind == "apa" and folder.name == method):
            continue
        marker = CONFIG_NAME if kind == "apa" else "adapter_config.json"
        if (folder / marker).is_file():
            return kind, folder
    wanted = f" {method!r} model" if method else " model"
    raise FileNotFoundError(
        f"`--run` {str(run)!r} holds no{wanted} to push. Pass an APA directory (with {CONFIG_NAME}), a PEFT adapter "
        "directory (with adapter_config.json), or a run directory with an apa/, sisa/, e2urec/ (or another method's) "
        "or original/ subfolder."
    )


@command(
    "push",
    "Push a version to a Hub model repo (one commit + a vN tag; purges earlier versions after a forget).",
    fixed(PushArguments),
    description=(
        "Push the current version of a model to the Hub as one commit tagged vN. --run accepts: an APA directory "
        "(holding apa_config.json); a run directory (the model its latest event wrote, or --method's); or a PEFT "
        "adapter directory itself (adapter_config.json). After a forget event, earlier versions are deleted from the "
        "Hub (tags removed, history squashed) unless --keep_history is given."
    ),
)
def _push(parsed) -> dict[str, Any]:
    from . import hub
    from .apa_recommender import read_version
    from .controller import directory_lock
    from .runs import RunDir

    args = parsed[PushArguments]
    run = next((RunDir(c) for c in (Path(args.run), Path(args.run).parent) if RunDir(c).exists()), None)
    if run is not None:
        recover_run(run)
    kind, folder = resolve_push_source(args.run, args.method)
    info = run.load_info() if run is not None else None
    method_key = folder.name if info is not None and folder.parent == run.path else kind
    metrics = (info.metrics.get(method_key) if info else None) or None
    if isinstance(metrics, dict) and kind == "apa" and metrics.get("version", 1) != read_version(folder):
        metrics = None  # measured on another version: a card describes the version it is pushed with
    metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "version"} if metrics else None
    event = info.latest_event(method_key) if info is not None else None
    card = {"license": args.license, "base_model": args.base_model, "datasets": args.datasets, "tags": args.tags,
            "library_name": args.library_name}
    if kind == "apa":
        with directory_lock(folder, reason=" (push)"):
            result = hub.push(folder, args.repo_id, private=args.private, keep_history=args.keep_history,
                              metrics=metrics, **card)  # fmt: skip
    else:
        users = int(event.get("users_forgotten", 0)) if event else 0
        result = hub.push_adapter(folder, args.repo_id, method=kind, private=args.private, users_removed=users,
                                  keep_history=args.keep_history, metrics=metrics, **card)  # fmt: skip
    return {"pushed": str(folder), "method": kind, **result.to_dict(), "run_event": event}


@command("pull", "Download one version of a Hub repo pushed by `push`.", fixed(PullArguments))
def _pull(parsed) -> dict[str, Any]:
    from . import hub

    args = parsed[PullArguments]
    path = hub.pull(args.repo_id, args.revision, args.output_dir)
    return {"repo_id": args.repo_id, "revision": args.revision, "output_dir": str(path)}


@command(
    "versions", "List the versions of a Hub repo: tag, commit, event, counts, status.", fixed(VersionsArguments)
)
def _versions(parsed) -> dict[str, Any]:
    from . import hub

    args = parsed[VersionsArguments]
    return {"repo_id": args.repo_id, "versions": [v.to_dict() for v in hub.list_versions(args.repo_id)]}


@dataclass
class VerifyArguments:
    run: str | None = field(
        default=None, metadata={"help": "Run directory, APA directory or adapter directory with receipts/."}
    )
    repo_id: str | None = field(default=None, metadata={"help": "Hub repo pushed by `hf-recunlearn push`."})
    revision: str | None = field(default=None, metadata={"help": "Revision of --repo_id to check (default: main)."})
    retrain_shard: int | None = field(
        default=None, metadata={"help": "With --run: retrain this shard with the stored recipe and compare."}
    )
    token: str | None = field(default=None, metadata={"help": "A deletion token (hfru1....) or a file holding one."})


@command(
    "verify",
    "Check the forgetting receipts of a run or a Hub repo, and a deletion token (exit 1 if a check fails).",
    fixed(VerifyArguments),
    description=(
        "Check the forgetting receipts: --run DIR (the controller: hashes, chain, manifests against the ledger, "
        "each forgotten digest absent), --repo_id ID [--revision vN] (anyone: the published bytes only), "
        "--run DIR --retrain_shard K (retrain shard K with the stored recipe and compare bit for bit), "
        "--token T with either (a forgotten user's check). Exit 0 when everything holds, 1 with one line per "
        "failure on stderr; stdout is one JSON document."
    ),
)
def _verify(parsed) -> dict[str, Any]:
    from .verification import verify

    args = parsed[VerifyArguments]
    if (args.run is None) == (args.repo_id is None):
        raise ValueError("Pass exactly one of `--run DIR` (the controller's check) or `--repo_id ID` (the public's).")
    report = verify(args.run, repo_id=args.repo_id, revision=args.revision, token=args.token,
                    retrain_shard=args.retrain_shard)  # fmt: skip
    for line in report.failures:
        print(f"hf-recunlearn verify: FAIL: {line}", file=sys.stderr)
    return report.to_dict()


if __name__ == "__main__":
    sys.exit(main())
