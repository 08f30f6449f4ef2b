"""The aggregated APA recommender: shard adapters combined per sample in one forward pass.

A version's files (layout, schema, atomic writes) are defined in `hf_recunlearn.apa_format`; the names it
exports are re-exported here for the code that imports them from this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

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
from .apa_format import (  # noqa: F401  (re-exported: other modules import the format's names from here)
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    STATE_NAME,
    AggregationSpec,
    APAState,
    public_lineage,
    read_apa_directory,
    read_version,
    recover_apa_directory,
    shard_name,
    write_apa_directory,
)
from .partition import batch_representation
from .scoring import AnswerTokens, answer_logits, make_collator, map_batches, p_like


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
    @staticmethod
    def _prompts(data):
        """`data` (a `Dataset` or a list of prompts) reduced to what aggregation reads: the prompt."""
        return data.select_columns(["prompt"]) if hasattr(data, "select_columns") else data

    def _p_like(self, batch) -> torch.Tensor:
        return p_like(answer_logits(self.model, batch), self.answer_tokens)

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

        def step(start, batch):
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
            return p.double(), w.float().cpu()

        batches = map_batches(self.model, self._collator, self._prompts(data), step, batch_size)
        probs = torch.cat([p for p, _ in batches]).numpy() if batches else np.zeros(0)
        if return_weights:
            used = torch.cat([w for _, w in batches]).numpy() if batches else np.zeros((0, self.num_shards))
            return probs, used
        return probs

    @torch.no_grad()
    def predict_batch_shard(self, batch, k: int) -> torch.Tensor:
        """P(like) of shard `k` alone for a scoring batch (computed as PEFT computes that adapter)."""
        with self.mixture.active(shard=k):
            return self._p_like(batch).cpu()

    def predict_shard(self, data, k: int, batch_size: int = 32) -> np.ndarray:
        """P(like) of shard `k`'s adapter alone for every row of `data`."""

        def step(_, batch):
            return self.predict_batch_shard(batch, k).double()

        out = map_batches(self.model, self._collator, self._prompts(data), step, batch_size)
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
