"""
What only the data controller holds for an exact-unlearning model directory, and how forget requests reach it safely.

An APA (or SISA) model directory ``D`` is two things: the **published version** (shard adapters, aggregation state,
public metadata: what `hub.push` uploads) and the **controller state**, which never leaves this machine::

    D/controller/ledger.json         which shard holds every training sample and user (salted HMAC digests)
    D/controller/recipe.json         everything that determines the weights: training arguments, LoRA config,
                                     partition method and seed, shard seeds, base model fingerprint, data spec
    D/controller/validation.json     salted digests of the validation rows behind the aggregation state
    D/controller/lineage.json        exact counts of every event (the public lineage is coarse)
    D/controller/forgotten.json      per forget event: its version and the user/sample digests its requests named
                                     (what `verify --run` checks absent, and what deletion tokens are issued from)
    .D.lock                          a per-directory lock: one train/forget/push at a time
    .D.journal                       forget requests, appended and fsync'd before any work (salted digests only)

The controller state lives inside ``D`` so it switches atomically with the version it describes (two renames, see
`apa_recommender.write_apa_directory`); the lock and the journal live beside ``D`` because they outlive versions.

Threat model (DESIGN §9): the **public** reads every reachable revision of the Hub repo and holds the public data set;
it must not learn who was forgotten, so the published metadata carries no digest lists, seeds, sample counts, paths
or host names. The **controller** holds ``D``, the salt and the data. The **data subject** is told their request
was carried out.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator


logger = logging.getLogger(__name__)

CONTROLLER_DIR = "controller"
# transformers.trainer_utils.PREFIX_CHECKPOINT_DIR (not imported: it would import torch into this light module)
CHECKPOINT_PREFIX = "checkpoint-"
LEDGER_FILE = "ledger.json"
RECIPE_FILE = "recipe.json"
VALIDATION_FILE = "validation.json"
LINEAGE_FILE = "lineage.json"
FORGOTTEN_FILE = "forgotten.json"

# What a push publishes from a model directory: every file but hidden paths, the controller's folder and the two files
# the push generates (the version log and the card). The Hub layer and the receipts both read it from here.
VERSIONS_FILE = "unlearning_versions.json"
CARD_FILE = "README.md"
GENERATED_FILES = frozenset({VERSIONS_FILE, CARD_FILE})
CRASH_ENV = "HF_RECUNLEARN_CRASH_AT"


class RunLockedError(RuntimeError):
    """Another process holds the lock of a model directory and the caller asked not to wait."""


def crash_point(name: str) -> None:
    """
    Test hook: `HF_RECUNLEARN_CRASH_AT=<name>` kills this process with SIGKILL when it reaches `name`.

    The crash-safety tests kill a real `hf-recunlearn` process at every step of a forget or a push this way; in
    normal use the variable is unset and this is a dictionary lookup.
    """
    wanted = os.environ.get(CRASH_ENV)
    if wanted and wanted == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sibling(directory: Path, kind: str) -> Path:
    directory = Path(os.path.abspath(directory))
    return directory.parent / f".{directory.name}.{kind}"


def swap_in(staging: Path, target: Path, name: str) -> None:
    """
    Make the complete folder `staging` the new `target`: two renames, the previous content deleted after. A crash
    between the renames leaves `target` missing and `.target.previous-*` beside it, which
    [`recover_swap`] (run by every reader) moves back. `name` labels the crash points.
    """
    target = Path(target)
    if target.exists():
        previous = target.parent / f".{target.name}.previous-{uuid.uuid4().hex[:12]}"
        os.rename(target, previous)
        crash_point(f"{name}:between-renames")
        os.rename(staging, target)
        fsync_dir(target.parent)
        crash_point(f"{name}:after-switch")
        shutil.rmtree(previous)
    else:
        os.rename(staging, target)
        fsync_dir(target.parent)


def published_files(directory) -> dict[str, Path]:
    """
    Files to publish from a local directory: everything but hidden paths, `controller/`, the generated files, and
    what `Trainer.push_to_hub` leaves out too (`checkpoint-*` folders and paths starting with `_`): a checkpoint of an
    unlearning run holds weights from before it finished forgetting.
    """
    directory = Path(directory)
    files = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        top = rel.split("/")[0]
        if not path.is_file() or any(part.startswith(".") for part in rel.split("/")) or rel in GENERATED_FILES:
            continue
        if top == CONTROLLER_DIR:  # the data controller's ledger and recipe: never published
            continue
        if top.startswith((CHECKPOINT_PREFIX, "_")):
            continue
        files[rel] = path
    return files


def staging_dir(target) -> Path:
    """
    A new empty folder beside `target` to write its next content in before [`swap_in`]. Its name carries this
    process's id, so [`recover_swap`] removes it once the process is gone (killed mid-write) and never while it lives.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    return path


def _writer_alive(staging: Path) -> bool | None:
    """Whether the process that made `staging` ([`staging_dir`]) still runs; `None` for a name without a process id."""
    match = re.fullmatch(r"\..+\.staging-(\d+)-[0-9a-f]{12}", staging.name)
    if match is None:
        return None
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def recover_swap(target) -> None:
    """
    Finish or roll back an interrupted [`swap_in`]: if `target` is missing but its previous content was moved aside,
    move it back; remove the staging folders of writes whose process is gone (a first write killed before its switch
    leaves one beside a missing `target`). Every reader of a swapped folder (an APA version, a run's data, an export)
    calls it first.
    """
    target = Path(target)

    def siblings(kind: str) -> list[Path]:
        return sorted(target.parent.glob(f".{target.name}.{kind}-*"))

    previous = siblings("previous")
    if not target.exists() and previous:
        os.rename(previous[-1], target)
        fsync_dir(target.parent)
        previous = previous[:-1]
    for path in siblings("staging"):
        alive = _writer_alive(path)
        if alive is False or (alive is None and target.exists()):
            shutil.rmtree(path, ignore_errors=True)
    if target.exists():
        for path in previous:
            shutil.rmtree(path, ignore_errors=True)


def write_json_atomic(path, payload: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half a file."""
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(value):
    import numpy as np

    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Cannot serialise {type(value).__name__} to JSON")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------------------------
# Lock
# --------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def directory_lock(directory, *, wait: bool = True, reason: str = "") -> Iterator[None]:
    """
    Hold the exclusive lock of the model directory `directory` (a `flock` on `.D.lock` beside it).

    Re-entrant within a process (a forget inside a push, a recovery inside a forget). A second process waits, saying
    so once on the log, or with `wait=False` raises [`RunLockedError`] at once. The lock dies with its process, so a
    killed process never leaves a run locked.
    """
    path = _sibling(directory, "lock")
    key = str(path)
    if _HELD.get(key, 0):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            if not wait:
                raise RunLockedError(
                    f"{str(directory)!r} is locked by {holder}: another train/forget/push is running on it. Wait for "
                    "it to finish, or retry without `--no-wait` to queue behind it."
                ) from None
            logger.warning("Waiting for %s, which holds the lock of %s%s ...", holder, directory, reason)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


_HELD: dict[str, int] = {}


# --------------------------------------------------------------------------------------------------------------------
# Journal
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class ForgetRequest:
    """
    One forget request as the journal records it: salted digests, never ids.

    Attributes:
        id (`str`): a random request id.
        samples (`list[str]`): ledger digests of the training samples it removes.
        users (`list[str]`): ledger digests of the users it names (their validation rows go too).
        time (`str`): when it was recorded (UTC).
        done_version (`int` or `None`): the version that carried it out, once done.
    """

    id: str
    samples: list[str]
    users: list[str]
    time: str = ""
    done_version: int | None = None
    flush: bool = False

    @property
    def done(self) -> bool:
        return self.done_version is not None


@dataclass
class Journal:
    """
    The append-only, fsync'd log of forget requests of a model directory (`.D.journal` beside it, JSON lines).

    A request is appended before any work is done, and marked done only after the version that carries it out is
    in place, so a crash at any instant leaves it pending, and the next command on the directory finishes it.
    """

    directory: Path
    path: Path = field(init=False)

    def __post_init__(self):
        self.directory = Path(self.directory)
        self.path = _sibling(self.directory, "journal")

    def _append(self, record: dict) -> None:
        new = not self.path.exists()
        line = json.dumps(record, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            fsync_dir(self.path.parent)

    def record(self, samples, users, *, flush: bool = False) -> ForgetRequest:
        request = ForgetRequest(uuid.uuid4().hex, sorted(set(samples)), sorted(set(users)), _now(), flush=flush)
        self._append(
            {"op": "request", "id": request.id, "time": request.time, "samples": request.samples,
             "users": request.users, "flush": flush}
        )  # fmt: skip
        return request

    def mark_done(self, request_ids, version: int) -> None:
        for rid in request_ids:
            self._append({"op": "done", "id": rid, "version": int(version), "time": _now()})

    def requests(self) -> list[ForgetRequest]:
        """Every request, oldest first (a torn last line, from a crash mid-write, is ignored: it was never acted on)."""
        if not self.path.exists():
            return []
        out: dict[str, ForgetRequest] = {}
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("op") == "request":
                out[record["id"]] = ForgetRequest(
                    record["id"], record["samples"], record["users"], record.get("time", ""),
                    flush=bool(record.get("flush")),
                )  # fmt: skip
            elif record.get("op") == "done" and record["id"] in out:
                out[record["id"]].done_version = int(record["version"])
        return list(out.values())

    def pending(self) -> list[ForgetRequest]:
        return [r for r in self.requests() if not r.done]

    def forgotten_users(self) -> set[str]:
        return {u for r in self.requests() if r.done for u in r.users}

    def forgotten_samples(self) -> set[str]:
        return {s for r in self.requests() if r.done for s in r.samples}


# --------------------------------------------------------------------------------------------------------------------
# Controller state files
# --------------------------------------------------------------------------------------------------------------------


def controller_dir(directory) -> Path:
    return Path(directory) / CONTROLLER_DIR


def has_controller_state(directory) -> bool:
    return (controller_dir(directory) / LEDGER_FILE).is_file()


def read_controller_file(directory, name: str) -> Any:
    path = controller_dir(directory) / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has no controller state ({CONTROLLER_DIR}/{name}). Forgetting needs the ledger and the "
            "recipe the shards were trained with, which only the training run's directory holds (they are never "
            "pushed). Pass the directory `APATrainer` / `hf-recunlearn train` wrote, not a version downloaded from the "
            "Hub."
        )
    return json.loads(path.read_text())


def fingerprint_model(model) -> str:
    """
    SHA-256 over every parameter and buffer of `model` (names, dtypes, shapes and bytes): the base model's identity by
    content, so that a forget can refuse a base that differs from the one the shards were trained on.
    """
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.to("cpu").contiguous().numpy().tobytes())
    return h.hexdigest()
