"""The logic behind the Gradio Space: recommend for a user, forget them, compare before and after.

`spaces/app.py` is a thin Gradio layer over [`DemoRecommender`]. Everything here is plain Python (pandas frames,
dataclasses, a matplotlib figure), so it is tested without a browser.

Where the model comes from (environment variables, read by [`SpaceSettings.from_env`]):

- `HF_RECUNLEARN_DIR`: a local *demo bundle* (`apa/`, `data/`, `space.json`, as written by [`build_bundle`]) or
  a bare APA directory (then `HF_RECUNLEARN_DATA` names the data bundle).
- `HF_RECUNLEARN_REPO` (+ `HF_RECUNLEARN_REVISION`): an APA model repo on the Hub; `HF_RECUNLEARN_DATA` names the
  data (APA forgetting retrains shards on their remaining samples, so it needs the training set).
- `HF_RECUNLEARN_BASE_MODEL`: the base model, when not the one recorded in the APA metadata.
- Nothing set: the built-in demo (synthetic users, a stand-in base model, APA with K shards and a user partition) is
  built once and cached in `HF_RECUNLEARN_CACHE` (default `~/.cache/hf_recunlearn/space`);
  `HF_RECUNLEARN_SPACE_SIZE` = `small` (default) or `tiny` (seconds; for tests).

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


logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]

BUNDLE_FORMAT = "hf_recunlearn/space-bundle"
BUNDLE_VERSION = 1
METHODS = ("APA (exact)", "E2URec (approximate)")


@dataclass(frozen=True)
class SpaceSize:
    """Sizes of the built-in demo: `small` learns on 2 CPU cores in under a minute; `tiny` only runs the mechanics."""

    num_users: int
    num_items: int
    interactions_per_user: int
    history_len: int
    model_size: str
    base_epochs: float
    apa_epochs: float
    num_shards: int
    learning_rate: float = 2e-3
    pretrain_user_fraction: float = 0.3
    batch_size: int = 16
    num_neighbors: int = 20


SIZES = {
    "tiny": SpaceSize(
        num_users=40, num_items=40, interactions_per_user=10, history_len=3, model_size="tiny", base_epochs=1,
        apa_epochs=1, num_shards=2, num_neighbors=5,
    ),
    # Measured on 2 shared CPU cores: built in ~40 s, test AUC 0.64; forgetting a user retrains 1 of 4 shards in ~7 s.
    "small": SpaceSize(
        num_users=300, num_items=160, interactions_per_user=40, history_len=3, model_size="small", base_epochs=3,
        apa_epochs=3, num_shards=4,
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
        size (`str`): built-in demo size, `"small"` or `"tiny"` (`HF_RECUNLEARN_SPACE_SIZE`).
        top_k (`int`): recommendations shown.
        candidate_pool (`int`): at most this many unrated items are scored per user (a seeded sample).
    """

    repo_id: str | None = None
    revision: str | None = None
    model_dir: str | None = None
    data_dir: str | None = None
    base_model: str | None = None
    cache_dir: str = str(Path.home() / ".cache" / "hf_recunlearn" / "space")
    size: str = "small"
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


class UnknownUserError(ValueError):
    """The user is not (or no longer) in the model: already forgotten, or never in its training data."""


class MethodUnavailableError(RuntimeError):
    """The chosen forgetting method is not available in this installation."""


# --------------------------------------------------------------------------------------------------------------------
# The built-in demo bundle
# --------------------------------------------------------------------------------------------------------------------


def _stage(progress: ProgressFn | None, fraction: float, message: str) -> None:
    logger.info(message)
    if progress is not None:
        progress(fraction, message)


def _apa_args(size: SpaceSize, output_dir, salt_dir) -> dict:
    """The APA training arguments of the built-in demo (stored in the bundle: forgetting must retrain with them)."""
    return dict(
        output_dir=str(output_dir),
        num_shards=size.num_shards,
        num_train_epochs=size.apa_epochs,
        learning_rate=size.learning_rate,
        per_device_train_batch_size=size.batch_size,
        per_device_eval_batch_size=64,
        warmup_steps=10,
        lr_scheduler_type="cosine",
        num_neighbors=size.num_neighbors,
        logging_steps=1000,
        disable_tqdm=True,
        seed=0,
        salt_dir=str(salt_dir),
    )


def build_bundle(target, size: str | SpaceSize = "small", salt_dir=None, progress: ProgressFn | None = None) -> Path:
    """
    Build the built-in demo into `target` (atomically: a sibling is built, then renamed) and return it.

    Layout: `base/` (stand-in base model + tokenizer), `apa/` (the APA model), `data/` (train/valid/test samples),
    `interactions.parquet`, `items.parquet`, `space.json` (sizes, APA arguments, user groups).
    """
    from .pipeline import build_builtin_base, prepare_data
    from .trainer import APAConfig, APATrainer

    spec = SIZES[size] if isinstance(size, str) else size
    target = Path(target)
    salt_dir = Path(salt_dir) if salt_dir is not None else target.parent / "salts"
    work = target.parent / f".{target.name}.building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    start = time.perf_counter()
    _stage(progress, 0.02, f"Generating synthetic ratings ({spec.num_users} users)")
    prepared = prepare_data(
        _builtin_data(spec),
        preset="e2urec",
        template="e2urec",
        history_len=spec.history_len,
        pretrain_user_fraction=spec.pretrain_user_fraction,
        seed=0,
    )
    _stage(progress, 0.08, f"Training the stand-in base model on {len(prepared.pretrain)} held-out samples")
    build_builtin_base(
        prepared,
        work / "base",
        size=spec.model_size,
        epochs=spec.base_epochs,
        learning_rate=spec.learning_rate,
        batch_size=spec.batch_size,
    )
    from .models import load_model

    base, tokenizer = load_model(str(work / "base"))
    splits = prepared.datasets
    args = _apa_args(spec, work / "apa", salt_dir)
    trainer = APATrainer(
        base,
        APAConfig(**args),
        train_dataset=splits["train"],
        eval_dataset={"valid": splits["valid"]},
        processing_class=tokenizer,
        callbacks=[_ShardProgress(progress, 0.35, 0.95, spec.num_shards, "Training APA shard adapters")],
    )
    _stage(progress, 0.35, f"Training {spec.num_shards} APA shard adapters on {len(splits['train'])} samples")
    trainer.train()
    splits.save_to_disk(str(work / "data"))
    data = prepared.data
    data.interactions.to_parquet(work / "interactions.parquet")
    data.items.to_parquet(work / "items.parquet")
    meta = {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "size": dataclasses.asdict(spec),
        "apa_args": {k: v for k, v in args.items() if k not in ("output_dir", "salt_dir")},
        "template": "e2urec",
        "history_len": spec.history_len,
        "like_threshold": data.like_threshold,
        "item_kind": data.item_kind,
        "user_groups": data.user_groups,
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    (work / "space.json").write_text(json.dumps(meta, indent=1))
    if target.exists():
        shutil.rmtree(target)
    os.replace(work, target)
    _stage(progress, 1.0, f"Built the demo in {meta['build_seconds']} s")
    return target


def _builtin_data(spec: SpaceSize):
    """The synthetic ratings of the built-in demo, with user ids spelled `u0007` (readable, and unmistakable in a
    byte search of logs and files, which the privacy tests rely on)."""
    from .data import RecData, make_synthetic

    raw = make_synthetic(
        num_users=spec.num_users, num_items=spec.num_items, interactions_per_user=spec.interactions_per_user, seed=0
    )
    rename = {u: f"u{int(u):04d}" for u in raw.interactions["user_id"].unique()}
    inter = raw.interactions.assign(user_id=raw.interactions["user_id"].map(rename))
    groups = {rename[u]: g for u, g in raw.user_groups.items() if u in rename}
    return RecData(raw.name, inter, raw.items, raw.like_threshold, raw.item_kind, groups)


class _ShardProgress(TrainerCallback):
    """Turns shard training steps into progress between `low` and `high` (shards are trained one after another)."""

    def __init__(self, progress: ProgressFn | None, low: float, high: float, num_shards: int, label: str):
        self.progress, self.low, self.high, self.label = progress, low, high, label
        self.num_shards = max(1, num_shards)
        self.done = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.progress is not None and state.max_steps:
            inner = (self.done + state.global_step / state.max_steps) / self.num_shards
            self.progress(self.low + (self.high - self.low) * min(1.0, inner), self.label)

    def on_train_end(self, args, state, control, **kwargs):
        self.done += 1


# --------------------------------------------------------------------------------------------------------------------
# The demo recommender
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ForgetResult:
    """What one forget request did, and the before/after views the Space shows."""

    user_id: str
    method: str
    seconds: float
    affected_shards: list[int]
    num_shards: int
    samples_removed: int
    version_before: int
    version_after: int
    in_ledger_after: bool
    recs_before: pd.DataFrame
    recs_after: pd.DataFrame
    own_before: pd.DataFrame
    own_after: pd.DataFrame
    note: str = ""

    def summary(self) -> dict:
        return {
            "method": self.method,
            "seconds": round(self.seconds, 2),
            "affected_shards": list(self.affected_shards),
            "num_shards": self.num_shards,
            "samples_removed": self.samples_removed,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "in_ledger_after": self.in_ledger_after,
        }


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
    An APA recommender with the user data the Space needs; recommend, forget and reset, one at a time (a lock).

    Build it with [`DemoRecommender.load`] (from [`SpaceSettings`]). Forgetting writes a new version into the live
    copy `workdir/apa`; the pristine version stays in `pristine_dir` for [`reset`].
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
        self.forgotten_count = 0
        self._restore()

    # ---------------------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, settings: SpaceSettings | None = None, progress: ProgressFn | None = None) -> "DemoRecommender":
        """Load the configured model, or build (once) and load the built-in demo."""
        settings = settings or SpaceSettings.from_env()
        cache = Path(settings.cache_dir).expanduser()
        salt_dir = cache / "salts"
        if settings.repo_id or settings.model_dir:
            if settings.repo_id:
                from .hub import pull

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
                    "and `items.parquet`, as written by `hf_recunlearn.space.build_bundle`), or point "
                    "HF_RECUNLEARN_DIR at a whole bundle."
                )
            name = f"{settings.repo_id or apa_dir.name}".replace("/", "--")
            workdir = cache / "live" / name
            pristine_apa = apa_dir
        else:
            bundle = cache / f"builtin-{settings.size}-v{BUNDLE_VERSION}"
            if not (bundle / "space.json").is_file():
                _stage(progress, 0.0, f"Building the built-in demo ({settings.size}); this happens once")
                build_bundle(bundle, settings.size, salt_dir=salt_dir, progress=progress)
            workdir = cache / "live" / bundle.name
            pristine_apa = bundle / "apa"
            settings = dataclasses.replace(settings, base_model=settings.base_model or str(bundle / "base"))
        _stage(progress, 0.97, "Loading the recommender")
        data = _load_data(bundle)
        # The built-in demo keeps its ledger salt in the cache; a configured model uses the usual salt folder
        # (`HF_RECUNLEARN_SALT_DIR` or ~/.cache/hf_recunlearn/salts), where its trainer left the salt.
        data.meta["salt_dir"] = None if (settings.repo_id or settings.model_dir) else str(salt_dir)
        return cls(settings, pristine_apa, workdir, data, base_model=settings.base_model)

    def _restore(self) -> None:
        """Copy the pristine version into the live directory and load it (also drops the forgotten users)."""
        from .apa_recommender import APARecommender

        live = self.workdir / "apa"
        if live.exists():
            shutil.rmtree(live)
        live.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.pristine_dir, live)
        if self._base is None:
            rec = APARecommender.from_pretrained(live, base_model=self._base_model_name)
            self._base, self._tokenizer = rec.model, rec.tokenizer
        else:
            rec = APARecommender.from_pretrained(live, base_model=self._base, tokenizer=self._tokenizer)
        self.recommender = rec
        d = self._pristine_data
        self.data = _Data(d.train, d.valid, d.test, d.interactions, d.items, d.meta)
        self.forgotten_count = 0

    def reset(self) -> None:
        """Restore the original model and every forgotten user."""
        with self._lock:
            self._restore()
            logger.info("Demo reset to the pristine model (version %d).", self.recommender.version)

    # ---------------------------------------------------------------------------------------------------- users
    def _ledger(self):
        from .partition import ShardLedger, load_or_create_salt

        salt = load_or_create_salt(self.recommender.state.ledger["salt_id"], self._salt_dir())
        return ShardLedger.from_dict(self.recommender.state.ledger, salt)

    def _salt_dir(self):
        return self.data.meta.get("salt_dir") or None

    def in_ledger(self, user_id: str) -> bool:
        """Whether the model's shard ledger still holds any training sample of `user_id`."""
        with self._lock:
            ledger = self._ledger()
            h = ledger.hash_user(str(user_id))
            return any(u == h for shard in ledger.shards for _, u in shard)

    def users(self) -> list[str]:
        """Users the model was trained on and has not forgotten, in a stable order."""
        with self._lock:
            ids = sorted(set(self.data.train["user_id"]), key=lambda u: (len(u), u))
            return ids

    def user_label(self, user_id: str) -> str:
        groups = self.data.meta.get("user_groups", {})
        n = int((self.data.interactions["user_id"] == user_id).sum())
        tag = " · niche tastes" if groups.get(user_id) == "niche" else ""
        return f"{user_id} ({n} ratings){tag}"

    def user_choices(self) -> list[tuple[str, str]]:
        return [(self.user_label(u), u) for u in self.users()]

    def default_user(self) -> str | None:
        """A niche user when there is one (their forgetting is the most visible), else the first user."""
        users = self.users()
        groups = self.data.meta.get("user_groups", {})
        niche = [u for u in users if groups.get(u) == "niche"]
        return (niche or users or [None])[0]

    def _check_user(self, user_id) -> str:
        user_id = "" if user_id is None else str(user_id)
        if not user_id or user_id not in set(self.data.train["user_id"]):
            raise UnknownUserError(
                "That user is not in the model: already forgotten, or never in its training data. Pick another user, "
                "or press “Reset demo” to restore the original model."
            )
        return user_id

    def history(self, user_id: str, last: int = 12) -> pd.DataFrame:
        """The user's latest ratings, newest first: title, genres, liked or disliked."""
        with self._lock:
            user_id = self._check_user(user_id)
            rows = self.data.interactions[self.data.interactions["user_id"] == user_id].tail(last).iloc[::-1]
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
    def _candidate_prompts(self, user_id: str) -> tuple[list[str], list[str]]:
        from .data.prompts import HistoryItem, get_template

        inter = self.data.interactions
        mine = inter[inter["user_id"] == user_id]
        titles = dict(zip(self.data.items["item_id"], self.data.items["title"]))
        threshold = self.data.meta["like_threshold"]
        last = mine.tail(self.data.meta["history_len"])
        history = [HistoryItem(titles[i], bool(r > threshold)) for i, r in zip(last["item_id"], last["rating"])]
        rated = set(mine["item_id"])
        unrated = [i for i in self.data.items["item_id"] if i not in rated]
        rng = np.random.default_rng(_stable_seed(user_id))
        if len(unrated) > self.settings.candidate_pool:
            picked = set(rng.choice(unrated, size=self.settings.candidate_pool, replace=False).tolist())
            unrated = [i for i in unrated if i in picked]
        tpl = get_template(self.data.meta.get("template", "e2urec"))
        prompts = [tpl.render(history, titles[i], self.data.meta.get("item_kind", "movie")) for i in unrated]
        return unrated, prompts

    def _score_candidates(self, user_id: str) -> pd.DataFrame:
        items, prompts = self._candidate_prompts(user_id)
        p = self.recommender.predict(prompts, batch_size=64) if prompts else np.zeros(0)
        meta = self.data.items.set_index("item_id")
        frame = pd.DataFrame(
            {
                "item_id": items,
                "item": [meta.loc[i, "title"] for i in items],
                "genres": [meta.loc[i, "genres"].replace("|", ", ") for i in items],
                "P(like)": np.round(p, 4),
            }
        )
        frame = frame.sort_values("P(like)", ascending=False, kind="stable").reset_index(drop=True)
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        return frame

    def _score_own(self, user_id: str, train=None) -> pd.DataFrame:
        train = self.data.train if train is None else train
        rows = [i for i, u in enumerate(train["user_id"]) if u == user_id]
        subset = train.select(rows)
        p = self.recommender.predict(subset, batch_size=64) if rows else np.zeros(0)
        titles = dict(zip(self.data.items["item_id"], self.data.items["title"]))
        return pd.DataFrame(
            {
                "item_id": list(subset["item_id"]),
                "item": [titles[i] for i in subset["item_id"]],
                "label": ["liked" if y else "disliked" for y in subset["label"]],
                "P(like)": np.round(p, 4),
            }
        )

    def recommend(self, user_id: str, top_k: int | None = None) -> pd.DataFrame:
        """Top-k of the user's candidate pool (items they have not rated), by P(like)."""
        with self._lock:
            user_id = self._check_user(user_id)
            return self._score_candidates(user_id).head(top_k or self.settings.top_k).drop(columns="item_id")

    def own_items(self, user_id: str) -> pd.DataFrame:
        """P(like) of the user's own training samples (what the model learned from them)."""
        with self._lock:
            return self._score_own(self._check_user(user_id)).drop(columns="item_id")

    # ---------------------------------------------------------------------------------------------------- forgetting
    def forget(self, user_id: str, method: str = METHODS[0], progress: ProgressFn | None = None) -> ForgetResult:
        """
        Forget `user_id` with APA (retrain the shards that held them; exact) or E2URec (approximate), and return
        the before/after comparison. Raises [`UnknownUserError`] for a user the model does not hold.
        """
        if method not in METHODS:
            raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
        with self._lock:
            user_id = self._check_user(user_id)
            if method == METHODS[1]:
                _require_e2urec()
            version_before = self.recommender.version
            if method == METHODS[0]:
                _stage(progress, 0.02, "Scoring before forgetting")
                cand_before, own_before = self._score_candidates(user_id), self._score_own(user_id)
                seconds, affected, removed, scorer = self._forget_apa(user_id, progress)
                note = ""
            else:
                cand_before, own_before, seconds, affected, removed, scorer = self._forget_e2urec(user_id, progress)
                note = (
                    "E2URec is approximate: it distils an unlearned copy of the model (the shards merged with uniform "
                    "weights; “before” is that merged copy). The APA shards and their ledger are unchanged, so the "
                    "user is still listed and still served by the APA model."
                )
            _stage(progress, 0.95, "Scoring after forgetting")
            with _swap_predictor(self, scorer):
                cand_after = self._score_candidates(user_id)
                own_after = self._score_own(user_id, train=self._pristine_data.train)
            if method == METHODS[0]:
                self._drop_user(user_id)
            in_ledger = self.in_ledger(user_id)
            recs_before, recs_after = _rank_changes(cand_before, cand_after, self.settings.top_k)
            logger.info(
                "Forgot 1 user with %s: %d sample(s), shard(s) %s retrained in %.1f s.",
                method, removed, affected, seconds,
            )  # fmt: skip
            return ForgetResult(
                user_id=user_id,
                method=method,
                seconds=seconds,
                affected_shards=list(affected),
                num_shards=self.recommender.num_shards,
                samples_removed=removed,
                version_before=version_before,
                version_after=self.recommender.version,
                in_ledger_after=in_ledger,
                recs_before=recs_before,
                recs_after=recs_after,
                own_before=own_before.drop(columns="item_id"),
                own_after=own_after.drop(columns="item_id"),
                note=note,
            )

    def _apa_config(self, output_dir):
        from .trainer import APAConfig

        args = dict(self.data.meta.get("apa_args", {}))
        args.update(output_dir=str(output_dir), salt_dir=self._salt_dir(), disable_tqdm=True, logging_steps=1000)
        args.setdefault("num_shards", self.recommender.num_shards)
        return APAConfig(**args)

    def _forget_apa(self, user_id: str, progress):
        from .trainer import APATrainer

        live = self.workdir / "apa"
        self.recommender.source_dir = str(live)
        trainer = APATrainer(
            self.recommender,
            self._apa_config(live),
            train_dataset=self._pristine_data.train,
            eval_dataset={"valid": self.data.valid},
            processing_class=self._tokenizer,
            callbacks=[_ShardProgress(progress, 0.1, 0.9, 1, "Retraining the shard(s) that held the user")],
        )
        _stage(progress, 0.1, "Retraining the shard(s) that held the user (APA)")
        report = trainer.forget(user_ids=[user_id])
        self.recommender = trainer.recommender
        self.recommender.source_dir = str(live)
        self.forgotten_count += 1
        return report.seconds, report.affected_shards, report.samples_removed, None

    def _forget_e2urec(self, user_id: str, progress):
        start = time.perf_counter()
        train = self._pristine_data.train
        forget_rows = [i for i, u in enumerate(train["user_id"]) if u == user_id]
        retain_rows = [i for i, u in enumerate(train["user_id"]) if u != user_id]
        # A demo-sized retain set: E2URec only needs retained samples to keep the rest of the model's behaviour.
        rng = np.random.default_rng(0)
        if len(retain_rows) > E2UREC_RETAIN_ROWS:
            retain_rows = sorted(rng.choice(retain_rows, size=E2UREC_RETAIN_ROWS, replace=False).tolist())
        _stage(progress, 0.05, "Merging the shard adapters into the model E2URec starts from")
        original = e2urec_original(self.recommender, self._base_model_name, self.workdir / "e2urec")
        with _swap_predictor(self, self._model_scorer(original)):
            cand_before, own_before = self._score_candidates(user_id), self._score_own(user_id)
        _stage(progress, 0.15, "Distilling an unlearned copy of the model (E2URec)")
        model = e2urec_unlearn(
            original,
            self._tokenizer,
            forget_dataset=train.select(forget_rows),
            retain_dataset=train.select(retain_rows),
            eval_dataset=None,
            output_dir=self.workdir / "e2urec",
            callbacks=[_ShardProgress(progress, 0.15, 0.9, 1, "Distilling an unlearned copy of the model (E2URec)")],
        )
        seconds = time.perf_counter() - start
        return cand_before, own_before, seconds, [], len(forget_rows), self._model_scorer(model)

    def _model_scorer(self, model):
        from .scoring import score

        def scorer(data):
            return score(model, self._tokenizer, data, self.recommender.answer_tokens, batch_size=64)

        return scorer

    def _drop_user(self, user_id: str) -> None:
        """Remove the forgotten user from the in-memory views (the live model no longer holds them)."""
        d = self.data
        keep = [i for i, u in enumerate(d.train["user_id"]) if u != user_id]
        self.data = _Data(
            d.train.select(keep),
            d.valid,
            d.test,
            d.interactions[d.interactions["user_id"] != user_id],
            d.items,
            d.meta,
        )

    def check_model(self) -> dict:
        """A quick consistency check: the live directory holds the served version and it predicts finite values."""
        from .apa_recommender import read_version

        with self._lock:
            user = self.default_user()
            p = self.recommender.predict(self._candidate_prompts(user)[1][:4]) if user else np.zeros(0)
            return {
                "version": self.recommender.version,
                "version_on_disk": read_version(self.workdir / "apa"),
                "finite": bool(np.isfinite(p).all()),
                "num_users": len(self.users()),
            }


def _require_e2urec():
    try:
        from .trainer import E2URecConfig, E2URecTrainer  # noqa: F401
    except ImportError as err:
        raise MethodUnavailableError(
            "E2URec is not available in this installation of hf_recunlearn (no `E2URecTrainer` in "
            "`hf_recunlearn.trainer`). Choose “APA (exact)”, or install a version of hf_recunlearn that ships E2URec."
        ) from err


E2UREC_RETAIN_ROWS = 256


def e2urec_original(recommender, base_model, output_dir):
    """
    The single model E2URec unlearns from: the APA shards merged with uniform weights (ND level, an exact weighted
    sum of the shard updates) on a freshly loaded base, so the served APA model is never touched.
    """
    from peft import PeftModel

    from .models import load_model

    merged = Path(output_dir) / "original-merged"
    k = recommender.num_shards
    recommender.export_adapter(merged, [1.0 / k] * k, level="ND")
    base, _ = load_model(base_model or recommender.state.base_model)
    model = PeftModel.from_pretrained(base, merged)
    model.eval()
    return model


def e2urec_unlearn(original, tokenizer, forget_dataset, retain_dataset, eval_dataset, output_dir, callbacks=None):
    """Adapter to `E2URecTrainer`: unlearn `forget_dataset` from `original` (a PEFT model) and return the result."""
    _require_e2urec()
    from .trainer import E2URecConfig, E2URecTrainer

    args = E2URecConfig(
        output_dir=str(Path(output_dir) / "model"), num_train_epochs=1, disable_tqdm=True, logging_steps=1000
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


class _swap_predictor:
    """Score with `scorer` (E2URec's model) instead of the APA recommender inside the block; no-op for None."""

    def __init__(self, demo: DemoRecommender, scorer):
        self.demo, self.scorer = demo, scorer

    def __enter__(self):
        if self.scorer is not None:
            self.saved = self.demo.recommender
            proxy = copy.copy(self.saved)
            proxy.predict = lambda data, batch_size=64, **kw: self.scorer(
                data if not isinstance(data, list) else _prompt_dataset(data)
            )
            self.demo.recommender = proxy
        return self

    def __exit__(self, *exc):
        if self.scorer is not None:
            self.demo.recommender = self.saved
        return False


def _prompt_dataset(prompts):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": list(prompts)})


def _rank_changes(before: pd.DataFrame, after: pd.DataFrame, top_k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two top-k lists, each with the item's rank in the other list and its change in rank and P(like)."""
    rank_b = dict(zip(before["item_id"], before["rank"]))
    rank_a = dict(zip(after["item_id"], after["rank"]))
    p_b = dict(zip(before["item_id"], before["P(like)"]))
    p_a = dict(zip(after["item_id"], after["P(like)"]))
    top_b = before.head(top_k).copy()
    top_b["rank after"] = [rank_a[i] for i in top_b["item_id"]]
    top_b["P(like) after"] = [p_a[i] for i in top_b["item_id"]]
    top_a = after.head(top_k).copy()
    top_a["rank before"] = [rank_b[i] for i in top_a["item_id"]]
    top_a["change"] = [_arrow(rank_b[i] - rank_a[i]) for i in top_a["item_id"]]
    top_a["P(like) before"] = [p_b[i] for i in top_a["item_id"]]
    # Genres are shown in the main recommendations table; the side-by-side tables keep to what changed.
    return top_b.drop(columns=["item_id", "genres"]), top_a.drop(columns=["item_id", "genres"])


def _arrow(delta: int) -> str:
    if delta > 0:
        return f"▲ {delta}"
    if delta < 0:
        return f"▼ {-delta}"
    return "="


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


def comparison_figure(result: ForgetResult):
    """P(like) before vs after, for the user's own training items and for the recommendations (matplotlib)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), constrained_layout=True)
    own_b, own_a = result.own_before, result.own_after
    ax = axes[0]
    liked = (own_b["label"] == "liked").to_numpy()
    ax.scatter(own_b["P(like)"][liked], own_a["P(like)"][liked], c="tab:green", label="liked", s=28)
    ax.scatter(own_b["P(like)"][~liked], own_a["P(like)"][~liked], c="tab:red", label="disliked", s=28, marker="x")
    ax.set_title("User's own training items")
    recs = result.recs_before
    ax2 = axes[1]
    ax2.scatter(recs["P(like)"], recs["P(like) after"], c="tab:blue", s=28, label="top-k before")
    ra = result.recs_after
    ax2.scatter(ra["P(like) before"], ra["P(like)"], c="tab:orange", s=20, marker="^", label="top-k after")
    ax2.set_title("Recommendations")
    # Zoom on the data (a weak model's P(like) can sit in a narrow band), keeping both axes equal around y = x.
    columns = [own_b["P(like)"], own_a["P(like)"], recs["P(like)"], recs["P(like) after"], ra["P(like)"]]
    values = np.concatenate(columns + [ra["P(like) before"]]).astype(float)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    pad = max(0.02, 0.08 * (hi - lo))
    lo, hi = max(0.0, lo - pad), min(1.0, hi + pad)
    for a in axes:
        a.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--", label="unchanged")
        a.set_xlim(lo, hi)
        a.set_ylim(lo, hi)
        a.set_xlabel("P(like) before")
        a.set_ylabel("P(like) after")
        a.legend(loc="upper left", fontsize=8)
    return fig
