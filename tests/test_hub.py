"""
Versioned Hub repos (`hf_recunlearn.hub`) against the real `huggingface_hub` client and the test Hub server: push
one commit per version, pull by revision, purge history after a deletion, model cards, failures. No mocks.
"""

import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file

from hf_recunlearn import hub
from hf_recunlearn.apa_recommender import APARecommender, read_apa_directory
from hf_recunlearn.cards import model_card
from hf_recunlearn.hub import (
    HubAuthError,
    HubConflictError,
    HubPushError,
    HubRepoNotFoundError,
    HubRevisionNotFoundError,
)
from hf_recunlearn.partition import ShardLedger, load_or_create_salt
from hf_recunlearn.trainer import APATrainer

from apa_helpers import apa_args, single_thread, tiny_base, tiny_datasets, tiny_tokenizer


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """
    A K=3 APA model: `v1` after training, and `v2` after forgetting one user (trained once for the module).
    Returns the data, tokenizer, base model, both directories, the forgotten user and the retrained shard.
    """
    ds = tiny_datasets()
    tok = tiny_tokenizer(ds)
    base = tiny_base(tok)
    root = tmp_path_factory.mktemp("hub-apa")
    args = apa_args(root / "v1", root / "salts")
    valid = {"valid": ds["valid"]}
    APATrainer(base, args, train_dataset=ds["train"], eval_dataset=valid, processing_class=tok).train()
    shutil.copytree(root / "v1", root / "v2")
    trainer = APATrainer(
        APARecommender.from_pretrained(root / "v2", base_model=base, tokenizer=tok),
        apa_args(root / "v2", root / "salts"),
        train_dataset=ds["train"],
        eval_dataset={"valid": ds["valid"]},
        processing_class=tok,
    )
    user = ds["train"][0]["user_id"]
    report = trainer.forget(user_ids=[user])
    (k,) = report.affected_shards
    return {"ds": ds, "tok": tok, "base": base, "root": root, "v1": root / "v1", "v2": root / "v2", "user": user,
            "shard": k, "report": report, "salts": root / "salts", "trainer": trainer}  # fmt: skip


@pytest.fixture
def api(hub_server):
    return HfApi()


@pytest.fixture
def repo_id(hub_server):
    return f"user/apa-{uuid.uuid4().hex[:8]}"


def digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def public_digests(folder: Path) -> dict[str, str]:
    """The files a push publishes: everything but the controller's `controller/` (ledger, recipe)."""
    return {p: d for p, d in digests(folder).items() if not p.startswith("controller/")}


def shard_bytes(folder: Path, k: int) -> bytes:
    return (folder / f"shard_{k:02d}" / "adapter_model.safetensors").read_bytes()


def lfs_uploads_since(hub_server, start: int) -> int:
    return sum(1 for r in hub_server.request_log[start:] if "/lfs-upload/" in r.path and r.method == "PUT")


def local_predictions(runs, version: str) -> np.ndarray:
    rec = APARecommender.from_pretrained(runs[version], base_model=runs["base"], tokenizer=runs["tok"])
    return rec.predict(runs["ds"]["test"])


# ---------------------------------------------------------------------------------------------------- push and pull


def test_push_versions_keep_history_and_pull_each_by_revision(runs, hub_server, api, repo_id, tmp_path):
    k = runs["shard"]
    before = {v: digests(runs[v]) for v in ("v1", "v2")}
    first = hub.push(runs["v1"], repo_id, metrics={"auc": 0.61})
    assert (first.version, first.tag, first.created_commit, first.purged) == (1, "v1", True, [])
    assert {"apa_config.json", "apa_state.safetensors", "README.md", "unlearning_versions.json",
            "shard_00/adapter_model.safetensors", "shard_02/adapter_config.json"} <= set(first.uploaded)  # fmt: skip

    start = len(hub_server.request_log)
    second = hub.push(runs["v2"], repo_id, keep_history=True)
    # One commit for the version, parented on v1, holding only what the forget event changed.
    commits = api.list_repo_commits(repo_id)
    assert [c.commit_id for c in commits[:2]] == [second.commit, first.commit]
    assert sorted(second.uploaded) == sorted([
        "README.md", "apa_config.json", "apa_state.safetensors", f"shard_{k:02d}/adapter_model.safetensors",
        "unlearning_versions.json", "receipts/000002.json",  # the forget event's receipt joins the chain
    ])  # fmt: skip
    assert second.deleted == [] and second.purged == []
    assert lfs_uploads_since(hub_server, start) == 2  # the retrained shard and the aggregation state, nothing else
    tree = {v: {f.path: f.blob_id for f in api.list_repo_tree(repo_id, recursive=True, revision=v)
                if hasattr(f, "blob_id")} for v in ("v1", "v2")}  # fmt: skip
    changed = {p for p in tree["v2"] if tree["v1"].get(p) != tree["v2"][p]}
    assert changed == set(second.uploaded)
    refs = api.list_repo_refs(repo_id)
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": first.commit, "v2": second.commit}

    versions = hub.list_versions(repo_id)
    assert [(v.tag, v.status, v.event, v.commit) for v in versions] == [
        ("v1", "available", "train", first.commit),
        ("v2", "available", "forget", second.commit),
    ]
    assert versions[1].shards_retrained == [k] and versions[1].users_removed == 1
    assert versions[0].metrics == {"auc": 0.61} and versions[1].date
    assert not hasattr(versions[1], "samples_removed")  # exact sample counts stay with the controller

    # Pull each version into a fresh directory: the same adapters, byte for byte, and the same predictions.
    for version in ("v1", "v2"):
        out = hub.pull(repo_id, version, tmp_path / f"pulled-{version}")
        local = public_digests(runs[version])
        pulled = digests(out)
        assert {p: local[p] for p in local} == {p: pulled[p] for p in local}
        rec = APARecommender.from_pretrained(repo_id, revision=version, base_model=runs["base"],
                                             cache_dir=tmp_path / f"cache-{version}")  # fmt: skip
        assert rec.version == int(version[1:])
        np.testing.assert_array_equal(rec.predict(runs["ds"]["test"]), local_predictions(runs, version))

    # Each shard is a plain PEFT adapter: loadable from the repo by subfolder and revision.
    base = runs["base"]
    peft_model = PeftModel.from_pretrained(base, repo_id, subfolder=f"shard_{k:02d}", revision="v1",
                                           cache_dir=tmp_path / "peft-cache")  # fmt: skip
    try:
        state = get_peft_model_state_dict(peft_model)
    finally:
        peft_model.unload()
    on_disk = load_file(str(runs["v1"] / f"shard_{k:02d}" / "adapter_model.safetensors"))
    assert set(state) == set(on_disk) and all(torch.equal(state[n], on_disk[n]) for n in on_disk)
    assert {v: digests(runs[v]) for v in ("v1", "v2")} == before  # pushing and pulling only read the runs


def test_default_purge_after_forget_leaves_no_weights_that_saw_the_user(runs, hub_server, api, repo_id, tmp_path):
    k = runs["shard"]
    hub.push(runs["v1"], repo_id)
    old_shard = shard_bytes(runs["v1"], k)
    assert hub_server.is_reachable(old_shard, repo_id)
    result = hub.push(runs["v2"], repo_id)
    assert result.purged == ["v1"]

    # No revision, tag or commit still holds the pre-forget weights of the retrained shard, nor its aggregation state.
    assert not hub_server.is_reachable(old_shard, repo_id)
    assert not hub_server.is_reachable((runs["v1"] / "apa_state.safetensors").read_bytes(), repo_id)
    # The squashed head, then the commit that records the purge once it is complete.
    commits = api.list_repo_commits(repo_id)
    assert commits[0].commit_id == result.commit and len(commits) == 2 and commits[0].title == "Earlier versions purged"
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(repo_id).tags] == [("v2", result.commit)]
    # Unaffected shards keep their v1 weights (same bytes), and v2 loads and predicts as the local model does.
    for j in range(3):
        if j != k:
            assert shard_bytes(runs["v1"], j) == shard_bytes(runs["v2"], j)
            assert hub_server.is_reachable(shard_bytes(runs["v1"], j), repo_id)
    rec = APARecommender.from_pretrained(repo_id, revision="v2", base_model=runs["base"], cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(rec.predict(runs["ds"]["test"]), local_predictions(runs, "v2"))

    # The lineage survives: v1 is listed as purged, and asking for it says why it is gone.
    versions = hub.list_versions(repo_id)
    assert [(v.tag, v.status, v.event) for v in versions] == [("v1", "purged", "train"), ("v2", "available", "forget")]
    with pytest.raises(HubRevisionNotFoundError, match="purged after a deletion request.*Available versions: v2"):
        hub.pull(repo_id, "v1", tmp_path / "gone")
    assert not (tmp_path / "gone").exists()

    # Pushing the same version again changes nothing on the Hub.
    again = hub.push(runs["v2"], repo_id)
    assert not again.created_commit and again.commit == result.commit and again.purged == []


def test_no_raw_id_of_any_user_is_pushed(runs, hub_server, repo_id):
    hub.push(runs["v1"], repo_id)
    hub.push(runs["v2"], repo_id, keep_history=True)
    blobs = b"".join(hub_server.reachable_blobs(repo_id).values())
    ds = runs["ds"]["train"]
    user = runs["user"]
    samples = [s for s, u in zip(ds["sample_id"], ds["user_id"]) if u == user]
    assert user.encode() not in blobs and not any(s.encode() in blobs for s in samples)
    assert b"person-" not in blobs  # nobody's raw id (every test user id is "person-...-qzx")
    # Not even salted digests: the ledger stays with the controller (published digest lists, aligned with the public
    # data, named the forgotten users), and so does the salt.
    state = read_apa_directory(runs["v1"])
    salt = load_or_create_salt(state.ledger["salt_id"], runs["salts"])
    ledger = ShardLedger.from_dict(state.ledger, salt)
    assert not any(ledger.hash_user(u).encode() in blobs for u in set(ds["user_id"]))
    assert not any(ledger.hash_sample(s).encode() in blobs for s in ds["sample_id"])
    assert salt.hex().encode() not in blobs and salt not in blobs and b'"ledger"' not in blobs


def test_trainer_and_recommender_push_to_hub(runs, hub_server, api, repo_id, tmp_path):
    # A recommender loaded from a directory pushes that directory; one built in memory is saved to a temporary one.
    loaded = APARecommender.from_pretrained(runs["v1"], base_model=runs["base"], tokenizer=runs["tok"])
    assert loaded.push_to_hub(repo_id, private=True).tag == "v1"
    assert api.repo_info(repo_id).private
    with pytest.raises(HubRepoNotFoundError, match="token cannot see it"):
        hub.list_versions(repo_id, token=False)  # anonymous readers cannot see a private repo

    before = digests(runs["v2"])
    result = runs["trainer"].push_to_hub(repo_id=repo_id)  # the trainer's output_dir holds its current version (v2)
    assert (result.tag, result.purged) == ("v2", ["v1"])
    assert f"shard_{runs['shard']:02d}/adapter_model.safetensors" in result.uploaded
    after = digests(runs["v2"])  # push_to_hub saves first, as Trainer's does: only the local card is (re)written
    assert after.pop("README.md") and {p: d for p, d in before.items() if p != "README.md"} == after

    in_memory = APARecommender(runs["base"], runs["tok"], loaded.state)
    other = f"user/apa-{uuid.uuid4().hex[:8]}"
    assert in_memory.push_to_hub(other).tag == "v1"
    pulled = hub.pull(other, "v1", tmp_path / "pulled")
    for k in range(3):
        assert shard_bytes(pulled, k) == shard_bytes(runs["v1"], k)


# ---------------------------------------------------------------------------------------------------- model cards


def test_model_card_of_a_real_run_is_valid_hub_yaml(runs, api, repo_id):
    hub.push(runs["v1"], repo_id, metrics={"auc": 0.61, "logloss": 0.69}, datasets=["user/ml-100k"])
    hub.push(runs["v2"], repo_id, metrics={"auc": 0.6})
    card = ModelCard.load(repo_id)
    card.validate()  # the Hub's YAML validation (the test server's /api/validate-yaml)
    front = yaml.safe_load(card.content.split("---")[1])
    assert front["library_name"] == "peft"
    assert front["tags"] == ["hf_recunlearn", "recommendation", "machine-unlearning", "apa"]
    assert front["metrics"] == ["auc"] and "datasets" not in front
    assert "base_model" not in front  # the tiny test base is not a Hub model
    text = card.text
    assert "arXiv:2404.10327" in text and "Exact and Efficient Unlearning" in text
    k = runs["shard"]
    assert "| v1 | train | 0, 1, 2 | 0 | purged |" in text
    assert f"| v2 | forget | {k} | 1 | available |" in text
    assert f'APARecommender.from_pretrained("{repo_id}", revision="v2"' in text
    assert 'subfolder="shard_00", revision="v2"' in text
    assert api.model_info(repo_id).card_data.library_name == "peft"

    # A Hub base model goes in the metadata.
    rendered = model_card("apa", repo_id=repo_id, versions=[{"tag": "v1", "version": 1, "event": "train"}],
                          base_model="Qwen/Qwen2.5-0.5B", apa_meta={"num_shards": 3})  # fmt: skip
    rendered.validate()
    assert yaml.safe_load(str(rendered).split("---")[1])["base_model"] == "Qwen/Qwen2.5-0.5B"


def test_checkpoints_of_a_run_are_never_published(runs, hub_server, api, tmp_path):
    """An unlearning run's `checkpoint-*` holds weights from before it finished forgetting: like Trainer, never pushed."""
    k = runs["shard"]
    original, unlearned = runs["v1"] / f"shard_{k:02d}", runs["v2"] / f"shard_{k:02d}"
    folder = tmp_path / "e2urec"
    shutil.copytree(unlearned, folder)
    shutil.copytree(original, folder / "checkpoint-3")  # mid-run weights, still trained on the forgotten data
    (folder / "_scratch.json").write_text("{}")
    repo_id = f"user/ckpt-{uuid.uuid4().hex[:8]}"
    hub.push_adapter(folder, repo_id, method="e2urec", users_removed=1)
    remote = api.list_repo_files(repo_id)
    assert "adapter_model.safetensors" in remote
    assert not [f for f in remote if f.startswith(("checkpoint-", "_"))]
    assert not hub_server.is_reachable(shard_bytes(runs["v1"], k), repo_id)


def test_adapter_repo_versions_card_and_purge(runs, hub_server, api, tmp_path):
    repo_id = f"user/e2urec-{uuid.uuid4().hex[:8]}"
    k = runs["shard"]
    original, unlearned = runs["v1"] / f"shard_{k:02d}", runs["v2"] / f"shard_{k:02d}"
    first = hub.push_adapter(original, repo_id, method="tallrec", metrics={"auc": 0.6})
    assert first.tag == "v1"
    with pytest.raises(HubConflictError, match="'tallrec' repo, not 'e2urec'"):
        hub.push_adapter(unlearned, repo_id, method="e2urec")

    repo_id = f"user/e2urec-{uuid.uuid4().hex[:8]}"
    hub.push_adapter(original, repo_id, method="e2urec", event="train")
    second = hub.push_adapter(unlearned, repo_id, method="e2urec", metrics={"auc": 0.58}, users_removed=1)
    assert (second.tag, second.purged) == ("v2", ["v1"])
    assert not hub_server.is_reachable(shard_bytes(runs["v1"], k), repo_id)
    assert [(v.tag, v.status, v.event) for v in hub.list_versions(repo_id)] == [
        ("v1", "purged", "train"), ("v2", "available", "unlearn")]  # fmt: skip
    card = ModelCard.load(repo_id)
    card.validate()
    front = yaml.safe_load(card.content.split("---")[1])
    assert front["library_name"] == "peft" and "e2urec" in front["tags"] and "machine-unlearning" in front["tags"]
    assert "arXiv:2403.03536" in card.text and "| v2 | unlearn | - | 1 | available |" in card.text
    peft_model = PeftModel.from_pretrained(runs["base"], repo_id, revision="v2", cache_dir=tmp_path / "c")
    try:
        state = get_peft_model_state_dict(peft_model)
    finally:
        peft_model.unload()
    expected = load_file(str(unlearned / "adapter_model.safetensors"))
    assert all(torch.equal(state[n], expected[n]) for n in expected)
    assert hub.pull(repo_id, "v2", tmp_path / "out").joinpath("adapter_model.safetensors").read_bytes() == (
        unlearned / "adapter_model.safetensors").read_bytes()  # fmt: skip


def test_trainer_push_to_hub_is_a_versioned_push(tiny_data, hub_server, api, tmp_path):
    """`Trainer.push_to_hub`'s contract (hub_model_id, CommitInfo, blocking), through the versioned push path."""
    from huggingface_hub import CommitInfo

    from hf_recunlearn.models import build_tiny_model
    from hf_recunlearn.trainer import E2URecConfig, E2URecTrainer, RecConfig, RecTrainer

    tok, split = tiny_data["tokenizer"], tiny_data["split"]
    repo = f"user/e2urec-{uuid.uuid4().hex[:8]}"
    args = E2URecConfig(output_dir=str(tmp_path / "forgot"), hub_model_id=repo, num_train_epochs=1, augment_epochs=1,
                        per_device_train_batch_size=4, stopping="fixed", disable_tqdm=True, use_cpu=True,
                        report_to="none")  # fmt: skip
    trainer = E2URecTrainer(build_tiny_model(tok, "causal", "tiny"), args=args, train_dataset=tiny_data["train"],
                            forget_dataset=split.forget, processing_class=tok)  # fmt: skip
    trainer.train()
    info = trainer.push_to_hub(license="apache-2.0", dataset_name="user/ml-1m")
    assert isinstance(info, CommitInfo) and str(info) == info.commit_url and info.commit_url.endswith(info.oid)
    assert (info.repo_id, info.tag) == (repo, "v1")
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(repo).tags] == [("v1", info.oid)]
    users = len(set(split.forget["user_id"]))
    assert [(v.tag, v.status, v.event, v.users_removed) for v in hub.list_versions(repo)] == [
        ("v1", "available", "unlearn", users)]  # fmt: skip
    files = set(api.list_repo_files(repo, revision="v1"))
    assert {"adapter_model.safetensors", "unlearning_versions.json", "receipts/000001.json"} <= files
    assert not any(f.startswith("controller/") for f in files)
    card = ModelCard.load(repo)
    card.validate()
    assert (card.data.license, card.data.datasets, card.data.library_name) == ("apache-2.0", ["user/ml-1m"], "peft")
    assert "e2urec" in card.data.tags and "unlearning" in card.data.tags  # the trainer's own tags too
    assert f"num forgotten users: `{users}`" in card.text and "## Method hyperparameters" in card.text
    assert not any(f"`{u}`" in card.text for u in set(split.forget["user_id"]))
    # The local card (save_model) is the library's, from the same template; PEFT's boilerplate is gone.
    local = (tmp_path / "forgot" / "README.md").read_text()
    assert "### Framework versions" not in local and "## Forget request" in local

    # The same saved model again is no new version; `blocking=False` returns a Future of the result.
    again = trainer.push_to_hub(blocking=False, license="apache-2.0", dataset_name="user/ml-1m").result()
    assert (again.tag, again.created_commit) == ("v1", False), again.uploaded

    # The recommender trainer pushes the same way (event "train"); `revision` other than main is refused.
    rec_repo = f"user/rec-{uuid.uuid4().hex[:8]}"
    rec = RecTrainer(build_tiny_model(tok, "causal", "tiny"), RecConfig(output_dir=str(tmp_path / "rec"),
                     hub_model_id=rec_repo, use_cpu=True, report_to="none"), train_dataset=tiny_data["train"],
                     processing_class=tok)  # fmt: skip
    with pytest.raises(ValueError, match="tag"):
        rec.push_to_hub(revision="dev")
    assert rec.push_to_hub().tag == "v1"
    assert [(v.tag, v.event) for v in hub.list_versions(rec_repo)] == [("v1", "train")]
    assert "tallrec" in ModelCard.load(rec_repo).data.tags


# ---------------------------------------------------------------------------------------------------- failures


def test_missing_or_invalid_token(runs, api, repo_id, monkeypatch):
    before = digests(runs["v1"])
    with pytest.raises(HubAuthError, match="HF_TOKEN"):
        hub.push(runs["v1"], repo_id, token="hf_wrong")
    with monkeypatch.context() as env:
        env.delenv("HF_TOKEN")
        with pytest.raises(HubAuthError, match="No Hugging Face token.*hf auth login"):
            hub.push(runs["v1"], repo_id)
    assert not api.repo_exists(repo_id)
    assert digests(runs["v1"]) == before


def test_repo_and_revision_not_found(runs, repo_id, tmp_path):
    with pytest.raises(HubRepoNotFoundError, match="not found"):
        hub.list_versions("user/does-not-exist")
    with pytest.raises(HubRepoNotFoundError):
        hub.pull("user/does-not-exist", "v1", tmp_path / "a")
    with pytest.raises(HubRepoNotFoundError):
        APARecommender.from_pretrained("user/does-not-exist", base_model=runs["base"], cache_dir=tmp_path / "c")
    hub.push(runs["v1"], repo_id)
    with pytest.raises(HubRevisionNotFoundError, match="'v9'.*does not exist.*Available versions: v1"):
        hub.pull(repo_id, "v9", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match="local directory"):
        APARecommender.from_pretrained(runs["v1"], revision="v1")


def test_a_damaged_apa_version_is_neither_pushed_nor_pulled(runs, hub_server, api, repo_id, tmp_path):
    """
    APA's checksums guard both ends, through the Hub layer's version format (`hf_recunlearn.apa_hub`): a shard
    damaged on disk is refused before any request; a shard replaced on the Hub is refused by `pull` before the
    version lands in `output_dir` (or is returned from the cache).
    """
    damaged = tmp_path / "damaged"
    shutil.copytree(runs["v1"], damaged)
    weights = damaged / "shard_01" / "adapter_model.safetensors"
    flipped = bytearray(weights.read_bytes())
    flipped[-1] ^= 0xFF  # one bit of a weight: still a readable safetensors file
    weights.write_bytes(bytes(flipped))
    refused = r"shard_01/adapter_model\.safetensors' is missing or does not match its sha256 in apa_config\.json"
    start = len(hub_server.request_log)
    with pytest.raises(ValueError, match=refused):
        hub.push(damaged, repo_id)
    with pytest.raises(ValueError, match=refused):
        hub.export_version(damaged, repo_id, tmp_path / "export")
    assert len(hub_server.request_log) == start and not (tmp_path / "export").exists()  # no request, no file

    first = hub.push(runs["v1"], repo_id)
    api.upload_file(path_or_fileobj=bytes(flipped), path_in_repo="shard_01/adapter_model.safetensors",
                    repo_id=repo_id, commit_message="a shard replaced without its checksum")  # fmt: skip
    with pytest.raises(ValueError, match=refused):
        hub.pull(repo_id, "main", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists() and not list(tmp_path.glob(".pulled.*"))
    with pytest.raises(ValueError, match=refused):
        hub.pull(repo_id, "main", cache_dir=tmp_path / "cache")
    # The tag still points to the intact version, which pulls byte for byte.
    assert api.list_repo_refs(repo_id).tags[0].target_commit == first.commit
    pulled = hub.pull(repo_id, "v1", tmp_path / "v1")
    assert shard_bytes(pulled, 1) == shard_bytes(runs["v1"], 1)


def test_concurrent_push_is_refused_and_changes_nothing(runs, hub_server, api, repo_id):
    hub.push(runs["v1"], repo_id)
    before = digests(runs["v2"])
    racer = {}

    def another_push_lands_first():  # a real commit by another writer, between our read of the head and our commit
        racer["oid"] = api.upload_file(path_or_fileobj=b"notes", path_in_repo="NOTES.md", repo_id=repo_id).oid

    with pytest.raises(HubConflictError, match="Another push .* landed.*Pull the latest version first"):
        hub.push(runs["v2"], repo_id, _before_commit=another_push_lands_first)
    assert api.repo_info(repo_id).sha == racer["oid"]
    assert not hub_server.is_reachable(shard_bytes(runs["v2"], runs["shard"]), repo_id)
    assert [t.name for t in api.list_repo_refs(repo_id).tags] == ["v1"]
    assert digests(runs["v2"]) == before

    # The Hub ahead of the local directory: refused before anything is sent.
    other = f"user/apa-{uuid.uuid4().hex[:8]}"
    hub.push(runs["v2"], other, keep_history=True)
    head = api.repo_info(other).sha
    with pytest.raises(HubConflictError, match="is at v2 .* holds v1: the Hub is ahead. Pull"):
        hub.push(runs["v1"], other)
    assert api.repo_info(other).sha == head


def test_network_error_mid_push_leaves_no_half_version(runs, hub_server, api, repo_id):
    hub.push(runs["v1"], repo_id)
    head = api.repo_info(repo_id).sha
    before = digests(runs["v2"])
    new_shard = shard_bytes(runs["v2"], runs["shard"])

    hub_server.fail_next("/lfs-upload/", status=403)  # not retried by the client
    with pytest.raises(HubPushError, match="no commit was made"):
        hub.push(runs["v2"], repo_id)
    fault = hub_server.fail_next("/commit/", drop_connection=True)  # the connection dies during the commit request
    with pytest.raises(HubPushError, match="Network error.*re-run the same push"):
        hub.push(runs["v2"], repo_id)
    assert fault.triggered == 1
    assert api.repo_info(repo_id).sha == head and not hub_server.is_reachable(new_shard, repo_id)
    assert [t.name for t in api.list_repo_refs(repo_id).tags] == ["v1"]
    assert digests(runs["v2"]) == before

    # Re-running the push finishes the job.
    assert hub.push(runs["v2"], repo_id).tag == "v2" and hub_server.is_reachable(new_shard, repo_id)


# ---------------------------------------------------------------------------------------------------- CLI


def test_cli_push_versions_pull(runs, hub_server, repo_id, tmp_path, capsys):
    from hf_recunlearn.cli import main, resolve_push_source
    from hf_recunlearn.runs import RunDir, RunInfo

    run = tmp_path / "run"
    shutil.copytree(runs["v1"], run / "apa")
    RunDir(run).save_info(RunInfo(data="synthetic", preset="apa", template="e2urec", base_model="builtin",
                                  metrics={"apa": {"auc": 0.625, "note": "text is skipped"}}))  # fmt: skip
    assert resolve_push_source(run) == ("apa", run / "apa")
    assert resolve_push_source(runs["v1"] / "shard_00") == ("e2urec", runs["v1"] / "shard_00")

    assert main(["push", "--run", str(run), "--repo-id", repo_id, "--json", str(tmp_path / "p1.json"),
                 "--license", "mit", "--datasets", "user/ml-1m", "--tags", "movies", "--library_name", "peft",
                 "--base_model", "org/base"]) == 0  # fmt: skip
    first = json.loads((tmp_path / "p1.json").read_text())
    assert (first["method"], first["tag"], first["version"]) == ("apa", "v1", 1)
    data = ModelCard.load(repo_id).data  # the card's metadata, set from the command line
    assert (data.license, data.datasets, data.library_name, data.base_model) == ("mit", ["user/ml-1m"], "peft", "org/base")
    assert data.tags[-1] == "movies"
    shutil.rmtree(run / "apa")
    shutil.copytree(runs["v2"], run / "apa")
    assert main(["push", "--run", str(run), "--repo-id", repo_id, "--keep-history"]) == 0

    assert main(["versions", "--repo-id", repo_id, "--json", str(tmp_path / "versions.json")]) == 0
    listed = json.loads((tmp_path / "versions.json").read_text())["versions"]
    assert [(v["tag"], v["status"], v["event"]) for v in listed] == [("v1", "available", "train"),
                                                                     ("v2", "available", "forget")]  # fmt: skip
    assert listed[0]["metrics"] == {"auc": 0.625}

    assert main(["pull", "--repo-id", repo_id, "--revision", "v1", "--output-dir", str(tmp_path / "v1")]) == 0
    assert public_digests(runs["v1"]) == {p: d for p, d in digests(tmp_path / "v1").items()
                                          if p in public_digests(runs["v1"])}  # fmt: skip

    capsys.readouterr()
    assert main(["pull", "--repo-id", repo_id, "--revision", "v9", "--output-dir", str(tmp_path / "v9")]) == 2
    assert "'v9'" in capsys.readouterr().err
    assert main(["push", "--run", str(tmp_path / "v1" / "shard_00"), "--repo-id", repo_id, "--method", "apa"]) == 2
    assert "holds no 'apa' model" in capsys.readouterr().err


def test_an_invalid_repo_id_is_refused_by_huggingface_hubs_rule_with_the_argument_named(tmp_path):
    """`validate_repo_id` decides, before any request; the error names `repo_id` and the expected form."""
    from hf_recunlearn.models import is_hub_model_id

    for bad in ("bad id!!", "user/a--b", "user/name.", "a" * 97):
        with pytest.raises(ValueError, match=r"`repo_id` .* is not a valid Hub repo id .*namespace/name"):
            hub.list_versions(bad, token=False)
        assert not is_hub_model_id(bad)
    assert is_hub_model_id("Qwen/Qwen2.5-0.5B") and is_hub_model_id("gpt2")
    assert not is_hub_model_id(str(tmp_path)) and not is_hub_model_id("./model")


def test_export_version_writes_what_a_first_push_publishes_and_all_or_nothing(runs, hub_server, api, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    """The dry run of a push: the same files as a first push, written whole or not at all, never over other files."""
    import hf_recunlearn.controller as controller

    adapter = runs["v1"] / f"shard_{runs['shard']:02d}"
    out = tmp_path / "export"
    card = hub.export_version(adapter, "user/exported", out, method="tallrec", metrics={"auc": 0.6})
    repo_id = f"user/export-{uuid.uuid4().hex[:8]}"
    hub.push_adapter(adapter, repo_id, method="tallrec", metrics={"auc": 0.6})
    remote = {f for f in api.list_repo_files(repo_id) if f != ".gitattributes"}
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == remote
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    assert (out / "README.md").read_text() == str(model_card(**card))  # the recorded inputs render the card again

    # Interrupted before the switch: no half export, no staging folder left beside it.
    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(controller, "swap_in", crash)
    with pytest.raises(KeyboardInterrupt):
        hub.export_version(adapter, "user/exported", tmp_path / "cut", method="tallrec")
    assert not (tmp_path / "cut").exists() and not list(tmp_path.glob(".cut.*"))
    monkeypatch.undo()
    # A folder with files in it is refused, untouched.
    before = digests(out)
    with pytest.raises(FileExistsError, match="`output_dir`"):
        hub.export_version(adapter, "user/exported", out, method="tallrec")
    assert digests(out) == before


def test_a_killed_export_leaves_nothing_the_next_command_does_not_clear(runs, tmp_path, monkeypatch):
    """SIGKILL after the export is staged, before its switch: the next command removes the dead writer's folder."""
    import os
    import signal

    from hf_recunlearn.controller import CRASH_ENV, recover_swap, staging_dir

    adapter = runs["v1"] / f"shard_{runs['shard']:02d}"
    out = tmp_path / "export"
    pid = os.fork()
    if pid == 0:  # a real process, killed by the crash hook (no Python cleanup runs)
        os.environ[CRASH_ENV] = "export:staged"
        try:
            hub.export_version(adapter, "user/exported", out, method="tallrec")
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    left = list(tmp_path.glob(".export.staging-*"))
    assert not out.exists() and len(left) == 1 and (left[0] / "adapter_model.safetensors").is_file()

    live = staging_dir(out)  # a write in progress in a live process is never taken away from it
    recover_swap(out)
    assert not left[0].exists() and live.is_dir()
    live.rmdir()
    hub.export_version(adapter, "user/exported", out, method="tallrec")
    assert (out / "adapter_model.safetensors").read_bytes() == (adapter / "adapter_model.safetensors").read_bytes()
    assert not list(tmp_path.glob(".export.*"))
