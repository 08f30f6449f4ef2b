"""SISA baseline: random shards, one LoRA adapter each, P(like) averaged over K forward passes."""

from __future__ import annotations


from ..cards import paper
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
    _paper = paper("sisa")
    config_class = SISAConfig
