"""
APA's version format on the Hub: what `hf_recunlearn.hub` needs to know about an APA directory to push, export and
pull it.

The Hub layer is generic (versioned repos, tags, the version log, purge after a forget, cards); a directory that
records its own versions reaches it through a registered `hub.VersionFormat`. For APA (`hf_recunlearn.apa_format`)
that is `apa_config.json`:

- its `version`, `run_id` and `lineage` are the history a push checks against the Hub's (a different run, or forget
  requests applied elsewhere, are refused) and from which it writes the version log;
- the sha256 of every shard it records is verified before a push or an export, and after a pull, before the version
  is moved in place;
- it is the card's `apa_meta` (shards, partition, aggregation), and its `base_model` the card's default one.

A pushed APA repo holds, besides the card, `unlearning_versions.json` and `receipts/` that every repo has::

    apa_config.json
    apa_state.safetensors
    shard_00/adapter_config.json, shard_00/adapter_model.safetensors, ...
    tokenizer files

The package lists this module in `hf_recunlearn._HUB_FORMATS`, so `hub` registers the format on first use.
"""

from __future__ import annotations

from pathlib import Path

from .apa_format import CONFIG_NAME, read_apa_directory
from .hub import FORGET_EVENTS, VersionFormat, VersionHistory, register_version_format


class APAVersionFormat(VersionFormat):
    """An APA directory, written by `APATrainer` or `APARecommender.save_pretrained`."""

    method = "apa"
    config_file = CONFIG_NAME
    description = "an APA directory (written by `APATrainer`)"

    def verify(self, directory: Path) -> None:
        read_apa_directory(directory)  # every shard's sha256 against apa_config.json; names the damaged file

    def history(self, config: dict) -> VersionHistory:
        events = [
            {
                "version": int(e["version"]),
                "event": e.get("event", ""),
                "shards_retrained": list(e.get("shards_trained", [])),
                "users_removed": int(e.get("users_removed", 0)),
            }
            for e in config.get("lineage", [])
        ]
        return VersionHistory(int(config["version"]), config.get("run_id"), events)

    def card_inputs(self, config: dict) -> dict:
        return {"apa_meta": config, "base_model": config.get("base_model")}

    def commit_message(self, entry: dict) -> str:
        message = f"{entry['tag']}: {entry['event']}"
        if entry["event"] in FORGET_EVENTS:
            message += f", shards {entry['shards_retrained']} retrained, {entry['users_removed']} users removed"
        return message


register_version_format(APAVersionFormat())
