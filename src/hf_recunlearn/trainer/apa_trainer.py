"""APA: exact unlearning by construction, with one LoRA adapter per data shard (paper §3).

`train()` partitions the training data, trains one adapter per shard with [`RecTrainer`] (TALLRec recipe), records
each shard's prediction errors on the validation set, and writes version 1. `forget()` removes samples or users from
the shard ledger and retrains only the shards that held them, from scratch and with the same seed, so a retrained
shard equals, bit for bit under deterministic settings, a shard trained on its remaining data alone.

Shard training is spread over processes under `accelerate launch --num_processes N` (shard i of the shards to train
goes to process i mod N; each process trains its shards as an ordinary single-process `Trainer` run and the adapters
are gathered), so the result does not depend on the number of processes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
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
from ..metrics import utility_metrics
from ..models import _prepare_tokenizer, load_model
from ..partition import ShardLedger, load_or_create_salt, make_partition, prompt_representations
from ..scoring import AnswerTokens, score
from .apa_config import APAConfig
from .rec_trainer import RecTrainer, make_lora_config


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


def _process_info() -> tuple[int, int]:
    """
    `(num_processes, process_index)` of the current launch; `(1, 0)` for a plain `python` run.

    Read from `torch.distributed`, initialising it through accelerate when a launcher (torchrun, `accelerate
    launch`) started several processes: on a machine without GPUs accelerate's own state reports a single process
    even then, so it is not asked for the count.
    """
    world = max(int(os.environ.get(k, 1)) for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if world <= 1:
        return 1, 0
    import torch.distributed as dist

    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_world_size(), dist.get_rank()


def _broadcast(obj, world: int):
    if world == 1:
        return obj
    payload = [obj]
    torch.distributed.broadcast_object_list(payload, src=0)
    return payload[0]


class APATrainer:
    """
    Trainer for APA: K shard LoRA adapters, sample-adaptive aggregation, exact forgetting by shard retraining.

    Args:
        model (`str`, `PreTrainedModel` or `APARecommender`):
            The base model (a model id, path or loaded model; not PEFT-wrapped), or an existing APA model to forget
            from: a directory written by `APATrainer` / `APARecommender.save_pretrained`, or an `APARecommender`.
        args (`APAConfig`, *optional*): configuration; `output_dir` receives a new version after every event.
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
        callbacks (*optional*): passed to every shard's `Trainer`.
        optimizers: must be `(None, None)`: every shard builds its own optimizer.
        forget_dataset (`Dataset`, *optional*): samples to forget (`sample_id` column); [`train`] forgets them after
            training (or right away when `model` is an existing APA model).
        retain_dataset: accepted for the unlearning-trainer interface and ignored: the ledger defines what remains.
        peft_config (`LoraConfig`, *optional*): shard adapter settings (default: from `args`).
    """

    _tag_names = ["hf_recunlearn", "apa", "unlearning", "exact-unlearning"]
    _config_class = APAConfig

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
        self.args = args or self._config_class(output_dir=f"{self._tag_names[1]}-model")
        if not isinstance(self.args, APAConfig):
            raise TypeError(f"`args` must be an `APAConfig`, got {type(self.args).__name__}.")
        if optimizers != (None, None):
            raise ValueError("`optimizers` is not supported by APA: every shard adapter builds its own optimizer.")
        if retain_dataset is not None:
            warnings.warn(
                "`retain_dataset` is ignored by APATrainer: the shard ledger determines the retained samples. "
                "Pass the full `train_dataset` instead (and drop `retain_dataset` to silence this warning).",
                stacklevel=2,
            )
        self.state: APAState | None = None
        source_dir = None
        if isinstance(model, APARecommender):
            self.state = copy.deepcopy(model.state)
            source_dir = model.source_dir
            processing_class = processing_class or model.tokenizer
            model = model.model
        elif isinstance(model, (str, os.PathLike)):
            if os.path.isfile(os.path.join(model, CONFIG_NAME)):
                self.state = read_apa_directory(model)
                source_dir = str(model)
                if not self.state.base_model:
                    raise ValueError(
                        f"{str(model)!r} records no base model name; load it with `APARecommender.from_pretrained(dir, "
                        "base_model=...)` and pass the recommender as `model`."
                    )
                model, tokenizer = load_model(self.state.base_model)
                if os.path.isfile(os.path.join(source_dir, "tokenizer_config.json")):
                    from transformers import AutoTokenizer

                    tokenizer = _prepare_tokenizer(AutoTokenizer.from_pretrained(source_dir), model)
            else:
                model, tokenizer = load_model(model)
            processing_class = processing_class or tokenizer
        if isinstance(model, PeftModel) or hasattr(model, "peft_config"):
            raise ValueError(
                "`model` is already a PEFT model. APA trains its own shard adapters on the frozen base: pass the base "
                "model (e.g. `peft_model.unload()` or the base model id)."
            )
        if not isinstance(model, PreTrainedModel):
            raise TypeError(f"`model` must be a model id, a path or a `PreTrainedModel`, got {type(model).__name__}.")
        if processing_class is None:
            raise ValueError("`processing_class` (the tokenizer) is required when `model` is a loaded model.")
        if train_dataset is not None:
            missing = [c for c in REQUIRED_COLUMNS if c not in train_dataset.column_names]
            if missing:
                raise ValueError(
                    f"`train_dataset` is missing columns {missing}; APA needs {list(REQUIRED_COLUMNS)} (the ledger keys "
                    "shards by `sample_id` and `user_id`). Build it with `hf_recunlearn.data.build_datasets`."
                )
        self.model = model
        self.processing_class = processing_class
        self.data_collator = data_collator
        self.train_dataset = train_dataset
        self.eval_dataset = eval_dataset
        self.compute_metrics = compute_metrics
        self.callbacks = callbacks
        self.forget_dataset = forget_dataset
        self.retain_dataset = retain_dataset
        self.peft_config = peft_config
        self.reports: list[APAEventReport] = []
        self._recommender: APARecommender | None = None
        # The directory holding the current version, if any: unchanged shards are copied from it byte for byte.
        self._source_dir: str | None = source_dir

    # ------------------------------------------------------------------------------------------------ public API
    @property
    def recommender(self) -> APARecommender:
        """The aggregated recommender of the current version."""
        if self.state is None:
            raise RuntimeError("No APA model yet: call `train()` first.")
        if self._recommender is None or self._recommender.state is not self.state:
            self._recommender = APARecommender(self.model, self.processing_class, self.state)
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
        if self.state is None:
            report = self._train_all()
        if self.forget_dataset is not None:
            if "sample_id" not in self.forget_dataset.column_names:
                raise ValueError("`forget_dataset` needs a `sample_id` column naming the training samples to forget.")
            sample_ids = list(self.forget_dataset["sample_id"])
            report = self.forget(sample_ids=sample_ids)
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
        if self.state is None:
            raise RuntimeError("No APA model yet: call `train()` first, or pass a saved APA directory as `model`.")
        if self.train_dataset is None:
            raise ValueError(
                "Forgetting retrains shards on their remaining samples: pass the training set as `train_dataset`."
            )
        start = time.perf_counter()
        world, rank = _process_info()
        salt = _broadcast(
            load_or_create_salt(self.state.ledger["salt_id"], self.args.salt_dir) if rank == 0 else None, world
        )
        ledger = ShardLedger.from_dict(self.state.ledger, salt)
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
        state = copy.copy(self.state)
        state.shard_adapters = list(state.shard_adapters)
        state.shard_info = list(state.shard_info)
        state.valid_errors = state.valid_errors.clone()
        state.shard_centroids = state.shard_centroids.clone()
        state.aggregation = copy.deepcopy(state.aggregation)
        state.version = self.state.version + 1
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
            if self.compute_metrics is not None:
                values = self.compute_metrics(EvalPrediction(predictions=probs, label_ids=labels))
            else:
                values = utility_metrics(labels, probs)
            metrics.update({f"{prefix}_{k}": float(v) for k, v in values.items()})
            metrics[f"{prefix}_ms_per_sample"] = 1000.0 * seconds / max(1, len(ds))
        return metrics

    def predict(self, dataset, batch_size: int | None = None) -> np.ndarray:
        """P(like) for every row of `dataset` from the aggregated recommender."""
        return self.recommender.predict(dataset, batch_size or self.args.per_device_eval_batch_size)

    def is_world_process_zero(self) -> bool:
        """Whether this is the main process of the launch (the one that writes versions), as in `Trainer`."""
        return _process_info()[1] == 0

    def save_pretrained(self, save_directory) -> None:
        """Write the current version to `save_directory` (layout in `hf_recunlearn.apa_recommender`)."""
        if self.state is None:
            raise RuntimeError("No APA model to save yet: call `train()` first.")
        if _process_info()[1] != 0:
            return
        write_apa_directory(save_directory, self.state, tokenizer=self.processing_class)

    def push_to_hub(self, repo_id: str, *, keep_history: bool = False, private: bool = False, **kwargs):
        """
        Push the current version to the Hub model repo `repo_id` as tag `vN` (see `hf_recunlearn.hub.push` for the
        other keyword arguments). Call it after every `train()` / `forget()`: only the retrained shards, the
        aggregation state, the metadata and the card are uploaded, and after a forget event the earlier versions
        are purged from the Hub (tags deleted, history squashed) unless `keep_history=True`.

        Returns a `hf_recunlearn.hub.HubPushResult` (`None` on processes other than the main one).
        """

        from ..hub import push

        if self.state is None:
            raise RuntimeError("No APA model to push yet: call `train()` first.")
        if _process_info()[1] != 0:
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
        world, rank = _process_info()
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
        if self.args.save_on_event and _process_info()[1] == 0:
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
        self.state = state
        self._recommender = None
        self.reports.append(report)
        world, _ = _process_info()
        if world > 1:
            torch.distributed.barrier()

    def _reusable_source(self) -> str | None:
        """The directory of the current version, if it still holds exactly that version."""
        if self._source_dir is None or self.state is None:
            return None
        return self._source_dir if read_version(self._source_dir) == self.state.version else None

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
        world, rank = _process_info()
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
        lora_config = copy.deepcopy(self.peft_config or make_lora_config(self.model, args))
        with tempfile.TemporaryDirectory(prefix=f"apa-shard-{k:02d}-") as work:
            shard_args = dataclasses.replace(args, seed=seed, output_dir=work, save_strategy="no")
            set_seed(seed)
            peft_model = get_peft_model(self.model, lora_config)
            try:
                start = time.perf_counter()
                trainer = RecTrainer(
                    peft_model,
                    args=shard_args,
                    data_collator=self.data_collator,
                    train_dataset=shard_data,
                    processing_class=self.processing_class,
                    callbacks=self.callbacks,
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


def _model_name(model) -> str | None:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name) if name else None
