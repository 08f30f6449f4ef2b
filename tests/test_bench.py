"""`hf-recunlearn bench`: every row and column on a tiny configuration, the table, the plots, bad input."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hf_recunlearn.bench import (
    COLUMNS,
    EXTRA_COLUMNS,
    ROWS,
    aggregate_rows,
    calibration_criteria,
    format_markdown,
)
from hf_recunlearn.cli import main

from cli_helpers import console

APPROXIMATE = ("NegGrad", "NegKL", "Bad-T", "E2URec", "E2URec fixed α", "E2URec w/o L_FGT", "E2URec w/o L_REM")
CALIBRATED = ("NegGrad", "NegKL", "Bad-T", "E2URec")
EXACT = ("SISA", "RecEraser-style", "APA(D)", "APA(ND)", "APA(ND) average weights", "APA(ND) semantic weights")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    json_path, plots = root / "bench.json", root / "plots"
    argv = ["bench", "--tiny", "--num-shards", "2", "--output-dir", str(root / "runs"), "--json", str(json_path),
            "--plots", str(plots)]  # fmt: skip
    return argv, json_path, plots


@pytest.mark.slow  # every method on a tiny population (~100 s); `bench --methods` runs in the default suite
def test_bench_writes_every_row_and_column(bench_run):
    argv, json_path, plots = bench_run
    captured = console(*argv)  # the console script, in a process of its own
    assert captured.returncode == 0, captured.stderr[-3000:]
    assert captured.stdout == ""  # with --json PATH, stdout stays empty; the table is for people, on stderr
    result = json.loads(json_path.read_text())

    assert set(result) == {"config", "rows", "seeds", "criteria"}
    config = result["config"]
    assert config["data"] == "synthetic" and config["model"] == "builtin" and config["seeds"] == [0]
    [request] = config["forget_request"]
    assert request["users"] > 0 and request["samples"] > 0
    assert config["original_memorised"] in ([True], [False])
    assert [row["method"] for row in result["rows"]] == list(ROWS)
    rows = {row["method"]: row for row in result["rows"]}
    for row in result["rows"]:
        assert set(row) == {"method", *COLUMNS, *EXTRA_COLUMNS, "std"}, row["method"]
        for column in (
            "auc",
            "acc",
            "logloss",
            "mia_auc",
            "trainable_params",
            "infer_ms_per_sample",
            "infer_vs_single",
        ):
            assert row[column] is not None and math.isfinite(row[column]), (row["method"], column)
        assert 0.0 <= row["auc"] <= 1.0 and 0.0 <= row["mia_auc"] <= 1.0
        assert row["infer_ms_per_sample"] > 0 and row["trainable_params"] > 0

    # What applies where: distances to Retrain for the approximate rows (and the Original's gap, Retrain's floor);
    # unlearning time for everything that unlearned; shards for the exact methods.
    for name in ("Original", "Retrain", *APPROXIMATE):
        assert rows[name]["jsd"] >= 0.0 and rows[name]["l2"] >= 0.0, name
    for name in APPROXIMATE:  # the share of the gap closed exists only where there was a gap
        assert (rows[name]["gap_closed"] is not None) == config["original_memorised"][0], name
    for name in ("Single adapter", *EXACT):
        assert rows[name]["jsd"] is None and rows[name]["l2"] is None, name
    for name in ("Retrain", *APPROXIMATE, *EXACT):
        assert rows[name]["unlearn_seconds"] > 0 and rows[name]["unlearn_vs_retrain"] > 0, name
    for name in ("Original", "Single adapter"):
        assert rows[name]["unlearn_seconds"] is None and rows[name]["unlearn_vs_retrain"] is None
    assert rows["Retrain"]["unlearn_vs_retrain"] == pytest.approx(1.0)
    assert rows["Single adapter"]["infer_vs_single"] == pytest.approx(1.0)
    for name in EXACT:
        assert 1 <= rows[name]["shards_retrained"] <= 2, name
        assert rows[name]["one_user_seconds"] > 0 and 1 <= rows[name]["one_user_shards_retrained"] <= 2, name
    # A user partition keeps a user whole in one shard: one deletion retrains one shard.
    for name in ("RecEraser-style", "APA(ND)"):
        assert rows[name]["one_user_shards_retrained"] == 1, name
    for name in ("Original", "Retrain", "Single adapter", *APPROXIMATE):
        assert rows[name]["shards_retrained"] is None and rows[name]["one_user_seconds"] is None, name
    # The forgetting evidence: the audit, forget quality, the MIA suite and the relearning attack, for the references
    # and every approximate method; the stopping rule's decision for the calibrated ones only.
    for name in ("Original", "Retrain", *APPROXIMATE):
        for column in ("audit_loss_auc", "audit_target_loss_auc", "audit_ks_pvalue", "forget_quality", "mia_loss",
                       "mia_confidence", "mia_entropy", "mia_reference", "relearn_auc_after"):  # fmt: skip
            value = rows[name][column]
            assert value is not None and (math.isnan(value) or 0.0 <= value <= 1.0), (name, column)
        for column in ("audit_relative_auc", "audit_target_relative_auc"):
            value = rows[name][column]
            assert value is not None and (math.isnan(value) or -1.0 <= value <= 1.0), (name, column)
        assert rows[name]["audit_at_target"] in (0.0, 1.0)
    assert len({rows[name]["audit_target_loss_auc"] for name in ("Original", "Retrain", *APPROXIMATE)}) == 1
    assert set(result["seeds"][0]["audit_sanity"]) == {"base", "cheap"}
    assert rows["Retrain"]["mia_loss"] == pytest.approx(rows["Retrain"]["mia_auc"])  # the same attack, two names
    for name in CALIBRATED:
        assert rows[name]["stopped_at_step"] is None or rows[name]["stopped_at_step"] >= 0, name
    for name in ("Original", "Retrain", *APPROXIMATE[4:]):
        assert rows[name]["stopped_at_step"] is None, name
    assert set(result["criteria"]) == set(APPROXIMATE)
    # The E2URec rows train a LoRA student only; the ablations are the same method with one loss switched off.
    assert rows["E2URec"]["trainable_params"] < rows["Original"]["trainable_params"]
    assert rows["E2URec w/o L_FGT"]["trainable_params"] == rows["E2URec"]["trainable_params"]
    # One trained APA model: every weighting row shares its forgetting event but not its predictions.
    apa = [rows[name] for name in EXACT[2:]]
    assert len({row["unlearn_seconds"] for row in apa}) == 1
    assert len({row["auc"] for row in apa}) > 1 or len({row["mia_auc"] for row in apa}) > 1

    lines = captured.stderr.strip().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    assert header.count("|") == len(COLUMNS) + 2
    for name in ROWS:
        assert any(line.startswith(f"| {name} |") for line in lines), name
    assert any(line.startswith("| exact method |") for line in lines)

    for name in ("utility_vs_forgetting.png", "time.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_aggregate_rows_reports_mean_and_std_over_seeds():
    def row(auc, jsd, params):
        values = dict.fromkeys((*COLUMNS, *EXTRA_COLUMNS))
        return {"method": "E2URec", **values, "auc": auc, "jsd": jsd, "trainable_params": params}

    [merged] = aggregate_rows([[row(0.70, 0.01, 8)], [row(0.80, float("nan"), 8)], [row(0.90, 0.03, 8)]])
    assert merged["auc"] == pytest.approx(0.80) and merged["std"]["auc"] == pytest.approx(0.1)
    assert merged["jsd"] == pytest.approx(0.02)  # nan (an undefined value in one seed) is left out
    assert merged["trainable_params"] == 8 and merged["std"]["mia_auc"] is None and merged["mia_auc"] is None

    def seed(original, floor, unlearned, gap):
        rows = [dict.fromkeys((*COLUMNS, *EXTRA_COLUMNS)) | {"method": m, "jsd": j} for m, j in
                (("Original", original), ("Retrain", floor), ("E2URec", unlearned))]  # fmt: skip
        rows[2]["gap_closed"] = gap
        return rows

    # A seed with a tiny gap (0.0011 vs 0.0009) makes a per-seed share explode; the pooled share does not.
    pooled = aggregate_rows([seed(0.0447, 0.0016, 0.0268, 0.42), seed(0.0011, 0.0009, 0.0227, -108.0)])
    assert pooled[2]["gap_closed"] == pytest.approx((0.0458 - 0.0495) / (0.0458 - 0.0025))
    assert pooled[0]["gap_closed"] is None and pooled[2]["std"]["gap_closed"] is None

    requests = [{"users": 3, "samples": 30}, {"users": 4, "samples": 41}, {"users": 3, "samples": 28}]
    table = format_markdown({"config": {"data": "synthetic", "preset": "e2urec", "model": "builtin", "seeds": [0, 1, 2],
                                        "forget_request": requests, "original_memorised": [True, False, True],
                                        "noise_floor_jsd": 0.001},
                             "rows": [merged]})  # fmt: skip
    assert "| E2URec | 0.800 ± 0.100 |" in table and "—" in table
    assert "forget 3/4/3 users, 30/41/28 samples" in table and "2 of 3 seed(s) [0, 2]" in table


def test_calibration_criteria_read_each_seed_against_its_own_floor():
    def seed(number, floor, rows):
        return {"seed": number, "noise_floor_jsd": floor, "rows": [
            {"method": m, "jsd": j, "auc": auc, "mia_auc": mia, "unlearn_vs_retrain": ratio}
            for m, (j, auc, mia, ratio) in rows.items()]}  # fmt: skip

    per_seed = [
        # 0: a gap 20× the floor; E2URec closes (0.040 − 0.010) / (0.040 − 0.002) of it and lands at Retrain's AUC.
        seed(0, 0.002, {"Original": (0.040, 0.80, 0.60, None), "Retrain": (0.002, 0.76, 0.44, 1.0),
                        "E2URec": (0.010, 0.76, 0.50, 0.30)}),
        # 1: 1.5× the floor (nothing measurable to forget); E2URec moves JSD up by half a floor.
        seed(1, 0.004, {"Original": (0.006, 0.70, 0.50, None), "Retrain": (0.004, 0.71, 0.48, 1.0),
                        "E2URec": (0.008, 0.695, 0.47, 0.10)}),
        # 2: 2.5× the floor: in neither class, counted only by the seed-wise criteria.
        seed(2, 0.004, {"Original": (0.010, 0.72, 0.52, None), "Retrain": (0.004, 0.72, 0.50, 1.0),
                        "E2URec": (0.009, 0.72, 0.51, 0.20)}),
    ]
    [(method, c)] = calibration_criteria(per_seed).items()
    assert method == "E2URec"
    assert c["gap_seeds"] == [0] and c["gap_closed_mean"] == pytest.approx(0.030 / 0.038)
    assert c["flat_seeds"] == [1] and c["jsd_rise_max_over_floor"] == pytest.approx(0.5)
    assert c["test_auc_drop_max"] == pytest.approx(0.04)  # seed 0: 0.80 → 0.76, Retrain's own test AUC
    assert c["test_auc_below_retrain_max"] == pytest.approx(0.015)  # seed 1: 0.71 → 0.695
    assert c["mia_gap_max"] == pytest.approx(0.06) and c["time_ratio_mean"] == pytest.approx(0.2)
    table = format_markdown({"config": {"data": "synthetic", "preset": "e2urec", "model": "builtin", "seeds": [0, 1, 2],
                                        "forget_request": [{"users": 1, "samples": 1}] * 3,
                                        "original_memorised": [True] * 3, "noise_floor_jsd": 0.003},
                             "rows": [], "criteria": {"E2URec": c}})  # fmt: skip
    assert "| E2URec | [0] | 0.789 | [1] | 0.500 | 0.040 | 0.015 | 0.060 | 0.200 |" in table


def test_a_seed_failing_in_a_worker_stops_the_run_at_once(tmp_path):
    """`--workers`: an error in one seed is raised as it happens; the pool is terminated, not waited for."""
    import multiprocessing
    import time
    from dataclasses import replace

    from bench_jobs import fail_seed_one_else_wait

    from hf_recunlearn.bench import TINY, _imap_in_processes

    jobs = [(replace(TINY, seed=s), tmp_path / f"seed{s}") for s in range(3)]
    start = time.perf_counter()
    with pytest.raises(ValueError, match="seed 1 failed"):
        list(_imap_in_processes(fail_seed_one_else_wait, jobs, workers=2))
    assert time.perf_counter() - start < 120  # seed 0 alone would take 600 s
    assert multiprocessing.active_children() == []  # no worker left running seed 0 or 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds", "0"], "`seeds` must be >= 1"),
        (["--num-shards", "0"], "`num_shards` must be >= 1"),
        (["--forget-fraction", "1.5"], "`forget_fraction` must be in (0, 1)"),
        (["--data", "movielens-100k"], "movielens-100k"),
    ],
)
def test_bench_refuses_bad_input_before_writing_anything(tmp_path, capsys, argv, message):
    out, json_path = tmp_path / "runs", tmp_path / "bench.json"
    code = main(["bench", "--tiny", "--output-dir", str(out), "--json", str(json_path), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not json_path.exists()


def test_bench_runs_on_real_movielens_files_and_its_rows_check_out(tmp_path, capsys):
    """
    `bench` on MovieLens-100K in its distributed format (a 39-rating excerpt: mechanics only), two seeds measured at
    once in two worker processes (`--workers 2`); with no niche users the forget request is a seeded fraction of the
    training users. One row of each family is recomputed, seed by seed, from the models the workers kept: Retrain's
    test AUC (exact) and NegGrad's forget-set JSD to Retrain (approximate), with scikit-learn and SciPy rather than
    the library's metrics.
    """
    from scipy.spatial.distance import jensenshannon
    from sklearn.metrics import roc_auc_score

    from hf_recunlearn.bench import TINY
    from hf_recunlearn.data import make_forget_split
    from hf_recunlearn.models import load_model
    from hf_recunlearn.pipeline import prepare_data
    from hf_recunlearn.scoring import score

    data = f"movielens-100k:{Path(__file__).parent / 'fixtures' / 'ml-100k'}"
    runs = tmp_path / "runs"
    json_path = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--data", data, "--methods", "NegGrad", "--seeds", "2", "--workers", "2",
                 "--output-dir", str(runs), "--json", str(json_path)]) == 0  # fmt: skip
    result = json.loads(json_path.read_text())
    assert result["config"]["data"] == data and result["config"]["seeds"] == [0, 1]
    assert all(request["users"] >= 1 for request in result["config"]["forget_request"])
    # `--methods` runs only the named rows, with Original and Retrain as the references; per-seed rows stay.
    assert result["config"]["methods"] == ["Original", "Retrain", "NegGrad"]
    assert [row["method"] for row in result["rows"]] == ["Original", "Retrain", "NegGrad"]
    assert [seed["seed"] for seed in result["seeds"]] == [0, 1]
    for seed in result["seeds"]:
        assert [row["method"] for row in seed["rows"]] == ["Original", "Retrain", "NegGrad"]
        assert seed["noise_floor_jsd"] == seed["rows"][1]["jsd"]
    assert not any((runs / "seed0" / d).exists() for d in ("apa", "sisa", "single_adapter", "e2urec"))
    assert result["rows"][2]["infer_vs_single"] is None  # no Single adapter row was run to compare with
    assert result["rows"][1]["auc"] == pytest.approx(np.mean([s["rows"][1]["auc"] for s in result["seeds"]]))
    err = capsys.readouterr().err  # the table goes to stderr, the JSON to --json
    assert f"Data {data}" in err and "| NegGrad |" in err and "| E2URec |" not in err
    assert "bench: 100%" in err  # the stage-level progress bar, counting whole seeds from the workers
    # The closing summary for people: the JSON's numbers, formatted.
    neggrad = result["rows"][2]
    gap = "n/a" if neggrad["gap_closed"] is None else f"{neggrad['gap_closed']:.0%}"
    assert f"NegGrad closed {gap} of the gap to Retrain in {neggrad['unlearn_seconds']:.1f} s" in err
    assert f"on {data} with 2 seed(s)." in err

    for seed in result["seeds"]:
        # The same splits and forget request as the bench's seed (the sizes it reported say so).
        number = seed["seed"]
        prepared = prepare_data(data, preset="e2urec", template="e2urec", history_len=TINY.history_len,
                                pretrain_user_fraction=TINY.pretrain_user_fraction, seed=number)  # fmt: skip
        test = prepared.datasets["test"]
        request = make_forget_split(prepared.datasets["train"], fraction=TINY.forget_fraction, seed=number)
        assert seed["data_sizes"] == {name: len(prepared.datasets[name]) for name in prepared.datasets}
        assert result["config"]["forget_request"][number]["samples"] == len(request.forget)
        rows = {row["method"]: row for row in seed["rows"]}

        retrain, tokenizer = load_model(str(runs / f"seed{number}" / f"retrain_seed{number}"))
        assert rows["Retrain"]["auc"] == pytest.approx(roc_auc_score(test["label"], score(retrain, tokenizer, test)))

        neggrad, _ = load_model(str(runs / f"seed{number}" / "neggrad"))
        p, q = score(neggrad, tokenizer, request.forget), score(retrain, tokenizer, request.forget)
        jsd = np.mean([jensenshannon([1 - a, a], [1 - b, b]) ** 2 for a, b in zip(p, q)])
        assert rows["NegGrad"]["jsd"] == pytest.approx(jsd, rel=1e-4, abs=1e-9)


def test_bench_refuses_unknown_methods(tmp_path, capsys):
    code = main(["bench", "--tiny", "--methods", "NegGrad,E2URecc", "--output-dir", str(tmp_path / "runs"),
                 "--json", str(tmp_path / "bench.json")])  # fmt: skip
    assert code == 2
    assert "E2URecc" in capsys.readouterr().err and not (tmp_path / "runs").exists()
