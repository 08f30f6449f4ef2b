"""APA: exact unlearning by construction, with one LoRA adapter per data shard (paper §3).

`train()` partitions the training data, trains one adapter per shard with [`RecTrainer`] (TALLRec recipe), records
each shard's prediction errors on the validation set, and writes version 1. `forget()` removes samples or users from
the shard ledger and retrains only the shards that held them, from scratch and with the same seed, so a retrained
shard equals, bit for bit under deterministic settings, a shard trained on its remaining data alone.

Shard training is spread over processes under `accelerate launch --num_processes N` (shard i of the shards to train
goes to process i mod N; each process trains its shards as an ordinary single-process `Trainer` run and the adapters
are gathered), so the result does not depend on the number of processes.

`APATrainer` is an [`UnlearningTrainer`], hence a `transformers.Trainer`: it shares the configuration check, the
dataset checks and the matching of `forget_dataset` against `train_dataset`, the model card, `log` and the
callbacks, and the launch's process layout through `self.accelerator`. It replaces what only an approximate method
needs (a student adapter, forget/retain pairing, teacher outputs) through `UnlearningTrainer`'s setup hooks. As in
every `Trainer`, `trainer.state` is the `TrainerState` (events are logged to `trainer.state.log_history` under
`apa/...`); the APA model itself is `trainer.apa_state`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from peft import PeftModel, get_peft_model, get_peft_model_state_dict
from transformers import PreTrainedModel, set_seed

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
from ..hub import CITATIONS
from ..models import _prepare_tokenizer, load_model, prepare_model_for_training
from ..partition import ShardLedger, load_or_create_salt, make_partition, prompt_representations
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
        event (`str`): `"train"` or `"forget"`.
        version (`int`): the model version the event produced.
        affected_shards (`list[int]`): shards (re)trained.
        samples_removed (`int`): training samples removed from the ledger (0 for `"train"`).
        users_removed (`int`): users with no training sample left after the event (0 for `"train"`).
        seconds (`float`): wall time of the whole event (training, validation errors, writing the version).
        shard_seconds (`dict[int, float]`): training time of each (re)trained shard.
        num_samples (`int`): training samples in the ledger after the event.
        shard_processes (`dict[int, int]`): the process that trained each shard (all 0 in a single-process run).
        temperature_scores (`dict[float, float]`): validation AUC per τ candidate, when τ was chosen.
    """

    event: str
    version: int
    affected_shards: list[int]
    samples_removed: int
    users_removed: int
    seconds: float
    shard_seconds: dict[int, float] = field(default_factory=dict)
    num_samples: int = 0
    shard_processes: dict[int, int] = field(default_factory=dict)
    temperature_scores: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class _ShardResult:
    adapter: dict[str, torch.Tensor]
    lora_config: Any
    valid_errors: torch.Tensor
    centroid: torch.Tensor
    seconds: float
    info: dict
    process: int = 0


# Environment variables through which launchers (torchrun / accelerate, MPI) tell a process it is one of several.
_DISTRIBUTED_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
    "PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
    "MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK",
)  # fmt: skip


@contextlib.contextmanager
def _single_process_training(active: bool):
    """
    Inside a multi-process launch, make the `Trainer`s created in this block train on this process alone.

    A shard is trained by exactly one process, so its `Trainer` must not wrap the model in DDP or split the shard's
    batches over processes. `TrainingArguments` reads the launch from the environment and resets accelerate's state,
    so the launcher's variables are hidden for the duration (the process group itself stays up for gathering).
    """
    if not active:
        yield
        return
    from accelerate.state import AcceleratorState, PartialState

    saved_env = {k: os.environ.pop(k) for k in _DISTRIBUTED_ENV if k in os.environ}
    saved_partial, saved_acc = dict(PartialState._shared_state), dict(AcceleratorState._shared_state)
    local_rank = int(saved_env.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    AcceleratorState._reset_state(reset_partial_state=True)
    # TrainingArguments warns that the process group is up but unused for DDP: here that is the intent.
    args_logger = logging.getLogger("transformers.training_args")
    level = args_logger.level
    args_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        args_logger.setLevel(level)
        os.environ.update(saved_env)
        AcceleratorState._reset_state(reset_partial_state=True)
        PartialState._shared_state.update(saved_partial)
        AcceleratorState._shared_state.update(saved_acc)


def _broadcast(obj, world: int):
    if world == 1:
        return obj
    payload = [obj]
    torch.distributed.broadcast_object_list(payload, src=0)
    return payload[0]


class APATrainer(UnlearningTrainer):
    """
    Trainer for APA: K shard LoRA adapters, sample-adaptive aggregation, exact forgetting by shard retraining.

    An [`UnlearningTrainer`] for an exact method: there is no student and no teacher; `train()` trains the shard
    adapters (each an ordinary single-process [`RecTrainer`] run) and returns an [`APAEventReport`], and
    [`forget`] retrains only the shards that held the forgotten data. Events are logged through `Trainer.log`
    (`apa/version`, `apa/shards_trained`, `apa/samples_removed`, `apa/users_removed`, `apa/num_samples`,
    `apa/seconds`), and `create_model_card` describes the version by counts and salted hashes.

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
    """

    _tag_names = ["hf_recunlearn", "apa", "unlearning", "exact-unlearning"]
    _name = "APA"
    _paper = {
        "title": CITATIONS["apa"]["title"],
        "url": f"https://arxiv.org/abs/{CITATIONS['apa']['arxiv']}",
        "citation": CITATIONS["apa"]["bibtex"],
    }
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
        return f"{self._name.lower()}-model"

    def _load_model(self, model, processing_class):
        """The base model and tokenizer; an existing APA model (directory or recommender) also gives its state."""
        if isinstance(model, APARecommender):
            self.apa_state = copy.deepcopy(model.state)
            self._source_dir = model.source_dir
            return model.model, processing_class or model.tokenizer
        if not _is_apa_directory(model):
            return super()._load_model(model, processing_class)
        self.apa_state = read_apa_directory(model)
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
        return base, processing_class or tokenizer

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

    def train(self, resume_from_checkpoint=None, **kwargs) -> APAEventReport:
        """
        Train every shard adapter (unless `model` was an existing APA model), then forget `forget_dataset` if given.

        Returns the report of the last event; all reports are in `self.reports`.
        """
        if resume_from_checkpoint is not None:
            raise ValueError("`resume_from_checkpoint` is not supported: APA versions are complete models; pass the "
                             "saved directory as `model` instead.")  # fmt: skip
        report = None
        if self.apa_state is None:
            report = self._train_all()
        if self.forget_dataset is not None:
            report = self.forget(sample_ids=list(self.forget_dataset["sample_id"]))
            self.forget_dataset = None  # consumed: the ledger no longer holds these samples
        if report is None:
            raise ValueError("Nothing to do: the model is already trained and no `forget_dataset` was given.")
        return report

    def forget(self, user_ids: Sequence | None = None, sample_ids: Sequence | None = None) -> APAEventReport:
        """
        Forget users and/or samples exactly: drop them from the ledger and retrain only the shards that held them.

        A request naming several users or samples retrains each affected shard once. Ids the ledger does not hold
        are refused before anything changes; a failure at any point leaves the previous version (in memory and on
        disk) intact.
        """
        if self.apa_state is None:
            raise RuntimeError("No APA model yet: call `train()` first, or pass a saved APA directory as `model`.")
        if self.train_dataset is None:
            raise ValueError(
                "Forgetting retrains shards on their remaining samples: pass the training set as `train_dataset`."
            )
        start = time.perf_counter()
        world, rank = self._process_layout()
        salt = _broadcast(
            load_or_create_salt(self.apa_state.ledger["salt_id"], self.args.salt_dir) if rank == 0 else None, world
        )
        ledger = ShardLedger.from_dict(self.apa_state.ledger, salt)
        found = ledger.locate(user_ids=user_ids, sample_ids=sample_ids)
        removed = set().union(*found.values())
        new_ledger = ledger.remove(removed)
        affected = sorted(found)
        empty = [k for k in affected if not new_ledger.shards[k]]
        if empty:
            raise ValueError(
                f"Forgetting would leave shard(s) {empty} with no samples; an empty shard cannot be retrained. Use "
                "fewer, larger shards (`num_shards`) for data this small."
            )
        results = self._train_shards(affected, new_ledger)
        state = copy.copy(self.apa_state)
        state.shard_adapters = list(state.shard_adapters)
        state.shard_info = list(state.shard_info)
        state.valid_errors = state.valid_errors.clone()
        state.shard_centroids = state.shard_centroids.clone()
        state.aggregation = copy.deepcopy(state.aggregation)
        state.version = self.apa_state.version + 1
        for k, res in results.items():
            state.shard_adapters[k] = res.adapter
            state.shard_info[k] = {**res.info, "trained_in_version": state.version}
            state.valid_errors[k] = res.valid_errors
            state.shard_centroids[k] = res.centroid
        state.ledger = new_ledger.to_dict()
        users_removed = ledger.num_users() - new_ledger.num_users()
        report = APAEventReport(
            event="forget",
            version=state.version,
            affected_shards=affected,
            samples_removed=len(removed),
            users_removed=users_removed,
            seconds=0.0,
            shard_seconds={k: r.seconds for k, r in results.items()},
            shard_processes={k: r.process for k, r in results.items()},
            num_samples=new_ledger.num_samples(),
        )
        self._finish_event(state, report, start, changed=affected)
        self._forgotten_sample_hashes |= removed
        self.unlearning_runtime = report.seconds
        return report

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """
        Utility of the aggregated recommender on `eval_dataset` (default: the trainer's), with the configured
        aggregation. A dict of datasets gives keys `{prefix}_{name}_{metric}`, as `Trainer.evaluate` does.
        """
        from transformers import EvalPrediction

        data = self.eval_dataset if eval_dataset is None else eval_dataset
        if data is None:
            raise ValueError("Pass `eval_dataset` to `evaluate()` or to the trainer.")
        named = data.items() if isinstance(data, dict) else [(None, data)]
        metrics = {}
        for name, ds in named:
            prefix = metric_key_prefix if name is None else f"{metric_key_prefix}_{name}"
            start = time.perf_counter()
            probs = self.predict(ds)
            seconds = time.perf_counter() - start
            labels = np.asarray(ds["label"])
            compute_metrics = self.compute_metrics or compute_utility_metrics
            values = compute_metrics(EvalPrediction(predictions=probs, label_ids=labels))
            metrics.update({f"{prefix}_{k}": float(v) for k, v in values.items()})
            metrics[f"{prefix}_ms_per_sample"] = 1000.0 * seconds / max(1, len(ds))
        return metrics

    def predict(self, dataset, batch_size: int | None = None) -> np.ndarray:
        """P(like) for every row of `dataset` from the aggregated recommender."""
        return self.recommender.predict(dataset, batch_size or self.args.per_device_eval_batch_size)

    def is_world_process_zero(self) -> bool:
        """Whether this is the main process of the launch (the one that writes versions and cards)."""
        return self._process_layout()[1] == 0

    def _process_layout(self) -> tuple[int, int]:
        """
        `(num_processes, process_index)` of the launch, from the `Trainer`'s accelerator; `(1, 0)` for a plain
        `python` run.

        One exception: launched as several processes on a machine without GPUs and without `use_cpu=True`,
        accelerate sets up the process group but reports a single process, so `torch.distributed` is asked then.
        """
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        if world == 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        return world, rank

    def save_pretrained(self, save_directory) -> None:
        """Write the current version to `save_directory` (layout in `hf_recunlearn.apa_recommender`)."""
        if self.apa_state is None:
            raise RuntimeError("No APA model to save yet: call `train()` first.")
        if not self.is_world_process_zero():
            return
        write_apa_directory(save_directory, self.apa_state, tokenizer=self.processing_class)

    def push_to_hub(self, repo_id: str, *, keep_history: bool = False, private: bool = False, **kwargs):
        """
        Push the current version to the Hub model repo `repo_id` as tag `vN` (see `hf_recunlearn.hub.push` for the
        other keyword arguments). Call it after every `train()` / `forget()`: only the retrained shards, the
        aggregation state, the metadata and the card are uploaded, and after a forget event the earlier versions
        are purged from the Hub (tags deleted, history squashed) unless `keep_history=True`.

        Returns a `hf_recunlearn.hub.HubPushResult` (`None` on processes other than the main one).
        """

        from ..hub import push

        if self.apa_state is None:
            raise RuntimeError("No APA model to push yet: call `train()` first.")
        if not self.is_world_process_zero():
            return None
        source = self._reusable_source()
        if source is not None:
            return push(source, repo_id, keep_history=keep_history, private=private, **kwargs)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "apa")
            return push(Path(tmp) / "apa", repo_id, keep_history=keep_history, private=private, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """`Trainer`-style alias of [`save_pretrained`] (default: `args.output_dir`)."""
        self.save_pretrained(output_dir or self.args.output_dir)

    # ------------------------------------------------------------------------------------------------ model card
    @property
    def num_trainable_parameters(self) -> int:
        """Parameters trained: the K shard adapters together (0 before `train()`)."""
        if self.apa_state is None:
            return 0
        return sum(t.numel() for adapter in self.apa_state.shard_adapters for t in adapter.values())

    def forget_request_summary(self) -> dict[str, Any]:
        """
        What the current version has forgotten, from its lineage: counts only, and a SHA-256 over the sorted salted
        ledger hashes of the samples forgotten through this trainer (the data owner, who holds the salt, can check
        it; nobody else can test guesses of ids against it). Never an id.
        """
        lineage = self.apa_state.lineage if self.apa_state is not None else []
        forgets = [e for e in lineage if e.get("event") == "forget"]
        summary: dict[str, Any] = {
            "num_forget_events": len(forgets),
            "num_forgotten_samples": sum(int(e.get("samples_removed", 0)) for e in forgets),
            "num_forgotten_users": sum(int(e.get("users_removed", 0)) for e in forgets),
            "num_retained_samples": int(lineage[-1]["num_samples"]) if lineage else 0,
        }
        if self._forgotten_sample_hashes:
            digest = hashlib.sha256("\n".join(sorted(self._forgotten_sample_hashes)).encode()).hexdigest()
            summary["forgotten_sample_hashes_sha256"] = digest
        return summary

    def method_hyperparameters(self) -> dict[str, Any]:
        """The APA configuration, without the local paths and switches that are not hyperparameters."""
        values = super().method_hyperparameters()
        for name in ("salt_dir", "save_on_event"):
            values.pop(name, None)
        return values

    def _is_adapter_model(self) -> bool:
        return True  # every shard is a PEFT adapter on the base

    def _model_card_intro(self, base_model: str | None) -> list[str]:
        state = self.apa_state
        shards = f"{state.num_shards} LoRA shard adapters" if state is not None else "LoRA shard adapters"
        aggregation = (
            f" ({state.aggregation.weights} weights, level {state.aggregation.level})" if state is not None else ""
        )
        return [
            f"This model is an LLM-based recommender built for exact unlearning with **{self._name}**"
            + self._paper_reference(),
            f"It answers Yes/No to \"will this user like item X?\" with {shards}"
            + (f" on `{base_model}`" if base_model else "")
            + f", aggregated per sample{aggregation}, trained with hf_recunlearn (`{type(self).__name__}`). "
            "Forgetting retrains only the shards that held the forgotten data, so the result equals a model never "
            "trained on it." + (f" This is version {state.version}." if state is not None else ""),
        ]

    # ------------------------------------------------------------------------------------------------ training
    def _valid_dataset(self):
        data = self.eval_dataset
        if isinstance(data, dict):
            return data.get(self.args.validation_split)
        return None

    def _shard_seed(self, k: int) -> int:
        return self.args.seed if self.args.shared_init else self.args.seed + k

    def _train_all(self) -> APAEventReport:
        if self.train_dataset is None:
            raise ValueError("`train_dataset` is required to train the shard adapters.")
        args = self.args
        start = time.perf_counter()
        world, rank = self._process_layout()
        train = self.train_dataset
        valid = self._valid_dataset()
        if valid is None and args.aggregation_weights in ("adaptive", "major"):
            raise ValueError(
                f"`aggregation_weights={args.aggregation_weights!r}` needs a validation set: pass `eval_dataset` as a "
                f"dict with a {args.validation_split!r} entry, e.g. `{{'{args.validation_split}': ds['valid'], "
                "'test': ds['test']}`, or choose `aggregation_weights='uniform'`."
            )
        reps = None
        if args.partition_method in ("semantic", "semantic_user"):
            reps = self._representations(train, args.partition_representation)
        if rank == 0:
            partition = make_partition(
                args.partition_method,
                args.num_shards,
                num_samples=len(train),
                user_ids=list(train["user_id"]),
                reps=reps,
                max_shard_size=args.max_shard_size,
                seed=args.seed,
            )
            salt = load_or_create_salt(None, args.salt_dir)
        else:
            partition, salt = None, None
        partition, salt = _broadcast((partition, salt), world)
        ledger = ShardLedger.from_partition(partition, list(train["sample_id"]), list(train["user_id"]), salt)
        empty = [k for k, size in enumerate(ledger.sizes()) if size == 0]
        if empty:
            raise ValueError(f"Shard(s) {empty} got no samples; lower `num_shards` or raise `max_shard_size`.")
        self._valid_reps = (
            torch.from_numpy(self._representations(valid, args.routing_representation)) if valid is not None else None
        )
        results = self._train_shards(range(args.num_shards), ledger)
        K = args.num_shards
        yes, no = answer_completions(train)
        state = APAState(
            shard_adapters=[results[k].adapter for k in range(K)],
            lora_config=results[0].lora_config,
            shard_info=[{**results[k].info, "trained_in_version": 1} for k in range(K)],
            ledger=ledger.to_dict(),
            partition={
                "method": partition.method,
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
            valid_reps=self._valid_reps if self._valid_reps is not None else torch.zeros(0, 1),
            valid_errors=torch.stack([results[k].valid_errors for k in range(K)]),
            shard_centroids=torch.stack([results[k].centroid for k in range(K)]),
            answer={"yes": yes, "no": no, "max_prompt_length": int(args.max_prompt_length)},
            version=1,
            base_model=_model_name(self.model),
            partition_centroids=torch.from_numpy(partition.centroids) if partition.centroids is not None else None,
        )
        report = APAEventReport(
            event="train",
            version=1,
            affected_shards=list(range(K)),
            samples_removed=0,
            users_removed=0,
            seconds=0.0,
            shard_seconds={k: r.seconds for k, r in results.items()},
            shard_processes={k: r.process for k, r in results.items()},
            num_samples=ledger.num_samples(),
        )
        self._finish_event(state, report, start, changed=None)
        return report

    def _finish_event(self, state: APAState, report: APAEventReport, start: float, changed) -> None:
        """Choose τ if asked, write the new version, then make it current (in that order: a failure changes nothing)."""
        valid = self._valid_dataset()
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
            "temperature": state.aggregation.temperature,
        }
        # Written with the version (without the time the write itself takes), so that the lineage on disk, and on
        # the Hub, has it; the in-memory entry gets the whole event's time below.
        entry["seconds"] = round(time.perf_counter() - start, 3)
        state.lineage = list(state.lineage) + [entry]
        if self.args.save_on_event and self.is_world_process_zero():
            target = str(self.args.output_dir)
            write_apa_directory(
                target,
                state,
                tokenizer=self.processing_class,
                reuse_shards_from=self._reusable_source() if changed is not None else None,
                changed_shards=changed,
            )
            self._source_dir = target
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
        world, _ = self._process_layout()
        if world > 1:
            torch.distributed.barrier()

    def _reusable_source(self) -> str | None:
        """The directory of the current version, if it still holds exactly that version."""
        if self._source_dir is None or self.apa_state is None:
            return None
        return self._source_dir if read_version(self._source_dir) == self.apa_state.version else None

    def _representations(self, data, kind: str) -> np.ndarray:
        return prompt_representations(
            self.model,
            self.processing_class,
            data,
            kind,
            batch_size=self.args.per_device_eval_batch_size,
            max_prompt_length=self.args.max_prompt_length,
        )

    def _train_shards(self, shard_ids, ledger: ShardLedger) -> dict[int, _ShardResult]:
        """Train `shard_ids` from scratch on their ledger samples, spread over the launch's processes."""
        world, rank = self._process_layout()
        shard_ids = sorted(shard_ids)
        mine = [k for i, k in enumerate(shard_ids) if i % world == rank]
        results = {}
        logger.info(f"Process {rank} of {world} trains shard(s) {mine}.")
        with _single_process_training(world > 1):
            for k in mine:
                results[k] = self._train_shard(k, ledger)
                results[k].process = rank
        if world > 1:
            gathered = [None] * world
            torch.distributed.all_gather_object(gathered, results)
            results = {k: r for part in gathered for k, r in part.items()}
        return dict(sorted(results.items()))

    def _train_shard(self, k: int, ledger: ShardLedger) -> _ShardResult:
        """
        Train shard k's adapter from scratch on its ledger samples (in training-set order) with [`RecTrainer`].

        peft initialises LoRA from the global RNG, so the seed is set right before `get_peft_model`; the result is a
        pure function of the base model, the shard's samples, the seed and the config.
        """
        args = self.args
        rows = ledger.shard_rows(k, self.train_dataset["sample_id"])
        shard_data = self.train_dataset.select(rows)
        seed = self._shard_seed(k)
        lora_config = copy.deepcopy(self._shard_peft_config or make_lora_config(self.model, args))
        with tempfile.TemporaryDirectory(prefix=f"apa-shard-{k:02d}-") as work:
            shard_args = dataclasses.replace(args, seed=seed, output_dir=work, save_strategy="no")
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
                    callbacks=self._shard_callbacks,
                )
                trainer.train()
                seconds = time.perf_counter() - start
                adapter = {n: t.detach().to("cpu").clone() for n, t in get_peft_model_state_dict(peft_model).items()}
                trained_config = copy.deepcopy(peft_model.peft_config["default"])
                valid = self._valid_dataset()
                if valid is not None:
                    yes, no = answer_completions(self.train_dataset)
                    answers = AnswerTokens.from_completions(self.processing_class, yes, no)
                    p = score(
                        peft_model,
                        self.processing_class,
                        valid,
                        answers,
                        batch_size=args.per_device_eval_batch_size,
                        max_prompt_length=args.max_prompt_length,
                    )
                    errors = torch.from_numpy(np.abs(np.asarray(valid["label"], dtype=np.float64) - p)).float()
                else:
                    errors = torch.zeros(0)
                del trainer
            finally:
                peft_model.unload()  # the base model gets its plain layers back
        centroid = torch.from_numpy(self._representations(shard_data, args.routing_representation).mean(0))
        info = {"num_samples": len(rows), "num_users": len(set(shard_data["user_id"])), "seed": seed}
        return _ShardResult(adapter, trained_config, errors, centroid, seconds, info)


def _is_apa_directory(model) -> bool:
    return isinstance(model, (str, os.PathLike)) and os.path.isfile(os.path.join(model, CONFIG_NAME))


def _model_name(model) -> str | None:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else None
