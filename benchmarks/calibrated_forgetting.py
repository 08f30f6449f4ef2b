"""Calibrated approximate forgetting (#13): the benchmark's approximate rows over several populations, in one run.

    PYTHONPATH=src python benchmarks/calibrated_forgetting.py --seeds 6 --workers 2 --json runs/calibrated.json

The same as `hf-recunlearn bench --seeds 6 --methods "E2URec,E2URec fixed α,NegGrad,NegKL,Bad-T"` (seed 0 is the
demo's population), with fewer timing repeats and a sparser audit to fit a shared 2-core CPU. The table goes to
stdout; the JSON is rewritten after every seed, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import logging
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from hf_recunlearn.bench import BenchSettings, format_markdown, run_bench  # noqa: E402


METHODS = ["NegGrad", "NegKL", "Bad-T", "E2URec", "E2URec fixed α"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first population (0: the demo's)")
    parser.add_argument("--json", required=True)
    parser.add_argument("--output-dir", default="runs/calibrated")
    parser.add_argument("--audit-reference", default="base", choices=["base", "cheap"])
    parser.add_argument("--audit-steps", type=int, default=15)
    parser.add_argument("--audit-samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="threads of each worker")
    parser.add_argument("--workers", type=int, default=1, help="seeds measured at once, one process each")
    args = parser.parse_args()
    torch.set_num_threads(args.threads * args.workers)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    audit = {"audit_steps": args.audit_steps, "audit_samples": args.audit_samples}
    settings = BenchSettings(seed=args.first_seed, timing_repeats=2, audit_reference=args.audit_reference,
                             common={"disable_tqdm": True}, unlearning=audit)  # fmt: skip
    result = run_bench("synthetic", seeds=args.seeds, settings=settings, output_dir=args.output_dir,
                       json_path=args.json, methods=METHODS, progress=False, workers=args.workers)  # fmt: skip
    print(format_markdown(result))


if __name__ == "__main__":
    main()
