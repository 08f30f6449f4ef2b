"""`hf-recunlearn bench`: every unlearning method side by side on one data set, one split and one forget request.

The shape of the papers' tables (E2URec Tables 1–3, APA Table 1) at the scale a CPU allows. For each seed:

1. Prepare the data and the base model (the built-in stand-in LLM unless `model` is given), and draw the forget
   request: every niche user of the synthetic data set (the users a recommender can only know from their own data),
   else a seeded `forget_fraction` of the training users (E2URec §5.1 forgets 20%).
2. Train the **Original** recommender and two **Retrain** references on the retained data (seed and seed + 1: the
   distance between them is the noise floor), and one LoRA adapter on all the data (the **Single adapter**, the
   reference of the inference-cost ratio).
3. Unlearn a fresh copy of the Original with each approximate method (**NegGrad**, **NegKL**, **Bad-T**, **E2URec** and
   its ablations without L_FGT (β = 0) and without L_REM (β = 1)); train the shard models (**APA**, **SISA**,
   **RecEraser-style**) and forget the request with them (exact: only the shards that held the data are retrained).
4. Measure every row the same way: utility on the test split, JSD and L2 to Retrain on the forget set (approximate
   methods; an exact method's distance to retraining itself is zero by construction), membership-inference AUC of the
   forget set against the test split, wall time of the unlearning and its ratio to Retrain, trainable parameters,
   and inference milliseconds per sample (aggregation weights included) and their ratio to the single adapter.

Seeds change the synthetic population (real data sets: the held-out users of the stand-in base), the models'
initialisation and the training order; rows report the mean and, over more than one seed, the standard deviation.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from .demo import DemoSettings, best_ms_per_sample
from .runs import write_json_atomic
from .trainer import RecConfig, UnlearningConfig

logger = logging.getLogger(__name__)

COLUMNS = (
    "auc", "acc", "logloss", "jsd", "l2", "mia_auc", "unlearn_seconds", "unlearn_vs_retrain", "trainable_params",
    "infer_ms_per_sample", "infer_vs_single",
)  # fmt: skip
"""The columns of every row, in the order of the Markdown table (`None` where a value does not apply)."""

EXTRA_COLUMNS = (
    "forget_auc", "gap_closed", "shards_retrained", "one_user_seconds", "one_user_shards_retrained",
    "audit_relative_auc", "audit_target_relative_auc", "audit_at_target", "audit_loss_auc", "audit_target_loss_auc",
    "audit_ks_pvalue", "audit_confidence_auc",
    "forget_quality", "mia_loss", "mia_confidence", "mia_entropy", "mia_reference",
    "relearn_auc_before", "relearn_auc_after", "relearn_gain", "stopped_at_step", "alpha",
)  # fmt: skip
"""
Per-row extras: AUC on the forget set, the share of the Original→Retrain JSD gap closed (approximate methods), and
for the shard methods the shards the request retrained, then the seconds and shards of forgetting one more user.
Then the forgetting evidence (Original, Retrain and approximate methods): the retrain-free audit (`audit_*`: the
loss-attack AUC of the forget set against hold-out rows, its target from the reference model, whether it is inside
the target's interval, the KS p-value), TOFU's forget quality (KS p-value against Retrain's P(like) on the forget
set), the membership-inference suite against the test rows, the relearning attack (forget AUC on 90% of the forget
set before and after fine-tuning on the other 10%), the step the audit stopped the run at (0 = zero steps) and
E2URec's α in effect.
"""

ROWS = (
    "Original", "Retrain", "Single adapter", "SISA", "RecEraser-style", "NegGrad", "NegKL", "Bad-T", "E2URec",
    "E2URec fixed α", "E2URec w/o L_FGT", "E2URec w/o L_REM", "APA(D)", "APA(ND)", "APA(ND) average weights",
    "APA(ND) semantic weights",
)  # fmt: skip
"""Every row of the benchmark, in table order. `APA(ND)` uses the sample-adaptive weights."""

APPROXIMATE_ROWS = {
    "NegGrad": ("neggrad", {}),
    "NegKL": ("negkl", {}),
    "Bad-T": ("badt", {}),
    "E2URec": ("e2urec", {}),
    # The fixed setting: α = 32 on the normalized teacher and the whole schedule, whatever the audit says; the
    # ablations keep it so that they isolate a loss term, not the stopping rule.
    "E2URec fixed α": ("e2urec", {"stopping": "fixed", "calibrate_alpha": False}),
    "E2URec w/o L_FGT": ("e2urec", {"beta": 0.0, "stopping": "fixed", "calibrate_alpha": False}),
    "E2URec w/o L_REM": ("e2urec", {"beta": 1.0, "stopping": "fixed", "calibrate_alpha": False}),
}
REFERENCE_ROWS = ("Original", "Retrain")
"""Rows every run measures, whatever `methods` selects: the model to forget from and the gold standard."""
APA_ROWS = {
    "APA(D)": {"level": "D", "weighting": "adaptive"},
    "APA(ND)": {"level": "ND", "weighting": "adaptive"},
    "APA(ND) average weights": {"level": "ND", "weighting": "uniform"},
    "APA(ND) semantic weights": {"level": "ND", "weighting": "semantic"},
}


@dataclass
class BenchSettings(DemoSettings):
    """
    The recipes of the benchmark: the demo's ([`~hf_recunlearn.demo.DemoSettings`]), plus what only the benchmark
    needs.

    Args:
        forget_fraction (`float`, *optional*, defaults to `0.2`): share of the training users to forget when the data
            has no niche users (real data sets); E2URec §5.1 uses 0.2.
        timing_samples (`int`, *optional*, defaults to `512`): test samples scored for the inference timings.
        timing_repeats (`int`, *optional*, defaults to `5`): best of this many timed passes.
        audit_reference (`str`, *optional*, defaults to `"base"`): the model that never saw the forget set, whose
            view of it is the audit's target ([`~hf_recunlearn.audit.ForgetAudit`]): `"base"`, the base model the
            recommender was trained from (free; with the built-in stand-in it is itself a recommender trained on other
            users), or `"cheap"`, the Original's recipe for one epoch on `audit_reference_fraction` of the retained
            data (its training time is added to every calibrated method's unlearning time).
        relearn_fraction (`float`, *optional*, defaults to `0.1`), relearn_epochs (`float`, *optional*, defaults to
            `2.0`): the relearning attack fine-tunes on this share of the forget set for this many epochs, with the
            Original's learning rate and batch size.
        common (`dict`): the demo's, and `disable_tqdm=False`.
        llm_original (`dict`): on top of `recommender`, [`RecConfig`] fields of the Original and Retrain when `model`
            is a real LLM: a TALLRec LoRA (the built-in stand-in is fully fine-tuned instead, with `original`).
        unlearning (`dict`): [`UnlearningConfig`] fields of every approximate method (NegGrad, NegKL, Bad-T; E2URec on
            top of `e2urec`), among them the stopping rule's `audit_steps` and `audit_samples`. The baselines train
            for E2URec's `num_train_epochs`.
    """

    forget_fraction: float = 0.2
    timing_samples: int = 512
    timing_repeats: int = 5
    audit_reference: str = "base"
    audit_reference_fraction: float = 0.25
    relearn_fraction: float = 0.1
    relearn_epochs: float = 2.0
    common: dict[str, Any] = field(
        metadata={"config": RecConfig},
        default_factory=lambda: {"per_device_eval_batch_size": 32, "disable_tqdm": False},
    )
    llm_original: dict[str, Any] = field(
        metadata={"config": RecConfig}, default_factory=lambda: {"learning_rate": 1e-4}
    )
    unlearning: dict[str, Any] = field(metadata={"config": UnlearningConfig}, default_factory=lambda: {
        "logging_strategy": "no", "report_to": "none", "eval_on_forget": False,
        "audit_steps": 10, "audit_samples": 256,
    })  # fmt: skip

    def unlearning_config(self, method: str, output_dir: str | Path, **overrides) -> UnlearningConfig:
        """The config of an approximate method, by its name in `APPROXIMATE_METHODS` (`"e2urec"`, `"neggrad"`, ...)."""
        from .trainer import APPROXIMATE_METHODS

        if method == "e2urec":
            return self.e2urec_config(output_dir, **(self.unlearning | overrides))
        epochs = {"num_train_epochs": self.e2urec["num_train_epochs"]}
        values = {"output_dir": str(output_dir), "seed": self.seed} | epochs | self.common | self.unlearning
        return APPROXIMATE_METHODS[method][1](**(values | overrides))


# A tiny configuration that runs every row in about a minute: for tests and smoke runs (nothing is learned).
TINY = BenchSettings(num_users=40, history_len=2, model_size="tiny", base={"num_train_epochs": 1},
                     recommender={"num_train_epochs": 1}, original={"num_train_epochs": 1},
                     e2urec={"num_train_epochs": 1, "augment_epochs": 1}, apa={"num_shards": 2},
                     common={"disable_tqdm": True}, timing_samples=32, timing_repeats=1)  # fmt: skip


def run_bench(
    data: str = "synthetic",
    model: str | None = None,
    preset: str = "e2urec",
    seeds: int = 1,
    settings: BenchSettings | None = None,
    output_dir: str | Path = "runs/bench",
    json_path: str | Path | None = None,
    plots_dir: str | Path | None = None,
    progress: bool = True,
    methods: list[str] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """
    Run the benchmark and return `{"config": {...}, "rows": [{"method": ..., <COLUMNS>, <EXTRA_COLUMNS>, "std"}],
    "seeds": [{"seed": s, "rows": [...]}]}`; write it to `json_path` and the plots to `plots_dir` when given.

    Args:
        data (`str`): a data spec (`synthetic`, `movielens-100k:DIR`, ...; see `hf_recunlearn.data.DATA_SPECS`).
        model (`str`, *optional*): base model id or path; default the built-in stand-in LLM trained on held-out users.
        preset (`str`): split preset, `"e2urec"` (6:2:2 by time) or `"apa"` (1024/500/1000 samples).
        seeds (`int`): repetitions with seeds `settings.seed`, `settings.seed + 1`, ...
        settings ([`BenchSettings`], *optional*): recipes and sizes; default [`BenchSettings`]`()`.
        output_dir: where models and shard adapters are written (`seed{N}/...`).
        progress (`bool`): show a progress bar over the whole run (stage by stage).
        methods (`list[str]`, *optional*): the rows to run, named as in the table (`ROWS`); Original and Retrain
            always run, as the references. Default: every row. Without `"Single adapter"` the inference ratio
            (`infer_vs_single`) is not measured.
        workers (`int`): seeds measured at once, each in its own process with `torch.get_num_threads() // workers`
            threads (at least one). Every ratio is of seconds measured within one seed, so seeds run side by side
            compare as they would one after another; `2` on two cores halves the wall time of a tiny-model run.

    With `json_path`, the file is rewritten after every seed, so a run cut short keeps the seeds it finished.
    """
    from .data import parse_data_spec

    settings = settings or BenchSettings()
    if seeds < 1:
        raise ValueError(f"`seeds` must be >= 1, got {seeds}. Pass the number of repetitions, e.g. --seeds 3.")
    if preset not in ("e2urec", "apa"):
        raise ValueError(f"`preset` must be 'e2urec' or 'apa', got {preset!r}.")
    selected = None
    if methods is not None:
        names = [m.strip() for m in methods if m.strip()]
        unknown = [m for m in names if m not in ROWS]
        if unknown:
            raise ValueError(
                f"Unknown method(s) {unknown} in `methods`. Name rows as printed in the table: {', '.join(ROWS)}."
            )
        selected = set(REFERENCE_ROWS) | set(names)
    parse_data_spec(data)  # a clear error for a bad spec before anything is trained
    if settings.apa["num_shards"] < 1:
        raise ValueError(
            f"`num_shards` must be >= 1, got {settings.apa['num_shards']}. Pass the shards K of APA/SISA, e.g. 4."
        )
    if settings.audit_reference not in ("base", "cheap"):
        raise ValueError(f"`audit_reference` must be 'base' or 'cheap', got {settings.audit_reference!r}.")
    if not 0.0 < settings.forget_fraction < 1.0:
        raise ValueError(f"`forget_fraction` must be in (0, 1), got {settings.forget_fraction}.")
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, got {workers}. Pass how many seeds to measure at once, e.g. 2.")

    from tqdm.auto import tqdm

    start = time.perf_counter()
    seed_values = [settings.seed + i for i in range(seeds)]
    bar = tqdm(total=seeds * len(_STAGES), desc="bench", unit="stage", disable=not progress)
    per_seed = []

    def assemble() -> dict[str, Any]:
        return {
            "config": {
                "data": data,
                "model": model or "builtin",
                "preset": preset,
                "seeds": [s["seed"] for s in per_seed],
                "seeds_requested": seed_values,
                "methods": None if selected is None else [name for name in ROWS if name in selected],
                "columns": list(COLUMNS),
                "settings": asdict(settings),
                "forget_request": [s["forget_request"] for s in per_seed],
                "original_memorised": [s["original_memorised"] for s in per_seed],
                "data_sizes": per_seed[0]["data_sizes"],
                "noise_floor_jsd": _mean([s["noise_floor_jsd"] for s in per_seed]),
                "wall_seconds": time.perf_counter() - start,
            },
            "rows": aggregate_rows([s["rows"] for s in per_seed]),
            "criteria": calibration_criteria(per_seed),
            "seeds": per_seed,
        }

    def finished(seed: int, rows: dict, info: dict) -> None:
        per_seed.append({"seed": seed, "rows": rows, **info})
        per_seed.sort(key=lambda s: s["seed"])
        if json_path is not None:
            write_json_atomic(json_path, assemble())

    run = partial(_run_seed, data, model, preset, selected=selected)
    jobs = [(replace(settings, seed=s), Path(output_dir) / f"seed{s}") for s in seed_values]
    try:
        if workers == 1 or seeds == 1:
            for seed_settings, workdir in jobs:
                finished(*_run_one(run, seed_settings, workdir, bar))
        else:
            for result in _imap_in_processes(run, jobs, min(workers, seeds)):
                finished(*result)
                bar.update(len(_STAGES))
    finally:
        bar.close()
    result = assemble()
    if json_path is not None:
        write_json_atomic(json_path, result)
    if plots_dir is not None:
        write_plots(result, plots_dir)
    return result


def _run_one(run: Callable, settings: BenchSettings, workdir: Path, bar=None) -> tuple[int, dict, dict]:
    """`(seed, rows, info)` of one seed; without `bar` (in a worker process) a disabled one: the parent counts seeds."""
    from tqdm.auto import tqdm

    with tqdm(disable=True) if bar is None else nullcontext(bar) as stages:
        return (settings.seed, *run(settings, workdir, stages))


def _imap_in_processes(run: Callable, jobs: list[tuple], workers: int):
    """
    `_run_one` for each `(settings, workdir)` in a pool of `workers` spawned processes, each with an equal share of
    torch's threads; yields results as they complete. An error in one seed is raised at once and the pool is
    terminated (the other seeds stop, none still queued starts); the seeds already yielded are kept by the caller.
    """
    import multiprocessing

    import torch

    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # a forked torch process can deadlock in its thread pools
    with context.Pool(workers, initializer=_init_worker, initargs=(threads, logging.getLogger().level)) as pool:
        yield from pool.imap_unordered(partial(_run_job, run), jobs)


def _run_job(run: Callable, job: tuple) -> tuple[int, dict, dict]:
    return _run_one(run, *job)


def _init_worker(threads: int, level: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")


# ---------------------------------------------------------------------------------------------------------- one seed

_STAGES = ("data and base model", "Original", "Retrain", "Retrain (floor seed)", "Audit reference", "Single adapter",
           *APPROXIMATE_ROWS, "APA", "SISA", "RecEraser-style")  # fmt: skip


@dataclass
class _Seed:
    """What every row of one seed is measured against: the data, the request and the reference measurements."""

    settings: BenchSettings
    workdir: Path
    base: str  # the base model's id or path
    splits: Any  # DatasetDict
    request: Any  # ForgetSplit
    one_user: str  # the retained user whose deletion the shard methods also time
    original_dir: Path
    before: Any  # the Original's ModelPredictions
    reference: Any  # Retrain's ModelPredictions
    floor: Any  # the other Retrain seed's ModelPredictions
    single_ms: float | None
    retrain_time: float
    ms_per_sample: Callable[[Callable[[Any], Any]], float]
    audit: Any  # ForgetAudit: the retrain-free target
    holdout: Any  # Dataset: the audit's hold-out rows
    attacker: Any  # the audit reference's ModelPredictions (the reference-calibrated attack)
    reference_seconds: float  # training time of the audit reference (0 for the base model)


def _run_seed(data: str, model: str | None, preset: str, settings: BenchSettings, workdir: Path, bar,
              selected: set[str] | None = None):  # fmt: skip
    from .audit import ForgetAudit, holdout_rows
    from .data import load_data, make_forget_split
    from .evaluation import evaluate_unlearning, predict_unlearning_sets
    from .models import count_trainable_parameters, load_model
    from .pipeline import build_builtin_base, prepare_data, train_recommender
    from .scoring import score

    selected = set(ROWS) if selected is None else selected

    def stage(name: str):
        bar.set_postfix_str(f"seed {settings.seed}: {name}")
        logger.info("bench seed %d: %s", settings.seed, name)

    batch = settings.inference_batch_size
    builtin = model is None
    stage("data and base model")
    # The synthetic population itself is drawn anew for every seed; real data sets differ by their split only.
    source = load_data("synthetic", num_users=settings.num_users, seed=settings.seed) if data == "synthetic" else data
    prepared = prepare_data(source, preset=preset, template="e2urec", history_len=settings.history_len,
                            pretrain_user_fraction=settings.pretrain_user_fraction if builtin else 0.0,
                            seed=settings.seed)  # fmt: skip
    splits = prepared.datasets
    train, test = splits["train"], splits["test"]
    base = str(workdir / "base") if builtin else model
    if builtin:
        build_builtin_base(prepared, base, size=settings.model_size, seed=settings.seed, **settings.base)
    request = make_forget_split(train, **_forget_request(prepared, settings))
    one_user = _largest_user(request.retain)
    timing = test.select(range(min(len(test), settings.timing_samples)))
    holdout = holdout_rows(splits, request.user_ids)  # the audit's hold-out rows, as the CLI builds them

    def ms_per_sample(predict: Callable[[Any], Any]) -> float:
        return best_ms_per_sample(lambda: predict(timing), len(timing), repeats=settings.timing_repeats)

    def model_ms(model) -> float:
        return ms_per_sample(lambda ds: score(model, tokenizer, ds, batch_size=batch))

    bar.update()

    def original_recipe(out: Path, seed: int):
        if builtin:
            return settings.original_config(out, seed)
        return settings.recommender_config(out, seed=seed, **settings.llm_original)

    rows: dict[str, dict[str, Any]] = {}
    stage("Original")
    original_dir = workdir / "original"
    trainer, _ = train_recommender(base, train, None, original_dir, original_recipe(original_dir, settings.seed))
    original, tokenizer = trainer.model, trainer.processing_class
    before = predict_unlearning_sets(original, tokenizer, request.forget, test, full_vocab=False, batch_size=batch)
    original_holdout = score(original, tokenizer, holdout, batch_size=batch)
    original_params = count_trainable_parameters(original)  # every weight of a full fine-tune, else the LoRA
    original_ms = model_ms(original)
    relearn = {"Original": _relearn(original, tokenizer, request.forget, settings)}
    del trainer, original
    bar.update()

    retrained, retrain_seconds, retrained_holdout = [], [], []
    for name, seed in (("Retrain", settings.seed), ("Retrain (floor seed)", settings.seed + 1)):
        stage(name)
        out = workdir / f"retrain_seed{seed}"
        trainer, metrics = train_recommender(base, request.retain, None, out, original_recipe(out, seed))
        retrained.append(predict_unlearning_sets(trainer.model, tokenizer, request.forget, test, full_vocab=False,
                                                 batch_size=batch))  # fmt: skip
        retrained_holdout.append(score(trainer.model, tokenizer, holdout, batch_size=batch))
        retrain_seconds.append(metrics["train_seconds"])
        if name == "Retrain":
            retrain_ms = model_ms(trainer.model)
            relearn["Retrain"] = _relearn(trainer.model, tokenizer, request.forget, settings)
        del trainer
        bar.update()
    reference, floor = retrained
    retrain_time = retrain_seconds[0]

    # The retrain-free target: a model that never saw the forget set (see `hf_recunlearn.audit`). Both candidate
    # references are built, and the sanity check — does the target place the Original and the two Retrains where they
    # are? — is recorded for both; `settings.audit_reference` is the one the stopping rule uses.
    stage("Audit reference")
    candidates, sanity = {}, {}
    out = workdir / "audit_reference"
    sample = request.retain.shuffle(seed=settings.seed).select(
        range(max(1, int(settings.audit_reference_fraction * len(request.retain))))
    )
    config = original_recipe(out, settings.seed)
    config.num_train_epochs = 1.0
    trainer, metrics = train_recommender(base, sample, None, out, config)
    candidates["cheap"] = (trainer.model, metrics["train_seconds"])
    candidates["base"] = (load_model(str(base))[0], 0.0)
    for kind, (candidate, seconds) in candidates.items():
        candidate_audit = ForgetAudit.from_model(candidate, tokenizer, request.forget, holdout, batch_size=batch,
                                                 seed=settings.seed)  # fmt: skip
        checks = {"Original": candidate_audit(before.forget.probs, original_holdout)}
        checks["Retrain"] = candidate_audit(reference.forget.probs, retrained_holdout[0])
        checks["Retrain (floor seed)"] = candidate_audit(floor.forget.probs, retrained_holdout[1])
        sanity[kind] = candidate_audit.summary() | {"train_seconds": seconds} | {
            name: {"relative_auc": r.relative_auc, "at_target": r.at_target, "side": r.side, "loss_auc": r.loss_auc,
                   "ks_pvalue": r.ks_pvalue, "confidence_auc": r.confidence_auc}
            for name, r in checks.items()
        }  # fmt: skip
        if kind == settings.audit_reference:
            audit, reference_seconds = candidate_audit, seconds
            attacker = predict_unlearning_sets(candidate, tokenizer, request.forget, test, full_vocab=False,
                                               batch_size=batch)  # fmt: skip
    del trainer, candidates
    bar.update()

    single_ms = None
    if "Single adapter" in selected:
        stage("Single adapter")
        single_dir = workdir / "single_adapter"
        trainer, metrics = train_recommender(base, train, None, single_dir, settings.recommender_config(single_dir))
        single = trainer.model
        single_ms = model_ms(single)
        single_preds = predict_unlearning_sets(single, tokenizer, request.forget, test, full_vocab=False,
                                               batch_size=batch)  # fmt: skip
        rows["Single adapter"] = _row(single_preds, None, None, count_trainable_parameters(single), single_ms,
                                      single_ms, retrain_time)  # fmt: skip
        del trainer, single
    bar.update()

    ctx = _Seed(settings, workdir, base, splits, request, one_user, original_dir, before, reference, floor, single_ms,
                retrain_time, ms_per_sample, audit, holdout, attacker, reference_seconds)  # fmt: skip
    rows["Original"] = _row(before, reference, None, original_params, original_ms, single_ms, retrain_time)
    # Retrain follows the Original's recipe, so it trains the same parameters.
    rows["Retrain"] = _row(reference, floor, retrain_time, original_params, retrain_ms, single_ms, retrain_time)
    rows["Original"].update(_evidence(ctx, before, original_holdout, relearn["Original"]))
    rows["Retrain"].update(_evidence(ctx, reference, retrained_holdout[0], relearn["Retrain"], retrained=floor))
    # Forgetting is only measurable if the Original memorised the forget set (more accurate and confident on it than
    # Retrain, and farther from it than the noise floor); otherwise the share of the gap closed is undefined.
    memorised = evaluate_unlearning(before, before, reference, retrained_other=floor, full_vocab=False)[
        "original_memorised"
    ]
    for name, (method, overrides) in APPROXIMATE_ROWS.items():
        if name in selected:
            stage(name)
            rows[name] = _approximate_row(ctx, name, method, overrides)
            if not memorised:
                rows[name]["gap_closed"] = None
        bar.update()

    if selected & set(APA_ROWS):
        stage("APA")
        rows.update({k: v for k, v in _shard_rows(ctx, "apa").items() if k in selected})
    bar.update()
    for name, partition in (("SISA", "random"), ("RecEraser-style", "user")):
        if name in selected:
            stage(name)
            rows.update(_shard_rows(ctx, name, partition_method=partition))
        bar.update()

    info = {
        "forget_request": {
            "users": len(request.user_ids),
            "samples": len(request.forget),
            "retained_samples": len(request.retain),
        },  # fmt: skip
        "data_sizes": {name: len(splits[name]) for name in splits},
        "noise_floor_jsd": rows["Retrain"]["jsd"],
        "original_memorised": memorised,
        "audit": audit.summary() | {"reference": settings.audit_reference, "reference_seconds": reference_seconds},
        "audit_sanity": sanity,
    }
    return [{"method": name, **rows[name]} for name in ROWS if name in rows], info


def _relearn(model, tokenizer, forget, settings: BenchSettings) -> dict[str, float]:
    from .attacks import relearning_attack

    original = settings.recommender | settings.original  # the built-in stand-in's full fine-tune
    return relearning_attack(model, tokenizer, forget, fraction=settings.relearn_fraction,
                             epochs=settings.relearn_epochs, learning_rate=original["learning_rate"],
                             batch_size=original["per_device_train_batch_size"], seed=settings.seed,
                             scoring_batch_size=settings.inference_batch_size)  # fmt: skip


def _evidence(ctx: "_Seed", preds, holdout_probs, relearn: dict[str, float], retrained=None) -> dict[str, Any]:
    """The forgetting evidence of one model: the audit, forget quality, the MIA suite and the relearning attack."""
    from .audit import forget_quality, membership_attacks

    result = ctx.audit(preds.forget.probs, holdout_probs)
    retrained = retrained or ctx.reference
    return {
        "audit_relative_auc": result.relative_auc,
        "audit_target_relative_auc": result.target_relative_auc,
        "audit_at_target": float(result.at_target),
        "audit_loss_auc": result.loss_auc,
        "audit_target_loss_auc": result.target_loss_auc,
        "audit_ks_pvalue": result.ks_pvalue,
        "audit_confidence_auc": result.confidence_auc,
        "forget_quality": forget_quality(preds.forget.probs, retrained.forget.probs),
        **membership_attacks(preds.forget.labels, preds.forget.probs, preds.test.labels, preds.test.probs,
                             ctx.attacker.forget.probs, ctx.attacker.test.probs),  # fmt: skip
        "relearn_auc_before": relearn["auc_before"],
        "relearn_auc_after": relearn["auc_after"],
        "relearn_gain": relearn["gain"],
    }


def _forget_request(prepared, settings: BenchSettings) -> dict[str, Any]:
    """The niche users of the synthetic data (memorised, so forgetting is measurable), else a fraction of users."""
    from .pipeline import niche_users

    niche = niche_users(prepared)
    if niche:
        return {"user_ids": niche}
    return {"fraction": settings.forget_fraction, "seed": settings.seed}


def _largest_user(retain) -> str:
    """The retained user with the most training samples (ties: the smallest id): the one-user deletion measured."""
    counts = Counter(retain["user_id"])
    return min(counts, key=lambda u: (-counts[u], u))


def _approximate_row(ctx: _Seed, name: str, method: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """Unlearn a fresh copy of the Original with an approximate method and measure it against Retrain."""
    from .evaluation import ModelPredictions, Predictions, evaluate_unlearning
    from .models import load_model
    from .scoring import score
    from .trainer import APPROXIMATE_METHODS

    settings, request, test, out = ctx.settings, ctx.request, ctx.splits["test"], ctx.workdir / _slug(name)
    trainer_cls = APPROXIMATE_METHODS[method][0]
    config = settings.unlearning_config(method, out, **overrides)
    original, tokenizer = load_model(str(ctx.original_dir))
    trainer = trainer_cls(original, args=config, forget_dataset=request.forget, retain_dataset=request.retain,
                          processing_class=tokenizer, forget_audit=ctx.audit)  # fmt: skip
    trainer.train()
    trainer.save_model()  # kept in the output folder like every other row's model, so a row can be checked again
    model = trainer.accelerator.unwrap_model(trainer.model)
    batch = settings.inference_batch_size
    preds = ModelPredictions(
        forget=Predictions(score(model, tokenizer, request.forget, batch_size=batch),
                           np.asarray(request.forget["label"], dtype=int)),
        test=Predictions(score(model, tokenizer, test, batch_size=batch), np.asarray(test["label"], dtype=int)),
    )  # fmt: skip
    evidence = evaluate_unlearning(preds, ctx.before, ctx.reference, retrained_other=ctx.floor,
                                   unlearning_time=trainer.unlearning_runtime,
                                   trainable_parameters=trainer.num_trainable_parameters,
                                   full_vocab=False)  # fmt: skip
    ms = ctx.ms_per_sample(lambda ds: score(model, tokenizer, ds, batch_size=batch))
    calibrated = trainer.audit_callback is not None
    # A calibrated method needs the audit reference; when that was trained for the purpose, its time counts.
    seconds = evidence["unlearning_time_s"] + (ctx.reference_seconds if calibrated else 0.0)
    holdout = score(model, tokenizer, ctx.holdout, batch_size=batch)
    extras = _evidence(ctx, preds, holdout, _relearn(model, tokenizer, request.forget, settings))
    extras["stopped_at_step"] = trainer.audit_callback.stopped_at if calibrated else None
    extras["alpha"] = getattr(trainer, "alpha", None)
    return extras | {
        "auc": evidence["test_auc"],
        "acc": evidence["test_acc"],
        "logloss": evidence["test_logloss"],
        "jsd": evidence["forget_jsd"],
        "l2": evidence["forget_l2"],
        "mia_auc": evidence["mia_auc"],
        "unlearn_seconds": seconds,
        "unlearn_vs_retrain": seconds / ctx.retrain_time,
        "trainable_params": evidence["trainable_parameters"],
        "infer_ms_per_sample": ms,
        "infer_vs_single": None if ctx.single_ms is None else ms / ctx.single_ms,
        "forget_auc": evidence["forget_auc"],
        "gap_closed": evidence["gap_closed"],
        "shards_retrained": None,
        "one_user_seconds": None,
        "one_user_shards_retrained": None,
    }


def _shard_rows(ctx: _Seed, kind: str, **overrides) -> dict[str, dict[str, Any]]:
    """
    Train a shard model (APA, or SISA/RecEraser-style with `kind` as the row name), forget the request and score it;
    then time forgetting `one_user` more (the cost of a typical single deletion request).
    """
    from .evaluation import ModelPredictions, Predictions
    from .trainer import APAConfig, APATrainer, SISAConfig, SISATrainer

    settings, splits, request = ctx.settings, ctx.splits, ctx.request
    is_apa = kind == "apa"
    trainer_cls, config_cls = (APATrainer, APAConfig) if is_apa else (SISATrainer, SISAConfig)
    out = ctx.workdir / _slug(kind)
    config = settings.apa_config(out, config_cls, logging_strategy="no", report_to="none", **overrides)
    trainer = trainer_cls(ctx.base, config, train_dataset=splits["train"],
                          eval_dataset={"valid": splits["valid"], "test": splits["test"]})  # fmt: skip
    trainer.train()
    report = (
        trainer.forget(user_ids=request.user_ids)
        if request.user_ids
        else trainer.forget(sample_ids=request.sample_ids)
    )
    recommender = trainer.recommender
    params = sum(t.numel() for adapter in recommender.state.shard_adapters for t in adapter.values())
    batch = settings.inference_batch_size
    test, forget = splits["test"], request.forget

    def row(**aggregation) -> dict[str, Any]:
        def predict(ds):
            return recommender.predict(ds, batch, **aggregation)

        preds = ModelPredictions(
            forget=Predictions(predict(forget), np.asarray(forget["label"], dtype=int)),
            test=Predictions(predict(test), np.asarray(test["label"], dtype=int)),
        )
        ms = ctx.ms_per_sample(predict)
        values = _row(preds, None, report.seconds, params, ms, ctx.single_ms, ctx.retrain_time)
        return values | {"shards_retrained": len(report.affected_shards)}

    rows = {name: row(**aggregation) for name, aggregation in APA_ROWS.items()} if is_apa else {kind: row()}
    try:
        single = trainer.forget(user_ids=[ctx.one_user])
    except ValueError as err:  # e.g. the user is all that is left of a shard in a tiny data set
        logger.warning("%s: the one-user deletion was not measured: %s", kind, err)
        return rows
    for values in rows.values():
        values.update(one_user_seconds=single.seconds, one_user_shards_retrained=len(single.affected_shards))
    return rows


def _row(preds, reference, seconds, params, ms, single_ms, retrain_time) -> dict[str, Any]:
    """A row from a model's predictions; `reference` (the Retrain predictions) gives JSD and L2 when not `None`."""
    from .metrics import jsd, l2_distance

    metrics = preds.metrics()
    return {
        "auc": metrics["test_auc"],
        "acc": metrics["test_acc"],
        "logloss": metrics["test_logloss"],
        "jsd": None if reference is None else jsd(preds.forget.probs, reference.forget.probs),
        "l2": None if reference is None else l2_distance(preds.forget.probs, reference.forget.probs),
        "mia_auc": metrics["mia_auc"],
        "unlearn_seconds": seconds,
        "unlearn_vs_retrain": None if seconds is None else seconds / retrain_time,
        "trainable_params": params,
        "infer_ms_per_sample": ms,
        "infer_vs_single": None if single_ms is None else ms / single_ms,
        "forget_auc": metrics["forget_auc"],
        "gap_closed": None,
        "shards_retrained": None,
        "one_user_seconds": None,
        "one_user_shards_retrained": None,
    } | {key: None for key in EXTRA_COLUMNS[5:]}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


# ---------------------------------------------------------------------------------------------------------- results


def calibration_criteria(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """
    The acceptance figures of calibrated forgetting, per approximate method, from the per-seed rows:

    - `gap_seeds` / `gap_closed_mean`: seeds where the Original's JSD to Retrain is above 3× the floor, and the mean
      share of the gap the method closed there (goal ≥ 0.8);
    - `flat_seeds` / `jsd_rise_max_over_floor`: seeds where it is below 2× the floor (nothing measurable to forget),
      and the largest rise of JSD over the Original's there, in units of that seed's floor (goal ≤ 1);
    - `test_auc_drop_max`: the largest drop of test AUC below the Original's (goal ≤ 0.01), and
      `test_auc_below_retrain_max`, below Retrain's: where the test window holds the forgotten users' later rows,
      Retrain itself is below the Original, so a method that reproduced Retrain would miss the first goal;
    - `mia_gap_max`: the largest |MIA AUC − Retrain's| on the forget set (goal ≤ 0.05);
    - `time_ratio_mean`: unlearning time over Retrain's (goal ≤ 0.25; 0.15 hoped for).
    """
    out: dict[str, dict[str, Any]] = {}
    methods = [r["method"] for r in per_seed[0]["rows"] if r["method"] in APPROXIMATE_ROWS] if per_seed else []
    for method in methods:
        gap, flat, rise, drop, below_retrain, mia, ratio = [], [], [], [], [], [], []
        for seed in per_seed:
            rows = {r["method"]: r for r in seed["rows"]}
            if method not in rows:
                continue
            row, original, retrain = rows[method], rows["Original"], rows["Retrain"]
            floor = seed["noise_floor_jsd"]
            if original["jsd"] > 3 * floor and original["jsd"] > floor:
                gap.append(seed["seed"])
                ratio_closed = (original["jsd"] - row["jsd"]) / (original["jsd"] - floor)
                rise.append(("gap", ratio_closed))
            elif original["jsd"] < 2 * floor:
                flat.append(seed["seed"])
                rise.append(("flat", (row["jsd"] - original["jsd"]) / floor if floor > 0 else float("inf")))
            drop.append(original["auc"] - row["auc"])
            below_retrain.append(retrain["auc"] - row["auc"])
            mia.append(abs(row["mia_auc"] - retrain["mia_auc"]))
            ratio.append(row["unlearn_vs_retrain"])
        closed = [v for kind, v in rise if kind == "gap"]
        rises = [v for kind, v in rise if kind == "flat"]
        out[method] = {
            "gap_seeds": gap,
            "gap_closed_mean": float(np.mean(closed)) if closed else None,
            "flat_seeds": flat,
            "jsd_rise_max_over_floor": float(np.max(rises)) if rises else None,
            "test_auc_drop_max": float(np.max(drop)) if drop else None,
            "test_auc_below_retrain_max": float(np.max(below_retrain)) if below_retrain else None,
            "mia_gap_max": float(np.max(mia)) if mia else None,
            "time_ratio_mean": float(np.mean(ratio)) if ratio else None,
        }
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else None


def aggregate_rows(per_seed: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Mean of every column over seeds (`None` stays `None`), with the sample standard deviation under `"std"`."""
    rows = []
    for i, first in enumerate(per_seed[0]):
        seeded = [rows_[i] for rows_ in per_seed]
        row: dict[str, Any] = {"method": first["method"]}
        std: dict[str, float | None] = {}
        for key in (*COLUMNS, *EXTRA_COLUMNS):
            values = [r[key] for r in seeded if r[key] is not None and not _isnan(r[key])]
            row[key] = float(np.mean(values)) if values else None
            std[key] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        for key in ("trainable_params", "shards_retrained", "one_user_shards_retrained"):
            row[key] = None if row[key] is None else int(round(row[key]))
        row["std"] = std
        rows.append(row)
    _pool_gap_closed(rows, per_seed)
    return rows


def _pool_gap_closed(rows: list[dict[str, Any]], per_seed: list[list[dict[str, Any]]]) -> None:
    """
    Over several seeds, `gap_closed` is the pooled share `(Σ JSD_original − Σ JSD) / (Σ JSD_original − Σ floor)` over
    the seeds where the Original memorised (a gap there); the mean of per-seed shares explodes where a seed's gap is
    tiny (the per-seed shares stay in `"seeds"`).
    """
    if len(per_seed) < 2:
        return
    by_name = [{r["method"]: r for r in seed_rows} for seed_rows in per_seed]
    seeds = [rows_ for rows_ in by_name if any(r["gap_closed"] is not None for r in rows_.values())]
    if not seeds or "Original" not in seeds[0] or "Retrain" not in seeds[0]:
        return
    original = sum(rows_["Original"]["jsd"] for rows_ in seeds)
    floor = sum(rows_["Retrain"]["jsd"] for rows_ in seeds)
    for row in rows:
        if row["gap_closed"] is None or original <= floor:
            continue
        unlearned = sum(rows_[row["method"]]["jsd"] for rows_ in seeds)
        row["gap_closed"] = (original - unlearned) / (original - floor)
        row["std"]["gap_closed"] = None


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


_HEADERS = {
    "auc": "AUC", "acc": "ACC", "logloss": "LogLoss", "jsd": "JSD↓", "l2": "L2↓", "mia_auc": "MIA AUC",
    "unlearn_seconds": "unlearn s", "unlearn_vs_retrain": "× retrain", "trainable_params": "trainable",
    "infer_ms_per_sample": "ms/sample", "infer_vs_single": "× single",
}  # fmt: skip


def format_markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table (mean ± std over seeds), with the scenario in a caption line."""
    config = result["config"]
    requests = config["forget_request"]
    seeds = config["seeds"]
    memorised = [seed for seed, flag in zip(seeds, config["original_memorised"]) if flag]
    lines = [
        f"Data {config['data']} (preset {config['preset']}), model {config['model']}, {len(seeds)} seed(s) {seeds}; "
        f"forget {'/'.join(str(r['users']) for r in requests)} users, "
        f"{'/'.join(str(r['samples']) for r in requests)} samples; "
        f"JSD floor (two Retrain seeds) {_fmt(config['noise_floor_jsd'], 'jsd')}; "
        f"the Original memorised the forget set in {len(memorised)} of {len(seeds)} seed(s) {memorised} "
        "(gap_closed pools those seeds).",
        "",
        "| method | " + " | ".join(_HEADERS[c] for c in COLUMNS) + " |",
        "| --- | " + " | ".join("---:" for _ in COLUMNS) + " |",
    ]
    for row in result["rows"]:
        cells = []
        for column in COLUMNS:
            cell = _fmt(row[column], column)
            std = row["std"].get(column)
            if std is not None and row[column] is not None and column not in ("trainable_params",):
                cell += f" ± {_fmt(std, column)}"
            cells.append(cell)
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    exact = [row for row in result["rows"] if row.get("shards_retrained") is not None]
    if exact:
        lines += [
            "",
            "| exact method | shards retrained (request) | unlearn s | one more user: shards | one user s | × retrain |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        retrain = next(r for r in result["rows"] if r["method"] == "Retrain")["unlearn_seconds"]
        for row in exact:
            seconds = row.get("one_user_seconds")
            ratio = None if seconds is None or not retrain else seconds / retrain
            lines.append(
                f"| {row['method']} | {row['shards_retrained']} | {_fmt(row['unlearn_seconds'], 'unlearn_seconds')} | "
                f"{_fmt(row.get('one_user_shards_retrained'), 'trainable_params')} | {_fmt(seconds, 'unlearn_seconds')} "
                f"| {_fmt(ratio, 'unlearn_vs_retrain')} |"
            )
    evidence = [row for row in result["rows"] if row.get("audit_relative_auc") is not None]
    if evidence:
        lines += [
            "",
            "| method | audit relative AUC (target) | at target | audit loss-AUC (target) | audit KS p "
            "| forget quality (KS p vs Retrain) | MIA loss | MIA conf. | MIA entropy | MIA ref.-calibrated "
            "| relearn: forget AUC before → after (gain) | stopped at step | α |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in evidence:
            f = lambda key: "—" if row.get(key) is None else f"{row[key]:.3f}"  # noqa: E731
            lines.append(
                f"| {row['method']} | {f('audit_relative_auc')} ({f('audit_target_relative_auc')}) | "
                f"{f('audit_at_target')} | {f('audit_loss_auc')} ({f('audit_target_loss_auc')}) | "
                f"{f('audit_ks_pvalue')} | {f('forget_quality')} | {f('mia_loss')} | {f('mia_confidence')} | "
                f"{f('mia_entropy')} | {f('mia_reference')} | {f('relearn_auc_before')} → {f('relearn_auc_after')} "
                f"({f('relearn_gain')}) | {_opt(row.get('stopped_at_step'), '.1f')} | {_opt(row.get('alpha'), 'g')} |"
            )
    sanity = [(seed["seed"], seed.get("audit_sanity")) for seed in result.get("seeds", [])]
    if any(checks for _, checks in sanity):
        lines += [
            "",
            "| seed | audit reference | target relative AUC [interval] | Original | Retrain | Retrain (floor seed) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for seed, checks in sanity:
            for kind, c in (checks or {}).items():
                cell = lambda name: f"{c[name]['relative_auc']:+.3f} ({'at' if c[name]['at_target'] else 'off'})"  # noqa: E731
                lines.append(
                    f"| {seed} | {kind} | {c['target_relative_auc']:+.3f} [{c['relative_interval'][0]:+.3f}, "
                    f"{c['relative_interval'][1]:+.3f}] | {cell('Original')} | {cell('Retrain')} | "
                    f"{cell('Retrain (floor seed)')} |"
                )
    criteria = result.get("criteria") or {}
    if criteria:
        lines += [
            "",
            "| method | seeds with gap > 3× floor | mean gap closed there (≥ 0.8) | seeds with gap < 2× floor "
            "| max JSD rise there, × floor (≤ 1) | max test-AUC drop (≤ 0.01) | max test AUC below Retrain's "
            "| max \\|MIA − Retrain's\\| (≤ 0.05) | × retrain (≤ 0.25) |",
            "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for method, c in criteria.items():
            f = lambda key: "—" if c.get(key) is None else f"{c[key]:.3f}"  # noqa: E731
            lines.append(
                f"| {method} | {c['gap_seeds']} | {f('gap_closed_mean')} | {c['flat_seeds']} | "
                f"{f('jsd_rise_max_over_floor')} | {f('test_auc_drop_max')} | {f('test_auc_below_retrain_max')} | "
                f"{f('mia_gap_max')} | {f('time_ratio_mean')} |"
            )
    lines += [
        "",
        "JSD/L2: Yes/No distributions on the forget set against Retrain (Retrain's row: against its other seed, the "
        "noise floor); `—` for exact methods, whose result is a retraining of the shards that held the data. "
        "MIA AUC 0.5 = forget set indistinguishable from unseen test samples. APA(ND) uses sample-adaptive weights.",
    ]
    return "\n".join(lines)


def _opt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _fmt(value, column: str) -> str:
    if value is None:
        return "—"
    if column == "trainable_params":
        return f"{int(value):,}"
    if column in ("unlearn_seconds",):
        return f"{value:.1f}"
    if column in ("unlearn_vs_retrain", "infer_vs_single"):
        return f"{value:.2f}×"
    if column == "infer_ms_per_sample":
        return f"{value:.3f}"
    if column in ("jsd", "l2"):
        return f"{value:.4f}"
    return f"{value:.3f}"


def _family(method: str) -> str:
    if method in ("Original", "Retrain", "Single adapter"):
        return "reference"
    return "approximate" if method in APPROXIMATE_ROWS else "exact"


_FAMILY_STYLE = {"reference": ("D", "tab:gray"), "approximate": ("o", "tab:blue"), "exact": ("s", "tab:green")}


def write_plots(result: dict[str, Any], plots_dir: str | Path) -> list[Path]:
    """
    Two PNGs in `plots_dir`: `utility_vs_forgetting.png` (test AUC against JSD to Retrain — approximate methods and
    the references — and against MIA AUC, every row; error bars are the std over seeds) and `time.png` (unlearning
    seconds and inference ms per sample per method, coloured by family: reference, approximate, exact).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    retrain = next((r for r in rows if r["method"] == "Retrain"), None)
    colours = plt.get_cmap("tab20")
    paths = []

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, column, title in ((left, "jsd", "JSD to Retrain on the forget set (lower = closer)"),
                                (right, "mia_auc", "MIA AUC on the forget set (Retrain's = the target)")):  # fmt: skip
        for i, row in enumerate(rows):
            if row[column] is None or row["auc"] is None:
                continue
            marker, _ = _FAMILY_STYLE[_family(row["method"])]
            axis.errorbar(row[column], row["auc"], xerr=row["std"].get(column), yerr=row["std"].get("auc"),
                          fmt=marker, color=colours(i % 20), capsize=3, markersize=7, label=row["method"])  # fmt: skip
        target = result["config"].get("noise_floor_jsd") if column == "jsd" else (retrain or {}).get("mia_auc")
        if target is not None:
            axis.axvline(target, color="grey", linestyle="--", linewidth=1)
        axis.set_xlabel(title)
        axis.set_ylabel("test AUC")
        axis.grid(alpha=0.3)
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle("Utility vs forgetting (dashed: the JSD noise floor of two Retrain seeds; Retrain's MIA AUC)")
    fig.tight_layout(rect=(0, 0, 0.82, 1))
    paths.append(plots_dir / "utility_vs_forgetting.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    for axis, column, label in ((left, "unlearn_seconds", "unlearning wall time (s)"),
                                (right, "infer_ms_per_sample", "inference ms per sample")):  # fmt: skip
        shown = [r for r in rows if r[column] is not None]
        axis.barh([r["method"] for r in shown], [r[column] for r in shown],
                  xerr=[r["std"].get(column) or 0.0 for r in shown],
                  color=[_FAMILY_STYLE[_family(r["method"])][1] for r in shown], alpha=0.85)  # fmt: skip
        axis.invert_yaxis()
        axis.set_xlabel(label)
        axis.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour) for _, colour in _FAMILY_STYLE.values()]
    fig.legend(handles, list(_FAMILY_STYLE), loc="lower center", ncol=3, frameon=False)
    fig.suptitle("Cost: unlearning time and inference")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    paths.append(plots_dir / "time.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def format_summary(result: dict[str, Any]) -> str:
    """
    A few sentences for people: what was forgotten, how much of the gap to Retrain an approximate method closed (E2URec
    when it ran), its time against retraining, and what forgetting cost an exact method in shards (APA(ND) when it
    ran). Every number is one of `result`'s rows (mean over seeds), formatted.
    """
    config, rows = result["config"], {row["method"]: row for row in result["rows"]}
    requests = config["forget_request"]
    lines = [
        f"The benchmark forgot {'/'.join(str(r['users']) for r in requests)} users "
        f"({'/'.join(str(r['samples']) for r in requests)} training samples) on {config['data']} with "
        f"{len(config['seeds'])} seed(s)."
    ]
    approximate = next((rows[name] for name in ("E2URec", *ROWS) if name in rows and name in APPROXIMATE_ROWS), None)
    if approximate is not None:
        gap = approximate["gap_closed"]
        lines.append(
            f"{approximate['method']} closed {'n/a' if gap is None else f'{gap:.0%}'} of the gap to Retrain in "
            f"{_fmt(approximate['unlearn_seconds'], 'unlearn_seconds')} s, "
            f"{_fmt(approximate['unlearn_vs_retrain'], 'unlearn_vs_retrain')} retraining's time."
        )
    sharded = [name for name in ("APA(ND)", *ROWS) if rows.get(name, {}).get("shards_retrained") is not None]
    exact = rows[sharded[0]] if sharded else None
    if exact is not None:
        lines.append(
            f"{exact['method']} forgot the request by retraining {exact['shards_retrained']} of "
            f"{config['settings']['apa']['num_shards']} shards in "
            f"{_fmt(exact['unlearn_seconds'], 'unlearn_seconds')} s, "
            f"{_fmt(exact['unlearn_vs_retrain'], 'unlearn_vs_retrain')} retraining's time."
        )
    return " ".join(lines)
