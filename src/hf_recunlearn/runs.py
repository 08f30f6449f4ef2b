"""A run directory: the splits, the tokenizer/base model and the trained recommender, so later steps reuse them.

Layout written by `hf-recunlearn train` (and `demo`)::

    RUN/
      run.json          what was trained: data spec, preset, template, base model, method, seeds, metrics, and
                        every event (train, each forget) with its exact counts
      data/             the train/valid/test `DatasetDict` (`datasets.load_from_disk`)
      base/             the built-in stand-in base model and tokenizer (only when no `--model` was given)
      original/         the trained recommender: a PEFT adapter (or a full model when fully fine-tuned)
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict, load_from_disk

from .controller import fsync_dir, recover_swap, staging_dir, swap_in, write_json_atomic  # noqa: F401  (write_json_atomic: re-exported)


RUN_FILE = "run.json"


@dataclass
class RunInfo:
    data: str
    preset: str
    template: str
    base_model: str
    history_len: int = 10
    method: str = "tallrec"
    full_finetune: bool = False
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    def record_event(self, event: str, method: str, **counts) -> dict[str, Any]:
        """
        Append what a command did to the run (`train`, `forget`): the method whose model it wrote, when, and its
        exact counts (`users_forgotten`, `samples_forgotten`, `version`). run.json stays with the controller: `push`
        publishes the number of users only.
        """
        from datetime import datetime, timezone

        entry = {"event": event, "method": method, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 **counts}  # fmt: skip
        self.events.append(entry)
        return entry

    def latest_event(self, method: str) -> dict[str, Any] | None:
        """The latest event that wrote `method`'s model, or None."""
        return next((e for e in reversed(self.events) if e.get("method") == method), None)


class RunDir:
    """Read and write the pieces of a run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def base_dir(self) -> Path:
        return self.path / "base"

    @property
    def original_dir(self) -> Path:
        return self.path / "original"

    def exists(self) -> bool:
        return (self.path / RUN_FILE).is_file()

    def save_info(self, info: RunInfo) -> None:
        write_json_atomic(self.path / RUN_FILE, asdict(info))

    def load_info(self) -> RunInfo:
        file = self.path / RUN_FILE
        if not file.is_file():
            raise FileNotFoundError(
                f"`run` directory {str(self.path)!r} has no {RUN_FILE}. Pass a directory written by "
                "`hf-recunlearn train` (or `demo`)."
            )
        return RunInfo(**json.loads(file.read_text()))

    def save_datasets(self, datasets: DatasetDict) -> None:
        """Write the splits atomically (a staging folder swapped in with renames, like an APA version)."""
        target = self.data_dir
        recover_swap(target)
        staging = staging_dir(target)
        try:
            datasets.save_to_disk(str(staging))
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    with open(path, "rb") as f:
                        os.fsync(f.fileno())
            fsync_dir(staging)
            swap_in(staging, target, "data")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def recover(self) -> None:
        """Roll back a data set rewrite that a crash interrupted (the APA version is recovered by its own reader)."""
        recover_swap(self.data_dir)

    def erase_rows(self, hasher, user_digests, sample_digests) -> int:
        """
        Rewrite the cached splits without the rows of the given users and samples (ledger digests under `hasher`'s
        salt), so the run keeps what it needs to retrain, minus the forgotten rows. Idempotent; returns the rows
        removed.
        """
        users, samples = set(user_digests), set(sample_digests)
        datasets = self.load_datasets()
        kept, removed = {}, 0
        for name, split in datasets.items():
            rows = [
                i for i, (u, s) in enumerate(zip(split["user_id"], split["sample_id"]))
                if hasher.hash_user(u) not in users and hasher.hash_sample(s) not in samples
            ]  # fmt: skip
            removed += len(split) - len(rows)
            kept[name] = split.select(rows) if len(rows) != len(split) else split
        if removed:
            self.save_datasets(DatasetDict({name: split.flatten_indices() for name, split in kept.items()}))
        return removed

    def load_datasets(self) -> DatasetDict:
        if not self.data_dir.is_dir():
            raise FileNotFoundError(f"Run directory {str(self.path)!r} has no data/ folder; re-run `hf-recunlearn train`.")
        return load_from_disk(str(self.data_dir))

    def base_model_path(self, info: RunInfo | None = None) -> str:
        info = info or self.load_info()
        return str(self.base_dir) if info.base_model == "builtin" else info.base_model
