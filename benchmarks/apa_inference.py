"""APA inference and forgetting cost, side by side in one run.

    PYTHONPATH=src python benchmarks/apa_inference.py [--threads 1] [--json results.json]

What it does (offline, synthetic data, a llama-style stand-in base model):

1. Turns a random tiny model into a stand-in "pretrained LLM" by fully fine-tuning it on samples disjoint from the
   APA data (as the demo does), so the LoRA shards have something to build on.
2. Trains APA (K shards, user partition, ND, adaptive weights) on the APA split (train / valid / test).
3. Inference, ms per test sample, same batch size for every batched method:
   - one adapter (a PEFT model with one shard adapter: the cost of serving a single retrained model);
   - APA one pass, ND and D: all K LoRA paths inside the layers, weights included, routing on the embedding mean;
   - APA with the exact (Algorithm 1, last hidden state) routing representation: one extra base pass per batch;
   - SISA output ensemble: K forward passes, P(like) averaged;
   - PEFT `add_weighted_adapter(..., "cat")` per sample (batch 1; a subset of the test set).
4. Utility (test AUC) of each aggregation, the routing representations, τ chosen on validation, and one LoRA
   trained on all the data (Retrain, the gold standard).
5. Forgetting one user (shards retrained, wall time) vs retraining all K shards.

Numbers vary 15-40% between identical runs on a shared CPU; compare the ratios printed within one run.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict
from peft import PeftModel, get_peft_model, set_peft_model_state_dict

from hf_recunlearn.apa_recommender import APARecommender
from hf_recunlearn.data import build_samples, make_synthetic
from hf_recunlearn.metrics import bootstrap_auc, utility_metrics
from hf_recunlearn.models import build_tiny_model, build_tokenizer, load_model
from hf_recunlearn.partition import prompt_representations
from hf_recunlearn.scoring import score
from hf_recunlearn.trainer import APAConfig, APATrainer, RecConfig, RecTrainer


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="base", help="tiny model size: tiny | small | base (default: base)")
    p.add_argument("--num-shards", type=int, default=4)
    p.add_argument("--sizes", type=int, nargs=3, default=(1024, 500, 1000), help="APA train/valid/test (APA §4.1)")
    p.add_argument("--pretrain-samples", type=int, default=3000, help="samples for the stand-in base model")
    p.add_argument("--pretrain-epochs", type=float, default=5.0, help="epochs of the stand-in base model's fine-tune")
    p.add_argument("--base-dir", default=None, help="save the stand-in base model here, or load it if already there")
    p.add_argument("--history-len", type=int, default=10, help="rated items listed in each prompt")
    p.add_argument("--epochs", type=float, default=3.0, help="LoRA epochs per shard (and for Retrain)")
    p.add_argument("--lr", type=float, default=5e-3,
                   help="LoRA learning rate (TALLRec's 1e-4 barely moves a tiny model: the shards would not differ)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=32, help="inference batch size of the batched methods")
    p.add_argument("--per-sample-subset", type=int, default=100, help="test samples for the per-sample PEFT merge")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (the best is kept)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--forget-requests", type=int, default=3, help="one-user forget requests timed (median kept)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args()


def make_data(args):
    # Fewer items with stronger quality than the generator's defaults: a from-scratch tiny model learns this set
    # (test AUC about 0.8) within the benchmark's time, so the utility columns are not at chance.
    data = make_synthetic(num_users=300, num_items=120, interactions_per_user=40, quality_strength=1.5, noise=0.4,
                          seed=args.seed)  # fmt: skip
    samples = build_samples(data, template="e2urec", history_len=args.history_len)
    order = np.random.default_rng(args.seed).permutation(len(samples))
    n_train, n_valid, n_test = args.sizes
    bounds = np.cumsum([0, args.pretrain_samples, n_train, n_valid, n_test])
    if bounds[-1] > len(samples):
        raise SystemExit(f"Need {bounds[-1]} samples, the synthetic data has {len(samples)}; lower --sizes.")
    parts = {
        name: samples.select(sorted(order[lo:hi].tolist()))
        for name, lo, hi in zip(("pretrain", "train", "valid", "test"), bounds[:-1], bounds[1:])
    }
    return DatasetDict(parts)


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="apa-bench-") as work:  # models, versions and the ledger's salt
        run(args, Path(work))


def run(args, work: Path):
    ds = make_data(args)
    common = dict(use_cpu=True, disable_tqdm=True, logging_steps=10_000, per_device_eval_batch_size=args.batch_size,
                  report_to="none", seed=args.seed)  # fmt: skip

    # 1. Stand-in pretrained model (reused from --base-dir when it is there).
    t0 = time.perf_counter()
    if args.base_dir and (Path(args.base_dir) / "config.json").is_file():
        base, tok = load_model(args.base_dir, torch_dtype=torch.float32)
        origin = f"loaded from {args.base_dir}"
    else:
        tok = build_tokenizer([p for split in ds.values() for p in split["prompt"]] + list(ds["train"]["completion"]))
        base = build_tiny_model(tok, "causal", args.size, seed=args.seed)
        pre = RecTrainer(base, RecConfig(output_dir=str(work / "pre"), use_lora=False, learning_rate=1e-3,
                                         num_train_epochs=args.pretrain_epochs, lr_scheduler_type="constant",
                                         per_device_train_batch_size=16, **common),  # fmt: skip
                         train_dataset=ds["pretrain"], processing_class=tok)
        pre.train()
        origin = f"{args.size}, full fine-tune on {len(ds['pretrain'])} samples x {args.pretrain_epochs:g} epochs"
        if args.base_dir:
            base.save_pretrained(args.base_dir)
            tok.save_pretrained(args.base_dir)
    base.eval()
    print(f"stand-in base: {origin} in {time.perf_counter() - t0:.1f}s; "
          f"base test AUC {utility_metrics(ds['test']['label'], score(base, tok, ds['test']))['auc']:.4f}")  # fmt: skip

    # 2. APA.
    lora = dict(learning_rate=args.lr, num_train_epochs=args.epochs, per_device_train_batch_size=16, **common)
    config = APAConfig(output_dir=str(work / "apa"), num_shards=args.num_shards, salt_dir=str(work / "salts"),
                       num_neighbors=20, **lora)  # fmt: skip
    trainer = APATrainer(base, config, train_dataset=ds["train"],
                         eval_dataset={"valid": ds["valid"], "test": ds["test"]}, processing_class=tok)  # fmt: skip
    train_report = trainer.train()
    rec = trainer.recommender
    K = rec.num_shards
    test, labels = ds["test"], np.asarray(ds["test"]["label"])

    # 3. Inference cost.
    bs, rep = args.batch_size, args.repeats
    single = get_peft_model(base, copy.deepcopy(rec.state.lora_config))
    set_peft_model_state_dict(single, rec.state.shard_adapters[0])
    single.eval()
    exact_state = copy.copy(rec.state)
    exact_state.aggregation = dataclasses.replace(rec.state.aggregation, routing_representation="last_hidden")
    exact_state.valid_reps = torch.from_numpy(prompt_representations(base, tok, ds["valid"], "last_hidden"))
    timings, preds = {}, {}
    try:
        timings["one adapter"], preds["one adapter (shard 0)"] = timed(lambda: score(single, tok, test, rec.answer_tokens, batch_size=bs), rep)
    finally:
        single.unload()
    exact = APARecommender(base, tok, exact_state)
    methods = {
        "APA one pass, ND (weights incl.)": lambda: rec.predict(test, bs, level="ND"),
        "APA one pass, D (weights incl.)": lambda: rec.predict(test, bs, level="D"),
        "APA ND, exact routing (2 passes)": lambda: exact.predict(test, bs, level="ND"),
        f"SISA output ensemble ({K} passes)": lambda: rec.predict(test, bs, weighting="uniform", level="output"),
    }
    for name, fn in methods.items():
        timings[name], preds[name] = timed(fn, rep)
    subset = test.select(range(min(args.per_sample_subset, len(test))))
    timings["PEFT add_weighted_adapter per sample"] = per_sample_peft(base, tok, rec, subset) * len(test) / len(subset)
    n = len(test)
    ms = {k: 1000 * v / n for k, v in timings.items()}

    # 4. Utility.
    auc = {k: utility_metrics(labels, p)["auc"] for k, p in preds.items()}
    for weighting in ("uniform", "semantic", "major"):
        auc[f"APA ND, {weighting} weights"] = utility_metrics(labels, rec.predict(test, bs, weighting=weighting))["auc"]
    shard_aucs = [utility_metrics(labels, rec.predict_shard(test, k, bs))["auc"] for k in range(K)]
    auc["mean single shard (Bef. Agg.)"] = float(np.mean(shard_aucs))
    tau_rec = APARecommender(base, tok, copy.deepcopy(rec.state))
    tau_scores = tau_rec.select_temperature(ds["valid"], [1.0, 10.0, 100.0, 1000.0], bs)
    chosen = tau_rec.aggregation.temperature
    auc[f"APA ND, tau={chosen:g} chosen on valid"] = utility_metrics(labels, tau_rec.predict(test, bs))["auc"]
    _, w = rec.predict(test, bs, return_weights=True)
    _, w_exact = exact.predict(test, bs, return_weights=True)
    top_weight = float(w.max(1).mean())
    cheap_p, exact_p = preds["APA one pass, ND (weights incl.)"], preds["APA ND, exact routing (2 passes)"]
    routing = {
        "auc_difference_ci95": paired_bootstrap_auc_difference(labels, cheap_p, exact_p, seed=args.seed),
        "top_shard_agreement": float((w.argmax(1) == w_exact.argmax(1)).mean()),
        "mean_abs_p_difference": float(np.abs(preds["APA one pass, ND (weights incl.)"]
                                              - preds["APA ND, exact routing (2 passes)"]).mean()),  # fmt: skip
    }
    t0 = time.perf_counter()
    retrain = RecTrainer(base, RecConfig(output_dir=str(work / "retrain"), **lora), train_dataset=ds["train"], processing_class=tok)
    retrain.train()
    retrain_seconds = time.perf_counter() - t0
    auc["Retrain (one LoRA on all data)"] = utility_metrics(labels, score(retrain.model, tok, test, batch_size=bs))["auc"]
    retrain.model.unload()

    # 5. Forgetting one user vs retraining every shard: three separate one-user requests, the median kept.
    users = list(dict.fromkeys(ds["train"]["user_id"]))[: args.forget_requests]
    forget_reports = [trainer.forget(user_ids=[u]) for u in users]
    forget_report = sorted(forget_reports, key=lambda r: r.seconds)[len(forget_reports) // 2]

    # Report.
    base_ms = ms["one adapter"]
    print(f"\nInference, {n} test samples, batch {bs}, {torch.get_num_threads()} thread(s), K={K}:")
    print(f"{'method':42s} {'ms/sample':>10s} {'x one adapter':>14s}")
    for name, value in ms.items():
        print(f"{name:42s} {value:10.3f} {value / base_ms:14.2f}")
    print("\nTest AUC:")
    for name, value in auc.items():
        print(f"  {name:44s} {value:.4f}")
    print(f"  (routing cost of the one-pass representation: AUC {auc['APA one pass, ND (weights incl.)'] - auc['APA ND, exact routing (2 passes)']:+.4f} "
          f"vs the exact representation, 95% CI {routing['auc_difference_ci95'][0]:+.4f}..{routing['auc_difference_ci95'][1]:+.4f}; "
          f"same top shard for {100 * routing['top_shard_agreement']:.0f}% of samples, "
          f"mean |dP| {routing['mean_abs_p_difference']:.4f})")
    print(f"  (mean top weight {top_weight:.2f} at tau=1000; leave-one-out valid AUC per tau: "
          f"{ {t: round(v, 4) for t, v in tau_scores.items()} })")  # fmt: skip
    print(f"\nForgetting one user ({len(forget_reports)} requests, median shown; all: "
          f"{[round(r.seconds, 2) for r in forget_reports]}s):")
    print(f"  retrain all {K} shards (train event): {train_report.seconds:7.2f}s  (shards only: {sum(train_report.shard_seconds.values()):.2f}s)")
    print(f"  forget one user:                      {forget_report.seconds:7.2f}s  (shards {forget_report.affected_shards}, "
          f"{forget_report.samples_removed} samples; shard training {sum(forget_report.shard_seconds.values()):.2f}s)")  # fmt: skip
    print(f"  ratio: {forget_report.seconds / train_report.seconds:.2f}x   (Retrain, one LoRA on all data: {retrain_seconds:.2f}s)")
    agg = ms["APA one pass, ND (weights incl.)"] / base_ms
    goals = {
        "aggregated one pass <= 1.5x one adapter (goal 1.25x)": agg <= 1.5,
        "SISA inference >= 3x one adapter": ms[f"SISA output ensemble ({K} passes)"] / base_ms >= 3.0,
        "forget one user <= 0.30x retrain all shards": forget_report.seconds / train_report.seconds <= 0.30,
    }
    print("\nGoals:")
    for name, ok in goals.items():
        print(f"  [{'ok' if ok else 'MISSED'}] {name}")
    if args.json:
        payload = {"ms_per_sample": ms, "auc": auc, "tau_valid_auc": tau_scores, "mean_top_weight": top_weight,
                   "routing": routing, "forget_all": [r.to_dict() for r in forget_reports],
                   "train_seconds": train_report.seconds, "forget": forget_report.to_dict(),
                   "retrain_one_lora_seconds": retrain_seconds, "goals": goals, "args": vars(args),
                   "threads": torch.get_num_threads()}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))


def paired_bootstrap_auc_difference(labels, p, q, resamples: int = 500, seed: int = 0) -> tuple[float, float]:
    """95% interval of AUC(p) - AUC(q) over paired bootstrap resamples of the test set."""
    diffs = bootstrap_auc(labels, p, resamples, seed) - bootstrap_auc(labels, q, resamples, seed)
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return float(lo), float(hi)


def per_sample_peft(base, tok, rec, data) -> float:
    """Seconds to score `data` one sample at a time, merging the shards with PEFT for each sample's weights."""
    K = rec.num_shards
    _, weights = rec.predict(data, 32, return_weights=True)  # the weights themselves are not what is timed here
    model = get_peft_model(base, copy.deepcopy(rec.state.lora_config), adapter_name="shard_0")
    names = [f"shard_{k}" for k in range(K)]
    for k, name in enumerate(names):
        if k:
            model.add_adapter(name, copy.deepcopy(rec.state.lora_config))
        set_peft_model_state_dict(model, rec.state.shard_adapters[k], adapter_name=name)
    model.eval()
    try:
        start = time.perf_counter()
        for i in range(len(data)):
            model.add_weighted_adapter(names, weights[i].tolist(), "merged", combination_type="cat")
            model.set_adapter("merged")
            score(model, tok, data.select([i]), rec.answer_tokens, batch_size=1)
            model.set_adapter(names[0])
            model.delete_adapter("merged")
        return time.perf_counter() - start
    finally:
        model.unload()


if __name__ == "__main__":
    main()
