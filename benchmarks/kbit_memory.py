"""Step time and peak memory of fp32 vs bf16 vs 4-bit (QLoRA) bases, for RecTrainer, E2URec and APA, side by side.

Every (method, precision) pair runs in a fresh process, one after the other, on the same llama-style model (built
from a config, saved, loaded back in the precision under test) and the same batch. Reported per pair:

- `weights MB`: bytes of the base model's parameters and buffers as loaded (4-bit: packed weights plus their
  quantization state; the unquantized embeddings and norms stay in the compute dtype);
- `step ms`: median wall time of an optimisation step after the warm-up steps (RecTrainer: a LoRA step; E2URec: a
  student step on forgotten + paired retained samples; APA: a shard adapter's step);
- `peak MB`: on a GPU `torch.cuda.max_memory_allocated` over the whole run (E2URec: teacher outputs and its augmented
  adapter included; APA: every shard, the validation errors and aggregated scoring of the test split); on the CPU
  the rise of the peak resident set size (`VmHWM`) over what the process held before loading the model;
- `total s`: wall time of the whole run.

CPU peak RSS counts everything the process touched (allocator caches, the tokenizer, datasets), so on a small model
differences below a few MB are noise; the weights column is exact. bitsandbytes must be installed
(`pip install hf_recunlearn[kbit]`).

    PYTHONPATH=src python benchmarks/kbit_memory.py [--hidden 512] [--layers 4] [--batch-size 8] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import warnings


PRECISIONS = ("fp32", "bf16", "4bit")
METHODS = ("RecTrainer", "E2URec", "APA")


def _rss_peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_now_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_rss_peak() -> None:
    """Reset `VmHWM` to the current RSS (Linux: writing 5 to `clear_refs`)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _model_bytes(model) -> int:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return sum(t.numel() * t.element_size() for t in base.state_dict().values() if hasattr(t, "numel"))


def _bytes_per_4bit_weight(model) -> float | None:
    """Bytes per weight of the `Linear4bit` layers: packed 4-bit values plus their quantization state."""
    total, weights = 0, 0
    for module in model.modules():
        if type(module).__name__ == "Linear4bit":
            total += sum(t.numel() * t.element_size() for t in module.state_dict().values() if hasattr(t, "numel"))
            weights += module.in_features * module.out_features
    return total / weights if weights else None


def build_assets(workdir: str, hidden: int, layers: int, seed: int = 0) -> dict:
    """The data splits and a llama-style checkpoint of the chosen size, saved in `workdir`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_recunlearn.data import build_datasets, make_forget_split, make_synthetic
    from hf_recunlearn.models import build_tokenizer

    data = make_synthetic(num_users=40, num_items=60, interactions_per_user=12, seed=seed)
    ds = build_datasets(data, preset="apa", history_len=5, sizes=(96, 32, 32), seed=seed)
    tokenizer = build_tokenizer([p for split in ds.values() for p in split["prompt"]])
    import torch

    torch.manual_seed(seed)
    heads = max(1, hidden // 64)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    path = os.path.join(workdir, "base")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    users = sorted(set(ds["train"]["user_id"]))
    forget = make_forget_split(ds["train"], user_ids=users[:4]).forget
    for name, split in {**ds, "forget": forget}.items():
        split.save_to_disk(os.path.join(workdir, name))
    return {"params": sum(p.numel() for p in LlamaForCausalLM(config).parameters())}


class _StepTimer:
    def __init__(self, warmup: int):
        from transformers import TrainerCallback

        timer = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                timer._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kwargs):
                timer._count += 1
                if timer._count > warmup:
                    timer.times.append(time.perf_counter() - timer._start)

        self.times: list[float] = []
        self._count = 0
        self._start = 0.0
        self.callback = Callback()


def run_one(method: str, precision: str, workdir: str, batch_size: int, steps: int, warmup: int, threads: int):
    """One (method, precision) run in this process; returns its measurements."""
    import torch

    torch.set_num_threads(threads)
    from datasets import load_from_disk

    from hf_recunlearn.models import load_model
    from hf_recunlearn.trainer import APAConfig, APATrainer, E2URecConfig, E2URecTrainer, RecConfig, RecTrainer

    warnings.filterwarnings("ignore")
    ds = {name: load_from_disk(os.path.join(workdir, name)) for name in ("train", "valid", "test", "forget")}
    cuda = torch.cuda.is_available()
    bf16 = precision == "bf16"
    common = dict(
        output_dir=os.path.join(workdir, f"out-{method}-{precision}"),
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=32,
        lora_r=8,
        lora_alpha=16,
        learning_rate=1e-3,
        bf16=bf16,
        use_cpu=not cuda,
        logging_strategy="no",
        disable_tqdm=True,
        report_to="none",
        seed=0,
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_now_mb()
        _reset_rss_peak()
    start = time.perf_counter()
    load = {"fp32": dict(torch_dtype="float32"), "bf16": dict(torch_dtype="bfloat16"),
            "4bit": dict(torch_dtype="float32", load_in_4bit=True)}[precision]  # fmt: skip
    model, tokenizer = load_model(os.path.join(workdir, "base"), **load)
    weights = _model_bytes(model)
    per_weight = _bytes_per_4bit_weight(model)
    timer = _StepTimer(warmup)
    total_steps = steps + warmup
    if method == "RecTrainer":
        trainer = RecTrainer(model, RecConfig(**common, max_steps=total_steps), train_dataset=ds["train"],
                             processing_class=tokenizer, callbacks=[timer.callback])  # fmt: skip
        trainer.train()
    elif method == "E2URec":
        args = E2URecConfig(**common, max_steps=total_steps, augment_method="lora", augment_epochs=1.0,
                            augment_batch_size=batch_size)  # fmt: skip
        trainer = E2URecTrainer(model, args=args, train_dataset=ds["train"], forget_dataset=ds["forget"],
                                processing_class=tokenizer, callbacks=[timer.callback])  # fmt: skip
        trainer.train()
    else:
        args = APAConfig(**common, max_steps=total_steps, num_shards=2, num_neighbors=8, save_on_event=False,
                         salt_dir=os.path.join(workdir, "salt"))  # fmt: skip
        trainer = APATrainer(model, args, train_dataset=ds["train"], processing_class=tokenizer,
                             eval_dataset={"valid": ds["valid"], "test": ds["test"]}, callbacks=[timer.callback])  # fmt: skip
        trainer.train()
        trainer.predict(ds["test"])
    total = time.perf_counter() - start
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = _rss_peak_mb() - before
    return {
        "method": method,
        "precision": precision,
        "device": "cuda" if cuda else "cpu",
        "weights_mb": weights / 2**20,
        "bytes_per_4bit_weight": per_weight,
        "step_ms": 1000 * statistics.median(timer.times) if timer.times else float("nan"),
        "steps_timed": len(timer.times),
        "peak_mb": peak,
        "total_s": total,
    }


def _child(queue, *args):
    try:
        queue.put(run_one(*args))
    except Exception as exc:  # report the failure in the table instead of losing the other rows
        queue.put({"method": args[0], "precision": args[1], "error": f"{type(exc).__name__}: {exc}"})


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=512, help="Hidden size of the llama-style model (default 512).")
    parser.add_argument("--layers", type=int, default=4, help="Decoder layers (default 4).")
    parser.add_argument("--batch-size", type=int, default=8, help="Per-device batch size (default 8).")
    parser.add_argument("--steps", type=int, default=4, help="Timed steps per run, after the warm-up (default 4).")
    parser.add_argument("--warmup", type=int, default=1, help="Untimed steps first (default 1).")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    args = parser.parse_args(argv)

    ctx = mp.get_context("spawn")  # a fresh process per run: its peak memory is that run's alone
    rows = []
    with tempfile.TemporaryDirectory(prefix="kbit-bench-") as workdir:
        info = build_assets(workdir, args.hidden, args.layers)
        for method in args.methods:
            for precision in args.precisions:
                queue = ctx.Queue()
                proc = ctx.Process(target=_child, args=(queue, method, precision, workdir, args.batch_size,
                                                        args.steps, args.warmup, args.threads))  # fmt: skip
                proc.start()
                row = queue.get()
                proc.join()
                rows.append(row)
                print(f"done {method} {precision}", flush=True, file=__import__("sys").stderr)
    device = next((r["device"] for r in rows if "device" in r), "?")
    peak_name = "peak MB (cuda max allocated)" if device == "cuda" else "peak MB (RSS rise)"
    print(f"llama-style model: hidden {args.hidden}, {args.layers} layers, {info['params'] / 1e6:.1f}M parameters; "
          f"batch {args.batch_size}; {args.steps} timed steps after {args.warmup}; device {device}, "
          f"{args.threads} thread(s)\n")  # fmt: skip
    print(f"| method | precision | weights MB | step ms | {peak_name} | total s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | {r['precision']} | error: {r['error']} | | | |")
            continue
        print(f"| {r['method']} | {r['precision']} | {r['weights_mb']:.1f} | {r['step_ms']:.0f} | "
              f"{r['peak_mb']:.0f} | {r['total_s']:.1f} |")  # fmt: skip
    per_weight = next((r["bytes_per_4bit_weight"] for r in rows if r.get("bytes_per_4bit_weight")), None)
    if per_weight:
        print(f"\n4-bit linear layers: {per_weight:.4f} bytes per weight (packed NF4 + quantization state)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "params": info["params"], "rows": rows}, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
