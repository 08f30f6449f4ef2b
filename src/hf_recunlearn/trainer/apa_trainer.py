"""APA: exact unlearning by construction, with one LoRA adapter per data shard (paper §3).

`train()` partitions the training data, trains one adapter per shard with [`RecTrainer`] (TALLRec recipe), records
each shard's prediction errors on the validation set, and writes version 1 together with its **recipe**: every
setting that determines the weights (the `TrainingArguments` fields, the LoRA config, the partition and its seed, the
shard seeds, the base model's content fingerprint). `forget()` removes samples or users from the shard ledger and
retrains only the shards that held them, from scratch with that stored recipe, so a retrained shard equals, bit for
bit under deterministic settings, a shard trained on its remaining data alone, whichever path (Python, CLI, Space,
benchmark) asked for the forget. A forget with any other recipe is refused.

A forget is durable and serialised (see `hf_recunlearn.controller`): under the model directory's lock, the request
is appended to the journal (salted digests, fsync'd) before any work, the new version is swapped in atomically, other
copies of the data are erased through the `erase_copies` hook, and only then is the request marked done. A crash at
any instant leaves the previous or the new version in place, and the next forget (or `resume()`) finishes every
pending request. A forgotten user's validation rows leave the aggregation state with their training rows.

Design: one `APATrainer` (a `transformers.Trainer`) orchestrates; each shard is trained by a short-lived
[`RecTrainer`] on that shard alone. Shards are independent models, so a `Trainer` per shard keeps each shard's run a
pure function of its data, seed and recipe (what exactness needs), and lets retraining touch only the affected shards.
`train()` still honours Trainer's contract: it returns a `TrainOutput`, callbacks see one `on_train_begin` /
`on_train_end` per call, events are logged through `Trainer.log` (`apa/...` keys in `state.log_history`),
`predict` returns a `PredictionOutput`, and `args.push_to_hub` / `args.hub_model_id` push the version at the end.
The event report of the last call is `trainer.last_report`; the APA model is `trainer.apa_state`.

Under `accelerate launch --num_processes N`, every shard is trained data-parallel over the N processes by its own
`Trainer` (DDP through accelerate, as `Trainer` trains any model in a launch), one shard after the other. The
orchestration uses accelerate's public API only: `split_between_processes` + `gather_object` spread the inference
passes (representations, validation scores), `broadcast_object_list` sends the partition and the salt from the main
process, `wait_for_everyone` holds the others while it writes. Why data-parallel shards rather than one shard per
process: a shard's `Trainer` inside a launch is a distributed `Trainer`, and keeping it to one process would mean
hiding the launch from it (its environment, accelerate's state); and a forget usually retrains one shard, which data
parallelism spreads over every process where one-shard-per-process would leave N - 1 idle. The price: the process
count sets the effective batch size and the order of the gradient sums, so it is part of the recipe
(`recipe["launch"]`), and a forget or `reproduce_shard` under another process count is refused.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather_object
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from transformers import PreTrainedModel, TrainerCallback, set_seed

from ..apa_recommender import (
    CONFIG_NAME,
    AggregationSpec,
    APARecommender,
    APAState,
    answer_completions,
    read_apa_directory,
    read_version,
    write_apa_directory,
)
from ..apa_format import public_lineage
from ..controller import Journal, crash_point, directory_lock, fingerprint_model
from ..cards import paper
from ..receipts import ExactEvent, issue_token, request_tree, users_tree
from ..models import _prepare_tokenizer, load_model, prepare_model_for_training
from ..partition import (
    Partition,
    ShardLedger,
    _as_id_list,
    load_or_create_salt,
    make_partition,
    prompt_representations,
)
from ..scoring import AnswerTokens, score
from .apa_config import APAConfig
from .base_trainer import UnlearningTrainer
from .rec_trainer import RecTrainer, compute_utility_metrics, make_lora_config


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("prompt", "completion", "label", "sample_id", "user_id")


@dataclass
class APAEventReport:
    """
    What one training or forgetting event did.

    Attributes:
        event (`str`): `"train"`, `"forget"`, or `"queued"` (a forget request recorded in the journal and held until
            `min_users_per_event` users are pending; nothing retrained yet).
        version (`int`): the model version the event produced.
        affected_shards (`list[int]`): shards (re)trained.
        samples_removed (`int`): training samples removed from the ledger (0 for `"train"`).
        users_removed (`int`): users with no training sample left after the event (0 for `"train"`).
        seconds (`float`): wall time of the whole event (training, validation errors, writing the version).
        shard_seconds (`dict[int, float]`): training time of each (re)trained shard.
        num_samples (`int`): training samples in the ledger after the event.
        num_processes (`int`): processes the shards were trained data-parallel over (1 outside a launch).
        temperature_scores (`dict[float, float]`): validation AUC per τ candidate, when τ was chosen.
        tokens (`list[str]`): one deletion token per user id the `forget` call named, in that order, once they are
            forgotten (see `hf_recunlearn.receipts`; `verify --token` checks one). Empty for queued requests.
    """

    event: str
    version: int
    affected_shards: list[int]
    samples_removed: int
    users_removed: int
    seconds: float
    shard_seconds: dict[int, float] = field(default_factory=dict)
    num_samples: int = 0
    num_processes: int = 1
    temperature_scores: dict[float, float] = field(default_factory=dict)
    requests: int = 0
    pending_users: int = 0
    tokens: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# `TrainingArguments` fields that do not change the weights: everything else is part of the stored recipe, and a
# forget whose configuration differs in any of them is refused.
NON_RECIPE_FIELDS = frozenset({
    "output_dir", "overwrite_output_dir", "logging_dir", "logging_strategy", "logging_steps", "logging_first_step",
    "logging_nan_inf_filter", "report_to", "run_name", "disable_tqdm", "save_strategy", "save_steps",
    "save_total_limit", "save_on_each_node", "save_only_model", "save_safetensors", "push_to_hub", "hub_model_id",
    "hub_strategy", "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "resume_from_checkpoint",
    "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "prediction_loss_only", "do_train", "do_eval",
    "do_predict", "load_best_model_at_end", "metric_for_best_model", "greater_is_better", "local_rank",
    "dataloader_num_workers", "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "log_level", "log_level_replica", "log_on_each_node", "skip_memory_metrics", "include_num_input_tokens_seen",
    "salt_dir", "save_on_event", "min_users_per_event", "trackio_space_id", "project",
})  # fmt: skip


def recipe_arguments(args) -> dict[str, Any]:
    """The fields of a configuration that determine the weights, as JSON values (see `NON_RECIPE_FIELDS`)."""
    import json

    values = {k: v for k, v in args.to_dict().items() if k not in NON_RECIPE_FIELDS}
    return json.loads(json.dumps(values, sort_keys=True, default=str))


def config_from_recipe(config_class, recipe: dict, **overrides):
    """Rebuild the configuration a version was trained with from its stored recipe."""
    import inspect

    accepted = set(inspect.signature(config_class).parameters)
    values = {k: v for k, v in recipe["training_arguments"].items() if k in accepted}
    # The controller's settings that are not part of the recipe but must persist: where the salt is, and the
    # privacy batching of forget requests.
    settings = {k: v for k, v in (recipe.get("settings") or {}).items() if k in accepted and v is not None}
    return config_class(**{**values, **settings, **overrides})


@dataclass
class _ShardResult:
    adapter: dict[str, torch.Tensor]
    lora_config: Any
    valid_errors: torch.Tensor
    centroid: torch.Tensor
    seconds: float
    info: dict


def _from_main_process(make):
    """`make()` on the main process, sent to every process of the launch (salts and partitions are made once)."""
    state = PartialState()
    if state.num_processes == 1:
        return make()
    payload = [make() if state.is_main_process else None]
    broadcast_object_list(payload, from_process=0)
    return payload[0]


def _on_all_processes(data, fn) -> np.ndarray:
    """`fn` (rows -> array) over `data`, each process taking a contiguous share of the rows; the result in row order."""
    state = PartialState()
    if state.num_processes == 1:
        return fn(data)
    with state.split_between_processes(list(range(len(data)))) as rows:
        part = fn(data.select(rows)) if len(rows) else None
    return np.concatenate([p for p in gather_object([part]) if p is not None])


def _check_launch(args, recipe: dict | None) -> None:
    """Refuse a launch whose process count differs from the recipe's, or one accelerate does not see as a launch."""
    launched = torch.distributed.is_available() and torch.distributed.is_initialized()
    if launched and args.world_size != torch.distributed.get_world_size():
        raise ValueError(
            f"This script runs as {torch.distributed.get_world_size()} processes, but accelerate trains on "
            f"{args.world_size} (without a GPU it needs `use_cpu=True` to train data-parallel on the CPU): pass "
            "`use_cpu=True`, or run a single process."
        )
    stored = ((recipe or {}).get("launch") or {}).get("num_processes", 1)
    if recipe is not None and args.world_size != stored:
        raise ValueError(
            f"The shards were trained data-parallel over {stored} process(es), this launch has {args.world_size}: the "
            "process count sets the effective batch size, so retraining under another one could not be exact. Run "
            + ("one process (plain `python`)." if stored == 1 else f"`accelerate launch --num_processes {stored}`.")
        )


class APATrainer(UnlearningTrainer):
    """
    Trainer for APA: K shard LoRA adapters, sample-adaptive aggregation, exact forgetting by shard retraining.

    An [`UnlearningTrainer`] for an exact method: there is no student and no teacher; `train()` trains the shard
    adapters (each by its own [`RecTrainer`]) and returns a `TrainOutput` (the [`APAEventReport`] is `last_report`),
    and [`forget`] retrains only the shards that held the forgotten data. Events are logged through `Trainer.log`
    (`apa/version`, `apa/shards_trained`, `apa/samples_removed`, `apa/users_removed`, `apa/num_samples`,
    `apa/seconds`); `save_model` writes the version with the library's card (counts only, never ids or digests),
    and `push_to_hub` publishes it as the next version of a versioned repo (`hf_recunlearn.hub.push`).

    Args:
        model (`str`, `PreTrainedModel` or `APARecommender`):
            The base model (a model id, path or loaded model; not PEFT-wrapped), or an existing APA model to forget
            from: a directory written by `APATrainer` / `APARecommender.save_pretrained`, or an `APARecommender`.
        args (`APAConfig`, *optional*): configuration; `output_dir` receives a new version after every event. By
            default the directory `model` names when it is a saved APA model (the next version replaces it), else
            `apa-model`.
        data_collator (*optional*): collator for shard training (default: `RecCollator` for the model).
        train_dataset (`Dataset`): the training set, columns `prompt`, `completion`, `label`, `sample_id`, `user_id`.
            To forget from an existing APA model, pass the training set it was trained on: retrained shards are read
            from it through the ledger (rows the ledger no longer holds are skipped).
        eval_dataset (`Dataset` or `dict[str, Dataset]`, *optional*): evaluation sets. A dict holding
            `args.validation_split` (default `"valid"`), e.g. `{"valid": ds["valid"], "test": ds["test"]}`, supplies
            the validation set whose per-shard errors drive the adaptive weights; every entry is evaluated by
            [`evaluate`]. A single `Dataset` is only evaluated (then adaptive weights need a dict).
        processing_class: the tokenizer (loaded with the model when `model` is a string).
        compute_metrics (*optional*): `EvalPrediction -> dict`; default AUC/ACC/LogLoss.
        callbacks (*optional*): passed to every shard's `Trainer`, and to this trainer's (which sees the events).
        optimizers: must be `(None, None)`: every shard builds its own optimizer.
        forget_dataset (`Dataset`, *optional*): samples to forget, drawn from `train_dataset` (matched by
            `sample_id`; unknown samples are refused here). [`train`] trains, then forgets them (or forgets them right
            away when `model` is an existing APA model).
        retain_dataset: accepted for the unlearning-trainer interface and ignored: the ledger defines what remains.
        peft_config (`LoraConfig`, *optional*): shard adapter settings (default: from `args`).
        shard_assignment (`dict`, *optional*): `sample_id -> shard` for every training sample, replacing the
            partition (to train on given shards, e.g. to check a forget against a from-scratch run on the same shards).

    Forgetting from an existing APA model reuses the recipe stored with it: pass no `args` (or `args` equal to the
    recipe in every field that changes the weights; another recipe is refused, naming the fields).
    """

    _tag_names = ["hf_recunlearn", "apa", "unlearning", "exact-unlearning"]
    _name = "APA"
    _paper = paper("apa")
    config_class = APAConfig
    default_compute_metrics = staticmethod(compute_utility_metrics)

    def __init__(
        self,
        model,
        args: APAConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        forget_dataset=None,
        retain_dataset=None,
        peft_config=None,
        shard_assignment: dict | None = None,
    ):
        if optimizers != (None, None):
            raise ValueError(
                f"`optimizers` must be (None, None) for APA, got {optimizers!r}: every shard adapter builds its own "
                "optimizer from `args`."
            )
        args = self._check_args(args, model)
        self.apa_state: APAState | None = None
        # The directory holding the current version, if any: unchanged shards are copied from it byte for byte.
        self._source_dir: str | None = None
        self._shard_data_collator = data_collator
        self._shard_callbacks = callbacks
        self._shard_peft_config = peft_config
        self._recommender: APARecommender | None = None
        self._forgotten_sample_hashes: set[str] = set()
        self._shard_assignment = None if shard_assignment is None else {str(k): int(v) for k, v in shard_assignment.items()}
        # How the training set was prepared (the CLI sets its data spec): stored with the recipe.
        self.data_spec: dict | None = None
        self.reports: list[APAEventReport] = []
        self.unlearning_runtime: float | None = None  # seconds of the last forget event
        output_dir_existed = os.path.isdir(args.output_dir)
        super().__init__(
            model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            forget_dataset=forget_dataset,
            retain_dataset=retain_dataset,
            peft_config=peft_config,
        )
        if not args.save_on_event and not output_dir_existed:
            # `Trainer` creates `output_dir`; with `save_on_event=False` nothing is written there unless asked.
            with contextlib.suppress(OSError):
                os.rmdir(args.output_dir)

    # ------------------------------------------------------------------------------------------------ setup hooks
    def _default_output_dir(self, model) -> str:
        if _is_apa_directory(model):
            return str(model)  # forgetting from a saved version writes the next version in its place
        if isinstance(model, APARecommender) and model.source_dir and _is_apa_directory(model.source_dir):
            return str(model.source_dir)
        return f"{self._name.lower()}-model"

    def _check_args(self, args, model):
        """
        For an existing APA model, the configuration is its stored recipe: built from it when `args` is None, and
        `args` that would retrain with another recipe are refused (a forget must reproduce the training exactly).
        """
        recipe = self._stored_recipe(model)
        if recipe is None:
            if _is_apa_directory(model) or isinstance(model, APARecommender):
                raise ValueError(
                    f"{_describe(model)} has no controller state (ledger and training recipe): it is a published "
                    "version, which can serve predictions (`APARecommender.from_pretrained`) but not forget. Forget "
                    "from the directory the training run wrote."
                )
            args = super()._check_args(args, model)
            _check_launch(args, None)
            return args
        if recipe.get("config_class") != self.config_class.__name__:
            raise ValueError(
                f"{_describe(model)} was trained with {recipe.get('config_class')}, not {self.config_class.__name__}: "
                f"use the trainer of that method."
            )
        if args is None:
            output_dir = str(model) if _is_apa_directory(model) else self._default_output_dir(model)
            args = config_from_recipe(self.config_class, recipe, output_dir=output_dir)
            _check_launch(args, recipe)
            return args
        args = super()._check_args(args, model)
        stored, given = recipe["training_arguments"], recipe_arguments(args)
        differing = sorted(k for k in set(stored) | set(given) if stored.get(k) != given.get(k))
        if differing:
            shown = ", ".join(f"`{k}` = {given.get(k)!r} (stored: {stored.get(k)!r})" for k in differing[:6])
            raise ValueError(
                f"`args` differs from the recipe {_describe(model)} was trained with: {shown}"
                + (f" and {len(differing) - 6} more" if len(differing) > 6 else "")
                + ". Forgetting must retrain with the stored recipe to be exact: pass no `args` (the stored recipe is "
                "used), or the same values."
            )
        _check_launch(args, recipe)
        return args

    def _stored_recipe(self, model) -> dict | None:
        if isinstance(model, APARecommender):
            return model.state.recipe
        if _is_apa_directory(model):
            # Read once (adapters included) for both `_check_args` calls; `_load_model` takes this state.
            if getattr(self, "_directory_state", None) is None:
                self._directory_state = read_apa_directory(model)
            return self._directory_state.recipe
        return None

    def _load_model(self, model, processing_class):
        """The base model and tokenizer; an existing APA model (directory or recommender) also gives its state."""
        if isinstance(model, APARecommender):
            self.apa_state = copy.deepcopy(model.state)
            self._source_dir = model.source_dir
            self._check_base_fingerprint(model.model)
            return model.model, processing_class or model.tokenizer
        if not _is_apa_directory(model):
            return super()._load_model(model, processing_class)
        state = self.__dict__.pop("_directory_state", None)
        self.apa_state = read_apa_directory(model) if state is None else state
        self._source_dir = str(model)
        if not self.apa_state.base_model:
            raise ValueError(
                f"{str(model)!r} records no base model name; load it with `APARecommender.from_pretrained(dir, "
                "base_model=...)` and pass the recommender as `model`."
            )
        base, tokenizer = load_model(self.apa_state.base_model, **self._load_args.model_load_kwargs())
        if os.path.isfile(os.path.join(model, "tokenizer_config.json")):
            from transformers import AutoTokenizer

            tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(model), base)
        self._check_base_fingerprint(base)
        return base, processing_class or tokenizer

    def _check_base_fingerprint(self, base) -> None:
        """Refuse a base model whose weights differ from the one the shards were trained on."""
        stored = (self.apa_state.recipe or {}).get("base_model_fingerprint")
        if stored and fingerprint_model(base) != stored:
            raise ValueError(
                f"The base model {self.apa_state.base_model!r} does not have the weights the shards were trained on "
                "(content fingerprint differs): retraining a shard on it could not be exact. Load the same base model "
                "(same checkpoint, dtype and quantization)."
            )

    def _resolve_datasets(self, train_dataset, forget_dataset, retain_dataset):
        """
        Check the columns the ledger needs; an optional `forget_dataset` must be training samples. There is no
        retained set to derive: the ledger holds what remains.
        """
        if retain_dataset is not None:
            warnings.warn(
                "`retain_dataset` is ignored by APATrainer: the shard ledger determines the retained samples. "
                "Pass the full `train_dataset` instead (and drop `retain_dataset` to silence this warning).",
                stacklevel=4,
            )
        ledger_keys = " (the ledger keys shards by `sample_id` and `user_id`)"
        self._check_columns({"train_dataset": train_dataset}, REQUIRED_COLUMNS, why=ledger_keys)
        self._check_columns({"forget_dataset": forget_dataset}, ("sample_id",), why=" (names the samples to forget)")
        self._check_rows({"train_dataset": train_dataset})
        if forget_dataset is not None:
            self._check_forget_not_empty(forget_dataset)
            if train_dataset is not None:
                self._match_forget_set(forget_dataset, train_dataset)
        return forget_dataset, None

    def _prepare_model(self, model, args: APAConfig, peft_config):
        """The base stays as it is: every shard adapter is added, trained and removed again by `_train_shard`."""
        if isinstance(model, PeftModel) or hasattr(model, "peft_config"):
            raise ValueError(
                "`model` is already a PEFT model. APA trains its own shard adapters on the frozen base: pass the base "
                "model (e.g. `peft_model.unload()` or the base model id)."
            )
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"`model` must be a model id, a path or a `PreTrainedModel`, got {type(model).__name__}.")
        return model

    def _training_inputs(self, model, args, processing_class, train_dataset, data_collator):
        """No forget/retain pairing: `Trainer` holds the training set; the shards build their own batches."""
        return train_dataset, data_collator

    # ------------------------------------------------------------------------------------------------ public API
    @property
    def recommender(self) -> APARecommender:
        """The aggregated recommender of the current version."""
        if self.apa_state is None:
            raise RuntimeError("No APA model yet: call `train()` first.")
        if self._recommender is None or self._recommender.state is not self.apa_state:
            self._recommender = APARecommender(self.model, self.processing_class, self.apa_state)
        return self._recommender

    @property
    def last_report(self) -> APAEventReport | None:
        """What the last training or forgetting event did."""
        return self.reports[-1] if self.reports else None

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """
        Train every shard adapter (unless `model` was an existing APA model), then forget `forget_dataset` if given.

        Returns a `transformers.trainer_utils.TrainOutput` (as `Trainer.train` does): `global_step` and
        `training_loss` summed / averaged over the shards trained, `metrics` with the event's figures. The event
        reports are `trainer.last_report` / `trainer.reports`. With `args.push_to_hub`, the new version is pushed to
        `args.hub_model_id` at the end.
        """
        from transformers.trainer_utils import TrainOutput

        if resume_from_checkpoint is not None:
            raise ValueError("`resume_from_checkpoint` is not supported: APA versions are complete models; pass the "
                             "saved directory as `model` instead.")  # fmt: skip
        if self.apa_state is not None and self.forget_dataset is None:
            raise ValueError("Nothing to do: the model is already trained and no `forget_dataset` was given.")
        first = len(self.reports)
        self._shard_steps, self._shard_losses = 0, []
        self.control = self.callback_handler.on_train_begin(self.args, self.state, self.control)
        if self.apa_state is None:
            self._train_all()
        if self.forget_dataset is not None:
            self.forget(sample_ids=list(self.forget_dataset["sample_id"]))
            self.forget_dataset = None  # consumed: the ledger no longer holds these samples
        self.control = self.callback_handler.on_train_end(self.args, self.state, self.control)
        report = self.last_report
        if self.args.push_to_hub:
            self.push_to_hub()
        losses = self._shard_losses
        metrics = {
            "train_runtime": sum(r.seconds for r in self.reports[first:]),
            "version": report.version,
            "shards_trained": len(report.affected_shards),
            "samples_removed": report.samples_removed,
            "users_removed": report.users_removed,
        }
        return TrainOutput(self._shard_steps, float(np.mean(losses)) if losses else 0.0, metrics)

    def forget(
        self,
        user_ids: Sequence | None = None,
        sample_ids: Sequence | None = None,
        *,
        flush: bool = False,
        wait: bool = True,
        erase_copies=None,
    ) -> APAEventReport:
        """
        Forget users and/or samples exactly: drop them from the ledger and the validation state and retrain only the
        shards that held them, with the stored recipe.

        With `save_on_event` (the default) the request is durable: under the lock of `output_dir` it is appended to
        the journal before any work, and marked done only once the new version is in place. Requests left pending by
        a crash are carried out with it. Ids the ledger does not hold (never trained on, or already forgotten) are
        refused before anything changes.

        Args:
            user_ids, sample_ids: what to forget (at least one id).
            flush (`bool`): carry out the pending requests now even if fewer than `args.min_users_per_event` users are
                pending.
            wait (`bool`): wait for another process that holds the lock (default); `False` raises `RunLockedError`.
            erase_copies (*optional*): `callable(user_digests, sample_digests)` run after the new version is in place
                and before the requests are marked done, to erase other copies of the data (the CLI erases the run's
                cached data set); it must be idempotent (it may run again after a crash).

        Returns:
            [`APAEventReport`]: `event="forget"`, or `"queued"` when the request waits for more users.
        """
        self._require_forgettable()
        users = _as_id_list(user_ids)
        samples = _as_id_list(sample_ids)
        if not users and not samples:
            raise ValueError("A forget request must name at least one id: pass `user_ids` and/or `sample_ids`.")
        with self._exclusive(wait):
            self._reload_current_version()
            ledger = self._ledger()
            found = ledger.locate(user_ids=users, sample_ids=samples)  # unknown ids: ValueError, nothing changed
            digests = set().union(*found.values())
            user_digests = {ledger.hash_user(u) for u in users}
            if self.args.save_on_event:
                Journal(self.args.output_dir).record(digests, user_digests, flush=flush)
                crash_point("forget:journaled")
                report = self._carry_out_pending(flush=flush, erase_copies=erase_copies)
            else:
                report = self._carry_out([(None, digests, user_digests)], erase_copies=erase_copies)
            if report.event == "forget" and self.apa_state.receipts:
                report.tokens = self.deletion_tokens(users)
            return report

    def resume(self, *, flush: bool = False, wait: bool = True, erase_copies=None) -> APAEventReport | None:
        """
        Finish every forget request an interrupted process left in the journal (the CLI does this before any other
        command on a run). Returns the report of the event that carried them out, or None when nothing was pending.
        """
        self._require_forgettable()
        with self._exclusive(wait):
            self._reload_current_version()
            if not Journal(self.args.output_dir).pending():
                return None
            return self._carry_out_pending(flush=flush, erase_copies=erase_copies)

    def pending_requests(self) -> list:
        """The journal's requests not yet carried out (interrupted, or queued for `min_users_per_event`)."""
        return Journal(self.args.output_dir).pending()

    def reproduce_shard(self, k: int) -> dict[str, torch.Tensor]:
        """
        Train shard `k` from scratch on the samples the current ledger gives it, with the stored recipe and seed, and
        return its adapter weights (nothing is written). Under deterministic settings they equal the stored shard bit
        for bit: the controller's check that a version is what its recipe and ledger say.
        """
        self._require_forgettable()
        if not 0 <= k < self.apa_state.num_shards:
            raise ValueError(f"`k` must be a shard index in [0, {self.apa_state.num_shards}), got {k}.")
        ledger = self._ledger()
        valid = self._valid_dataset(ledger, self.apa_state.valid_users)
        return self._train_shards([k], ledger, valid)[k].adapter

    def deletion_token(self, user_id) -> str:
        return self.deletion_tokens([user_id])[0]

    def deletion_tokens(self, user_ids) -> list[str]:
        """
        The deletion token of a forgotten user, for the controller to give them: their salted digest, proof that the
        forget event that removed them named them, and proof that the current version holds them nowhere (no shard,
        no validation row), both against the roots of the published receipts. It holds no id and reveals nothing
        about other users (see `hf_recunlearn.receipts`). Check it with `hf-recunlearn verify --token`.

        A token can be issued again after later forgets: it then proves absence from the newer version.
        """
        """One token per id of `user_ids` (see `deletion_token`); the salt, the users tree and each event's request
        tree are built once for all of them."""
        self._require_forgettable()
        state, ledger = self.apa_state, self._ledger()
        events = [(set(e["users"]), e) for e in state.forgotten or []]
        users = requests = None
        tokens = []
        for user_id in user_ids:
            digest = ledger.hash_user(user_id)
            event = next((e for named, e in events if digest in named), None)
            if event is None:
                raise ValueError(
                    "`user_id` names no user that a forget event of this model removed (forget them first; tokens are "
                    "issued for forgotten users only, and the id is not echoed here)."
                )
            if users is None:
                users, requests = users_tree(state.ledger, state.valid_users, ledger.salt, state.version), {}
            if event["version"] not in requests:
                requests[event["version"]] = request_tree(event["users"], event["samples"], ledger.salt,
                                                          event["version"])  # fmt: skip
            tokens.append(issue_token(user_digest=digest, run_id=state.run_id, forgotten_in=event["version"],
                                      request=requests[event["version"]], checked_version=state.version,
                                      users=users))  # fmt: skip
        return tokens

    # ------------------------------------------------------------------------------------------------ forgetting
    def _require_forgettable(self) -> None:
        if self.apa_state is None:
            raise RuntimeError("No APA model yet: call `train()` first, or pass a saved APA directory as `model`.")
        if not self.apa_state.has_controller_state:
            raise ValueError(
                "This APA model has no controller state (ledger and recipe): it is a published version. Forget from "
                "the directory the training run wrote."
            )
        if self.train_dataset is None:
            raise ValueError(
                "Forgetting retrains shards on their remaining samples: pass the training set as `train_dataset`."
            )

    @contextlib.contextmanager
    def _exclusive(self, wait: bool):
        if not self.args.save_on_event or not self.is_world_process_zero():
            yield
            return
        with directory_lock(self.args.output_dir, wait=wait, reason=" (train/forget/push)"):
            yield

    def _reload_current_version(self) -> None:
        """Another process may have written a newer version while this trainer waited for the lock: start from it."""
        target = str(self.args.output_dir)
        if not self.args.save_on_event or not _is_apa_directory(target):
            return
        on_disk = read_version(target)  # recovers an interrupted switch first
        if on_disk is not None and (self._source_dir != target or on_disk != self.apa_state.version):
            self.apa_state = read_apa_directory(target)
            self._source_dir = target
            self._recommender = None

    def _ledger(self) -> ShardLedger:
        salt_id = self.apa_state.ledger["salt_id"]
        salt = _from_main_process(lambda: load_or_create_salt(salt_id, self.args.salt_dir))
        return ShardLedger.from_dict(self.apa_state.ledger, salt)

    def _carry_out_pending(self, *, flush: bool, erase_copies) -> APAEventReport:
        pending = Journal(self.args.output_dir).pending()
        users = {u for r in pending for u in r.users}
        k = int(self.args.min_users_per_event)
        if not flush and not any(r.flush for r in pending) and len(users) < k and any(r.users for r in pending):
            logger.warning(
                "Forget request recorded and queued: %d of the %d users `min_users_per_event` asks for are pending. "
                "Nothing is retrained until then (or until a forget with `flush=True` / `--flush`).", len(users), k,
            )  # fmt: skip
            report = APAEventReport("queued", self.apa_state.version, [], 0, 0, 0.0,
                                    num_samples=len(self._ledger_samples()), requests=len(pending),
                                    pending_users=len(users))  # fmt: skip
            self.reports.append(report)
            return report
        return self._carry_out([(r.id, set(r.samples), set(r.users)) for r in pending], erase_copies=erase_copies)

    def _ledger_samples(self) -> set[str]:
        return {s for shard in self.apa_state.ledger["shards"] for s, _ in shard}

    def _carry_out(self, requests, erase_copies) -> APAEventReport:
        """Retrain the shards that hold the requests' samples; write the version; erase copies; mark them done."""
        start = time.perf_counter()
        ledger = self._ledger()
        requested = set().union(*(s for _, s, _ in requests))
        samples = requested & self._ledger_samples()
        users = set().union(*(u for _, _, u in requests))
        valid_users = list(self.apa_state.valid_users or [])
        drop_valid = [i for i, u in enumerate(valid_users) if u in users]
        found: dict[int, set[str]] = {}
        for k, shard in enumerate(ledger.shards):
            hit = {s for s, _ in shard if s in samples}
            if hit:
                found[k] = hit
        if samples or drop_valid:
            report = self._retrain(ledger, found, samples, drop_valid, start, requests=len(requests),
                                   request=(users, requested))  # fmt: skip
        else:  # a crash after the switch: the version already holds the requests' effect
            report = APAEventReport("forget", self.apa_state.version, [], 0, 0, 0.0,
                                    num_samples=ledger.num_samples(), requests=len(requests))  # fmt: skip
            self.reports.append(report)
        if erase_copies is not None:
            erase_copies(users, requested)
        crash_point("forget:erased")
        ids = [rid for rid, _, _ in requests if rid is not None]
        if ids and self.is_world_process_zero():
            Journal(self.args.output_dir).mark_done(ids, self.apa_state.version)
        return report

    def _retrain(self, ledger, found, samples, drop_valid, start, requests: int, request) -> APAEventReport:
        new_ledger = ledger.remove(samples)
        affected = sorted(found)
        empty = [k for k in affected if not new_ledger.shards[k]]
        if empty:
            raise ValueError(
                f"Forgetting would leave shard(s) {empty} with no samples; an empty shard cannot be retrained. Use "
                "fewer, larger shards (`num_shards`) for data this small."
            )
        state = copy.copy(self.apa_state)
        keep = [i for i in range(len(state.valid_users or [])) if i not in set(drop_valid)]
        state.valid_users = [state.valid_users[i] for i in keep]
        if state.valid_reps.shape[0] == len(keep) + len(drop_valid) and len(state.valid_reps):
            state.valid_reps = state.valid_reps[keep].clone()
            state.valid_errors = state.valid_errors[:, keep].clone()
        results = self._train_shards(affected, new_ledger, self._valid_dataset(ledger, state.valid_users))
        state.shard_adapters = list(state.shard_adapters)
        state.shard_info = list(state.shard_info)
        state.valid_errors = state.valid_errors.clone()
        state.shard_centroids = state.shard_centroids.clone()
        state.aggregation = copy.deepcopy(state.aggregation)
        state.version = self.apa_state.version + 1
        for k, res in results.items():
            state.shard_adapters[k] = res.adapter
            state.shard_info[k] = {**res.info, "trained_in_version": state.version}
            if res.valid_errors.numel():
                state.valid_errors[k] = res.valid_errors
            state.shard_centroids[k] = res.centroid
        state.ledger = new_ledger.to_dict()
        users, requested = request
        state.forgotten = list(state.forgotten or []) + [
            {"version": state.version, "users": sorted(users), "samples": sorted(requested)}
        ]
        report = APAEventReport(
            event="forget",
            version=state.version,
            affected_shards=affected,
            samples_removed=len(samples),
            users_removed=ledger.num_users() - new_ledger.num_users(),
            seconds=0.0,
            shard_seconds={k: r.seconds for k, r in results.items()},
            num_processes=self.args.world_size,
            num_samples=new_ledger.num_samples(),
            requests=requests,
        )
        self._finish_event(state, report, start, changed=affected, request=request)
        self._forgotten_sample_hashes |= samples
        self.unlearning_runtime = report.seconds
        return report

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """
        Utility of the aggregated recommender on `eval_dataset` (default: the trainer's), with the configured
        aggregation, as `Trainer.evaluate` reports it: a dict of floats (a dict of datasets gives keys
        `{prefix}_{name}_{metric}`), logged and passed to the callbacks' `on_evaluate`.
        """
        data = self.eval_dataset if eval_dataset is None else eval_dataset
        if data is None:
            raise ValueError("Pass `eval_dataset` to `evaluate()` or to the trainer.")
        named = data.items() if isinstance(data, dict) else [(None, data)]
        metrics = {}
        for name, ds in named:
            prefix = metric_key_prefix if name is None else f"{metric_key_prefix}_{name}"
            metrics.update(self.predict(ds, metric_key_prefix=prefix).metrics)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test", batch_size: int | None = None):
        """
        P(like) for every row of `test_dataset` from the aggregated recommender, as `Trainer.predict` returns it: a
        `PredictionOutput` with `predictions` (P(like), shape `(n,)`), `label_ids` (when the data has `label`) and
        `metrics` (AUC/ACC/LogLoss and ms per sample, prefixed with `metric_key_prefix`).
        """
        from transformers import EvalPrediction
        from transformers.trainer_utils import PredictionOutput

        start = time.perf_counter()
        probs = self.recommender.predict(test_dataset, batch_size or self.args.per_device_eval_batch_size)
        seconds = time.perf_counter() - start
        labels = np.asarray(test_dataset["label"]) if "label" in getattr(test_dataset, "column_names", []) else None
        metrics = {f"{metric_key_prefix}_ms_per_sample": 1000.0 * seconds / max(1, len(probs))}
        if labels is not None:
            compute_metrics = self.compute_metrics or compute_utility_metrics
            values = compute_metrics(EvalPrediction(predictions=probs, label_ids=labels))
            metrics.update({f"{metric_key_prefix}_{k}": float(v) for k, v in values.items()})
        return PredictionOutput(predictions=probs, label_ids=labels, metrics=metrics)

    def save_pretrained(self, save_directory) -> None:
        """Write the current version to `save_directory` (layout in `hf_recunlearn.apa_recommender`)."""
        if self.apa_state is None:
            raise RuntimeError("No APA model to save yet: call `train()` first.")
        if not self.is_world_process_zero():
            return
        write_apa_directory(save_directory, self.apa_state, tokenizer=self.processing_class)

    def _versioned_push(self, repo_id: str, **kwargs):
        """The pushes of `push_to_hub`: the current version's APA directory, through `hf_recunlearn.hub.push`."""
        from ..hub import push

        kwargs.setdefault("base_model", self._card_base_model())
        kwargs["tags"] = self._card_tags(kwargs.get("tags"))

        def run():
            source = self._reusable_source()
            if source is not None:
                return push(source, repo_id, **kwargs)
            with tempfile.TemporaryDirectory() as tmp:
                self.save_pretrained(Path(tmp) / "apa")
                return push(Path(tmp) / "apa", repo_id, **kwargs)

        return run

    def push_to_hub(self, commit_message: str | None = None, blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs):  # fmt: skip
        """
        Push the current version to the Hub model repo `args.hub_model_id` (or `repo_id=`) as tag `vN`, with
        `Trainer.push_to_hub`'s arguments (see [`VersionedHubMixin.push_to_hub`]; `keep_history`, `metrics` and the
        card metadata go to `hf_recunlearn.hub.push`). Only the retrained shards, the aggregation state, the public
        metadata and the card are uploaded (never `controller/`), and after a forget event the earlier versions are
        purged from the Hub unless `keep_history=True`. Runs under the model directory's lock.

        Returns a `hf_recunlearn.hub.HubPushResult` (the version's `CommitInfo`; `None` on processes other than the
        main one).
        """
        if self.apa_state is None:
            raise RuntimeError("No APA model to push yet: call `train()` first.")
        if kwargs.get("repo_id") is None and not self.args.hub_model_id:
            raise ValueError("Pass `repo_id`, or set `hub_model_id` in the configuration, to push to the Hub.")
        return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """
        `Trainer`-style [`save_pretrained`] (default: `args.output_dir`) with the library's card; with
        `args.push_to_hub` (and not from inside the Trainer), the version is then pushed.
        """
        target = output_dir or self.args.output_dir
        source = self._reusable_source()
        if source is None or os.path.abspath(source) != os.path.abspath(target):
            self.save_pretrained(target)  # else `target` holds the current version already (written by the event)
        if self.args.should_save:
            self.create_model_card(output_dir=target)
        if self.args.push_to_hub and not _internal_call:
            self.push_to_hub(commit_message="Model save")

    # ------------------------------------------------------------------------------------------------ model card
    @property
    def num_trainable_parameters(self) -> int:
        """Parameters trained: the K shard adapters together (0 before `train()`)."""
        if self.apa_state is None:
            return 0
        return sum(t.numel() for adapter in self.apa_state.shard_adapters for t in adapter.values())

    def forget_request_summary(self) -> dict[str, Any]:
        """
        What the current version has forgotten, as the public may see it: the number of forget events and of users
        removed. No sample counts (with the public data set they narrow an event to one or two users), no digests.
        """
        lineage = self.apa_state.lineage if self.apa_state is not None else []
        forgets = [e for e in lineage if e.get("event") == "forget"]
        return {
            "num_forget_events": len(forgets),
            "num_forgotten_users": sum(int(e.get("users_removed", 0)) for e in forgets),
        }

    def method_hyperparameters(self) -> dict[str, Any]:
        """The APA configuration, without local paths, switches and seeds (the seeds stay with the controller)."""
        values = super().method_hyperparameters()
        for name in ("salt_dir", "save_on_event", "seed", "data_seed", "min_users_per_event"):
            values.pop(name, None)
        return values

    def _is_adapter_model(self) -> bool:
        return True  # every shard is a PEFT adapter on the base

    def _card_base_model(self) -> str | None:
        return self.apa_state.base_model if self.apa_state is not None else None

    def _card_inputs(self) -> dict[str, Any]:
        """The version's shards, partition and aggregation, its local lineage, and what was forgotten (counts)."""
        if self.apa_state is None:
            raise RuntimeError("No APA model to describe yet: call `train()` first.")
        state = self.apa_state
        versions = [
            {"version": e["version"], "tag": f"v{e['version']}", "event": e.get("event", ""), "status": "local",
             "shards_retrained": list(e.get("shards_trained", [])), "users_removed": int(e.get("users_removed", 0))}
            for e in public_lineage(state.lineage)
        ]  # fmt: skip
        meta = {"num_shards": state.num_shards, "partition": {"method": state.partition.get("method")},
                "aggregation": state.aggregation.to_dict()}  # fmt: skip
        return {
            "versions": versions,
            "apa_meta": meta,
            "forget_request": self.forget_request_summary(),
            "hyperparameters": self.method_hyperparameters(),
            "trainable_parameters": self.num_trainable_parameters,
        }

    # ------------------------------------------------------------------------------------------------ training
    def _valid_dataset(self, ledger: ShardLedger | None = None, valid_users: list[str] | None = None):
        """
        The validation set behind the aggregation state: the `validation_split` entry of `eval_dataset`, without the
        rows of users forgotten since (those whose digest is no longer in the state's `valid_users`).
        """
        data = self.eval_dataset
        valid = data.get(self.args.validation_split) if isinstance(data, dict) else None
        if valid is None or ledger is None or valid_users is None:
            return valid
        if not valid_users:  # a weighting without validation state
            return None
        if "user_id" not in valid.column_names:
            raise ValueError(f"`eval_dataset[{self.args.validation_split!r}]` needs a `user_id` column.")
        keep = set(valid_users)
        rows = [i for i, u in enumerate(valid["user_id"]) if ledger.hash_user(u) in keep]
        if len(rows) != len(valid_users):
            raise ValueError(
                f"`eval_dataset[{self.args.validation_split!r}]` holds {len(rows)} rows of the version's "
                f"{len(valid_users)} validation rows: pass the validation set the model was trained with."
            )
        return valid if len(rows) == len(valid) else valid.select(rows)

    def _shard_seed(self, k: int) -> int:
        return self.args.seed if self.args.shared_init else self.args.seed + k

    def _partition(self, train, reps) -> Partition:
        args = self.args
        if self._shard_assignment is None:
            return make_partition(
                args.partition_method,
                args.num_shards,
                num_samples=len(train),
                user_ids=list(train["user_id"]),
                reps=reps,
                max_shard_size=args.max_shard_size,
                seed=args.seed,
            )
        missing = [s for s in train["sample_id"] if str(s) not in self._shard_assignment]
        if missing:
            raise ValueError(f"`shard_assignment` has no shard for {len(missing)} training sample(s).")
        assignment = np.asarray([self._shard_assignment[str(s)] for s in train["sample_id"]], dtype=np.int64)
        if assignment.min() < 0 or assignment.max() >= args.num_shards:
            raise ValueError(f"`shard_assignment` values must be shard indices in [0, {args.num_shards}).")
        size = int(np.bincount(assignment, minlength=args.num_shards).max())
        return Partition(assignment, args.num_shards, "given", size, args.seed)

    def _train_all(self) -> APAEventReport:
        if self.train_dataset is None:
            raise ValueError("`train_dataset` is required to train the shard adapters.")
        args = self.args
        start = time.perf_counter()
        train = self.train_dataset
        # Only the adaptive weights read the validation set; other weightings keep (and publish) no state from it.
        needs_valid = args.aggregation_weights in ("adaptive", "major")
        valid = self._valid_dataset() if needs_valid else None
        if valid is None and needs_valid:
            raise ValueError(
                f"`aggregation_weights={args.aggregation_weights!r}` needs a validation set: pass `eval_dataset` as a "
                f"dict with a {args.validation_split!r} entry, e.g. `{{'{args.validation_split}': ds['valid'], "
                "'test': ds['test']}`, or choose `aggregation_weights='uniform'`."
            )
        if valid is not None and "user_id" not in valid.column_names:
            raise ValueError(
                f"`eval_dataset[{args.validation_split!r}]` needs a `user_id` column: a forgotten user's validation "
                "rows leave the aggregation state with them."
            )
        reps = None
        if args.partition_method in ("semantic", "semantic_user") and self._shard_assignment is None:
            reps = self._representations(train, args.partition_representation)
        partition, salt = _from_main_process(
            lambda: (self._partition(train, reps), load_or_create_salt(None, args.salt_dir))
        )
        ledger = ShardLedger.from_partition(partition, list(train["sample_id"]), list(train["user_id"]), salt)
        empty = [k for k, size in enumerate(ledger.sizes()) if size == 0]
        if empty:
            raise ValueError(f"Shard(s) {empty} got no samples; lower `num_shards` or raise `max_shard_size`.")
        valid_reps = (
            torch.from_numpy(self._representations(valid, args.routing_representation)) if valid is not None else None
        )
        results = self._train_shards(range(args.num_shards), ledger, valid)
        K = args.num_shards
        yes, no = answer_completions(train)
        state = APAState(
            shard_adapters=[results[k].adapter for k in range(K)],
            lora_config=results[0].lora_config,
            shard_info=[{**results[k].info, "trained_in_version": 1} for k in range(K)],
            ledger=ledger.to_dict(),
            partition={
                "method": args.partition_method if self._shard_assignment is None else "given",
                "num_shards": K,
                "max_shard_size": int(partition.max_shard_size),
                "seed": int(partition.seed),
                "representation": args.partition_representation if reps is not None else None,
            },
            aggregation=AggregationSpec(
                weights=args.aggregation_weights,
                level=args.aggregation_level,
                temperature=float(args.temperature),
                num_neighbors=int(args.num_neighbors),
                routing_representation=args.routing_representation,
                temperature_candidates=list(args.temperature_candidates) if args.temperature_candidates else None,
            ),
            valid_reps=valid_reps if valid_reps is not None else torch.zeros(0, 1),
            valid_errors=torch.stack([results[k].valid_errors for k in range(K)]),
            shard_centroids=torch.stack([results[k].centroid for k in range(K)]),
            answer={"yes": yes, "no": no, "max_prompt_length": int(args.max_prompt_length)},
            version=1,
            base_model=_model_name(self.model),
            valid_users=[ledger.hash_user(u) for u in valid["user_id"]] if valid is not None else [],
            run_id=str(uuid.uuid4()),
            forgotten=[],
            recipe={
                "config_class": type(args).__name__,
                "training_arguments": recipe_arguments(args),
                "lora_config": _lora_dict(results[0].lora_config),
                "base_model_fingerprint": fingerprint_model(self.model),
                "data": self.data_spec,
                "settings": {"salt_dir": args.salt_dir, "min_users_per_event": int(args.min_users_per_event)},
                "library_version": _library_version(),
                "launch": {"num_processes": args.world_size},
            },
        )
        report = APAEventReport(
            event="train",
            version=1,
            affected_shards=list(range(K)),
            samples_removed=0,
            users_removed=0,
            seconds=0.0,
            shard_seconds={k: r.seconds for k, r in results.items()},
            num_processes=self.args.world_size,
            num_samples=ledger.num_samples(),
        )
        self._finish_event(state, report, start, changed=None)
        return report

    def _finish_event(self, state: APAState, report: APAEventReport, start: float, changed, request=None) -> None:
        """Choose τ if asked, write the new version, then make it current (in that order: a failure changes nothing)."""
        valid = self._valid_dataset(self._ledger_of(state), state.valid_users)
        if state.aggregation.temperature_candidates and valid is not None:
            rec = APARecommender(self.model, self.processing_class, state)
            report.temperature_scores = rec.select_temperature(
                valid, state.aggregation.temperature_candidates, self.args.per_device_eval_batch_size
            )
        ledger_users = len({u for shard in state.ledger["shards"] for _, u in shard})
        entry = {
            "version": state.version,
            "event": report.event,
            "shards_trained": list(report.affected_shards),
            "num_samples": report.num_samples,
            "num_users": ledger_users,
            "samples_removed": report.samples_removed,
            "users_removed": report.users_removed,
            "requests": report.requests,
            "temperature": state.aggregation.temperature,
        }
        # Written with the version (without the time the write itself takes), so that the lineage on disk has it;
        # the in-memory entry gets the whole event's time below.
        entry["seconds"] = round(time.perf_counter() - start, 3)
        state.lineage = list(state.lineage) + [entry]
        if self.args.save_on_event and self.is_world_process_zero():
            target = str(self.args.output_dir)
            users, samples = request or (set(), set())
            event = ExactEvent(
                event=report.event, method=self._name.lower(), salt=self._ledger_of(state).salt,
                retrained=list(report.affected_shards), requests=report.requests, users_removed=report.users_removed,
                request_users=set(users), request_samples=set(samples),
            )  # fmt: skip
            write_apa_directory(
                target,
                state,
                tokenizer=self.processing_class,
                reuse_shards_from=self._reusable_source() if changed is not None else None,
                changed_shards=changed,
                event=event,
            )
            self._source_dir = target
        crash_point("forget:switched" if report.event == "forget" else "train:written")
        report.seconds = time.perf_counter() - start
        state.lineage[-1]["seconds"] = round(report.seconds, 3)
        self.apa_state = state
        self._recommender = None
        self.reports.append(report)
        self.log({
            "apa/version": state.version,
            "apa/shards_trained": len(report.affected_shards),
            "apa/samples_removed": report.samples_removed,
            "apa/users_removed": report.users_removed,
            "apa/num_samples": report.num_samples,
            "apa/seconds": report.seconds,
        })  # fmt: skip
        PartialState().wait_for_everyone()

    def _ledger_of(self, state: APAState) -> ShardLedger | None:
        if state.ledger is None:
            return None
        return ShardLedger.from_dict(state.ledger, load_or_create_salt(state.ledger["salt_id"], self.args.salt_dir))

    def _reusable_source(self) -> str | None:
        """The directory of the current version, if it still holds exactly that version."""
        if self._source_dir is None or self.apa_state is None:
            return None
        return self._source_dir if read_version(self._source_dir) == self.apa_state.version else None

    def _representations(self, data, kind: str) -> np.ndarray:
        return _on_all_processes(data, lambda rows: prompt_representations(
            self.model,
            self.processing_class,
            rows,
            kind,
            batch_size=self.args.per_device_eval_batch_size,
            max_prompt_length=self.args.max_prompt_length,
        ))  # fmt: skip

    def _train_shards(self, shard_ids, ledger: ShardLedger, valid) -> dict[int, _ShardResult]:
        """Train `shard_ids` from scratch on their ledger samples, one after the other (data-parallel in a launch)."""
        results = {}
        for k in sorted(shard_ids):
            results[k] = self._train_shard(k, ledger, valid)
            crash_point(f"shard:{k}:trained")
        crash_point("shards:trained")
        for r in results.values():
            self._shard_steps = getattr(self, "_shard_steps", 0) + r.info.pop("steps", 0)
            loss = r.info.pop("loss", None)
            if loss is not None:
                self._shard_losses = getattr(self, "_shard_losses", []) + [loss]
        return results

    def _train_shard(self, k: int, ledger: ShardLedger, valid) -> _ShardResult:
        """
        Train shard k's adapter from scratch on its ledger samples (in training-set order) with [`RecTrainer`], and
        score it on `valid` (the validation rows behind the aggregation state).

        peft initialises LoRA from the global RNG, so the seed is set right before `get_peft_model`; the result is a
        pure function of the base model, the shard's samples, the seed and the recipe.
        """
        args = self.args
        rows = ledger.shard_rows(k, self.train_dataset["sample_id"])
        shard_data = self.train_dataset.select(rows)
        seed = self._shard_seed(k)
        lora_config = copy.deepcopy(self._shard_peft_config or make_lora_config(self.model, args))
        with tempfile.TemporaryDirectory(prefix=f"apa-shard-{k:02d}-") as work:
            shard_args = dataclasses.replace(args, seed=seed, output_dir=work, save_strategy="no", push_to_hub=False)
            # QLoRA preparation of a quantized base (once), and input grads for gradient checkpointing.
            prepare_model_for_training(self.model, gradient_checkpointing=args.gradient_checkpointing)
            set_seed(seed)
            peft_model = get_peft_model(self.model, lora_config)
            try:
                start = time.perf_counter()
                trainer = RecTrainer(
                    peft_model,
                    args=shard_args,
                    data_collator=self._shard_data_collator,
                    train_dataset=shard_data,
                    processing_class=self.processing_class,
                    callbacks=[_ShardSteps(cb) for cb in self._shard_callbacks or []],
                )
                output = trainer.train()
                seconds = time.perf_counter() - start
                adapter = {n: t.detach().to("cpu").clone() for n, t in get_peft_model_state_dict(peft_model).items()}
                trained_config = copy.deepcopy(peft_model.peft_config["default"])
                if valid is not None:
                    yes, no = answer_completions(self.train_dataset)
                    answers = AnswerTokens.from_completions(self.processing_class, yes, no)
                    p = _on_all_processes(valid, lambda rows: score(
                        peft_model,
                        self.processing_class,
                        rows,
                        answers,
                        batch_size=args.per_device_eval_batch_size,
                        max_prompt_length=args.max_prompt_length,
                    ))  # fmt: skip
                    errors = torch.from_numpy(np.abs(np.asarray(valid["label"], dtype=np.float64) - p)).float()
                else:
                    errors = torch.zeros(0)
                del trainer
            finally:
                peft_model.unload()  # the base model gets its plain layers back
        centroid = torch.from_numpy(self._representations(shard_data, args.routing_representation).mean(0))
        info = {"num_samples": len(rows), "num_users": len(set(shard_data["user_id"])), "seed": seed,
                "steps": int(output.global_step), "loss": float(output.training_loss)}  # fmt: skip
        return _ShardResult(adapter, trained_config, errors, centroid, seconds, info)


class _ShardSteps(TrainerCallback):
    """
    A user callback as a shard's `Trainer` sees it: step, log and epoch events reach it (progress bars, loggers), but
    not `on_init_end` / `on_train_begin` / `on_train_end`, which the APA trainer sends once per `train()`.
    """

    def __init__(self, callback):
        self.callback = callback() if isinstance(callback, type) else callback

    def __getattribute__(self, name):
        if name.startswith("on_") and name not in ("on_init_end", "on_train_begin", "on_train_end"):
            return getattr(object.__getattribute__(self, "callback"), name)
        return object.__getattribute__(self, name)


def _describe(model) -> str:
    if isinstance(model, APARecommender):
        return f"the APA model {model.source_dir!r}" if model.source_dir else "the APA model"
    return repr(str(model))


def _lora_dict(config) -> dict:
    import json

    values = config.to_dict() if hasattr(config, "to_dict") else dict(config.__dict__)
    return json.loads(json.dumps(values, sort_keys=True, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))


def _library_version() -> str:
    from .. import __version__

    return __version__


def _is_apa_directory(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(model, CONFIG_NAME))


def _model_name(model) -> str | None:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else None
