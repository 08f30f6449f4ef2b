"""The built-in demo: synthetic users, a tiny stand-in LLM, a TALLRec recommender — then forgetting.

Everything runs offline on a CPU. `run_demo` is what `hf-recunlearn demo` calls; each stage adds a key to the
results dictionary, which is also written as JSON.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .pipeline import build_builtin_base, prepare_data, train_recommender
from .runs import RunDir, RunInfo, write_json_atomic
from .trainer import RecConfig


logger = logging.getLogger(__name__)


@dataclass
class DemoSettings:
    """
    Sizes and recipes of the built-in demo, chosen so that it learns on 2 CPU cores in a few minutes.

    The synthetic data has a group of niche users (10%) whose favourite items nobody else rates: they are the users
    the demo forgets, because a recommender can only know those items from their data.
    """

    num_users: int = 400
    pretrain_user_fraction: float = 0.3
    history_len: int = 5
    model_size: str = "small"
    base_epochs: float = 3.0
    base_learning_rate: float = 2e-3
    original_epochs: float = 3.0
    original_learning_rate: float = 2e-3
    lora_r: int = 8
    lora_alpha: int = 16
    batch_size: int = 16
    num_shards: int = 4
    inference_batch_size: int = 32
    seed: int = 0

    def _recipe(self, output_dir: str | Path) -> dict[str, Any]:
        """The TALLRec recipe at demo scale, shared by the original recommender, the APA and the SISA shards."""
        return dict(
            output_dir=str(output_dir),
            learning_rate=self.original_learning_rate,
            num_train_epochs=self.original_epochs,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=self.inference_batch_size,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            warmup_steps=20,
            lr_scheduler_type="cosine",
            seed=self.seed,
            logging_steps=50,
            use_cpu=True,
        )

    def recommender_config(self, output_dir: str | Path, **overrides) -> RecConfig:
        return RecConfig(**(self._recipe(output_dir) | overrides))

    def apa_config(self, output_dir: str | Path, config_class=None, **overrides):
        from .trainer import APAConfig

        values = self._recipe(output_dir) | {
            "num_shards": self.num_shards,
            "salt_dir": str(Path(output_dir).parent / "salts"),
        }
        return (config_class or APAConfig)(**(values | overrides))


QUICK = DemoSettings(num_users=120, history_len=3, model_size="tiny", base_epochs=1, original_epochs=1)


def best_ms_per_sample(predict, num_samples: int, repeats: int = 3) -> float:
    """Best-of-`repeats` wall time of `predict()` in milliseconds per sample (the first call also warms up)."""
    predict()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        predict()
        best = min(best, time.perf_counter() - start)
    return 1000.0 * best / max(1, num_samples)


def run_demo(output_dir: str | Path = "runs/demo", settings: DemoSettings | None = None, json_path=None) -> dict[str, Any]:
    """
    Run the demo end to end in `output_dir` and return the results (also written to `json_path` when given).

    Stage 1 prepares synthetic data and the stand-in base model; stage 2 trains the original recommender with the
    TALLRec recipe (LoRA) and measures it on the test split.
    """
    settings = settings or DemoSettings()
    run = RunDir(output_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"settings": asdict(settings)}

    logger.info("Preparing synthetic data (%d users)", settings.num_users)
    prepared = prepare_data(
        "synthetic",
        preset="e2urec",
        template="e2urec",
        history_len=settings.history_len,
        pretrain_user_fraction=settings.pretrain_user_fraction,
        seed=settings.seed,
        num_users=settings.num_users,
    )
    run.save_datasets(prepared.datasets)
    splits = prepared.datasets
    results["data"] = {name: len(splits[name]) for name in splits} | {"pretrain": len(prepared.pretrain)}

    logger.info("Training the stand-in base model on %d held-out samples", len(prepared.pretrain))
    start = time.perf_counter()
    build_builtin_base(
        prepared,
        run.base_dir,
        size=settings.model_size,
        epochs=settings.base_epochs,
        learning_rate=settings.base_learning_rate,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )
    results["base"] = {"train_seconds": time.perf_counter() - start}

    logger.info("Training the original recommender (TALLRec recipe, LoRA) on %d samples", len(splits["train"]))
    config = settings.recommender_config(run.original_dir)
    _, metrics = train_recommender(run.base_dir, splits["train"], splits["test"], run.original_dir, config)
    results["original"] = metrics
    run.save_info(
        RunInfo(
            data="synthetic",
            preset="e2urec",
            template="e2urec",
            base_model="builtin",
            history_len=settings.history_len,
            seed=settings.seed,
            metrics={"original": metrics},
            extra={"demo": asdict(settings)},
        )
    )
    results.update(run_apa_stage(run, splits, settings, forget_user=_demo_forget_user(prepared)))
    if json_path is not None:
        write_json_atomic(json_path, results)
    return results


def _demo_forget_user(prepared) -> str:
    """The niche user with the most training samples: the request whose effect is easiest to see."""
    train = prepared.datasets["train"]
    groups = prepared.data.user_groups if prepared.data is not None else {}
    counts: dict[str, int] = {}
    for user in train["user_id"]:
        counts[user] = counts.get(user, 0) + 1
    niche = [u for u in counts if groups.get(u) == "niche"] or list(counts)
    return max(niche, key=lambda u: (counts[u], u))


def run_apa_stage(run: RunDir, splits, settings: DemoSettings, forget_user: str) -> dict[str, Any]:
    """
    APA against SISA and one LoRA on all the data (the original recommender), measured side by side:
    utility, inference ms/sample (aggregation weights included), and the cost of forgetting one user vs training all
    shards.
    """
    from .metrics import utility_metrics
    from .models import load_model
    from .scoring import score
    from .trainer import APATrainer, SISAConfig, SISATrainer

    test = splits["test"]
    eval_sets = {"valid": splits["valid"], "test": test}
    batch = settings.inference_batch_size

    logger.info("APA: training %d shard adapters", settings.num_shards)
    apa = APATrainer(str(run.base_dir), settings.apa_config(run.path / "apa"), train_dataset=splits["train"],
                     eval_dataset=eval_sets)  # fmt: skip
    train_report = apa.train()
    apa_probs = apa.predict(test)
    apa_ms = best_ms_per_sample(lambda: apa.predict(test, batch), len(test))

    logger.info("APA: forgetting one user")
    forget_report = apa.forget(user_ids=[forget_user])
    after_probs = apa.predict(test)

    logger.info("SISA: training %d shard adapters (random partition, output averaging)", settings.num_shards)
    sisa = SISATrainer(str(run.base_dir), settings.apa_config(run.path / "sisa", SISAConfig),
                       train_dataset=splits["train"], eval_dataset=eval_sets)  # fmt: skip
    sisa.train()
    sisa_probs = sisa.predict(test)
    sisa_ms = best_ms_per_sample(lambda: sisa.predict(test, batch), len(test))

    single, tokenizer = load_model(str(run.original_dir))
    single_probs = score(single, tokenizer, test, batch_size=batch)
    single_ms = best_ms_per_sample(lambda: score(single, tokenizer, test, batch_size=batch), len(test))

    labels = test["label"]
    return {
        "apa": {
            **utility_metrics(labels, apa_probs),
            "auc_after_forget": utility_metrics(labels, after_probs)["auc"],
            "forget_seconds": forget_report.seconds,
            "retrain_all_seconds": train_report.seconds,
            "forget_vs_retrain_all": forget_report.seconds / train_report.seconds,
            "shards_retrained": len(forget_report.affected_shards),
            "samples_removed": forget_report.samples_removed,
            "infer_ms_per_sample": apa_ms,
            "infer_vs_single": apa_ms / single_ms,
            "version": forget_report.version,
        },
        "sisa": {**utility_metrics(labels, sisa_probs), "infer_ms_per_sample": sisa_ms, "infer_vs_single": sisa_ms / single_ms},
        "single_adapter": {**utility_metrics(labels, single_probs), "infer_ms_per_sample": single_ms},
    }
