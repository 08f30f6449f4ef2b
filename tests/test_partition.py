"""Partitions (Algorithm 1, random, by user) and the shard ledger."""

import os
import stat

import numpy as np
import pytest
import torch

from hf_recunlearn.partition import (
    ShardLedger,
    balanced_semantic_partition,
    batch_representation,
    load_or_create_salt,
    make_partition,
    prompt_representations,
    random_partition,
    semantic_user_partition,
    user_partition,
)

from apa_helpers import single_thread, tiny_base, tiny_datasets, tiny_tokenizer


def clustered(n_per=(30, 20, 10), dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), dim)) * 5
    return np.concatenate([c + rng.normal(size=(n, dim)) for c, n in zip(centres, n_per)]).astype(np.float32)


def users_for(n, num_users=13, seed=0):
    rng = np.random.default_rng(seed)
    return [f"u{int(x)}" for x in rng.integers(0, num_users, size=n)]


def assert_valid(partition, n, cap):
    assert partition.assignment.shape == (n,)
    assert set(partition.assignment.tolist()) <= set(range(partition.num_shards))
    counts = np.bincount(partition.assignment, minlength=partition.num_shards)
    assert counts.sum() == n  # every sample in exactly one shard
    assert counts.max() <= cap
    shards = partition.shard_indices()
    assert sorted(np.concatenate(shards).tolist()) == list(range(n))


@pytest.mark.parametrize("cap", [None, 22, 40])
def test_semantic_partition_assigns_every_sample_once_under_the_cap(cap):
    reps = clustered()
    p = balanced_semantic_partition(reps, num_shards=3, max_shard_size=cap, seed=1)
    assert_valid(p, 60, cap or 20)
    assert p.centroids.shape == (3, 8)
    again = balanced_semantic_partition(reps, num_shards=3, max_shard_size=cap, seed=1)
    np.testing.assert_array_equal(p.assignment, again.assignment)


def test_semantic_partition_follows_algorithm_1_greedy_walk():
    # Groups of 6 and 2 samples, K = 2, cap t = 4. In the big group, 4 samples sit on its centre's direction and 2
    # stray from it (cosine distance 0.015 and 0.035): the 4 fill the big group's shard, the 2 overflow to the other.
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([0.0, 0.0, 1.0])
    big = np.stack([a, a, a, a, a + [0.0, 0.3, 0.0], a + [0.0, 0.4, 0.0]])
    small = np.stack([b + rng.normal(scale=0.01, size=3) for _ in range(2)])
    reps = np.concatenate([big, small])
    p = balanced_semantic_partition(reps, num_shards=2, max_shard_size=4, seed=0)
    big_shard = p.assignment[0]
    assert p.assignment[:4].tolist() == [big_shard] * 4
    assert p.assignment[4:].tolist() == [1 - big_shard] * 4


def test_semantic_partition_unbalanced_clusters_are_rebalanced():
    reps = clustered(n_per=(50, 5, 5))
    p = balanced_semantic_partition(reps, num_shards=3, seed=0)
    assert p.sizes() == [20, 20, 20]


def test_random_partition_is_balanced_and_seeded():
    p = random_partition(50, 4, seed=3)
    assert_valid(p, 50, 13)
    assert max(p.sizes()) - min(p.sizes()) <= 1
    np.testing.assert_array_equal(p.assignment, random_partition(50, 4, seed=3).assignment)
    assert not np.array_equal(p.assignment, random_partition(50, 4, seed=4).assignment)


def test_user_partition_keeps_each_user_in_one_shard():
    users = users_for(120)
    p = user_partition(users, 4, seed=0)
    for u in set(users):
        assert len({int(p.assignment[i]) for i, x in enumerate(users) if x == u}) == 1
    largest = max(users.count(u) for u in set(users))
    assert max(p.sizes()) - min(p.sizes()) <= largest
    assert_valid(p, 120, p.max_shard_size)
    np.testing.assert_array_equal(p.assignment, user_partition(users, 4, seed=0).assignment)


def test_user_partition_refuses_a_cap_it_cannot_meet():
    users = ["a"] * 10 + ["b"] * 2 + ["c"] * 2
    with pytest.raises(ValueError, match="max_shard_size"):
        user_partition(users, 2, max_shard_size=7)


def test_semantic_user_partition_keeps_users_whole_under_the_cap():
    reps = clustered()
    users = users_for(60, num_users=15, seed=2)
    p = semantic_user_partition(reps, users, 3, seed=0)
    for u in set(users):
        assert len({int(p.assignment[i]) for i, x in enumerate(users) if x == u}) == 1
    assert_valid(p, 60, p.max_shard_size)
    np.testing.assert_array_equal(p.assignment, semantic_user_partition(reps, users, 3, seed=0).assignment)


def test_make_partition_validates_arguments():
    with pytest.raises(ValueError, match="partition_method"):
        make_partition("kmeans", 2, num_samples=10)
    with pytest.raises(ValueError, match="reps"):
        make_partition("semantic", 2, num_samples=10)
    with pytest.raises(ValueError, match="num_shards"):
        make_partition("random", 0, num_samples=10)
    with pytest.raises(ValueError, match="too small"):
        balanced_semantic_partition(clustered(), 3, max_shard_size=10)


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_prompt_representations(arch):
    ds = tiny_datasets(num_users=10, sizes=(12, 6, 6))
    tok = tiny_tokenizer(ds)
    model = tiny_base(tok, arch)
    with single_thread():
        for kind in ("last_hidden", "mean_hidden", "embedding_mean"):
            reps = prompt_representations(model, tok, ds["train"], kind, batch_size=5)
            assert reps.shape == (12, model.config.hidden_size if arch == "causal" else model.config.d_model)
            assert np.isfinite(reps).all()
        # A prompt's representation does not depend on what it is batched (and padded) with.
        alone = prompt_representations(model, tok, ds["train"].select([3]), "last_hidden")
        batched = prompt_representations(model, tok, ds["train"], "last_hidden", batch_size=12)[3:4]
        np.testing.assert_allclose(alone, batched, atol=1e-4)
        emb = prompt_representations(model, tok, ds["train"].select([0]), "embedding_mean")
        ids = tok(ds["train"][0]["prompt"])["input_ids"]
        expected = model.get_input_embeddings().weight[ids].mean(0).detach().numpy()
        np.testing.assert_allclose(emb[0], expected, atol=1e-6)
    with pytest.raises(ValueError, match="kind"):
        batch_representation(model, {"input_ids": torch.ones(1, 2, dtype=torch.long)}, "cls")


# ---------------------------------------------------------------------------------------------------- ledger


def make_ledger(tmp_path):
    users = ["alice", "alice", "bob", "carol", "bob", "dave"]
    samples = [f"s{i}" for i in range(6)]
    partition = user_partition(users, 2, seed=0)
    salt = load_or_create_salt(None, tmp_path / "salts")
    return ShardLedger.from_partition(partition, samples, users, salt), partition, users, samples


def test_salt_is_stored_privately_and_reloaded(tmp_path):
    salt = load_or_create_salt(None, tmp_path / "salts")
    ledger = ShardLedger(salt=salt, shards=[[]])
    path = tmp_path / "salts" / f"{ledger.salt_id}.salt"
    assert path.is_file()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_or_create_salt(ledger.salt_id, tmp_path / "salts") == salt
    with pytest.raises(FileNotFoundError, match="salt"):
        load_or_create_salt(ledger.salt_id, tmp_path / "elsewhere")


def test_ledger_records_shards_by_salted_hash(tmp_path):
    ledger, partition, users, samples = make_ledger(tmp_path)
    text = repr(ledger.to_dict())
    for raw in set(users) | set(samples):
        assert f"'{raw}'" not in text
    assert ledger.sizes() == partition.sizes()
    assert ledger.users_per_shard() == [len({users[i] for i in idx}) for idx in partition.shard_indices()]
    # Another salt gives unrelated hashes: the ledger alone does not identify anybody.
    other = load_or_create_salt(None, tmp_path / "salts")
    assert ShardLedger(salt=other, shards=[]).hash_user("alice") != ledger.hash_user("alice")
    with pytest.raises(ValueError, match="salt"):
        ShardLedger.from_dict(ledger.to_dict(), other)
    assert ShardLedger.from_dict(ledger.to_dict(), ledger.salt).shards == ledger.shards


def test_ledger_locates_and_removes_requests(tmp_path):
    ledger, partition, users, samples = make_ledger(tmp_path)
    found = ledger.locate(user_ids=["bob"])
    assert set(found) == {int(partition.assignment[2])}
    assert found[int(partition.assignment[2])] == {ledger.hash_sample("s2"), ledger.hash_sample("s4")}
    both = ledger.locate(user_ids=["bob"], sample_ids=["s0"])
    assert sum(len(v) for v in both.values()) == 3
    smaller = ledger.remove(set().union(*found.values()))
    assert smaller.num_samples() == 4 and ledger.num_samples() == 6  # the old ledger is untouched
    assert smaller.num_users() == 3
    k = int(partition.assignment[2])
    rows = smaller.shard_rows(k, samples)
    assert rows == [i for i in range(6) if partition.assignment[i] == k and users[i] != "bob"]


def test_ledger_refuses_unknown_ids_without_printing_them(tmp_path):
    ledger, *_ = make_ledger(tmp_path)
    with pytest.raises(ValueError) as info:
        ledger.locate(user_ids=["mallory-secret-id"])
    assert "mallory-secret-id" not in str(info.value)
    assert "1 requested user id" in str(info.value)
    with pytest.raises(ValueError, match="at least one id"):
        ledger.locate(user_ids=[])
    with pytest.raises(ValueError, match="original training set"):
        ledger.shard_rows(0, ["s0"])
    with pytest.raises(ValueError, match="duplicate"):
        ShardLedger.from_partition(random_partition(2, 1), ["x", "x"], ["a", "b"], ledger.salt)
