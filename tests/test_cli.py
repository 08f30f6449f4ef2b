import json
from pathlib import Path

import pytest

from hf_recunlearn.cli import main


FIXTURES = Path(__file__).parent / "fixtures"


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("demo", "train", "evaluate"):
        assert name in out


def test_unknown_data_spec_is_a_clear_error(tmp_path, capsys):
    code = main(["train", "--data", "imdb:/x", "--output-dir", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Unknown data spec 'imdb:/x'" in err and "movielens-100k:PATH" in err
    assert not (tmp_path / "run").exists()  # nothing written for bad input


@pytest.mark.parametrize(
    "spec",
    ["movielens-100k:ml-100k", "movielens-1m:ml-1m", "movielens-latest-small:ml-latest-small",
     "bookcrossing:bookcrossing", "tallrec:tallrec"],  # fmt: skip
)
def test_train_then_evaluate_on_each_real_format(spec, tmp_path):
    """The same code path (data spec → splits → built-in base → LoRA recommender) runs on every real format."""
    kind, rel = spec.split(":")
    run = tmp_path / "run"
    out = tmp_path / "train.json"
    args = ["train", "--data", f"{kind}:{FIXTURES / rel}", "--output-dir", str(run), "--history-len", "3",
            "--epochs", "1", "--batch-size", "4", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert {"auc", "acc", "logloss", "train_seconds"} <= set(result)
    assert (run / "original" / "adapter_config.json").is_file()
    assert main(["evaluate", "--run", str(run), "--json", str(tmp_path / "eval.json")]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["num_samples"] > 0 and 0.0 <= evaluated["acc"] <= 1.0


def test_evaluate_needs_a_run_directory(tmp_path, capsys):
    assert main(["evaluate", "--run", str(tmp_path)]) == 2
    assert "run.json" in capsys.readouterr().err


def _train(tmp_path, *extra):
    run = tmp_path / "run"
    args = ["train", "--data", f"movielens-100k:{FIXTURES / 'ml-100k'}", "--output-dir", str(run), "--history-len", "3",
            "--epochs", "1", "--batch-size", "4", *extra]  # fmt: skip
    assert main(args) == 0
    return run


def test_apa_train_then_forget_a_user(tmp_path):
    from datasets import load_from_disk

    run = _train(tmp_path, "--method", "apa", "--num-shards", "2")
    user = load_from_disk(str(run / "data" / "train"))["user_id"][0]
    before = {p.name: p.read_bytes() for p in (run / "apa").glob("shard_*/adapter_model.safetensors")}
    out = tmp_path / "forget.json"
    assert main(["forget", "--run", str(run), "--method", "apa", "--users", user, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["version"] == 2 and len(report["affected_shards"]) == 1 and report["samples_removed"] > 0
    text = "".join(p.read_text(errors="ignore") for p in (run / "apa").glob("*.json"))
    assert f'"{user}"' not in text  # the ledger stores salted hashes only


def test_e2urec_forget_from_cli(tmp_path):
    run = _train(tmp_path)
    out = tmp_path / "forget.json"
    code = main(["forget", "--run", str(run), "--method", "e2urec", "--forget-fraction", "0.3", "--epochs", "1",
                 "--json", str(out)])  # fmt: skip
    assert code == 0
    result = json.loads(out.read_text())
    assert result["samples_forgotten"] > 0 and result["trainable_parameters"] > 0
    assert {"test_auc", "forget_auc", "mia_auc", "original_mia_auc", "unlearning_time_s"} <= set(result)
    assert (run / "e2urec" / "adapter_config.json").is_file()


def test_forget_rejects_unknown_users_and_mismatched_methods(tmp_path, capsys):
    run = _train(tmp_path)
    assert main(["forget", "--run", str(run), "--method", "e2urec", "--users", "no-such-user"]) == 2
    assert "user_ids" in capsys.readouterr().err
    assert main(["forget", "--run", str(run), "--method", "apa", "--users", "1"]) == 2
    assert "train --method apa" in capsys.readouterr().err
