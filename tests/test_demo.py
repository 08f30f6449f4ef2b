import pytest

from cli_helpers import console_json


@pytest.mark.slow
def test_quick_demo_writes_every_stage(tmp_path):
    """
    `hf-recunlearn demo --quick` (the console script) runs every stage end to end and prints the documented keys;
    stderr has the stage bar and ends with the summary for people, whose numbers are the JSON's.
    """
    result, err = console_json("demo", "--quick", "--output-dir", str(tmp_path / "run"), with_stderr=True)
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

    assert "demo: 100%" in err and "5/5" in err  # the stage-level progress bar
    summary = err[err.rindex("The demo forgot") :]
    request, e2urec, apa = result["forget_request"], result["e2urec"], result["apa"]
    gap = "n/a" if e2urec["gap_closed"] is None else f"{e2urec['gap_closed']:.0%}"
    assert f"forgot {request['users']} niche users ({request['samples']} training samples)" in summary
    assert f"E2URec closed {gap} of the gap" in summary
    assert (
        f"in {e2urec['unlearn_seconds']:.1f} s, {e2urec['unlearn_vs_retrain']:.2f}x the "
        f"{result['retrain']['train_seconds']:.1f} s of retraining" in summary
    )
    assert (
        f"retraining {apa['shards_retrained']} of {result['settings']['apa']['num_shards']} shard adapters in "
        f"{apa['forget_seconds']:.1f} s, {apa['forget_vs_retrain_all']:.2f}x training them all" in summary
    )
    assert f"| E2URec | {e2urec['auc']:.3f} | {e2urec['jsd']:.4f} | {e2urec['unlearn_seconds']:.1f} (unlearn) |" in summary
