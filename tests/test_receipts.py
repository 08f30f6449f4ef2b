"""
Forgetting receipts and `hf-recunlearn verify` (#12), each party with what it holds: the controller (the run), anyone
(the published bytes, through the real `huggingface_hub` client against the in-project Hub server), and a forgotten
user (their token). Every tampering a test makes must fail with one line naming the file, shard or event.

User and sample ids look like e-mail addresses, so a byte search for `@example.org` can only find a leak.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

import huggingface_hub.constants
import pytest
from safetensors.torch import load_file

from hf_recunlearn import receipts as R
from hf_recunlearn.apa_recommender import read_apa_directory
from hf_recunlearn.cli import main
from hf_recunlearn.partition import ShardLedger, load_or_create_salt
from hf_recunlearn.runs import RunDir, RunInfo
from hf_recunlearn.trainer import APATrainer

from apa_helpers import single_thread, tiny_base, tiny_tokenizer
from test_guarantees import email_datasets, every_byte, recipe


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A trained APA run (version 1) laid out as `hf-recunlearn train --method apa` writes it, with e-mail ids."""
    root = tmp_path_factory.mktemp("receipts")
    ds = email_datasets()
    tok = tiny_tokenizer(ds)
    run = RunDir(root / "run")
    run.path.mkdir()
    tiny_base(tok).save_pretrained(run.base_dir)
    tok.save_pretrained(run.base_dir)
    run.save_datasets(ds)
    salts = root / "salts"
    APATrainer(str(run.base_dir), recipe(run.path / "apa", salts), train_dataset=ds["train"],
               eval_dataset={"valid": ds["valid"], "test": ds["test"]}).train()  # fmt: skip
    run.save_info(RunInfo(data="synthetic", preset="apa", template="e2urec", base_model="builtin", method="apa"))
    return {"root": root, "ds": ds, "salts": salts, "run": run.path}


def ledger_of(directory, salts) -> ShardLedger:
    state = read_apa_directory(directory)
    return ShardLedger.from_dict(state.ledger, load_or_create_salt(state.ledger["salt_id"], salts))


def cli_json(tmp_path, *args) -> tuple[int, dict]:
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}.json"
    code = main([*args, "--json", str(out)])
    return code, (json.loads(out.read_text()) if out.is_file() else {})


@pytest.fixture(scope="module")
def forgotten(template, tmp_path_factory, hub_server_session):
    """
    The template run pushed as v1 to two repos, then three users forgotten one after the other through the CLI
    (versions 2, 3, 4), with the tokens each `forget` returned and the shard that held each user.
    """
    root = tmp_path_factory.mktemp("forgotten")
    path = root / "run"
    shutil.copytree(template["run"], path)
    offline = huggingface_hub.constants.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = False
    repos = {kind: f"user/receipts-{kind}-{uuid.uuid4().hex[:6]}" for kind in ("purge", "keep")}
    try:
        for repo_id in repos.values():
            assert cli_json(root, "push", "--run", str(path), "--repo-id", repo_id)[0] == 0
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE = offline
    users = sorted(set(template["ds"]["train"]["user_id"]))[:3]
    shards, tokens = [], []
    token_file = root / "to-send" / "tokens.json"
    token_file.parent.mkdir()
    for user in users:
        (k,) = ledger_of(path / "apa", template["salts"]).locate(user_ids=[user])
        extra = ["--token_file", str(token_file)] if user == users[-1] else []
        code, out = cli_json(root, "forget", "--run", str(path), "--method", "apa", "--users", user, *extra)
        assert code == 0 and out["affected_shards"] == [k]
        shards.append(k)
        tokens.append(out["tokens"][0])
    return {"run": path, "users": users, "shards": shards, "tokens": tokens, "repos": repos, "token_file": token_file}


@pytest.fixture
def salt_env(template, monkeypatch):
    monkeypatch.setenv("HF_RECUNLEARN_SALT_DIR", str(template["salts"]))


def copy_run(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst


def verify_cli(tmp_path, capsys, *args) -> tuple[int, dict, list[str]]:
    """`hf-recunlearn verify ARGS`: exit code, the JSON document on stdout, the failure lines on stderr."""
    capsys.readouterr()
    code = main(["verify", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = [line for line in captured.err.splitlines() if "FAIL:" in line]
    return code, json.loads(captured.out), lines


def chain(directory) -> list[dict]:
    return [json.loads(data) for data in R.read_chain(directory)]


# ------------------------------------------------------------------------------------------------------ the controller


def test_verify_passes_on_a_fresh_run_and_after_three_forgets(template, forgotten, tmp_path, capsys, salt_env):
    fresh = copy_run(template["run"], tmp_path)
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(fresh))
    assert (code, out["ok"], out["receipts"], lines) == (0, True, 1, [])
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(forgotten["run"]))
    assert (code, out["ok"], out["receipts"], lines) == (0, True, 4, [])
    rows = sum(1 for u in template["ds"]["train"]["user_id"] if u in forgotten["users"])
    assert f"{3 + rows} forgotten digests absent from version 4" in " ".join(out["checks"])  # the users and samples

    receipts = chain(forgotten["run"] / "apa")
    assert [r["event"] for r in receipts] == ["train", "forget", "forget", "forget"]
    assert [r["version"] for r in receipts] == [1, 2, 3, 4]
    for i in range(1, 4):
        previous, receipt, k = receipts[i - 1], receipts[i], forgotten["shards"][i - 1]
        assert receipt["previous"] == R.sha256_hex(R.canonical_json(previous))
        assert receipt["request"]["users"] == 1 and receipt["request"]["requests"] == 1
        retrained = [s["retrained"] for s in receipt["exact"]["shards"]]
        assert retrained == [j == k for j in range(3)]  # exactly the shard that held the user
        for j, shard in enumerate(receipt["exact"]["shards"]):
            old = previous["exact"]["shards"][j]
            assert shard["manifest_before"] == old["manifest"]
            assert (shard["manifest"] != old["manifest"]) == (j == k)
            weights = f"shard_{j:02d}/adapter_model.safetensors"
            assert (receipt["files"][weights] != previous["files"][weights]) == (j == k)
    # The receipt of the current version commits to the current files and to the ledger's manifests.
    last = receipts[-1]
    apa = forgotten["run"] / "apa"
    assert last["files"]["apa_config.json"]["sha256"] == R.sha256_hex((apa / "apa_config.json").read_bytes())
    ledger = ledger_of(apa, template["salts"])
    assert [s["manifest"] for s in last["exact"]["shards"]] == [
        R.manifest_root(sh) for sh in ledger.to_dict()["shards"]
    ]
    # Each user's token, checked by the library function against the run.
    from hf_recunlearn import verify

    for token in forgotten["tokens"]:
        report = verify(forgotten["run"], token=token)
        assert report.ok, report.failures


def _flip_byte(run: Path, k: int) -> str:
    path = run / "apa" / f"shard_{k:02d}" / "adapter_model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    return f"shard_{k:02d}/adapter_model.safetensors"


def _copy_back_old_shard(run: Path, k: int, template) -> str:
    name = f"shard_{k:02d}/adapter_model.safetensors"
    shutil.copyfile(template["run"] / "apa" / name, run / "apa" / name)
    return name


def _edit_receipt(run: Path, sequence: int, change) -> None:
    path = run / "apa" / R.receipt_name(sequence)
    receipt = json.loads(path.read_bytes())
    change(receipt)
    path.write_bytes(R.canonical_json(receipt))


def test_a_flipped_byte_in_a_shard_file_fails_with_one_precise_line(forgotten, tmp_path, capsys, salt_env):
    run = copy_run(forgotten["run"], tmp_path)
    k = forgotten["shards"][-1]
    name = _flip_byte(run, k)
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run))
    assert code == 1 and not out["ok"]
    assert lines == [
        f"hf-recunlearn verify: FAIL: apa/{name}: sha256 differs from apa/receipts/000004.json (event 4 (forget, "
        f"version 4), shard {k}): the file was changed after the event"
    ]


def test_an_older_shard_file_copied_back_is_named_with_its_event(forgotten, template, tmp_path, capsys, salt_env):
    run = copy_run(forgotten["run"], tmp_path)
    k = forgotten["shards"][-1]
    name = _copy_back_old_shard(run, k, template)
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run))
    assert code == 1
    assert lines == [
        f"hf-recunlearn verify: FAIL: apa/{name}: holds the bytes of apa/receipts/000001.json (event 1 (train, "
        f"version 1)), not those apa/receipts/000004.json records (event 4 (forget, version 4), shard {k}): an older "
        "file was copied back"
    ]


def test_a_receipt_edited_to_drop_a_forgotten_commitment_fails(forgotten, tmp_path, capsys, salt_env):
    run = copy_run(forgotten["run"], tmp_path)
    _edit_receipt(run, 2, lambda r: r["request"].pop("commitment"))
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run))
    assert code == 1
    text = "\n".join(lines)
    assert "apa/receipts/000003.json: chain broken: `previous` is not the hash of apa/receipts/000002.json" in text
    assert "apa/receipts/000002.json: the forget event's request commitment is missing (event 2 (forget" in text
    assert (
        "apa/receipts/000002.json: the request commitment does not match the digests the controller recorded" in text
    )


def test_a_broken_chain_link_fails_naming_the_receipt(forgotten, tmp_path, capsys, salt_env):
    run = copy_run(forgotten["run"], tmp_path)
    _edit_receipt(run, 3, lambda r: r.update(previous=R.sha256_hex(b"another history")))
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run))
    assert code == 1
    assert lines[0] == (
        "hf-recunlearn verify: FAIL: apa/receipts/000003.json: chain broken: `previous` is not the hash of "
        "apa/receipts/000002.json (event 3 (forget, version 3))"
    )
    assert any("apa/receipts/000004.json: chain broken" in line for line in lines)  # 3's bytes changed too


def test_retrain_shard_from_the_cli_reproduces_the_retrained_shard_bit_for_bit(forgotten, tmp_path, capsys, salt_env):
    run = copy_run(forgotten["run"], tmp_path)
    k = forgotten["shards"][-1]
    before = every_byte(run)
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run), "--retrain-shard", str(k))
    assert (code, lines) == (0, [])
    assert every_byte(run) == before  # verifying only reads
    recorded = chain(run / "apa")[-1]["files"][f"shard_{k:02d}/adapter_model.safetensors"]["sha256"]
    assert f"shard {k} retrained from its manifest reproduces the recorded sha256 {recorded[:16]}" in out["checks"][-1]
    # Weights replaced consistently everywhere (metadata and receipt re-hashed to match): only retraining tells.
    name = f"shard_{k:02d}/adapter_model.safetensors"
    from safetensors.torch import save_file

    tensors = load_file(str(run / "apa" / name))
    save_file({n: t + 1e-3 for n, t in tensors.items()}, str(run / "apa" / name), metadata={"format": "pt"})
    meta = json.loads((run / "apa" / "apa_config.json").read_text())
    meta["shards"][k]["sha256"] = R.file_digest(run / "apa" / name)["sha256"]
    (run / "apa" / "apa_config.json").write_text(json.dumps(meta))
    rehashed = {p: R.file_digest(run / "apa" / p) for p in (name, "apa_config.json")}
    _edit_receipt(run, 4, lambda r: r["files"].update(rehashed))
    assert verify_cli(tmp_path, capsys, "--run", str(run))[0] == 0  # the forgery holds up to every hash check
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(run), "--retrain-shard", str(k))
    assert code == 1 and any(f"apa/{name}: retraining shard {k} from its manifest" in line for line in lines)


def test_forget_writes_the_tokens_to_a_file_only_the_controller_reads(forgotten, tmp_path, capsys, salt_env):
    path = forgotten["token_file"]
    assert json.loads(path.read_text()) == {forgotten["users"][-1]: forgotten["tokens"][-1]}
    assert path.stat().st_mode & 0o077 == 0  # not readable by other accounts: it pairs ids with tokens
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(forgotten["run"]), "--token", forgotten["tokens"][-1])
    assert code == 0 and not lines
    # Asked of an approximate method (no tokens), or into a folder that does not exist: exit 2, nothing written.
    for args, message in (
        (["--method", "e2urec", "--token_file", str(tmp_path / "t.json")], "apply to `--method apa|sisa`"),
        (["--method", "apa", "--token_file", str(tmp_path / "missing" / "t.json")], "its folder does not exist"),
    ):
        capsys.readouterr()
        code = main(["forget", "--run", str(forgotten["run"]), "--users", forgotten["users"][0], *args])
        assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "missing").exists()


def test_bad_verify_arguments_are_one_line_and_exit_2(forgotten, tmp_path, capsys):
    capsys.readouterr()
    assert main(["verify", "--run", str(forgotten["run"]), "--token", "not-a-token"]) == 2
    assert "`token` must be a deletion token" in capsys.readouterr().err
    assert main(["verify", "--run", str(forgotten["run"]), "--retrain-shard", "9"]) == 2
    assert "`retrain_shard` must be a shard index in [0, 3), got 9" in capsys.readouterr().err
    assert main(["verify", "--run", str(tmp_path)]) == 2
    assert "holds no model with receipts" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------ tokens


def test_a_token_fails_against_a_version_that_still_holds_the_user_and_cannot_be_forged(
    forgotten, template, tmp_path, capsys, salt_env
):
    token = forgotten["tokens"][0]
    before = copy_run(template["run"], tmp_path)  # version 1: trained on the user
    code, _, lines = verify_cli(tmp_path, capsys, "--run", str(before), "--token", token)
    assert code == 1 and lines == [
        "hf-recunlearn verify: FAIL: token: apa is at version 1, before the deletion (version 2): this version was "
        "trained on the token's user"
    ]
    # A token whose digest is swapped for a user the model still holds proves nothing.
    payload = R.decode_token(token)
    ledger = ledger_of(forgotten["run"] / "apa", template["salts"])
    present = ledger.to_dict()["shards"][0][0][1]
    forged = R.encode_token({**payload, "digest": present})
    code, _, lines = verify_cli(tmp_path, capsys, "--run", str(forgotten["run"]), "--token", forged)
    assert code == 1 and "does not name this token's user: a forged or foreign token" in lines[0]
    # Nor can an absence proof be built from adjacent leaves around a digest that is a leaf.
    users = R.users_tree(ledger.to_dict(), read_apa_directory(forgotten["run"] / "apa").valid_users, ledger.salt, 4)
    with pytest.raises(ValueError, match="it is present"):
        users.absence(present)
    bent = {**payload, "absence_proof": {"left": payload["absence_proof"]["right"],
                                         "right": payload["absence_proof"]["left"]}}  # fmt: skip
    code, _, lines = verify_cli(tmp_path, capsys, "--run", str(forgotten["run"]), "--token", R.encode_token(bent))
    assert code == 1 and "does not prove this user absent" in lines[0]


def test_receipts_and_tokens_hold_no_raw_id_and_no_digest_list(forgotten, template):
    apa = forgotten["run"] / "apa"
    ledger = ledger_of(apa, template["salts"])
    receipts = b"\n".join(R.read_chain(apa))
    tokens = "\n".join(forgotten["tokens"])
    decoded = json.dumps([R.decode_token(t) for t in forgotten["tokens"]])
    for blob in (receipts.decode(), tokens, decoded):
        assert "@example.org" not in blob  # no id of anybody
    for sid in template["ds"]["train"]["sample_id"]:
        assert ledger.hash_sample(sid) not in receipts.decode() + decoded  # no sample digest at all
    # Receipts hold no 128-bit digest of any kind, no counts of samples and no seeds.
    assert not re.search(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", receipts)
    assert b"num_samples" not in receipts and b'"seed"' not in receipts
    # A token holds its own user's digest; its other leaves are neighbours' salted digests, never a raw id.
    own = {ledger.hash_user(u) for u in forgotten["users"]}
    assert {R.decode_token(t)["digest"] for t in forgotten["tokens"]} == own


# ------------------------------------------------------------------------------------------------------ the Hub


def test_push_and_purge_then_anyone_verifies_the_published_bytes_and_each_token(
    forgotten, template, hub_server, tmp_path, capsys
):
    from huggingface_hub import HfApi, hf_hub_download

    repo_id = forgotten["repos"]["purge"]
    old = (template["run"] / "apa" / f"shard_{forgotten['shards'][0]:02d}" / "adapter_model.safetensors").read_bytes()
    assert cli_json(tmp_path, "push", "--run", str(forgotten["run"]), "--repo-id", repo_id)[0] == 0
    refs = HfApi().list_repo_refs(repo_id)
    assert [t.name for t in refs.tags] == ["v4"]  # v1 purged
    assert not hub_server.is_reachable(old, repo_id) and not hub_server.is_stored(old, repo_id)
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id)
    assert (code, out["ok"], out["receipts"], lines) == (0, True, 4, [])  # the chain survived the purge
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id, "--revision", "v4")
    assert (code, lines) == (0, [])
    for token in forgotten["tokens"]:
        code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id, "--token", token)
        assert (code, lines) == (0, []), lines
    # The pushed state links each version to its receipt; the card links them too.
    log = json.loads(Path(hf_hub_download(repo_id, "unlearning_versions.json")).read_text())
    local = R.read_chain(forgotten["run"] / "apa")
    assert [(v["tag"], v["status"], v["receipt"], v["receipt_sha256"]) for v in log["versions"]] == [
        (f"v{i}", "available" if i == 4 else ("purged" if i == 1 else "not_pushed"), R.receipt_name(i),
         R.sha256_hex(local[i - 1]))
        for i in range(1, 5)
    ]  # fmt: skip
    card = Path(hf_hub_download(repo_id, "README.md")).read_text()
    assert "| v1 | train | 0, 1, 2 | 0 | purged | [000001.json](receipts/000001.json) |" in card
    for name, data in hub_server.reachable_blobs(repo_id).items():
        assert b"@example.org" not in data, name


def test_a_token_fails_while_a_revision_from_before_the_deletion_stays_downloadable(forgotten, hub_server, tmp_path,
                                                                                    capsys):  # fmt: skip
    repo_id = forgotten["repos"]["keep"]
    assert cli_json(tmp_path, "push", "--run", str(forgotten["run"]), "--repo-id", repo_id, "--keep-history")[0] == 0
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id)
    assert (code, lines) == (0, [])  # the receipts hold: keeping history is the controller's declared choice
    token = forgotten["tokens"][0]
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id, "--token", token)
    assert code == 1 and len(lines) == 1
    assert re.fullmatch(
        rf"hf-recunlearn verify: FAIL: {repo_id}: tag v1 \([0-9a-f]{{12}}\) holds version 1, from before the deletion "
        r"\(version 2\), and is still downloadable: it was trained on the token's user",
        lines[0],
    )
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id, "--revision", "v1", "--token", token)
    assert code == 1 and any(f"token: {repo_id}@v1 is at version 1, before the deletion" in line for line in lines)


# ------------------------------------------------------------------------------------------------------ E2URec


def test_an_e2urec_forget_leaves_an_approximate_receipt_with_its_audit_figures(tiny_data, tmp_path, hub_server,
                                                                                 capsys):  # fmt: skip
    from hf_recunlearn import E2URecConfig, E2URecTrainer, hub
    from hf_recunlearn.evaluation import predict_unlearning_sets
    from hf_recunlearn.models import build_tiny_model

    mail = lambda ds: ds.map(lambda r: {"user_id": f"user-{r['user_id']}@example.org"})  # noqa: E731
    forget, train, test = mail(tiny_data["split"].forget), mail(tiny_data["train"]), tiny_data["test"]
    args = E2URecConfig(output_dir=str(tmp_path / "e2urec"), num_train_epochs=1, per_device_train_batch_size=4,
                        augment_epochs=1, augment_batch_size=8, disable_tqdm=True, use_cpu=True, report_to="none",
                        alpha=8.0, beta=0.7)  # fmt: skip
    model = build_tiny_model(tiny_data["tokenizer"], "causal", "tiny")
    trainer = E2URecTrainer(model, args=args, train_dataset=train, eval_dataset=test, forget_dataset=forget,
                            processing_class=tiny_data["tokenizer"])  # fmt: skip
    trainer.train()
    trainer.save_model()
    trainer.save_model()  # the same event saved again: its receipt is replaced, not chained
    (receipt,) = chain(tmp_path / "e2urec")
    assert receipt["event"] == "unlearn" and receipt["method"] == "e2urec" and "exact" not in receipt
    assert receipt["approximate"]["statement"] == R.APPROXIMATE_STATEMENT
    assert receipt["approximate"]["hyperparameters"]["alpha"] == 8.0
    assert receipt["approximate"]["hyperparameters"]["beta"] == 0.7
    assert receipt["request"]["users"] == len(set(forget["user_id"]))
    after = predict_unlearning_sets(trainer.model, tiny_data["tokenizer"], forget, test, full_vocab=False).metrics()
    with trainer.original_model() as original:
        before = predict_unlearning_sets(original, tiny_data["tokenizer"], forget, test, full_vocab=False).metrics()
    audit = receipt["approximate"]["audit"]
    assert audit["forget_auc"] == pytest.approx(after["forget_auc"]) and audit["mia_auc"] == pytest.approx(
        after["mia_auc"]
    )
    assert audit["original_test_auc"] == pytest.approx(before["test_auc"])
    assert audit["forget_confidence"] != audit["original_forget_confidence"]  # the student moved
    assert "adapter_model.safetensors" in receipt["files"]
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(tmp_path / "e2urec"))
    assert (code, lines) == (0, [])
    # Published, then checked from the Hub's bytes; no raw id anywhere.
    repo_id = f"user/receipts-e2urec-{uuid.uuid4().hex[:6]}"
    hub.push_adapter(tmp_path / "e2urec", repo_id, users_removed=receipt["request"]["users"])
    code, out, lines = verify_cli(tmp_path, capsys, "--repo-id", repo_id)
    assert (code, out["receipts"], lines) == (0, 1, [])
    for name, data in hub_server.reachable_blobs(repo_id).items():
        assert b"@example.org" not in data, name
    # A flipped byte in the adapter is one line naming the file and the event.
    weights = tmp_path / "e2urec" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-2] ^= 0x01
    weights.write_bytes(bytes(data))
    code, out, lines = verify_cli(tmp_path, capsys, "--run", str(tmp_path / "e2urec"))
    assert code == 1 and lines == [
        "hf-recunlearn verify: FAIL: e2urec/adapter_model.safetensors: sha256 differs from "
        "e2urec/receipts/000001.json (event 1 (unlearn, version 1)): the file was changed after the event"
    ]
