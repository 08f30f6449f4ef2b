"""
Versioned Hub repos for unlearned recommenders: push, pull, list versions, and purge history after a deletion.

A model directory is pushed as one Hub model repo::

    README.md                   model card (`hf_recunlearn.cards`): method, citation, unlearning log (counts only),
                                how to load a version
    unlearning_versions.json    every version: tag, commit, event, counts, date, metrics, status, and the path and
                                sha256 of its receipt (the pushed state of `hf_recunlearn.receipts`)
    receipts/000001.json, ...   the chain of forgetting receipts, one per event (kept whole in every version)
    the model's own files       a PEFT adapter or a full model ([`push_adapter`]), or a directory of a registered
                                [`VersionFormat`] ([`push`]), e.g. APA's shard adapters, aggregation state and
                                metadata (`hf_recunlearn.apa_hub`)

Every version is **one** `create_commit` whose `parent_commit` is the head the push started from (a concurrent
push is refused by the Hub instead of being merged), tagged `vN`: the version the directory records (a
[`VersionFormat`]), or the next one (a one-model directory). Only files whose bytes changed are sent (their git blob
id or LFS sha256 is compared with the remote tree), so forgetting a user in a sharded model uploads the retrained
shards, the aggregation state, the metadata and the card, nothing else.

Privacy of history: the Hub keeps every old revision downloadable, including weights trained on data that has since
been deleted. By default a push that follows a deletion request (a `forget` event since the versions on the Hub)
therefore deletes the tags of the earlier versions, squashes the history of `main` into its head
(`super_squash_history`, after which the old files cannot be downloaded, not even by commit id) and tags the head
again. The lineage survives in `unlearning_versions.json` and the card, where those versions are marked `purged`.
Pass `keep_history=True` to keep every version downloadable instead (e.g. when no version held personal data).

One-model directories (an E2URec unlearned adapter, the original TALLRec adapter, a full model) are pushed the same
way with [`push_adapter`]: one commit and one tag per version, the same purge policy. Every trainer's `push_to_hub()`
goes through `push` (APA, SISA) or `push_adapter` (the others). This module knows no format but the one-model one:
a format that records its own versions registers a [`VersionFormat`] (its version history, checksum verification and
card inputs), which [`push`], [`export_version`] and [`pull`] use. The card of every version is rendered by
`hf_recunlearn.cards.model_card`, the library's one card generator; [`export_version`] writes the files a first push
would publish without a Hub (a dry run).

Failures raise a [`HubOperationError`] subclass with a message that says what to do; the local directory is only
read, and since the version is a single commit, the Hub never holds half of it.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from huggingface_hub import CommitInfo

from .cards import model_card
from .controller import CARD_FILE, VERSIONS_FILE, crash_point
from .controller import GENERATED_FILES as _GENERATED
from .controller import published_files as _local_files


logger = logging.getLogger(__name__)

VERSIONS_FORMAT = "hf_recunlearn/hub_versions"
FORGET_EVENTS = ("forget", "unlearn")
_KEPT_REMOTE = {".gitattributes"}  # files the Hub creates, never deleted by a push


# --------------------------------------------------------------------------------------------------------------------
# Errors


class HubOperationError(RuntimeError):
    """A push, pull or listing against the Hub failed; the message says what to do."""


class HubAuthError(HubOperationError):
    """No token, or a token the Hub refuses."""


class HubRepoNotFoundError(HubOperationError):
    """The repo does not exist, or the token cannot see it."""


class HubRevisionNotFoundError(HubOperationError):
    """The revision (tag, branch or commit) does not exist, or was purged after a deletion request."""


class HubConflictError(HubOperationError):
    """The remote moved on since this push started (another push landed first), or holds another run."""


class HubPushError(HubOperationError):
    """The push failed part way (network or server error); nothing was published unless the message says so."""


# --------------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class HubVersion:
    """
    One version of a Hub repo, as [`list_versions`] reports it.

    Attributes:
        version (`int`): the version number (`vN` tag).
        tag (`str`): `"vN"`.
        status (`str`): `"available"` (the tag exists), `"purged"` (removed after a deletion request: no ref,
            commit or stored object holds its weights any more), `"purge_pending"` (a purge started and not yet
            finished; the next `push` or `list_versions` finishes it) or
            `"not_pushed"` (a local version that was never pushed; a later one was).
        commit (`str` or `None`): the commit the tag points to now; for other versions the commit they were pushed
            as (no longer downloadable once purged).
        event (`str`): `"train"`, `"forget"`, `"unlearn"`, ...
        shards_retrained (`list[int]`): shards trained by the event (APA).
        users_removed (`int`): users the event removed; no id, digest or sample count is ever published (with the
            public data set, exact sample counts narrow an event to one or two users).
        date (`str` or `None`): when the version was pushed (ISO 8601, UTC).
        metrics (`dict`): metrics given at push time.
    """

    version: int
    tag: str
    status: str
    commit: str | None = None
    event: str = ""
    shards_retrained: list[int] = field(default_factory=list)
    users_removed: int = 0
    date: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(kw_only=True)
class HubPushResult(CommitInfo):
    """
    What a push did. It is the `huggingface_hub.CommitInfo` of the commit the version's tag points to (so a trainer's
    `push_to_hub()` returns what `Trainer.push_to_hub` does: `str(result)` is the commit URL, `result.oid` its id),
    with the version it published.

    Attributes:
        repo_id, version, tag: where the version went.
        commit (`str`): the commit the tag points to (after a purge, the squashed head); the same as `oid`.
        uploaded (`list[str]`): paths sent in the version's commit (changed or new files).
        deleted (`list[str]`): remote paths the commit removed.
        purged (`list[str]`): tags deleted because their weights saw deleted data.
        created_commit (`bool`): False when the Hub already held exactly this version (the push only tagged or
            finished a purge).
        card (`dict`): the inputs of the model card the version's commit published (`hf_recunlearn.cards.model_card`
            renders it again from them).
    """

    repo_id: str
    version: int
    tag: str
    uploaded: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    purged: list[str] = field(default_factory=list)
    created_commit: bool = True
    card: dict = field(default_factory=dict, repr=False)

    @property
    def commit(self) -> str:
        return self.oid

    def to_dict(self) -> dict:
        keys = ("repo_id", "version", "tag", "commit", "uploaded", "deleted", "purged", "created_commit")
        return {k: getattr(self, k) for k in keys}


# --------------------------------------------------------------------------------------------------------------------
# Version formats


class VersionHistory(NamedTuple):
    """
    The versions a model directory records: its own `version`, the training run it comes from (`run_id`: a push
    refuses a repo that holds another run), and the `events` that produced each version, oldest first, in the version
    log's terms: `{"version", "event", "shards_retrained", "users_removed"}`.
    """

    version: int
    run_id: str | None
    events: list[dict]


class VersionFormat:
    """
    A kind of model directory that records its own versions, which [`push`] publishes, [`export_version`] writes
    without a Hub and [`pull`] verifies after downloading. APA's (`hf_recunlearn.apa_hub`) is one; a one-model
    directory (a PEFT adapter or a full model, [`push_adapter`]) is this module's own and needs none.

    A format is registered with [`register_version_format`]; the package's own formats (`hf_recunlearn._HUB_FORMATS`)
    register themselves the first time this module looks for one.

    Attributes:
        method (`str`): the repo's method in its version log and card (a key of `hf_recunlearn.cards.METHODS`).
        config_file (`str`): the file at the directory's root that marks the format and records its versions
            (published with every version).
        description (`str`): what to pass, for error messages, e.g. `"an APA directory (written by `APATrainer`)"`.
    """

    method: str
    config_file: str
    description: str

    def verify(self, directory: Path) -> None:
        """Raise `ValueError` when the version in `directory` is damaged (a file that does not match its checksum)."""

    def history(self, config: dict) -> VersionHistory:
        """The versions `config` (the parsed `config_file`, local or pushed) records."""
        raise NotImplementedError

    def card_inputs(self, config: dict) -> dict:
        """
        The inputs of `hf_recunlearn.cards.model_card` that `config` gives; the card metadata a push is given wins
        over them (`base_model` only when one is given).
        """
        return {}

    def commit_message(self, entry: dict) -> str:
        """The default commit message of the version log entry `entry`."""
        return f"{entry['tag']}: {entry['event']}"


_FORMATS: dict[str, VersionFormat] = {}


def register_version_format(version_format: VersionFormat) -> None:
    """Let [`push`], [`export_version`] and [`pull`] handle directories of `version_format` (keyed by its method)."""
    _FORMATS[version_format.method] = version_format


def _version_formats() -> dict[str, VersionFormat]:
    """The registered formats by method, once the package's own format modules (which register theirs) are imported."""
    from . import _HUB_FORMATS

    for name in _HUB_FORMATS:
        importlib.import_module(f".{name}", __package__)
    return _FORMATS


def _format_of(directory: Path) -> VersionFormat | None:
    """The format of `directory`, or `None` for a one-model directory."""
    return next((f for f in _version_formats().values() if (directory / f.config_file).is_file()), None)


def _require_format(directory: Path) -> VersionFormat:
    version_format = _format_of(directory)
    if version_format is None:
        formats = _version_formats().values()
        raise FileNotFoundError(
            f"{str(directory)!r} has no {' or '.join(f.config_file for f in formats)}: pass "
            f"{' or '.join(f.description for f in formats)}, or use `push_adapter` for a PEFT adapter directory."
        )
    return version_format


# --------------------------------------------------------------------------------------------------------------------
# Helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tag(version: int) -> str:
    return f"v{int(version)}"


def _same_bytes(source: Path | bytes, remote: tuple[str, str | None]) -> bool:
    """
    Whether `source` holds the bytes of the remote file `(git blob id, lfs sha256 or None)`: by sha256 (streamed) when
    the remote file is in LFS, else by git blob id (`huggingface_hub.utils.sha`; such files are small).
    """
    from huggingface_hub.utils.sha import git_hash, sha256, sha_fileobj

    blob_id, lfs_sha256 = remote
    if lfs_sha256 is not None:
        if isinstance(source, bytes):
            return sha256(source).hexdigest() == lfs_sha256
        with open(source, "rb") as f:
            return sha_fileobj(f).hex() == lfs_sha256
    return git_hash(source if isinstance(source, bytes) else Path(source).read_bytes()) == blob_id


def _token_or_raise(token):
    from huggingface_hub import get_token

    if token is False or (token is None and get_token() is None):
        raise HubAuthError(
            "No Hugging Face token: pushing needs a token with write access. Run `hf auth login`, set the `HF_TOKEN` "
            "environment variable, or pass `token=`."
        )
    return token


@contextmanager
def _translate_errors(repo_id: str, action: str, revision: str | None = None) -> Iterator[None]:
    """Turn `huggingface_hub`/network exceptions into [`HubOperationError`]s with actionable messages."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        yield
    except HubOperationError:
        raise
    except HFValidationError as err:  # `huggingface_hub.utils.validate_repo_id` refused the id
        raise ValueError(
            f"`repo_id` {repo_id!r} is not a valid Hub repo id ({err}). Pass 'namespace/name', e.g. "
            "'your-username/movielens-apa'."
        ) from err
    except RevisionNotFoundError as err:
        raise HubRevisionNotFoundError(
            f"Revision {revision!r} of {repo_id!r} does not exist. List the versions with "
            f"`hf_recunlearn.hub.list_versions({repo_id!r})` (CLI: `hf-recunlearn versions --repo-id {repo_id}`)."
        ) from err
    except RepositoryNotFoundError as err:
        status = err.response.status_code if err.response is not None else None
        refused = status == 401 and _bad_token(err)
        hint = " The token was refused: check `HF_TOKEN` / `hf auth login`." if refused else ""
        raise HubRepoNotFoundError(
            f"Repo {repo_id!r} not found (while trying to {action}), or the token cannot see it (private repo). "
            f"Check the repo id and that your token has access.{hint}"
        ) from err
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status == 401 or (status == 403 and "token" in str(err).lower()):
            raise HubAuthError(
                f"The Hub refused the token while trying to {action} {repo_id!r} (HTTP {status}). Use a valid token "
                "with write access: `hf auth login`, the `HF_TOKEN` environment variable, or `token=`."
            ) from err
        if status == 412:
            raise HubConflictError(
                f"Another push to {repo_id!r} landed while this one was in progress (the head moved, HTTP 412); "
                "nothing was published. Pull the latest version first (`hf-recunlearn pull` / `hub.pull`), apply "
                "your forget requests to it, and push again."
            ) from err
        raise HubPushError(
            f"The Hub answered HTTP {status} while trying to {action} {repo_id!r}: {err}. Nothing was published by "
            "the failed request; retry the same command."
        ) from err
    except _network_errors() as err:
        raise HubPushError(
            f"Network error while trying to {action} {repo_id!r} ({type(err).__name__}: {err}). The version is one "
            "atomic commit, so the Hub holds either all of it or none of it; re-run the same push to finish."
        ) from err
    except RuntimeError as err:  # the client wraps failed LFS uploads in a RuntimeError
        if "upload" not in str(err).lower():
            raise
        raise HubPushError(
            f"Uploading files to {repo_id!r} failed ({err}); no commit was made. Re-run the same push."
        ) from err


def _network_errors() -> tuple[type[BaseException], ...]:
    """Transport-level exceptions of the HTTP stack `huggingface_hub` uses (`httpx2` in 2.x, `httpx` before)."""
    import importlib

    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for name in ("httpx2", "httpx", "requests"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        errors.append(getattr(module, "HTTPError", None) or module.RequestException)
    return tuple(errors)


def _bad_token(err) -> bool:
    return "token" in str(err).lower()


def _api(token):
    from huggingface_hub import HfApi

    return HfApi(token=token)


def _remote_tree(api, repo_id: str, revision: str) -> dict[str, tuple[str, str | None]]:
    """`path -> (git blob id, lfs sha256 or None)` of every file at `revision`."""
    from huggingface_hub import RepoFile

    tree = {}
    for entry in api.list_repo_tree(repo_id, recursive=True, revision=revision):
        if isinstance(entry, RepoFile):
            tree[entry.path] = (entry.blob_id, entry.lfs.sha256 if entry.lfs else None)
    return tree


def _read_remote_json(repo_id: str, path: str, revision: str, token) -> dict | None:
    """A JSON file of the repo at `revision`, or None when the repo has no such file."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = hf_hub_download(repo_id, path, revision=revision, token=token, local_dir=tmp)
        except EntryNotFoundError:
            return None
        return json.loads(Path(local).read_text())


# --------------------------------------------------------------------------------------------------------------------
# Model cards


def _receipt_fields(directory: Path, version: int | None = None) -> dict:
    """
    `{"receipt": path, "receipt_sha256": hash}` of the receipt of model version `version` (default: the newest
    receipt) in `directory`'s chain (`hf_recunlearn.receipts`); empty when there is none.
    """
    folder = directory / "receipts"
    files = sorted(folder.glob("[0-9]*.json")) if folder.is_dir() else []
    if version is not None:
        files = [f for f in files if json.loads(f.read_bytes()).get("version") == int(version)]
    if not files:
        return {}
    path = files[-1]
    return {"receipt": f"receipts/{path.name}", "receipt_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _receipt_card_fields(receipt: dict | None) -> dict:
    """
    What an approximate method's receipt (public: it is pushed in `receipts/`) says for the card: the number of users
    forgotten, the method's hyperparameters and the audit figures. Empty for any other receipt.
    """
    approximate = (receipt or {}).get("approximate")
    if not approximate:
        return {}
    return {
        "forget_request": {"num_forgotten_users": int(receipt.get("request", {}).get("users", 0))},
        "hyperparameters": dict(approximate.get("hyperparameters") or {}),
        "audit_figures": dict(approximate.get("audit") or {}),
    }


# --------------------------------------------------------------------------------------------------------------------
# Push


def _version_entry(version: int, event: dict, metrics, status: str) -> dict:
    """The version log entry of `version`, produced by `event` (`{"event", "shards_retrained", "users_removed"}`)."""
    return {
        "version": int(version),
        "tag": _tag(version),
        "event": event.get("event", ""),
        "shards_retrained": list(event.get("shards_retrained", [])),
        "users_removed": int(event.get("users_removed", 0)),
        "date": None,
        "commit": None,
        "parent_commit": None,
        "status": status,
        "metrics": dict(metrics or {}),
    }


def _event_key(event: dict) -> tuple:
    return (event["version"], event["event"], tuple(event["shards_retrained"]), event["users_removed"])


class _RemoteState:
    """What a push needs to know about the repo's `main` before it commits."""

    def __init__(self, api, repo_id: str, token):
        if api is None:  # an empty repo: what a first push starts from ([`export_version`])
            self.head, self.tree, self.versions_meta, self.tags, self.branches, self.num_commits = None, {}, None, {}, {}, 0
            return
        info = api.repo_info(repo_id, revision="main")
        self.head: str = info.sha
        self.tree = _remote_tree(api, repo_id, self.head)
        self.versions_meta = (
            _read_remote_json(repo_id, VERSIONS_FILE, self.head, token) if VERSIONS_FILE in self.tree else None
        )
        refs = api.list_repo_refs(repo_id)
        self.tags: dict[str, str] = {t.name: t.target_commit for t in refs.tags}
        self.branches: dict[str, str] = {b.name: b.target_commit for b in refs.branches}
        self.num_commits = len(api.list_repo_commits(repo_id, revision=self.head))

    @property
    def versions(self) -> list[dict]:
        return list((self.versions_meta or {}).get("versions", []))

    @property
    def latest(self) -> int:
        return max((v["version"] for v in self.versions if v.get("status") != "not_pushed"), default=0)

    def changes(self, files: dict[str, Path | bytes]):
        """`(add operations, paths they add, paths to delete)` turning the remote tree into `files`."""
        from huggingface_hub import CommitOperationAdd

        adds, uploaded = [], []
        for rel, source in files.items():
            remote = self.tree.get(rel)
            if remote is not None and _same_bytes(source, remote):
                continue
            adds.append(CommitOperationAdd(rel, source if isinstance(source, bytes) else str(source)))
            uploaded.append(rel)
        deleted = sorted(p for p in self.tree if p not in files and p not in _KEPT_REMOTE)
        return adds, uploaded, deleted


def _publish(
    api,
    repo_id: str,
    remote: _RemoteState,
    version: int,
    files: dict[str, Path | bytes],
    *,
    purge: bool,
    commit_message: str,
    token,
    _before_commit=None,
) -> HubPushResult:
    """
    Commit `files` as version `version` (one commit, parent = the head read before), tag it, and purge if asked.

    Order, so that the public log never calls a downloadable revision purged: the version's commit marks earlier
    versions `purge_pending`; then the tag; then [`_finish_purge`] deletes every other ref, squashes `main`,
    deletes the LFS objects of the old weights from storage, and only then commits the log that says `purged`. A
    push killed at any point is finished by the next `push` or `list_versions` call.
    """
    from huggingface_hub import CommitOperationDelete

    tag = _tag(version)
    adds, uploaded, deleted = remote.changes(files)
    commit, created = remote.head, bool(adds or deleted)
    if created:
        operations = adds + [CommitOperationDelete(p) for p in deleted]
        if _before_commit is not None:
            _before_commit()
        crash_point("push:before-commit")
        with _translate_errors(repo_id, f"commit version {tag} to"):
            info = api.create_commit(
                repo_id,
                operations,
                commit_message=commit_message,
                parent_commit=remote.head,
            )
        commit = info.oid
    crash_point("push:committed")
    purged = []
    try:
        with _translate_errors(repo_id, f"tag version {tag} of"):
            if tag in remote.tags and remote.tags[tag] != commit:
                api.delete_tag(repo_id, tag=tag)
            if remote.tags.get(tag) != commit:
                api.create_tag(repo_id, tag=tag, revision=commit, tag_message=commit_message)
        crash_point("push:tagged")
        others = set(remote.tags) - {tag} or set(remote.branches) - {"main"}
        if purge and (created or others or _purge_pending(remote.versions_meta)):
            purged, commit = _finish_purge(api, repo_id, token)
    except HubOperationError as err:
        if created:
            raise type(err)(
                f"{err} Version {tag} itself was published (commit {commit}), but tagging or purging older "
                "versions did not finish: re-run the same push (or `hf-recunlearn versions`) to finish it."
            ) from err
        raise
    return HubPushResult(
        f"{api.endpoint}/{repo_id}/commit/{commit}", commit_message, "", commit, _endpoint=api.endpoint,
        repo_id=repo_id, version=version, tag=tag, uploaded=uploaded, deleted=deleted, purged=purged,
        created_commit=created,
    )  # fmt: skip


def _purge_pending(versions_meta: dict | None) -> bool:
    return any(v.get("status") == "purge_pending" for v in (versions_meta or {}).get("versions", []))


def _finish_purge(api, repo_id: str, token) -> tuple[list[str], str]:
    """
    Make every version before the newest undownloadable, then say so: delete every ref but `main` and the newest
    tag (other tags, branches; pull-request refs cannot be deleted, so their weights go with the LFS deletion below),
    squash `main`, permanently delete the LFS objects the head does not use (a squash leaves them in storage,
    fetchable by id), and finally commit the log with those versions marked `purged` and re-tag the newest version.

    Every step is idempotent, so a purge killed at any point is finished by running this again.

    Returns the deleted tags and the commit the newest tag points to.
    """
    from huggingface_hub import CommitOperationAdd

    with _translate_errors(repo_id, "purge earlier versions of"):
        head = api.repo_info(repo_id, revision="main").sha
        meta = _read_remote_json(repo_id, VERSIONS_FILE, head, token) or {"versions": []}
        versions = meta.get("versions", [])
        newest = max((v["version"] for v in versions if v.get("status") == "available"), default=None)
        keep_tag = _tag(newest) if newest is not None else None
        refs = api.list_repo_refs(repo_id, include_pull_requests=True)
        purged = []
        for ref in refs.tags:
            if ref.name != keep_tag:
                api.delete_tag(repo_id, tag=ref.name)
                purged.append(ref.name)
        for ref in refs.branches:
            if ref.name != "main":
                api.delete_branch(repo_id, branch=ref.name)
        crash_point("push:refs-deleted")
        if keep_tag is not None and any(t.name == keep_tag for t in refs.tags):
            api.delete_tag(repo_id, tag=keep_tag)  # the tag would keep the old history alive
        if len(api.list_repo_commits(repo_id, revision="main")) > 1:
            api.super_squash_history(
                repo_id, branch="main", commit_message="History squashed after a deletion request (earlier versions purged)"
            )
        crash_point("push:squashed")
        head = api.repo_info(repo_id, revision="main").sha
        used = {sha for _, sha in _remote_tree(api, repo_id, head).values() if sha}
        stale = [f for f in api.list_lfs_files(repo_id) if f.file_oid not in used]
        if stale:
            api.permanently_delete_lfs_files(repo_id, stale, rewrite_history=True)
        crash_point("push:lfs-deleted")
        pending = [v for v in versions if v.get("status") == "purge_pending"]
        for v in pending:
            v["status"] = "purged"
            v.setdefault("purged_at", _now())
        if pending:
            operations = [CommitOperationAdd(VERSIONS_FILE, _versions_payload(meta["method"], versions))]
            card = _rerender_card(api, repo_id, head, meta["method"], versions, token)
            if card is not None:
                operations.append(CommitOperationAdd(CARD_FILE, str(card).encode()))
            info = api.create_commit(repo_id, operations, commit_message="Earlier versions purged",
                                     parent_commit=head)  # fmt: skip
            head = info.oid
        crash_point("push:finalized")
        if keep_tag is not None:
            api.create_tag(repo_id, tag=keep_tag, revision=head, tag_message=f"{keep_tag} (earlier versions purged)")
    return purged, head


def finish_interrupted_purge(repo_id: str, *, token: str | bool | None = None) -> bool:
    """
    Finish a purge that a killed push left half done (the log says `purge_pending`). Returns whether one was
    finished. `push` and `list_versions` call it first.
    """
    api = _api(token)
    with _translate_errors(repo_id, "read the versions of"):
        head = api.repo_info(repo_id, revision="main").sha
        meta = _read_remote_json(repo_id, VERSIONS_FILE, head, token)
    if not _purge_pending(meta):
        return False
    logger.warning("Finishing the purge of earlier versions of %s that an interrupted push left pending.", repo_id)
    _finish_purge(api, repo_id, token)
    return True


def _rerender_card(api, repo_id: str, revision: str, method: str, versions: list[dict], token):
    """The card of the head, rendered again with the final version statuses (metadata kept from the current card)."""
    from huggingface_hub import ModelCard

    try:
        current = ModelCard.load(repo_id, token=token)
    except Exception:  # no card, or an unreadable one: the version list alone carries the statuses
        return None
    newest = versions[-1] if versions else {}
    inputs = {
        "method": method, "repo_id": repo_id, "versions": versions, "base_model": current.data.base_model,
        "datasets": current.data.datasets, "license": current.data.license, "tags": current.data.tags,
        "library_name": current.data.library_name, "metrics": newest.get("metrics"),
    }  # fmt: skip
    version_format = _version_formats().get(method)
    if version_format is not None:
        config = _read_remote_json(repo_id, version_format.config_file, revision, token)
        inputs = {**version_format.card_inputs(config), **inputs} if config is not None else inputs
    elif newest.get("receipt"):
        inputs.update(_receipt_card_fields(_read_remote_json(repo_id, newest["receipt"], revision, token)))
    return model_card(**inputs)


def _versions_payload(method: str, versions: list[dict]) -> bytes:
    payload = {"format": VERSIONS_FORMAT, "format_version": 1, "method": method, "versions": versions}
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode()


def _merge_versions(remote: _RemoteState, new_entries: list[dict], purge: bool) -> list[dict]:
    """
    The version list of the new commit: previous entries (with their commit ids filled in from the tags), then the
    new ones; with `purge`, every earlier version is marked purged.
    """
    by_version = {v["version"]: dict(v) for v in remote.versions}
    for entry in new_entries:
        old = by_version.get(entry["version"])
        if old is not None and old.get("status") != "not_pushed":
            continue  # already on the Hub
        by_version[entry["version"]] = entry
    newest = max(by_version)
    for v in by_version.values():  # the newest version's commit is its tag; earlier ones get theirs recorded now
        if v["version"] != newest and v.get("status") == "available" and v.get("commit") is None:
            v["commit"] = remote.tags.get(v["tag"]) or (remote.head if v["version"] == remote.latest else None)
    for v in by_version.values():
        if v["version"] != newest and v.get("status") == "available" and purge:
            v["status"] = "purge_pending"  # "purged" only once no ref, commit or stored object holds it
    return [by_version[k] for k in sorted(by_version)]



def _open_remote(repo_id: str, token, private: bool, method: str):
    """Create the repo if needed and read its state; refuse repos that hf_recunlearn did not push, or another method's."""
    token = _token_or_raise(token)
    api = _api(token)
    with _translate_errors(repo_id, "create"):
        api.create_repo(repo_id, private=private, exist_ok=True)
    with _translate_errors(repo_id, "read the current version of"):
        remote = _RemoteState(api, repo_id, token)
    if _purge_pending(remote.versions_meta):  # a push was killed mid-purge: finish it before anything else
        _finish_purge(api, repo_id, token)
        with _translate_errors(repo_id, "read the current version of"):
            remote = _RemoteState(api, repo_id, token)
    if remote.versions_meta is None and set(remote.tree) - _KEPT_REMOTE - _GENERATED:
        raise HubConflictError(
            f"{repo_id!r} already holds files that were not pushed by hf_recunlearn; push to a new repo id."
        )
    if remote.versions_meta is not None and remote.versions_meta.get("method") != method:
        raise HubConflictError(
            f"{repo_id!r} holds a {remote.versions_meta.get('method')!r} repo, not {method!r}; push to another repo."
        )
    return token, api, remote

@dataclass
class _StagedVersion:
    """A version ready to commit: its number, its files (card and log included), the log, and the card's inputs."""

    version: int
    files: dict[str, Path | bytes]
    purge: bool
    commit_message: str
    card: dict


def push(
    directory,
    repo_id: str,
    *,
    private: bool = False,
    keep_history: bool = False,
    metrics: dict[str, float] | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    library_name: str | None = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
    _before_commit=None,
) -> HubPushResult:
    """
    Push the version stored in `directory` to the Hub model repo `repo_id` as tag `vN`, where N is the version the
    directory records: a directory of a registered [`VersionFormat`], e.g. an APA directory. A one-model directory
    goes through [`push_adapter`].

    Args:
        directory: a directory of a registered [`VersionFormat`], e.g. an APA directory (written by `APATrainer` or
            `APARecommender.save_pretrained`). Its checksums are verified before anything is sent. Only read.
        repo_id (`str`): the Hub model repo; created if missing.
        private (`bool`, defaults to `False`): create the repo private (an existing repo keeps its visibility).
        keep_history (`bool`, defaults to `False`): keep every earlier version downloadable even after a deletion
            request. By default, pushing a version that follows a `forget` event deletes the earlier tags and
            squashes the history, so no weights trained on forgotten data stay downloadable.
        metrics (`dict`, *optional*): metric name -> value of this version (card and version list).
        datasets (`list[str]`, *optional*): Hub dataset ids for the card metadata.
        base_model (`str`, *optional*): overrides the base model the directory records (e.g. in `apa_config.json`),
            for the card.
        license, tags, library_name (*optional*): the card's `license`, extra tags and `library_name` (`"peft"`).
        commit_message (`str`, *optional*): defaults to a summary of the event.
        token (`str`, *optional*): a Hub token with write access; defaults to the logged-in one.

    Returns:
        [`HubPushResult`] (a `huggingface_hub.CommitInfo`)

    Raises:
        `FileNotFoundError` (not a directory of a registered format), `ValueError` (a damaged version: a file does
        not match its checksum), [`HubAuthError`], [`HubConflictError`] (the Hub is ahead of, or diverged from, the
        local directory, or another push landed first: pull first), [`HubPushError`] (network or server failure;
        re-run).
    """
    directory = Path(directory)
    version_format = _require_format(directory)
    version_format.verify(directory)  # never publish a damaged version
    token, api, remote = _open_remote(repo_id, token, private, version_format.method)
    staged = _stage_format(version_format, directory, repo_id, remote, token, keep_history=keep_history,
                           metrics=metrics, datasets=datasets, base_model=base_model, license=license, tags=tags,
                           library_name=library_name, commit_message=commit_message)  # fmt: skip
    return _push_staged(api, repo_id, remote, staged, token, _before_commit)


def _push_staged(api, repo_id: str, remote: _RemoteState, staged: _StagedVersion, token, _before_commit=None):
    result = _publish(api, repo_id, remote, staged.version, staged.files, purge=staged.purge,
                      commit_message=staged.commit_message, token=token, _before_commit=_before_commit)  # fmt: skip
    result.card = staged.card
    return result


def _stage_format(version_format: VersionFormat, directory: Path, repo_id: str, remote: _RemoteState, token, *,
                  keep_history: bool, metrics, commit_message: str | None, **card) -> _StagedVersion:  # fmt: skip
    """
    The version `directory` records (already verified), checked against what `remote` holds: the same run, and a
    history that continues the Hub's.
    """
    config = json.loads((directory / version_format.config_file).read_text())
    local = version_format.history(config)
    version = local.version
    if remote.latest > version:
        raise HubConflictError(
            f"{repo_id!r} is at {_tag(remote.latest)} but {str(directory)!r} holds v{version}: the Hub is ahead. "
            f"Pull the latest version first (`hf-recunlearn pull --repo-id {repo_id} --revision main ...`)."
        )
    if remote.latest:
        remote_config = _read_remote_json(repo_id, version_format.config_file, remote.head, token)
        theirs = version_format.history(remote_config) if remote_config else VersionHistory(0, None, [])
        same_events = [_event_key(e) for e in local.events[: len(theirs.events)]] == [
            _event_key(e) for e in theirs.events
        ]
        if theirs.run_id != local.run_id or not same_events:
            raise HubConflictError(
                f"{repo_id!r} holds another history than {str(directory)!r} (a different run, or forget requests "
                f"applied elsewhere up to {_tag(remote.latest)}). Pull the Hub's latest version, apply your forget "
                "requests to it, and push again; or push to another repo id."
            )
    forget_happened = any(e["event"] in FORGET_EVENTS for e in local.events)
    purge = forget_happened and not keep_history

    pushed = {v["version"] for v in remote.versions if v.get("status") != "not_pushed"}
    new_entries = []
    for event in local.events:
        v = event["version"]
        if v in pushed:
            continue
        status = "available" if v == version else "not_pushed"
        new = _version_entry(v, event, metrics if v == version else None, status)
        new.update(_receipt_fields(directory, v))
        if v == version:
            new.update(date=_now(), parent_commit=remote.head)
        new_entries.append(new)
    if remote.latest == version:  # resuming: the version is there; only tags/purge may be missing
        versions = _merge_versions(remote, [], purge)
    else:
        versions = _merge_versions(remote, new_entries, purge)
    given = version_format.card_inputs(config)
    card = dict(method=version_format.method, repo_id=repo_id, versions=versions, metrics=metrics,
                **{**given, **card, "base_model": card.get("base_model") or given.get("base_model")})  # fmt: skip
    files: dict[str, Path | bytes] = dict(_local_files(directory))
    if remote.latest == version:  # resuming an interrupted push: the weights must be the ones on the Hub
        _, changed, _ = remote.changes(files)
        if changed:
            raise HubConflictError(
                f"{repo_id!r} already has {_tag(version)} with other files ({', '.join(changed[:3])}, ...) than "
                f"{str(directory)!r}: the same version was produced twice. Pull the Hub's {_tag(version)}, apply "
                "your forget requests to it, and push again."
            )
    files[VERSIONS_FILE] = _versions_payload(version_format.method, versions)
    files[CARD_FILE] = str(model_card(**card)).encode()
    message = commit_message or version_format.commit_message(versions[-1])
    return _StagedVersion(version, files, purge, message, card)


def push_adapter(
    directory,
    repo_id: str,
    *,
    method: str = "e2urec",
    event: str | None = None,
    metrics: dict[str, float] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    users_removed: int = 0,
    license: str | None = None,
    tags: list[str] | None = None,
    library_name: str | None = None,
    keep_history: bool = False,
    private: bool = False,
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> HubPushResult:
    """
    Push one model directory as the next version `vN` of a repo, with its own card: a PEFT adapter
    (`adapter_config.json` + `adapter_model.safetensors`), or a full `transformers` model (`config.json` + weights,
    e.g. an unlearning run with `use_lora=False`). Every trainer's `push_to_hub()` comes here.

    Args:
        directory: the model directory (e.g. a run's `e2urec/` or `original/`, a trainer's `output_dir`). Only read.
        repo_id (`str`): the Hub model repo; created if missing.
        method (`str`, defaults to `"e2urec"`): `"e2urec"`, `"tallrec"`/`"original"`, `"neggrad"`, ... (a key of
            `hf_recunlearn.cards.METHODS`).
        event (`str`, *optional*): what produced this version; defaults to `"unlearn"` for E2URec and `"train"`
            otherwise. An `"unlearn"`/`"forget"` event purges earlier versions unless `keep_history=True`.
        metrics, base_model, datasets: for the card (`base_model` defaults to the adapter config's).
        users_removed (`int`): users removed, for the unlearning log (never ids, never sample counts).
        license, tags, library_name (*optional*): the card's `license`, extra tags and `library_name` (defaults to
            `"peft"` for an adapter, `"transformers"` for a full model).
        keep_history, private, commit_message, token: as in [`push`].

    The card also shows what the directory's newest receipt (published with it, in `receipts/`) records: the number
    of users forgotten, the method's hyperparameters and the audit figures.

    Returns:
        [`HubPushResult`] (a `huggingface_hub.CommitInfo`); when the Hub already holds exactly these files, no version
        is added.
    """
    _require_model_directory(directory)
    token, api, remote = _open_remote(repo_id, token, private, method)
    staged = _stage_adapter(Path(directory), repo_id, remote, method=method, event=event, metrics=metrics,
                            base_model=base_model, datasets=datasets, users_removed=users_removed, license=license,
                            tags=tags, library_name=library_name, keep_history=keep_history,
                            commit_message=commit_message)  # fmt: skip
    return _push_staged(api, repo_id, remote, staged, token)


def _require_model_directory(directory) -> None:
    directory = Path(directory)
    if not (directory / "adapter_config.json").is_file() and not (directory / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(directory)!r} has neither adapter_config.json nor config.json: pass a PEFT adapter or model "
            f"directory (or use `push` for {' or '.join(f.description for f in _version_formats().values())})."
        )


def _stage_adapter(directory: Path, repo_id: str, remote: _RemoteState, *, method: str, event: str | None, metrics,
                   base_model, users_removed: int, keep_history: bool, commit_message: str | None,
                   library_name: str | None, **card) -> _StagedVersion:  # fmt: skip
    """The next version of a one-model repo from `directory` (no new version when `remote` holds these files)."""
    event = event or ("unlearn" if method == "e2urec" else "train")
    is_adapter = (directory / "adapter_config.json").is_file()
    if base_model is None and is_adapter:
        base_model = json.loads((directory / "adapter_config.json").read_text()).get("base_model_name_or_path")
    local = _local_files(directory)
    adds, _, deleted = remote.changes(local)
    deleted = [p for p in deleted if p not in _GENERATED]  # the card and the log are written anew with each version
    purge = event in FORGET_EVENTS and not keep_history
    if remote.latest and not adds and not deleted:  # the Hub already has these weights: finish tags/purge only
        version = remote.latest
        versions = _merge_versions(remote, [], purge)
    else:
        version = remote.latest + 1
        entry = _version_entry(version, {"event": event, "users_removed": users_removed}, metrics, "available")
        entry.update(date=_now(), parent_commit=remote.head)
        entry.update(_receipt_fields(directory))
        versions = _merge_versions(remote, [entry], purge)
    receipt = versions[-1].get("receipt")
    card = dict(method=method, repo_id=repo_id, versions=versions, metrics=metrics, base_model=base_model,
                library_name=library_name or ("peft" if is_adapter else "transformers"), **card)  # fmt: skip
    if receipt and (directory / receipt).is_file():
        card.update(_receipt_card_fields(json.loads((directory / receipt).read_text())))
    files: dict[str, Path | bytes] = dict(local)
    files[VERSIONS_FILE] = _versions_payload(method, versions)
    files[CARD_FILE] = str(model_card(**card)).encode()
    message = commit_message or f"{_tag(version)}: {event} ({method})"
    return _StagedVersion(version, files, purge, message, card)


def export_version(directory, repo_id: str, output_dir, *, method: str | None = None, **kwargs) -> dict:
    """
    Write to `output_dir` the files a first push of `directory` to the empty repo `repo_id` would publish (the
    model, `receipts/`, the card and `unlearning_versions.json`), without a Hub: a dry run of [`push`] (a directory
    of a registered [`VersionFormat`], e.g. an APA directory) or [`push_adapter`] (any other model directory, with
    `method`). `kwargs` are theirs (card metadata, `metrics`, `event`, `users_removed`, ...).

    Returns:
        `dict`: the inputs of the card, which `hf_recunlearn.cards.model_card(**inputs)` renders again.
    """
    from .controller import recover_swap, staging_dir, swap_in

    directory, output_dir = Path(directory), Path(output_dir)
    recover_swap(output_dir)  # finishes or rolls back an export interrupted between its two renames
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"`output_dir` {str(output_dir)!r} is not empty; pass a new or empty directory.")
    empty = _RemoteState(None, repo_id, None)
    version_format = _format_of(directory)
    if version_format is not None:
        version_format.verify(directory)  # never publish a damaged version
        staged = _stage_format(version_format, directory, repo_id, empty, None, commit_message=None,
                               keep_history=kwargs.pop("keep_history", False), metrics=kwargs.pop("metrics", None),
                               **kwargs)  # fmt: skip
    else:
        _require_model_directory(directory)
        defaults = {"event": None, "metrics": None, "base_model": None, "users_removed": 0, "keep_history": False,
                        "library_name": None}  # fmt: skip
        staged = _stage_adapter(directory, repo_id, empty, method=method or "e2urec", commit_message=None,
                                **{**defaults, **kwargs})  # fmt: skip
    # Written whole beside `output_dir`, then switched in: an interrupted export leaves no half repo behind.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(output_dir)
    try:
        for rel, source in staged.files.items():
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source if isinstance(source, bytes) else Path(source).read_bytes())
        crash_point("export:staged")
        swap_in(staging, output_dir, "export")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staged.card


# --------------------------------------------------------------------------------------------------------------------
# Pull and list


def list_versions(repo_id: str, *, token: str | bool | None = None) -> list[HubVersion]:
    """
    Every version of a repo pushed by hf_recunlearn, oldest first, with what each event did (counts only).

    A version is `available` when its tag exists (`commit` is where the tag points now), `purged` when it was removed
    after a deletion request, `purge_pending` while a purge is unfinished, `not_pushed` when it only existed locally.
    With a write token, a purge an interrupted push left pending is finished first.
    """
    from huggingface_hub import get_token

    api = _api(token)
    with _translate_errors(repo_id, "list the versions of"):
        head = api.repo_info(repo_id, revision="main").sha
        meta = _read_remote_json(repo_id, VERSIONS_FILE, head, token)
    if _purge_pending(meta) and token is not False and (token or get_token()):
        finish_interrupted_purge(repo_id, token=token)  # an interrupted push: finish it before reporting
    with _translate_errors(repo_id, "list the versions of"):
        head = api.repo_info(repo_id, revision="main").sha
        refs = api.list_repo_refs(repo_id)
        meta = _read_remote_json(repo_id, VERSIONS_FILE, head, token)
    if meta is None:
        raise HubRepoNotFoundError(f"{repo_id!r} has no {VERSIONS_FILE}: it was not pushed by hf_recunlearn.")
    tags = {t.name: t.target_commit for t in refs.tags}
    out = []
    for v in meta.get("versions", []):
        status = "available" if v["tag"] in tags else v["status"]
        out.append(HubVersion(
            version=int(v["version"]), tag=v["tag"], status=status, commit=tags.get(v["tag"], v.get("commit")),
            event=v.get("event", ""), shards_retrained=list(v.get("shards_retrained", [])),
            users_removed=int(v.get("users_removed", 0)), date=v.get("date"), metrics=dict(v.get("metrics") or {}),
        ))  # fmt: skip
    return out


def _resolve_revision(api, repo_id: str, revision: str, token) -> str:
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        with _translate_errors(repo_id, "read", revision):
            return api.repo_info(repo_id, revision=revision).sha
    except HubRevisionNotFoundError as err:
        try:
            versions = list_versions(repo_id, token=token)
        except (HubOperationError, RevisionNotFoundError):
            raise err from None
        known = {v.tag: v for v in versions}
        available = ", ".join(v.tag for v in versions if v.status == "available") or "none"
        if revision in known and known[revision].status == "purged":
            raise HubRevisionNotFoundError(
                f"{revision!r} of {repo_id!r} was purged after a deletion request: its weights were trained on data "
                f"that has since been forgotten, so it can no longer be downloaded. Available versions: {available}."
            ) from err.__cause__
        raise HubRevisionNotFoundError(f"{err} Available versions: {available}.") from err.__cause__


def _verify_pulled(directory: Path) -> None:
    version_format = _format_of(directory)
    if version_format is not None:
        version_format.verify(directory)


def pull(
    repo_id: str,
    revision: str = "main",
    output_dir=None,
    *,
    token: str | bool | None = None,
    cache_dir=None,
) -> Path:
    """
    Download one version of a repo pushed by hf_recunlearn.

    Args:
        repo_id (`str`): the Hub repo.
        revision (`str`, defaults to `"main"`): a version tag (`"v2"`), branch or commit id.
        output_dir (*optional*): a directory to create with the version's files (it must not exist or be empty);
            written completely or not at all. Defaults to `None`: return the path in the Hugging Face cache.
        token, cache_dir: passed to `huggingface_hub`.

    A version of a registered [`VersionFormat`] (e.g. APA) is verified after download (every checksum its metadata
    records); with `output_dir`, before it is moved in place, so a damaged or tampered version never lands there.

    Returns:
        `Path`: the directory holding the version (an APA directory for APA repos, an adapter for adapter repos).

    Raises:
        [`HubRepoNotFoundError`], [`HubRevisionNotFoundError`] (also for purged versions, saying so),
        [`HubPushError`] on network errors, `ValueError` when a file does not match its checksum.
    """
    from huggingface_hub import snapshot_download

    api = _api(token)
    sha = _resolve_revision(api, repo_id, revision, token)
    if output_dir is None:
        with _translate_errors(repo_id, "download", revision):
            path = Path(snapshot_download(repo_id, revision=sha, cache_dir=cache_dir, token=token))
        _verify_pulled(path)
        return path
    from .controller import recover_swap, staging_dir

    output_dir = Path(output_dir)
    recover_swap(output_dir)  # the download of a pull killed before its rename
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"`output_dir` {str(output_dir)!r} is not empty; pass a new or empty directory.")
    staging = staging_dir(output_dir)
    try:
        with _translate_errors(repo_id, "download", revision):
            snapshot_download(repo_id, revision=sha, local_dir=staging, token=token, cache_dir=cache_dir)
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        _verify_pulled(staging)
        if output_dir.exists():
            output_dir.rmdir()
        os.rename(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir

