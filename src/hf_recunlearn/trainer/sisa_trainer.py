"""SISA baseline: random shards, one LoRA adapter each, P(like) averaged over K forward passes."""

from __future__ import annotations

import textwrap

from .apa_trainer import APATrainer
from .sisa_config import SISAConfig


class SISATrainer(APATrainer):
    """
    [`APATrainer`] with [`SISAConfig`] defaults: the same shard training, ledger and exact forgetting, with SISA's
    random partition and output averaging. Its inference costs K forward passes; APA's one-pass aggregation is
    measured against it. Pass `SISAConfig(partition_method="user")` for the RecEraser-style variant.
    """

    _tag_names = ["hf_recunlearn", "sisa", "unlearning", "exact-unlearning"]
    _name = "SISA"
    _paper = {
        "title": "Machine Unlearning",
        "url": "https://arxiv.org/abs/1912.03817",
        # docstyle-ignore
        "citation": textwrap.dedent("""\
            @inproceedings{bourtoule2021machine,
                title     = {Machine Unlearning},
                author    = {Lucas Bourtoule and Varun Chandrasekaran and Christopher A. Choquette-Choo and Hengrui Jia
                             and Adelin Travers and Baiwu Zhang and David Lie and Nicolas Papernot},
                booktitle = {IEEE Symposium on Security and Privacy (SP)},
                pages     = {141--159},
                year      = {2021},
            }"""),
    }
    config_class = SISAConfig
