import hashlib
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from hf_recunlearn.cli import json_safe, main


FIXTURES = Path(__file__).parent / "fixtures"
ML100K = f"movielens-100k:{FIXTURES / 'ml-100k'}"
TINY = ["--history_len", "3", "--num_train_epochs", "1", "--per_device_train_batch_size", "4"]


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


def test_e2urec_forget_and_push_report_the_real_counts(run_copy, hub_server, capsys):
    from datasets import load_from_disk
    from huggingface_hub import ModelCard

    train = load_from_disk(str(run_copy / "data" / "train"))
    users = sorted(set(train["user_id"]))[:2]
    rows = sum(u in users for u in train["user_id"])
    forgot = run_cli(capsys, "forget", "--run", str(run_copy), "--method", "e2urec", "--users", ",".join(users),
                     "--num_train_epochs", "1", "--augment_epochs", "1", "--alpha", "8")  # fmt: skip
    assert (forgot["users_forgotten"], forgot["samples_forgotten"]) == (2, rows)
    assert forgot["trainable_parameters"] > 0 and 0.0 <= forgot["mia_auc"] <= 1.0
    # The calibrated default: audited against the run's base model (which never saw these users), from step 0 on.
    audit = forgot["audit"]
    assert audit["audit_target"]["forget_groups"] == 2 and audit["audit_target"]["forget_rows"] == rows
    assert audit["audits"] >= 1 and audit["original_relative_auc"] is not None
    assert (run_copy / "e2urec" / "adapter_config.json").is_file()
    events = json.loads((run_copy / "run.json").read_text())["events"]
    assert [(e["event"], e["method"]) for e in events] == [("train", "original"), ("forget", "e2urec")]

    repo_id = f"user/cli-e2urec-{uuid.uuid4().hex[:6]}"
    pushed = run_cli(capsys, "push", "--run", str(run_copy), "--repo_id", repo_id, "--license", "apache-2.0",
                     "--tags", "movies", "--datasets", "user/ml-100k")  # fmt: skip
    assert (pushed["method"], pushed["tag"]) == ("e2urec", "v1")  # the model the latest event wrote
    assert (pushed["run_event"]["users_forgotten"], pushed["run_event"]["samples_forgotten"]) == (2, rows)
    [version] = run_cli(capsys, "versions", "--repo_id", repo_id)["versions"]
    assert version["users_removed"] == 2 and version["metrics"]["forget_auc"] == pytest.approx(forgot["forget_auc"])
    card = ModelCard.load(repo_id)
    assert (card.data.license, card.data.datasets) == ("apache-2.0", ["user/ml-100k"]) and "movies" in card.data.tags
    # The event's users (no sample count) and its receipt in the card's log.
    assert "| v1 | unlearn | - | 2 | available | [" in card.text


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


@pytest.mark.parametrize("method", ["neggrad", "negkl", "badt"])
def test_every_approximate_baseline_forgets_through_the_cli(run_copy, capsys, method):
    from datasets import load_from_disk

    train = load_from_disk(str(run_copy / "data" / "train"))
    user = sorted(set(train["user_id"]))[0]
    result = run_cli(capsys, "forget", "--run", str(run_copy), "--method", method, "--users", user,
                     "--num_train_epochs", "1")  # fmt: skip
    assert (result["users_forgotten"], result["samples_forgotten"]) == (1, train["user_id"].count(user))
    assert list((run_copy / method).glob("*.safetensors"))  # the unlearned model (the baselines: every weight)
    latest = json.loads((run_copy / "run.json").read_text())["events"][-1]
    assert (latest["event"], latest["method"]) == ("forget", method)
    assert latest["samples_forgotten"] == result["samples_forgotten"]


def test_sisa_trains_and_forgets_samples_through_the_cli(tmp_path, capsys):
    from datasets import load_from_disk

    run = tmp_path / "run"
    trained = run_cli(capsys, "train", "--data", ML100K, "--output_dir", str(run), *TINY, "--method", "sisa",
                      "--num_shards", "2")  # fmt: skip
    assert (trained["method"], trained["version"], trained["num_shards"]) == ("sisa", 1, 2)
    sample = load_from_disk(str(run / "data" / "train"))["sample_id"][0]
    forgot = run_cli(capsys, "forget", "--run", str(run), "--method", "sisa", "--samples", sample)
    assert (forgot["version"], forgot["samples_removed"], len(forgot["affected_shards"])) == (2, 1, 1)
    assert sample not in load_from_disk(str(run / "data" / "train"))["sample_id"]
    assert run_cli(capsys, "evaluate", "--run", str(run))["version"] == 2
