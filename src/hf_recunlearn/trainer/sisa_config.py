"""Configuration of the SISA baseline: random shards, averaged predictions."""

from __future__ import annotations

from dataclasses import dataclass, field

from .apa_config import APAConfig


@dataclass
class SISAConfig(APAConfig):
    r"""
    Configuration for [`SISATrainer`]: SISA (Bourtoule et al., "Machine Unlearning") extended to TALLRec as in APA
    §4.1.2: a seeded random partition into K shards, one LoRA adapter per shard, and output-level aggregation (K
    forward passes, P(like) averaged with equal weights).

    It is [`APAConfig`] with other defaults: `partition_method="random"`, `aggregation_level="output"`,
    `aggregation_weights="uniform"`, `forget_unit="sample"` (a random partition spreads a user over every shard).
    `partition_method="user"` gives the RecEraser-style variant (user partition, output averaging; APA's adaptation
    of RecEraser replaces its trained aggregator with SISA's).
    """

    forget_unit: str = field(default="sample", metadata={"help": "What deletion requests name: 'user' or 'sample'."})
    partition_method: str | None = field(default="random", metadata={"help": "SISA: random; RecEraser-style: user."})
    aggregation_level: str = field(default="output", metadata={"help": "SISA averages P(like) over shard passes."})
    aggregation_weights: str = field(default="uniform", metadata={"help": "SISA averages with equal weights."})
