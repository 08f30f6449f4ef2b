"""
Attacks on the deletion promise, through the paths users take (DESIGN §9).

Each test tries to break one guarantee the way a user or an attacker would: the console script in a real process, a
SIGKILL at a chosen instruction (`HF_RECUNLEARN_CRASH_AT`), two processes at once, the real `huggingface_hub` client
against the in-project Hub server, and an outsider who holds the public data set and every pushed byte.

User ids look like e-mail addresses (`user-7f3a@example.org`), so a byte search for one can only find a leak.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hf_recunlearn.apa_recommender import APARecommender, read_apa_directory
from hf_recunlearn.cli import main
from hf_recunlearn.controller import CRASH_ENV, Journal
from hf_recunlearn.partition import ShardLedger, load_or_create_salt, make_partition
from hf_recunlearn.runs import RunDir, RunInfo
from hf_recunlearn.trainer import APAConfig, APATrainer

from apa_helpers import single_thread, tiny_base, tiny_datasets, tiny_tokenizer
from cli_helpers import console_env, console_script


FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


def email(raw: str) -> str:
    return f"user-{raw}@example.org"


def email_datasets():
    """Tiny synthetic splits whose user and sample ids are e-mail-like, so that a byte search finds only leaks."""
    ds = tiny_datasets()
    return ds.map(lambda row: {"user_id": email(row["user_id"]), "sample_id": f"sample-{row['sample_id']}@example.org"})


def recipe(output_dir, salt_dir, **overrides) -> APAConfig:
    """A recipe far from the defaults in every field a forget could get wrong (seed, lr, epochs, batch, rank)."""
    settings = dict(
        output_dir=str(output_dir), num_shards=3, num_train_epochs=1, learning_rate=3e-3, per_device_train_batch_size=6,
        per_device_eval_batch_size=16, lora_r=4, lora_alpha=8, seed=17, warmup_steps=2, use_cpu=True, logging_steps=1000,
        disable_tqdm=True, salt_dir=str(salt_dir), num_neighbors=5,
    )  # fmt: skip
    settings.update(overrides)
    return APAConfig(**settings)


@pytest.fixture(scope="module")
def template_run(tmp_path_factory):
    """
    A run directory as `hf-recunlearn train --method apa` lays it out (run.json, data/, base/, apa/), trained with a
    non-default recipe on e-mail ids. Tests copy it; the salt lives in the module's salt folder.
    """
    root = tmp_path_factory.mktemp("guarantees")
    ds = email_datasets()
    tok = tiny_tokenizer(ds)
    base = tiny_base(tok)
    run = RunDir(root / "run")
    run.path.mkdir()
    base.save_pretrained(run.base_dir)
    tok.save_pretrained(run.base_dir)
    run.save_datasets(ds)
    salts = root / "salts"
    trainer = APATrainer(str(run.base_dir), recipe(run.path / "apa", salts), train_dataset=ds["train"],
                         eval_dataset={"valid": ds["valid"], "test": ds["test"]})  # fmt: skip
    trainer.train()
    run.save_info(RunInfo(data="synthetic", preset="apa", template="e2urec", base_model="builtin", method="apa",
                          metrics={"apa": {"auc": 0.5, "version": 1}}))  # fmt: skip
    return {"root": root, "ds": ds, "tok": tok, "salts": salts, "run": run.path}


@pytest.fixture
def run(template_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_RECUNLEARN_SALT_DIR", str(template_run["salts"]))
    path = tmp_path / "run"
    shutil.copytree(template_run["run"], path)
    return path


def cli(*args, env_extra=None, check=True, timeout=300) -> subprocess.CompletedProcess:
    """`hf-recunlearn ARGS`: the console script in a fresh process (one thread, offline), as a user runs it."""
    result = subprocess.run([console_script(), *args], capture_output=True, text=True,
                            env=console_env(**(env_extra or {})), timeout=timeout)  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def forked(*args, env_extra=None) -> tuple[int, str]:
    """
    `hf-recunlearn ARGS` in a real child process forked from this one (torch is already imported, so no start-up
    cost), with `env_extra` set in the child only. Returns `(exit code, output)`; -9 when a crash point killed it.
    """
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into pytest
        code = 1
        try:
            os.close(read)
            os.environ.update(env_extra or {})
            os.dup2(write, 1)
            os.dup2(write, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            code = main(list(args))
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write)
    with open(read, "rb") as pipe:
        output = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


def run_main(tmp_path, *args) -> dict:
    """The same `hf-recunlearn` entry point in this process (fast: torch is already imported); returns its JSON."""
    out = tmp_path / f"out-{uuid.uuid4().hex[:6]}.json"
    code = main([*args, "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def ledger_of(directory, salts) -> ShardLedger:
    state = read_apa_directory(directory)
    return ShardLedger.from_dict(state.ledger, load_or_create_salt(state.ledger["salt_id"], salts))


def users_in(directory, salts) -> set[str]:
    return {u for shard in read_apa_directory(directory).ledger["shards"] for _, u in shard}


def every_byte(*roots: Path) -> dict[str, bytes]:
    out = {}
    for root in roots:
        for path in sorted(Path(root).rglob("*")) if Path(root).is_dir() else [Path(root)]:
            if path.is_file():
                out[str(path)] = path.read_bytes()
    return out


def shard_of(directory, salts, user: str) -> int:
    ledger = ledger_of(directory, salts)
    (k,) = ledger.locate(user_ids=[user])
    return k


def adapters_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------------ exactness


def test_cli_forget_retrains_with_the_stored_recipe_bit_for_bit(run, template_run):
    """The CLI path used to retrain with a default config (seed 42, lr 1e-4): now the stored recipe, bit for bit."""
    salts, ds = template_run["salts"], template_run["ds"]
    user = ds["train"]["user_id"][0]
    k = shard_of(run / "apa", salts, user)
    result = cli("forget", "--run", str(run), "--method", "apa", "--users", user)
    report = json.loads(result.stdout)  # a real process's stdout is exactly one JSON document
    assert (report["version"], report["users_removed"], report["affected_shards"]) == (2, 1, [k])
    state = read_apa_directory(run / "apa")
    assert state.version == 2 and ledger_of(run / "apa", salts).hash_user(user) not in users_in(run / "apa", salts)
    assert all(info["seed"] == 17 for info in state.shard_info)  # the recipe's seed, not 42 or 0
    assert state.recipe["training_arguments"]["learning_rate"] == 3e-3
    # From scratch through the public API, with nothing but the stored recipe, ledger and data.
    trainer = APATrainer(str(run / "apa"), train_dataset=ds["train"],
                         eval_dataset={"valid": ds["valid"], "test": ds["test"]})  # fmt: skip
    assert trainer.args.learning_rate == 3e-3 and trainer.args.per_device_train_batch_size == 6 and trainer.args.seed == 17
    reproduced = trainer.reproduce_shard(k)
    stored = load_file(str(run / "apa" / f"shard_{k:02d}" / "adapter_model.safetensors"))
    assert adapters_equal(reproduced, stored)


def test_a_forget_with_another_recipe_is_refused_and_changes_nothing(run, template_run):
    before = every_byte(run)
    other = recipe(run / "apa", template_run["salts"], learning_rate=1e-4)
    with pytest.raises(ValueError, match=r"`learning_rate` = 0.0001 \(stored: 0.003\)"):
        APATrainer(str(run / "apa"), other, train_dataset=template_run["ds"]["train"])
    assert every_byte(run) == before


def test_the_whole_state_after_a_forget_equals_a_from_scratch_run(tmp_path, template_run):
    """Adapters, validation errors and representations, centroids and ledger all equal a from-scratch run without
    the user on the same shards."""
    ds, tok, salts = template_run["ds"], template_run["tok"], template_run["salts"]
    base = tiny_base(tok)
    valid = {"valid": ds["valid"], "test": ds["test"]}
    trainer = APATrainer(base, recipe(tmp_path / "a", salts), train_dataset=ds["train"], eval_dataset=valid,
                         processing_class=tok)  # fmt: skip
    trainer.train()
    user = sorted(set(ds["train"]["user_id"]) & set(ds["valid"]["user_id"]))[0]  # their validation rows must go too
    ledger = ledger_of(tmp_path / "a", salts)
    shard = {s: k for k, sh in enumerate(ledger.shards) for s, _ in sh}
    assignment = {sid: shard[ledger.hash_sample(sid)] for sid in ds["train"]["sample_id"]}
    trainer.forget(user_ids=[user])
    after = read_apa_directory(tmp_path / "a")

    keep = {name: split.filter(lambda r: r["user_id"] != user) for name, split in ds.items()}
    scratch = APATrainer(tiny_base(tok), recipe(tmp_path / "b", salts), train_dataset=keep["train"],
                         eval_dataset={"valid": keep["valid"], "test": keep["test"]}, processing_class=tok,
                         shard_assignment={s: assignment[s] for s in keep["train"]["sample_id"]})  # fmt: skip
    scratch.train()
    fresh = read_apa_directory(tmp_path / "b")
    for k in range(after.num_shards):
        assert adapters_equal(after.shard_adapters[k], fresh.shard_adapters[k]), f"shard {k}"
    diffs = {name: (getattr(after, name) - getattr(fresh, name)).abs().max().item()
             for name in ("valid_reps", "valid_errors", "shard_centroids")}  # fmt: skip
    assert diffs == {name: 0.0 for name in diffs}
    fresh_ledger = ledger_of(tmp_path / "b", salts)
    by_shard = lambda led: [sorted(s for s in keep["train"]["sample_id"] if led.hash_sample(s) in {h for h, _ in sh})
                            for sh in led.shards]  # fmt: skip
    assert by_shard(ledger_of(tmp_path / "a", salts)) == by_shard(fresh_ledger)
    assert len(after.valid_users) == len(keep["valid"]) < len(ds["valid"])


# ------------------------------------------------------------------------------------------------------ durability


def test_two_concurrent_forgets_both_land(run, template_run):
    """Two `forget` processes on one run: the second waits for the lock, then forgets on top of the first."""
    salts, ds = template_run["salts"], template_run["ds"]
    users = sorted(set(ds["train"]["user_id"]))[:2]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two processes at once on one run
        outs = list(pool.map(lambda u: forked("forget", "--run", str(run), "--method", "apa", "--users", u, "--json",
                                              str(run.parent / f"{users.index(u)}.json")), users))  # fmt: skip
    assert [code for code, _ in outs] == [0, 0], [out[-2000:] for _, out in outs]
    versions = sorted(json.loads((run.parent / f"{i}.json").read_text())["version"] for i in range(2))
    assert versions == [2, 3]
    ledger = ledger_of(run / "apa", salts)
    remaining = users_in(run / "apa", salts)
    assert not {ledger.hash_user(u) for u in users} & remaining
    assert not Journal(run / "apa").pending() and len(Journal(run / "apa").requests()) == 2


def test_no_wait_fails_fast_while_another_process_holds_the_run(run, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'pid %d' % os.getpid()); print('locked', flush=True); "
         "time.sleep(120)", str(run / ".apa.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = every_byte(run / "apa")
        assert main(["forget", "--run", str(run), "--method", "apa", "--users", "x", "--no-wait"]) == 2
        err = capsys.readouterr().err
        assert f"is locked by pid {holder.pid}" in err and "Traceback" not in err
        assert every_byte(run / "apa") == before
    finally:
        holder.kill()
        holder.wait()


# Every instruction a kill can land between; the default suite kills at one point of each kind (before the switch,
# inside it, after it), `make test-slow` at all of them.
FORGET_CRASH_POINTS = [
    "forget:journaled", pytest.param("shards:trained", marks=pytest.mark.slow),
    pytest.param("apa:staged", marks=pytest.mark.slow), "apa:between-renames",
    pytest.param("apa:after-switch", marks=pytest.mark.slow), pytest.param("forget:switched", marks=pytest.mark.slow),
    pytest.param("data:between-renames", marks=pytest.mark.slow), "forget:erased",
]  # fmt: skip


@pytest.mark.parametrize("point", FORGET_CRASH_POINTS)
def test_sigkill_at_every_step_of_forget_is_recovered_by_the_next_command(point, run, template_run, tmp_path):
    salts, ds = template_run["salts"], template_run["ds"]
    user = ds["train"]["user_id"][0]
    code, output = forked("forget", "--run", str(run), "--method", "apa", "--users", user, env_extra={CRASH_ENV: point})
    assert code == -9, output[-2000:]
    # Whatever the instant, the next command on the run works and finishes the deletion first.
    evaluated = run_main(tmp_path, "evaluate", "--run", str(run))
    assert evaluated["version"] == 2 and 0.0 <= evaluated["auc"] <= 1.0
    ledger = ledger_of(run / "apa", salts)
    assert ledger.hash_user(user) not in users_in(run / "apa", salts)
    assert not Journal(run / "apa").pending()
    assert user not in set(RunDir(run).load_datasets()["train"]["user_id"])
    assert not list(run.glob(".apa.*-*")) and not list(run.glob(".data.*-*"))  # no staging or previous left over


def test_sigkill_then_forget_resume_and_a_later_forget(run, template_run, tmp_path, capsys):
    ds = template_run["ds"]
    first, second = sorted(set(ds["train"]["user_id"]))[:2]
    code, _ = forked("forget", "--run", str(run), "--method", "apa", "--users", first,
                     env_extra={CRASH_ENV: "apa:between-renames"})  # fmt: skip
    assert code == -9
    assert not (run / "apa").exists()  # the instant the old tooling left the run unusable
    resumed = run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--resume")
    assert resumed["version"] == 2 and resumed["recovered"]
    later = run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--users", second)
    assert later["version"] == 3
    capsys.readouterr()
    assert main(["forget", "--run", str(run), "--method", "apa", "--users", first]) == 2
    err = capsys.readouterr().err
    assert "already forgotten" in err and "Traceback" not in err and first not in err


# ------------------------------------------------------------------------------------------------------ completeness


def test_no_file_of_the_run_holds_the_forgotten_users_rows(run, template_run, tmp_path):
    ds = template_run["ds"]
    user = sorted(set(ds["train"]["user_id"]) & set(ds["valid"]["user_id"]))[0]  # rows in both splits
    rows = [r for name in ds for r in ds[name] if r["user_id"] == user]
    needles = {user.encode()} | {r["sample_id"].encode() for r in rows}
    run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--users", user)
    for path, data in every_byte(run).items():
        for needle in needles:
            assert needle not in data, f"{needle!r} in {path}"
    state = read_apa_directory(run / "apa")
    n_valid = sum(1 for u in ds["valid"]["user_id"] if u != user)
    assert state.valid_reps.shape[0] == n_valid == state.valid_errors.shape[1]


# ------------------------------------------------------------------------------------------------------ privacy


def published_files(directory: Path) -> dict[str, bytes]:
    from hf_recunlearn.hub import _local_files

    return {rel: path.read_bytes() for rel, path in _local_files(Path(directory)).items()}


def test_published_files_name_nobody_and_an_alignment_attack_recovers_nobody(run, template_run, tmp_path):
    """
    The attack that named every forgotten user: align per-shard digest sequences in training order with the
    partition recomputed from the public data and a published seed; or match published counts to users' row counts.
    """
    ds, salts = template_run["ds"], template_run["salts"]
    forgotten = sorted(set(ds["train"]["user_id"]))[:2]
    run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--users", ",".join(forgotten))
    public = published_files(run / "apa")
    assert "controller/ledger.json" not in public and not any(p.startswith("controller/") for p in public)
    blob = b"\n".join(public.values())
    ledger = ledger_of(run / "apa", salts)
    for sid in ds["train"]["sample_id"]:
        assert ledger.hash_sample(sid).encode() not in blob
    for uid in set(ds["train"]["user_id"]):
        assert uid.encode() not in blob and ledger.hash_user(uid).encode() not in blob
    assert str(run).encode() not in blob and os.uname().nodename.encode() not in blob
    json_blob = b"\n".join(v for k, v in public.items() if k.endswith(".json"))
    assert not re.search(rb"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])", json_blob)  # no 128-bit digest of any kind
    meta = json.loads(public["apa_config.json"])
    text = json.dumps(meta)
    assert '"seed"' not in text and "num_samples" not in text and "samples_removed" not in text

    # The outsider's alignment: recompute the partition from the public data with every candidate seed and keep the
    # users that the published facts (which shards the event retrained, shard sizes, counts) allow to be forgotten.
    train_users = list(ds["train"]["user_id"])
    counts = {u: train_users.count(u) for u in set(train_users)}
    remaining = len(train_users) - sum(counts[u] for u in forgotten)
    numbers = {int(n) for n in re.findall(rb"(?<![\w.])\d+(?![\w.])", public["apa_config.json"])}
    assert remaining not in numbers  # the remaining sample count is not published, so no subset-sum on counts
    retrained = set(meta["lineage"][-1]["shards_trained"])
    candidates = set()
    for seed in range(100):
        part = make_partition("user", 3, user_ids=train_users, seed=seed)
        sizes = part.sizes()
        if any(size in numbers for size in sizes) and not set(sizes) <= numbers:
            continue  # a seed whose shard sizes contradict what is published (none are published)
        candidates |= {u for u, k in zip(train_users, part.assignment) if int(k) in retrained}
    assert len(candidates) >= 0.9 * len(counts)  # nobody is singled out: nearly every user stays a candidate
    lineage = meta["lineage"]
    assert lineage[-1]["users_removed"] == 2 and set(lineage[-1]) <= {"version", "event", "shards_trained",
                                                                       "users_removed", "temperature"}  # fmt: skip


def test_min_users_per_event_batches_requests_into_one_event(tmp_path, template_run):
    ds, tok, salts = template_run["ds"], template_run["tok"], template_run["salts"]
    trainer = APATrainer(tiny_base(tok), recipe(tmp_path / "m", salts, min_users_per_event=2),
                         train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]}, processing_class=tok)  # fmt: skip
    trainer.train()
    a, b = sorted(set(ds["train"]["user_id"]))[:2]
    queued = trainer.forget(user_ids=[a])
    assert queued.event == "queued" and queued.pending_users == 1 and read_apa_directory(tmp_path / "m").version == 1
    # The setting persists with the version: a trainer built from the saved directory keeps queueing.
    saved = APARecommender.from_pretrained(tmp_path / "m", base_model=trainer.model, tokenizer=tok)
    again = APATrainer(saved, train_dataset=ds["train"], eval_dataset={"valid": ds["valid"]})
    assert again.args.min_users_per_event == 2 and again.args.salt_dir == str(salts)
    done = again.forget(user_ids=[b])
    assert done.event == "forget" and done.version == 2 and done.users_removed == 2 and done.requests == 2
    assert json.loads((tmp_path / "m" / "apa_config.json").read_text())["lineage"][-1]["users_removed"] == 2


# ------------------------------------------------------------------------------------------------------ clear errors


def test_evaluate_works_on_an_apa_run_with_a_relative_path(run, monkeypatch, capsys):
    monkeypatch.chdir(run.parent)
    assert main(["evaluate", "--run", "run"]) == 0
    out = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON document
    assert out["method"] == "apa" and out["version"] == 1 and out["num_samples"] > 0


def test_a_truncated_shard_file_is_one_line_and_exit_2(run, capsys):
    weights = run / "apa" / "shard_01" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "shard_01/adapter_model.safetensors" in err and "damaged" in err


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda ds: ds.select([]), "`train_dataset` is empty"),
        (lambda ds: ds.map(lambda r, i: {"label": float("nan") if i == 0 else r["label"]}, with_indices=True),
         "`train_dataset` has 1 label"),
        (lambda ds: ds.map(lambda r, i: {"label": 3 if i == 0 else r["label"]}, with_indices=True),
         "`train_dataset` has 1 label"),
    ],
)  # fmt: skip
def test_bad_training_data_is_refused_naming_it(tmp_path, template_run, change, match):
    ds, tok, salts = template_run["ds"], template_run["tok"], template_run["salts"]
    with pytest.raises(ValueError, match=match):
        APATrainer(tiny_base(tok), recipe(tmp_path / "x", salts), train_dataset=change(ds["train"]),
                   eval_dataset={"valid": ds["valid"]}, processing_class=tok)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_a_tokenizer_that_does_not_match_the_base_is_refused(tmp_path, template_run):
    from hf_recunlearn.models import build_tokenizer

    ds, tok, salts = template_run["ds"], template_run["tok"], template_run["salts"]
    words = " ".join(f"word{i}" for i in range(len(tok) + 50))
    other = build_tokenizer([words, *ds["train"]["prompt"]])  # a bigger vocabulary than the model's embeddings
    with pytest.raises(ValueError, match="`processing_class`.*vocabulary"):
        APATrainer(tiny_base(tok), recipe(tmp_path / "x", salts), train_dataset=ds["train"],
                   eval_dataset={"valid": ds["valid"]}, processing_class=other)  # fmt: skip


# ------------------------------------------------------------------------------------------------------ Trainer contract


def test_apa_trainer_keeps_the_trainer_contract(tmp_path, template_run, hub_server):
    from huggingface_hub import HfApi
    from transformers import TrainerCallback
    from transformers.trainer_utils import PredictionOutput, TrainOutput

    class Count(TrainerCallback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, args, state, control, **kwargs):
            self.events.append("begin")

        def on_train_end(self, args, state, control, **kwargs):
            self.events.append("end")

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.events.append("evaluate")

    ds, tok, salts = template_run["ds"], template_run["tok"], template_run["salts"]
    repo_id = f"user/apa-contract-{uuid.uuid4().hex[:6]}"
    counter = Count()
    trainer = APATrainer(tiny_base(tok), recipe(tmp_path / "c", salts, push_to_hub=True, hub_model_id=repo_id),
                         train_dataset=ds["train"], eval_dataset={"valid": ds["valid"], "test": ds["test"]},
                         processing_class=tok, callbacks=[counter])  # fmt: skip
    output = trainer.train()
    assert isinstance(output, TrainOutput) and output.global_step > 0 and output.metrics["version"] == 1
    assert trainer.last_report.event == "train"
    # One begin and one end for the whole train(), although three shard Trainers ran inside it.
    assert counter.events == ["begin", "end"] and trainer.state.log_history[-1]["apa/version"] == 1
    prediction = trainer.predict(ds["test"])
    assert isinstance(prediction, PredictionOutput) and prediction.predictions.shape == (len(ds["test"]),)
    assert 0.0 <= prediction.metrics["test_auc"] <= 1.0
    metrics = trainer.evaluate()
    assert "eval_test_auc" in metrics and counter.events[-1] == "evaluate"
    tags = [t.name for t in HfApi().list_repo_refs(repo_id).tags]
    assert tags == ["v1"]  # push_to_hub=True pushed to hub_model_id at the end of train()


# ------------------------------------------------------------------------------------------------------ Hub pushes


PUSH_CRASH_POINTS = [
    "push:before-commit", "push:committed", pytest.param("push:tagged", marks=pytest.mark.slow),
    pytest.param("push:refs-deleted", marks=pytest.mark.slow), "push:squashed",
    pytest.param("push:lfs-deleted", marks=pytest.mark.slow), pytest.param("push:finalized", marks=pytest.mark.slow),
]  # fmt: skip


def assert_log_is_honest(hub_server, repo_id: str, old_weights: dict[str, bytes]) -> None:
    """What `unlearning_versions.json` says of every version holds: `purged` only when nothing can fetch it."""
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    log = json.loads(Path(hf_hub_download(repo_id, "unlearning_versions.json", revision="main")).read_text())
    tags = {t.name for t in api.list_repo_refs(repo_id, include_pull_requests=True).tags}
    for entry in log["versions"]:
        if entry["status"] == "purged":
            assert entry["tag"] not in tags
            for name, data in old_weights.items():
                assert not hub_server.is_reachable(data, repo_id), f"{name} still reachable, log says purged"
                assert not hub_server.is_stored(data, repo_id), f"{name} still stored, log says purged"


@pytest.mark.parametrize("point", PUSH_CRASH_POINTS)
def test_sigkill_of_a_push_never_leaves_old_weights_or_a_false_purged(point, run, template_run, hub_server, tmp_path):
    from huggingface_hub import CommitOperationAdd, HfApi

    ds = template_run["ds"]
    api = HfApi()
    repo_id = f"user/guarantees-{uuid.uuid4().hex[:8]}"
    run_main(tmp_path, "push", "--run", str(run), "--repo-id", repo_id)
    # What collaborators leave behind: a branch and a pull request whose history holds v1's weights.
    api.create_branch(repo_id, branch="experiment")
    api.create_commit(repo_id, [CommitOperationAdd("notes.txt", b"tuning ideas")], commit_message="ideas",
                      create_pr=True)  # fmt: skip
    user = ds["train"]["user_id"][0]
    k = shard_of(run / "apa", template_run["salts"], user)
    old = {name: (run / "apa" / name).read_bytes()
           for name in (f"shard_{k:02d}/adapter_model.safetensors", "apa_state.safetensors")}  # fmt: skip
    run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--users", user)
    code, output = forked("push", "--run", str(run), "--repo-id", repo_id, env_extra={CRASH_ENV: point})
    assert code == -9, output[-2000:]
    assert_log_is_honest(hub_server, repo_id, old)  # right after the kill
    run_main(tmp_path, "versions", "--repo-id", repo_id)  # finishes an interrupted purge first
    assert_log_is_honest(hub_server, repo_id, old)
    pushed = run_main(tmp_path, "push", "--run", str(run), "--repo-id", repo_id)
    assert pushed["version"] == 2
    for name, data in old.items():  # the pre-forget bytes: in no reachable revision and not in storage
        assert not hub_server.is_reachable(data, repo_id) and not hub_server.is_stored(data, repo_id), name
    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [t.name for t in refs.tags] == ["v2"] and [b.name for b in refs.branches] == ["main"]
    versions = {v["tag"]: v["status"] for v in run_main(tmp_path, "versions", "--repo-id", repo_id)["versions"]}
    assert versions == {"v1": "purged", "v2": "available"}
    assert_log_is_honest(hub_server, repo_id, old)


def test_no_reachable_revision_or_run_file_names_a_forgotten_user(run, template_run, hub_server, tmp_path):
    """Every byte of the run directory and of every reachable Hub revision, searched for the raw ids."""
    ds = template_run["ds"]
    repo_id = f"user/privacy-{uuid.uuid4().hex[:8]}"
    user = ds["train"]["user_id"][0]
    sample_ids = [s for s, u in zip(ds["train"]["sample_id"], ds["train"]["user_id"]) if u == user]
    run_main(tmp_path, "push", "--run", str(run), "--repo-id", repo_id)
    run_main(tmp_path, "forget", "--run", str(run), "--method", "apa", "--users", user)
    run_main(tmp_path, "push", "--run", str(run), "--repo-id", repo_id)
    blobs = hub_server.reachable_blobs(repo_id)
    everything = {**every_byte(run), **{f"hub:{k}": v for k, v in blobs.items()}}
    for where, data in everything.items():
        assert user.encode() not in data and not any(s.encode() in data for s in sample_ids), where
        if where.startswith("hub:"):
            assert b"@example.org" not in data, where  # no id of anybody is published
