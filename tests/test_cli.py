import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import load_from_disk

import hf_recunlearn
from hf_recunlearn.cli import json_safe, main

from cli_helpers import console_json, run_side_by_side, runs_this_checkout


FIXTURES = Path(__file__).parent / "fixtures"
ML100K = f"movielens-100k:{FIXTURES / 'ml-100k'}"
TINY = ["--history_len", "3", "--num_train_epochs", "1", "--per_device_train_batch_size", "4"]
BASELINES = ("neggrad", "negkl", "badt")


def run_cli(capsys, *args) -> dict:
    """`hf-recunlearn ARGS` in this process; stdout must be exactly one JSON document (no NaN), which is returned."""
    capsys.readouterr()
    assert main(list(args)) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    return json.loads(out, parse_constant=lambda name: pytest.fail(f"{name} in stdout"))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}  # fmt: skip


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("demo", "train", "forget", "evaluate", "push", "pull", "versions", "bench"):
        assert name in out


def test_options_are_generated_from_the_configs(capsys):
    """Every TrainingArguments field and every field of the method's config is an option, under its Python name."""

    def help_of(*argv) -> str:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--help"])
        assert exit_info.value.code == 0
        return capsys.readouterr().out

    train = help_of("train")
    for option in ("--bf16", "--gradient_accumulation_steps", "--lr_scheduler_type", "--report_to", "--lora_r",
                   "--use_lora", "--load_in_4bit", "--output_dir", "--overwrite", "--data", "--json", "--num_threads"):
        assert f"{option} " in train or f"{option}\n" in train, option  # fmt: skip
    assert "--config run.yaml" in train
    apa = help_of("train", "--method", "apa")
    assert all(f"--{name} " in apa for name in ("num_shards", "partition_method", "min_users_per_event", "bf16"))
    e2urec = help_of("forget", "--method", "e2urec")
    assert all(f"--{name} " in e2urec for name in ("alpha", "beta", "teacher_form", "users", "learning_rate"))


def test_json_output_has_no_nan():
    document = json_safe({"a": float("nan"), "b": np.float32(1.5), "c": [np.inf, np.int64(3)], "d": Path("x")})
    assert document == {"a": None, "b": 1.5, "c": [None, 3], "d": "x"}
    json.dumps(document, allow_nan=False)


def test_unknown_data_spec_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--data", "imdb:/x", "--output_dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown data spec 'imdb:/x'" in err and "movielens-100k:PATH" in err
    assert not (tmp_path / "run").exists()  # nothing written for bad input


def test_a_config_value_out_of_range_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["train", "--output_dir", str(tmp_path / "run"), "--lora_r", "0"]) == 2
    assert "`lora_r` must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "spec",
    ["movielens-100k:ml-100k", "movielens-1m:ml-1m", "movielens-latest-small:ml-latest-small",
     "bookcrossing:bookcrossing", "tallrec:tallrec"],  # fmt: skip
)
def test_train_then_evaluate_on_each_real_format(spec, tmp_path, capsys):
    """The same code path (data spec → splits → built-in base → LoRA recommender) runs on every real format."""
    kind, rel = spec.split(":")
    run = tmp_path / "run"
    trained = run_cli(capsys, "train", "--data", f"{kind}:{FIXTURES / rel}", "--output_dir", str(run), *TINY)
    assert (run / "original" / "adapter_config.json").is_file()
    evaluated = run_cli(capsys, "evaluate", "--run", str(run))
    assert evaluated["num_samples"] > 0 and evaluated["split"] == "test"
    # The model on disk is the one train measured: the same test metrics.
    for key in ("auc", "acc", "logloss"):
        if trained[key] is None:  # one class in a tiny test split: AUC undefined, null (not NaN) in the JSON
            assert evaluated[key] is None
        else:
            assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


def test_evaluate_needs_a_run_directory(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def in_process_json(*args: str, online: bool = False) -> dict:
    """`hf-recunlearn ARGS` in this process: exit 0 and exactly one JSON document on stdout (no NaN), returned."""
    import contextlib
    import io

    import huggingface_hub.constants

    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout):
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", not online)
        code = main(list(args))
    assert code == 0, f"hf-recunlearn {' '.join(args)}: exit {code}"
    return json.loads(stdout.getvalue(), parse_constant=lambda name: pytest.fail(f"{name} in stdout of {args[0]}"))


def one_after_another(*jobs):
    return [job() for job in jobs]


# The default suite runs the commands in this process; the slow suite runs the same ones through the console script,
# each a process of its own (20-40 s of imports each on 2 cores, so two at a time).
RUNNERS = {"in-process": (in_process_json, one_after_another), "console": (console_json, run_side_by_side)}


@pytest.fixture(scope="module", params=["in-process", pytest.param("console", marks=pytest.mark.slow)])
def console_runs(request, tmp_path_factory, hub_server_session):
    """
    Every run-level command once per module: `train` (the TALLRec recipe on the MovieLens-100K excerpt); then
    `evaluate` of that run, and on a copy of it an E2URec forget, `push`, `verify`, `versions` and `pull`. Tests
    assert on what the commands printed and wrote.
    """
    run_json, side_by_side = RUNNERS[request.param]
    root = tmp_path_factory.mktemp(request.param)
    runs = {name: root / name for name in ("tallrec", "e2urec")}
    out = {"train": run_json("train", "--data", ML100K, "--output_dir", str(runs["tallrec"]), *TINY)}
    shutil.copytree(runs["tallrec"], runs["e2urec"])
    train_rows = list(load_from_disk(str(runs["tallrec"] / "data" / "train"))["user_id"])
    users, repo_id = sorted(set(train_rows))[:2], f"user/cli-e2urec-{uuid.uuid4().hex[:6]}"
    out.update(train_rows=train_rows, users=users, repo_id=repo_id, pulled=root / "pulled")

    def e2urec_then_publish():
        run = str(runs["e2urec"])
        out["e2urec"] = run_json("forget", "--run", run, "--method", "e2urec", "--users", ",".join(users),
                                 "--num_train_epochs", "1", "--augment_epochs", "1", "--alpha", "8")  # fmt: skip
        out["push"] = run_json("push", "--run", run, "--repo_id", repo_id, "--license", "apache-2.0", "--tags",
                               "movies", "--datasets", "user/ml-100k", online=True)  # fmt: skip
        out["verify"] = run_json("verify", "--repo_id", repo_id, "--revision", "v1", online=True)
        out["versions"] = run_json("versions", "--repo_id", repo_id, online=True)
        out["pull"] = run_json("pull", "--repo_id", repo_id, "--revision", "v1", "--output_dir", str(out["pulled"]),
                               online=True)  # fmt: skip

    def evaluate():
        out["evaluate"] = run_json("evaluate", "--run", str(runs["tallrec"]))

    side_by_side(e2urec_then_publish, evaluate)
    return runs, out


@pytest.fixture(scope="module")
def tallrec_run(tmp_path_factory):
    """One LoRA recommender trained by `train` on the MovieLens-100K excerpt; tests work on copies."""
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--data", ML100K, "--output_dir", str(run), *TINY, "--json", str(run.parent / "t")]) == 0
    return run


@pytest.fixture
def run_copy(tallrec_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(tallrec_run, path)
    return path


def test_train_into_an_existing_run_needs_overwrite_and_replaces_it_whole(run_copy, tmp_path, capsys):
    """Without --overwrite nothing changes (exit 2); with it, a YAML --config sets the recipe and no stale model
    of the old run (e2urec/, original/) survives."""
    (run_copy / "e2urec").mkdir()
    (run_copy / "e2urec" / "adapter_config.json").write_text("{}")  # a stale result `push` would prefer
    before = tree_digest(run_copy)
    config = tmp_path / "apa.yaml"
    config.write_text(
        f"method: apa\ndata: {ML100K}\nhistory_len: 3\nnum_train_epochs: 1\nper_device_train_batch_size: 4\n"
        "num_shards: 2\ngradient_accumulation_steps: 2\nlr_scheduler_type: linear\nlearning_rate: 0.003\n"
        "lora_r: 4\nlora_alpha: 8\nseed: 7\n"
    )
    argv = ["train", "--config", str(config), "--output_dir", str(run_copy)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--overwrite" in err
    assert tree_digest(run_copy) == before

    # A non-run folder with files is never deleted, even with --overwrite.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["train", "--config", str(config), "--output_dir", str(tmp_path / "mine"), "--overwrite"]) == 2
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"

    result = run_cli(capsys, *argv, "--overwrite", "--lora_alpha", "4")  # the command line overrides the file
    assert result["method"] == "apa" and result["num_shards"] == 2 and result["version"] == 1
    assert not (run_copy / "e2urec").exists() and not (run_copy / "original").exists()
    recipe = json.loads((run_copy / "apa" / "controller" / "recipe.json").read_text())["training_arguments"]
    assert (recipe["num_shards"], recipe["gradient_accumulation_steps"]) == (2, 2)
    assert recipe["lr_scheduler_type"] == "linear"
    assert (recipe["learning_rate"], recipe["lora_r"], recipe["lora_alpha"], recipe["seed"]) == (0.003, 4, 4, 7)
    info = json.loads((run_copy / "run.json").read_text())
    assert info["method"] == "apa" and [e["event"] for e in info["events"]] == ["train"]

    # An exact forget retrains with that recipe; an option that changes it is refused, naming it.
    assert main(["forget", "--run", str(run_copy), "--method", "apa", "--users", "1", "--lora_r", "8"]) == 2
    assert "`lora_r` = 8 (stored: 4)" in capsys.readouterr().err


@pytest.mark.slow  # with the console-script runs, which need it
def test_the_console_script_runs_this_checkout():
    assert Path(runs_this_checkout()).resolve() == Path(hf_recunlearn.__file__).resolve()


def test_train_then_evaluate_gives_the_metrics_train_reported(console_runs):
    """`evaluate` scores the model on disk: the test metrics `train` reported, to the last digit."""
    runs, out = console_runs
    trained, evaluated = out["train"], out["evaluate"]
    assert (trained["method"], Path(trained["output_dir"])) == ("tallrec", runs["tallrec"])
    assert (evaluated["method"], evaluated["split"]) == ("tallrec", "test")
    assert evaluated["num_samples"] == len(load_from_disk(str(runs["tallrec"] / "data" / "test")))
    assert trained["auc"] is not None and 0.0 <= trained["auc"] <= 1.0
    for key in ("auc", "acc", "logloss"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-6), key


def test_e2urec_forget_and_push_report_the_real_counts(console_runs, hub_server):
    from huggingface_hub import ModelCard
    from safetensors.torch import load_file

    runs, out = console_runs
    users, forgot, repo_id = out["users"], out["e2urec"], out["repo_id"]
    rows = sum(u in users for u in out["train_rows"])
    assert rows > 2 and (forgot["users_forgotten"], forgot["samples_forgotten"]) == (2, rows)
    assert forgot["trainable_parameters"] > 0 and 0.0 <= forgot["mia_auc"] <= 1.0
    # The calibrated default: audited against the run's base model (which never saw these users), from step 0 on.
    audit = forgot["audit"]
    assert audit["audit_target"]["forget_groups"] == 2 and audit["audit_target"]["forget_rows"] == rows
    assert audit["audits"] >= 1 and audit["original_relative_auc"] is not None
    # Its target is the base's view: the LoRA original with its adapter off scores as the base on disk does.
    assert (runs["e2urec"] / "original" / "adapter_config.json").is_file()  # the LoRA original (train's default)
    from hf_recunlearn.audit import forget_audit_for_request
    from hf_recunlearn.data import make_forget_split
    from hf_recunlearn.models import load_model
    from hf_recunlearn.trainer import E2URecConfig

    base, tokenizer = load_model(str(runs["e2urec"] / "base"))
    splits = {name: load_from_disk(str(runs["e2urec"] / "data" / name)) for name in ("train", "valid", "test")}
    request = make_forget_split(splits["train"], user_ids=users)
    defaults = E2URecConfig(output_dir=str(runs["e2urec"] / "unused"))
    expected = forget_audit_for_request(base, tokenizer, request, splits, seed=defaults.seed)[0]
    expected = expected.sample(defaults.audit_samples, seed=defaults.seed).summary()
    assert audit["audit_target"]["holdout_rows"] == expected["holdout_rows"]
    assert audit["audit_target"]["target_relative_auc"] == pytest.approx(expected["target_relative_auc"], abs=1e-6)
    assert forgot["original_test_auc"] == pytest.approx(out["train"]["auc"], abs=1e-6)  # the model train wrote
    run = runs["e2urec"]
    assert (run / "e2urec" / "adapter_config.json").is_file()
    events = json.loads((run / "run.json").read_text())["events"]
    assert [(e["event"], e["method"]) for e in events] == [("train", "original"), ("forget", "e2urec")]

    pushed = out["push"]
    assert (pushed["method"], pushed["tag"]) == ("e2urec", "v1")  # the model the latest event wrote
    assert (pushed["run_event"]["users_forgotten"], pushed["run_event"]["samples_forgotten"]) == (2, rows)
    [version] = out["versions"]["versions"]
    assert version["users_removed"] == 2 and version["metrics"]["forget_auc"] == pytest.approx(forgot["forget_auc"])
    assert out["verify"]["ok"] is True and out["verify"]["receipts"] >= 1
    card = ModelCard.load(repo_id)
    assert (card.data.license, card.data.datasets) == ("apache-2.0", ["user/ml-100k"]) and "movies" in card.data.tags
    # The event's users (no sample count) and its receipt in the card's log.
    assert "| v1 | unlearn | - | 2 | available | [" in card.text
    # `pull` of v1 returns the adapter the forget wrote, weight for weight.
    assert Path(out["pull"]["output_dir"]) == out["pulled"]
    pulled = load_file(str(out["pulled"] / "adapter_model.safetensors"))
    local = load_file(str(run / "e2urec" / "adapter_model.safetensors"))
    assert pulled.keys() == local.keys() and all(torch.equal(pulled[k], local[k]) for k in local)


def test_forget_rejects_unknown_users_and_mismatched_methods(run_copy, capsys):
    before = tree_digest(run_copy)
    assert main(["forget", "--run", str(run_copy), "--method", "e2urec", "--users", "no-such-user"]) == 2
    assert "user_ids" in capsys.readouterr().err
    assert main(["forget", "--run", str(run_copy), "--method", "apa", "--users", "1"]) == 2
    assert "train --method apa" in capsys.readouterr().err
    both = ["--users", "1", "--forget_fraction", "0.2"]
    assert main(["forget", "--run", str(run_copy), "--method", "e2urec", *both]) == 2
    assert "exactly one of `--users`" in capsys.readouterr().err
    assert tree_digest(run_copy) == before


def test_thread_default_is_one_for_the_builtin_model_unless_told(monkeypatch):
    import os

    import torch

    from hf_recunlearn.cli import CLIArguments, _configure_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        _configure_threads(CLIArguments(), small_model=False)  # a real model: PyTorch's default is left alone
        assert torch.get_num_threads() == 2 and "OMP_NUM_THREADS" not in os.environ
        _configure_threads(CLIArguments(), small_model=True)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"  # children too
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        torch.set_num_threads(2)
        _configure_threads(CLIArguments(), small_model=True)  # the user's OMP_NUM_THREADS wins
        assert torch.get_num_threads() == 2
        _configure_threads(CLIArguments(num_threads=2), small_model=True)  # and --num_threads over everything
        assert torch.get_num_threads() == 2
        with pytest.raises(ValueError, match="`num_threads` must be >= 0, got -1"):
            _configure_threads(CLIArguments(num_threads=-1), small_model=True)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def baseline_forgets(tallrec_run, tmp_path_factory):
    """NegGrad, NegKL and Bad-T each forget the same user from the original, one after another in one copy of the run."""
    run = tmp_path_factory.mktemp("baselines") / "run"
    shutil.copytree(tallrec_run, run)
    train_rows = list(load_from_disk(str(run / "data" / "train"))["user_id"])
    user, results = min(train_rows), {}
    for method in BASELINES:
        document = run.parent / f"{method}.json"
        argv = ["forget", "--run", str(run), "--method", method, "--users", user, "--num_train_epochs", "1"]
        assert main([*argv, "--json", str(document)]) == 0
        results[method] = json.loads(document.read_text())
    return run, train_rows.count(user), results


@pytest.mark.parametrize("method", BASELINES)
def test_every_approximate_baseline_forgets_through_the_cli(baseline_forgets, tallrec_run, method):
    run, rows, results = baseline_forgets
    result = results[method]
    assert rows > 0 and (result["users_forgotten"], result["samples_forgotten"]) == (1, rows)
    trained = json.loads((tallrec_run.parent / "t").read_text())
    assert result["original_test_auc"] == pytest.approx(trained["auc"], abs=1e-6)  # the model train wrote
    assert list((run / method).glob("*.safetensors"))  # the unlearned model (the baselines: every weight)
    # Three forgets into one run: each is recorded, in order, with its counts.
    events = json.loads((run / "run.json").read_text())["events"]
    assert [(e["event"], e["method"]) for e in events] == [("train", "original"), *(("forget", m) for m in BASELINES)]
    [event] = [e for e in events if e["method"] == method]
    assert (event["users_forgotten"], event["samples_forgotten"]) == (1, rows)


def test_sisa_trains_and_forgets_samples_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    trained = run_cli(capsys, "train", "--data", ML100K, "--output_dir", str(run), *TINY, "--method", "sisa",
                      "--num_shards", "2")  # fmt: skip
    assert (trained["method"], trained["version"], trained["num_shards"]) == ("sisa", 1, 2)
    sample = load_from_disk(str(run / "data" / "train"))["sample_id"][0]
    forgot = run_cli(capsys, "forget", "--run", str(run), "--method", "sisa", "--samples", sample)
    assert (forgot["version"], forgot["samples_removed"], len(forgot["affected_shards"])) == (2, 1, 1)
    assert sample not in load_from_disk(str(run / "data" / "train"))["sample_id"]
    # The new version is the one on disk: `evaluate` gives the test metrics the forget measured and recorded.
    recorded = json.loads((run / "run.json").read_text())["metrics"]["sisa"]
    evaluated = run_cli(capsys, "evaluate", "--run", str(run))
    assert evaluated["version"] == recorded["version"] == 2
    assert evaluated["auc"] == pytest.approx(recorded["auc"], abs=1e-6)


@pytest.mark.slow  # four process starts (torch, transformers, peft: 20-40 s each on 2 cores); in-process above
def test_every_other_forget_method_through_the_console_script(tallrec_run, tmp_path):
    """NegGrad, NegKL, Bad-T and SISA (`--samples`) through the console script: one JSON document, the real counts."""
    run, sisa = tmp_path / "run", tmp_path / "sisa"
    shutil.copytree(tallrec_run, run)
    assert main(["train", "--data", ML100K, "--output_dir", str(sisa), *TINY, "--method", "sisa", "--num_shards", "2",
                 "--json", str(tmp_path / "sisa.json")]) == 0  # fmt: skip
    train_rows = list(load_from_disk(str(run / "data" / "train"))["user_id"])
    user, sample = min(train_rows), load_from_disk(str(sisa / "data" / "train"))["sample_id"][0]
    results = {}

    def baselines():
        for method in BASELINES:
            results[method] = console_json("forget", "--run", str(run), "--method", method, "--users", user,
                                           "--num_train_epochs", "1")  # fmt: skip

    def sisa_forget():
        results["sisa"] = console_json("forget", "--run", str(sisa), "--method", "sisa", "--samples", sample)

    run_side_by_side(baselines, sisa_forget)
    for method in BASELINES:
        assert (results[method]["users_forgotten"], results[method]["samples_forgotten"]) == (1, train_rows.count(user))
        assert list((run / method).glob("*.safetensors")), method
    events = json.loads((run / "run.json").read_text())["events"]
    assert [e["method"] for e in events] == ["original", *BASELINES]
    assert (results["sisa"]["version"], results["sisa"]["samples_removed"]) == (2, 1)
    assert sample not in load_from_disk(str(sisa / "data" / "train"))["sample_id"]
    assert json.loads((sisa / "run.json").read_text())["events"][-1]["samples_forgotten"] == 1
