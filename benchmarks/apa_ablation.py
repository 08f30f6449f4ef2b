"""The APA ablation of the issue's closing note (paper §4.4): partitions x weightings x τ, measured in one run.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/apa_ablation.py [--threads 1] [--seeds 0] [--json PATH]

Data, stand-in base model and shard recipe are the demo's (`hf_recunlearn.demo.DemoSettings`: synthetic users, the
base fully trained on held-out users by `pipeline.build_builtin_base`, the TALLRec LoRA recipe at demo scale), with
K = 4 shards:

1. Four partitions of the same training set, each trained once (K shard adapters and their validation errors):
   `semantic` (Algorithm 1, sample level: the paper's), `random` (SISA's), `user` (balanced random by user: the
   library's default for user requests) and `semantic_user` (Algorithm 1 over whole users). For each, how many
   shards a one-user deletion retrains (mean and max over the training users), from the shard ledger.
2. Per partition, inference only, level ND: the weightings adaptive (eqs. 7-8), uniform (the paper's "average"),
   semantic (similarity to the shard centres) and major (the adaptive argmax) for τ in `--temperatures` and the τ
   chosen on the validation set (adaptive: `select_temperature`, leave-one-out neighbours; semantic: validation
   AUC). Uniform and major do not depend on τ. Also adaptive at level D at its chosen τ, the mean single-shard AUC
   (the paper's "Bef. Agg."), and SISA: the random partition's shards with P(like) averaged (output level).
3. One LoRA adapter trained on all the training data with the same recipe (the paper's "Retraining").
4. Test AUC with 95% bootstrap intervals, and paired bootstrap intervals of AUC differences (the same `--resamples`
   resamples of the test set for every model) against the references named in each row.

The intervals cover test-set sampling only, not training randomness: `--seeds 0 1 2` repeats the whole run with
other data, base model, partitions and shard initialisations (each seed costs a full run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hf_recunlearn.demo import DemoSettings
from hf_recunlearn.metrics import bootstrap_auc, utility_metrics
from hf_recunlearn.models import load_model
from hf_recunlearn.pipeline import build_builtin_base, prepare_data, train_recommender
from hf_recunlearn.scoring import score
from hf_recunlearn.trainer import APATrainer


# name -> APAConfig overrides. Sample-level partitions are declared for sample requests (no warning).
PARTITIONS = {
    "semantic": {"partition_method": "semantic", "forget_unit": "sample"},
    "random": {"partition_method": "random", "forget_unit": "sample"},
    "user": {"partition_method": "user", "forget_unit": "user"},
    "semantic_user": {"partition_method": "semantic_user", "forget_unit": "user"},
}
# Uniform ignores τ; major is the argmax of a softmax, the same for any τ > 0.
TAU_WEIGHTINGS = ("adaptive", "semantic")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: tiny models, shared CPU)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="one full run per seed (default: 0)")
    p.add_argument("--num-shards", type=int, default=4, help="K (default 4, as in the demo and the paper)")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0],
                   help="τ grid, also the candidates τ is chosen from on the validation set")  # fmt: skip
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the test set (default 2000)")
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="inference batch size")
    p.add_argument("--num-users", type=int, default=None, help="override the demo's number of synthetic users")
    p.add_argument("--json", default=None, help="also write every number here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs = []
    # Training prints its own logs; they go to stderr with the progress bars, so stdout holds the tables alone.
    with tempfile.TemporaryDirectory(prefix="apa-ablation-") as work, contextlib.redirect_stdout(sys.stderr):
        for seed in args.seeds:
            runs.append(run_seed(args, seed, Path(work) / f"seed{seed}"))
    total = time.perf_counter() - start
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": total, "runs": runs}, indent=2))
    for result in runs:
        print(report_markdown(result))
    if len(runs) > 1:
        print(claims_across_seeds(runs))
    print(f"\nTotal {total / 60:.1f} min, {torch.get_num_threads()} thread(s).")


# --------------------------------------------------------------------------------------------------------------------
# Measuring


def run_seed(args, seed: int, work: Path) -> dict:
    overrides = {"num_users": args.num_users} if args.num_users else {}
    settings = DemoSettings(seed=seed, apa={"num_shards": args.num_shards}, **overrides)
    taus = [float(t) for t in args.temperatures]
    bs = args.batch_size
    bar = tqdm(total=3 + 2 * len(PARTITIONS) + 1, desc=f"seed {seed}", unit="stage")
    timings = {}

    def stage(name):
        bar.set_postfix_str(name)

    stage("data")
    prepared = prepare_data("synthetic", preset="e2urec", template="e2urec", history_len=settings.history_len,
                            pretrain_user_fraction=settings.pretrain_user_fraction, seed=seed,
                            num_users=settings.num_users)  # fmt: skip
    train, valid, test = (prepared.datasets[k] for k in ("train", "valid", "test"))
    labels, valid_labels = np.asarray(test["label"]), np.asarray(valid["label"])
    bar.update()

    stage("stand-in base model")
    t0 = time.perf_counter()
    base_dir = work / "base"
    build_builtin_base(prepared, base_dir, size=settings.model_size, seed=seed, **settings.base)
    base, tok = load_model(str(base_dir))
    timings["base_seconds"] = time.perf_counter() - t0
    bar.update()

    preds: dict[str, np.ndarray] = {}  # "partition|weighting|level|tau" -> P(like) on the test set
    shard_preds: dict[str, list[np.ndarray]] = {}
    partitions = {}
    for name, partition_overrides in PARTITIONS.items():
        stage(f"{name}: train {args.num_shards} shards")
        config = settings.apa_config(work / name, temperature_candidates=taus, per_device_eval_batch_size=bs,
                                     disable_tqdm=True, logging_steps=1_000_000, save_on_event=False,
                                     **partition_overrides)  # fmt: skip
        trainer = APATrainer(base, config, train_dataset=train, eval_dataset={"valid": valid}, processing_class=tok)
        report = trainer.train()
        bar.update()

        stage(f"{name}: inference")
        t0 = time.perf_counter()
        rec = trainer.recommender
        tau_adaptive = rec.aggregation.temperature
        semantic_valid = {
            tau: utility_metrics(valid_labels, rec.predict(valid, bs, weighting="semantic", temperature=tau))["auc"]
            for tau in taus
        }
        tau_semantic = max(taus, key=lambda t: (semantic_valid[t], -t))
        top_weight = {}
        for tau in taus:
            p, w = rec.predict(test, bs, weighting="adaptive", temperature=tau, return_weights=True)
            preds[key(name, "adaptive", "ND", tau)] = p
            top_weight[tau] = float(w.max(1).mean())
            preds[key(name, "semantic", "ND", tau)] = rec.predict(test, bs, weighting="semantic", temperature=tau)
        preds[key(name, "uniform", "ND")] = rec.predict(test, bs, weighting="uniform")
        preds[key(name, "major", "ND")] = rec.predict(test, bs, weighting="major", temperature=tau_adaptive)
        preds[key(name, "adaptive", "D", tau_adaptive)] = rec.predict(
            test, bs, weighting="adaptive", temperature=tau_adaptive, level="D"
        )
        shard_preds[name] = [rec.predict_shard(test, k, bs) for k in range(rec.num_shards)]
        if name == "random":  # SISA: the same random shards, P(like) averaged over the K passes
            preds["sisa"] = np.mean(shard_preds[name], axis=0)
        partitions[name] = {
            "method": trainer.apa_state.partition["method"],
            "shard_sizes": [s["num_samples"] for s in trainer.apa_state.shard_info],
            "shards_per_user": shards_per_user(trainer.apa_state.ledger),
            "train_seconds": report.seconds,
            "tau_adaptive": tau_adaptive,
            "tau_adaptive_valid_auc": report.temperature_scores,
            "tau_semantic": tau_semantic,
            "tau_semantic_valid_auc": semantic_valid,
            "mean_top_weight": top_weight,
            "inference_seconds": time.perf_counter() - t0,
        }
        bar.update()

    stage("one LoRA on all data")
    out = work / "single"
    single, single_metrics = train_recommender(base_dir, train, None, out, settings.recommender_config(
        out, per_device_eval_batch_size=bs, disable_tqdm=True, logging_steps=1_000_000))  # fmt: skip
    preds["retrain"] = score(single.model, single.processing_class, test, batch_size=bs)
    timings["retrain_seconds"] = single_metrics["train_seconds"]
    bar.update()

    stage("bootstrap")
    boot = {k: bootstrap_auc(labels, p, args.resamples, args.bootstrap_seed) for k, p in preds.items()}
    for name, shard_p in shard_preds.items():
        boot[f"{name}|bef_agg"] = np.mean([bootstrap_auc(labels, p, args.resamples, args.bootstrap_seed)
                                           for p in shard_p], axis=0)  # fmt: skip
    auc = {k: utility_metrics(labels, p)["auc"] for k, p in preds.items()}
    for name, shard_p in shard_preds.items():
        auc[f"{name}|bef_agg"] = float(np.mean([utility_metrics(labels, p)["auc"] for p in shard_p]))
    bar.update()
    bar.close()

    result = {
        "seed": seed,
        "num_shards": args.num_shards,
        "sizes": {"train": len(train), "valid": len(valid), "test": len(test), "pretrain": len(prepared.pretrain)},
        "temperatures": taus,
        "resamples": args.resamples,
        "timings": timings,
        "partitions": partitions,
        "auc": auc,
        "auc_ci95": {k: interval(v) for k, v in boot.items()},
    }
    result["comparisons"] = comparisons(result, boot)
    result["vs_uniform"] = {}
    for name, part in partitions.items():
        ref = key(name, "uniform", "ND")
        for k in (key(name, "adaptive", "ND", part["tau_adaptive"]), key(name, "semantic", "ND", part["tau_semantic"]),
                  key(name, "major", "ND")):  # fmt: skip
            result["vs_uniform"][k] = {"delta": auc[k] - auc[ref], "ci95": interval(boot[k] - boot[ref])}
    ref = key("random", "uniform", "ND")  # output averaging vs parameter averaging of the same random shards
    result["vs_uniform"]["sisa"] = {"delta": auc["sisa"] - auc[ref], "ci95": interval(boot["sisa"] - boot[ref])}
    return result


def key(partition: str, weighting: str, level: str, tau: float | None = None) -> str:
    return f"{partition}|{weighting}|{level}" + ("" if tau is None else f"|{tau:g}")


def shards_per_user(ledger: dict) -> dict:
    """How many shards hold each user's samples, i.e. how many a one-user deletion retrains."""
    shards = defaultdict(set)
    for k, shard in enumerate(ledger["shards"]):
        for _, user in shard:
            shards[user].add(k)
    touched = np.array([len(s) for s in shards.values()])
    return {"mean": float(touched.mean()), "max": int(touched.max()), "users": int(len(touched))}


def interval(values: np.ndarray) -> list[float]:
    lo, hi = np.nanpercentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def comparisons(result: dict, boot: dict) -> list[dict]:
    """The paired differences behind each of the paper's claims: AUC(a) - AUC(b), point estimate and 95% CI."""
    parts = result["partitions"]

    def best(partition, weighting="adaptive", level="ND"):
        tau = parts[partition]["tau_semantic" if weighting == "semantic" else "tau_adaptive"]
        return key(partition, weighting, level, tau)

    rows = []

    def add(claim, label, a, b):
        diff = boot[a] - boot[b]
        rows.append({"claim": claim, "comparison": label, "a": a, "b": b,
                     "delta": result["auc"][a] - result["auc"][b], "ci95": interval(diff)})  # fmt: skip

    claim = "semantic partition beats the others (§4.4.1)"
    for other in ("random", "user", "semantic_user"):
        add(claim, f"semantic vs {other} partition, adaptive at each τ*", best("semantic"), best(other))
    add(claim, "semantic vs random partition, uniform weights", key("semantic", "uniform", "ND"),
        key("random", "uniform", "ND"))  # fmt: skip
    claim = "sample-adaptive weights beat average, semantic and major (§4.4.2)"
    for partition in PARTITIONS:
        add(claim, f"{partition}: adaptive τ* vs uniform", best(partition), key(partition, "uniform", "ND"))
    for partition in PARTITIONS:
        add(claim, f"{partition}: adaptive τ* vs semantic τ*", best(partition), best(partition, "semantic"))
    for partition in PARTITIONS:
        add(claim, f"{partition}: adaptive τ* vs major", best(partition), key(partition, "major", "ND"))
    claim = "τ = 1000 (the paper's, tuned on validation)"
    for partition in PARTITIONS:
        add(claim, f"{partition}: adaptive τ=1000 vs τ*",
            key(partition, "adaptive", "ND", 1000.0) if 1000.0 in result["temperatures"] else best(partition),
            best(partition))  # fmt: skip
    claim = "APA(ND) >= SISA (Table 1)"
    for partition in ("semantic", "user"):
        add(claim, f"APA ({partition} partition, adaptive τ*) vs SISA", best(partition), "sisa")
    claim = "APA close to Retraining (Table 1: Δ -0.017 Movie, +0.011 Book)"
    for partition in ("semantic", "user"):
        add(claim, f"APA ({partition} partition, adaptive τ*) vs one LoRA on all data", best(partition), "retrain")
    add(claim, "SISA vs one LoRA on all data", "sisa", "retrain")
    claim = "D and ND perform alike (Table 1)"
    for partition in PARTITIONS:
        add(claim, f"{partition}: D vs ND (adaptive τ*)", best(partition, level="D"), best(partition))
    claim = "aggregation beats the mean single shard, Bef. Agg. (§4.2.1)"
    for partition in PARTITIONS:
        add(claim, f"{partition}: adaptive τ* vs mean shard", best(partition), f"{partition}|bef_agg")
    return rows


# --------------------------------------------------------------------------------------------------------------------
# Reporting


def fmt_ci(ci) -> str:
    return f"[{ci[0]:.4f}, {ci[1]:.4f}]"


def fmt_delta(delta, ci) -> str:
    return f"{delta:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]"


def verdict(ci) -> str:
    if ci[0] > 0:
        return "CI > 0"
    if ci[1] < 0:
        return "CI < 0"
    return "CI spans 0"


def report_markdown(result: dict) -> str:
    auc, ci, parts, taus = result["auc"], result["auc_ci95"], result["partitions"], result["temperatures"]
    diffs = {(r["a"], r["b"]): r for r in result["comparisons"]}
    lines = [
        f"\n## Seed {result['seed']}: K = {result['num_shards']}, train/valid/test = "
        f"{result['sizes']['train']}/{result['sizes']['valid']}/{result['sizes']['test']}, "
        f"{result['resamples']} bootstrap resamples",
        "",
        "Test AUC at level ND. τ* = chosen on the validation set; Δ vs uniform = same partition, paired bootstrap.",
        "",
        "| partition | weighting | " + " | ".join(f"τ={t:g}" for t in taus) + " | τ* | AUC at τ* [95% CI] | "
        "Δ vs uniform [95% CI] |",
        "|---|---|" + "---|" * len(taus) + "---|---|---|",
    ]
    for name, part in parts.items():
        for weighting in ("adaptive", "semantic", "uniform", "major"):
            if weighting in TAU_WEIGHTINGS:
                tau = part["tau_semantic" if weighting == "semantic" else "tau_adaptive"]
                k = key(name, weighting, "ND", tau)
                cells = [f"{auc[key(name, weighting, 'ND', t)]:.4f}" for t in taus]
                tau_text = f"{tau:g}"
            else:
                k = key(name, weighting, "ND")
                cells = ["(any)"] * len(taus)
                tau_text = "-"
            vs = result["vs_uniform"].get(k)
            delta = fmt_delta(vs["delta"], vs["ci95"]) if vs else "(reference)"
            lines.append(f"| {name} | {weighting} | " + " | ".join(cells)
                         + f" | {tau_text} | {auc[k]:.4f} {fmt_ci(ci[k])} | {delta} |")  # fmt: skip
    vs = result["vs_uniform"]["sisa"]
    lines += [
        "| random | SISA: P(like) averaged | " + " | ".join(["(any)"] * len(taus))
        + f" | - | {auc['sisa']:.4f} {fmt_ci(ci['sisa'])} | {fmt_delta(vs['delta'], vs['ci95'])} |",
        "| all data | one LoRA (Retraining) | " + " | ".join(["-"] * len(taus))
        + f" | - | {auc['retrain']:.4f} {fmt_ci(ci['retrain'])} | - |",
    ]
    lines += [
        "",
        "| partition | shards a one-user deletion retrains, mean (max) | shard sizes | train s | Bef. Agg. | "
        "adaptive ND τ* | adaptive D τ* | D − ND [95% CI] | mean top weight, τ=" + " / ".join(f"{t:g}" for t in taus)
        + " |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, part in parts.items():
        nd, d = key(name, "adaptive", "ND", part["tau_adaptive"]), key(name, "adaptive", "D", part["tau_adaptive"])
        spu = part["shards_per_user"]
        lines.append(
            f"| {name} | {spu['mean']:.2f} ({spu['max']}) | {part['shard_sizes']} | {part['train_seconds']:.0f} | "
            f"{auc[name + '|bef_agg']:.4f} | {auc[nd]:.4f} | {auc[d]:.4f} | "
            f"{fmt_delta(diffs[(d, nd)]['delta'], diffs[(d, nd)]['ci95'])} | "
            + " / ".join(f"{part['mean_top_weight'][t]:.2f}" for t in taus) + " |"
        )
    lines += [
        "",
        f"References: one LoRA on all data (Retraining) {auc['retrain']:.4f} {fmt_ci(ci['retrain'])}, trained in "
        f"{result['timings']['retrain_seconds']:.0f}s; SISA (random partition, output averaging) {auc['sisa']:.4f} "
        f"{fmt_ci(ci['sisa'])}.",
        "",
        "| claim | comparison (a vs b) | Δ AUC = a − b [95% CI] | here |",
        "|---|---|---|---|",
    ]
    for row in result["comparisons"]:
        lines.append(f"| {row['claim']} | {row['comparison']} | {fmt_delta(row['delta'], row['ci95'])} | "
                     f"{verdict(row['ci95'])} |")  # fmt: skip
    return "\n".join(lines)


def claims_across_seeds(runs: list[dict]) -> str:
    lines = ["\n## Across seeds", "", "| comparison | " + " | ".join(f"seed {r['seed']}" for r in runs) + " |",
             "|---|" + "---|" * len(runs)]  # fmt: skip
    for i, row in enumerate(runs[0]["comparisons"]):
        cells = [fmt_delta(r["comparisons"][i]["delta"], r["comparisons"][i]["ci95"]) for r in runs]
        lines.append(f"| {row['comparison']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
