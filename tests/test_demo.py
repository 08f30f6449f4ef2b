import pytest

from cli_helpers import console_json


@pytest.mark.slow
def test_quick_demo_writes_every_stage(tmp_path):
    """`hf-recunlearn demo --quick` (the console script) runs every stage end to end and prints the documented keys."""
    result = console_json("demo", "--quick", "--output-dir", str(tmp_path / "run"))  # the console script's stdout
    assert {"auc", "acc", "logloss", "train_seconds", "jsd", "forget_auc"} <= set(result["original"])
    assert {"auc", "jsd", "l2", "gap_closed", "mia_auc", "unlearn_seconds", "trainable_params"} <= set(result["e2urec"])
    assert {"auc", "train_seconds"} <= set(result["retrain"]) and "jsd" in result["floor"]
    assert {"auc", "forget_seconds", "retrain_all_seconds", "shards_retrained", "infer_ms_per_sample"} <= set(result["apa"])
    assert {"auc", "infer_ms_per_sample", "infer_vs_single"} <= set(result["sisa"])
    assert result["apa"]["version"] == 2 and result["apa"]["samples_removed"] > 0
    assert {"auc", "infer_ms_per_sample"} <= set(result["single_adapter"])
    assert result["apa"]["shards_retrained"] == 1  # a user lives in one shard under the default partition
    assert 0 < result["e2urec"]["trainable_params"]
    assert result["forget_request"]["users"] > 0
    assert (tmp_path / "run" / "e2urec" / "adapter_config.json").is_file()
    assert (tmp_path / "run" / "apa" / "apa_config.json").is_file()
