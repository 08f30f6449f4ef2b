"""The on-disk form of one APA version, and its atomic, checksummed writes and reads.

A directory written by [`write_apa_directory`] (through `APATrainer` after every training or forgetting event, or
`APARecommender.save_pretrained`) holds one version of the model::

    DIR/
      apa_config.json             metadata, schema below
      apa_state.safetensors       validation representations and errors, shard centres (what aggregation needs)
      shard_00/                   one PEFT LoRA adapter per shard:
        adapter_config.json         PeftModel.from_pretrained(base, DIR, subfolder="shard_00") loads it
        adapter_model.safetensors
      shard_01/ ...
      tokenizer.json, ...         the tokenizer, when one was given

`apa_config.json` (format `hf_recunlearn/apa`, `format_version` 2) is what the public sees, so it names nobody:

- `version` (int): 1 after training, +1 per forgetting event.
- `run_id` (str): a random id of the training run, so that a push can tell its history from another run's.
- `base_model` (str or null): the base model's Hub id (a local path is never published).
- `num_shards`, `shards`: per shard `name`, `trained_in_version` and the `sha256` of its `adapter_model.safetensors`.
- `partition`: `method` only (the seed and shard sizes stay with the controller).
- `aggregation`: `weights` (`adaptive`/`uniform`/`semantic`/`major`), `level` (`ND`/`D`/`output`), `temperature`,
  `num_neighbors`, `routing_representation`, `temperature_candidates`, `error` (`absolute`: `|y - P(like)|`).
- `answer`: the `yes` / `no` completions and `max_prompt_length` used for scoring.
- `validation`: the tensor names in `state_file`.
- `lineage`: one entry per event: `version`, `event` (`train`/`forget`), `shards_trained` and `users_removed`.
  No sample counts: with the public data set, exact per-event sample counts narrow a deletion to one or two users.

`receipts/` holds the chain of forgetting receipts, one per event (see `hf_recunlearn.receipts`): the receipt of the
event that produced the version is written into the staging directory after every other file, so it switches in with
the version it describes.

`controller/` holds what only the data controller may see (ledger, recipe with seeds, validation row digests, exact
counts, the digests each forget event removed; see `hf_recunlearn.controller`). It switches with the version and is
never pushed.

Writes are atomic per version: a new version is written to a hidden sibling directory and then swapped in with two
renames; the previous version is deleted (its adapters saw data that is now forgotten). If a crash lands between the
two renames, every reader (`read_apa_directory`, the CLI, `from_pretrained`) first restores the complete version.

This module knows files only (JSON, safetensors, PEFT adapter folders): the recommender that serves a version is
`hf_recunlearn.apa_recommender`, the Hub layer (`hf_recunlearn.hub`) pushes and pulls the files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from . import receipts
from .controller import (
    CONTROLLER_DIR,
    FORGOTTEN_FILE,
    LEDGER_FILE,
    LINEAGE_FILE,
    RECIPE_FILE,
    VALIDATION_FILE,
    crash_point,
    fsync_dir,
    recover_swap,
    staging_dir,
    swap_in,
    write_json_atomic,
)



CONFIG_NAME = "apa_config.json"
STATE_NAME = "apa_state.safetensors"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = "hf_recunlearn/apa"
FORMAT_VERSION = 2


def shard_name(k: int) -> str:
    return f"shard_{k:02d}"


@dataclass
class AggregationSpec:
    """How shard adapters are combined at inference (see `APAConfig` for the meaning of each field)."""

    weights: str = "adaptive"
    level: str = "ND"
    temperature: float = 1000.0
    num_neighbors: int = 20
    routing_representation: str = "embedding_mean"
    temperature_candidates: list[float] | None = None
    error: str = "absolute"

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class APAState:
    """
    Everything one version of an APA model consists of. Tensors live on the CPU.

    `ledger`, `recipe`, `valid_users`, `forgotten` (per forget event: the version and the user and sample digests its
    requests named) and the exact counts in `lineage` are the controller's (written to `controller/`, never
    published); a version downloaded from the Hub has them as `None` and can serve predictions but not forget.
    `receipts` is the public receipt chain (the bytes of each receipt file, oldest first).
    """

    shard_adapters: list[dict[str, torch.Tensor]]
    lora_config: Any
    shard_info: list[dict]
    ledger: dict | None
    partition: dict
    aggregation: AggregationSpec
    valid_reps: torch.Tensor
    valid_errors: torch.Tensor
    shard_centroids: torch.Tensor
    answer: dict
    version: int = 1
    base_model: str | None = None
    lineage: list[dict] = field(default_factory=list)
    valid_users: list[str] | None = None
    recipe: dict | None = None
    run_id: str | None = None
    receipts: list[bytes] = field(default_factory=list)
    forgotten: list[dict] | None = None

    @property
    def num_shards(self) -> int:
        return len(self.shard_adapters)

    @property
    def has_controller_state(self) -> bool:
        return self.ledger is not None and self.recipe is not None


def _sha256(path: Path) -> str:
    from huggingface_hub.utils.sha import sha_fileobj

    with open(path, "rb") as f:
        return sha_fileobj(f).hex()


def _write_adapter(folder: Path, state_dict: dict[str, torch.Tensor], lora_config, base_model: str | None) -> None:
    import copy

    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = copy.deepcopy(lora_config)
    config.base_model_name_or_path = base_model
    config.inference_mode = True
    config.save_pretrained(str(folder))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sorted(state_dict.items())}
    save_file(tensors, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [p for p in sorted(folder.rglob("*")) if p.is_dir()] + [folder]:
        fsync_dir(path)


def recover_apa_directory(target) -> None:
    """Finish or roll back an interrupted version switch of an APA directory (see `controller.recover_swap`)."""
    recover_swap(target)


_PUBLIC_LINEAGE_KEYS = ("version", "event", "shards_trained", "users_removed", "temperature")


def public_lineage(lineage: list[dict]) -> list[dict]:
    """The lineage as published: event, version, shards and the number of users; no sample counts, no times."""
    return [{k: e[k] for k in _PUBLIC_LINEAGE_KEYS if k in e} for e in lineage]


def _public_base_model(name: str | None) -> str | None:
    from .models import is_hub_model_id

    return name if is_hub_model_id(name) else None


def write_apa_directory(
    target,
    state: APAState,
    tokenizer=None,
    reuse_shards_from=None,
    changed_shards: Sequence[int] | None = None,
    event=None,
) -> None:
    """
    Write `state` as a new version of `target`, atomically: the published files, the receipt chain and, when `state`
    has them, the controller's (`controller/`).

    With `event` (a `receipts.ExactEvent`: what produced this version), the event's receipt is built from the staged
    files and appended to the chain, and `state.receipts` is updated once the version is in place.

    Shards not in `changed_shards` are copied byte for byte from `reuse_shards_from` (the previous version), so an
    unaffected shard's files never change. Everything is written into a hidden sibling directory first; only a
    complete version is swapped in, and the version it replaces is deleted.
    """
    from safetensors.torch import save_file

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_apa_directory(target)
    staging = staging_dir(target)
    everything = changed_shards is None or reuse_shards_from is None
    changed = set(range(state.num_shards)) if everything else set(changed_shards)
    try:
        shards_meta = []
        for k, adapter in enumerate(state.shard_adapters):
            folder = staging / shard_name(k)
            if k in changed:
                _write_adapter(folder, adapter, state.lora_config, _public_base_model(state.base_model))
            else:
                shutil.copytree(Path(reuse_shards_from) / shard_name(k), folder)
            digest = _sha256(folder / ADAPTER_WEIGHTS)
            info = state.shard_info[k]
            shards_meta.append({"name": shard_name(k), "trained_in_version": info.get("trained_in_version"),
                                "sha256": digest})  # fmt: skip
        tensors = {
            "valid_reps": state.valid_reps,
            "valid_errors": state.valid_errors,
            "shard_centroids": state.shard_centroids,
        }
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tensors.items()}
        save_file(tensors, str(staging / STATE_NAME), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(staging))
            _strip_local_paths(staging)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "version": state.version,
            "run_id": state.run_id,
            "base_model": _public_base_model(state.base_model),
            "num_shards": state.num_shards,
            "shards": shards_meta,
            "partition": {"method": state.partition.get("method")},
            "aggregation": state.aggregation.to_dict(),
            "answer": state.answer,
            "validation": {"state_file": STATE_NAME, "tensors": sorted(tensors)},
            "lineage": public_lineage(state.lineage),
        }
        write_json_atomic(staging / CONFIG_NAME, payload)
        if state.has_controller_state:
            private = staging / CONTROLLER_DIR
            write_json_atomic(private / LEDGER_FILE, state.ledger)
            write_json_atomic(private / RECIPE_FILE, {**state.recipe, "base_model_name": state.base_model,
                                                      "partition": state.partition,
                                                      "shards": [dict(i) for i in state.shard_info]})  # fmt: skip
            write_json_atomic(private / VALIDATION_FILE, {"users": list(state.valid_users or [])})
            write_json_atomic(private / LINEAGE_FILE, state.lineage)
            write_json_atomic(private / FORGOTTEN_FILE, list(state.forgotten or []))
            (private / "README.txt").write_text(_CONTROLLER_README)
        chain = list(state.receipts)
        if event is not None and state.has_controller_state:
            chain.append(receipts.exact_receipt(staging, chain, state, event))  # after every other file
        receipts.write_chain(staging, chain)
        _fsync_tree(staging)
        crash_point("apa:staged")
        swap_in(staging, target, "apa")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    state.receipts = chain


_CONTROLLER_README = """\
This folder belongs to the data controller and must never be published: it holds the shard ledger (salted digests
of every training sample and user), the training recipe with its seeds and the exact counts of every forget event.
`hf_recunlearn.hub.push` never uploads it; do not upload this directory with other tools.
"""


def _strip_local_paths(folder: Path) -> None:
    """Tokenizer files record the path they were loaded from (`name_or_path`); a local path is not published."""
    path = folder / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    name = config.get("name_or_path")
    if name is not None and _public_base_model(name) is None:
        config.pop("name_or_path")
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_version(directory) -> int | None:
    """The version number stored in `directory`, or None when it holds no APA model."""
    try:
        return int(json.loads((Path(directory) / CONFIG_NAME).read_text())["version"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def read_apa_directory(directory) -> APAState:
    """Load one version written by [`write_apa_directory`] (recovering an interrupted switch first)."""
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    recover_apa_directory(directory)
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has no {CONFIG_NAME}; pass a directory written by `APATrainer` or "
            "`APARecommender.save_pretrained`."
        )
    try:
        meta = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{str(config_file)!r} is not valid JSON ({err}); the directory is damaged.") from None
    if meta.get("format") != FORMAT or meta.get("format_version", 0) != FORMAT_VERSION:
        raise ValueError(
            f"{str(config_file)!r} is format {meta.get('format')!r} v{meta.get('format_version')}; this version of "
            f"hf_recunlearn reads {FORMAT!r} v{FORMAT_VERSION}. Retrain it with this version, or use the "
            "hf_recunlearn version that wrote it."
        )
    adapters, lora_config = [], None
    for entry in meta["shards"]:
        folder = directory / entry["name"]
        weights = folder / ADAPTER_WEIGHTS
        if not weights.is_file() or _sha256(weights) != entry["sha256"]:
            raise ValueError(
                f"{str(weights)!r} is missing or does not match its sha256 in {CONFIG_NAME}: the file is damaged or "
                "was replaced. Restore the directory (or pull the version again from the Hub)."
            )
        try:
            adapters.append(load_file(str(weights)))
        except SafetensorError as err:
            raise ValueError(f"{str(weights)!r} is not a readable safetensors file ({err}).") from None
        lora_config = lora_config or LoraConfig.from_pretrained(str(folder))
    tensors = load_file(str(directory / meta["validation"]["state_file"]))
    private = directory / CONTROLLER_DIR
    ledger = recipe = valid_users = forgotten = None
    lineage = meta.get("lineage", [])
    partition = dict(meta.get("partition", {}))
    shard_info = [{"trained_in_version": s.get("trained_in_version")} for s in meta["shards"]]
    base_model = meta.get("base_model")
    if (private / LEDGER_FILE).is_file():
        ledger = json.loads((private / LEDGER_FILE).read_text())
        recipe = json.loads((private / RECIPE_FILE).read_text())
        valid_users = json.loads((private / VALIDATION_FILE).read_text())["users"]
        lineage = json.loads((private / LINEAGE_FILE).read_text())
        forgotten_file = private / FORGOTTEN_FILE
        forgotten = json.loads(forgotten_file.read_text()) if forgotten_file.is_file() else []
        partition = recipe.pop("partition")
        shard_info = recipe.pop("shards")
        base_model = recipe.pop("base_model_name", None) or base_model
    return APAState(
        shard_adapters=adapters,
        lora_config=lora_config,
        shard_info=shard_info,
        ledger=ledger,
        partition=partition,
        aggregation=AggregationSpec(**meta["aggregation"]),
        valid_reps=tensors["valid_reps"],
        valid_errors=tensors["valid_errors"],
        shard_centroids=tensors["shard_centroids"],
        answer=meta["answer"],
        version=int(meta["version"]),
        base_model=base_model,
        lineage=lineage,
        valid_users=valid_users,
        recipe=recipe,
        run_id=meta.get("run_id"),
        receipts=receipts.read_chain(directory),
        forgotten=forgotten,
    )
