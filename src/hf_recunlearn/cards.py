"""
The papers behind each method: one citation table for every model card the library writes.

Every card is rendered with `huggingface_hub.ModelCard.from_template` from a template shipped in `model_cards/`
([`model_card_template`]). The trainers' cards (`create_model_card`, which `Trainer.push_to_hub` calls) take a
method's `_paper` from here, and the Hub layer's versioned cards (`hub.render_model_card`) take their citation from
here, so a method is cited one way everywhere.
"""

from __future__ import annotations

from pathlib import Path


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


def paper(method: str) -> dict[str, str]:
    """A method's paper as the trainers' `_paper` (`title`, `url`, `citation`), from [`CITATIONS`]."""
    entry = CITATIONS[method]
    return {"title": entry["title"], "url": entry["url"], "citation": entry["bibtex"]}


def model_card_template(method: str) -> Path:
    """
    Path of a shipped Jinja template: `"apa"` (a versioned APA repo), `"trainer"` (the card a trainer writes next to
    its model); every versioned adapter repo uses `"e2urec"`'s.
    """
    name = {"apa": "apa.md", "trainer": "trainer.md"}.get(method, "e2urec.md")
    path = Path(__file__).resolve().parent / "model_cards" / name
    if not path.is_file():  # e.g. a zipped install: ask importlib for it
        from importlib.resources import files

        path = Path(str(files("hf_recunlearn") / "model_cards" / name))
    return path
