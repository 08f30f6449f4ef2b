"""The aggregated APA recommender, and its versioned on-disk form.

A directory written by [`APARecommender.save_pretrained`] (or by `APATrainer` after every training or forgetting
event) holds one version of the model::

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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .aggregation import (
    ShardMixture,
    adaptive_weights,
    major_weights,
    save_merged_adapter,
    semantic_weights,
    uniform_weights,
)
from .controller import (
    CONTROLLER_DIR,
    FORGOTTEN_FILE,
    LEDGER_FILE,
    LINEAGE_FILE,
    RECIPE_FILE,
    VALIDATION_FILE,
    crash_point,
    fsync_dir,
    swap_in,
)
from . import receipts
from .partition import batch_representation
from .scoring import AnswerTokens, make_collator, yes_no_logits, answer_logits


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


def answer_completions(dataset) -> tuple[str, str]:
    """The `(yes, no)` completion strings of a dataset with `completion` and `label` columns."""
    completions, labels = dataset["completion"], dataset["label"]
    yes = next((c for c, y in zip(completions, labels) if int(y) == 1), None)
    no = next((c for c, y in zip(completions, labels) if int(y) == 0), None)
    if yes is None or no is None:
        from .data.prompts import TEMPLATES

        tpl = next((t for t in TEMPLATES.values() if (yes or no) in (t.yes, t.no)), TEMPLATES["e2urec"])
        yes, no = yes or tpl.yes, no or tpl.no
    return yes, no


class APARecommender:
    """
    K shard adapters on one base model, aggregated per sample and served in one forward pass per batch.

    Build it with [`from_pretrained`] from a directory, or get it from `APATrainer.recommender`.

    Args:
        base_model: the base model (not PEFT-wrapped; it is never modified).
        tokenizer: its tokenizer.
        state (`APAState`): adapters, validation errors and metadata.
    """

    def __init__(self, base_model, tokenizer, state: APAState):
        if hasattr(base_model, "peft_config"):
            raise ValueError(
                "`base_model` is a PEFT model; pass the plain base model (e.g. `peft_model.unload()`): the shard "
                "adapters are applied by the recommender itself."
            )
        self.model = base_model
        self.tokenizer = tokenizer
        self.state = state
        self.source_dir: str | None = None  # the directory this version was loaded from, if any
        self.answer_tokens = AnswerTokens.from_completions(tokenizer, state.answer["yes"], state.answer["no"])
        self.max_prompt_length = int(state.answer.get("max_prompt_length", 512))
        self.mixture = ShardMixture(base_model, state.shard_adapters, state.lora_config)
        self._collator = make_collator(
            base_model, tokenizer, self.answer_tokens, max_prompt_length=self.max_prompt_length, for_scoring=True
        )

    # ---------------------------------------------------------------------------------------------------- properties
    @property
    def num_shards(self) -> int:
        return self.state.num_shards

    @property
    def version(self) -> int:
        return self.state.version

    @property
    def aggregation(self) -> AggregationSpec:
        return self.state.aggregation

    # ---------------------------------------------------------------------------------------------------- weights
    def routing_representation(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The representation used to find validation neighbours for a scoring batch, `(batch, hidden)`."""
        return batch_representation(self.model, batch, self.aggregation.routing_representation)

    def weights_from_representation(
        self,
        reps: torch.Tensor,
        weighting: str | None = None,
        temperature: float | None = None,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`(batch, K)` aggregation weights for prompts with representations `reps`."""
        spec = self.aggregation
        weighting = weighting or spec.weights
        tau = spec.temperature if temperature is None else temperature
        device = reps.device
        if weighting == "uniform":
            return uniform_weights(len(reps), self.num_shards, device)
        if weighting == "semantic":
            return semantic_weights(reps, self.state.shard_centroids.to(device), tau)
        if weighting not in ("adaptive", "major"):
            raise ValueError(f"`weighting` must be adaptive, uniform, semantic or major, got {weighting!r}.")
        w = adaptive_weights(
            reps,
            self.state.valid_reps.to(device),
            self.state.valid_errors.to(device),
            spec.num_neighbors,
            tau,
            exclude=exclude,
        )
        return major_weights(w) if weighting == "major" else w

    # ---------------------------------------------------------------------------------------------------- inference
    def _rows(self, data):
        if isinstance(data, (list, tuple)):
            return [{"prompt": p} for p in data]
        return data

    def _batches(self, data, batch_size: int):
        rows = self._rows(data)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            if isinstance(chunk, dict):  # a `Dataset` slice is a dict of columns
                chunk = [{"prompt": p} for p in chunk["prompt"]]
            yield start, self._collator(chunk)

    def _p_like(self, batch) -> torch.Tensor:
        logits = yes_no_logits(answer_logits(self.model, batch), self.answer_tokens).float()
        return torch.softmax(logits, dim=-1)[:, 1]

    @torch.no_grad()
    def predict(
        self,
        data,
        batch_size: int = 32,
        weighting: str | None = None,
        level: str | None = None,
        weights: np.ndarray | torch.Tensor | None = None,
        temperature: float | None = None,
        leave_one_out: bool = False,
        return_weights: bool = False,
    ):
        """
        P(like) for every row of `data` (a `Dataset` with `prompt`, or a list of prompts), aggregated over shards.

        Args:
            batch_size: prompts per forward pass.
            weighting, level, temperature: override the stored aggregation for this call.
            weights (*optional*): `(len(data), K)` fixed weights instead of computed ones.
            leave_one_out: `data` is the validation set: leave each row out of its own neighbours (for choosing τ).
            return_weights: also return the `(len(data), K)` weights used.

        Level `"ND"`/`"D"` run one forward pass per batch (the routing representation of the default
        `"embedding_mean"` is an embedding lookup, no extra pass); `"output"` runs K passes and averages P(like)
        with the weights (SISA when uniform).
        """
        level = level or self.aggregation.level
        if level not in ("ND", "D", "output"):
            raise ValueError(f"`level` must be 'ND', 'D' or 'output', got {level!r}.")
        fixed = None if weights is None else torch.as_tensor(np.asarray(weights), dtype=torch.float32)
        was_training = self.model.training
        self.model.eval()
        probs, used = [], []
        try:
            for start, batch in self._batches(data, batch_size):
                n = batch["input_ids"].shape[0]
                if fixed is not None:
                    w = fixed[start : start + n]
                elif (weighting or self.aggregation.weights) == "uniform":
                    w = uniform_weights(n, self.num_shards)
                else:
                    reps = self.routing_representation(batch)
                    exclude = torch.arange(start, start + n, device=reps.device) if leave_one_out else None
                    w = self.weights_from_representation(reps, weighting, temperature, exclude)
                if level == "output":
                    p = sum(w[:, k].to("cpu") * self.predict_batch_shard(batch, k) for k in range(self.num_shards))
                else:
                    with self.mixture.active(weights=w, level=level):
                        p = self._p_like(batch).cpu()
                probs.append(p.double())
                used.append(w.float().cpu())
        finally:
            self.model.train(was_training)
        out = torch.cat(probs).numpy() if probs else np.zeros(0)
        if return_weights:
            return out, (torch.cat(used).numpy() if used else np.zeros((0, self.num_shards)))
        return out

    @torch.no_grad()
    def predict_batch_shard(self, batch, k: int) -> torch.Tensor:
        """P(like) of shard `k` alone for a scoring batch (computed as PEFT computes that adapter)."""
        with self.mixture.active(shard=k):
            return self._p_like(batch).cpu()

    @torch.no_grad()
    def predict_shard(self, data, k: int, batch_size: int = 32) -> np.ndarray:
        """P(like) of shard `k`'s adapter alone for every row of `data`."""
        was_training = self.model.training
        self.model.eval()
        try:
            out = [self.predict_batch_shard(batch, k).double() for _, batch in self._batches(data, batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0)

    def select_temperature(self, valid_dataset, candidates: Sequence[float], batch_size: int = 32) -> dict[float, float]:
        """
        Choose τ on the validation set: each validation row is aggregated with weights from its neighbours among
        the *other* validation rows (leave-one-out), and the τ with the best AUC (then lowest log-loss) is kept.

        Returns the AUC of every candidate; sets `aggregation.temperature`.
        """
        from .metrics import utility_metrics

        labels = np.asarray(valid_dataset["label"])
        scores = {}
        for tau in candidates:
            p = self.predict(valid_dataset, batch_size, temperature=float(tau), leave_one_out=True)
            m = utility_metrics(labels, p)
            scores[float(tau)] = (np.nan_to_num(m["auc"], nan=-1.0), -m["logloss"])
        best = max(scores, key=lambda t: (scores[t], -t))
        self.state.aggregation.temperature = best
        return {t: float(s[0]) for t, s in scores.items()}

    # ---------------------------------------------------------------------------------------------------- export
    def export_adapter(self, save_directory, weights: Sequence[float], level: str | None = None) -> None:
        """
        Write one static PEFT adapter equal to the shards aggregated with the fixed `weights` (e.g. uniform, or one
        user's weights), for serving stacks that take a single adapter. ND is rank K·r, D rank r.
        """
        level = level or self.aggregation.level
        if level == "output":
            raise ValueError("An output-level ensemble has no single-adapter form; pass `level='ND'` or `'D'`.")
        save_merged_adapter(save_directory, self.state.shard_adapters, self.state.lora_config, weights, level)

    # ---------------------------------------------------------------------------------------------------- persistence
    def save_pretrained(self, save_directory) -> None:
        """Write this version to `save_directory` (atomically; see the module docstring for the layout)."""
        write_apa_directory(save_directory, self.state, tokenizer=self.tokenizer)

    def push_to_hub(self, repo_id: str, *, keep_history: bool = False, private: bool = False, **kwargs):
        """
        Push this version to the Hub model repo `repo_id` as tag `vN` (one commit; see `hf_recunlearn.hub.push`,
        which receives the other keyword arguments: `metrics`, `datasets`, `token`, ...).

        After a forget event the earlier versions are purged from the Hub (tags deleted, history squashed) unless
        `keep_history=True`. Returns a `hf_recunlearn.hub.HubPushResult`.
        """
        import tempfile

        from .hub import push

        if self.source_dir is not None and read_version(self.source_dir) == self.version:
            return push(self.source_dir, repo_id, keep_history=keep_history, private=private, **kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "apa")
            return push(Path(tmp) / "apa", repo_id, keep_history=keep_history, private=private, **kwargs)

    @classmethod
    def from_pretrained(
        cls, directory, base_model=None, tokenizer=None, *, revision: str | None = None, token=None, cache_dir=None
    ) -> "APARecommender":
        """
        Rebuild the aggregated recommender from a directory alone, or from a Hub repo pushed by `push_to_hub`.

        Args:
            directory: a directory written by `save_pretrained` / `APATrainer`, or a Hub repo id.
            base_model (*optional*): the base model object, or its name/path; defaults to the `base_model` recorded
                in the metadata.
            tokenizer (*optional*): defaults to the tokenizer saved in `directory`, else the base model's.
            revision (`str`, *optional*): Hub repos only: the version tag (`"v2"`), branch or commit to load.
                Defaults to the latest version (`main`).
            token, cache_dir (*optional*): Hub repos only, passed to `huggingface_hub`.
        """
        from transformers import AutoTokenizer

        from .models import _prepare_tokenizer, load_model

        directory = Path(directory)
        if not directory.is_dir():
            if str(directory).startswith(("/", "./", "../", "~")) or directory.exists():
                raise FileNotFoundError(
                    f"{str(directory)!r} is not a directory; pass an APA directory or a Hub repo id."
                )
            from .hub import pull

            directory = pull(str(directory), revision or "main", token=token, cache_dir=cache_dir)
        elif revision is not None:
            raise ValueError(
                f"`revision={revision!r}` was given, but {str(directory)!r} is a local directory, which holds one "
                "version. Pass a Hub repo id to load a given revision."
            )
        state = read_apa_directory(directory)
        if base_model is None or isinstance(base_model, (str, os.PathLike)):
            name = base_model or state.base_model
            if not name:
                raise ValueError(
                    f"{str(directory)!r} records no base model name; pass `base_model=` (the model the shards were "
                    "trained on)."
                )
            base_model, loaded_tok = load_model(name)
            tokenizer = tokenizer or loaded_tok
        if tokenizer is None:
            if (directory / "tokenizer_config.json").is_file():
                tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(directory), base_model)
            elif state.base_model:
                tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(state.base_model), base_model)
            else:
                raise ValueError(f"No tokenizer in {str(directory)!r} and no base model name; pass `tokenizer=`.")
        recommender = cls(base_model, tokenizer, state)
        recommender.source_dir = str(directory)
        return recommender


# --------------------------------------------------------------------------------------------------------------------
# Reading and writing versions
# --------------------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def _siblings(target: Path, kind: str) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def recover_apa_directory(target) -> None:
    """
    Finish or roll back an interrupted version switch: if `target` is missing but the previous version was moved
    aside, move it back; remove leftover staging directories of unfinished writes.
    """
    target = Path(target)
    previous = _siblings(target, "previous")
    if not target.exists() and previous:
        os.rename(previous[-1], target)
        fsync_dir(target.parent)
        previous = previous[:-1]
    if target.exists():
        for path in previous + _siblings(target, "staging"):
            shutil.rmtree(path, ignore_errors=True)


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

    from .runs import write_json_atomic

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_apa_directory(target)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:12]}"
    changed = set(range(state.num_shards)) if changed_shards is None or reuse_shards_from is None else set(changed_shards)
    try:
        staging.mkdir()
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
