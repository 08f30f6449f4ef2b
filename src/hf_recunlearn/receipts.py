"""
Forgetting receipts: evidence of every training and forgetting event that the controller, an auditor and a data
subject can each check with what they hold (`hf-recunlearn verify`, `hf_recunlearn.verify`).

**Where they live.** Every version directory holds the whole chain, one canonical JSON file per event::

    DIR/receipts/000001.json     the training event
    DIR/receipts/000002.json     the first forget event, ...

A receipt is written into the staging directory of its version, after every other file, and switched in with it
(`controller.swap_in`), so a version never exists without its receipt. The chain is copied into every later
version and pushed with it: after a purge the Hub's head still holds the receipts of every purged version. Receipts
keep *hashes* of the purged bytes, never the bytes.

**Format.** A receipt file is the canonical JSON of the receipt (keys sorted, no whitespace, ASCII), and its hash is
the SHA-256 of the file's bytes. Fields:

- `format`, `format_version`, `sequence` (1, 2, ... in the chain), `version` (the model version it produced),
  `event` (`train`, `forget`, `unlearn`), `event_id` (random), `time` (UTC), `method`, `run_id`, `software`
  (library and dependency versions);
- `previous`: the SHA-256 of the previous receipt file (`null` for the first): the chain;
- `files`: `path -> {"sha256", "git_blob"}` for every weight and metadata file of the version (what `hub.push`
  publishes, without `receipts/` itself and the card/log the push generates). `git_blob` is the git object id the
  Hub lists for the file (`huggingface_hub.utils.sha.git_hash`), `sha256` the LFS id;
- `request` (forget events): `requests` and `users` (counts; the lineage publishes the same number of users) and
  `commitment`: the root of a sorted Merkle tree over the salted digests the request named (`size` is its padded
  leaf count), so that a data subject's token can prove that the request named them;
- exact methods (`exact`): `recipe_commitment` (HMAC under the run's secret salt of the stored recipe: the public
  can see that every event used the same recipe, not the recipe and its seeds), `base_model_fingerprint`, per shard
  `manifest_before`/`manifest` (RFC 6962 Merkle roots over the shard's salted `(sample, user)` digests in training
  order, the order the adapter was trained on), `retrained`, `trained_in_version` and a salted `seed_commitment`;
  `users`: the root and padded size of a sorted Merkle tree over the salted digests of every user the version holds
  (training shards and the validation rows behind the aggregation state), which supports non-membership proofs;
  and the `statement` that each forgotten digest is absent from every shard manifest of this version;
- approximate methods (`approximate`): the `statement` that the result is approximate, `hyperparameters`, and
  `audit`: a flat dict of audit figures (forget-set and test utility before/after, MIA AUC, ...) that any audit
  (e.g. a calibrated `ForgetAudit`) can fill.

**Pushed state.** A commit cannot contain its own id, so the Hub commit and tag of a version are not in its receipt:
`unlearning_versions.json` (written by every push) records for each version its tag, commit and the path and SHA-256
of its receipt, and `verify --repo-id` checks that link. The receipt chain itself never changes after an event.

**Privacy.** Receipts hold counts, roots and hashes: no id, no digest list, no shard sizes, no seeds. Merkle leaves are
HMAC digests under the run's secret salt, so roots and the sibling hashes in a proof reveal nothing to anyone without
the salt. Sorted trees are padded to a power of two with dummy leaves derived from the salt, so a proof's position and
length reveal at most the power of two above the number of users, not their number.

**Deletion tokens.** [`issue_token`] gives a forgotten user a string (`hfru1.` + base64url JSON) holding their salted
digest, a membership proof in the request commitment of the event that forgot them, and a non-membership proof in
the users tree of a version at or after it. No raw id, nothing about other users beyond sibling hashes. It cannot be
forged into a false "absent": both proofs are checked against the roots in the published receipt chain, and in a
sorted tree a digest that is a leaf has no two adjacent leaves around it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .controller import CARD_FILE, VERSIONS_FILE
from .controller import published_files as _local_files

RECEIPTS_DIR = "receipts"
FORMAT = "hf_recunlearn/receipt"
FORMAT_VERSION = 1
TOKEN_PREFIX = "hfru1."
TOKEN_FORMAT = "hf_recunlearn/deletion-token"
EXACT_STATEMENT = (
    "Each forgotten digest is absent from every shard manifest of this version: every shard was trained from scratch, "
    "with the committed recipe and seed, on exactly the samples its manifest commits to."
)
APPROXIMATE_STATEMENT = (
    "The result is approximate: the model was updated to forget the requested data, not retrained without it. The "
    "audit figures are the only evidence of forgetting; nothing here proves that the data has no influence left."
)
_SOFTWARE = ("torch", "transformers", "peft", "huggingface_hub", "safetensors", "accelerate")
_DIGEST_BYTES = 16  # ledger digests are HMAC-SHA256 truncated to 128 bits


# --------------------------------------------------------------------------------------------------------------------
# Canonical JSON and file hashes


def canonical_json(obj: Any) -> bytes:
    """The bytes a receipt is stored and hashed as: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_digest(path: Path) -> dict[str, str]:
    """`{"sha256", "git_blob"}` of a file, as the Hub reports them (LFS sha256 and git object id)."""
    from huggingface_hub.utils.sha import git_hash, sha_fileobj

    with open(path, "rb") as f:
        sha256 = sha_fileobj(f).hex()
    return {"sha256": sha256, "git_blob": git_hash(Path(path).read_bytes())}


def receipted_files(directory) -> dict[str, Path]:
    """The files a receipt covers: what a push publishes, minus the receipts and the card and log it generates."""
    return {
        rel: path
        for rel, path in _local_files(Path(directory)).items()
        if rel.split("/")[0] != RECEIPTS_DIR and rel not in (CARD_FILE, VERSIONS_FILE)
    }


def file_hashes(directory) -> dict[str, dict[str, str]]:
    return {rel: file_digest(path) for rel, path in sorted(receipted_files(directory).items())}


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = {"hf_recunlearn": __version__}
    for name in _SOFTWARE:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def salted(salt: bytes, label: str) -> str:
    """A public commitment to a private value: HMAC-SHA256 under the run's secret salt."""
    return hmac.new(salt, label.encode(), hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------------------------------------------------
# Merkle trees (RFC 6962 hashing: leaves and nodes domain-separated)


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _tree_hash(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    split = 1 << ((len(hashes) - 1).bit_length() - 1)  # the largest power of two below len
    return _node(_tree_hash(hashes[:split]), _tree_hash(hashes[split:]))


def merkle_root(leaves: Iterable[bytes]) -> str:
    """RFC 6962 Merkle tree hash of `leaves` in order (the hash of the empty string for no leaf)."""
    hashes = [_leaf(x) for x in leaves]
    return (_tree_hash(hashes) if hashes else hashlib.sha256(b"").digest()).hex()


def manifest_root(shard: Iterable) -> str:
    """Commitment to a shard's training manifest: the Merkle root of its `(sample, user)` digests in training order."""
    return merkle_root(bytes.fromhex(sample) + bytes.fromhex(user) for sample, user in shard)


class SortedTree:
    """
    A Merkle tree over sorted 128-bit digests, with sentinels `00..00` and `ff..ff` and dummy leaves (HMAC of
    `pad_label` under `pad_key`) up to a power of two: it proves membership and non-membership (two adjacent leaves
    around the digest), and its size reveals only that power of two.
    """

    def __init__(self, digests: Iterable[str], pad_key: bytes, pad_label: str):
        real = {bytes.fromhex(d) for d in digests}
        leaves = real | {b"\x00" * _DIGEST_BYTES, b"\xff" * _DIGEST_BYTES}
        size = 1 << max(1, (len(leaves) - 1).bit_length())
        i = 0
        while len(leaves) < size:
            leaves.add(hmac.new(pad_key, f"{pad_label}:{i}".encode(), hashlib.sha256).digest()[:_DIGEST_BYTES])
            i += 1
        self.leaves = sorted(leaves)
        self.levels = [[_leaf(x) for x in self.leaves]]
        while len(self.levels[-1]) > 1:
            level = self.levels[-1]
            self.levels.append([_node(level[j], level[j + 1]) for j in range(0, len(level), 2)])

    @property
    def root(self) -> str:
        return self.levels[-1][0].hex()

    @property
    def size(self) -> int:
        return len(self.leaves)

    def commitment(self) -> dict:
        return {"root": self.root, "size": self.size}

    def _path(self, index: int) -> list[str]:
        path = []
        for level in self.levels[:-1]:
            path.append(level[index ^ 1].hex())
            index //= 2
        return path

    def _entry(self, index: int) -> dict:
        return {"index": index, "leaf": self.leaves[index].hex(), "path": self._path(index)}

    def membership(self, digest: str) -> dict:
        import bisect

        value = bytes.fromhex(digest)
        index = bisect.bisect_left(self.leaves, value)
        if index == len(self.leaves) or self.leaves[index] != value:
            raise ValueError("The digest is not a leaf of this tree: no membership proof exists.")
        return self._entry(index)

    def absence(self, digest: str) -> dict:
        import bisect

        value = bytes.fromhex(digest)
        index = bisect.bisect_left(self.leaves, value)
        if index < len(self.leaves) and self.leaves[index] == value:
            raise ValueError("The digest is a leaf of this tree: it is present, no absence proof exists.")
        return {"left": self._entry(index - 1), "right": self._entry(index)}


def _path_root(leaf: bytes, index: int, path: list[str]) -> bytes:
    h = _leaf(leaf)
    for sibling in path:
        s = bytes.fromhex(sibling)
        h = _node(s, h) if index & 1 else _node(h, s)
        index //= 2
    return h


def _entry_holds(entry: dict, commitment: dict) -> bool:
    size = int(commitment["size"])
    index = int(entry["index"])
    path = list(entry["path"])
    if size < 2 or size & (size - 1) or len(path) != size.bit_length() - 1 or not 0 <= index < size:
        return False
    return hmac.compare_digest(_path_root(bytes.fromhex(entry["leaf"]), index, path).hex(), commitment["root"])


def verify_membership(commitment: dict, digest: str, proof: dict) -> bool:
    """Whether `proof` shows `digest` is a leaf of the sorted tree `commitment` (`{"root", "size"}`)."""
    try:
        return proof["leaf"] == digest and _entry_holds(proof, commitment)
    except (KeyError, TypeError, ValueError):
        return False


def verify_absence(commitment: dict, digest: str, proof: dict) -> bool:
    """Whether `proof` shows `digest` is not a leaf of the sorted tree `commitment`: two adjacent leaves around it."""
    try:
        left, right = proof["left"], proof["right"]
        value = bytes.fromhex(digest)
        return (
            int(right["index"]) == int(left["index"]) + 1
            and bytes.fromhex(left["leaf"]) < value < bytes.fromhex(right["leaf"])
            and _entry_holds(left, commitment)
            and _entry_holds(right, commitment)
        )
    except (KeyError, TypeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------------------
# Reading and writing the chain


def receipt_name(sequence: int) -> str:
    return f"{RECEIPTS_DIR}/{int(sequence):06d}.json"


def read_chain(directory) -> list[bytes]:
    """The receipt files of a version directory, in chain order (raw bytes: their hashes are the chain)."""
    folder = Path(directory) / RECEIPTS_DIR
    if not folder.is_dir():
        return []
    return [p.read_bytes() for p in sorted(folder.glob("[0-9]*.json"))]


def write_chain(directory, chain: list[bytes]) -> None:
    """Write the receipt files `chain` into `directory/receipts/` (of a staging directory: the switch is atomic)."""
    folder = Path(directory) / RECEIPTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(chain, start=1):
        (Path(directory) / receipt_name(i)).write_bytes(data)


def _base(chain: list[bytes], *, event: str, version: int, method: str, run_id: str | None) -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sequence": len(chain) + 1,
        "version": int(version),
        "event": event,
        "event_id": str(uuid.uuid4()),
        "time": _now(),
        "method": method,
        "run_id": run_id,
        "software": software_versions(),
        "previous": sha256_hex(chain[-1]) if chain else None,
    }


# --------------------------------------------------------------------------------------------------------------------
# Exact methods (APA / SISA)


@dataclass
class ExactEvent:
    """
    What the trainer tells the version writer about the event the new version records.

    Attributes:
        event (`str`): `"train"` or `"forget"`.
        method (`str`): `"apa"` or `"sisa"`.
        salt (`bytes`): the run's secret salt (keys the commitments and the padding; never written).
        retrained (`list[int]`): shards (re)trained by the event.
        requests (`int`): forget requests the event carried out.
        users_removed (`int`): users with no training sample left after the event.
        request_users, request_samples (`set[str]`): ledger digests the requests named.
    """

    event: str
    method: str
    salt: bytes = field(repr=False)
    retrained: list[int] = field(default_factory=list)
    requests: int = 0
    users_removed: int = 0
    request_users: set[str] = field(default_factory=set)
    request_samples: set[str] = field(default_factory=set)


def version_users(ledger: dict, valid_users) -> set[str]:
    """Every user digest a version holds: the training shards' and the validation rows' behind the aggregation."""
    return {u for shard in ledger["shards"] for _, u in shard} | set(valid_users or [])


def users_tree(ledger: dict, valid_users, salt: bytes, version: int) -> SortedTree:
    return SortedTree(version_users(ledger, valid_users), salt, f"users:{version}")


def request_tree(users: Iterable[str], samples: Iterable[str], salt: bytes, version: int) -> SortedTree:
    return SortedTree(set(users) | set(samples), salt, f"request:{version}")


def recipe_commitment(recipe: dict, partition: dict, salt: bytes) -> str:
    """Salted commitment to everything that determines the weights (the recipe with its seeds)."""
    payload = {
        k: recipe.get(k) for k in ("config_class", "training_arguments", "lora_config", "base_model_fingerprint")
    }
    payload["partition"] = partition
    return salted(salt, canonical_json(payload).decode())


def exact_receipt(directory, chain: list[bytes], state, event: ExactEvent) -> bytes:
    """
    The receipt of `event`, which produced the APA version `state` staged in `directory` (every other file written).

    Returns the receipt's bytes; the caller writes the chain.
    """
    previous = json.loads(chain[-1]) if chain else None
    before = {s["name"]: s["manifest"] for s in (previous or {}).get("exact", {}).get("shards", [])}
    salt = event.salt
    shards = []
    for k, shard in enumerate(state.ledger["shards"]):
        name = f"shard_{k:02d}"
        info = state.shard_info[k]
        shards.append({
            "name": name,
            "manifest_before": before.get(name),
            "manifest": manifest_root(shard),
            "retrained": k in set(event.retrained),
            "trained_in_version": info.get("trained_in_version"),
            "seed_commitment": salted(salt, f"seed:{k}:{info.get('seed')}"),
        })  # fmt: skip
    receipt = _base(chain, event=event.event, version=state.version, method=event.method, run_id=state.run_id)
    receipt["files"] = file_hashes(directory)
    if event.event != "train":
        tree = request_tree(event.request_users, event.request_samples, salt, state.version)
        receipt["request"] = {"requests": int(event.requests), "users": int(event.users_removed),
                              "commitment": tree.commitment()}  # fmt: skip
    receipt["exact"] = {
        "recipe_commitment": recipe_commitment(state.recipe, state.partition, salt),
        "base_model_fingerprint": state.recipe.get("base_model_fingerprint"),
        "shards": shards,
        "users": users_tree(state.ledger, state.valid_users, salt, state.version).commitment(),
        "statement": EXACT_STATEMENT,
    }
    return canonical_json(receipt)


# --------------------------------------------------------------------------------------------------------------------
# Approximate methods (E2URec, NegGrad, NegKL, Bad-T)


def approximate_receipt(
    directory,
    *,
    method: str,
    request_commitment: dict,
    users: int,
    hyperparameters: dict,
    audit: dict | None,
    event_id: str | None = None,
) -> bytes:
    """
    The receipt of an approximate unlearning event whose result is saved in `directory`, chained to the receipts
    already there. A receipt of the same `event_id` (the same event saved again) is replaced, not chained.
    """
    chain = read_chain(directory)
    if chain and event_id is not None and json.loads(chain[-1]).get("event_id") == event_id:
        chain = chain[:-1]
    receipt = _base(chain, event="unlearn", version=len(chain) + 1, method=method, run_id=None)
    if event_id is not None:
        receipt["event_id"] = event_id
    receipt["files"] = file_hashes(directory)
    receipt["request"] = {"requests": 1, "users": int(users), "commitment": request_commitment}
    receipt["approximate"] = {
        "statement": APPROXIMATE_STATEMENT,
        "hyperparameters": json.loads(json.dumps(hyperparameters, sort_keys=True, default=str)),
        "audit": {k: _finite(v) for k, v in sorted((audit or {}).items())},
    }
    return canonical_json(receipt)


def _finite(value):
    """Audit figures as JSON values (NaN, e.g. an AUC over one class, becomes null)."""
    import math

    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_receipt_atomic(directory, data: bytes) -> Path:
    """Write one receipt file through a temporary file and a rename (approximate methods write in place)."""
    sequence = json.loads(data)["sequence"]
    path = Path(directory) / receipt_name(sequence)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for stale in path.parent.glob("[0-9]*.json"):
        if stale.name > path.name:  # an event saved again replaces its receipt; no later one can exist
            stale.unlink()
    return path


# --------------------------------------------------------------------------------------------------------------------
# Deletion tokens


def encode_token(payload: dict) -> str:
    return TOKEN_PREFIX + base64.urlsafe_b64encode(canonical_json(payload)).decode().rstrip("=")


def decode_token(token: str) -> dict:
    """The JSON of a token string (or of a file holding one); a malformed token raises a ValueError naming `token`."""
    text = str(token).strip()
    if not text.startswith(TOKEN_PREFIX) and os.path.isfile(text):
        text = Path(text).read_text().strip()
    if not text.startswith(TOKEN_PREFIX):
        raise ValueError(f"`token` must be a deletion token starting with {TOKEN_PREFIX!r} (or a file holding one).")
    body = text[len(TOKEN_PREFIX) :]
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        raise ValueError("`token` is not a readable deletion token (damaged or truncated).") from None
    if not isinstance(payload, dict) or payload.get("format") != TOKEN_FORMAT:
        raise ValueError("`token` is not a deletion token of hf_recunlearn.")
    return payload


def issue_token(*, user_digest: str, run_id: str | None, forgotten_in: int, request: SortedTree,
                checked_version: int, users: SortedTree) -> str:  # fmt: skip
    """
    The token of one forgotten user: their salted digest, proof that the request of version `forgotten_in` named
    them, and proof that the version `checked_version` holds them nowhere.
    """
    payload = {
        "format": TOKEN_FORMAT,
        "format_version": 1,
        "run_id": run_id,
        "digest": user_digest,
        "forgotten_in": int(forgotten_in),
        "request_proof": request.membership(user_digest),
        "checked_version": int(checked_version),
        "absence_proof": users.absence(user_digest),
    }
    return encode_token(payload)
