"""
A Hugging Face Hub-compatible HTTP server for offline tests (test code: it is not part of the installed package).

[`HubServer`] speaks the part of the Hub HTTP API that the real, unmodified `huggingface_hub` client uses to create
repos, push atomic commits (regular and LFS files), tag and branch them, list and download them, and squash their
history. Point the client at it with `HF_ENDPOINT` and the library's Hub code runs end to end without a network.

Like the Hub, the server keeps git-style content-addressed objects: every file is a git blob (its id is
`sha1("blob {size}\\0" + data)`), LFS files are stored by their sha256 and committed as LFS pointers, folders and
commits get real git tree and commit ids. LFS uploads follow the Hub's protocol: the batch endpoint hands out a
signed upload URL on a second origin (the "storage", like S3) and `resolve` answers LFS files with a redirect to a
signed download URL there, so the client drops its `Authorization` header exactly as it does against the Hub.

`huggingface_hub` reads `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_DISABLE_XET`, ... once, when it is imported: call
[`prepare_hub_environment`] before the first `import huggingface_hub` (a `conftest.py` is the place), then start the
server on the port it chose. The server does not speak Xet, so `HF_HUB_DISABLE_XET=1` is required.

Example:

```python
>>> from hub_server import HubServer, prepare_hub_environment  # tests/ on sys.path, as pytest puts it
>>> env = prepare_hub_environment()  # before `huggingface_hub` is imported
>>> with HubServer(port=env.port, tokens=[env.token]) as server:
...     from huggingface_hub import HfApi
...     api = HfApi()
...     url = api.create_repo("user/tiny")
...     server.fail_next("/commit/", status=500)  # the next commit request fails, nothing changes
```
"""

from __future__ import annotations

import atexit
import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import traceback
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit


REPO_TYPES = ("model", "dataset", "space")
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
DEFAULT_BRANCH = "main"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
"""Files of at least this many bytes are uploaded with LFS, whatever their name (the Hub's rule)."""

DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
        "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
        "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
        "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip
"""The `.gitattributes` the Hub puts in the first commit of a new repo: these patterns are uploaded with LFS."""

_REPO_API_ROUTES = {
    # (method, first path segment after `/api/{type}s/{repo_id}`) -> `_HubRequestHandler` method
    ("GET", None): "repo_info",
    ("GET", "revision"): "repo_info",
    ("GET", "tree"): "tree",
    ("POST", "paths-info"): "paths_info",
    ("GET", "refs"): "refs",
    ("GET", "commits"): "commits",
    ("POST", "preupload"): "preupload",
    ("POST", "commit"): "commit",
    ("POST", "tag"): "create_tag",
    ("DELETE", "tag"): "delete_tag",
    ("POST", "branch"): "create_branch",
    ("DELETE", "branch"): "delete_branch",
    ("POST", "super-squash"): "super_squash",
    ("GET", "lfs-files"): "lfs_files",
    ("POST", "lfs-files"): "lfs_files",
    ("PUT", "settings"): "update_settings",
}
_API_ACTIONS = {action for _, action in _REPO_API_ROUTES} | {"resolve", "xet-write-token", "xet-read-token"}
"""Path segments that follow a repo id in `/api/...` URLs, which tells `name/tree/...` from `namespace/name/...`."""
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_TRUE_VALUES = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------------------------------
# Git objects


def git_blob_oid(data: bytes) -> str:
    """Git object id of a file's content: `sha1("blob {len}\\0" + data)`, as the Hub reports it for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file committed in place of an LFS file's content."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass(frozen=True)
class _FileEntry:
    """One file of a commit: its size and git blob id, plus its sha256 when it is stored with LFS."""

    size: int
    blob_id: str
    lfs_sha256: str | None = None

    @classmethod
    def regular(cls, data: bytes) -> _FileEntry:
        return cls(size=len(data), blob_id=git_blob_oid(data))

    @classmethod
    def lfs(cls, sha256: str, size: int) -> _FileEntry:
        return cls(size=size, blob_id=git_blob_oid(lfs_pointer(sha256, size)), lfs_sha256=sha256)

    @property
    def content_key(self) -> str:
        """Key of the content in the blob store (git blob id, or sha256 for LFS files)."""
        return self.lfs_sha256 or self.blob_id

    @property
    def pointer_size(self) -> int:
        return len(lfs_pointer(self.lfs_sha256, self.size)) if self.lfs_sha256 else 0


def _parent_dirs(path: str) -> Iterator[str]:
    """`"a/b/c.txt"` -> `"a/b"`, `"a"`."""
    while "/" in path:
        path = path.rpartition("/")[0]
        yield path


def _tree_oids(files: dict[str, _FileEntry]) -> dict[str, str]:
    """Git tree id of every folder of a commit, `""` being the root."""
    children: dict[str, dict[str, tuple[bool, str]]] = {"": {}}  # folder -> name -> (is_folder, oid)
    for path in files:
        for folder in _parent_dirs(path):
            children.setdefault(folder, {})
    oids: dict[str, str] = {}
    for folder in sorted(children, key=lambda f: f.count("/") + bool(f), reverse=True):  # deepest first
        entries = dict(children[folder])
        prefix = f"{folder}/" if folder else ""
        for path, entry in files.items():
            if path.startswith(prefix) and "/" not in path[len(prefix) :]:
                entries[path[len(prefix) :]] = (False, entry.blob_id)
        for sub in children:
            if sub.startswith(prefix) and sub and "/" not in sub[len(prefix) :]:
                entries[sub[len(prefix) :]] = (True, oids[sub])
        # git sorts folder names as if they ended with "/"
        body = b"".join(
            (b"40000 " if is_folder else b"100644 ") + name.encode() + b"\0" + bytes.fromhex(oid)
            for name, (is_folder, oid) in sorted(entries.items(), key=lambda kv: kv[0] + ("/" if kv[1][0] else ""))
        )
        oids[folder] = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
    return oids


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass
class _Commit:
    """A commit: the full (flat) file listing of the repo at that point, and its parent."""

    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, _FileEntry]
    tree_oids: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def create(cls, *, files: dict[str, _FileEntry], parent: str | None, title: str, message: str, author: str):
        """Build a commit whose id is the git commit id of its tree, parent, author, time and message."""
        moment = _now()
        tree_oids = _tree_oids(files)
        signature = f"{author} <{author}@users.noreply.huggingface.co> {int(moment.timestamp())} +0000"
        text = f"tree {tree_oids['']}\n" + (f"parent {parent}\n" if parent else "")
        text += f"author {signature}\ncommitter {signature}\n\n{title}\n" + (f"\n{message}\n" if message else "")
        raw = text.encode()
        oid = hashlib.sha1(b"commit %d\0" % len(raw) + raw).hexdigest()
        return cls(oid, parent, title, message, author, _iso(moment), dict(files), tree_oids)

    def folders(self) -> set[str]:
        return {folder for path in self.files for folder in _parent_dirs(path)}


@dataclass
class _Repo:
    """A repository: its commits (content-addressed) and the refs pointing into them."""

    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    sdk: str | None = None
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    pull_requests: dict[int, str] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    lfs_objects: set[str] = field(default_factory=set)
    """sha256 of the LFS objects uploaded to this repo (committed or not)."""

    @property
    def key(self) -> tuple[str, str]:
        return self.repo_type, self.repo_id

    def ref_targets(self) -> list[str]:
        return [*self.branches.values(), *self.tags.values(), *self.pull_requests.values()]

    def resolve(self, revision: str) -> _Commit:
        """The commit a revision (branch, tag, `refs/...` name or commit id) points to."""
        oid = self.branches.get(revision) or self.tags.get(revision)
        if oid is None and revision.startswith("refs/heads/"):
            oid = self.branches.get(revision.removeprefix("refs/heads/"))
        if oid is None and revision.startswith("refs/tags/"):
            oid = self.tags.get(revision.removeprefix("refs/tags/"))
        if oid is None and (match := re.fullmatch(r"refs/pr/(\d+)", revision)):
            oid = self.pull_requests.get(int(match[1]))
        if oid is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [commit_oid for commit_oid in self.commits if commit_oid.startswith(revision)]
            oid = matches[0] if len(matches) == 1 else None
        if oid is None:
            raise HubError.revision_not_found(revision)
        return self.commits[oid]

    def history(self, oid: str) -> Iterator[_Commit]:
        """The commit `oid` and its ancestors, newest first."""
        while oid is not None:
            commit = self.commits[oid]
            yield commit
            oid = commit.parent

    def reachable_commits(self) -> dict[str, _Commit]:
        return {commit.oid: commit for target in self.ref_targets() for commit in self.history(target)}


# --------------------------------------------------------------------------------------------------------------------
# Storage


class _BlobStore:
    """Content-addressed bytes, in memory (`root=None`) or as files under `root/objects`."""

    def __init__(self, root: Path | None):
        self._root = root / "objects" if root is not None else None
        self._memory: dict[str, bytes] = {}
        if self._root is not None:
            self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self._root / key[:2] / key

    def put(self, key: str, data: bytes) -> None:
        if self._root is None:
            self._memory[key] = data
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".tmp{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes | None:
        if self._root is None:
            return self._memory.get(key)
        path = self._path(key)
        return path.read_bytes() if path.is_file() else None

    def __contains__(self, key: str) -> bool:
        return key in self._memory if self._root is None else self._path(key).is_file()

    def keys(self) -> set[str]:
        if self._root is None:
            return set(self._memory)
        return {path.name for path in self._root.glob("*/*") if ".tmp" not in path.name}

    def delete(self, key: str) -> None:
        if self._root is None:
            self._memory.pop(key, None)
        else:
            self._path(key).unlink(missing_ok=True)


def _repo_to_json(repo: _Repo) -> dict:
    def entry(e: _FileEntry) -> list:
        return [e.size, e.blob_id, e.lfs_sha256]

    return {
        "repo_type": repo.repo_type,
        "repo_id": repo.repo_id,
        "private": repo.private,
        "created_at": repo.created_at,
        "sdk": repo.sdk,
        "branches": repo.branches,
        "tags": repo.tags,
        "pull_requests": {str(k): v for k, v in repo.pull_requests.items()},
        "lfs_objects": sorted(repo.lfs_objects),
        "commits": [
            {**{k: getattr(c, k) for k in ("oid", "parent", "title", "message", "author", "date")},
             "files": {path: entry(e) for path, e in c.files.items()}}
            for c in repo.commits.values()
        ],
    }  # fmt: skip


def _repo_from_json(data: dict) -> _Repo:
    commits = {}
    for c in data["commits"]:
        files = {path: _FileEntry(*e) for path, e in c["files"].items()}
        commits[c["oid"]] = _Commit(
            c["oid"], c["parent"], c["title"], c["message"], c["author"], c["date"], files, _tree_oids(files)
        )
    return _Repo(
        repo_type=data["repo_type"],
        repo_id=data["repo_id"],
        private=data["private"],
        created_at=data["created_at"],
        sdk=data["sdk"],
        branches=data["branches"],
        tags=data["tags"],
        pull_requests={int(k): v for k, v in data["pull_requests"].items()},
        commits=commits,
        lfs_objects=set(data["lfs_objects"]),
    )


# --------------------------------------------------------------------------------------------------------------------
# Errors and faults


class HubError(Exception):
    """
    An error answered to the client the way the Hub sends it, so that `huggingface_hub` raises its typed errors.

    Args:
        status (`int`):
            HTTP status code.
        message (`str`):
            Sent as the `X-Error-Message` header and as `{"error": message}` in the body.
        code (`str`, *optional*):
            Sent as the `X-Error-Code` header: `"RepoNotFound"`, `"RevisionNotFound"` or `"EntryNotFound"` make the
            client raise `RepositoryNotFoundError`, `RevisionNotFoundError` or `RemoteEntryNotFoundError`.
        headers (`dict[str, str]`, *optional*):
            Extra response headers.
        body (`dict`, *optional*):
            Extra fields of the JSON body.
    """

    def __init__(self, status: int, message: str, *, code=None, headers=None, body=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body or {}

    @classmethod
    def repo_not_found(cls, status: int = 404) -> HubError:
        return cls(status, "Repository not found", code="RepoNotFound")

    @classmethod
    def revision_not_found(cls, revision: str) -> HubError:
        return cls(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    @classmethod
    def entry_not_found(cls, path: str, commit: _Commit | None = None) -> HubError:
        headers = {"X-Repo-Commit": commit.oid} if commit is not None else None
        return cls(404, f"Entry not found: {path!r}", code="EntryNotFound", headers=headers)

    @classmethod
    def bad_request(cls, message: str) -> HubError:
        return cls(400, message)


@dataclass
class Fault:
    """A failure armed with [`HubServer.fail_next`]; `triggered` counts the requests it failed so far."""

    pattern: str
    method: str | None
    status: int
    drop_connection: bool
    skip: int
    times: int
    triggered: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(self.pattern, path) is not None


@dataclass(frozen=True)
class RequestRecord:
    """
    One request the server received: `method`, `path` (as sent, with the query) and the `status` answered (`None`
    when a fault dropped the connection).
    """

    method: str
    path: str
    status: int | None


# --------------------------------------------------------------------------------------------------------------------
# Server


class HubServer:
    """
    A small Hugging Face Hub that the real `huggingface_hub` client can talk to, for offline tests.

    Args:
        root (`str` or `os.PathLike`, *optional*):
            Folder holding the repos and their objects, so that a server restarted on the same folder finds them
            again. Defaults to `None`: everything lives in memory.
        tokens (`Iterable[str]`, *optional*):
            The valid access tokens. Defaults to `None`: no authentication, every request is accepted. When set,
            writes (and reads of private repos) need an `Authorization: Bearer <token>` header with one of them, and
            any request carrying another token is answered 401, as the Hub does for an invalid token.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Interface to listen on.
        port (`int`, *optional*, defaults to `0`):
            Port of the Hub API; `0` picks a free one. Since `huggingface_hub` reads `HF_ENDPOINT` at import, tests
            usually choose the port first (see [`prepare_hub_environment`]).
        user (`str`, *optional*, defaults to `"user"`):
            Name of the user every valid token belongs to (`whoami`), and the namespace of repos created without one.

    The server listens on two ports: the Hub API at [`~HubServer.url`], and a "storage" origin at
    [`~HubServer.storage_url`] that receives LFS uploads and serves LFS downloads through signed URLs, as S3 and the
    CDN do for the Hub. Any namespace can be written by any valid token; pagination, Xet, discussions and gated repos
    are not implemented.

    Example:

    ```python
    >>> with HubServer() as server:
    ...     server.url
    'http://127.0.0.1:38517'
    ```
    """

    def __init__(self, root=None, tokens: Iterable[str] | None = None, host: str = "127.0.0.1", port: int = 0,
                 *, user: str = "user"):  # fmt: skip
        if isinstance(tokens, str):
            raise TypeError(f"`tokens` must be an iterable of tokens, got the string {tokens!r}; wrap it in a list.")
        self.root = Path(root) if root is not None else None
        self.tokens = frozenset(tokens) if tokens is not None else None
        self.host = host
        self.port = port
        self.user = user
        self.request_log: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._secret = secrets.token_bytes(32)
        self._faults: list[Fault] = []
        self._blobs = _BlobStore(self.root)
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        if self.root is not None and (self.root / "state.json").is_file():
            state = json.loads((self.root / "state.json").read_text())
            self._repos = {repo.key: repo for repo in map(_repo_from_json, state["repos"])}

    # Lifecycle ------------------------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        """Start listening (in background threads). Returns the server, so `server = HubServer().start()` works."""
        if self._servers:
            raise RuntimeError(f"The server is already running at {self.url}.")
        hub = _HTTPServer((self.host, self.port), _HubRequestHandler, self)
        storage = _HTTPServer((self.host, 0), _StorageRequestHandler, self)
        self._servers = [hub, storage]
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening. The repos stay (in memory, or in `root`), so `start()` serves them again."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join()
        self._servers, self._threads = [], []

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the Hub API, the value for `HF_ENDPOINT`."""
        if not self._servers:
            raise RuntimeError("The server is not running; call `start()` first.")
        return f"http://{self.host}:{self._servers[0].server_address[1]}"

    @property
    def storage_url(self) -> str:
        """Base URL of the storage origin where LFS objects are uploaded to and downloaded from."""
        if not self._servers:
            raise RuntimeError("The server is not running; call `start()` first.")
        return f"http://{self.host}:{self._servers[1].server_address[1]}"

    # Fault injection ------------------------------------------------------------------------------------------------

    def fail_next(self, pattern: str, *, status: int = 500, method: str | None = None, times: int = 1, skip: int = 0,
                  drop_connection: bool = False) -> Fault:  # fmt: skip
        """
        Make the next request(s) whose path matches `pattern` fail, before the server acts on them.

        Args:
            pattern (`str`):
                Regular expression searched in the request path as sent (percent-encoded, without the query), e.g.
                `"/commit/"`, `"/preupload/"`, `"/lfs-upload/"` (LFS uploads, on the storage origin), `"/resolve/"`.
            status (`int`, *optional*, defaults to `500`):
                Status code answered. Note that the client retries 5xx answers of some calls (preupload, LFS upload,
                listings) with exponential backoff; the commit call itself is never retried.
            method (`str`, *optional*):
                Only fail requests with this HTTP method (`"POST"`, `"PUT"`, ...). Defaults to any method.
            times (`int`, *optional*, defaults to `1`):
                Number of consecutive matching requests to fail.
            skip (`int`, *optional*, defaults to `0`):
                Number of matching requests to let through first: `skip=2` fails the third one.
            drop_connection (`bool`, *optional*, defaults to `False`):
                Instead of answering, read half of the request body and close the connection, like a crash in the
                middle of an upload. The client sees a network error.

        Returns:
            [`Fault`]: the armed fault; its `triggered` attribute counts the requests it failed.
        """
        if times < 1 or skip < 0:
            raise ValueError(f"`times` must be >= 1 and `skip` >= 0, got times={times} and skip={skip}.")
        fault = Fault(pattern, method.upper() if method else None, status, drop_connection, skip, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault armed with [`~HubServer.fail_next`]."""
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.triggered < fault.times and fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.triggered += 1
                    return fault
        return None

    # Inspection -----------------------------------------------------------------------------------------------------

    def reachable_blobs(self, repo_id: str | None = None, *, repo_type: str | None = None) -> dict[str, bytes]:
        """
        The content of every file of every commit reachable from a branch, tag or pull request ref.

        Args:
            repo_id (`str`, *optional*):
                Only look in this repo. Defaults to all repos.
            repo_type (`str`, *optional*):
                Only look in repos of this type (`"model"`, `"dataset"` or `"space"`). Defaults to all types.

        Returns:
            `dict[str, bytes]`: content by object id (git blob id for regular files, sha256 for LFS files).
        """
        with self._lock:
            repos = [
                repo
                for repo in self._repos.values()
                if (repo_id is None or repo.repo_id == repo_id) and (repo_type is None or repo.repo_type == repo_type)
            ]
            keys = {
                entry.content_key
                for repo in repos
                for commit in repo.reachable_commits().values()
                for entry in commit.files.values()
            }
            return {key: self._blobs.get(key) for key in keys}

    def is_reachable(self, data: bytes, repo_id: str | None = None, *, repo_type: str | None = None) -> bool:
        """Whether any revision reachable from a ref (in `repo_id`, or in any repo) holds a file with these bytes."""
        return data in self.reachable_blobs(repo_id, repo_type=repo_type).values()

    def is_stored(self, data: bytes, repo_id: str | None = None) -> bool:
        """
        Whether the server still stores these bytes at all, reachable or not (e.g. an uncommitted LFS upload, or an LFS
        object a squash left behind). With `repo_id`, whether that repo still holds them (storage is shared by
        content, so another repo may hold the same bytes).
        """
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            stored = git_blob_oid(data) in self._blobs or sha256 in self._blobs
            if repo_id is None or not stored:
                return stored
            keys = {git_blob_oid(data), sha256}
            return any(
                keys & ({e.content_key for c in repo.commits.values() for e in c.files.values()} | repo.lfs_objects)
                for repo in self._repos.values()
                if repo.repo_id == repo_id
            )

    def collect_garbage(
        self, repo_id: str | None = None, *, repo_type: str | None = None, keep_lfs: bool = False
    ) -> None:
        """
        Forget the commits no ref reaches and the LFS uploads no remaining commit holds, then delete every stored
        object that is no longer used. A super-squash does this for its repo with `keep_lfs=True`, as the Hub does:
        the squashed commits cannot be downloaded any more, not even by commit id, but their LFS objects stay in
        storage (listed by `list_lfs_files`) until `permanently_delete_lfs_files` removes them.

        Args:
            repo_id (`str`, *optional*):
                Only collect in this repo. Defaults to all repos.
            repo_type (`str`, *optional*):
                Only collect in repos of this type. Defaults to all types.
        """
        with self._lock:
            for repo in self._repos.values():
                if (repo_id is None or repo.repo_id == repo_id) and (repo_type is None or repo.repo_type == repo_type):
                    repo.commits = repo.reachable_commits()
                    if not keep_lfs:
                        repo.lfs_objects = {
                            e.lfs_sha256 for c in repo.commits.values() for e in c.files.values() if e.lfs_sha256
                        }
            self._sweep_blobs()

    def _sweep_blobs(self) -> None:
        """Delete the stored objects no commit holds and no repo has as a pending LFS upload."""
        used = set().union(*(repo.lfs_objects for repo in self._repos.values()))
        used |= {e.content_key for r in self._repos.values() for c in r.commits.values() for e in c.files.values()}
        for key in self._blobs.keys() - used:
            self._blobs.delete(key)
        self._save()

    # State (every method below runs under the lock) -----------------------------------------------------------------

    def _save(self) -> None:
        if self.root is None:
            return
        path = self.root / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"repos": [_repo_to_json(repo) for repo in self._repos.values()]}))
        os.replace(tmp, path)

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self.url}/{_URL_PREFIXES[repo.repo_type]}{repo.repo_id}"

    def _get_repo(self, repo_type: str, repo_id: str, user: str | None) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError.repo_not_found()
        if repo.private and self.tokens is not None and user is None:
            raise HubError.repo_not_found(status=401)  # the Hub hides private repos behind a 401 "not found"
        return repo

    def _create_repo(self, repo_type: str, repo_id: str, private: bool, sdk: str | None, user: str) -> _Repo:
        repo = _Repo(repo_type, repo_id, private, _iso(_now()), sdk=sdk)
        files = {}
        for path, data in [(".gitattributes", DEFAULT_GITATTRIBUTES.encode())]:
            files[path] = _FileEntry.regular(data)
            self._blobs.put(files[path].blob_id, data)
        commit = _Commit.create(files=files, parent=None, title="initial commit", message="", author=user)
        repo.commits[commit.oid] = commit
        repo.branches[DEFAULT_BRANCH] = commit.oid
        self._repos[repo.key] = repo
        self._save()
        return repo

    def _commit(self, repo: _Repo, revision: str, lines: list[dict], *, create_pr: bool, user: str) -> dict:
        """Apply an NDJSON commit payload atomically: either every operation lands in one new commit, or nothing."""
        header = next((line["value"] for line in lines if line.get("key") == "header"), None)
        if header is None or not header.get("summary"):
            raise HubError.bad_request("The commit payload needs a `header` line with a non-empty `summary`.")
        if create_pr:
            base = repo.resolve(revision)
            number = max(repo.pull_requests, default=0) + 1
            branch_ref = f"refs/pr/{number}"
        else:
            branch_ref = revision.removeprefix("refs/heads/")
            if branch_ref in repo.branches:
                base = repo.commits[repo.branches[branch_ref]]
            elif match := re.fullmatch(r"refs/pr/(\d+)", branch_ref):
                base = repo.resolve(branch_ref)
                number = int(match[1])
            else:
                repo.resolve(revision)  # 404 RevisionNotFound when it does not exist at all
                raise HubError.bad_request(f"Cannot commit to {revision!r}: it is not a branch.")
        parent_commit = header.get("parentCommit")
        if parent_commit and not base.oid.startswith(parent_commit):
            raise HubError(
                412,
                f"A commit has happened since {parent_commit} (the head of {revision!r} is {base.oid}). "
                "Please refresh and try again.",
            )

        files = dict(base.files)
        new_blobs: dict[str, bytes] = {}  # written only once every operation is known to be valid
        for line in lines:
            key, value = line.get("key"), line.get("value") or {}
            if key == "header":
                continue
            path = _clean_path(value.get("path"))
            if key == "file":
                encoding = value.get("encoding", "base64")
                content = value.get("content", "")
                data = base64.b64decode(content) if encoding == "base64" else content.encode()
                files[path] = _FileEntry.regular(data)
                new_blobs[files[path].blob_id] = data
            elif key == "lfsFile":
                oid = value.get("oid")
                if oid not in repo.lfs_objects or oid not in self._blobs:
                    raise HubError.bad_request(
                        f"LFS object {oid} of {path!r} has not been uploaded; upload it with the LFS batch API first."
                    )
                size = len(self._blobs.get(oid))
                if value.get("size") is not None and value["size"] != size:
                    raise HubError.bad_request(f"LFS object {oid} has {size} bytes, not {value['size']}.")
                files[path] = _FileEntry.lfs(oid, size)
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {path!r}", code="EntryNotFound")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                deleted = [p for p in files if p.startswith(prefix)]
                if not deleted:
                    raise HubError(404, f"A folder with this name doesn't exist: {path!r}", code="EntryNotFound")
                for p in deleted:
                    del files[p]
            else:
                raise HubError.bad_request(f"Unknown commit operation {key!r}.")
        if clashes := sorted(set(files) & {folder for path in files for folder in _parent_dirs(path)}):
            raise HubError.bad_request(f"Cannot have both a file and a folder at {clashes[0]!r}.")

        for blob_id, data in new_blobs.items():
            self._blobs.put(blob_id, data)
        commit = _Commit.create(
            files=files, parent=base.oid, title=header["summary"], message=header.get("description") or "", author=user
        )
        repo.commits[commit.oid] = commit
        response = {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
            "pullRequestUrl": None,
        }
        if branch_ref.startswith("refs/pr/"):
            repo.pull_requests[number] = commit.oid
            response["pullRequestUrl"] = f"{self._repo_url(repo)}/discussions/{number}"
        else:
            repo.branches[branch_ref] = commit.oid
        self._save()
        return response

    def _super_squash(self, repo: _Repo, branch: str, message: str, user: str) -> _Commit:
        if branch not in repo.branches:
            raise HubError.revision_not_found(branch)
        head = repo.commits[repo.branches[branch]]
        commit = _Commit.create(files=head.files, parent=None, title=message, message="", author=user)
        repo.commits[commit.oid] = commit
        repo.branches[branch] = commit.oid
        self.collect_garbage(repo.repo_id, repo_type=repo.repo_type, keep_lfs=True)
        return commit

    def _delete_lfs(self, repo: _Repo, oids: set[str], rewrite_history: bool, user: str) -> None:
        """
        Permanently delete LFS objects. With `rewrite_history`, every commit reachable from a ref (branches, tags,
        pull requests) that points at one of them is rewritten without those files, and the refs move to the
        rewritten commits, as the Hub does.
        """
        repo.lfs_objects -= oids
        if rewrite_history:
            rewritten: dict[str, str] = {}

            def rewrite(oid: str | None) -> str | None:
                if oid is None:
                    return None
                if oid not in rewritten:
                    old = repo.commits[oid]
                    parent = rewrite(old.parent)
                    files = {p: e for p, e in old.files.items() if e.lfs_sha256 not in oids}
                    if files == old.files and parent == old.parent:
                        rewritten[oid] = oid
                    else:
                        new = _Commit.create(files=files, parent=parent, title=old.title, message=old.message,
                                             author=old.author)  # fmt: skip
                        repo.commits[new.oid] = new
                        rewritten[oid] = new.oid
                return rewritten[oid]

            for refs in (repo.branches, repo.tags, repo.pull_requests):
                for name, target in list(refs.items()):
                    refs[name] = rewrite(target)
        self.collect_garbage(repo.repo_id, repo_type=repo.repo_type, keep_lfs=True)
        for oid in oids:
            still_used = any(oid in r.lfs_objects for r in self._repos.values())
            if not still_used:
                self._blobs.delete(oid)
        self._save()

    def _upload_mode(self, commit: _Commit, path: str, size: int, sample: bytes) -> str:
        """`"lfs"` for big files, binary files and paths `.gitattributes` tracks with LFS; `"regular"` otherwise."""
        if size >= LFS_SIZE_THRESHOLD or b"\0" in sample:
            return "lfs"
        entry = commit.files.get(".gitattributes")
        attributes = self._blobs.get(entry.blob_id).decode(errors="replace") if entry else ""
        for line in attributes.splitlines():
            pattern, *attrs = line.split() or [""]
            if "filter=lfs" in attrs and _gitattributes_match(pattern, path):
                return "lfs"
        return "regular"

    def _signed_url(self, purpose: str, repo: _Repo, oid: str, size: int) -> str:
        query = {"repo": f"{repo.repo_type}:{repo.repo_id}", "size": size}
        query["sig"] = self._signature(purpose, query["repo"], oid, size)
        return f"{self.storage_url}/{purpose}/{oid}?{urlencode(query)}"

    def _signature(self, purpose: str, repo_key: str, oid: str, size: int | str) -> str:
        return hmac.new(self._secret, f"{purpose}\n{repo_key}\n{oid}\n{size}".encode(), "sha256").hexdigest()


def _clean_path(path: Any) -> str:
    if not isinstance(path, str) or not path.strip("/"):
        raise HubError.bad_request(f"Invalid path in commit operation: {path!r}.")
    path = path.strip("/")
    if any(part in ("", ".", "..", ".git") for part in path.split("/")):
        raise HubError.bad_request(f"Invalid path in commit operation: {path!r}.")
    return path


def _gitattributes_match(pattern: str, path: str) -> bool:
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rpartition("/")[2], pattern)
    return fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", "*"))


def _front_matter(text: str) -> dict | None:
    """The YAML metadata block at the top of a README, or `None` when there is none."""
    match = re.match(r"^---\s*\n(.*?\n)?---\s*(\n|$)", text, flags=re.DOTALL)
    if match is None:
        return None
    import yaml  # a dependency of huggingface_hub, only needed here

    metadata = yaml.safe_load(match[1] or "") or {}
    if not isinstance(metadata, dict):
        raise ValueError("The YAML metadata must be a mapping of keys to values.")
    return metadata


def _validate_metadata(metadata: dict, repo_type: str) -> list[str]:
    """A few of the checks the Hub runs on README metadata; returns the error messages."""
    errors = []
    for key in ("tags", "datasets", "language"):
        value = metadata.get(key)
        if value is not None and not isinstance(value, (str, list)):
            errors.append(f'"{key}" must be a string or an array of strings')
        elif isinstance(value, list) and not all(isinstance(item, str) for item in value):
            errors.append(f'"{key}" must be an array of strings')
    for key in ("library_name", "license", "pipeline_tag"):
        if key in metadata and not isinstance(metadata[key], str):
            errors.append(f'"{key}" must be a string')
    if "base_model" in metadata and not isinstance(metadata["base_model"], (str, list)):
        errors.append('"base_model" must be a string or an array of strings')
    if repo_type == "space" and "sdk" in metadata and metadata["sdk"] not in SPACE_SDKS:
        errors.append(f'"sdk" must be one of {list(SPACE_SDKS)}')
    return errors


# --------------------------------------------------------------------------------------------------------------------
# HTTP


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self.open_connections: set[socket.socket] = set()
        super().__init__(address, handler)

    def server_close(self) -> None:
        """Also close the clients' keep-alive connections, which would otherwise outlive the server."""
        super().server_close()
        with self.hub._lock:
            connections, self.open_connections = self.open_connections, set()
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _BaseRequestHandler(BaseHTTPRequestHandler):
    """Reads bodies (sized or chunked), applies injected faults, turns [`HubError`] into Hub-style answers."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: Nagle would add 40 ms to every answer
    server: _HTTPServer

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):  # the request log replaces stderr noise
        pass

    @property
    def hub(self) -> HubServer:
        return self.server.hub

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.hub._lock:
            self.server.open_connections.discard(self.connection)
        super().finish()

    def _dispatch(self, method: str) -> None:
        self._body: bytes | None = None
        split = urlsplit(self.path)
        self.query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        try:
            fault = self.hub._take_fault(method, split.path)
            if fault is not None:
                self._inject(fault)
            else:
                self.route(method, split.path)
        except HubError as err:
            body = {"error": err.message, **err.body}
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            self.send_json(err.status, body, headers)
        except Exception as err:  # a server bug must reach the test as a 500, not as a hung client
            traceback.print_exc()
            self.send_json(500, {"error": f"Internal error in the test Hub server: {err!r}"})

    def _log(self, status: int | None) -> None:
        # Logged before answering, so that a client which got its answer finds its request in the log.
        with self.hub._lock:
            self.hub.request_log.append(RequestRecord(self.command, self.path, status))

    def route(self, method: str, path: str) -> None:
        raise NotImplementedError

    def _inject(self, fault: Fault) -> None:
        if fault.drop_connection:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length // 2)
            self._log(None)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_json(fault.status, {"error": f"Injected failure ({fault.status}) for {fault.pattern!r}"})

    def body(self) -> bytes:
        if self._body is None:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline().strip():  # trailers
                    pass
                self._body = b"".join(chunks)
            else:
                self._body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._body

    def json_body(self) -> dict:
        try:
            data = json.loads(self.body() or b"{}")
        except json.JSONDecodeError as err:
            raise HubError.bad_request(f"The request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise HubError.bad_request("The request body must be a JSON object.")
        return data

    def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.body()  # an unread request body would be taken for the next request on this connection
        self._log(status)
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, data: Any, headers: dict | None = None) -> None:
        body = json.dumps(data, default=str).encode()  # `default`: YAML card data may hold dates
        self.send(status, body, {"Content-Type": "application/json", **(headers or {})})

    def send_content(self, data: bytes, headers: dict) -> None:
        """Send file bytes, honouring a `Range: bytes=start-[end]` header."""
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes", **headers}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match and (match[1] or match[2]):
            start = int(match[1]) if match[1] else max(len(data) - int(match[2]), 0)
            end = min(int(match[2]), len(data) - 1) if match[1] and match[2] else len(data) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            self.send(206, data[start : end + 1], headers)
        else:
            self.send(200, data, headers)


class _HubRequestHandler(_BaseRequestHandler):
    """The Hub API: `/api/...`, `/{repo}/resolve/...` and the LFS batch API `/{repo}.git/info/lfs/...`."""

    # Authentication -------------------------------------------------------------------------------------------------

    def current_user(self) -> str | None:
        """The user behind the request's token, `None` without a token; 401 for a token the server does not know."""
        authorization = self.headers.get("Authorization")
        if not authorization:
            return None if self.hub.tokens is not None else self.hub.user
        token = authorization.removeprefix("Bearer ").strip()
        if self.hub.tokens is not None and token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.user

    def require_user(self) -> str:
        user = self.current_user()
        if user is None:
            raise HubError(401, "You must be authenticated (pass a token) to do this.")
        return user

    # Routing --------------------------------------------------------------------------------------------------------

    def route(self, method: str, path: str) -> None:
        segments = path.strip("/").split("/")
        if segments[0] == "api":
            self.route_api(method, segments[1:])
            return
        repo_type = "model"
        if segments[0] in ("datasets", "spaces"):
            repo_type = _PLURALS[segments.pop(0)]
        git_index = next((i for i, segment in enumerate(segments[:2]) if segment.endswith(".git")), None)
        if git_index is not None:
            repo_id = "/".join(segments[: git_index + 1]).removesuffix(".git")
            rest = segments[git_index + 1 :]
            if rest[:3] == ["info", "lfs", "objects"] and len(rest) == 4 and method == "POST":
                self.lfs(repo_type, self.full_repo_id(repo_id), rest[3])
                return
        elif "resolve" in segments[1:3] and method in ("GET", "HEAD"):
            index = segments.index("resolve", 1)
            repo_id = "/".join(segments[:index])
            revision, file_path = unquote(segments[index + 1]), unquote("/".join(segments[index + 2 :]))
            self.resolve(repo_type, self.full_repo_id(repo_id), revision, file_path)
            return
        raise HubError(404, f"Not found: {method} {path}")

    def full_repo_id(self, repo_id: str) -> str:
        """Repo ids without a namespace belong to the server's user (the Hub's canonical repos do not exist here)."""
        repo_id = unquote(repo_id)
        return repo_id if "/" in repo_id else f"{self.hub.user}/{repo_id}"

    def route_api(self, method: str, segments: list[str]) -> None:
        top = segments[0] if segments else ""
        if segments == ["repos", "create"] and method == "POST":
            return self.create_repo()
        if segments == ["repos", "delete"] and method == "DELETE":
            return self.delete_repo()
        if top == "whoami-v2" and method == "GET":
            return self.whoami()
        if top == "validate-yaml" and method == "POST":
            return self.validate_yaml()
        if top not in _PLURALS or len(segments) < 2:
            raise HubError(404, f"Not found: {method} /api/{'/'.join(segments)}")
        repo_type, segments = _PLURALS[top], segments[1:]
        if len(segments) >= 2 and segments[1] not in _API_ACTIONS:
            repo_id, rest = f"{segments[0]}/{segments[1]}", segments[2:]
        else:
            repo_id, rest = segments[0], segments[1:]
        repo_id = self.full_repo_id(repo_id)
        action, args = (rest[0], [unquote(arg) for arg in rest[1:]]) if rest else (None, [])
        if action in ("xet-write-token", "xet-read-token"):
            raise HubError(501, "This test Hub server does not speak Xet: set HF_HUB_DISABLE_XET=1 before importing "
                                "huggingface_hub (see hub_server.prepare_hub_environment).")  # fmt: skip
        handler_name = _REPO_API_ROUTES.get((method, action))
        if handler_name is None:
            raise HubError(404, f"Not found: {method} {self.path}")
        getattr(self, handler_name)(repo_type, repo_id, *args)

    # Repos ----------------------------------------------------------------------------------------------------------

    def create_repo(self) -> None:
        user = self.require_user()
        payload = self.json_body()
        repo_type = payload.get("type") or "model"
        name, namespace = payload.get("name"), payload.get("organization") or user
        if repo_type not in REPO_TYPES:
            raise HubError.bad_request(f"Invalid repo type {repo_type!r}; expected one of {list(REPO_TYPES)}.")
        if not name or not re.fullmatch(r"[\w.-]+", name) or ".." in name or "--" in name:
            raise HubError.bad_request(f"Invalid repo name {name!r}: use letters, digits, '-', '_' and '.'.")
        if repo_type == "space" and payload.get("sdk") not in SPACE_SDKS:
            raise HubError.bad_request(f"A space needs `sdk` in {list(SPACE_SDKS)}, got {payload.get('sdk')!r}.")
        private = payload.get("visibility", "public") != "public" or bool(payload.get("private"))
        repo_id = f"{namespace}/{name}"
        with self.hub._lock:
            repo = self.hub._repos.get((repo_type, repo_id))
            if repo is not None:
                url = self.hub._repo_url(repo)
                raise HubError(409, f"You already created this {repo_type} repo", body={"url": url})
            repo = self.hub._create_repo(repo_type, repo_id, private, payload.get("sdk"), user)
            self.send_json(200, {"url": self.hub._repo_url(repo), "name": repo_id, "id": repo_id})

    def delete_repo(self) -> None:
        user = self.require_user()
        payload = self.json_body()
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        with self.hub._lock:
            if self.hub._repos.pop((payload.get("type") or "model", repo_id), None) is None:
                raise HubError.repo_not_found()
            self.hub._sweep_blobs()
        self.send_json(200, {})

    def update_settings(self, repo_type: str, repo_id: str) -> None:
        user = self.require_user()
        payload = self.json_body()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if "visibility" in payload:
                repo.private = payload["visibility"] != "public"
            if "private" in payload:
                repo.private = bool(payload["private"])
            self.hub._save()
        self.send_json(200, {})

    def repo_info(self, repo_type: str, repo_id: str, *revision: str) -> None:
        user = self.current_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision[0] if revision else DEFAULT_BRANCH)
            with_blobs = self.query.get("blobs", "").lower() in _TRUE_VALUES
            siblings = []
            for path, entry in sorted(commit.files.items()):
                sibling: dict[str, Any] = {"rfilename": path}
                if with_blobs:
                    sibling.update(size=entry.size, blobId=entry.blob_id)
                    if entry.lfs_sha256:
                        sibling["lfs"] = {"size": entry.size, "sha256": entry.lfs_sha256,
                                          "pointerSize": entry.pointer_size}  # fmt: skip
                siblings.append(sibling)
            info = {
                "_id": hashlib.sha1(f"{repo_type}/{repo_id}".encode()).hexdigest()[:24],
                "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "gated": False,
                "disabled": False,
                "likes": 0,
                "tags": [],
                "siblings": siblings,
                "usedStorage": sum(entry.size for entry in commit.files.values()),
            }
            if repo_type == "model":
                info["downloads"] = 0
            if repo_type == "space":
                info["sdk"] = repo.sdk
            readme = commit.files.get("README.md")
            if readme is not None:
                try:
                    card_data = _front_matter(self.hub._blobs.get(readme.content_key).decode())
                except Exception:  # a broken card does not break repo_info on the Hub either
                    card_data = None
                if card_data:
                    info["cardData"] = card_data
                    tags = card_data.get("tags") or []
                    info["tags"] = [tags] if isinstance(tags, str) else list(tags)
                    if repo_type == "model" and isinstance(card_data.get("library_name"), str):
                        info["library_name"] = card_data["library_name"]
                    if repo_type == "space" and card_data.get("sdk") in SPACE_SDKS:
                        info["sdk"] = card_data["sdk"]
        self.send_json(200, info)

    def whoami(self) -> None:
        user = self.require_user()
        self.send_json(200, {
            "type": "user", "id": hashlib.sha1(user.encode()).hexdigest()[:24], "name": user, "fullname": user,
            "email": f"{user}@example.com", "emailVerified": True, "isPro": False, "orgs": [],
            "auth": {"type": "access_token", "accessToken": {"displayName": "test token", "role": "write"}},
        })  # fmt: skip

    def validate_yaml(self) -> None:
        payload = self.json_body()
        try:
            metadata = _front_matter(payload.get("content") or "")
        except Exception as err:
            self.send_json(400, {"errors": [{"message": f"Invalid YAML metadata: {err}"}]})
            return
        if metadata is None:
            warning = {"message": "Empty or missing yaml metadata in repo card"}
            self.send_json(200, {"errors": [], "warnings": [warning]})
            return
        errors = _validate_metadata(metadata, payload.get("repoType") or "model")
        if errors:
            self.send_json(400, {"errors": [{"message": message} for message in errors]})
        else:
            self.send_json(200, {"errors": [], "warnings": []})

    # Listings -------------------------------------------------------------------------------------------------------

    def _entry_json(self, repo: _Repo, commit: _Commit, path: str, expand: bool) -> dict | None:
        if path in commit.files:
            entry = commit.files[path]
            data: dict[str, Any] = {"type": "file", "oid": entry.blob_id, "size": entry.size, "path": path}
            if entry.lfs_sha256:
                data["lfs"] = {"oid": entry.lfs_sha256, "size": entry.size, "pointerSize": entry.pointer_size}
        elif path in commit.tree_oids:
            data = {"type": "directory", "oid": commit.tree_oids[path], "size": 0, "path": path}
        else:
            return None
        if expand:
            last = _last_commit_touching(repo, commit, path)
            data["lastCommit"] = {"id": last.oid, "title": last.title, "date": last.date}
        return data

    def tree(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH, *path_parts: str) -> None:
        user = self.current_user()
        recursive = self.query.get("recursive", "").lower() in _TRUE_VALUES
        expand = self.query.get("expand", "").lower() in _TRUE_VALUES
        path = "/".join(path_parts).strip("/")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            if path and path not in commit.tree_oids:
                raise HubError.entry_not_found(path, commit)
            prefix = f"{path}/" if path else ""
            paths = [p for p in [*commit.tree_oids, *commit.files] if p and p.startswith(prefix)]
            if not recursive:
                paths = [p for p in paths if "/" not in p[len(prefix) :]]
            entries = [self._entry_json(repo, commit, p, expand) for p in sorted(paths)]
        self.send_json(200, entries)

    def paths_info(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH) -> None:
        user = self.current_user()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            payload = self.json_body()
            paths, expand = payload.get("paths") or [], bool(payload.get("expand"))
        else:
            form = parse_qs(self.body().decode())
            paths, expand = form.get("paths", []), form.get("expand", [""])[-1].lower() in _TRUE_VALUES
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            entries = [self._entry_json(repo, commit, p.strip("/"), expand) for p in paths]
        self.send_json(200, [entry for entry in entries if entry is not None])

    def refs(self, repo_type: str, repo_id: str) -> None:
        user = self.current_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            branches, tags = repo.branches.items(), repo.tags.items()
            data = {
                "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in branches],
                "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in tags],
                "converts": [],
            }
            if self.query.get("include_prs", "").lower() in _TRUE_VALUES:
                data["pullRequests"] = [
                    {"name": f"refs/pr/{n}", "ref": f"refs/pr/{n}", "targetCommit": c}
                    for n, c in sorted(repo.pull_requests.items())
                ]
        self.send_json(200, data)

    def commits(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH) -> None:
        user = self.current_user()
        formatted = self.query.get("expand[]") == "formatted"
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            items = []
            for commit in repo.history(repo.resolve(revision).oid):
                item = {"id": commit.oid, "title": commit.title, "message": commit.message, "date": commit.date,
                        "authors": [{"user": commit.author}]}  # fmt: skip
                if formatted:
                    item["formatted"] = {"title": commit.title, "message": commit.message}
                items.append(item)
        self.send_json(200, items)

    # Writes ---------------------------------------------------------------------------------------------------------

    def preupload(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH) -> None:
        user = self.require_user()
        payload = self.json_body()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            files = []
            for item in payload.get("files") or []:
                path = _clean_path(item.get("path"))
                sample = base64.b64decode(item.get("sample") or "")
                existing = commit.files.get(path)
                files.append({
                    "path": item["path"],
                    "uploadMode": self.hub._upload_mode(commit, path, int(item.get("size") or 0), sample),
                    "shouldIgnore": False,
                    "oid": (existing.lfs_sha256 or existing.blob_id) if existing else None,
                })  # fmt: skip
        self.send_json(200, {"files": files, "commitOid": commit.oid})

    def commit(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH) -> None:
        user = self.require_user()
        try:
            lines = [json.loads(line) for line in self.body().splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise HubError.bad_request(f"The commit payload is not valid NDJSON: {err}") from None
        create_pr = self.query.get("create_pr", "").lower() in _TRUE_VALUES
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            response = self.hub._commit(repo, revision, lines, create_pr=create_pr, user=user)
        self.send_json(200, response)

    def create_tag(self, repo_type: str, repo_id: str, revision: str = DEFAULT_BRANCH) -> None:
        user = self.require_user()
        payload = self.json_body()
        tag = payload.get("tag")
        if not tag or not isinstance(tag, str):
            raise HubError.bad_request("The request body needs a `tag`.")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            if tag in repo.tags:
                raise HubError(409, f"Tag {tag!r} already exists")
            repo.tags[tag] = commit.oid
            self.hub._save()
        self.send_json(200, {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": commit.oid})

    def delete_tag(self, repo_type: str, repo_id: str, tag: str) -> None:
        user = self.require_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if repo.tags.pop(tag.removeprefix("refs/tags/"), None) is None:
                raise HubError.revision_not_found(tag)
            self.hub._save()
        self.send_json(200, {})

    def create_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        user = self.require_user()
        starting_point = self.json_body().get("startingPoint") or DEFAULT_BRANCH
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if branch in repo.branches:
                raise HubError(409, f"Branch {branch!r} already exists")
            if branch.startswith("refs/") or not re.fullmatch(r"[\w./-]+", branch):
                raise HubError.bad_request(f"Invalid branch name {branch!r}.")
            repo.branches[branch] = repo.resolve(starting_point).oid
            self.hub._save()
        self.send_json(200, {})

    def delete_branch(self, repo_type: str, repo_id: str, branch: str) -> None:
        user = self.require_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if branch == DEFAULT_BRANCH:
                raise HubError(403, f"Cannot delete the default branch {DEFAULT_BRANCH!r}")
            if repo.branches.pop(branch.removeprefix("refs/heads/"), None) is None:
                raise HubError.revision_not_found(branch)
            self.hub._save()
        self.send_json(200, {})

    def super_squash(self, repo_type: str, repo_id: str, branch: str = DEFAULT_BRANCH) -> None:
        user = self.require_user()
        message = self.json_body().get("message") or f"Super-squash branch '{branch}'"
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = self.hub._super_squash(repo, branch, message, user)
        self.send_json(200, {"commitOid": commit.oid})

    def lfs_files(self, repo_type: str, repo_id: str, *rest: str) -> None:
        """`GET .../lfs-files` lists the repo's LFS objects; `POST .../lfs-files/batch` deletes them permanently."""
        user = self.require_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if self.command == "GET" and not rest:
                names = {e.lfs_sha256: p for c in repo.commits.values() for p, e in c.files.items() if e.lfs_sha256}
                items = []
                for oid in sorted(repo.lfs_objects):
                    data = self.hub._blobs.get(oid)
                    if data is None:
                        continue
                    items.append({"fileOid": oid, "oid": oid, "filename": names.get(oid, ""), "size": len(data),
                                  "pushedAt": _iso(_now()), "ref": None})  # fmt: skip
                self.send_json(200, items)
                return
            if self.command != "POST" or rest != ("batch",):
                raise HubError.bad_request("Use GET .../lfs-files or POST .../lfs-files/batch.")
            deletions = self.json_body().get("deletions") or {}
            oids = {str(o) for o in deletions.get("sha") or []}
            self.hub._delete_lfs(repo, oids & repo.lfs_objects, bool(deletions.get("rewriteHistory", True)), user)
        self.send_json(200, {})

    # LFS and downloads ----------------------------------------------------------------------------------------------

    def lfs(self, repo_type: str, repo_id: str, action: str) -> None:
        user = self.require_user()
        payload = self.json_body()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            if action == "verify":
                if payload.get("oid") not in repo.lfs_objects:
                    raise HubError(404, f"LFS object {payload.get('oid')} not found")
                self.send_json(200, {"message": "Object verified"})
                return
            if action != "batch" or payload.get("operation") != "upload":
                raise HubError.bad_request("Only the LFS batch `upload` operation is supported.")
            objects = []
            for obj in payload.get("objects") or []:
                oid, size = obj.get("oid"), obj.get("size")
                if not re.fullmatch(r"[0-9a-f]{64}", str(oid)) or not isinstance(size, int):
                    objects.append({"oid": str(oid), "size": int(size or 0),
                                    "error": {"code": 422, "message": "Invalid oid or size"}})  # fmt: skip
                    continue
                item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs_objects or oid not in self.hub._blobs:
                    verify = f"{self.hub._repo_url(repo)}.git/info/lfs/objects/verify"
                    item["actions"] = {"upload": {"href": self.hub._signed_url("lfs-upload", repo, oid, size)},
                                       "verify": {"href": verify}}  # fmt: skip
                objects.append(item)
        self.send_json(200, {"transfer": "basic", "objects": objects})

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        user = self.current_user()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            entry = commit.files.get(path)
            if entry is None:
                raise HubError.entry_not_found(path, commit)
            headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{entry.blob_id}"'}
            if entry.lfs_sha256:
                headers.update({
                    "X-Linked-Etag": f'"{entry.lfs_sha256}"',
                    "X-Linked-Size": entry.size,
                    "Location": self.hub._signed_url("lfs", repo, entry.lfs_sha256, entry.size),
                })  # fmt: skip
                self.send(302, b"", headers)
                return
            data = self.hub._blobs.get(entry.blob_id)
        self.send_content(data, headers)


class _StorageRequestHandler(_BaseRequestHandler):
    """The storage origin (S3/CDN stand-in): `PUT /lfs-upload/{oid}` and `GET /lfs/{oid}` on signed URLs."""

    def route(self, method: str, path: str) -> None:
        purpose, _, oid = path.strip("/").partition("/")
        expected = self.hub._signature(purpose, self.query.get("repo", ""), oid, self.query.get("size", ""))
        if not hmac.compare_digest(expected, self.query.get("sig", "")):
            raise HubError(403, "Invalid or missing URL signature")
        repo_type, _, repo_id = self.query["repo"].partition(":")
        if purpose == "lfs-upload" and method == "PUT":
            data = self.body()
            if hashlib.sha256(data).hexdigest() != oid or str(len(data)) != self.query["size"]:
                raise HubError.bad_request(f"The uploaded content does not match sha256 {oid} and its size.")
            with self.hub._lock:
                repo = self.hub._repos.get((repo_type, repo_id))
                if repo is None:
                    raise HubError.repo_not_found()
                self.hub._blobs.put(oid, data)
                repo.lfs_objects.add(oid)
                self.hub._save()
            self.send(200)
        elif purpose == "lfs" and method in ("GET", "HEAD"):
            with self.hub._lock:
                repo = self.hub._repos.get((repo_type, repo_id))
                data = self.hub._blobs.get(oid) if repo is not None and oid in repo.lfs_objects else None
            if data is None:
                raise HubError(404, "NoSuchKey")
            self.send_content(data, {"ETag": f'"{oid}"'})
        else:
            raise HubError(404, f"Not found: {method} {path}")


def _last_commit_touching(repo: _Repo, commit: _Commit, path: str) -> _Commit:
    """The most recent commit (from `commit` backwards) that changed the file or folder at `path`."""

    def state(c: _Commit):
        return c.files.get(path) or c.tree_oids.get(path)

    current = state(commit)
    last = commit
    for older in repo.history(commit.oid):
        if state(older) != current:
            break
        last = older
    return last


# --------------------------------------------------------------------------------------------------------------------
# Test environment


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class HubTestEnvironment:
    """
    Where [`prepare_hub_environment`] pointed `huggingface_hub`.

    Args:
        endpoint (`str`): value of `HF_ENDPOINT`, the URL a [`HubServer`] must listen on.
        host (`str`): host of the endpoint.
        port (`int`): port of the endpoint; pass it to [`HubServer`].
        home (`str`): value of `HF_HOME` (the download cache lives in `{home}/hub`).
        token (`str`): value of `HF_TOKEN`; pass it to [`HubServer`] in `tokens` to test authentication.
    """

    endpoint: str
    host: str
    port: int
    home: str
    token: str


def prepare_hub_environment(
    *, token: str = "hf_test_token", home: str | os.PathLike | None = None, host: str = "127.0.0.1",
    port: int | None = None,
) -> HubTestEnvironment:  # fmt: skip
    """
    Point `huggingface_hub` at a local [`HubServer`]: sets the environment variables it reads at import.

    Call it before anything imports `huggingface_hub` (at the top of a `conftest.py`), then start a [`HubServer`] on
    the returned port. Sets `HF_ENDPOINT`, `HF_HOME` (a new temporary folder unless `home` is given), `HF_TOKEN`,
    `HF_HUB_DISABLE_XET=1` (binary uploads would otherwise go through Xet storage, which the server does not speak),
    and turns off telemetry, update checks and implicit-token warnings. It leaves `HF_HUB_OFFLINE` alone: Hub tests
    need it off (see `huggingface_hub.constants.HF_HUB_OFFLINE`, which a fixture can patch for one test).

    Args:
        token (`str`, *optional*, defaults to `"hf_test_token"`):
            Token the client sends by default.
        home (`str` or `os.PathLike`, *optional*):
            `HF_HOME` folder. Defaults to a new temporary folder, removed when the process exits.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Host of the endpoint.
        port (`int`, *optional*):
            Port of the endpoint. Defaults to a free port chosen now.

    Returns:
        [`HubTestEnvironment`]: the endpoint, port, home folder and token that were set.
    """
    port = port or find_free_port(host)
    endpoint = f"http://{host}:{port}"
    if home is None:
        home = tempfile.mkdtemp(prefix="hf-home-")
        atexit.register(shutil.rmtree, home, ignore_errors=True)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        imported_endpoint = constants.ENDPOINT
        if imported_endpoint != endpoint:
            warnings.warn(
                f"`huggingface_hub` was imported before `prepare_hub_environment()` and keeps using "
                f"{imported_endpoint}. Call `prepare_hub_environment()` before the first `import huggingface_hub`.",
                stacklevel=2,
            )
    os.environ.update({
        "HF_ENDPOINT": endpoint,
        "HF_HOME": str(home),
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
    })  # fmt: skip
    return HubTestEnvironment(endpoint=endpoint, host=host, port=port, home=str(home), token=token)
