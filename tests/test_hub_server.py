"""
The test Hub server against the real, unmodified `huggingface_hub` client (no mocks): every call below is the one
the library makes against huggingface.co.
"""

import hashlib
import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from hub_server import HubServer, find_free_port, git_blob_oid


CONFIG = b'{"peft_type": "LORA", "r": 8}'


@pytest.fixture
def api(hub_server):
    return HfApi()


@pytest.fixture
def repo_id(api):
    """A fresh model repo (the session's server is shared, so every test gets its own)."""
    repo_id = f"user/test-{uuid.uuid4().hex[:8]}"
    api.create_repo(repo_id)
    return repo_id


def weights(seed: int) -> bytes:
    """Stand-in for a safetensors file: binary, so it must go through LFS."""
    return hashlib.sha256(str(seed).encode()).digest() * 64


def push_version(api, repo_id, config: bytes, adapter: bytes, message: str, parent_commit=None):
    return api.create_commit(
        repo_id,
        [
            CommitOperationAdd("shard_00/adapter_config.json", config),
            CommitOperationAdd("shard_00/adapter_model.safetensors", adapter),
        ],
        commit_message=message,
        parent_commit=parent_commit,
    )


def head(api, repo_id, branch="main"):
    return api.repo_info(repo_id, revision=branch).sha


def test_create_repo_returns_url_and_exist_ok_accepts_existing(api, hub_server):
    url = api.create_repo("created")  # no namespace: the token's user
    assert url.repo_id == "user/created"
    assert url == f"{hub_server.url}/user/created"

    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo("user/created")
    assert err.value.response.status_code == 409
    assert api.create_repo("user/created", exist_ok=True).repo_id == "user/created"

    # A new repo starts like on the Hub: one commit holding the default `.gitattributes`.
    assert api.list_repo_files("user/created") == [".gitattributes"]
    assert len(api.list_repo_commits("user/created")) == 1

    dataset = api.create_repo("user/created", repo_type="dataset")
    assert dataset.repo_type == "dataset"
    assert api.repo_exists("user/created", repo_type="dataset")
    api.delete_repo("user/created", repo_type="dataset")
    assert not api.repo_exists("user/created", repo_type="dataset")
    assert api.repo_exists("user/created")


def test_one_commit_with_regular_and_lfs_files_downloads_byte_identical(api, hub_server, repo_id, tmp_path):
    adapter = weights(1)
    before = len(api.list_repo_commits(repo_id))
    info = push_version(api, repo_id, CONFIG, adapter, "Version 1")
    api.create_tag(repo_id, tag="v1", revision=info.oid)

    assert len(api.list_repo_commits(repo_id)) == before + 1  # one atomic commit for both files
    assert api.list_repo_commits(repo_id)[0].commit_id == info.oid
    assert set(api.list_repo_files(repo_id)) == {
        ".gitattributes",
        "shard_00/adapter_config.json",
        "shard_00/adapter_model.safetensors",
    }
    files = {f.path: f for f in api.list_repo_tree(repo_id, "shard_00")}
    assert files["shard_00/adapter_config.json"].lfs is None
    assert files["shard_00/adapter_config.json"].blob_id == git_blob_oid(CONFIG)
    assert files["shard_00/adapter_model.safetensors"].lfs.sha256 == hashlib.sha256(adapter).hexdigest()
    assert files["shard_00/adapter_model.safetensors"].size == len(adapter)
    refs = api.list_repo_refs(repo_id)
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", info.oid)]
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", info.oid)]

    # PEFT's layout, loaded the way `PeftModel.from_pretrained(base, repo, subfolder=..., revision=...)` does.
    for revision in ("v1", info.oid):
        cache = tmp_path / revision
        config_path = hf_hub_download(repo_id, "adapter_config.json", subfolder="shard_00", revision=revision,
                                      cache_dir=cache)  # fmt: skip
        adapter_path = hf_hub_download(repo_id, "adapter_model.safetensors", subfolder="shard_00",
                                       revision=revision, cache_dir=cache)  # fmt: skip
        assert open(config_path, "rb").read() == CONFIG
        assert open(adapter_path, "rb").read() == adapter

    snapshot = snapshot_download(repo_id, revision="v1", cache_dir=tmp_path / "snapshot")
    assert open(os.path.join(snapshot, "shard_00", "adapter_model.safetensors"), "rb").read() == adapter
    assert os.path.basename(snapshot) == info.oid

    # The LFS download went through a signed URL on the storage origin, without the token.
    lfs_path = f"/lfs/{hashlib.sha256(adapter).hexdigest()}"
    lfs_requests = [r for r in hub_server.request_log if r.path.startswith(lfs_path)]
    assert lfs_requests and all(r.status == 200 for r in lfs_requests)


def test_files_metadata_and_paths_info(api, repo_id):
    push_version(api, repo_id, CONFIG, weights(2), "Version 1")
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert siblings["shard_00/adapter_model.safetensors"].lfs.size == len(weights(2))
    assert siblings["shard_00/adapter_config.json"].blob_id == git_blob_oid(CONFIG)

    infos = api.get_paths_info(repo_id, ["shard_00", "shard_00/adapter_config.json", "missing.txt"])
    assert [(type(i).__name__, i.path) for i in infos] == [
        ("RepoFolder", "shard_00"),
        ("RepoFile", "shard_00/adapter_config.json"),
    ]
    assert api.file_exists(repo_id, "shard_00/adapter_config.json")
    assert not api.file_exists(repo_id, "shard_01/adapter_config.json")


def test_unchanged_files_are_not_recommitted(api, repo_id):
    first = push_version(api, repo_id, CONFIG, weights(3), "Version 1")
    second = push_version(api, repo_id, CONFIG, weights(3), "Same again")
    assert second.oid == first.oid  # preupload reported both files unchanged, so the client made no commit


def test_upload_mode_follows_gitattributes_size_and_content(api, repo_id):
    api.create_commit(
        repo_id,
        [
            CommitOperationAdd("notes.txt", b"plain text"),
            CommitOperationAdd("weights.bin", b"not even binary"),  # `*.bin` is tracked by LFS in .gitattributes
            CommitOperationAdd("raw.dat", b"\x00\x01binary"),  # binary content, whatever the name
            CommitOperationAdd("big.txt", b"a" * (10 * 1024 * 1024)),  # 10 MiB and more always go through LFS
            CommitOperationAdd("empty.safetensors", b""),  # empty files cannot be LFS (the client decides)
        ],
        commit_message="Files of every kind",
    )
    lfs = {f.path: f.lfs is not None for f in api.list_repo_tree(repo_id)}
    assert lfs == {".gitattributes": False, "notes.txt": False, "weights.bin": True, "raw.dat": True,
                   "big.txt": True, "empty.safetensors": False}  # fmt: skip


def test_invalid_commit_changes_nothing(api, hub_server, repo_id):
    before = head(api, repo_id)
    with pytest.raises(RemoteEntryNotFoundError):
        api.create_commit(
            repo_id,
            [CommitOperationAdd("new.txt", b"bytes of a rejected commit"), CommitOperationDelete("missing.txt")],
            commit_message="Add one, delete a file that is not there",
        )
    assert head(api, repo_id) == before
    assert not hub_server.is_stored(b"bytes of a rejected commit")


def test_tags_create_delete(api, repo_id):
    info = push_version(api, repo_id, CONFIG, weights(4), "Version 1")
    api.create_tag(repo_id, tag="v1")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_tag(repo_id, tag="v1")
    assert err.value.response.status_code == 409
    api.create_tag(repo_id, tag="v1", exist_ok=True)
    assert api.repo_info(repo_id, revision="v1").sha == info.oid

    api.delete_tag(repo_id, tag="v1")
    assert api.list_repo_refs(repo_id).tags == []
    with pytest.raises(RevisionNotFoundError):
        api.repo_info(repo_id, revision="v1")
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(repo_id, tag="v1")


def test_branches_and_url_encoded_pull_request_revisions(api, repo_id, tmp_path):
    first = push_version(api, repo_id, CONFIG, weights(5), "Version 1")
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"dev only", path_in_repo="notes.txt", repo_id=repo_id, revision="dev")
    assert "notes.txt" in api.list_repo_files(repo_id, revision="dev")
    assert "notes.txt" not in api.list_repo_files(repo_id)
    assert head(api, repo_id) == first.oid

    pr = api.upload_file(path_or_fileobj=b"proposal", path_in_repo="pr.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_revision == "refs/pr/1"
    path = hf_hub_download(repo_id, "pr.txt", revision="refs/pr/1", cache_dir=tmp_path)  # sent as refs%2Fpr%2F1
    assert open(path, "rb").read() == b"proposal"
    assert [r.ref for r in api.list_repo_refs(repo_id, include_pull_requests=True).pull_requests] == ["refs/pr/1"]

    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]


def test_stale_parent_commit_is_rejected_and_head_unchanged(api, hub_server, repo_id):
    v1 = push_version(api, repo_id, CONFIG, weights(6), "Version 1")
    v2 = push_version(api, repo_id, CONFIG, weights(7), "Version 2", parent_commit=v1.oid)

    with pytest.raises(HfHubHTTPError) as err:  # a concurrent writer that still believes v1 is the head
        push_version(api, repo_id, b"{}", weights(8), "Version 3", parent_commit=v1.oid)
    assert err.value.response.status_code == 412
    assert head(api, repo_id) == v2.oid
    assert not hub_server.is_reachable(weights(8))


def test_concurrent_pushes_from_the_same_parent_land_exactly_once(api, hub_server, repo_id):
    parent = head(api, repo_id)
    barrier = threading.Barrier(4)

    def push(seed):
        barrier.wait()
        try:
            return push_version(api, repo_id, CONFIG, weights(seed), f"Push {seed}", parent_commit=parent).oid
        except HfHubHTTPError as err:
            return err.response.status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(push, range(100, 104)))
    winners = [r for r in results if isinstance(r, str)]
    assert len(winners) == 1
    assert [r for r in results if not isinstance(r, str)] == [412, 412, 412]  # the others were stale, not lost
    assert head(api, repo_id) == winners[0]
    assert [c.commit_id for c in api.list_repo_commits(repo_id)][:2] == [winners[0], parent]


def test_not_found_errors_are_typed(api, repo_id, tmp_path):
    with pytest.raises(RepositoryNotFoundError):
        api.repo_info("user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/does-not-exist", "config.json", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="v404")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="v404", cache_dir=tmp_path)
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "adapter_config.json", subfolder="shard_09", cache_dir=tmp_path)
    with pytest.raises(RemoteEntryNotFoundError):
        api.delete_file("missing.txt", repo_id)


def test_tokens_are_checked(api, hub_server, tmp_path):
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("user/never-created")
    assert err.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError, match="Invalid user token"):
        HfApi(token="hf_wrong").whoami()
    assert not api.repo_exists("user/never-created")
    assert api.whoami()["name"] == "user"

    repo_id = api.create_repo(f"user/private-{uuid.uuid4().hex[:8]}", private=True).repo_id
    assert api.repo_info(repo_id).private
    with pytest.raises(RepositoryNotFoundError):  # anonymous readers cannot see a private repo
        HfApi(token=False).repo_info(repo_id)
    with pytest.raises(HfHubHTTPError) as err:
        hf_hub_download(repo_id, ".gitattributes", token="hf_wrong", cache_dir=tmp_path)
    assert err.value.response.status_code == 401


def test_failed_commit_request_leaves_previous_head(api, hub_server, repo_id):
    v1 = push_version(api, repo_id, CONFIG, weights(9), "Version 1")
    fault = hub_server.fail_next("/commit/", status=500)
    with pytest.raises(HfHubHTTPError):
        push_version(api, repo_id, b"{}", weights(10), "Version 2")
    assert fault.triggered == 1
    assert head(api, repo_id) == v1.oid
    assert not hub_server.is_reachable(weights(10))
    assert not hub_server.is_reachable(b"{}", repo_id)
    # The LFS object was uploaded before the commit failed: stored, but no revision holds it.
    assert hub_server.is_stored(weights(10))


def test_failed_lfs_upload_aborts_the_commit(api, hub_server, repo_id):
    v1 = push_version(api, repo_id, CONFIG, weights(11), "Version 1")
    hub_server.fail_next("/lfs-upload/", status=403)  # not retried by the client, like an expired S3 signature
    first_request = len(hub_server.request_log)
    with pytest.raises(RuntimeError, match="Error while uploading"):
        push_version(api, repo_id, b"{}", weights(12), "Version 2")
    assert head(api, repo_id) == v1.oid
    assert not hub_server.is_stored(weights(12))
    assert not any("/commit/" in r.path for r in hub_server.request_log[first_request:])  # never got to commit


def test_connection_dropped_mid_lfs_upload_is_retried_by_the_client(api, hub_server, repo_id):
    fault = hub_server.fail_next("/lfs-upload/", method="PUT", drop_connection=True)
    info = push_version(api, repo_id, CONFIG, weights(13), "Version 1")
    assert fault.triggered == 1
    assert head(api, repo_id) == info.oid
    assert hub_server.is_reachable(weights(13), repo_id)


def test_super_squash_makes_old_weights_unreachable(api, hub_server, repo_id, tmp_path):
    v1 = push_version(api, repo_id, CONFIG, weights(14), "Version 1")
    api.create_tag(repo_id, tag="v1", revision=v1.oid)
    v2 = push_version(api, repo_id, CONFIG, weights(15), "Version 2: forget user 42", parent_commit=v1.oid)
    api.create_tag(repo_id, tag="v2", revision=v2.oid)

    # Tags keep history alive (v2's parent is v1): remove them before squashing, re-tag the squashed head.
    api.delete_tag(repo_id, tag="v1")
    api.delete_tag(repo_id, tag="v2")
    assert hub_server.is_reachable(weights(14), repo_id)  # still in main's history
    api.super_squash_history(repo_id, commit_message="Purge history")
    new_head = head(api, repo_id)
    api.create_tag(repo_id, tag="v2", revision=new_head)

    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["Purge history"]
    assert not hub_server.is_reachable(weights(14))
    assert hub_server.is_reachable(weights(15), repo_id)
    with pytest.raises(RevisionNotFoundError):  # the old commit is gone, not merely unlisted
        hf_hub_download(repo_id, "adapter_model.safetensors", subfolder="shard_00", revision=v1.oid,
                        cache_dir=tmp_path)  # fmt: skip
    path = hf_hub_download(repo_id, "adapter_model.safetensors", subfolder="shard_00", revision="v2",
                           cache_dir=tmp_path)  # fmt: skip
    assert open(path, "rb").read() == weights(15)

    # As on the Hub, a squash leaves the old LFS object in storage, listed by `list_lfs_files`, until it is deleted
    # permanently; then it is gone from storage too.
    assert hub_server.is_stored(weights(14), repo_id)
    old = [f for f in api.list_lfs_files(repo_id) if f.file_oid == hashlib.sha256(weights(14)).hexdigest()]
    assert len(old) == 1 and old[0].size == len(weights(14))
    api.permanently_delete_lfs_files(repo_id, old)
    assert not hub_server.is_stored(weights(14), repo_id) and not hub_server.is_stored(weights(14))
    assert [f.file_oid for f in api.list_lfs_files(repo_id)] == [hashlib.sha256(weights(15)).hexdigest()]


def test_deleting_an_lfs_file_rewrites_every_ref_that_holds_it(api, hub_server, repo_id):
    """`rewriteHistory`: a pull request (whose ref cannot be deleted) loses the deleted file, as on the Hub."""
    from huggingface_hub import CommitOperationAdd

    push_version(api, repo_id, CONFIG, weights(16), "Version 1")
    api.create_commit(repo_id, [CommitOperationAdd("notes.txt", b"n")], commit_message="PR", create_pr=True)
    assert hub_server.is_reachable(weights(16), repo_id)
    stale = [f for f in api.list_lfs_files(repo_id) if f.file_oid == hashlib.sha256(weights(16)).hexdigest()]
    api.permanently_delete_lfs_files(repo_id, stale)
    assert not hub_server.is_reachable(weights(16), repo_id) and not hub_server.is_stored(weights(16))
    files = set(api.list_repo_files(repo_id, revision="refs/pr/1"))
    assert "notes.txt" in files and "shard_00/adapter_model.safetensors" not in files


def test_delete_operations(api, hub_server, repo_id):
    push_version(api, repo_id, CONFIG, weights(16), "Version 1")
    api.upload_file(path_or_fileobj=CONFIG, path_in_repo="shard_01/adapter_config.json", repo_id=repo_id)
    api.create_commit(
        repo_id,
        [CommitOperationDelete("shard_00/adapter_model.safetensors"), CommitOperationDelete("shard_01/")],
        commit_message="Drop weights",
    )
    assert set(api.list_repo_files(repo_id)) == {".gitattributes", "shard_00/adapter_config.json"}
    assert hub_server.is_reachable(weights(16), repo_id)  # still in history until it is squashed


def test_model_card_validation_and_push(api, repo_id):
    card_data = ModelCardData(library_name="peft", base_model="tiny-llama", tags=["recommendation", "unlearning"])
    card = ModelCard.from_template(card_data, model_description="Shard adapters.")
    card.validate()
    card.push_to_hub(repo_id)
    info = api.model_info(repo_id)
    assert info.card_data.library_name == "peft"
    assert info.tags == ["recommendation", "unlearning"]
    assert ModelCard.load(repo_id).data.base_model == "tiny-llama"

    with pytest.raises(ValueError, match="library_name"):
        ModelCard("---\nlibrary_name:\n- peft\n- transformers\n---\n# Card").validate()


def test_space_and_dataset_repos(api, tmp_path):
    space_id = f"user/space-{uuid.uuid4().hex[:8]}"
    api.create_repo(space_id, repo_type="space", space_sdk="gradio")
    readme = b"---\nsdk: gradio\napp_file: app.py\n---\n# Demo\n"
    api.upload_file(path_or_fileobj=readme, path_in_repo="README.md", repo_id=space_id, repo_type="space")
    assert api.space_info(space_id).sdk == "gradio"
    path = hf_hub_download(space_id, "README.md", repo_type="space", cache_dir=tmp_path)
    assert open(path, "rb").read() == readme

    dataset_id = api.create_repo(f"user/data-{uuid.uuid4().hex[:8]}", repo_type="dataset").repo_id
    api.upload_file(path_or_fileobj=b"a,b\n1,2\n", path_in_repo="train.csv", repo_id=dataset_id, repo_type="dataset")
    path = hf_hub_download(dataset_id, "train.csv", repo_type="dataset", cache_dir=tmp_path)
    assert open(path, "rb").read() == b"a,b\n1,2\n"


def test_state_persists_in_root_across_restarts(hub_server, tmp_path):
    port = find_free_port()
    with HubServer(root=tmp_path / "hub", port=port) as server:
        api = HfApi(endpoint=server.url)
        api.create_repo("user/persisted")
        info = push_version(api, "user/persisted", CONFIG, weights(17), "Version 1")
    # Same port: the client's pooled keep-alive connections to the first server must not reach the old instance.
    with HubServer(root=tmp_path / "hub", port=port) as server:
        api = HfApi(endpoint=server.url)
        assert api.repo_info("user/persisted").sha == info.oid
        path = hf_hub_download("user/persisted", "adapter_model.safetensors", subfolder="shard_00",
                               endpoint=server.url, cache_dir=tmp_path / "cache")  # fmt: skip
        assert open(path, "rb").read() == weights(17)
        assert {r.path for r in server.request_log} >= {"/api/models/user/persisted"}  # served by this instance
