"""
Train the project's reference adapters and publish them as versioned Hub repos, through the library's push path.

Released repos (under `--namespace`):

    hf-recunlearn-tiny-base          the built-in stand-in base model (a full model; not released with --model)
    hf-recunlearn-tallrec-synthetic  the original recommender: a TALLRec LoRA adapter on the base
    hf-recunlearn-e2urec-synthetic   that recommender after E2URec forgot every niche user (an adapter that applies
                                     on top of the original, merged into the base)
    hf-recunlearn-apa-synthetic      APA: one LoRA adapter per shard and the aggregation state

The data are synthetic MovieLens-style ratings (`hf_recunlearn.data.make_synthetic`). Each repo's card and the inputs
it was rendered from (`card.json`: the version log, metrics, receipt figures, metadata; counts only, never ids) are
written to `--cards_dir` (default: the top-level `model_cards/`), where `tests/test_released_cards.py` renders
every card again and fails if one drifted from the library's card generator.

    python scripts/release_adapters.py --dry_run --output_dir release/     # write the repos' folders, push nothing
    HF_TOKEN=... python scripts/release_adapters.py --namespace ORG         # push (HF_ENDPOINT for another Hub)
    python scripts/release_adapters.py --model Qwen/Qwen2.5-0.5B ...        # a real base, on a GPU

Everything is seeded: the tiny CPU run takes a few minutes (run it with `OMP_NUM_THREADS=1`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
LICENSE = "apache-2.0"


@dataclass
class ReleaseArguments:
    namespace: str = field(default="hf-recunlearn", metadata={"help": "Hub user or organisation of the repos."})
    endpoint: str | None = field(
        default=None, metadata={"help": "Hub endpoint (default: `HF_ENDPOINT`, else huggingface.co)."}
    )
    model: str | None = field(
        default=None, metadata={"help": "A real base model id or path (GPU); default: the built-in tiny model."}
    )
    dry_run: bool = field(default=False, metadata={"help": "Write the repos' folders to --output_dir, push nothing."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where the repos' folders go with --dry_run (default: a temporary folder)."}
    )
    cards_dir: str = field(
        default=str(ROOT / "model_cards"), metadata={"help": "Where each repo's README.md and card.json are recorded."}
    )
    num_users: int = field(default=80, metadata={"help": "Synthetic users."})
    num_shards: int = field(default=2, metadata={"help": "APA shards."})
    epochs: float = field(default=2.0, metadata={"help": "Epochs of the base, the recommender and the shards."})
    seed: int = field(default=0, metadata={"help": "Seed of the data, the models and the training runs."})
    private: bool = field(default=False, metadata={"help": "Create the repos private."})


def repo_ids(args: ReleaseArguments) -> dict[str, str]:
    names = {"tallrec": "tallrec", "e2urec": "e2urec", "apa": "apa"}
    ids = {key: f"{args.namespace}/hf-recunlearn-{name}-synthetic" for key, name in names.items()}
    if args.model is None:
        ids["base"] = f"{args.namespace}/hf-recunlearn-tiny-base"
    return ids


def published_as(model, name: str):
    """Record `name` as where `model` comes from, so adapters trained on it name it as their base (a Hub id)."""
    model.name_or_path = name
    model.config._name_or_path = name
    return model


def release(args: ReleaseArguments) -> dict[str, dict]:
    """Train every reference model, publish (or, with `dry_run`, write) each repo, and record its card."""
    import torch

    from hf_recunlearn import E2URecConfig, E2URecTrainer, RecConfig, RecTrainer, hub, make_forget_split
    from hf_recunlearn.metrics import utility_metrics
    from hf_recunlearn.models import load_model
    from hf_recunlearn.pipeline import build_builtin_base, niche_users, prepare_data
    from hf_recunlearn.scoring import score
    from hf_recunlearn.trainer import APAConfig, APATrainer

    torch.manual_seed(args.seed)
    ids = repo_ids(args)
    work = Path(tempfile.mkdtemp(prefix="release-"))
    output = Path(args.output_dir or work / "repos")
    use_cpu = not torch.cuda.is_available()
    prepared = prepare_data("synthetic", preset="e2urec", history_len=5, pretrain_user_fraction=0.3, seed=args.seed,
                            num_users=args.num_users)  # fmt: skip
    splits = prepared.datasets
    train, valid, test = splits["train"], splits["valid"], splits["test"]
    datasets = None  # synthetic data: no Hub dataset to name

    if args.model is None:
        build_builtin_base(prepared, work / "base", size="small", epochs=args.epochs, seed=args.seed)
        base_path, base_name = str(work / "base"), ids["base"]
    else:
        base_path = base_name = args.model

    def base_model():
        model, tokenizer = load_model(base_path)
        return published_as(model, base_name), tokenizer

    recipe = dict(learning_rate=2e-3, num_train_epochs=args.epochs, per_device_train_batch_size=16, warmup_steps=20,
                  lr_scheduler_type="cosine", seed=args.seed, use_cpu=use_cpu, report_to="none",
                  logging_strategy="no", disable_tqdm=True)  # fmt: skip

    # The original recommender (TALLRec LoRA), then E2URec forgets every niche user from it.
    model, tokenizer = base_model()
    original = RecTrainer(model, RecConfig(output_dir=str(work / "tallrec"), **recipe), train_dataset=train,
                          processing_class=tokenizer)  # fmt: skip
    original.train()
    original.save_model()
    original_auc = utility_metrics(test["label"], score(original.model, tokenizer, test))["auc"]

    request = make_forget_split(train, user_ids=niche_users(prepared))
    e2urec_args = E2URecConfig(output_dir=str(work / "e2urec"), num_train_epochs=args.epochs, augment_epochs=1,
                               augment_learning_rate=2e-4, seed=args.seed, use_cpu=use_cpu, report_to="none",
                               logging_strategy="no", disable_tqdm=True, stopping="fixed")  # fmt: skip
    e2urec = E2URecTrainer(original.model, args=e2urec_args, forget_dataset=request.forget,
                           retain_dataset=request.retain, eval_dataset=test, processing_class=tokenizer)  # fmt: skip
    e2urec.train()
    e2urec.save_model()
    e2urec_metrics = {
        "test_auc": utility_metrics(test["label"], score(e2urec.model, tokenizer, test))["auc"],
        "forget_auc": utility_metrics(request.forget["label"], score(e2urec.model, tokenizer, request.forget))["auc"],
    }

    # APA: one LoRA adapter per shard on the base.
    model, tokenizer = base_model()
    apa_args = APAConfig(output_dir=str(work / "apa"), num_shards=args.num_shards, salt_dir=str(work / "salts"),
                         **recipe)  # fmt: skip
    apa = APATrainer(model, apa_args, train_dataset=train, eval_dataset={"valid": valid, "test": test},
                     processing_class=tokenizer)  # fmt: skip
    apa.train()
    apa_auc = utility_metrics(test["label"], apa.recommender.predict(test))["auc"]

    releases = [  # (key, local folder, push arguments)
        ("tallrec", work / "tallrec", {"method": "tallrec", "event": "train", "metrics": {"test_auc": original_auc}}),
        (
            "e2urec",
            work / "e2urec",
            {
                "method": "e2urec",
                "event": "unlearn",
                "metrics": e2urec_metrics,
                "users_removed": len(request.user_ids),
            },
        ),  # fmt: skip
        ("apa", work / "apa", {"metrics": {"test_auc": apa_auc}}),
    ]
    if args.model is None:
        releases.insert(
            0, ("base", work / "base", {"method": "base", "event": "train", "library_name": "transformers"})
        )
    cards = {}
    for key, folder, kwargs in releases:
        kwargs = {**kwargs, "license": LICENSE, "datasets": datasets}
        if args.dry_run:
            cards[key] = hub.export_version(folder, ids[key], output / ids[key].split("/")[-1], **kwargs)
        elif key == "apa":
            cards[key] = hub.push(folder, ids[key], private=args.private, **kwargs).card
        else:
            cards[key] = hub.push_adapter(folder, ids[key], private=args.private, **kwargs).card
    if args.cards_dir:
        record_cards(cards, Path(args.cards_dir))
    shutil.rmtree(work / "salts", ignore_errors=True)  # the controller's secrets stay nowhere
    if args.output_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return cards


def record_cards(cards: dict[str, dict], cards_dir: Path) -> None:
    """Write each repo's card and the inputs it was rendered from to `cards_dir/<repo name>/`."""
    from hf_recunlearn.cards import model_card

    for inputs in cards.values():
        folder = cards_dir / inputs["repo_id"].split("/")[-1]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "card.json").write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str) + "\n")
        (folder / "README.md").write_text(str(model_card(**inputs)))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    # `huggingface_hub` reads HF_ENDPOINT once, when it is first imported (transformers imports it): set it first.
    endpoint = argparse.ArgumentParser(add_help=False)
    endpoint.add_argument("--endpoint")
    if endpoint.parse_known_args(argv)[0].endpoint:
        os.environ["HF_ENDPOINT"] = endpoint.parse_known_args(argv)[0].endpoint
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(ReleaseArguments).parse_args_into_dataclasses(argv)
    cards = release(args)
    where = args.output_dir if args.dry_run else args.endpoint or "the Hub"
    for inputs in cards.values():
        print(f"{inputs['repo_id']} {inputs['versions'][-1]['tag']} -> {where}")


if __name__ == "__main__":
    main()
