"""
The one model-card generator: every card the library writes comes from [`model_card`], one citation table and one
template per kind of repo, rendered with `huggingface_hub.ModelCard.from_template`.

- `model_cards/apa.md`: an APA model (shard adapters + aggregation state), local or a versioned Hub repo.
- `model_cards/adapter.md`: one model (a PEFT adapter, or a full model) made by a trainer: an unlearned recommender
  (E2URec, NegGrad, NegKL, Bad-T), a TALLRec recommender, the built-in base; local or a versioned Hub repo.

Callers: the trainers' `save_model()` / `create_model_card()` (the card next to the saved model, from the trainer's
state), and `hf_recunlearn.hub.push` / `push_adapter` (the card of a pushed version, with its unlearning log; every
trainer's `push_to_hub()` goes through them). A method is cited one way everywhere: the trainers' `_paper` and the
cards both read [`CITATIONS`]. The inputs of a card are plain JSON values, so a card can be recorded and rendered
again (the top-level `model_cards/` of the released repos is checked that way).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


# method -> title, authors, year, venue, url, arxiv (when there is a preprint), bibtex
CITATIONS: dict[str, dict] = {
    "apa": {
        "title": "Exact and Efficient Unlearning for Large Language Model-based Recommendation",
        "authors": "Hu et al.",
        "year": 2024,
        "venue": "arXiv",
        "arxiv": "2404.10327",
        "url": "https://arxiv.org/abs/2404.10327",
        "bibtex": (
            "@article{hu2024exact,\n"
            "  title   = {Exact and Efficient Unlearning for Large Language Model-based Recommendation},\n"
            "  author  = {Hu, Zhiyu and Zhang, Yang and Xiao, Minghao and Wang, Wenjie and Feng, Fuli and "
            "He, Xiangnan},\n"
            "  journal = {arXiv preprint arXiv:2404.10327},\n"
            "  year    = {2024}\n"
            "}"
        ),
    },
    # The journal version of the arXiv preprint 2403.03536 (the two used to be cited differently).
    "e2urec": {
        "title": "Towards Efficient and Effective Unlearning of Large Language Models for Recommendation",
        "authors": "Wang et al.",
        "year": 2025,
        "venue": "Frontiers of Computer Science",
        "arxiv": "2403.03536",
        "url": "https://doi.org/10.1007/s11704-024-40044-2",
        "bibtex": (
            "@article{wang2025e2urec,\n"
            "  title   = {Towards Efficient and Effective Unlearning of Large Language Models for Recommendation},\n"
            "  author  = {Wang, Hangyu and Lin, Jianghao and Chen, Bo and Yang, Yang and Tang, Ruiming and Zhang, "
            "Weinan and Yu, Yong},\n"
            "  journal = {Frontiers of Computer Science},\n"
            "  year    = {2025},\n"
            "  doi     = {10.1007/s11704-024-40044-2}\n"
            "}"
        ),
    },
    "sisa": {
        "title": "Machine Unlearning",
        "authors": "Bourtoule et al.",
        "year": 2021,
        "venue": "IEEE Symposium on Security and Privacy",
        "arxiv": "1912.03817",
        "url": "https://arxiv.org/abs/1912.03817",
        "bibtex": (
            "@inproceedings{bourtoule2021machine,\n"
            "  title     = {Machine Unlearning},\n"
            "  author    = {Bourtoule, Lucas and Chandrasekaran, Varun and Choquette-Choo, Christopher A. and Jia, "
            "Hengrui and Travers, Adelin and Zhang, Baiwu and Lie, David and Papernot, Nicolas},\n"
            "  booktitle = {IEEE Symposium on Security and Privacy (SP)},\n"
            "  pages     = {141--159},\n"
            "  year      = {2021}\n"
            "}"
        ),
    },
    "neggrad": {
        "title": "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks",
        "authors": "Golatkar et al.",
        "year": 2020,
        "venue": "CVPR",
        "arxiv": "1911.04933",
        "url": "https://arxiv.org/abs/1911.04933",
        "bibtex": (
            "@inproceedings{golatkar2020eternal,\n"
            "  title     = {Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks},\n"
            "  author    = {Golatkar, Aditya and Achille, Alessandro and Soatto, Stefano},\n"
            "  booktitle = {CVPR},\n"
            "  pages     = {9304--9312},\n"
            "  year      = {2020}\n"
            "}"
        ),
    },
    "badt": {
        "title": "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an Incompetent Teacher",
        "authors": "Chundawat et al.",
        "year": 2023,
        "venue": "AAAI",
        "arxiv": "2205.08096",
        "url": "https://arxiv.org/abs/2205.08096",
        "bibtex": (
            "@inproceedings{chundawat2023bad,\n"
            "  title     = {Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an Incompetent "
            "Teacher},\n"
            "  author    = {Chundawat, Vikram S. and Tarun, Ayush K. and Mandal, Murari and Kankanhalli, Mohan},\n"
            "  booktitle = {AAAI},\n"
            "  volume    = {37},\n"
            "  pages     = {7210--7217},\n"
            "  year      = {2023}\n"
            "}"
        ),
    },
}

# method -> what the card calls the model, and one paragraph on what it is.
METHODS: dict[str, dict[str, str]] = {
    "apa": {"title": "APA (exact unlearning)", "description": ""},
    "sisa": {"title": "SISA (exact unlearning)", "description": ""},
    "e2urec": {
        "title": "an E2URec-unlearned recommender",
        "description": (
            "E2URec makes a trained LLM recommender forget a set of users' interactions by updating a small LoRA "
            "adapter with a forgetting teacher (to unlearn) and a remembering teacher (to keep utility on the rest). "
            "Unlike APA this is approximate unlearning: the result is not guaranteed equal to retraining. The adapter "
            "is the unlearned *student*: it applies on top of the original recommender it was made from (a LoRA "
            "original is merged into the base first)."
        ),
    },
    "neggrad": {
        "title": "a NegGrad-unlearned recommender",
        "description": (
            "NegGrad fine-tunes on the retained data while ascending the loss on the forgotten data (a baseline of "
            "approximate unlearning: the result is not guaranteed equal to retraining)."
        ),
    },
    "negkl": {
        "title": "a NegKL-unlearned recommender",
        "description": (
            "NegKL fine-tunes on the retained data while moving the forgotten predictions away from the original's "
            "(a baseline of approximate unlearning: the result is not guaranteed equal to retraining)."
        ),
    },
    "badt": {
        "title": "a Bad-T-unlearned recommender",
        "description": (
            "Bad-T distils an incompetent (random) teacher on the forgotten data and the original on the retained "
            "data (a baseline of approximate unlearning: the result is not guaranteed equal to retraining)."
        ),
    },
    "tallrec": {
        "title": "a TALLRec recommender",
        "description": (
            "A recommender trained with the TALLRec recipe (instruction tuning with LoRA) to answer Yes/No to "
            '"will this user like item X?".'
        ),
    },
    "base": {
        "title": "the built-in stand-in base model",
        "description": (
            "A tiny llama-style language model with a word-level tokenizer, fully trained on the ratings of held-out "
            "synthetic users: the stand-in for a pretrained LLM that hf_recunlearn's demo and released example "
            "adapters are trained on (it never saw the recommender's users)."
        ),
    },
}
METHODS["original"] = METHODS["tallrec"]
BASE_TAGS = ["hf_recunlearn", "recommendation", "machine-unlearning"]
LOCAL_BASE_TEXT = "a base model that is not on the Hub (pass `base_model=` when loading)"


def paper(method: str) -> dict[str, str]:
    """A method's paper as the trainers' `_paper` (`title`, `url`, `citation`), from [`CITATIONS`]."""
    entry = CITATIONS[method]
    return {"title": entry["title"], "url": entry["url"], "citation": entry["bibtex"]}


def model_card_template(method: str) -> Path:
    """Path of the shipped Jinja template of `method`'s repos: `apa.md` for APA and SISA, `adapter.md` otherwise."""
    name = "apa.md" if method in ("apa", "sisa") else "adapter.md"
    path = Path(__file__).resolve().parent / "model_cards" / name
    if not path.is_file():  # e.g. a zipped install: ask importlib for it
        from importlib.resources import files

        path = Path(str(files("hf_recunlearn") / "model_cards" / name))
    return path


def model_card(
    method: str,
    *,
    repo_id: str | None = None,
    name: str | None = None,
    versions: list[dict] | None = None,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    license: str | None = None,
    tags: list[str] | None = None,
    library_name: str | None = None,
    metrics: dict[str, float] | None = None,
    apa_meta: dict | None = None,
    forget_request: dict[str, Any] | None = None,
    audit: str | None = None,
    audit_figures: dict[str, Any] | None = None,
    hyperparameters: dict[str, Any] | None = None,
    trainable_parameters: int | None = None,
):
    """
    Render the model card of a model made by `method`. Every argument is a plain JSON value.

    Args:
        method (`str`): a key of [`METHODS`] (`"apa"`, `"e2urec"`, `"tallrec"`, ...); picks the template, the title and
            the citation.
        repo_id (`str`, *optional*): the Hub repo the card describes (loading snippets); `None` for a local directory.
        name (`str`, *optional*): the title when there is no `repo_id` (defaults to the method's title).
        versions (`list[dict]`, *optional*): the entries of `unlearning_versions.json`, oldest first; the last one is
            current. Without them the card has no version log (a local model).
        base_model (`str`, *optional*): the base model; it goes in the metadata only when it is a Hub id.
        datasets, license, tags, library_name: the card's metadata (`tags` are added to the library's own,
            `library_name` defaults to `"peft"`).
        metrics (`dict`, *optional*): metric name -> value of the current version.
        apa_meta (`dict`, *optional*): the `apa_config.json` of an APA version (shards, partition, aggregation).
        forget_request (`dict`, *optional*): what was forgotten, as counts (never ids, digests or sample counts).
        audit (`str`, *optional*): one sentence on the forget audit; audit_figures: the receipt's audit figures.
        hyperparameters (`dict`, *optional*): the method's hyperparameters; trainable_parameters: their count.

    Returns:
        `huggingface_hub.ModelCard`
    """
    from huggingface_hub import ModelCard, ModelCardData

    from .models import is_hub_model_id

    metrics = {k: v for k, v in (metrics or {}).items() if _is_number(v)}
    own = BASE_TAGS + [method if method != "original" else "tallrec"]
    tags = own + [t for t in (tags or []) if t not in own]
    base_id = base_model if is_hub_model_id(base_model) else None
    card_data = ModelCardData(
        library_name=library_name or "peft",
        license=license,
        base_model=base_id,
        tags=tags,
        datasets=list(datasets) if datasets else None,
        metrics=sorted(metrics) or None,
    )
    versions = list(versions or [])
    purged = [v["tag"] for v in versions if v.get("status") == "purged"]
    info = METHODS.get(method, {"title": f"a {method} recommender", "description": ""})
    context = {
        "method": method,
        "repo_id": repo_id,
        "title": repo_id or name or info["title"],
        "current_tag": versions[-1]["tag"] if versions else None,
        "base_model_id": base_id,
        "base_model_text": f"`{base_id}`" if base_id else LOCAL_BASE_TEXT,
        "is_adapter": (library_name or "peft") == "peft",
        "log": _log_rows(versions),
        "purge_note": _purge_note(purged),
        "metrics_rows": [(k, f"{float(v):.4f}") for k, v in sorted(metrics.items())],
        "citation": CITATIONS.get(method),
        "method_title": info["title"],
        "method_description": info["description"] or f"A recommender produced with {method}.",
        "forget_request": [(k.replace("_", " "), v) for k, v in (forget_request or {}).items()],
        "audit": audit,
        "audit_rows": [(k, _figure(v)) for k, v in sorted((audit_figures or {}).items())],
        "hyperparameters": list((hyperparameters or {}).items()),
        "trainable_parameters": trainable_parameters,
    }
    if apa_meta is not None:
        agg = apa_meta.get("aggregation", {})
        context.update(
            num_shards=apa_meta.get("num_shards"),
            partition_method=apa_meta.get("partition", {}).get("method", "?"),
            aggregation_text=f"{agg.get('weights', '?')} weights at level {agg.get('level', '?')}",
        )
    card = ModelCard.from_template(card_data, template_path=str(model_card_template(method)), **context)
    return ModelCard(re.sub(r"\n{3,}", "\n\n", str(card)))  # the optional sections leave runs of blank lines


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _figure(value) -> str:
    return f"{float(value):.4f}" if _is_number(value) and isinstance(value, float) else str(value)


def _purge_note(purged: list[str]) -> str:
    if not purged:
        return ""
    several = len(purged) > 1
    return (
        f"{'Versions' if several else 'Version'} {', '.join(purged)} {'were' if several else 'was'} **purged** after a "
        "deletion request: their weights were trained on data that has since been forgotten, so their tags were "
        "deleted and the history squashed; they cannot be downloaded any more. Their log entries remain."
    )


def _log_rows(versions: list[dict]) -> list[dict]:
    rows = []
    for v in versions:
        shards = v.get("shards_retrained")
        receipt = v.get("receipt")
        rows.append({
            "tag": v["tag"],
            "event": v.get("event", ""),
            "shards": ", ".join(str(k) for k in shards) if shards else "-",
            "users_removed": v.get("users_removed", 0),
            "status": v.get("status", "available").replace("_", " "),
            "receipt": f"[{receipt.split('/')[-1]}]({receipt})" if receipt else "-",
        })  # fmt: skip
    return rows
