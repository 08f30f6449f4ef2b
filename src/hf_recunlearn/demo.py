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
    seed: int = 0

    def recommender_config(self, output_dir: str | Path, **overrides) -> RecConfig:
        values = dict(
            output_dir=str(output_dir),
            learning_rate=self.original_learning_rate,
            num_train_epochs=self.original_epochs,
            per_device_train_batch_size=self.batch_size,
            per_device_eval_batch_size=64,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            warmup_steps=20,
            lr_scheduler_type="cosine",
            seed=self.seed,
            logging_steps=50,
            use_cpu=True,
        )
        values.update(overrides)
        return RecConfig(**values)


QUICK = DemoSettings(num_users=120, history_len=3, model_size="tiny", base_epochs=1, original_epochs=1)


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
    if json_path is not None:
        write_json_atomic(json_path, results)
    return results
