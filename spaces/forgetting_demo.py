"""The logic behind the Gradio Space: recommend for a user, forget them, compare before and after.

`app.py` is a thin Gradio layer over [`DemoRecommender`]. Everything here is plain Python (pandas frames,
dataclasses, a matplotlib figure) over the library's API, so it is tested without a browser. It is the Space's code,
not the library's: it ships in the Space folder next to `app.py`, and the installed `hf_recunlearn` package does not
contain it.

Where the model comes from (environment variables, read by [`SpaceSettings.from_env`]):

- `HF_RECUNLEARN_DIR`: a local *demo bundle* (`apa/`, `data/`, `space.json`, as written by [`build_bundle`]) or
  a bare APA directory (then `HF_RECUNLEARN_DATA` names the data bundle).
- `HF_RECUNLEARN_REPO` (+ `HF_RECUNLEARN_REVISION`): an APA model repo on the Hub; `HF_RECUNLEARN_DATA` names the
  data (APA forgetting retrains shards on their remaining samples, so it needs the training set).
- `HF_RECUNLEARN_BASE_MODEL`: the base model, when not the one recorded in the APA metadata.
- Nothing set: the built-in demo (synthetic users, a stand-in base model, APA with K shards and a user partition) is
  built once and cached in `HF_RECUNLEARN_CACHE` (default `~/.cache/hf_recunlearn/space`);
  `HF_RECUNLEARN_SPACE_SIZE` = `tiny` (default: the build that memorises its fans; also the tests') or `small`.

Forgetting changes a *live* copy of the model; the pristine version stays on disk and "reset" copies it back.
Raw user ids never go to logs or metadata: the APA ledger stores salted hashes, and log lines name counts only.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from transformers import TrainerCallback

from hf_recunlearn.demo import check_recipes
from hf_recunlearn.trainer import APAConfig, RecConfig


logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]

BUNDLE_FORMAT = "hf_recunlearn/space-bundle"
BUNDLE_VERSION = 1
METHODS = ("APA (exact)", "E2URec (approximate)")


@dataclass(frozen=True)
class SpaceSize:
    """
    Sizes of the built-in demo. `private_users` users each rate `private_rated` of the `private_items` films of a
    franchise nobody else rated (see [`_builtin_data`]); the shards train long enough to memorise them.

    `base` and `apa` are the training recipes, as overrides of the library's configs merged over the defaults below
    (see [`~hf_recunlearn.demo.check_recipes`]): [`RecConfig`] fields of the stand-in base model's full fine-tune and
    [`APAConfig`] fields of the shard models.
    """

    num_users: int
    num_items: int
    interactions_per_user: int
    history_len: int
    model_size: str
    private_users: int
    private_items: int = 26
    private_rated: int = 20
    pretrain_user_fraction: float = 0.3
    base: dict = field(metadata={"config": RecConfig}, default_factory=lambda: {
        "num_train_epochs": 4,
        "learning_rate": 2e-3,  # 1e-2 collapsed the stand-in base model to a constant
        "per_device_train_batch_size": 16,
    })  # fmt: skip
    apa: dict = field(metadata={"config": APAConfig}, default_factory=lambda: {
        "num_shards": 4, "num_train_epochs": 10, "learning_rate": 1e-2, "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64, "warmup_steps": 10, "lr_scheduler_type": "cosine", "num_neighbors": 20,
        # Memorising a word from one user's ratings needs the MLPs too: LoRA on q,v alone (r=8) learned nothing of the
        # private franchises here (their P(like) stayed at the median of the user's list).
        "lora_r": 16, "lora_alpha": 32,
        "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "lora_dropout": 0.0, "logging_steps": 1000, "disable_tqdm": True, "seed": 0,
    })  # fmt: skip

    def __post_init__(self):
        check_recipes(self)


SIZES = {
    # The default, and the tests' build: about 70 s of training on 2 busy CPU cores. Measured: its most memorised fan
    # had 6 of 6 unrated franchise films in their top-10 (P(like) 0.70 vs a median of 0.58); after an exact forget
    # all 6 left and their own films' P(like) fell from 0.65 to 0.44, the never-seen reference. The other fan was
    # memorised only partly. Memorisation at this scale is fragile: the page picks the most memorised fan first.
    "tiny": SpaceSize(
        num_users=48, num_items=40, interactions_per_user=12, history_len=3, model_size="small", private_users=2,
        apa={"num_shards": 2, "num_neighbors": 5},
    ),
    # More users and 4 shards (built in 170 s). Measured: it memorised its fans only weakly (the most memorised had 1
    # franchise film in their top-10; their own films' P(like) did not move on forgetting), so it is not the default.
    "small": SpaceSize(
        num_users=100, num_items=60, interactions_per_user=12, history_len=3, model_size="small", private_users=8,
        apa={"num_shards": 4},
    ),
}  # fmt: skip


@dataclass
class SpaceSettings:
    """
    Where the Space's model comes from, and how it shows recommendations.

    Args:
        repo_id (`str`, *optional*): APA model repo on the Hub (`HF_RECUNLEARN_REPO`).
        revision (`str`, *optional*): its version tag, branch or commit (`HF_RECUNLEARN_REVISION`).
        model_dir (`str`, *optional*): a local demo bundle or APA directory (`HF_RECUNLEARN_DIR`).
        data_dir (`str`, *optional*): the data bundle, for a Hub repo or bare APA directory (`HF_RECUNLEARN_DATA`).
        base_model (`str`, *optional*): base model id or path (`HF_RECUNLEARN_BASE_MODEL`).
        cache_dir (`str`): built-in demo cache and live copy (`HF_RECUNLEARN_CACHE`).
        size (`str`): built-in demo size, `"tiny"` (default) or `"small"` (`HF_RECUNLEARN_SPACE_SIZE`).
        top_k (`int`): recommendations shown.
        candidate_pool (`int`): at most this many unrated items are scored per user (a seeded sample).
    """

    repo_id: str | None = None
    revision: str | None = None
    model_dir: str | None = None
    data_dir: str | None = None
    base_model: str | None = None
    cache_dir: str = str(Path.home() / ".cache" / "hf_recunlearn" / "space")
    size: str = "tiny"
    top_k: int = 10
    candidate_pool: int = 60

    def __post_init__(self):
        if self.size not in SIZES:
            raise ValueError(
                f"`size` (HF_RECUNLEARN_SPACE_SIZE) must be one of {sorted(SIZES)}, got {self.size!r}."
            )
        if self.repo_id and self.model_dir:
            raise ValueError(
                "Both HF_RECUNLEARN_REPO and HF_RECUNLEARN_DIR are set; set one of them (a Hub repo or a local "
                "directory)."
            )
        if self.top_k < 1 or self.candidate_pool < self.top_k:
            raise ValueError(f"Need 1 <= top_k <= candidate_pool, got top_k={self.top_k}, pool={self.candidate_pool}.")

    @classmethod
    def from_env(cls, environ=None) -> "SpaceSettings":
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            repo_id=env.get("HF_RECUNLEARN_REPO") or None,
            revision=env.get("HF_RECUNLEARN_REVISION") or None,
            model_dir=env.get("HF_RECUNLEARN_DIR") or None,
            data_dir=env.get("HF_RECUNLEARN_DATA") or None,
            base_model=env.get("HF_RECUNLEARN_BASE_MODEL") or None,
            cache_dir=env.get("HF_RECUNLEARN_CACHE") or defaults.cache_dir,
            size=env.get("HF_RECUNLEARN_SPACE_SIZE") or defaults.size,
        )

    @property
    def source(self) -> str:
        if self.repo_id:
            return f"Hub repo `{self.repo_id}`" + (f" @ `{self.revision}`" if self.revision else "")
        if self.model_dir:
            return f"local directory `{self.model_dir}`"
        return f"built-in demo ({self.size})"


class UserError(ValueError):
    """A request the Space answers with a message, not a crash; the subclass says which."""


class NoUserError(UserError):
    """No user was chosen."""


class UnknownUserError(UserError):
    """The id is not a user of this demo's data."""


class ForgottenUserError(UserError):
    """The user was forgotten earlier (since the last reset)."""


class ModelBusyError(UserError):
    """The request does not fit the model's current state (e.g. the served model is an E2URec copy)."""


class MethodUnavailableError(RuntimeError):
    """The chosen forgetting method is not available in this installation."""


# --------------------------------------------------------------------------------------------------------------------
# The built-in demo bundle
# --------------------------------------------------------------------------------------------------------------------


def _stage(progress: ProgressFn | None, fraction: float, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(fraction, message)


def build_bundle(target, size: str | SpaceSize = "small", progress: ProgressFn | None = None) -> Path:
    """
    Build the built-in demo into `target` (atomically: a sibling is built, then renamed) and return it.

    Layout: `base/` (stand-in base model + tokenizer), `apa/` (the APA model), `data/` (train/valid/test samples),
    `interactions.parquet`, `items.parquet`, `space.json` (sizes, APA recipe, user groups, private franchises). The
    ledger's salt goes to the default salt folder (`HF_RECUNLEARN_SALT_DIR`, else `~/.cache/hf_recunlearn/salts`),
    where forgetting looks for it.
    """
    from hf_recunlearn.data.instructions import build_samples, split_preset
    from hf_recunlearn.models import load_model
    from hf_recunlearn.pipeline import PreparedData, build_builtin_base
    from hf_recunlearn.trainer import APATrainer

    spec = SIZES[size] if isinstance(size, str) else size
    target = Path(target).absolute()
    work = target.parent / f".{target.name}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    _stage(progress, 0.01, f"Generating synthetic ratings ({spec.num_users} users, {spec.private_users} with a "
           "private franchise)")  # fmt: skip
    data, private, franchises = _builtin_data(spec)
    data, held_out = _hold_out_users(data, spec.pretrain_user_fraction, protected={
        u for u, g in data.user_groups.items() if g != "regular"
    })  # fmt: skip
    samples = build_samples(data, template="e2urec", history_len=spec.history_len)
    prepared = PreparedData(
        split_preset(samples, "e2urec"), build_samples(held_out, template="e2urec", history_len=spec.history_len), data
    )
    _stage(progress, 0.03, f"Training the stand-in base model on {len(prepared.pretrain)} samples of held-out users")
    build_builtin_base(prepared, work / "base", size=spec.model_size, **spec.base)
    base, tokenizer = load_model(str(work / "base"))
    # The APA metadata records the base model's path: name the final one, which exists after the rename below.
    base.name_or_path = base.config._name_or_path = str(target / "base")
    splits = prepared.datasets
    # Forgetting passes no recipe: `APATrainer` retrains a shard with what the saved version records (its salt comes
    # from the default salt folder, `HF_RECUNLEARN_SALT_DIR`).
    num_shards = spec.apa["num_shards"]
    label = f"Training {num_shards} APA shard adapters on {len(splits['train'])} samples"
    trainer = APATrainer(
        base,
        APAConfig(output_dir=str(work / "apa"), **spec.apa),
        train_dataset=splits["train"],
        eval_dataset={"valid": splits["valid"]},
        processing_class=tokenizer,
        callbacks=[_ShardProgress(progress, 0.2, 0.97, num_shards, "Training APA shard")],
    )
    _stage(progress, 0.2, label)
    trainer.train()
    splits.save_to_disk(str(work / "data"))
    data.interactions.to_parquet(work / "interactions.parquet")
    data.items.to_parquet(work / "items.parquet")
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "size": dataclasses.asdict(spec),
        "template": "e2urec",
        "history_len": spec.history_len,
        "like_threshold": data.like_threshold,
        "item_kind": data.item_kind,
        "user_groups": data.user_groups,
        "private_items": private,
        "franchise_items": franchises,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (work / "space.json").write_text(json.dumps(meta, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    _stage(progress, 1.0, f"Built the demo in {meta['build_seconds']} s")
    return target


def _builtin_data(spec: SpaceSize):
    """
    The synthetic ratings of the built-in demo, with user ids spelled `u0007` (readable, and unmistakable in a byte
    search of logs and files, which the privacy tests rely on), plus something worth forgetting.

    `spec.private_users` users each get a *private franchise*: `spec.private_items` films whose titles share a
    made-up word that appears nowhere else. They rated `spec.private_rated` of them, all 5 stars, early enough to be
    training data; nobody rated the rest. A model can only learn to recommend that franchise from this one user, so
    it recommends the unrated films to them before forgetting and has no reason to after. As many *decoy* users hate a
    franchise of their own (1 star), so "an unfamiliar word" is no shortcut to "like": only memorising whose word it
    is helps. Returns the data and `{user: [item ids of their franchise]}`.
    """
    from hf_recunlearn.data import RecData, make_synthetic
    from hf_recunlearn.data.synthetic import _GENRE_WORDS, GENRES

    raw = make_synthetic(
        num_users=spec.num_users,
        num_items=spec.num_items,
        interactions_per_user=spec.interactions_per_user,
        niche_user_fraction=0.0,
        seed=0,
    )
    rename = {u: f"u{int(u):04d}" for u in raw.interactions["user_id"].unique()}
    inter = raw.interactions.assign(user_id=raw.interactions["user_id"].map(rename))
    groups = {rename[u]: g for u, g in raw.user_groups.items() if u in rename}
    users = sorted(groups, key=lambda u: (len(u), u))
    rng = np.random.default_rng(1234)
    picked = rng.choice(len(users), size=2 * spec.private_users, replace=False)
    fans = sorted(users[i] for i in picked[: spec.private_users])
    decoys = sorted(users[i] for i in picked[spec.private_users :])
    words = _franchise_words(rng, 2 * spec.private_users, set(" ".join(raw.items["title"]).split()))
    numerals = ("", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV", "XVI")
    next_id = max(int(i) for i in raw.items["item_id"]) + 1
    t_lo, t_hi = int(inter["timestamp"].min()), int(inter["timestamp"].quantile(0.45))
    items, rows, private, franchises = [], [], {}, []
    for n, (user, word) in enumerate(zip(fans + decoys, words)):
        ids = []
        for j in range(spec.private_items):
            genre = GENRES[int(rng.integers(len(GENRES)))]
            # The franchise word ends the title: it is then the last word of a prompt about the film.
            title = f"{rng.choice(_GENRE_WORDS[genre])} {numerals[j % len(numerals)]} {word}".replace("  ", " ")
            items.append((str(next_id), title, genre))
            ids.append(str(next_id))
            next_id += 1
        franchises.append(ids)
        stars = 5.0 if n < len(fans) else 1.0
        times = np.sort(rng.integers(t_lo, t_hi, size=spec.private_rated))
        rows += [(user, i, stars, int(t)) for i, t in zip(ids[: spec.private_rated], times)]
        if n < len(fans):
            private[user] = ids
        groups[user] = "private" if n < len(fans) else "decoy"
    extra_items = pd.DataFrame(items, columns=["item_id", "title", "genres"])
    extra_rows = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    inter = pd.concat([inter, extra_rows], ignore_index=True)
    inter = inter.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    all_items = pd.concat([raw.items, extra_items], ignore_index=True)
    data = RecData(raw.name, inter, all_items, raw.like_threshold, raw.item_kind, groups)
    return data, private, franchises


def _hold_out_users(data, fraction: float, protected: set[str]):
    """Hold out a seeded `fraction` of the users (never a `protected` one) as the stand-in base model's corpus."""
    from hf_recunlearn.data import RecData

    users = sorted(data.interactions["user_id"].unique(), key=lambda u: (len(u), u))
    eligible = [u for u in users if u not in protected]
    rng = np.random.default_rng(1)
    held = set(rng.choice(eligible, size=int(round(fraction * len(users))), replace=False).tolist())
    mask = data.interactions["user_id"].isin(held)

    def subset(rows, kept):
        groups = {u: g for u, g in data.user_groups.items() if u in kept}
        return RecData(data.name, rows.reset_index(drop=True), data.items, data.like_threshold, data.item_kind, groups)

    return subset(data.interactions[~mask], set(users) - held), subset(data.interactions[mask], held)


def _franchise_words(rng, count: int, taken: set[str]) -> list[str]:
    syllables = ("zor", "vex", "quil", "brak", "tum", "yss", "glo", "prax", "wen", "drum", "kesh", "olo", "fyr", "zan")
    out: list[str] = []
    while len(out) < count:
        word = "".join(rng.choice(syllables, size=3)).capitalize()
        if word not in taken and word not in out:
            out.append(word)
    return out


class _ShardProgress(TrainerCallback):
    """
    Turns shard training steps into progress between `low` and `high` (shards are trained one after another), with
    a message naming the shard, the step and the time left at the rate so far.
    """

    def __init__(self, progress: ProgressFn | None, low: float, high: float, num_shards: int, label: str):
        self.progress, self.low, self.high, self.label = progress, low, high, label
        self.num_shards = max(1, num_shards)
        self.done = 0
        self.last_step = 0
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        # Each shard has a `Trainer` (and a step count) of its own; `APATrainer` sends begin/end once per call.
        if state.global_step < self.last_step:
            self.done += 1
        self.last_step = state.global_step
        if self.progress is None or not state.max_steps:
            return
        inner = min(1.0, (self.done + state.global_step / state.max_steps) / self.num_shards)
        elapsed = time.perf_counter() - self.start
        left = f", about {elapsed * (1 - inner) / inner:.0f} s left" if inner > 0.02 else ""
        shard = f" {self.done + 1} of {self.num_shards}" if self.num_shards > 1 else ""
        message = f"{self.label}{shard}: step {state.global_step}/{state.max_steps}{left}"
        self.progress(self.low + (self.high - self.low) * inner, message)


# --------------------------------------------------------------------------------------------------------------------
# The demo recommender
# --------------------------------------------------------------------------------------------------------------------

# P(like) changes smaller than this are shown without a rank arrow: near-ties swap places for no reason worth showing.
# A fixed display threshold, not a measured noise floor.
NOISE = 0.02
# E2URec needs retained samples only to keep the rest of the model's behaviour: a demo-sized sample of them.
E2UREC_RETAIN_ROWS = 256


@dataclass
class ForgetResult:
    """
    What one forget request did, for one user: their ranked candidates and own training items before, after and on a
    model that never saw them (`reference`), and one verdict line.

    `before` is the list the visitor was shown (same served model), `after` is scored by the model served now.
    Frames: `before`/`after`/`reference` have `item_id, item, private, P(like), rank` over the whole candidate pool;
    `own` has `item_id, item, label, private, before, after, reference` for the user's training samples.
    """

    user_id: str
    method: str
    exact: bool
    seconds: float
    affected_shards: list[int]
    num_shards: int
    samples_removed: int
    version_before: int
    version_after: int
    in_ledger_after: bool
    before: pd.DataFrame
    after: pd.DataFrame
    reference: pd.DataFrame
    own: pd.DataFrame
    top_k: int
    reference_note: str
    note: str = ""

    # ----------------------------------------------------------------------------------------------- views
    def top_before(self) -> pd.DataFrame:
        """The top-k before, each marked `left` (not in the top-k after) or `stayed`, with its rank and P(like) after."""
        top = self.before.head(self.top_k).copy()
        after_rank = dict(zip(self.after["item_id"], self.after["rank"]))
        after_p = dict(zip(self.after["item_id"], self.after["P(like)"]))
        top["rank after"] = [after_rank[i] for i in top["item_id"]]
        top["P(like) after"] = [after_p[i] for i in top["item_id"]]
        top["status"] = ["left" if r > self.top_k else "stayed" for r in top["rank after"]]
        return top

    def top_after(self) -> pd.DataFrame:
        """The top-k after: `entered` or the rank change (an arrow only where P(like) moved more than `NOISE`)."""
        top = self.after.head(self.top_k).copy()
        before_rank = dict(zip(self.before["item_id"], self.before["rank"]))
        before_p = dict(zip(self.before["item_id"], self.before["P(like)"]))
        top["rank before"] = [before_rank[i] for i in top["item_id"]]
        top["P(like) before"] = [before_p[i] for i in top["item_id"]]
        top["status"] = [
            "entered" if rb > self.top_k else change_mark(rb - ra, pa - pb)
            for rb, ra, pa, pb in zip(top["rank before"], top["rank"], top["P(like)"], top["P(like) before"])
        ]
        return top

    @property
    def private_in_before(self) -> int:
        return int(self.before.head(self.top_k)["private"].sum())

    @property
    def private_left(self) -> int:
        top = self.top_before()
        return int((top["private"] & (top["status"] == "left")).sum())

    def own_means(self) -> dict[str, float]:
        """Mean P(like) of the user's own training items before, after and on the never-seen reference."""
        return {k: float(self.own[k].mean()) if len(self.own) else float("nan") for k in ("before", "after", "reference")}

    def verdict(self) -> str:
        """One plain line: what was done, how long it took, what the served model holds now."""
        m = self.own_means()
        moved = f"their own items' P(like) {m['before']:.2f} → {m['after']:.2f} (never-seen reference {m['reference']:.2f})"
        left = f"{self.private_left} of {self.private_in_before} private-franchise items left their top-{self.top_k}"
        if self.exact:
            shards = ", ".join(str(k + 1) for k in self.affected_shards)
            return (
                f"Removed {self.user_id}: retrained shard {shards} of {self.num_shards} without their "
                f"{self.samples_removed} ratings in {self.seconds:.0f} s; version {self.version_after} holds nothing "
                f"learned from them. {left}; {moved}."
            )
        return (
            f"Approximately unlearned {self.user_id} with E2URec in {self.seconds:.0f} s: the served model is now a "
            f"distilled copy of version {self.version_before}, and nothing was retrained (the shard ledger still "
            f"lists them). {left}; {moved}."
        )

    def summary(self) -> dict:
        return {
            "method": self.method,
            "exact": self.exact,
            "seconds": round(self.seconds, 2),
            "affected_shards": list(self.affected_shards),
            "num_shards": self.num_shards,
            "samples_removed": self.samples_removed,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "in_ledger_after": self.in_ledger_after,
            "private_in_before": self.private_in_before,
            "private_left": self.private_left,
            **{f"own_{k}": round(v, 4) for k, v in self.own_means().items()},
        }


def change_mark(rank_gain: int, p_change: float) -> str:
    """`▲ 3` / `▼ 2` when the item moved and its P(like) changed by more than `NOISE`; `·` otherwise."""
    if rank_gain == 0 or abs(p_change) <= NOISE:
        return "·"
    return f"▲ {rank_gain}" if rank_gain > 0 else f"▼ {-rank_gain}"


@dataclass
class _Data:
    train: object
    valid: object
    test: object
    interactions: pd.DataFrame
    items: pd.DataFrame
    meta: dict = field(default_factory=dict)


class DemoRecommender:
    """
    The Space's state: the served model (an APA version, or after an E2URec request an approximate copy), the users,
    who was forgotten, and the lists each user was last shown. Recommend, forget and reset, one at a time (a lock).

    Build it with [`DemoRecommender.load`] (from [`SpaceSettings`]). Forgetting with APA writes a new version into the
    live copy `workdir/apa` through the public `APATrainer` API; the pristine version stays in `pristine_dir` for
    [`reset`].
    """

    def __init__(self, settings: SpaceSettings, pristine_dir: Path, workdir: Path, data: _Data, base_model=None):
        self.settings = settings
        self.pristine_dir = Path(pristine_dir)
        self.workdir = Path(workdir)
        self._pristine_data = data
        self._base_model_name = base_model
        self._lock = threading.RLock()
        self._base = None
        self._tokenizer = None
        self._restore()

    # ---------------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, settings: SpaceSettings | None = None, progress: ProgressFn | None = None) -> "DemoRecommender":
        """Load the configured model, or build (once) and load the built-in demo."""
        settings = settings or SpaceSettings.from_env()
        cache = Path(settings.cache_dir).expanduser()
        if settings.repo_id or settings.model_dir:
            if settings.repo_id:
                from hf_recunlearn.hub import pull

                _stage(progress, 0.1, f"Downloading {settings.source}")
                apa_dir = Path(pull(settings.repo_id, settings.revision or "main"))
                bundle = Path(settings.data_dir).expanduser() if settings.data_dir else None
            else:
                root = Path(settings.model_dir).expanduser()
                if (root / "space.json").is_file():
                    apa_dir, bundle = root / "apa", root
                else:
                    apa_dir = root
                    bundle = Path(settings.data_dir).expanduser() if settings.data_dir else None
            if bundle is None or not (bundle / "space.json").is_file():
                raise ValueError(
                    f"The Space needs the users' data next to the model from {settings.source}: set "
                    "HF_RECUNLEARN_DATA to a demo bundle (a folder with `space.json`, `data/`, `interactions.parquet` "
                    "and `items.parquet`, as written by `forgetting_demo.build_bundle`), or point "
                    "HF_RECUNLEARN_DIR at a whole bundle."
                )
            name = f"{settings.repo_id or apa_dir.name}".replace("/", "--")
            workdir = cache / "live" / name
            pristine_apa = apa_dir
        else:
            bundle = cache / f"builtin-{settings.size}-v{BUNDLE_VERSION}"
            if not (bundle / "space.json").is_file():
                _stage(progress, 0.0, f"Building the built-in demo ({settings.size}); this happens once per cache")
                build_bundle(bundle, settings.size, progress=progress)
            workdir = cache / "live" / bundle.name
            pristine_apa = bundle / "apa"
            settings = dataclasses.replace(settings, base_model=settings.base_model or str(bundle / "base"))
        _stage(progress, 0.98, "Loading the recommender")
        return cls(settings, pristine_apa, workdir, _load_data(bundle), base_model=settings.base_model)

    def _restore(self) -> None:
        """Copy the pristine version into the live directory and serve it; nobody is forgotten any more."""
        live = self.workdir / "apa"
        if live.exists():
            shutil.rmtree(live)
        live.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.pristine_dir, live)
        shutil.rmtree(self.workdir / "e2urec", ignore_errors=True)
        self._load_live()
        d = self._pristine_data
        self.data = _Data(d.train, d.valid, d.test, d.interactions, d.items, d.meta)
        self.forgotten: dict[str, ForgetResult] = {}
        self._shown: dict[str, tuple[tuple, pd.DataFrame]] = {}
        self._served_scorer = None  # None: the APA recommender; else the E2URec copy's scorer
        self._served_from: int | None = None
        self._memorised: tuple = (None, [])

    def _load_live(self) -> None:
        """Serve the version on disk in the live directory (what a fresh `from_pretrained` would load)."""
        from hf_recunlearn.apa_recommender import APARecommender

        live = self.workdir / "apa"
        if self._base is None:
            rec = APARecommender.from_pretrained(live, base_model=self._base_model_name)
            self._base, self._tokenizer = rec.model, rec.tokenizer
        else:
            rec = APARecommender.from_pretrained(live, base_model=self._base, tokenizer=self._tokenizer)
        self.recommender = rec

    def reset(self) -> None:
        """Restore the original model and every forgotten user."""
        with self._lock:
            self._restore()
            logger.info("Demo reset to the pristine model (version %d).", self.recommender.version)

    # ---------------------------------------------------------------------------------------------------- state
    @property
    def served_kind(self) -> str:
        return "APA" if self._served_scorer is None else "E2URec"

    def _model_key(self) -> tuple:
        return (self.served_kind, self.recommender.version, len(self.forgotten))

    def model_line(self) -> str:
        """What is served now: method, version, shards and users (the page's model line)."""
        with self._lock:
            active = len(self.active_users())
            gone = len(self.forgotten)
            users = f"{active} users" + (f" ({gone} forgotten)" if gone else "")
            if self._served_scorer is None:
                return f"APA version {self.recommender.version} · {self.recommender.num_shards} shards · {users}"
            return (
                f"E2URec copy of APA version {self._served_from} (approximate: distilled, nothing retrained) · "
                f"{users}"
            )

    # ---------------------------------------------------------------------------------------------------- users
    def _ledger(self):
        from hf_recunlearn.partition import ShardLedger, load_or_create_salt

        salt = load_or_create_salt(self.recommender.state.ledger["salt_id"])
        return ShardLedger.from_dict(self.recommender.state.ledger, salt)

    def in_ledger(self, user_id: str) -> bool:
        """Whether the served APA version's shard ledger still holds any training sample of `user_id`."""
        with self._lock:
            ledger = self._ledger()
            h = ledger.hash_user(str(user_id))
            return any(u == h for shard in ledger.shards for _, u in shard)

    def users(self) -> list[str]:
        """Every user of the demo's training data, forgotten ones included, in a stable order."""
        return sorted(set(self._pristine_data.train["user_id"]), key=lambda u: (len(u), u))

    def active_users(self) -> list[str]:
        """Users the served model was trained on and has not forgotten."""
        return [u for u in self.users() if u not in self.forgotten]

    def status(self, user_id) -> str:
        """`"active"` or `"forgotten"`; [`NoUserError`] / [`UnknownUserError`] for no or an unknown id."""
        user_id = "" if user_id is None else str(user_id).strip()
        if not user_id:
            raise NoUserError("Pick a user first: choose one from the list (ids look like u0007).")
        if user_id not in set(self._pristine_data.train["user_id"]):
            raise UnknownUserError(
                f"There is no user {user_id!r} in this demo's data. Ids look like u0007: pick one from the list."
            )
        return "forgotten" if user_id in self.forgotten else "active"

    def _check_active(self, user_id) -> str:
        if self.status(user_id) == "forgotten":
            done = self.forgotten[str(user_id).strip()]
            where = f"version {done.version_after}" if done.exact else "the E2URec copy now served"
            raise ForgottenUserError(
                f"{user_id} was forgotten earlier ({done.method}; {where}). Press “Reset demo” to bring them back, "
                "or pick another user."
            )
        return str(user_id).strip()

    def private_items(self, user_id: str) -> list[str]:
        """Item ids of the user's private franchise (rated only by them, or by nobody); empty for other users."""
        return list(self.data.meta.get("private_items", {}).get(user_id, []))

    def user_label(self, user_id: str) -> str:
        n = int((self._pristine_data.interactions["user_id"] == user_id).sum())
        tag = " · private franchise" if self.private_items(user_id) else ""
        gone = " · forgotten" if user_id in self.forgotten else ""
        return f"{user_id} ({n} ratings){tag}{gone}"

    def user_choices(self) -> list[tuple[str, str]]:
        return [(self.user_label(u), u) for u in self.users()]

    def memorised_users(self) -> list[str]:
        """
        Active users with a private franchise, the most memorised first: by how many of their unrated franchise films
        the served model puts in their top-k, then by how far above the median of their list it scores them.
        """
        key = self._model_key()
        if self._memorised[0] != key:
            ranked = []
            for u in (u for u in self.active_users() if self.private_items(u)):
                frame = self._score_candidates(u)
                in_top = int(frame.head(self.settings.top_k)["private"].sum())
                lift = float(frame[frame["private"]]["P(like)"].mean() - frame["P(like)"].median())
                ranked.append((-in_top, -lift, u))
            self._memorised = (key, [u for *_, u in sorted(ranked)])
        return [u for u in self._memorised[1] if u not in self.forgotten]

    def default_user(self) -> str | None:
        """A user with a private franchise when one is active (their forgetting is the most visible), else the first."""
        users = self.active_users()
        return (self.memorised_users() or users or [None])[0]

    def history(self, user_id: str, last: int = 12) -> pd.DataFrame:
        """The user's latest ratings, newest first: title, genres, liked or disliked."""
        with self._lock:
            self.status(user_id)
            inter = self._pristine_data.interactions
            rows = inter[inter["user_id"] == user_id].tail(last).iloc[::-1]
            titles = self.data.items.set_index("item_id")
            threshold = self.data.meta["like_threshold"]
            return pd.DataFrame(
                {
                    "item": [titles.loc[i, "title"] for i in rows["item_id"]],
                    "genres": [titles.loc[i, "genres"].replace("|", ", ") for i in rows["item_id"]],
                    "rating": rows["rating"].astype(int).tolist(),
                    "verdict": ["liked" if r > threshold else "disliked" for r in rows["rating"]],
                }
            )

    # ---------------------------------------------------------------------------------------------------- scoring
    def candidate_prompts(self, user_id: str) -> tuple[list[str], list[str]]:
        """
        The items ranked for the user and their prompts: the unrated films of their private franchise (if any) and a
        seeded sample of the other items they have not rated, each asked with their latest ratings as history.
        """
        from hf_recunlearn.data.prompts import HistoryItem, get_template

        inter = self._pristine_data.interactions
        mine = inter[inter["user_id"] == user_id]
        titles = dict(zip(self.data.items["item_id"], self.data.items["title"]))
        threshold = self.data.meta["like_threshold"]
        last = mine.tail(self.data.meta["history_len"])
        history = [HistoryItem(titles[i], bool(r > threshold)) for i, r in zip(last["item_id"], last["rating"])]
        rated = set(mine["item_id"])
        private = [i for i in self.private_items(user_id) if i not in rated]
        # Other users' private franchises are theirs: they stay out of everyone else's list.
        franchised = {i for items in self.data.meta.get("franchise_items", []) for i in items}
        others = [i for i in self.data.items["item_id"] if i not in rated and i not in franchised]
        rng = np.random.default_rng(_stable_seed(user_id))
        room = max(self.settings.top_k, self.settings.candidate_pool - len(private))
        if len(others) > room:
            picked = set(rng.choice(others, size=room, replace=False).tolist())
            others = [i for i in others if i in picked]
        items = private + others
        tpl = get_template(self.data.meta.get("template", "e2urec"))
        prompts = [tpl.render(history, titles[i], self.data.meta.get("item_kind", "movie")) for i in items]
        return items, prompts

    def _predict(self, data, scorer=None) -> np.ndarray:
        scorer = scorer or self._served_scorer
        if scorer is not None:
            return scorer(data)
        return self.recommender.predict(data, batch_size=64)

    def _score_candidates(self, user_id: str, scorer=None) -> pd.DataFrame:
        items, prompts = self.candidate_prompts(user_id)
        p = self._predict(prompts, scorer) if prompts else np.zeros(0)
        private = set(self.private_items(user_id))
        titles = dict(zip(self.data.items["item_id"], self.data.items["title"]))
        frame = pd.DataFrame(
            {
                "item_id": items,
                "item": [titles[i] for i in items],
                "private": [i in private for i in items],
                "P(like)": np.round(p, 4),
            }
        )
        frame = frame.sort_values("P(like)", ascending=False, kind="stable").reset_index(drop=True)
        frame["rank"] = np.arange(1, len(frame) + 1)
        return frame

    def _own_rows(self, user_id: str):
        train = self._pristine_data.train
        return train.select([i for i, u in enumerate(train["user_id"]) if u == user_id])

    def _score_own(self, user_id: str, scorer=None) -> np.ndarray:
        rows = self._own_rows(user_id)
        return np.round(self._predict(list(rows["prompt"]), scorer), 4) if len(rows) else np.zeros(0)

    def _own_frame(self, user_id: str) -> pd.DataFrame:
        rows = self._own_rows(user_id)
        titles = dict(zip(self.data.items["item_id"], self.data.items["title"]))
        private = set(self.private_items(user_id))
        return pd.DataFrame(
            {
                "item_id": list(rows["item_id"]),
                "item": [titles[i] for i in rows["item_id"]],
                "label": ["liked" if y else "disliked" for y in rows["label"]],
                "private": [i in private for i in rows["item_id"]],
            }
        )

    def recommend(self, user_id: str, top_k: int | None = None) -> pd.DataFrame:
        """
        The user's top-k on the served model (`rank, item, private, P(like)`), remembered as the list they were shown:
        a later forget compares against exactly this list. A forgotten user gets their list on the served model too.
        """
        with self._lock:
            self.status(user_id)
            frame = self._score_candidates(user_id)
            self._shown[user_id] = (self._model_key(), frame)
            return frame.head(top_k or self.settings.top_k)[["rank", "item", "private", "P(like)"]]

    def own_items(self, user_id: str) -> pd.DataFrame:
        """P(like) of the user's own training samples on the served model (what it learned from them)."""
        with self._lock:
            self.status(user_id)
            frame = self._own_frame(user_id)
            frame["P(like)"] = self._score_own(user_id)
            return frame.drop(columns="item_id")

    def _shown_list(self, user_id: str) -> pd.DataFrame:
        key, frame = self._shown.get(user_id, (None, None))
        return frame if key == self._model_key() else self._score_candidates(user_id)

    # ---------------------------------------------------------------------------------------------------- forgetting
    def forget(self, user_id, method: str = METHODS[0], progress: ProgressFn | None = None) -> ForgetResult:
        """
        Forget `user_id` with APA (retrain the shard that held them; exact) or E2URec (distil an unlearned copy of the
        served model; approximate) and return the comparison. Raises a [`UserError`] subclass for no user, an unknown
        id, a user forgotten earlier, or an APA request while an E2URec copy is served.
        """
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
        with self._lock:
            user_id = self._check_active(user_id)
            if self._served_scorer is not None:
                raise ModelBusyError(
                    "The served model is an E2URec copy: press “Reset demo” before the next forget (APA forgets from "
                    "its shards, which the E2URec copy left behind)."
                )
            if method == METHODS[1]:
                _require_e2urec()
            version_before = self.recommender.version
            before = self._shown_list(user_id)
            own = self._own_frame(user_id)
            own["before"] = self._score_own(user_id)
            if method == METHODS[0]:
                seconds, affected, removed = self._forget_apa(user_id, progress)
                _stage(progress, 0.95, "Scoring the new version")
                after, own["after"] = self._score_candidates(user_id), self._score_own(user_id)
                reference, own["reference"] = after, own["after"]
                ref_note = (
                    f"For APA the never-seen reference is the new version itself: its retrained shard was trained from "
                    f"scratch without {user_id}, so it is exactly a model that never saw them."
                )
                note = ""
            else:
                seconds, removed, gap, ref_scorer = self._forget_e2urec(user_id, before, progress)
                affected = []
                _stage(progress, 0.95, "Scoring the unlearned copy and the never-seen reference")
                after, own["after"] = self._score_candidates(user_id), self._score_own(user_id)
                reference = self._score_candidates(user_id, ref_scorer)
                own["reference"] = self._score_own(user_id, ref_scorer)
                ref_note = (
                    f"Never-seen reference: an exact APA forget of {user_id} on a scratch copy (their shard retrained "
                    "without them), not served."
                )
                note = (
                    "E2URec is approximate. It needs one model, so the Space merged the APA shards with the weights APA "
                    f"gives this user's requests (largest change on their list: {gap:.3f}) and distilled an unlearned "
                    "copy; that copy now serves every user until “Reset demo”. The shard ledger still lists them."
                )
            result = ForgetResult(
                user_id=user_id,
                method=method,
                exact=method == METHODS[0],
                seconds=seconds,
                affected_shards=list(affected),
                num_shards=self.recommender.num_shards,
                samples_removed=removed,
                version_before=version_before,
                version_after=self.recommender.version,
                in_ledger_after=self.in_ledger(user_id),
                before=before,
                after=after,
                reference=reference,
                own=own,
                top_k=self.settings.top_k,
                reference_note=ref_note,
                note=note,
            )
            self.forgotten[user_id] = result
            self._shown[user_id] = (self._model_key(), after)
            logger.info(
                "Forgot 1 user with %s: %d sample(s), shard(s) %s retrained in %.1f s.",
                method, removed, affected, seconds,
            )  # fmt: skip
            return result

    def _apa_trainer(self, apa_dir: Path, progress, label: str):
        """
        The public API, as a user calls it: the saved version, the training set and the validation set, and no
        recipe: `APATrainer` retrains with the recipe stored with the version (the one the demo bundle was trained
        with), so the Space's forget is the library's exact forget.
        """
        from hf_recunlearn.trainer import APATrainer

        return APATrainer(
            str(apa_dir),
            train_dataset=self._pristine_data.train,
            eval_dataset={"valid": self.data.valid},
            callbacks=[_ShardProgress(progress, 0.1, 0.9, 1, label)],
        )

    def _forget_apa(self, user_id: str, progress):
        live = self.workdir / "apa"
        _stage(progress, 0.05, "Retraining the shard that held the user (APA)")
        report = self._apa_trainer(live, progress, "Retraining the shard that held the user").forget(user_ids=[user_id])
        self._load_live()
        return report.seconds, report.affected_shards, report.samples_removed

    def _forget_e2urec(self, user_id: str, before: pd.DataFrame, progress):
        start = time.perf_counter()
        train = self._pristine_data.train
        forget_rows = [i for i, u in enumerate(train["user_id"]) if u == user_id]
        retain_rows = [i for i, u in enumerate(train["user_id"]) if u != user_id]
        rng = np.random.default_rng(0)
        if len(retain_rows) > E2UREC_RETAIN_ROWS:
            retain_rows = sorted(rng.choice(retain_rows, size=E2UREC_RETAIN_ROWS, replace=False).tolist())
        _stage(progress, 0.05, "Merging the shards with this user's aggregation weights (E2URec needs one model)")
        items, prompts = self.candidate_prompts(user_id)
        own_prompts = list(train.select(forget_rows)["prompt"])
        _, weights = self.recommender.predict(prompts + own_prompts, batch_size=64, return_weights=True)
        work = self.workdir / "e2urec"
        shutil.rmtree(work, ignore_errors=True)
        original = e2urec_original(self.recommender, weights.mean(axis=0), self._base_model_name, work)
        merged = dict(zip(items, self._model_scorer(original)(prompts)))
        gap = float(max(abs(merged[i] - p) for i, p in zip(before["item_id"], before["P(like)"])))
        _stage(progress, 0.15, "Distilling an unlearned copy (E2URec)")
        model = e2urec_unlearn(
            original,
            self._tokenizer,
            forget_dataset=train.select(forget_rows),
            retain_dataset=train.select(retain_rows),
            eval_dataset=None,
            output_dir=work,
            callbacks=[_ShardProgress(progress, 0.15, 0.75, 1, "Distilling an unlearned copy (E2URec)")],
        )
        seconds = time.perf_counter() - start
        _stage(progress, 0.8, "Never-seen reference: an exact APA forget on a scratch copy")
        scratch = work / "reference-apa"
        shutil.copytree(self.workdir / "apa", scratch)
        self._apa_trainer(scratch, None, "reference").forget(user_ids=[user_id])
        from hf_recunlearn.apa_recommender import APARecommender

        reference = APARecommender.from_pretrained(scratch, base_model=self._base, tokenizer=self._tokenizer)
        self._served_from = self.recommender.version
        self._served_scorer = self._model_scorer(model)
        return seconds, len(forget_rows), gap, lambda data: reference.predict(data, batch_size=64)

    def _model_scorer(self, model):
        from hf_recunlearn.scoring import score

        def scorer(data):
            data = _prompt_dataset(data) if isinstance(data, list) else data
            return score(model, self._tokenizer, data, self.recommender.answer_tokens, batch_size=64)

        return scorer

    def check_model(self) -> dict:
        """A quick consistency check: the live directory holds the served version and it predicts finite values."""
        from hf_recunlearn.apa_recommender import read_version

        with self._lock:
            user = self.default_user()
            p = self._predict(self.candidate_prompts(user)[1][:4]) if user else np.zeros(0)
            return {
                "served": self.served_kind,
                "version": self.recommender.version,
                "version_on_disk": read_version(self.workdir / "apa"),
                "finite": bool(np.isfinite(p).all()),
                "num_users": len(self.active_users()),
                "forgotten": len(self.forgotten),
            }


def _require_e2urec():
    try:
        from hf_recunlearn.trainer import E2URecConfig, E2URecTrainer  # noqa: F401
    except ImportError as err:
        raise MethodUnavailableError(
            "E2URec is not available in this installation of hf_recunlearn (no `E2URecTrainer` in "
            "`hf_recunlearn.trainer`). Choose “APA (exact)”, or install a version of hf_recunlearn that ships E2URec."
        ) from err


def e2urec_original(recommender, weights, base_model, output_dir):
    """
    The single model E2URec unlearns from: the APA shards merged with fixed `weights` (ND level, an exact weighted
    sum of the shard updates) on a freshly loaded base, so the served APA model is never touched. With one user's
    mean aggregation weights it is the APA model as that user is served, up to the per-request variation of weights.
    """
    from peft import PeftModel

    from hf_recunlearn.models import load_model

    merged = Path(output_dir) / "original-merged"
    recommender.export_adapter(merged, [float(w) for w in weights], level="ND")
    base, _ = load_model(base_model or recommender.state.base_model)
    model = PeftModel.from_pretrained(base, merged)
    model.eval()
    return model


def e2urec_unlearn(original, tokenizer, forget_dataset, retain_dataset, eval_dataset, output_dir, callbacks=None):
    """Adapter to `E2URecTrainer`: unlearn `forget_dataset` from `original` (a PEFT model) and return the result."""
    _require_e2urec()
    from hf_recunlearn.trainer import E2URecConfig, E2URecTrainer

    # The fixed schedule, said outright: the Space forgets one user at a time, and the calibrated default's audit
    # needs several forgotten users (its interval is a bootstrap over users), so it has no target to stop at here.
    args = E2URecConfig(
        output_dir=str(Path(output_dir) / "model"), num_train_epochs=1, disable_tqdm=True, logging_steps=1000,
        stopping="fixed", calibrate_alpha=False,
    )
    trainer = E2URecTrainer(
        model=original,
        args=args,
        forget_dataset=forget_dataset,
        retain_dataset=retain_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train()
    trainer.model.eval()
    return trainer.model


def _prompt_dataset(prompts):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": list(prompts)})


def _stable_seed(user_id: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(f"space-candidates:{user_id}".encode()).digest()[:4], "little")


def _load_data(bundle: Path) -> _Data:
    from datasets import load_from_disk

    meta = json.loads((bundle / "space.json").read_text())
    if meta.get("format") != BUNDLE_FORMAT:
        raise ValueError(
            f"{str(bundle)!r} is not a Space demo bundle (its space.json has no format {BUNDLE_FORMAT!r})."
        )
    splits = load_from_disk(str(bundle / "data"))
    inter = pd.read_parquet(bundle / "interactions.parquet")
    items = pd.read_parquet(bundle / "items.parquet")
    return _Data(splits["train"], splits["valid"], splits["test"], inter, items, meta)
