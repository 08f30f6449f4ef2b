"""Model cards: one citation table, metadata settable by the caller, rendered with huggingface_hub.ModelCard."""

import pytest

from hf_recunlearn import cards, hub
from hf_recunlearn.trainer import APATrainer, BadTeacherTrainer, E2URecTrainer, NegGradTrainer, SISATrainer


@pytest.mark.parametrize(
    "trainer, method",
    [(APATrainer, "apa"), (E2URecTrainer, "e2urec"), (SISATrainer, "sisa"), (NegGradTrainer, "neggrad"),
     (BadTeacherTrainer, "badt")],  # fmt: skip
)
def test_every_card_cites_a_method_from_the_one_table(trainer, method):
    assert trainer._paper == cards.paper(method)
    assert hub.CITATIONS is cards.CITATIONS  # the Hub's versioned cards read the same table


def test_versioned_card_metadata_is_set_by_the_caller():
    versions = [{"version": 1, "tag": "v1", "event": "unlearn", "users_removed": 2, "status": "available"}]
    card = hub.render_model_card("e2urec", "user/rec", versions, base_model="Qwen/Qwen2.5-0.5B", datasets=["ml-1m"],
                                 metrics={"auc": 0.7}, license="apache-2.0", tags=["movies", "e2urec"])  # fmt: skip
    data = card.data
    assert (data.license, data.base_model, data.datasets, data.library_name) == (
        "apache-2.0", "Qwen/Qwen2.5-0.5B", ["ml-1m"], "peft")
    assert data.tags == ["hf_recunlearn", "recommendation", "machine-unlearning", "e2urec", "movies"]
    text = str(card)
    assert "doi     = {10.1007/s11704-024-40044-2}" in text and "| v1 | unlearn | - | 2 | available | - |" in text
