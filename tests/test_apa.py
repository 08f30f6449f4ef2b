"""APATrainer: shard training, exact forgetting, versioned atomic persistence, privacy of ids, SISA baseline."""

import ast
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors.torch import load_file

import hf_recunlearn.apa_format as apa_store  # the atomic write path of a version
import hf_recunlearn.trainer.apa_trainer as apa_trainer_module  # its reads of a version are counted
from hf_recunlearn.apa_recommender import APARecommender, read_apa_directory, recover_apa_directory
from hf_recunlearn.partition import ShardLedger, load_or_create_salt
from hf_recunlearn.scoring import score
from hf_recunlearn.trainer import (
    APAConfig,
    APATrainer,
    E2URecConfig,
    RecTrainer,
    SISAConfig,
    SISATrainer,
    UnlearningTrainer,
)

from apa_helpers import apa_args, single_thread, tiny_base, tiny_datasets, tiny_tokenizer


REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def setup():
    ds = tiny_datasets()
    tok = tiny_tokenizer(ds)
    base = tiny_base(tok)
    return ds, tok, base


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    """Version 1 of a K=3 APA model (user partition), trained once for the module."""
    ds, tok, base = setup
    root = tmp_path_factory.mktemp("apa")
    args = apa_args(root / "v1", root / "salts")
    trainer = APATrainer(
        base, args, train_dataset=ds["train"], eval_dataset={"valid": ds["valid"], "test": ds["test"]}, processing_class=tok
    )
    trainer.train()
    report = trainer.last_report
    return trainer, report, root


@pytest.fixture
def fresh(setup, trained, tmp_path):
    """A trainer on a private copy of version 1, so each test can forget without disturbing the others."""
    ds, tok, base = setup
    _, _, root = trained
    model_dir = tmp_path / "model"
    shutil.copytree(root / "v1", model_dir)
    recommender = APARecommender.from_pretrained(model_dir, base_model=base, tokenizer=tok)
    args = apa_args(model_dir, root / "salts")
    trainer = APATrainer(
        recommender,
        args,
        train_dataset=ds["train"],
        eval_dataset={"valid": ds["valid"], "test": ds["test"]},
        processing_class=tok,
    )
    return trainer, model_dir


def file_digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def ledger_of(trainer) -> ShardLedger:
    salt = load_or_create_salt(trainer.apa_state.ledger["salt_id"], trainer.args.salt_dir)
    return ShardLedger.from_dict(trainer.apa_state.ledger, salt)


def shard_of_user(trainer, user) -> set[int]:
    ledger = ledger_of(trainer)
    h = ledger.hash_user(user)
    return {k for k, shard in enumerate(ledger.shards) for _, u in shard if u == h}


def train_reference_shard(base, tok, args, data, tmp_path):
    """What a shard trained from scratch on `data` looks like: a plain RecTrainer run with the same seed."""
    ref_args = dataclasses.replace(args, output_dir=str(tmp_path / "reference"))
    trainer = RecTrainer(base, args=ref_args, train_dataset=data, processing_class=tok)
    trainer.train()
    state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(trainer.model).items()}
    trainer.model.unload()
    return state


# ---------------------------------------------------------------------------------------------------- training


def test_training_writes_a_loadable_version(setup, trained):
    ds, tok, base = setup
    trainer, report, root = trained
    folder = root / "v1"
    assert report.event == "train" and report.version == 1 and report.affected_shards == [0, 1, 2]
    assert report.num_samples == len(ds["train"])
    meta = json.loads((folder / "apa_config.json").read_text())
    assert meta["format"] == "hf_recunlearn/apa" and meta["version"] == 1 and meta["num_shards"] == 3
    assert meta["partition"]["method"] == "user"  # the default for user requests
    assert meta["aggregation"] == {
        "weights": "adaptive", "level": "ND", "temperature": 1000.0, "num_neighbors": 5,
        "routing_representation": "embedding_mean", "temperature_candidates": None, "error": "absolute",
    }  # fmt: skip
    assert [e["event"] for e in meta["lineage"]] == ["train"]
    assert "num_samples" not in json.dumps(meta) and "seed" not in json.dumps(meta)  # the controller's, not public
    private = read_apa_directory(folder)
    assert sum(s["num_samples"] for s in private.shard_info) == len(ds["train"])
    # By-user partition: every user's samples sit in one shard.
    assert sum(s["num_users"] for s in private.shard_info) == len(set(ds["train"]["user_id"]))
    errors = load_file(str(folder / "apa_state.safetensors"))["valid_errors"]
    assert errors.shape == (3, len(ds["valid"])) and bool(((errors >= 0) & (errors <= 1)).all())
    # Every shard is an ordinary PEFT adapter in its own subfolder.
    recommender = trainer.recommender
    for k in range(3):
        peft_model = PeftModel.from_pretrained(base, str(folder), subfolder=f"shard_{k:02d}")
        try:
            expected = score(peft_model, tok, ds["test"], recommender.answer_tokens)
        finally:
            peft_model.unload()
        np.testing.assert_array_equal(recommender.predict_shard(ds["test"], k, batch_size=64), expected)
    metrics = trainer.evaluate()
    assert {"eval_valid_auc", "eval_test_auc", "eval_test_logloss", "eval_test_ms_per_sample"} <= set(metrics)


def test_from_pretrained_rebuilds_the_recommender(setup, trained):
    ds, tok, base = setup
    trainer, _, root = trained
    loaded = APARecommender.from_pretrained(root / "v1", base_model=base)  # tokenizer from the directory
    np.testing.assert_array_equal(loaded.predict(ds["test"]), trainer.predict(ds["test"]).predictions)
    p, w = loaded.predict(ds["test"], return_weights=True)
    assert w.shape == (len(ds["test"]), 3) and np.allclose(w.sum(1), 1)


def test_weightings_and_levels(setup, trained):
    ds, tok, base = setup
    rec = trained[0].recommender
    test = ds["test"]
    shard_p = np.stack([rec.predict_shard(test, k) for k in range(3)], axis=1)
    sisa = rec.predict(test, weighting="uniform", level="output")
    np.testing.assert_allclose(sisa, shard_p.mean(1), atol=1e-6)
    for weighting in ("adaptive", "uniform", "semantic", "major"):
        for level in ("ND", "D"):
            p = rec.predict(test, weighting=weighting, level=level)
            assert p.shape == (len(test),) and np.all((p > 0) & (p < 1))
    # "major" routes each sample to one shard: its one-pass result is that shard's prediction.
    p, w = rec.predict(test, weighting="major", return_weights=True)
    np.testing.assert_allclose(p, shard_p[np.arange(len(test)), w.argmax(1)], atol=1e-5)
    # Fixed weights override the routing.
    one_hot = np.tile(np.eye(3)[1], (len(test), 1))
    np.testing.assert_allclose(rec.predict(test, weights=one_hot), shard_p[:, 1], atol=1e-5)


def test_exported_static_adapter_equals_the_fixed_weight_mixture(setup, trained, tmp_path):
    ds, tok, base = setup
    rec = trained[0].recommender
    weights = [0.5, 0.2, 0.3]
    for level in ("ND", "D"):
        rec.export_adapter(tmp_path / level, weights, level=level)
        peft_model = PeftModel.from_pretrained(base, str(tmp_path / level))
        try:
            expected = score(peft_model, tok, ds["test"], rec.answer_tokens, batch_size=32)
        finally:
            peft_model.unload()
        got = rec.predict(ds["test"], weights=np.tile(weights, (len(ds["test"]), 1)), level=level)
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_temperature_is_selected_on_validation(setup, trained):
    ds, tok, base = setup
    trainer, _, root = trained
    rec = APARecommender.from_pretrained(root / "v1", base_model=base, tokenizer=tok)
    scores = rec.select_temperature(ds["valid"], [0.0, 10.0, 1000.0])
    assert set(scores) == {0.0, 10.0, 1000.0}
    assert scores[rec.aggregation.temperature] == max(scores.values())


# ---------------------------------------------------------------------------------------------------- forgetting


def test_forgetting_a_user_retrains_only_its_shard_exactly(setup, fresh, tmp_path):
    ds, tok, base = setup
    trainer, model_dir = fresh
    before = file_digests(model_dir)
    old_adapters = [dict(a) for a in trainer.apa_state.shard_adapters]
    user = ds["train"][0]["user_id"]
    (k,) = shard_of_user(trainer, user)
    rows_before = ledger_of(trainer).shard_rows(k, ds["train"]["sample_id"])
    report = trainer.forget(user_ids=[user])

    n_user = sum(1 for u in ds["train"]["user_id"] if u == user)
    assert report.event == "forget" and report.version == 2 and report.affected_shards == [k]
    assert report.samples_removed == n_user and report.users_removed == 1
    assert report.num_samples == len(ds["train"]) - n_user and report.seconds > 0
    assert set(report.shard_seconds) == {k}

    # The retrained shard equals, bit for bit, a shard trained from scratch on its remaining samples.
    train = ds["train"]
    remaining = [i for i in rows_before if train[i]["user_id"] != user]
    reference = train_reference_shard(base, tok, trainer.args, train.select(remaining), tmp_path)
    new = trainer.apa_state.shard_adapters[k]
    assert set(new) == set(reference)
    for name in reference:
        assert torch.equal(new[name], reference[name]), name
    on_disk = load_file(str(model_dir / f"shard_{k:02d}" / "adapter_model.safetensors"))
    assert all(torch.equal(on_disk[n], reference[n]) for n in reference)

    # Other shards: same tensors in memory, same bytes on disk.
    after = file_digests(model_dir)
    for j in range(3):
        files = [f for f in before if f.startswith(f"shard_{j:02d}/")]
        if j == k:
            assert before[f"shard_{j:02d}/adapter_model.safetensors"] != after[f"shard_{j:02d}/adapter_model.safetensors"]
        else:
            assert all(before[f] == after[f] for f in files)
            assert all(torch.equal(old_adapters[j][n], t) for n, t in trainer.apa_state.shard_adapters[j].items())
    meta = json.loads((model_dir / "apa_config.json").read_text())
    assert meta["version"] == 2
    assert [e["event"] for e in meta["lineage"]] == ["train", "forget"]
    assert meta["lineage"][-1]["shards_trained"] == [k] and meta["lineage"][-1]["users_removed"] == 1
    assert "samples_removed" not in meta["lineage"][-1]  # exact sample counts stay with the controller
    assert meta["shards"][k]["trained_in_version"] == 2
    assert all(meta["shards"][j]["trained_in_version"] == 1 for j in range(3) if j != k)
    private = read_apa_directory(model_dir)
    assert private.lineage[-1]["samples_removed"] == n_user and private.shard_info[k]["num_samples"] == len(remaining)


def test_a_batch_of_requests_retrains_each_shard_once_and_requests_chain(setup, fresh):
    ds, tok, base = setup
    trainer, model_dir = fresh
    users = sorted(set(ds["train"]["user_id"]))
    by_shard = {}
    for u in users:
        (k,) = shard_of_user(trainer, u)
        by_shard.setdefault(k, []).append(u)
    k, members = next((k, m) for k, m in sorted(by_shard.items()) if len(m) >= 2)
    first = trainer.forget(user_ids=members[:2])
    assert first.affected_shards == [k] and len(first.shard_seconds) == 1 and first.users_removed == 2
    # A sample request on another shard, then a user request: versions chain and each is loadable.
    other = next(j for j in sorted(by_shard) if j != k)
    sample = next(s for s, u in zip(ds["train"]["sample_id"], ds["train"]["user_id"]) if u == by_shard[other][0])
    second = trainer.forget(sample_ids=[sample])
    assert second.version == 3 and second.affected_shards == [other] and second.samples_removed == 1
    third = trainer.forget(user_ids=[by_shard[other][-1]])
    assert third.version == 4
    reloaded = read_apa_directory(model_dir)
    assert reloaded.version == 4 and [e["version"] for e in reloaded.lineage] == [1, 2, 3, 4]
    # Forgetting the same user twice is refused (the ledger no longer holds them), and changes nothing.
    with pytest.raises(ValueError, match="not in the shard ledger") as info:
        trainer.forget(user_ids=[members[0]])
    assert members[0] not in str(info.value)
    assert read_apa_directory(model_dir).version == 4


def test_train_with_forget_dataset_forgets_it(setup, trained, tmp_path):
    ds, tok, base = setup
    _, _, root = trained
    shutil.copytree(root / "v1", tmp_path / "model")
    user = ds["train"][5]["user_id"]
    forget = ds["train"].filter(lambda r: r["user_id"] == user)
    trainer = APATrainer(
        APARecommender.from_pretrained(tmp_path / "model", base_model=base, tokenizer=tok),
        apa_args(tmp_path / "model", root / "salts"),
        train_dataset=ds["train"],
        eval_dataset={"valid": ds["valid"]},
        processing_class=tok,
        forget_dataset=forget,
    )
    trainer.train()
    report = trainer.last_report
    assert report.event == "forget" and report.samples_removed == len(forget) and report.users_removed == 1
    assert trainer.forget_dataset is None


def test_no_raw_id_of_a_forgotten_user_reaches_disk_or_logs(setup, fresh, caplog):
    ds, tok, base = setup
    trainer, model_dir = fresh
    user = ds["train"][3]["user_id"]
    samples = [s for s, u in zip(ds["train"]["sample_id"], ds["train"]["user_id"]) if u == user]
    with caplog.at_level("DEBUG"):
        report = trainer.forget(user_ids=[user])
    assert user not in caplog.text and not any(s in caplog.text for s in samples)
    assert user not in repr(report.to_dict())
    blobs = b"".join(p.read_bytes() for p in model_dir.rglob("*") if p.is_file())
    assert user.encode() not in blobs
    assert not any(s.encode() in blobs for s in samples)
    # No user id of anybody, and the salt is not with the model either.
    assert b"person-" not in blobs
    salt_id = read_apa_directory(model_dir).ledger["salt_id"]
    salt = (Path(trainer.args.salt_dir) / f"{salt_id}.salt").read_text().strip()
    assert salt.encode() not in blobs and bytes.fromhex(salt) not in blobs
    assert not list(model_dir.rglob("*.salt"))


# ---------------------------------------------------------------------------------------------------- atomicity


def test_a_crash_during_training_leaves_the_previous_version(setup, fresh, monkeypatch):
    ds, tok, base = setup
    trainer, model_dir = fresh
    before = file_digests(model_dir)
    expected = trainer.predict(ds["test"]).predictions

    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash while retraining a shard")

    monkeypatch.setattr(APATrainer, "_train_shard", boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.forget(user_ids=[ds["train"][0]["user_id"]])
    monkeypatch.undo()
    assert file_digests(model_dir) == before and trainer.apa_state.version == 1
    assert not any(p.name.startswith((".model.staging", ".model.previous")) for p in model_dir.parent.iterdir())
    # The base model got its plain layers back, and the old version still predicts the same.
    assert not hasattr(base, "peft_config") and "lora" not in str(type(base.model.layers[0].self_attn.q_proj)).lower()
    np.testing.assert_array_equal(APARecommender.from_pretrained(model_dir, base_model=base).predict(ds["test"]), expected)
    assert trainer.forget(user_ids=[ds["train"][0]["user_id"]]).version == 2  # and the request can be retried


def test_a_crash_while_writing_leaves_the_previous_version(setup, fresh, monkeypatch):
    ds, tok, base = setup
    trainer, model_dir = fresh
    before = file_digests(model_dir)

    def boom(folder):
        raise OSError("simulated crash after the new version was half written")

    monkeypatch.setattr(apa_store, "_fsync_tree", boom)
    with pytest.raises(OSError, match="simulated crash"):
        trainer.forget(user_ids=[ds["train"][0]["user_id"]])
    assert file_digests(model_dir) == before and trainer.apa_state.version == 1
    assert not any(p.name.startswith((".model.staging", ".model.previous")) for p in model_dir.parent.iterdir())
    assert read_apa_directory(model_dir).version == 1


def test_an_interrupted_switch_is_rolled_back_on_load(setup, fresh):
    ds, tok, base = setup
    trainer, model_dir = fresh
    before = file_digests(model_dir)
    # A crash between the two renames: the old version was moved aside, the new one never moved in.
    os.rename(model_dir, model_dir.parent / ".model.previous-0123")
    (model_dir.parent / ".model.staging-4567").mkdir()
    assert read_apa_directory(model_dir).version == 1
    assert file_digests(model_dir) == before
    assert not any(p.name.startswith((".model.staging", ".model.previous")) for p in model_dir.parent.iterdir())
    recover_apa_directory(model_dir)  # idempotent


# ---------------------------------------------------------------------------------------------------- variants


def test_sisa_averages_shard_predictions_and_forgets(setup, tmp_path):
    ds, tok, base = setup
    args = SISAConfig(**{**apa_args(tmp_path / "sisa", tmp_path / "salts").to_dict(), **SISA_OVERRIDES})
    trainer = SISATrainer(base, args, train_dataset=ds["train"], eval_dataset={"test": ds["test"]}, processing_class=tok)
    trainer.train()
    rec = trainer.recommender
    assert trainer.apa_state.partition["method"] == "random"
    shard_p = np.stack([rec.predict_shard(ds["test"], k) for k in range(3)], axis=1)
    np.testing.assert_allclose(trainer.predict(ds["test"]).predictions, shard_p.mean(1), atol=1e-6)
    sample = ds["train"][0]["sample_id"]
    assert len(trainer.forget(sample_ids=[sample]).affected_shards) == 1


SISA_OVERRIDES = {
    "forget_unit": "sample", "partition_method": "random", "aggregation_level": "output",
    "aggregation_weights": "uniform",
}  # fmt: skip


def test_seq2seq_backbone_trains_and_forgets(setup, tmp_path):
    ds, tok, _ = setup
    base = tiny_base(tok, "seq2seq")
    args = apa_args(tmp_path / "t5", tmp_path / "salts", num_shards=2, aggregation_level="D")
    trainer = APATrainer(base, args, train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]}, processing_class=tok)
    trainer.train()
    report = trainer.forget(user_ids=[ds["train"][0]["user_id"]])
    assert report.version == 2 and len(report.affected_shards) == 1
    p = APARecommender.from_pretrained(tmp_path / "t5", base_model=base).predict(ds["test"])
    np.testing.assert_allclose(p, trainer.predict(ds["test"]).predictions, atol=1e-6)


def test_semantic_partition_trainer(setup, tmp_path):
    ds, tok, base = setup
    args = apa_args(tmp_path / "sem", tmp_path / "salts", forget_unit="sample", num_shards=2, max_shard_size=40,
                    temperature_candidates=[1.0, 1000.0], routing_representation="last_hidden", save_on_event=False)  # fmt: skip
    trainer = APATrainer(base, args, train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]}, processing_class=tok)
    trainer.train()
    report = trainer.last_report
    assert trainer.apa_state.partition["method"] == "semantic"
    assert max(s["num_samples"] for s in trainer.apa_state.shard_info) <= 40
    assert set(report.temperature_scores) == {1.0, 1000.0}
    assert trainer.apa_state.aggregation.temperature in (1.0, 1000.0)
    assert not (tmp_path / "sem").exists()  # save_on_event=False


def test_config_and_trainer_validation(setup, tmp_path):
    ds, tok, base = setup
    with pytest.raises(ValueError, match="num_shards"):
        APAConfig(output_dir=str(tmp_path), num_shards=0)
    with pytest.raises(ValueError, match="aggregation_level"):
        APAConfig(output_dir=str(tmp_path), aggregation_level="mean")
    with pytest.raises(ValueError, match="use_lora"):
        APAConfig(output_dir=str(tmp_path), use_lora=False)
    with pytest.warns(UserWarning, match="forget_unit"):
        APAConfig(output_dir=str(tmp_path), partition_method="random")
    args = apa_args(tmp_path / "x", tmp_path / "salts")
    with pytest.raises(ValueError, match="validation set"):
        APATrainer(base, args, train_dataset=ds["train"], eval_dataset=ds["test"], processing_class=tok).train()
    with pytest.raises(ValueError, match="missing columns"):
        APATrainer(base, args, train_dataset=ds["train"].remove_columns("user_id"), processing_class=tok)
    with pytest.raises(ValueError, match="optimizers"):
        APATrainer(base, args, train_dataset=ds["train"], processing_class=tok, optimizers=(1, None))
    with pytest.raises(RuntimeError, match="train"):
        APATrainer(base, args, train_dataset=ds["train"], processing_class=tok).forget(user_ids=["x"])


# ---------------------------------------------------------------------------------------------------- Trainer contract


def test_apa_and_sisa_are_unlearning_trainers(trained):
    from transformers import Trainer, TrainerState

    trainer, report, _ = trained
    assert isinstance(trainer, UnlearningTrainer) and isinstance(trainer, Trainer)
    assert issubclass(SISATrainer, APATrainer) and SISATrainer.config_class is SISAConfig
    # `state` is the Trainer's; the events went through `Trainer.log` into it.
    assert isinstance(trainer.state, TrainerState) and trainer.apa_state.version == 1
    events = [e for e in trainer.state.log_history if "apa/version" in e]
    assert events[0]["apa/version"] == 1 and events[0]["apa/shards_trained"] == 3
    assert events[0]["apa/num_samples"] == report.num_samples
    assert trainer.is_world_process_zero() and report.num_processes == 1
    assert trainer.apa_state.recipe["launch"] == {"num_processes": 1}
    adapters = trainer.apa_state.shard_adapters
    assert trainer.num_trainable_parameters == sum(t.numel() for a in adapters for t in a.values())


def _copy_of(ds, column, value):
    return ds.map(lambda row: {column: value})


@pytest.mark.parametrize(
    "case, error, match",
    [
        ("e2urec_args", TypeError, r"`args` must be an instance of `APAConfig` for APATrainer, got E2URecConfig"),
        ("apa_args_for_sisa", TypeError, r"`args` must be an instance of `SISAConfig` for SISATrainer, got APAConfig"),
        ("no_user_id", ValueError, r"`train_dataset` is missing columns \['user_id'\]"),
        ("forget_no_sample_id", ValueError, r"`forget_dataset` is missing columns \['sample_id'\]"),
        ("forget_empty", ValueError, r"`forget_dataset` is empty"),
        ("forget_foreign", ValueError, r"`forget_dataset` has 2 of 2 sample\(s\) whose `sample_id` is not in"),
        ("optimizers", ValueError, r"`optimizers` must be \(None, None\)"),
        ("peft_model", ValueError, r"`model` is already a PEFT model"),
        ("not_a_model", TypeError, r"`model` must be a model id, a path or a `PreTrainedModel`, got dict"),
    ],
)  # fmt: skip
def test_bad_arguments_are_refused_naming_the_argument(setup, tmp_path, case, error, match):
    from peft import LoraConfig, get_peft_model

    ds, tok, base = setup
    train = ds["train"]
    trainer_cls, model = APATrainer, base
    kwargs = dict(args=apa_args(tmp_path / "out", tmp_path / "salts"), train_dataset=train, processing_class=tok)
    if case == "e2urec_args":
        kwargs["args"] = E2URecConfig(output_dir=str(tmp_path / "out"))
    elif case == "apa_args_for_sisa":
        trainer_cls = SISATrainer
    elif case == "no_user_id":
        kwargs["train_dataset"] = train.remove_columns("user_id")
    elif case == "forget_no_sample_id":
        kwargs["forget_dataset"] = train.select([0, 1]).remove_columns("sample_id")
    elif case == "forget_empty":
        kwargs["forget_dataset"] = train.select([])
    elif case == "forget_foreign":
        kwargs["forget_dataset"] = ds["test"].select([0, 1])
    elif case == "optimizers":
        kwargs["optimizers"] = (object(), None)
    elif case == "peft_model":
        model = get_peft_model(tiny_base(tok), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    elif case == "not_a_model":
        model = {"not": "a model"}
    with pytest.raises(error, match=match):
        trainer_cls(model, **kwargs)
    assert not (tmp_path / "out" / "apa_config.json").exists()
    assert not hasattr(base, "peft_config")  # the shared base is untouched by a refused construction


def test_retain_dataset_is_ignored_with_a_warning(setup, tmp_path):
    ds, tok, base = setup
    args = apa_args(tmp_path / "out", tmp_path / "salts")
    with pytest.warns(UserWarning, match="`retain_dataset` is ignored by APATrainer") as record:
        APATrainer(base, args, train_dataset=ds["train"], retain_dataset=ds["train"], processing_class=tok)
    assert record[0].filename == __file__  # the warning points at the caller's line


def test_forget_dataset_through_train_trains_then_forgets(setup, tmp_path):
    ds, tok, base = setup
    train = ds["train"]
    user = train[7]["user_id"]
    forget = train.filter(lambda r: r["user_id"] == user)
    trainer = APATrainer(
        base,
        apa_args(tmp_path / "model", tmp_path / "salts"),
        train_dataset=train,
        eval_dataset={"valid": ds["valid"]},
        processing_class=tok,
        forget_dataset=forget,
    )
    trainer.train()
    report = trainer.last_report
    assert [r.event for r in trainer.reports] == ["train", "forget"]
    assert report.event == "forget" and report.version == 2 and len(report.affected_shards) == 1
    assert report.samples_removed == len(forget) and report.users_removed == 1
    assert shard_of_user(trainer, user) == set() and report.num_samples == len(train) - len(forget)
    assert [e["event"] for e in read_apa_directory(tmp_path / "model").lineage] == ["train", "forget"]
    assert [e["apa/version"] for e in trainer.state.log_history if "apa/version" in e] == [1, 2]
    assert trainer.unlearning_runtime == report.seconds and trainer.forget_dataset is None
    with pytest.raises(ValueError, match="Nothing to do"):
        trainer.train()  # the request was consumed; a second call has nothing left to do


def test_model_card_has_user_counts_only_never_ids_or_digests(setup, fresh):
    ds, tok, base = setup
    trainer, model_dir = fresh
    user = ds["train"][2]["user_id"]
    samples = [s for s, u in zip(ds["train"]["sample_id"], ds["train"]["user_id"]) if u == user]
    ledger = ledger_of(trainer)
    report = trainer.forget(user_ids=[user])
    trainer.create_model_card()
    card = (model_dir / "README.md").read_text()
    meta = card.split("---")[1]
    assert "library_name: peft" in meta and "- apa" in meta and "exact-unlearning" in meta
    assert "**APA**" in card and "arxiv.org/abs/2404.10327" in card and "@article{hu2024exact" in card
    assert "split into 3 shards" in card and "**Current version:** `v2`" in card
    assert "| v1 | train | 0, 1, 2 | 0 | local |" in card and "| v2 | forget |" in card
    assert "num forgotten users: `1`" in card and "num forget events: `1`" in card
    # No sample counts (with the public data they narrow the event to one or two users) and no digests.
    assert "samples" not in card.split("## Forget request")[1].split("##")[0] and report.samples_removed > 1
    assert not any(ledger.hash_sample(s) in card for s in samples) and ledger.hash_user(user) not in card
    assert "seed`:" not in card  # no seed among the hyperparameters (the seeds stay with the controller)
    # Neither the user nor their samples, nor an unsalted digest of them that could be checked against guesses.
    assert user not in card and "person-" not in card and not any(s in card for s in samples)
    assert hashlib.sha256("\n".join(sorted(samples)).encode()).hexdigest() not in card
    assert "salt_dir" not in card and trainer.args.salt_dir not in card
    assert re.search(r"\*\*Trainable parameters:\*\* `(\d+)`", card).group(1) == str(trainer.num_trainable_parameters)


def test_evaluate_unlearning_reads_an_apa_trainer(setup, fresh):
    from hf_recunlearn.evaluation import ModelPredictions, Predictions, evaluate_unlearning
    from hf_recunlearn.metrics import utility_metrics

    ds, tok, base = setup
    trainer, _ = fresh
    user = ds["train"][4]["user_id"]
    forget_set = ds["train"].filter(lambda r: r["user_id"] == user)

    def aggregate():
        return ModelPredictions(
            forget=Predictions(trainer.predict(forget_set).predictions, np.asarray(forget_set["label"])),
            test=Predictions(trainer.predict(ds["test"]).predictions, np.asarray(ds["test"]["label"])),
        )

    before = aggregate()
    report = trainer.forget(user_ids=[user])
    after = aggregate()  # APA is exact: the retrained reference is the new version itself
    out = evaluate_unlearning(trainer, before, after, forget_dataset=forget_set, test_dataset=ds["test"])
    assert out["test_auc"] == pytest.approx(utility_metrics(ds["test"]["label"], after.test.probs)["auc"])
    assert out["forget_jsd"] == pytest.approx(0.0, abs=1e-12)  # scored through the recommender, not the bare base
    assert out["unlearning_time_s"] == report.seconds
    assert out["trainable_parameters"] == trainer.num_trainable_parameters > 0


def test_a_saved_directory_is_the_default_output_dir(setup, trained, tmp_path, monkeypatch):
    ds, tok, base = setup
    _, _, root = trained
    base_dir = tmp_path / "base"
    base.save_pretrained(base_dir)
    tok.save_pretrained(base_dir)
    model_dir = tmp_path / "model"
    shutil.copytree(root / "v1", model_dir)
    meta = json.loads((model_dir / "apa_config.json").read_text())
    (model_dir / "apa_config.json").write_text(json.dumps({**meta, "base_model": str(base_dir)}))
    monkeypatch.chdir(tmp_path / "base")  # a default elsewhere would appear here
    reads = []  # the version (adapters included) is read once: for the stored recipe and the state alike
    read = apa_trainer_module.read_apa_directory
    monkeypatch.setattr(apa_trainer_module, "read_apa_directory", lambda d: reads.append(d) or read(d))
    trainer = APATrainer(str(model_dir), train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]})
    assert trainer.args.output_dir == str(model_dir) and trainer.apa_state.version == 1
    assert [str(d) for d in reads] == [str(model_dir)]
    assert not (tmp_path / "base" / "apa-model").exists()
    assert trainer.num_trainable_parameters == trained[0].num_trainable_parameters


# ---------------------------------------------------------------------------------------------------- processes


@pytest.mark.slow
def test_multi_process_launch_trains_data_parallel_and_forgets_exactly(tmp_path):
    script = REPO / "examples" / "apa_multiprocess.py"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_RECUNLEARN_SALT_DIR": str(tmp_path / "salts")}
    common = [str(script), "--num-shards", "2", "--sizes", "64", "24", "24", "--reproduce"]
    single = subprocess.run([sys.executable, *common, "--output-dir", str(tmp_path / "single")], check=True, env=env,
                            timeout=600, capture_output=True, text=True)  # fmt: skip
    # `--multi_gpu` starts 2 processes through torchrun (on the CPU here); `--cpu` alone would start one.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]  # fmt: skip
    multi = subprocess.run([*launch, *common, "--output-dir", str(tmp_path / "multi")], check=True, env=env,
                           timeout=600, capture_output=True, text=True)  # fmt: skip
    # Data-parallel: each shard's Trainer split its batches over both processes, so half the optimizer steps.
    one = re.search(r"over 1 process\(es\): (\d+) optimizer steps", single.stdout)
    two = re.search(r"over 2 process\(es\): (\d+) optimizer steps", multi.stdout)
    assert one and two and int(two[1]) < int(one[1]), (single.stdout, multi.stdout)
    # The forget under the launch retrained exactly: the shard equals a from-scratch retrain with the stored recipe.
    identical = re.search(r"bit-identical: (\{.*\})", multi.stdout)
    assert identical and set(ast.literal_eval(identical[1]).values()) == {True}, multi.stdout
    state = read_apa_directory(tmp_path / "multi")
    assert state.version == 2 and state.recipe["launch"] == {"num_processes": 2}
    # A single process cannot forget from (or reproduce) what two processes trained: refused before any work.
    before = {p: p.read_bytes() for p in (tmp_path / "multi").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=r"data-parallel over 2 process\(es\), this launch has 1"):
        APATrainer(str(tmp_path / "multi"))
    assert before == {p: p.read_bytes() for p in (tmp_path / "multi").rglob("*") if p.is_file()}
