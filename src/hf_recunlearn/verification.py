"""
`hf_recunlearn.verify(...)` / `hf-recunlearn verify`: check the forgetting receipts (`hf_recunlearn.receipts`) against
what each party holds.

- **Anyone** (`repo_id=`, optionally `revision=`; a local version directory too): the published bytes only, through
  the real `huggingface_hub` client. Every receipt is canonical and chained to the one before; every file of the
  version hashes to what its receipt records (a file that hashes to what an *earlier* receipt recorded is named as
  such: an old shard copied back); from one exact event to the next, the shards a receipt says were not retrained keep
  their manifest and their bytes, the ones it says were retrained changed manifest, the recipe commitment and the base
  model fingerprint never change, every forget event commits to its request; `unlearning_versions.json` (the pushed
  state: tag, commit, receipt path and hash of every version) names receipts of this chain.
- **The controller** (`run=`: a run directory or an APA directory with its `controller/` state and the salt): all of
  the above, plus every manifest and the users commitment recomputed from the ledger, the recipe and seed
  commitments from the stored recipe, each forget receipt's request commitment from the digests the controller
  recorded (and the journal's finished requests within them), and each digest ever forgotten absent from every shard
  and from the validation rows of the current version. `retrain_shard=K` retrains shard K from its manifest with the
  stored recipe (`APATrainer.reproduce_shard`) and compares the bytes with the sha256 the receipt records.
- **The data subject** (`token=`, with `repo_id=` or `run=`): their token's proofs against the published roots (the
  request of the event that forgot them named them; the version the token checks holds them nowhere), that the
  revision is that version or a later one reached by forget events only, and, on the Hub, that no reachable revision
  (tag, branch, pull request) predates their deletion.

A failure is one line naming the file, shard and event; nothing raises for a failed check (bad arguments do).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import receipts as R

MODEL_DIRS = ("apa", "sisa", "e2urec", "neggrad", "negkl", "badt")


@dataclass
class VerifyReport:
    """
    The outcome of [`verify`].

    Attributes:
        ok (`bool`): every check held.
        failures (`list[str]`): one line per failed check (file, shard, event).
        checks (`list[str]`): what was checked, one line each.
        targets (`list[str]`): the directories or `repo@revision` verified.
        receipts (`int`): receipts in the verified chain(s).
        seconds (`float`): wall time.
    """

    ok: bool = True
    failures: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    receipts: int = 0
    seconds: float = 0.0

    def fail(self, line: str) -> None:
        self.ok = False
        self.failures.append(line)

    def to_dict(self) -> dict:
        return asdict(self)


def verify(
    run=None,
    *,
    repo_id: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    retrain_shard: int | None = None,
    hub_token: str | bool | None = None,
) -> VerifyReport:
    """
    Verify the receipts of a local run (`run`) or of a Hub repo (`repo_id`, `revision`), optionally a data subject's
    deletion `token` and, for a local APA run, retrain shard `retrain_shard` and compare it bit for bit.

    Args:
        run: a run directory (`hf-recunlearn train`), an APA directory or an adapter directory with `receipts/`.
        repo_id (`str`): a Hub repo pushed by hf_recunlearn (checked from its published bytes only).
        revision (`str`, *optional*): the revision of `repo_id` to check (default `main`).
        token (`str`, *optional*): a deletion token (`hfru1....`) or a file holding one.
        retrain_shard (`int`, *optional*): shard to retrain and compare (needs `run`: the data and the recipe).
        hub_token (*optional*): a Hub token for private repos.

    Returns:
        [`VerifyReport`]. Bad arguments raise a `ValueError` naming the argument; failed checks never raise.
    """
    if (run is None) == (repo_id is None):
        raise ValueError("Pass exactly one of `run` (a local run or version directory) and `repo_id` (a Hub repo).")
    if revision is not None and repo_id is None:
        raise ValueError("`revision` applies to `repo_id`; a local directory holds one version.")
    if retrain_shard is not None and run is None:
        raise ValueError("`retrain_shard` needs `run`: retraining needs the controller's ledger, recipe and data.")
    payload = R.decode_token(token) if token is not None else None
    start = time.perf_counter()
    report = VerifyReport()
    if run is not None:
        for label, directory in _model_directories(Path(run), retrain_shard):
            report.targets.append(str(directory))
            chain = _check_directory(directory, label, report, controller=True)
            if payload is not None:
                _check_token(chain, payload, label, report)
            if retrain_shard is not None:
                _retrain_and_compare(Path(run), directory, label, retrain_shard, chain, report)
    else:
        _check_repo(repo_id, revision or "main", hub_token, payload, report)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


# --------------------------------------------------------------------------------------------------------------------
# Local directories


def _model_directories(path: Path, retrain_shard) -> list[tuple[str, Path]]:
    if not path.is_dir():
        raise ValueError(f"`run` {str(path)!r} is not a directory.")
    if (path / R.RECEIPTS_DIR).is_dir() or (path / "apa_config.json").is_file():
        return [(path.name, path)]
    found = [(name, path / name) for name in MODEL_DIRS if (path / name / R.RECEIPTS_DIR).is_dir()
             or (path / name / "apa_config.json").is_file()]  # fmt: skip
    if retrain_shard is not None:
        found = [(n, d) for n, d in found if (d / "apa_config.json").is_file()]
    if not found:
        raise ValueError(
            f"`run` {str(path)!r} holds no model with receipts: pass a run directory written by `hf-recunlearn train` "
            "(with apa/, sisa/ or an unlearned adapter folder), or a version directory with a receipts/ folder."
        )
    return found


def _where(receipt: dict) -> str:
    return f"event {receipt.get('sequence')} ({receipt.get('event')}, version {receipt.get('version')})"


def _shard_of(path: str) -> str:
    head = path.split("/")[0]
    return f", shard {int(head[6:])}" if head.startswith("shard_") and head[6:].isdigit() else ""


def _parse_chain(chain: list[bytes], label: str, report: VerifyReport) -> list[dict]:
    """Each receipt canonical, numbered in order and linked to the previous one's hash."""
    parsed = []
    for i, data in enumerate(chain, start=1):
        name = f"{label}/{R.receipt_name(i)}"
        try:
            receipt = json.loads(data)
        except ValueError:
            report.fail(f"{name}: not valid JSON")
            parsed.append({})
            continue
        parsed.append(receipt)
        if R.canonical_json(receipt) != data:
            report.fail(f"{name}: not in canonical form: the file was edited after the event ({_where(receipt)})")
        if receipt.get("format") != R.FORMAT or receipt.get("sequence") != i:
            report.fail(f"{name}: not receipt {i} of an hf_recunlearn chain (format or sequence differs)")
        expected = R.sha256_hex(chain[i - 2]) if i > 1 else None
        if receipt.get("previous") != expected:
            previous = f"{label}/{R.receipt_name(i - 1)}" if i > 1 else "nothing (it is the first)"
            report.fail(f"{name}: chain broken: `previous` is not the hash of {previous} ({_where(receipt)})")
    report.receipts += len(parsed)
    return parsed


def _check_files(directory: Path, label: str, parsed: list[dict], report: VerifyReport) -> None:
    """The version's files against its (last) receipt; a file holding an earlier version's bytes is named as such."""
    last = parsed[-1]
    name = f"{label}/{R.receipt_name(len(parsed))}"
    recorded = last.get("files") or {}
    actual = R.file_hashes(directory)
    earlier = {}
    for i, receipt in enumerate(parsed[:-1], start=1):
        for path, digest in (receipt.get("files") or {}).items():
            earlier.setdefault((path, digest.get("sha256")), (i, receipt))
    for path, digest in sorted(recorded.items()):
        have = actual.get(path)
        if have is None:
            report.fail(f"{label}/{path}: missing, but {name} records it ({_where(last)}{_shard_of(path)})")
        elif have["sha256"] != digest.get("sha256"):
            old = earlier.get((path, have["sha256"]))
            if old is not None:
                report.fail(
                    f"{label}/{path}: holds the bytes of {label}/{R.receipt_name(old[0])} ({_where(old[1])}), not "
                    f"those {name} records ({_where(last)}{_shard_of(path)}): an older file was copied back"
                )
            else:
                report.fail(f"{label}/{path}: sha256 differs from {name} ({_where(last)}{_shard_of(path)}): the "
                            "file was changed after the event")  # fmt: skip
    for path in sorted(set(actual) - set(recorded)):
        report.fail(f"{label}/{path}: not covered by {name} ({_where(last)})")
    report.checks.append(f"{label}: {len(recorded)} files hash to what {name} records")


def _check_exact_sequence(label: str, parsed: list[dict], report: VerifyReport) -> None:
    """What the public can check from one exact event to the next."""
    first = parsed[0].get("exact") or {}
    for i, receipt in enumerate(parsed, start=1):
        name = f"{label}/{R.receipt_name(i)}"
        exact = receipt.get("exact")
        if exact is None:
            report.fail(f"{name}: an exact-method chain has a receipt without `exact` ({_where(receipt)})")
            continue
        if exact.get("statement") != R.EXACT_STATEMENT:
            report.fail(f"{name}: the absence statement was removed or changed ({_where(receipt)})")
        if not _is_commitment(exact.get("users")):
            report.fail(f"{name}: no users commitment ({_where(receipt)})")
        for key in ("recipe_commitment", "base_model_fingerprint"):
            if exact.get(key) != first.get(key):
                report.fail(f"{name}: `{key}` differs from the training event's ({_where(receipt)}): another "
                            "recipe or base model")  # fmt: skip
        if receipt.get("event") == "forget":
            request = receipt.get("request") or {}
            if not _is_commitment(request.get("commitment")):
                report.fail(f"{name}: the forget event's request commitment is missing ({_where(receipt)})")
        if i == 1:
            continue
        previous = parsed[i - 2]
        before = {s.get("name"): s for s in (previous.get("exact") or {}).get("shards", [])}
        files, old_files = receipt.get("files") or {}, previous.get("files") or {}
        for shard in exact.get("shards", []):
            shard_name = shard.get("name", "?")
            old = before.get(shard_name, {})
            where = f"{name}: {shard_name} ({_where(receipt)})"
            if shard.get("manifest_before") != old.get("manifest"):
                report.fail(f"{where}: `manifest_before` is not the manifest {R.receipt_name(i - 1)} committed")
            weights = f"{shard_name}/adapter_model.safetensors"
            same_bytes = (files.get(weights) or {}).get("sha256") == (old_files.get(weights) or {}).get("sha256")
            if shard.get("retrained"):
                if shard.get("manifest") == old.get("manifest"):
                    report.fail(f"{where}: claimed retrained, but its manifest is unchanged")
                if shard.get("trained_in_version") != receipt.get("version"):
                    report.fail(f"{where}: claimed retrained, but `trained_in_version` is not this version")
            else:
                if shard.get("manifest") != old.get("manifest"):
                    report.fail(f"{where}: its manifest changed, but the receipt says it was not retrained")
                if not same_bytes:
                    report.fail(f"{where}: its weights changed, but the receipt says it was not retrained")
    report.checks.append(f"{label}: {len(parsed)} exact receipts consistent shard by shard (recipe, manifests, bytes)")


def _is_commitment(value) -> bool:
    return isinstance(value, dict) and isinstance(value.get("root"), str) and isinstance(value.get("size"), int)


def _check_directory(directory: Path, label: str, report: VerifyReport, *, controller: bool) -> list[dict]:
    chain = R.read_chain(directory)
    if not chain:
        report.fail(f"{label}/{R.RECEIPTS_DIR}/: no receipts (the version predates receipts, or they were removed)")
        return []
    parsed = _parse_chain(chain, label, report)
    report.checks.append(f"{label}: chain of {len(parsed)} receipts linked by hash")
    _check_files(directory, label, parsed, report)
    if any("exact" in r for r in parsed):
        _check_exact_sequence(label, parsed, report)
    else:
        for i, receipt in enumerate(parsed, start=1):
            approx = receipt.get("approximate") or {}
            if approx.get("statement") != R.APPROXIMATE_STATEMENT or not isinstance(approx.get("audit"), dict):
                report.fail(f"{label}/{R.receipt_name(i)}: the approximate statement or audit figures are missing "
                            f"({_where(receipt)})")  # fmt: skip
    if controller and (directory / "controller").is_dir() and (directory / "apa_config.json").is_file():
        _check_controller(directory, label, parsed, report)
    return parsed


def _check_controller(directory: Path, label: str, parsed: list[dict], report: VerifyReport) -> None:
    """The controller's checks: commitments recomputed from the ledger, recipe, recorded requests and journal."""
    from .controller import Journal
    from .partition import load_or_create_salt

    try:
        state = _controller_state(directory)
        salt = load_or_create_salt(state.ledger["salt_id"], (state.recipe.get("settings") or {}).get("salt_dir"))
    except (ValueError, FileNotFoundError, KeyError) as err:
        report.fail(f"{label}/controller/: cannot be read ({err})")
        return
    last = parsed[-1]
    name = f"{label}/{R.receipt_name(len(parsed))}"
    exact = last.get("exact") or {}
    shards = {s.get("name"): s for s in exact.get("shards", [])}
    for k, shard in enumerate(state.ledger["shards"]):
        entry = shards.get(f"shard_{k:02d}", {})
        if entry.get("manifest") != R.manifest_root(shard):
            report.fail(f"{name}: shard_{k:02d} ({_where(last)}): the manifest does not match the ledger")
        if entry.get("seed_commitment") != R.salted(salt, f"seed:{k}:{state.shard_info[k].get('seed')}"):
            report.fail(f"{name}: shard_{k:02d} ({_where(last)}): the seed commitment does not match the recipe")
    if len(shards) != state.num_shards:
        report.fail(f"{name}: commits to {len(shards)} shards, the version has {state.num_shards}")
    if exact.get("recipe_commitment") != R.recipe_commitment(state.recipe, state.partition, salt):
        report.fail(f"{name}: the recipe commitment does not match the stored recipe ({_where(last)})")
    if exact.get("users") != R.users_tree(state.ledger, state.valid_users, salt, state.version).commitment():
        report.fail(f"{name}: the users commitment does not match the ledger and validation rows ({_where(last)})")
    # Every forget event's request commitment, from the digests the controller recorded for it.
    recorded = {int(e["version"]): e for e in state.forgotten or []}
    for i, receipt in enumerate(parsed, start=1):
        if receipt.get("event") != "forget":
            continue
        event = recorded.pop(int(receipt.get("version", -1)), None)
        rname = f"{label}/{R.receipt_name(i)}"
        if event is None:
            report.fail(f"{rname}: the controller recorded no request for this forget event ({_where(receipt)})")
            continue
        expected = R.request_tree(event["users"], event["samples"], salt, event["version"]).commitment()
        if (receipt.get("request") or {}).get("commitment") != expected:
            report.fail(f"{rname}: the request commitment does not match the digests the controller recorded for "
                        f"this event ({_where(receipt)}): a forgotten commitment was dropped or altered")  # fmt: skip
    for version in sorted(recorded):
        report.fail(f"{label}/controller/forgotten.json: version {version}'s forget event has no receipt")
    # The journal's finished requests are within the recorded events, and nothing is pending.
    by_version = {int(e["version"]): e for e in state.forgotten or []}
    journal = Journal(directory)
    for request in journal.requests():
        if not request.done:
            report.fail(f"{label}: journal request {request.id[:8]} is pending: run `hf-recunlearn forget --resume`")
            continue
        event = by_version.get(request.done_version)
        if event is not None and not (set(request.users) <= set(event["users"])
                                      and set(request.samples) <= set(event["samples"])):  # fmt: skip
            report.fail(f"{label}: journal request {request.id[:8]} (done in version {request.done_version}) is not "
                        "in that version's recorded request")  # fmt: skip
    # Each forgotten digest is absent from every shard manifest and from the validation rows.
    users = R.version_users(state.ledger, state.valid_users)
    where_sample = {s: k for k, shard in enumerate(state.ledger["shards"]) for s, _ in shard}
    where_user = {u: k for k, shard in enumerate(state.ledger["shards"]) for _, u in shard}
    absent = 0
    for event in state.forgotten or []:
        for u in event["users"]:
            absent += 1
            if u in users:
                place = f"shard_{where_user[u]:02d}" if u in where_user else "the validation rows"
                report.fail(f"{label}: a user forgotten in version {event['version']} is present in {place} of "
                            f"version {state.version}")  # fmt: skip
        for s in event["samples"]:
            absent += 1
            if s in where_sample:
                report.fail(f"{label}: a sample forgotten in version {event['version']} is present in "
                            f"shard_{where_sample[s]:02d} of version {state.version}")  # fmt: skip
    report.checks.append(
        f"{label}: manifests, users, recipe, seed and request commitments recomputed from the controller state; "
        f"{absent} forgotten digests absent from version {state.version}"
    )


@dataclass
class _ControllerState:
    version: int
    ledger: dict
    recipe: dict
    partition: dict
    shard_info: list[dict]
    valid_users: list[str]
    forgotten: list[dict]

    @property
    def num_shards(self) -> int:
        return len(self.ledger["shards"])


def _controller_state(directory: Path) -> _ControllerState:
    """The controller's files of a version, read as they are (the published files are checked separately)."""
    from .controller import CONTROLLER_DIR, FORGOTTEN_FILE, LEDGER_FILE, RECIPE_FILE, VALIDATION_FILE

    private = directory / CONTROLLER_DIR
    recipe = json.loads((private / RECIPE_FILE).read_text())
    forgotten = private / FORGOTTEN_FILE
    return _ControllerState(
        version=int(json.loads((directory / "apa_config.json").read_text())["version"]),
        ledger=json.loads((private / LEDGER_FILE).read_text()),
        recipe=recipe,
        partition=recipe.pop("partition"),
        shard_info=recipe.pop("shards"),
        valid_users=json.loads((private / VALIDATION_FILE).read_text())["users"],
        forgotten=json.loads(forgotten.read_text()) if forgotten.is_file() else [],
    )


def _retrain_and_compare(run: Path, directory: Path, label: str, k: int, parsed: list[dict], report) -> None:
    """Retrain shard `k` from its manifest with the stored recipe; compare its bytes with the receipt's sha256."""
    import hashlib

    from safetensors.torch import load_file, save

    from .runs import RunDir
    from .trainer import APATrainer, SISATrainer

    if not (run / "run.json").is_file():
        raise ValueError(
            f"`retrain_shard` needs `run` to be a run directory (with run.json and data/), got {str(run)!r}."
        )
    meta = json.loads((directory / "apa_config.json").read_text())
    if not 0 <= k < int(meta["num_shards"]):
        raise ValueError(f"`retrain_shard` must be a shard index in [0, {meta['num_shards']}), got {k}.")
    splits = RunDir(run).load_datasets()
    trainer_cls = SISATrainer if directory.name == "sisa" else APATrainer
    trainer = trainer_cls(str(directory), train_dataset=splits["train"],
                          eval_dataset={"valid": splits["valid"], "test": splits["test"]})  # fmt: skip
    adapter = trainer.reproduce_shard(k)
    data = save({n: t.detach().to("cpu").contiguous() for n, t in sorted(adapter.items())}, metadata={"format": "pt"})
    path = f"shard_{k:02d}/adapter_model.safetensors"
    recorded = ((parsed[-1] if parsed else {}).get("files") or {}).get(path, {}).get("sha256")
    digest = hashlib.sha256(data).hexdigest()
    if digest != recorded:
        stored = load_file(str(directory / path))
        diff = max(((adapter[n].float() - stored[n].float()).abs().max().item() for n in stored if n in adapter),
                   default=float("nan"))  # fmt: skip
        report.fail(f"{label}/{path}: retraining shard {k} from its manifest with the stored recipe gives other bytes "
                    f"than {R.receipt_name(len(parsed))} records (max |difference| {diff:.3g})")  # fmt: skip
    else:
        report.checks.append(f"{label}/{path}: shard {k} retrained from its manifest reproduces the recorded sha256 "
                             f"{digest[:16]}... bit for bit")  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Tokens


def _check_token(parsed: list[dict], token: dict, label: str, report: VerifyReport) -> None:
    if not parsed:
        return
    digest = token.get("digest", "")
    forgotten_in, checked = token.get("forgotten_in"), token.get("checked_version")
    by_version = {r.get("version"): (i, r) for i, r in enumerate(parsed, start=1)}
    current = parsed[-1].get("version", 0)
    if parsed[-1].get("run_id") != token.get("run_id"):
        report.fail(f"token: issued for another model (run) than {label}")
        return
    if not isinstance(forgotten_in, int) or current < forgotten_in:
        report.fail(f"token: {label} is at version {current}, before the deletion (version {forgotten_in}): this "
                    "version was trained on the token's user")  # fmt: skip
        return
    i, event = by_version.get(forgotten_in, (None, {}))
    if event.get("event") != "forget" or not R.verify_membership(
        (event.get("request") or {}).get("commitment") or {}, digest, token.get("request_proof") or {}
    ):
        report.fail(f"token: the request committed in {label}/{R.receipt_name(i or forgotten_in)} (version "
                    f"{forgotten_in}) does not name this token's user: a forged or foreign token")  # fmt: skip
        return
    j, target = by_version.get(checked, (None, {}))
    if target.get("exact") is None or not R.verify_absence(
        target["exact"].get("users") or {}, digest, token.get("absence_proof") or {}
    ):
        report.fail(f"token: {label}/{R.receipt_name(j or checked or 0)} (version {checked}) does not prove this "
                    "user absent: the version holds them, or the token was altered")  # fmt: skip
        return
    later = [r for r in parsed if r.get("version", 0) > checked]
    if any(r.get("event") != "forget" for r in later):
        report.fail(f"token: {label} has a training event after version {checked}; absence is proven for version "
                    f"{checked} only")  # fmt: skip
        return
    report.checks.append(
        f"token: named by the request of version {forgotten_in}; absent from every shard and validation row of "
        f"version {checked}" + (f"; versions {checked + 1}..{current} follow from forget events only" if later else "")
    )


# --------------------------------------------------------------------------------------------------------------------
# Hub repos


def _check_repo(repo_id: str, revision: str, hub_token, token: dict | None, report: VerifyReport) -> None:
    from huggingface_hub import snapshot_download

    from . import hub

    api = hub._api(hub_token)
    sha = hub._resolve_revision(api, repo_id, revision, hub_token)
    label = f"{repo_id}@{revision}"
    report.targets.append(f"{label} ({sha[:12]})")
    with tempfile.TemporaryDirectory() as tmp:
        with hub._translate_errors(repo_id, "download", revision):
            snapshot_download(repo_id, revision=sha, local_dir=tmp, token=hub_token)
        directory = Path(tmp)
        parsed = _check_directory(directory, label, report, controller=False)
        _check_pushed_state(directory, label, revision, parsed, report)
    if token is not None:
        _check_token(parsed, token, label, report)
        _check_reachable(api, repo_id, token, report)


def _check_pushed_state(directory: Path, label: str, revision: str, parsed: list[dict], report) -> None:
    """`unlearning_versions.json` (tag, commit, receipt path and hash per version) names receipts of this chain."""
    from .hub import VERSIONS_FILE

    path = directory / VERSIONS_FILE
    if not path.is_file() or not parsed:
        report.fail(f"{label}/{VERSIONS_FILE}: missing: the revision was not pushed by hf_recunlearn")
        return
    chain = R.read_chain(directory)
    hashes = {R.receipt_name(i): R.sha256_hex(d) for i, d in enumerate(chain, start=1)}
    versions = json.loads(path.read_text()).get("versions", [])
    named = 0
    for entry in versions:
        receipt = entry.get("receipt")
        if receipt is None:
            continue
        named += 1
        if hashes.get(receipt) != entry.get("receipt_sha256"):
            report.fail(f"{label}/{VERSIONS_FILE}: {entry.get('tag')}'s receipt {receipt} is not in this chain with "
                        "the recorded hash")  # fmt: skip
    newest = next((v for v in reversed(versions) if v.get("status") == "available"), None)
    last = R.receipt_name(len(chain))
    if newest is None or newest.get("receipt") != last:
        report.fail(f"{label}/{VERSIONS_FILE}: the newest pushed version does not name the head receipt {last}")
    elif revision.startswith("v") and revision != newest.get("tag"):
        report.fail(f"{label}: tag {revision} does not hold the version {newest.get('tag')} its log names")
    report.checks.append(f"{label}: {VERSIONS_FILE} links {named} pushed versions (tag, commit) to their receipts")


def _check_reachable(api, repo_id: str, token: dict, report: VerifyReport) -> None:
    """No reachable ref (tag, branch, pull request) holds a version from before the token's deletion."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from . import hub

    with hub._translate_errors(repo_id, "list the revisions of"):
        refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    targets = [(f"tag {t.name}", t.target_commit) for t in refs.tags]
    targets += [(f"branch {b.name}", b.target_commit) for b in refs.branches]
    targets += [(f"pull request {p.ref}", p.target_commit) for p in (refs.pull_requests or [])]
    forgotten_in = token.get("forgotten_in")
    for name, commit in targets:
        with hub._translate_errors(repo_id, "list the receipts of"):
            files = [f for f in api.list_repo_files(repo_id, revision=commit) if f.startswith(R.RECEIPTS_DIR + "/")]
        if not files:
            report.fail(f"{repo_id}: {name} ({commit[:12]}) has no receipts: it may hold the token's user")
            continue
        with tempfile.TemporaryDirectory() as tmp, hub._translate_errors(repo_id, "read a receipt of"):
            try:
                local = hf_hub_download(repo_id, max(files), revision=commit, local_dir=tmp)
            except EntryNotFoundError:
                report.fail(f"{repo_id}: {name} ({commit[:12]}): {max(files)} cannot be read")
                continue
            version = json.loads(Path(local).read_text()).get("version", 0)
        if version < forgotten_in:
            report.fail(
                f"{repo_id}: {name} ({commit[:12]}) holds version {version}, from before the deletion (version "
                f"{forgotten_in}), and is still downloadable: it was trained on the token's user"
            )
    report.checks.append(f"{repo_id}: {len(targets)} reachable refs hold no version from before the deletion")
