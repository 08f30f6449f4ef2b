"""The top-level `model_cards/` holds the cards of the released repos; each is what the library renders today."""

import json
from pathlib import Path

import pytest
import yaml

from hf_recunlearn.cards import model_card


CARDS = Path(__file__).resolve().parents[1] / "model_cards"
RELEASED = sorted(p.parent for p in CARDS.glob("*/card.json"))


def test_every_released_repo_has_a_recorded_card():
    names = [p.name for p in RELEASED]
    assert names == sorted(["hf-recunlearn-tiny-base", "hf-recunlearn-tallrec-synthetic",
                            "hf-recunlearn-e2urec-synthetic", "hf-recunlearn-apa-synthetic"])  # fmt: skip


@pytest.mark.parametrize("folder", RELEASED, ids=lambda p: p.name)
def test_released_card_matches_the_library(folder):
    inputs = json.loads((folder / "card.json").read_text())
    expected = str(model_card(**inputs))
    assert (folder / "README.md").read_text() == expected, (
        f"model_cards/{folder.name}/README.md drifted from the library's card generator: regenerate it with "
        "`python scripts/release_adapters.py --dry_run` (see README, 'Released adapters')."
    )
    front = yaml.safe_load(expected.split("---")[1])
    assert front["license"] == "apache-2.0" and front["tags"][:3] == [
        "hf_recunlearn",
        "recommendation",
        "machine-unlearning",
    ]
    assert inputs["repo_id"].endswith(f"/{folder.name}") and inputs["versions"][-1]["tag"] == "v1"
    # Counts only: what was forgotten is a number of users, never who.
    assert set(inputs.get("forget_request") or {}) <= {"num_forgotten_users", "num_forget_events"}
