"""The base of every unlearning method: forget/retain wiring, fixed teacher outputs, metric logging, model cards."""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import EvalPrediction, PreTrainedModel, Trainer, set_seed
from transformers.trainer_utils import TrainOutput

from ..audit import ForgetAudit
from ..losses import token_cross_entropy
from ..metrics import mean_confidence, utility_metrics
from ..models import count_trainable_parameters, is_quantized, is_seq2seq, load_model, prepare_model_for_training
from ..scoring import AnswerTokens, answer_logits, make_collator, map_batches, yes_no_logits
from .base_config import UnlearningConfig
from .hub_mixin import VersionedHubMixin
from .rec_trainer import RecTrainer, make_lora_config
from .stopping import AuditStoppingCallback


logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("prompt", "completion", "label")
# Name of the student adapter when the original's own adapter stays next to it (a quantized original).
STUDENT_ADAPTER = "student"


def compute_unlearning_metrics(eval_pred: EvalPrediction) -> dict[str, float]:
    """`compute_metrics` of the unlearning trainers: AUC/ACC/LogLoss and the mean probability of the true label."""
    probs = np.asarray(eval_pred.predictions).reshape(-1)
    labels = np.asarray(eval_pred.label_ids).reshape(-1)
    return {**utility_metrics(labels, probs), "confidence": mean_confidence(labels, probs)}


class UnlearningCollator:
    """
    Collate training rows of the forget set together with their paired retained rows, in one padded batch.

    A row carrying `retain_rows` (indices into `retain_dataset`) is a forgotten sample; the batch holds the forgotten
    rows first, then their retained rows, with `is_forget` (`(batch,)`, bool) saying which is which and `row_index`
    (`(batch,)`) giving each row's index in its own set, for looking up precomputed teacher outputs. Rows without
    `retain_rows` (evaluation) go to `base` unchanged.

    Args:
        base: the collator for plain rows, normally a [`~hf_recunlearn.scoring.RecCollator`].
        retain_dataset (`Dataset`): the retained samples the forget rows point at, with a `row_index` column.
    """

    def __init__(self, base, retain_dataset: Dataset):
        self.base = base
        self.retain_dataset = retain_dataset

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows or "retain_rows" not in rows[0]:
            return self.base(rows)
        indices = [int(j) for row in rows for j in row["retain_rows"]]
        columns = self.retain_dataset[indices]
        retained = [dict(zip(columns, values)) for values in zip(*columns.values())]
        batch = self.base(list(rows) + retained)
        batch["is_forget"] = torch.tensor([True] * len(rows) + [False] * len(retained))
        return batch


@dataclass
class StudentOutputs:
    """
    One forward pass of the student over a paired batch.

    Attributes:
        answer_logits (`torch.Tensor` of shape `(batch, vocab)`): logits at each row's answer position.
        token_logits (`torch.Tensor` of shape `(batch, seq, vocab)`): logits aligned with `labels`
            (`token_logits[:, t]` predicts `labels[:, t]`), covering at least every completion token.
        labels (`torch.Tensor` of shape `(batch, seq)`): completion token ids, `-100` elsewhere.
        is_forget (`torch.Tensor` of shape `(batch,)`): `True` for forgotten rows, `False` for retained rows.
        row_index (`torch.Tensor` of shape `(batch,)`): index of each row in the forget set or the paired retain set.
    """

    answer_logits: torch.Tensor
    token_logits: torch.Tensor
    labels: torch.Tensor
    is_forget: torch.Tensor
    row_index: torch.Tensor

    @property
    def is_retain(self) -> torch.Tensor:
        return ~self.is_forget

    def cross_entropy(self, mask: torch.Tensor) -> torch.Tensor:
        """Mean next-token loss on the completions of the rows in `mask` (`L_pred`, E2URec eq. 2)."""
        return token_cross_entropy(self.token_logits, self.labels, mask)


class UnlearningTrainer(VersionedHubMixin, Trainer):
    """
    Base trainer of the unlearning methods: makes a trained recommender forget `forget_dataset` while keeping its
    quality on the retained data.

    What it does for every method:

    - **The student.** `model` is the *original* recommender. A `PeftModel` has its adapter merged first, so the
      original stays frozen. With `args.use_lora` (default) a new LoRA adapter, the student, is added and is the only
      thing trained; "the original model" is then the same network with the student disabled (no copy). With
      `use_lora=False` every weight is trained and the original's outputs exist only as precomputed teacher outputs.
    - **Forget/retain pairing.** Each step takes `per_device_train_batch_size` forgotten samples plus
      `retain_per_forget` retained samples for each, drawn once from D_r, in one padded batch (see
      [`UnlearningConfig`]). If `retain_dataset` is not given it is `train_dataset` minus the forget set (by
      `sample_id`).
    - **Fixed teacher outputs.** [`~UnlearningTrainer.compute_teacher_outputs`] runs once at the start of `train()`,
      over the answer positions of exactly the samples the student will see; `compute_loss` only looks them up.
    - **Evidence.** `evaluate()` reports utility on `eval_dataset` (`eval_auc`, `eval_acc`, `eval_logloss`,
      `eval_confidence`) and forgetting on the forget set (`eval_forget_auc`, `eval_forget_confidence`, ...). Loss
      components are logged under `loss/...` keys, averaged over each logging window. `save_model` writes the
      library's card (the method, its paper, the forget request by counts only, never user ids) and a receipt;
      `push_to_hub` publishes the result as a versioned repo (see [`VersionedHubMixin`]).

    The model passed in is modified in place (the adapter is injected into it): score the original before unlearning,
    or compare with the student disabled (`with trainer.original_model(): ...`).

    Subclasses implement [`~UnlearningTrainer.unlearning_loss`] and, when they need teachers,
    [`~UnlearningTrainer.compute_teacher_outputs`]. An exact method, which trains no student on a paired batch,
    overrides the setup hooks `__init__` runs in order (`_check_args`, `_load_model`, `_resolve_datasets`,
    `_prepare_model`, `_training_inputs`) instead: [`APATrainer`] keeps the configuration check, the column checks and
    the matching of `forget_dataset` against `train_dataset`, the model card and `Trainer`'s logging and callbacks.

    Args:
        model (`str`, `PreTrainedModel` or `PeftModel`):
            The original recommender: a model id or path (a PEFT adapter directory works), or a loaded model.
        args ([`UnlearningConfig`], *optional*): training configuration.
        data_collator (*optional*): collator for plain rows; defaults to a [`~hf_recunlearn.scoring.RecCollator`].
        train_dataset (`Dataset`, *optional*): the original training set; used to derive the retained set.
        eval_dataset (`Dataset`, *optional*): held-out samples for utility metrics.
        processing_class (`PreTrainedTokenizerBase`, *optional*): the tokenizer; loaded with `model` when it is a
            string.
        compute_metrics, callbacks, optimizers: as in [`~transformers.Trainer`].
        forget_dataset (`Dataset`): the samples to forget (columns `prompt`, `completion`, `label`, and `sample_id`
            when the retained set is derived from `train_dataset`).
        retain_dataset (`Dataset`, *optional*): the retained samples; default `train_dataset` minus `forget_dataset`.
        forget_audit ([`~hf_recunlearn.audit.ForgetAudit`], *optional*): the retrain-free target of the stopping
            rule (`args.stopping="audit"`, the default): the run audits the original first and stops where the
            audit reaches the target. Without it the run trains its fixed schedule.
        peft_config (`peft.LoraConfig`, *optional*): the student adapter; built from `args` when not given.
    """

    _tag_names = ["hf_recunlearn", "unlearning", "recommendation"]
    _name = "Unlearning"
    _paper: dict[str, str] = {}
    config_class = UnlearningConfig
    default_compute_metrics = staticmethod(compute_unlearning_metrics)
    # `compute_loss` returns a mean over the batch; the Trainer divides it by the gradient-accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: str | PreTrainedModel | PeftModel,
        args: UnlearningConfig | None = None,
        data_collator=None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | None = None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        forget_dataset: Dataset | None = None,
        retain_dataset: Dataset | None = None,
        forget_audit: ForgetAudit | None = None,
        peft_config: LoraConfig | None = None,
    ):
        args = self._check_args(args, model)
        self._load_args = args  # `_load_model` loads a model id with the recipe's dtype and quantization
        model, processing_class = self._load_model(model, processing_class)
        if processing_class is None:
            raise ValueError("`processing_class` (the tokenizer) is required when `model` is a loaded model.")
        check_tokenizer_matches(model, processing_class)

        forget_dataset, retain_dataset = self._resolve_datasets(train_dataset, forget_dataset, retain_dataset)
        self.forget_dataset = forget_dataset
        self.retain_dataset = retain_dataset
        self.original_train_dataset = train_dataset

        model = self._prepare_model(model, args, peft_config)
        train_rows, data_collator = self._training_inputs(model, args, processing_class, train_dataset, data_collator)
        with _adapters_train_elsewhere(model):
            super().__init__(
                model=model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_rows,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics or self.default_compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
            )
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self.forget_audit = forget_audit
        self.audit_callback = self._stopping_callback(args, forget_audit)

    # ------------------------------------------------------------------ setup
    # `__init__` runs these hooks in order; an exact method (APA) overrides the ones about the student and the
    # forget/retain pairing, and keeps the argument checks, the forget-set matching and the rest of `Trainer`.

    def _stopping_callback(self, args, forget_audit: ForgetAudit | None) -> AuditStoppingCallback | None:
        """
        The audit-based stopping rule: one passed in `callbacks`, else one built from `args` when `forget_audit` is
        given and `args.stopping == "audit"`; `None` trains the fixed schedule.
        """
        given = next((cb for cb in self.callback_handler.callbacks if isinstance(cb, AuditStoppingCallback)), None)
        if given is not None or getattr(args, "stopping", "fixed") != "audit":
            return given
        if forget_audit is None:
            logger.info(
                "%s: no `forget_audit` was given, so the run trains its fixed schedule (%s epochs). Pass a "
                "`ForgetAudit` to stop where a model that never saw the forget set would be, or set "
                "`stopping='fixed'` to say the fixed schedule is meant.",
                type(self).__name__,
                args.num_train_epochs,
            )
            return None
        callback = AuditStoppingCallback(
            forget_audit,
            every=args.audit_steps,
            samples=args.audit_samples,
            batch_size=args.teacher_batch_size,
            seed=args.seed,
        )
        self.add_callback(callback)
        return callback

    def _default_output_dir(self, model) -> str:
        """`output_dir` of the configuration built when `args` is not given."""
        return f"{self._name.lower().replace(' ', '-')}-unlearned"

    def _check_args(self, args, model):
        """Default configuration when `args` is None; a configuration of the wrong method is refused."""
        if args is None:
            return self.config_class(output_dir=self._default_output_dir(model))
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"`args` must be an instance of `{self.config_class.__name__}` for {type(self).__name__}, got "
                f"{type(args).__name__}. Build it with `{self.config_class.__name__}(output_dir=..., ...)`."
            )
        return args

    def _load_model(self, model, processing_class):
        """`model` as a loaded model and its tokenizer: a model id or path is loaded with its tokenizer."""
        if isinstance(model, (str, os.PathLike)):
            model, tokenizer = load_model(str(model), **self._load_args.model_load_kwargs())
            processing_class = processing_class or tokenizer
        else:
            self._load_args.check_loaded_model(model)
        return model, processing_class

    def _check_columns(
        self, datasets: dict[str, Dataset | None], required: Sequence[str] = REQUIRED_COLUMNS, why: str = ""
    ) -> None:
        """Refuse a dataset that lacks a column the method reads, naming the dataset and the columns."""
        for name, ds in datasets.items():
            if ds is None:
                continue
            missing = [c for c in required if c not in ds.column_names]
            if missing:
                raise ValueError(
                    f"`{name}` is missing columns {missing}; it needs {list(required)}{why} as built by "
                    "`build_datasets`."
                )

    @staticmethod
    def _check_rows(datasets: dict[str, Dataset | None]) -> None:
        """Refuse an empty dataset, and labels that are not 0/1 (NaN, 3, -1 ...), naming the dataset."""
        for name, ds in datasets.items():
            if ds is None:
                continue
            if len(ds) == 0:
                raise ValueError(f"`{name}` is empty: pass the samples to train on (e.g. `build_datasets(...)['train']`).")
            if "label" in ds.column_names:
                labels = np.asarray(ds["label"], dtype=np.float64)
                bad = ~np.isin(labels, (0.0, 1.0))
                if bad.any():
                    first = int(np.flatnonzero(bad)[0])
                    raise ValueError(
                        f"`{name}` has {int(bad.sum())} label(s) that are not 0 or 1 (first at row {first}: "
                        f"{labels[first]!r}). Labels are binary: 1 = the user liked the item (rating above the "
                        "threshold), 0 = not; fix or drop those rows."
                    )

    @staticmethod
    def _check_forget_not_empty(forget_dataset: Dataset) -> None:
        if len(forget_dataset) == 0:
            raise ValueError(
                "`forget_dataset` is empty: there is nothing to unlearn. Pass the training samples covered by the "
                "deletion request (for example `make_forget_split(...).forget`)."
            )

    @staticmethod
    def _match_forget_set(forget_dataset: Dataset, train_dataset: Dataset) -> list[str]:
        """
        The `sample_id`s of `forget_dataset`, after checking that every one is a sample of `train_dataset`: only
        training data can be unlearned.
        """
        for name, ds in (("forget_dataset", forget_dataset), ("train_dataset", train_dataset)):
            if "sample_id" not in ds.column_names:
                raise ValueError(
                    f"`{name}` has no `sample_id` column, so the forget set cannot be matched against "
                    "`train_dataset`. Build the data with `build_datasets`, or pass `retain_dataset` instead of "
                    "`train_dataset`."
                )
        forget_ids = [str(s) for s in forget_dataset["sample_id"]]
        known = {str(s) for s in train_dataset["sample_id"]}
        unknown = [s for s in forget_ids if s not in known]
        if unknown:
            raise ValueError(
                f"`forget_dataset` has {len(unknown)} of {len(forget_ids)} sample(s) whose `sample_id` is not in "
                f"`train_dataset` (e.g. {unknown[:3]}). Only training samples can be unlearned: draw the forget "
                "set from the training data with `make_forget_split(train_dataset, ...)`."
            )
        return forget_ids

    def _resolve_datasets(self, train_dataset, forget_dataset, retain_dataset) -> tuple[Dataset, Dataset]:
        """The forget set and the retained set D_r (default: `train_dataset` minus the forget set, by `sample_id`)."""
        if forget_dataset is None:
            raise ValueError(
                "`forget_dataset` is required: pass the training samples to forget, e.g. "
                "`make_forget_split(train_dataset, user_ids=[...]).forget`."
            )
        self._check_forget_not_empty(forget_dataset)
        self._check_columns(
            {"forget_dataset": forget_dataset, "retain_dataset": retain_dataset, "train_dataset": train_dataset}
        )
        self._check_rows({"forget_dataset": forget_dataset, "train_dataset": train_dataset})
        forget_ids = None
        if train_dataset is not None:
            forget_ids = self._match_forget_set(forget_dataset, train_dataset)
            if retain_dataset is None:
                forgotten = set(forget_ids)
                keep = [i for i, s in enumerate(train_dataset["sample_id"]) if str(s) not in forgotten]
                retain_dataset = train_dataset.select(keep)
        if retain_dataset is None:
            raise ValueError(
                "Pass `retain_dataset`, or `train_dataset` so that the retained samples can be derived as the "
                "training samples not in `forget_dataset` (matched by `sample_id`)."
            )
        if len(retain_dataset) == 0:
            raise ValueError(
                "`retain_dataset` is empty (the forget request covers every training sample): nothing would remain to "
                "recommend with."
            )
        if "sample_id" in retain_dataset.column_names and "sample_id" in forget_dataset.column_names:
            forgotten = set(forget_ids or [str(s) for s in forget_dataset["sample_id"]])
            overlap = [s for s in retain_dataset["sample_id"] if str(s) in forgotten]
            if overlap:
                raise ValueError(
                    f"`retain_dataset` contains {len(overlap)} sample(s) of `forget_dataset` (e.g. {overlap[:3]}); "
                    "the student would relearn what it must forget. Remove them, or pass `train_dataset` and let "
                    "the trainer derive the retained set."
                )
        return forget_dataset, retain_dataset

    def _prepare_model(self, model, args: UnlearningConfig, peft_config: LoraConfig | None):
        # Adapters of the original kept unmerged next to the student (a quantized original), and the student's name.
        self._original_adapters: list[str] = []
        self._student_adapter = "default"
        if isinstance(model, PeftModel):
            if is_quantized(model):
                return self._stack_student(model, args, peft_config)
            # The original recommender's own adapter becomes part of the frozen original; "original" is then the
            # network with the student disabled, whichever way the original was trained.
            model = model.merge_and_unload()
        self._on_original_model(model, args)
        if args.use_lora:
            model = prepare_model_for_training(
                model,
                gradient_checkpointing=args.gradient_checkpointing,
            )
            # peft initialises LoRA from the global RNG: seed right before it so runs are reproducible.
            set_seed(args.seed)
            return get_peft_model(model, peft_config or make_lora_config(model, args))
        if is_quantized(model):
            prepare_model_for_training(model, use_lora=False)  # raises: quantized weights cannot be trained
        if peft_config is not None:
            raise ValueError(
                "`peft_config` was given but `args.use_lora=False` trains every weight. Set `use_lora=True` to train "
                "a LoRA student, or drop `peft_config`."
            )
        model.requires_grad_(True)
        return model

    def _on_original_model(self, model: PreTrainedModel, args: UnlearningConfig) -> None:
        """Hook: sees the original model (adapter merged) before the student is added. Default: nothing."""

    def _stack_student(self, model: PeftModel, args: UnlearningConfig, peft_config: LoraConfig | None) -> PeftModel:
        """
        A quantized original with its own adapter (a QLoRA recommender): merging that adapter into 4-/8-bit weights
        would round most of what it learned away, so it stays a frozen adapter and the student is added next to it.
        Both are active while the student trains; "the original" is the original's adapter alone.
        """
        if not args.use_lora:
            prepare_model_for_training(model.get_base_model(), use_lora=False)  # raises with the fix
        self._on_original_model(model, args)
        self._original_adapters = list(model.peft_config)
        self._student_adapter = STUDENT_ADAPTER
        if STUDENT_ADAPTER in self._original_adapters:
            raise ValueError(
                f"The original model already has an adapter named {STUDENT_ADAPTER!r}, the name of the student. "
                "Merge or rename it before unlearning."
            )
        prepare_model_for_training(
            model.get_base_model(),
            gradient_checkpointing=args.gradient_checkpointing,
        )
        set_seed(args.seed)
        model.add_adapter(STUDENT_ADAPTER, peft_config or make_lora_config(model.get_base_model(), args))
        self._activate_adapters(model, [*self._original_adapters, STUDENT_ADAPTER], trainable=STUDENT_ADAPTER)
        return model

    @staticmethod
    def _activate_adapters(model: PeftModel, names: list[str], trainable: str | None) -> None:
        """Make `names` the active adapters of `model` (all applied at once) and only `trainable` trainable."""
        model.base_model.set_adapter(names if len(names) > 1 else names[0])
        for name, param in model.named_parameters():
            param.requires_grad_(trainable is not None and f".{trainable}." in name)

    def _training_inputs(self, model, args: UnlearningConfig, processing_class, train_dataset, data_collator):
        """
        What `Trainer` iterates over, `(train_dataset, data_collator)`: the forget set with its paired retained rows,
        and the collator that puts both in one batch. Also sets up scoring of the answer position for the teachers.
        """
        self.num_trainable_parameters = count_trainable_parameters(model)
        self._seq2seq = is_seq2seq(model)
        base = model.get_base_model() if isinstance(model, PeftModel) else model
        self._logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters
        reference = _reference_rows(self.forget_dataset, self.retain_dataset)
        self.answer_tokens = AnswerTokens.from_dataset(processing_class, reference)
        self.scoring_collator = make_collator(
            model, processing_class, self.answer_tokens, max_prompt_length=args.max_prompt_length, for_scoring=True
        )
        if data_collator is None:
            data_collator = make_collator(
                model, processing_class, self.answer_tokens, max_prompt_length=args.max_prompt_length
            )
        pairing_seed = args.seed if args.pairing_seed is None else args.pairing_seed
        pairs, self.paired_retain_dataset = self._pair_datasets(
            self.forget_dataset, self.retain_dataset, args.retain_per_forget, pairing_seed
        )
        if hasattr(model, "add_model_tags"):
            model.add_model_tags(self._tag_names)
        self.teacher_outputs: dict[str, torch.Tensor] | None = None
        self.teacher_runtime: float | None = None
        self.unlearning_runtime: float | None = None
        return pairs, UnlearningCollator(data_collator, self.paired_retain_dataset)

    @staticmethod
    def _pair_datasets(forget: Dataset, retain: Dataset, per_forget: int, seed: int) -> tuple[Dataset, Dataset]:
        """
        Fix, once, which retained samples go with each forgotten sample: `per_forget * len(forget)` draws from a
        seeded permutation of `retain` (repeated only when `retain` is smaller than that). Returns the forget set with
        `row_index` and `retain_rows` columns, and the distinct drawn retained samples with a `row_index` column.
        """
        needed = per_forget * len(forget)
        rng = np.random.default_rng(seed)
        repeats = -(-needed // len(retain))
        draws = np.concatenate([rng.permutation(len(retain)) for _ in range(repeats)])[:needed]
        unique, inverse = np.unique(draws, return_inverse=True)
        paired = _with_column(retain.select(unique.tolist()), "row_index", list(range(len(unique))))
        pairs = _with_column(forget, "row_index", list(range(len(forget))))
        pairs = _with_column(pairs, "retain_rows", inverse.reshape(len(forget), per_forget).tolist())
        return pairs, paired

    # ------------------------------------------------------------------ teachers

    @property
    def _unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @contextlib.contextmanager
    def original_model(self):
        """
        Context in which `self.model` computes the original model: the student adapter disabled. Without a LoRA
        student the original only exists before training starts, so this refuses once weights have changed.
        """
        model = self._unwrapped
        if isinstance(model, PeftModel) and self._original_adapters:
            active = list(model.active_adapters)
            trainable = self._student_adapter if self._student_adapter in active else None
            self._activate_adapters(model, self._original_adapters, trainable=None)
            try:
                yield model
            finally:
                self._activate_adapters(model, active, trainable=trainable)
            return
        if isinstance(model, PeftModel):
            with model.disable_adapter():
                yield model
            return
        if self.state.global_step > 0:
            raise RuntimeError(
                "With `use_lora=False` every weight is trained, so the original model is gone once training has "
                "started. Score the original before unlearning, or train a LoRA student (`use_lora=True`)."
            )
        yield model

    @torch.no_grad()
    def teacher_logits(self, model=None, dataset: Dataset | None = None, scope: str | None = None) -> torch.Tensor:
        """
        The single access point to teacher models: logits at the answer position of every row of `dataset`.

        Args:
            model (*optional*): a teacher model; `None` means the original model (the student disabled).
            dataset (`Dataset`): rows with a `prompt` column, scored in order.
            scope (`str`, *optional*): `"yes_no"` for `(rows, 2)` logits ordered `[No, Yes]`, `"full"` for
                `(rows, vocab)`; defaults to `args.kl_scope`.

        Returns:
            `torch.Tensor` on the CPU, float32.
        """
        scope = scope or self.args.kl_scope
        context = self.original_model() if model is None else contextlib.nullcontext(model)
        with context as teacher:
            out = map_batches(
                teacher,
                self.scoring_collator,
                dataset,
                lambda _, batch: self._in_scope(answer_logits(teacher, batch), scope).float().cpu(),
                self.args.teacher_batch_size,
            )
        return torch.cat(out)

    def _in_scope(self, logits: torch.Tensor, scope: str | None = None) -> torch.Tensor:
        scope = scope or self.args.kl_scope
        return yes_no_logits(logits, self.answer_tokens) if scope == "yes_no" else logits

    def compute_teacher_outputs(self) -> dict[str, torch.Tensor]:
        """
        Compute the fixed teacher outputs the method's loss needs, once, before training. Rows follow
        `self.forget_dataset` (key `"forget"`) and `self.paired_retain_dataset` (key `"retain"`). Default: none.
        """
        return {}

    def _teacher_rows(self, key: str, outputs: StudentOutputs, mask: torch.Tensor) -> torch.Tensor:
        index = outputs.row_index[mask].cpu()
        return self.teacher_outputs[key][index].to(outputs.answer_logits.device)

    # ------------------------------------------------------------------ training

    def train(self, *args, **kwargs):
        """
        `Trainer.train`, after computing the fixed teacher outputs. With an audit-based stopping rule the original is
        audited first: when it is already at the target there is nothing measurable to forget, and the run trains
        zero steps (said in the log, in the returned metrics and in the model card).
        """
        import uuid

        start = time.perf_counter()
        self._event_id = str(uuid.uuid4())  # the unlearning event `save_model` writes a receipt for
        callback = self.audit_callback
        if callback is not None and not callback.history:
            result = callback.check(self._unwrapped, self.processing_class, step=0)
            if result.at_target:
                callback.stopped_at = 0
                self.unlearning_runtime = time.perf_counter() - start
                logger.warning(
                    "%s: nothing measurable to forget. The original is already where a model that never saw the "
                    "forget set is (relative AUC %.4f, target interval %.4f–%.4f): trained zero steps.",
                    type(self).__name__,
                    result.relative_auc,
                    *result.relative_interval,
                )
                metrics = {"train_runtime": self.unlearning_runtime, "teacher_runtime": 0.0,
                           "unlearning_runtime": self.unlearning_runtime, **self._audit_metrics()}  # fmt: skip
                self.state.global_step = 0
                return TrainOutput(0, 0.0, metrics)
        if self.teacher_outputs is None:
            self.teacher_outputs = self.compute_teacher_outputs()
            self.teacher_runtime = time.perf_counter() - start
        output = super().train(*args, **kwargs)
        self.unlearning_runtime = time.perf_counter() - start
        output.metrics["teacher_runtime"] = self.teacher_runtime
        output.metrics["unlearning_runtime"] = self.unlearning_runtime
        output.metrics.update(self._audit_metrics())
        if callback is not None:
            logger.info("%s: %s", type(self).__name__, self._audit_sentence())
        return output

    def _audit_metrics(self) -> dict[str, float]:
        """What the stopping rule decided, as training metrics (`audit_...`); empty without one."""
        callback = self.audit_callback
        if callback is None or not callback.history:
            return {}
        last = callback.history[-1].result
        return {
            "audit_stopped_at_step": -1 if callback.stopped_at is None else callback.stopped_at,
            "audit_zero_steps": float(callback.stopped_at == 0),
            "audit_original_relative_auc": callback.history[0].result.relative_auc,
            "audit_relative_auc": last.relative_auc,
            "audit_target_relative_auc": last.target_relative_auc,
            "audit_loss_auc": last.loss_auc,
            "audit_ks_pvalue": last.ks_pvalue,
        }

    def _audit_sentence(self) -> str:
        """One sentence on the stopping rule's decision, for the log and the model card."""
        callback = self.audit_callback
        if callback is None or not callback.history:
            return "No forget audit: the fixed schedule was trained."
        first, last = callback.history[0].result, callback.history[-1].result
        lo, hi = last.relative_interval
        if callback.stopped_at == 0:
            return (
                f"Nothing measurable to forget: the original was already at the audit's target (relative AUC "
                f"{first.relative_auc:+.4f}, target interval {lo:+.4f} to {hi:+.4f}), so zero training steps were run."
            )
        if callback.stopped_at is not None:
            return (
                f"Stopped by the forget audit at step {callback.stopped_at}: relative AUC {first.relative_auc:+.4f} → "
                f"{last.relative_auc:+.4f} (target {last.target_relative_auc:+.4f}, interval {lo:+.4f} to {hi:+.4f})."
            )
        return (
            f"The forget audit never reached its target within the schedule: relative AUC "
            f"{first.relative_auc:+.4f} → {last.relative_auc:+.4f} (target {last.target_relative_auc:+.4f}, interval "
            f"{lo:+.4f} to {hi:+.4f})."
        )

    def student_forward(self, model, inputs: dict[str, torch.Tensor]) -> StudentOutputs:
        """One forward pass of the student over a paired batch (forgotten and retained rows together)."""
        labels = inputs["labels"]
        rows = torch.arange(labels.shape[0], device=labels.device)
        if self._seq2seq:
            logits = model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels
            ).logits
            token_logits, token_labels, answer = logits, labels, logits[rows, inputs["answer_index"]]
        else:
            width = labels.shape[1]
            has_label = labels != -100
            first = torch.where(has_label.any(-1), has_label.int().argmax(-1), width - 1)
            # Only the positions that predict completion tokens (and the answer) need vocabulary logits.
            keep = int(width - first.min().item() + 1) if self._logits_to_keep else width
            keep = min(max(keep, 1), width)
            extra = {"logits_to_keep": keep} if self._logits_to_keep else {}
            logits = model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                position_ids=inputs.get("position_ids"),
                **extra,
            ).logits
            offset = width - logits.shape[1]
            token_logits, token_labels = logits[:, :-1], labels[:, offset + 1 :]
            answer = logits[rows, inputs["answer_index"] - offset]
        return StudentOutputs(
            answer_logits=answer,
            token_logits=token_logits,
            labels=token_labels,
            is_forget=inputs["is_forget"].to(torch.bool),
            row_index=inputs["row_index"],
        )

    def unlearning_loss(self, outputs: StudentOutputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's objective on one paired batch: `(loss, {"loss/...": component})`. Subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} must implement `unlearning_loss`.")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "is_forget" not in inputs:
            raise ValueError(
                "The training batch has no `is_forget` entry: unlearning trainers build their own paired batches. "
                "Pass a collator for plain rows as `data_collator`; do not replace the training dataloader."
            )
        if self.teacher_outputs is None:
            self.teacher_outputs = self.compute_teacher_outputs()
        outputs = self.student_forward(model, inputs)
        loss, components = self.unlearning_loss(outputs)
        for key, value in components.items():
            self._metrics[key].append(float(value.detach().float().item()))
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._metrics:
            for key, values in self._metrics.items():
                logs[key] = sum(values) / len(values)
            self._metrics.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ evaluation

    def prediction_step(self, model, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys=None):
        return RecTrainer.prediction_step(self, model, inputs, prediction_loss_only, ignore_keys)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """
        Utility on `eval_dataset` (`{prefix}_auc`, `{prefix}_acc`, `{prefix}_logloss`, `{prefix}_confidence`) and,
        with `args.eval_on_forget`, the same on the forget set under `{prefix}_forget_...`: a model that has
        forgotten D_f is less accurate and less confident there than the original.
        """
        metrics: dict[str, float] = {}
        if eval_dataset is not None or self.eval_dataset is not None:
            metrics.update(super().evaluate(eval_dataset, ignore_keys, metric_key_prefix))
        if self.args.eval_on_forget:
            loop = self.evaluation_loop(
                self.get_eval_dataloader(self.forget_dataset),
                description="Forget-set evaluation",
                prediction_loss_only=False,
                ignore_keys=ignore_keys,
                metric_key_prefix=f"{metric_key_prefix}_forget",
            )
            self.log(loop.metrics)
            metrics.update(loop.metrics)
        elif not metrics:
            raise ValueError("Nothing to evaluate: pass `eval_dataset`, or keep `args.eval_on_forget=True`.")
        return metrics

    # ------------------------------------------------------------------ receipts

    # Audit figures for the receipt: `None` computes `audit_figures()`; a dict (e.g. a calibrated audit's figures)
    # replaces them. Set it before `save_model()`.
    audit: dict[str, Any] | None = None

    def audit_figures(self) -> dict[str, Any]:
        """
        The audit figures the receipt of this unlearning event records: `audit` if it was set, else utility on
        `eval_dataset` (`test_auc`, `test_acc`, `test_logloss`), `forget_auc`, `forget_confidence` and the
        membership-inference AUC (forget set vs the unseen `eval_dataset`), after unlearning and, when a LoRA student
        left the original computable, before (`original_...`).
        """
        if self.audit is not None:
            return dict(self.audit)
        from ..evaluation import predict_unlearning_sets

        test = self.eval_dataset
        if not isinstance(test, Dataset) or "label" not in test.column_names:
            return {}
        tokenizer = self.processing_class
        figures = predict_unlearning_sets(self._unwrapped, tokenizer, self.forget_dataset, test, full_vocab=False)
        out = figures.metrics()
        if isinstance(self._unwrapped, PeftModel):
            with self.original_model() as original:
                before = predict_unlearning_sets(original, tokenizer, self.forget_dataset, test, full_vocab=False)
            out.update({f"original_{k}": v for k, v in before.metrics().items()})
        return out

    def _after_save(self, output_dir: str) -> None:
        """
        After an unlearning `train()`, saved into `args.output_dir`: the event's receipt in `receipts/`, the hashes of
        the saved files, a commitment to the forget request, the hyperparameters, the audit figures and the statement
        that the result is approximate (see `hf_recunlearn.receipts`). Saving the same event again replaces its
        receipt; a new `train()` chains a new one.
        """
        if (getattr(self, "_event_id", None) is not None and self.is_world_process_zero()
                and os.path.abspath(output_dir) == os.path.abspath(self.args.output_dir)):  # fmt: skip
            self._write_receipt(output_dir)

    def _write_receipt(self, directory: str) -> None:
        """The approximate receipt, chained to those in `directory`; the request's key stays in `controller/`."""
        import json
        import secrets
        from pathlib import Path

        from ..receipts import SortedTree, approximate_receipt, read_chain, salted, write_receipt_atomic
        from ..runs import write_json_atomic

        forget = self.forget_dataset
        users = sorted({str(u) for u in forget["user_id"]}) if "user_id" in forget.column_names else []
        samples = sorted({str(s) for s in forget["sample_id"]}) if "sample_id" in forget.column_names else []
        key_file = os.path.join(directory, "controller", f"request-{self._event_id}.json")
        if os.path.isfile(key_file):  # the same event saved again: the same commitment
            key = bytes.fromhex(json.loads(Path(key_file).read_text())["key"])
        else:
            key = secrets.token_bytes(32)
        digests = [salted(key, f"user:{u}")[:32] for u in users] + [salted(key, f"sample:{s}")[:32] for s in samples]
        write_json_atomic(key_file, {"key": key.hex(), "users": len(users), "samples": len(samples)})
        hyperparameters = {**self.method_hyperparameters(), "learning_rate": self.args.learning_rate,
                           "num_train_epochs": self.args.num_train_epochs, "use_lora": self.args.use_lora}  # fmt: skip
        data = approximate_receipt(
            directory,
            method=self._name.lower(),
            request_commitment=SortedTree(digests, key, "request").commitment(),
            users=len(users),
            hyperparameters=hyperparameters,
            audit=self.audit_figures(),
            event_id=self._event_id,
        )
        chain = read_chain(directory)
        if chain and _without_time(chain[-1]) == _without_time(data):
            return  # the same event saved again with the same files: the receipt stands (a push finds no change)
        write_receipt_atomic(directory, data)

    # ------------------------------------------------------------------ model card

    def forget_request_summary(self) -> dict[str, Any]:
        """
        What was forgotten, as the public may see it: the number of users. No sample counts and no digest of the ids:
        with the public data set, either narrows the request to the users it names (an unsalted digest of sample ids
        can be checked against every candidate user).
        """
        if "user_id" in self.forget_dataset.column_names:
            return {"num_forgotten_users": len(set(self.forget_dataset["user_id"]))}
        return {"num_forget_requests": 1}

    def method_hyperparameters(self) -> dict[str, Any]:
        """The configuration fields specific to the method (those not in [`UnlearningConfig`]'s parents)."""
        from dataclasses import fields

        from .rec_config import RecConfig

        base = {f.name for f in fields(RecConfig)}
        return {f.name: getattr(self.args, f.name) for f in fields(self.args) if f.name not in base}

    def _card_inputs(self) -> dict[str, Any]:
        """The card's forget request (counts only), audit sentence, hyperparameters and trainable parameters."""
        return {
            "forget_request": self.forget_request_summary(),
            "audit": self._audit_sentence(),
            "hyperparameters": self.method_hyperparameters(),
            "trainable_parameters": self.num_trainable_parameters,
        }

    def _push_event(self) -> tuple[str, int]:
        return "unlearn", int(self.forget_request_summary().get("num_forgotten_users", 0))


def _without_time(receipt: bytes) -> dict:
    import json

    data = json.loads(receipt)
    data.pop("time", None)
    return data


def check_tokenizer_matches(model, tokenizer) -> None:
    """
    Refuse a tokenizer that does not belong to `model`: token ids beyond the embedding matrix, or special tokens
    (eos / bos / pad) whose ids differ from the model config's. Either way training would run and learn nothing.
    """
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    size = getattr(embeddings, "num_embeddings", None)
    if size is not None and len(tokenizer) > size:
        raise ValueError(
            f"`processing_class` has a vocabulary of {len(tokenizer)} tokens but the model's embedding matrix has "
            f"{size} rows: this tokenizer does not belong to the model. Load both from the same checkpoint "
            "(`load_model(name)` returns the pair)."
        )
    config = getattr(model, "config", None)
    for name in ("eos_token_id", "bos_token_id"):
        expected, actual = getattr(config, name, None), getattr(tokenizer, name, None)
        if isinstance(expected, int) and actual is not None and actual != expected:
            raise ValueError(
                f"`processing_class` has {name}={actual} but the model expects {expected}: this tokenizer does not "
                "belong to the model (special tokens differ). Load both from the same checkpoint."
            )


@contextlib.contextmanager
def _adapters_train_elsewhere(model):
    """
    `Trainer` refuses a quantized model that carries no adapter, since its weights cannot train. A quantized model
    only reaches it that way under an exact method (APA, SISA), whose own `Trainer` holds the base to score with and
    never trains it: each shard adapter trains in a `RecTrainer` of its own, on a `PeftModel`. The model's
    `is_quantized` flag is hidden from that one check (the approximate methods always hand `Trainer` a `PeftModel`).
    """
    if not getattr(model, "is_quantized", False) or isinstance(model, PeftModel):
        yield
        return
    model.is_quantized = False  # the flag transformers' quantizer sets on the model and `Trainer` checks
    try:
        yield
    finally:
        model.is_quantized = True


def _with_column(ds: Dataset, name: str, values) -> Dataset:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_enabled = not are_progress_bars_disabled()
    disable_progress_bars()  # bookkeeping columns on small sets; a progress bar here is noise
    try:
        if name in ds.column_names:
            ds = ds.remove_columns(name)
        return ds.add_column(name, values)
    finally:
        if was_enabled:
            enable_progress_bars()


def _reference_rows(forget: Dataset, retain: Dataset) -> Dataset:
    """Rows to read the Yes/No completions from: the forget set, unless it holds a single label."""
    labels = set(forget["label"])
    return forget if len(labels) == 2 else retain
