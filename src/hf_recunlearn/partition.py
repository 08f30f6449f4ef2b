"""Splitting training data into shards (APA Algorithm 1, random, by user) and the shard ledger.

A partition decides which shard adapter learns each training sample, and therefore how many adapters a deletion
request has to retrain. Sample-level partitions (`"semantic"`, APA's Algorithm 1, and `"random"`, SISA) scatter one
user's samples over nearly every shard; user-level partitions (`"user"`, `"semantic_user"`) keep each user in one
shard, so deleting a user retrains one adapter. DESIGN §5 measured the two user-level choices at no AUC cost for the
balanced random one, which is why user requests default to it.

The [`ShardLedger`] records which shard holds every training sample and user. It is written next to the adapters,
so it never stores raw ids: sample and user ids are keyed HMAC-SHA256 hashes under a secret salt that stays on the
machine that trained the shards (see [`load_or_create_salt`]).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch


PARTITION_METHODS = ("semantic", "random", "user", "semantic_user")
USER_LEVEL_METHODS = ("user", "semantic_user")
REPRESENTATIONS = ("last_hidden", "mean_hidden", "embedding_mean")


# --------------------------------------------------------------------------------------------------------------------
# Representations of prompts
# --------------------------------------------------------------------------------------------------------------------


def batch_representation(model, batch: dict[str, torch.Tensor], kind: str = "last_hidden") -> torch.Tensor:
    """
    A vector per prompt of a scoring batch (`RecCollator(for_scoring=True)`), `(batch, hidden)`, float32.

    Args:
        model: the base model. PEFT-wrapped models are read with their adapters disabled (Algorithm 1 uses the
            original LLM).
        batch: a scoring batch, left-padded for causal models.
        kind (`str`):
            - `"last_hidden"`: final hidden state at the last prompt token (causal), or the mean of the encoder's
              final hidden states (seq2seq). The representation of APA Algorithm 1; costs a forward pass.
            - `"mean_hidden"`: mean of the final hidden states over the prompt tokens.
            - `"embedding_mean"`: mean of the input token embeddings over the prompt tokens. An embedding lookup,
              no transformer layer: the routing representation that keeps aggregated inference to one pass.
    """
    if kind not in REPRESENTATIONS:
        raise ValueError(f"`kind` must be one of {REPRESENTATIONS}, got {kind!r}.")
    from .models import is_seq2seq
    from .scoring import _device_of

    device = _device_of(model)
    ids = batch["input_ids"].to(device)
    mask = batch["attention_mask"].to(device)
    if kind == "embedding_mean":
        emb = model.get_input_embeddings()(ids)
        return _masked_mean(emb, mask)
    disable = getattr(model, "disable_adapter", None)
    ctx = disable() if disable is not None and hasattr(model, "peft_config") else _nullcontext()
    with ctx, torch.no_grad():
        if is_seq2seq(model):
            encoder = model.get_encoder()
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            return _masked_mean(hidden, mask)
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        body = inner.get_decoder() if hasattr(inner, "get_decoder") else inner.model
        kwargs = {"position_ids": batch["position_ids"].to(device)} if "position_ids" in batch else {}
        hidden = body(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
    if kind == "mean_hidden":
        return _masked_mean(hidden, mask)
    return hidden[:, -1].float()  # scoring batches are left-padded: the last position is the prompt's last token


def prompt_representations(
    model,
    tokenizer,
    data,
    kind: str = "last_hidden",
    batch_size: int = 32,
    max_prompt_length: int = 512,
) -> np.ndarray:
    """[`batch_representation`] for every row of `data` (a `Dataset` with `prompt`), `(len(data), hidden)` float32."""
    from .scoring import AnswerTokens, make_collator, map_batches

    answer_tokens = AnswerTokens.from_dataset(tokenizer, data) if "completion" in data.column_names else None
    if answer_tokens is None:
        answer_tokens = AnswerTokens.from_completions(tokenizer, "Yes", "No")
    collator = make_collator(model, tokenizer, answer_tokens, max_prompt_length=max_prompt_length, for_scoring=True)
    prompts = data.select_columns(["prompt"])  # the representation reads the prompt only

    def step(_, batch):
        return batch_representation(model, batch, kind).cpu()

    out = map_batches(model, collator, prompts, step, batch_size)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), np.float32)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """
    Mean over the unmasked positions, summed in float64: a prompt's representation then does not depend on how much
    padding its batch had, so removing other rows (a forget) leaves it bit for bit as it was.
    """
    m = mask.to(torch.float64).unsqueeze(-1)
    return ((x.to(torch.float64) * m).sum(1) / m.sum(1).clamp(min=1)).float()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------------------------------------------------
# Partitions
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Partition:
    """
    Which shard each training sample goes to.

    Attributes:
        assignment (`np.ndarray` of shape `(num_samples,)`): shard index of every sample, in dataset row order.
        num_shards (`int`): K.
        method (`str`): one of `PARTITION_METHODS`.
        max_shard_size (`int`): the cap t the partition respected.
        seed (`int`): seed it was built with; the same inputs and seed give the same partition.
        centroids (`np.ndarray` of shape `(K, hidden)`, *optional*): K-means centres of the semantic methods.
    """

    assignment: np.ndarray
    num_shards: int
    method: str
    max_shard_size: int
    seed: int
    centroids: np.ndarray | None = None

    def shard_indices(self) -> list[np.ndarray]:
        """Row indices of each shard, ascending (so a shard keeps the dataset's order)."""
        return [np.flatnonzero(self.assignment == k) for k in range(self.num_shards)]

    def sizes(self) -> list[int]:
        return np.bincount(self.assignment, minlength=self.num_shards).tolist()


def default_max_shard_size(num_samples: int, num_shards: int) -> int:
    """t = ceil(n / K): the tightest cap that fits every sample (APA: 1024 samples, t = 256, K = 4)."""
    return int(math.ceil(num_samples / num_shards))


def _check_shards(num_samples: int, num_shards: int, max_shard_size: int | None) -> int:
    if num_shards < 1:
        raise ValueError(f"`num_shards` must be >= 1, got {num_shards}. Pass the number of data shards K (APA: 4).")
    if num_samples < num_shards:
        raise ValueError(
            f"Cannot split {num_samples} samples into `num_shards`={num_shards} non-empty shards; lower `num_shards`."
        )
    t = default_max_shard_size(num_samples, num_shards) if max_shard_size is None else int(max_shard_size)
    if t * num_shards < num_samples:
        raise ValueError(
            f"`max_shard_size`={max_shard_size} is too small: {num_shards} shards of at most {t} samples cannot hold "
            f"{num_samples} samples. Pass at least {default_max_shard_size(num_samples, num_shards)}, or None."
        )
    return t


def random_partition(num_samples: int, num_shards: int, seed: int = 0) -> Partition:
    """SISA: a seeded random permutation cut into K shards whose sizes differ by at most one."""
    t = _check_shards(num_samples, num_shards, None)
    order = np.random.default_rng(seed).permutation(num_samples)
    assignment = np.empty(num_samples, dtype=np.int64)
    for k, part in enumerate(np.array_split(order, num_shards)):
        assignment[part] = k
    return Partition(assignment, num_shards, "random", t, seed)


def _kmeans(reps: np.ndarray, num_clusters: int, seed: int, n_init: int = 10) -> np.ndarray:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=num_clusters, random_state=seed, n_init=n_init)
    km.fit(np.asarray(reps, dtype=np.float64))
    return km.cluster_centers_.astype(np.float32)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-12, None)
    b = b / np.clip(np.linalg.norm(b, axis=1, keepdims=True), 1e-12, None)
    return a @ b.T


def balanced_semantic_partition(
    reps: np.ndarray, num_shards: int, max_shard_size: int | None = None, seed: int = 0, n_init: int = 10
) -> Partition:
    """
    APA Algorithm 1: K-means on the prompts' hidden representations, then a greedy balanced assignment.

    Every (sample, centre) pair is sorted by cosine distance `-cos(h_i, a_k)` (eq. 3); walking the sorted list, an
    unassigned sample joins centre k while shard k holds fewer than `max_shard_size` (t) samples. Ties are broken by
    (sample, centre) index, so the result is a pure function of `reps`, K, t and `seed`.
    """
    reps = np.asarray(reps)
    n = len(reps)
    t = _check_shards(n, num_shards, max_shard_size)
    centroids = _kmeans(reps, num_shards, seed, n_init)
    dist = -_cosine(reps, centroids)  # (n, K)
    order = np.lexsort((np.tile(np.arange(num_shards), n), np.repeat(np.arange(n), num_shards), dist.reshape(-1)))
    assignment = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(num_shards, dtype=np.int64)
    remaining = n
    for flat in order:
        i, k = divmod(int(flat), num_shards)
        if assignment[i] < 0 and sizes[k] < t:
            assignment[i] = k
            sizes[k] += 1
            remaining -= 1
            if remaining == 0:
                break
    return Partition(assignment, num_shards, "semantic", t, seed, centroids)


def _user_groups(user_ids: Sequence[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    users = np.asarray([str(u) for u in user_ids])
    order = sorted(set(users.tolist()))
    return order, {u: np.flatnonzero(users == u) for u in order}


def _user_level_cap(n: int, num_shards: int, largest_user: int, max_shard_size: int | None) -> tuple[int, bool]:
    if max_shard_size is not None:
        return _check_shards(n, num_shards, max_shard_size), True
    _check_shards(n, num_shards, None)
    # Whole users cannot always fill shards exactly; with this much slack the least-loaded shard always fits the next
    # user (its load is at most (n - n_u) / K), so the default never fails.
    return default_max_shard_size(n, num_shards) + largest_user, False


def _assign_least_loaded(user, rows, sizes, cap, explicit, assignment):
    k = int(np.argmin(sizes))
    if sizes[k] + len(rows) > cap and explicit:
        raise ValueError(
            f"`max_shard_size`={cap} cannot be met while keeping every user in one shard: a user with {len(rows)} "
            f"samples fits in no shard. Raise `max_shard_size` or pass None for the default slack."
        )
    assignment[rows] = k
    sizes[k] += len(rows)


def user_partition(
    user_ids: Sequence[str], num_shards: int, max_shard_size: int | None = None, seed: int = 0
) -> Partition:
    """
    Balanced random partition by user (RecEraser-style user partition without embeddings): each user's samples go
    to one shard.

    Users are taken largest first (ties in seeded random order) and each joins the shard with the fewest samples, so
    shard sizes end up within one user of each other. `max_shard_size` defaults to `ceil(n / K)` plus the largest
    user's sample count (whole users cannot always fill shards exactly); an explicit cap that cannot be met raises.
    """
    users, groups = _user_groups(user_ids)
    n = len(user_ids)
    cap, explicit = _user_level_cap(n, num_shards, max(len(r) for r in groups.values()), max_shard_size)
    rank = np.random.default_rng(seed).permutation(len(users))
    order = sorted(range(len(users)), key=lambda j: (-len(groups[users[j]]), rank[j]))
    assignment = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(num_shards, dtype=np.int64)
    for j in order:
        _assign_least_loaded(users[j], groups[users[j]], sizes, cap, explicit, assignment)
    return Partition(assignment, num_shards, "user", int(cap), seed)


def semantic_user_partition(
    reps: np.ndarray,
    user_ids: Sequence[str],
    num_shards: int,
    max_shard_size: int | None = None,
    seed: int = 0,
    n_init: int = 10,
) -> Partition:
    """
    Algorithm 1 at the level of users: a user is represented by the mean of their samples' representations,
    K-means runs on the samples, and (user, centre) pairs are walked by cosine distance, a user joining a centre
    whose shard still has room for all of the user's samples. Users that fit nowhere on the walk join the least
    loaded shard. Keeps each user in one shard.
    """
    reps = np.asarray(reps)
    users, groups = _user_groups(user_ids)
    n = len(user_ids)
    if len(reps) != n:
        raise ValueError(f"`reps` has {len(reps)} rows but `user_ids` has {n}; pass one representation per sample.")
    cap, explicit = _user_level_cap(n, num_shards, max(len(r) for r in groups.values()), max_shard_size)
    centroids = _kmeans(reps, num_shards, seed, n_init)
    user_reps = np.stack([reps[groups[u]].mean(0) for u in users])
    dist = -_cosine(user_reps, centroids)
    m = len(users)
    order = np.lexsort((np.tile(np.arange(num_shards), m), np.repeat(np.arange(m), num_shards), dist.reshape(-1)))
    assignment = np.full(n, -1, dtype=np.int64)
    sizes = np.zeros(num_shards, dtype=np.int64)
    placed = np.zeros(m, dtype=bool)
    for flat in order:
        j, k = divmod(int(flat), num_shards)
        rows = groups[users[j]]
        if not placed[j] and sizes[k] + len(rows) <= cap:
            assignment[rows] = k
            sizes[k] += len(rows)
            placed[j] = True
    for j in np.flatnonzero(~placed):
        _assign_least_loaded(users[j], groups[users[j]], sizes, cap, explicit, assignment)
    return Partition(assignment, num_shards, "semantic_user", int(cap), seed, centroids)


def make_partition(
    method: str,
    num_shards: int,
    *,
    num_samples: int | None = None,
    user_ids: Sequence[str] | None = None,
    reps: np.ndarray | None = None,
    max_shard_size: int | None = None,
    seed: int = 0,
) -> Partition:
    """Dispatch to the partition `method` (one of `PARTITION_METHODS`) with the inputs it needs."""
    if method not in PARTITION_METHODS:
        raise ValueError(f"`partition_method` must be one of {PARTITION_METHODS}, got {method!r}.")
    if method in ("semantic", "semantic_user") and reps is None:
        raise ValueError(f"The {method!r} partition needs `reps`, the prompts' hidden representations.")
    if method in USER_LEVEL_METHODS and user_ids is None:
        raise ValueError(f"The {method!r} partition needs `user_ids`, one per sample.")
    if method == "random":
        n = num_samples if num_samples is not None else len(user_ids if user_ids is not None else reps)
        if max_shard_size is not None and max_shard_size < default_max_shard_size(n, num_shards):
            _check_shards(n, num_shards, max_shard_size)
        return random_partition(n, num_shards, seed)
    if method == "semantic":
        return balanced_semantic_partition(reps, num_shards, max_shard_size, seed)
    if method == "user":
        return user_partition(user_ids, num_shards, max_shard_size, seed)
    return semantic_user_partition(reps, user_ids, num_shards, max_shard_size, seed)


# --------------------------------------------------------------------------------------------------------------------
# Salt and ledger
# --------------------------------------------------------------------------------------------------------------------

SALT_DIR_ENV = "HF_RECUNLEARN_SALT_DIR"


def default_salt_dir() -> Path:
    """`$HF_RECUNLEARN_SALT_DIR`, or `~/.cache/hf_recunlearn/salts`: outside any model directory, never uploaded."""
    env = os.environ.get(SALT_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hf_recunlearn" / "salts"


def salt_id_of(salt: bytes) -> str:
    """A public fingerprint of a salt (it names the salt file and is stored in the metadata; it reveals nothing)."""
    return hashlib.sha256(b"hf_recunlearn-salt-id\x00" + salt).hexdigest()[:16]


def load_or_create_salt(salt_id: str | None = None, salt_dir: str | os.PathLike | None = None) -> bytes:
    """
    The ledger's secret salt, kept in `salt_dir/<salt_id>.salt` (mode 0600) on this machine only.

    With `salt_id=None` a new 32-byte salt is created and stored. A ledger hashes ids with its salt, so the salt must
    never travel with the adapters: anyone holding it could hash candidate user ids (often small integers) and find
    them in the ledger.
    """
    folder = Path(salt_dir).expanduser() if salt_dir is not None else default_salt_dir()
    if salt_id is not None:
        path = folder / f"{salt_id}.salt"
        if not path.is_file():
            raise FileNotFoundError(
                f"The shard ledger's salt {salt_id!r} is not in {str(folder)!r}. Forgetting needs the salt the shards "
                f"were trained with: copy `{salt_id}.salt` from the training machine into that folder, or pass its "
                f"folder as `salt_dir` (or `${SALT_DIR_ENV}`)."
            )
        salt = bytes.fromhex(path.read_text().strip())
        if salt_id_of(salt) != salt_id:
            raise ValueError(f"The salt file {str(path)!r} does not match its id {salt_id!r}; it was altered.")
        return salt
    salt = secrets.token_bytes(32)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{salt_id_of(salt)}.salt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(salt.hex())
    return salt


@dataclass
class ShardLedger:
    """
    Which shard holds every training sample and every user, keyed by salted hashes.

    `shards[k]` lists `(sample_hash, user_hash)` pairs of shard k in training-set order: that order is the order the
    shard's adapter was trained on, so a retrained shard sees its remaining samples in the same order as a shard
    trained from scratch on them. Hashes are HMAC-SHA256 of `"sample:<id>"` / `"user:<id>"` under `salt`,
    truncated to 128 bits.

    The ledger is immutable in use: [`remove`] returns a new ledger, so a failed forget leaves the old one intact.
    """

    salt: bytes = field(repr=False)
    shards: list[list[tuple[str, str]]]

    @property
    def salt_id(self) -> str:
        return salt_id_of(self.salt)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def _hash(self, kind: str, value) -> str:
        return hmac.new(self.salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def hash_sample(self, sample_id) -> str:
        return self._hash("sample", sample_id)

    def hash_user(self, user_id) -> str:
        return self._hash("user", user_id)

    @classmethod
    def from_partition(
        cls, partition: Partition, sample_ids: Sequence, user_ids: Sequence, salt: bytes
    ) -> "ShardLedger":
        if len(sample_ids) != len(partition.assignment) or len(user_ids) != len(partition.assignment):
            raise ValueError("`sample_ids` and `user_ids` must have one entry per partitioned sample.")
        ledger = cls(salt=salt, shards=[[] for _ in range(partition.num_shards)])
        seen = set()
        for sid, uid, k in zip(sample_ids, user_ids, partition.assignment):
            h = ledger.hash_sample(sid)
            if h in seen:
                raise ValueError(
                    "The training data has duplicate `sample_id` values; every sample needs its own id so that a "
                    "forget request removes exactly the samples it names."
                )
            seen.add(h)
            ledger.shards[int(k)].append((h, ledger.hash_user(uid)))
        return ledger

    def sizes(self) -> list[int]:
        return [len(s) for s in self.shards]

    def num_samples(self) -> int:
        return sum(self.sizes())

    def users_per_shard(self) -> list[int]:
        return [len({u for _, u in shard}) for shard in self.shards]

    def num_users(self) -> int:
        return len({u for shard in self.shards for _, u in shard})

    def locate(self, user_ids: Iterable | None = None, sample_ids: Iterable | None = None) -> dict[int, set[str]]:
        """
        Sample hashes a request covers, grouped by shard: all samples of `user_ids` plus the samples `sample_ids`.

        Ids that the ledger does not hold are refused (already forgotten, or never trained on): silently forgetting
        nothing is the worst outcome of a deletion request. Messages count such ids but never print them.
        """
        users = {self.hash_user(u) for u in _as_id_list(user_ids)}
        samples = {self.hash_sample(s) for s in _as_id_list(sample_ids)}
        if not users and not samples:
            raise ValueError("A forget request must name at least one id: pass `user_ids` and/or `sample_ids`.")
        found: dict[int, set[str]] = {}
        seen_users, seen_samples = set(), set()
        for k, shard in enumerate(self.shards):
            for s, u in shard:
                if u in users:
                    seen_users.add(u)
                if s in samples:
                    seen_samples.add(s)
                if u in users or s in samples:
                    found.setdefault(k, set()).add(s)
        missing_users, missing_samples = len(users - seen_users), len(samples - seen_samples)
        if missing_users or missing_samples:
            raise ValueError(
                f"{missing_users} requested user id(s) and {missing_samples} sample id(s) are not in the shard ledger "
                "(already forgotten, or never in the training data). Nothing was forgotten; pass ids as they appear "
                "in the training set's `user_id` / `sample_id` columns."
            )
        return found

    def remove(self, sample_hashes: Iterable[str]) -> "ShardLedger":
        """A new ledger without these samples (users with no sample left disappear with them)."""
        drop = set(sample_hashes)
        return ShardLedger(salt=self.salt, shards=[[p for p in shard if p[0] not in drop] for shard in self.shards])

    def shard_rows(self, k: int, sample_ids: Sequence) -> list[int]:
        """
        Row indices, in `sample_ids` order, of the samples the ledger puts in shard `k`.

        `sample_ids` is the training set's `sample_id` column. Rows the ledger no longer holds (forgotten samples)
        are skipped; a shard sample missing from `sample_ids` raises, because the shard could not be reproduced.
        """
        wanted = {s for s, _ in self.shards[k]}
        rows = [i for i, sid in enumerate(sample_ids) if self.hash_sample(sid) in wanted]
        if len(rows) != len(wanted):
            raise ValueError(
                f"The training data holds {len(rows)} of the {len(wanted)} samples of shard {k}. Retraining a shard "
                "exactly needs all of its remaining samples: pass the original training set as `train_dataset`."
            )
        return rows

    def to_dict(self) -> dict:
        return {
            "hash": "hmac-sha256/128",
            "salt_id": self.salt_id,
            "shards": [[list(p) for p in shard] for shard in self.shards],
        }

    @classmethod
    def from_dict(cls, payload: dict, salt: bytes) -> "ShardLedger":
        if salt_id_of(salt) != payload["salt_id"]:
            raise ValueError(
                f"The salt given does not match the ledger's salt id {payload['salt_id']!r}; pass the salt the shards "
                "were trained with."
            )
        return cls(salt=salt, shards=[[tuple(p) for p in shard] for shard in payload["shards"]])


def _as_id_list(values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, (str, int)):
        values = [values]
    return [str(v) for v in values]
