"""Configuration of APA: exact unlearning with one LoRA adapter per data shard, aggregated per sample."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..aggregation import AGGREGATION_LEVELS, WEIGHTINGS
from ..partition import PARTITION_METHODS, REPRESENTATIONS, USER_LEVEL_METHODS
from .rec_config import RecConfig


FORGET_UNITS = ("user", "sample")


@dataclass
class APAConfig(RecConfig):
    r"""
    Configuration for [`APATrainer`] (APA, "Exact and Efficient Unlearning for Large Language Model-based
    Recommendation"): the training data is split into K shards, one LoRA adapter is trained per shard with the TALLRec
    recipe of [`RecConfig`], and the adapters are aggregated per test sample at inference. Forgetting retrains only
    the shards that held the forgotten data.

    Only the APA parameters are listed; see [`RecConfig`] and [`~transformers.TrainingArguments`] for the rest.

    Parameters:
        num_shards (`int`, *optional*, defaults to `4`):
            Number of shards K (APA §4.1.4: 1024 training samples, shard size 256, K = 4).
        max_shard_size (`int`, *optional*):
            Cap t on a shard's samples (Algorithm 1). Defaults to `ceil(n / K)`; user-level partitions add the largest
            user's sample count as slack, since whole users cannot always fill shards exactly.
        forget_unit (`str`, *optional*, defaults to `"user"`):
            What deletion requests name, `"user"` or `"sample"`. It picks the default partition: a user request
            under a sample-level partition touches nearly every shard (DESIGN §5: 3.6–4 of 4), so user requests get
            a partition that keeps each user in one shard.
        partition_method (`str`, *optional*):
            `"semantic"` (Algorithm 1: balanced K-means on the base model's prompt representations, sample level),
            `"random"` (SISA), `"user"` (balanced random by user) or `"semantic_user"` (Algorithm 1 over users).
            Defaults to `"user"` when `forget_unit="user"` (measured at no AUC cost, one shard per deleted user) and
            to `"semantic"` when `forget_unit="sample"`.
        partition_representation (`str`, *optional*, defaults to `"last_hidden"`):
            Prompt representation of the semantic partitions: `"last_hidden"` (final hidden state of the last prompt
            token of the base model, Algorithm 1 line 2), `"mean_hidden"` or `"embedding_mean"`.
        aggregation_weights (`str`, *optional*, defaults to `"adaptive"`):
            `"adaptive"` (eqs. 7–8: softmax of −τ · the shards' errors on the sample's validation neighbours),
            `"uniform"`, `"semantic"` (softmax of τ · cosine to each shard's centre) or `"major"` (adaptive argmax);
            §4.4.2's ablation.
        aggregation_level (`str`, *optional*, defaults to `"ND"`):
            `"ND"` (eq. 6, `ΔW = Σ ω_k B_k A_k`), `"D"` (eq. 5, `ΔW = (Σ ω_k B_k)(Σ ω_k A_k)`) or `"output"`
            (average P(like) over K forward passes: SISA's aggregation).
        temperature (`float`, *optional*, defaults to `1000.0`):
            τ of eq. 8 (paper: 1000). With errors in [0, 1] it is close to hard routing; smaller values mix more.
        temperature_candidates (`list[float]`, *optional*):
            If set, τ is chosen among these on the validation set (leave-one-out neighbours, best AUC) after training
            and after every forgetting event.
        num_neighbors (`int`, *optional*, defaults to `20`):
            n = |N_v| of eq. 7 (paper: 20 for movies, 100 for books).
        routing_representation (`str`, *optional*, defaults to `"embedding_mean"`):
            Representation used to find a test sample's validation neighbours. `"embedding_mean"` (mean input token
            embedding) is an embedding lookup, so aggregated inference stays one forward pass; `"last_hidden"` is
            Algorithm 1's representation and costs an extra base-model pass per batch.
        validation_split (`str`, *optional*, defaults to `"valid"`):
            Key of the validation set in `eval_dataset` when it is a dict (e.g. `{"valid": ..., "test": ...}`). The
            per-shard validation errors of the adaptive weights come from it; the other splits are only evaluated.
        shared_init (`bool`, *optional*, defaults to `True`):
            Every shard's LoRA starts from the same initialisation (seed `seed`), which keeps the D-level average of
            A and B meaningful. `False` seeds shard k with `seed + k`.
        salt_dir (`str`, *optional*):
            Folder for the ledger's secret salt (default `$HF_RECUNLEARN_SALT_DIR` or `~/.cache/hf_recunlearn/salts`).
            It must stay outside `output_dir` and off the Hub.
        save_on_event (`bool`, *optional*, defaults to `True`):
            Write a new version of the model to `output_dir` after training and after every forgetting event
            (atomically; the previous version is deleted). Forget requests are durable (journal, lock) only then.
        min_users_per_event (`int`, *optional*, defaults to `1`):
            Privacy setting: a forget request is recorded in the journal at once but carried out only when at least
            this many users are pending (or on `forget(..., flush=True)`), so that every published event covers at
            least k users. With 1, each event removes one user and the public version list shows when it happened
            and that it was one user; someone who knows a user asked for deletion at that time learns it was done,
            but nothing published names who. Larger values trade deletion delay for that cover.
    """

    num_shards: int = field(default=4, metadata={"help": "Number of data shards K (APA: 4)."})
    max_shard_size: int | None = field(default=None, metadata={"help": "Cap t on shard size; default ceil(n/K)."})
    forget_unit: str = field(
        default="user", metadata={"help": "What deletion requests name: 'user' or 'sample'. Picks the partition."}
    )
    partition_method: str | None = field(
        default=None,
        metadata={"help": "semantic | random | user | semantic_user; default: user for user requests, else semantic."},
    )
    partition_representation: str = field(
        default="last_hidden", metadata={"help": "Prompt representation for semantic partitions."}
    )
    aggregation_weights: str = field(
        default="adaptive", metadata={"help": "adaptive | uniform | semantic | major aggregation weights."}
    )
    aggregation_level: str = field(default="ND", metadata={"help": "ND | D | output (SISA) aggregation."})
    temperature: float = field(default=1000.0, metadata={"help": "Temperature tau of the adaptive weights (eq. 8)."})
    temperature_candidates: list[float] | None = field(
        default=None, metadata={"help": "Choose tau among these on the validation set."}
    )
    num_neighbors: int = field(default=20, metadata={"help": "Validation neighbours per test sample (eq. 7)."})
    routing_representation: str = field(
        default="embedding_mean", metadata={"help": "Representation for neighbour search: embedding_mean | last_hidden."}
    )
    validation_split: str = field(default="valid", metadata={"help": "Key of the validation set in eval_dataset."})
    shared_init: bool = field(default=True, metadata={"help": "Same LoRA initialisation for every shard."})
    salt_dir: str | None = field(default=None, metadata={"help": "Folder of the ledger's secret salt (kept local)."})
    save_on_event: bool = field(
        default=True, metadata={"help": "Write a new version to output_dir after training and each forget."}
    )
    min_users_per_event: int = field(
        default=1, metadata={"help": "Carry out forget requests only once this many users are pending (privacy)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.num_shards < 1:
            raise ValueError(
                f"`num_shards` must be >= 1, got {self.num_shards}. Pass the number of data shards K (APA: 4)."
            )
        if self.max_shard_size is not None and self.max_shard_size < 1:
            raise ValueError(f"`max_shard_size` must be >= 1 or None, got {self.max_shard_size}.")
        if not self.use_lora:
            raise ValueError("`use_lora=False` is not supported by APA: every shard is a LoRA adapter on a frozen base.")
        if self.forget_unit not in FORGET_UNITS:
            raise ValueError(f"`forget_unit` must be one of {FORGET_UNITS}, got {self.forget_unit!r}.")
        if self.partition_method is None:
            self.partition_method = "user" if self.forget_unit == "user" else "semantic"
        if self.partition_method not in PARTITION_METHODS:
            raise ValueError(f"`partition_method` must be one of {PARTITION_METHODS}, got {self.partition_method!r}.")
        if self.forget_unit == "user" and self.partition_method not in USER_LEVEL_METHODS:
            import warnings

            warnings.warn(
                f"`partition_method={self.partition_method!r}` splits users over shards, so forgetting one user "
                "retrains nearly every shard. Use 'user' or 'semantic_user' for user requests, or set "
                "`forget_unit='sample'` to silence this warning.",
                stacklevel=2,
            )
        for name, value, allowed in (
            ("partition_representation", self.partition_representation, REPRESENTATIONS),
            ("routing_representation", self.routing_representation, ("embedding_mean", "last_hidden", "mean_hidden")),
            ("aggregation_weights", self.aggregation_weights, WEIGHTINGS),
            ("aggregation_level", self.aggregation_level, AGGREGATION_LEVELS),
        ):
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {tuple(allowed)}, got {value!r}.")
        if self.temperature < 0:
            raise ValueError(f"`temperature` must be >= 0, got {self.temperature}. 0 gives uniform weights.")
        if self.temperature_candidates is not None:
            if not self.temperature_candidates or any(t < 0 for t in self.temperature_candidates):
                raise ValueError(
                    "`temperature_candidates` must be a non-empty list of values >= 0, got "
                    f"{self.temperature_candidates}."
                )
        if self.min_users_per_event < 1:
            raise ValueError(f"`min_users_per_event` must be >= 1, got {self.min_users_per_event}.")
        if self.num_neighbors < 1:
            raise ValueError(f"`num_neighbors` must be >= 1, got {self.num_neighbors} (paper: 20 movies, 100 books).")
