"""Model cards: one generator, one citation table, metadata settable by the caller, our card in place of PEFT's."""

import re
from pathlib import Path

import pytest
import yaml

from hf_recunlearn import cards
from hf_recunlearn.trainer import (
    APATrainer,
    BadTeacherTrainer,
    E2URecTrainer,
    NegGradTrainer,
    RecConfig,
    RecTrainer,
    SISATrainer,
)


SRC = Path(cards.__file__).resolve().parent


@pytest.mark.parametrize(
    "trainer, method",
    [
        (APATrainer, "apa"),
        (E2URecTrainer, "e2urec"),
        (SISATrainer, "sisa"),
        (NegGradTrainer, "neggrad"),
        (BadTeacherTrainer, "badt"),
    ],  # fmt: skip
)
def test_every_card_cites_a_method_from_the_one_table(trainer, method):
    assert trainer._paper == cards.paper(method)
    assert trainer._paper["citation"] in str(cards.model_card(method, versions=[{"tag": "v1", "version": 1}],
                                                              apa_meta={"num_shards": 2}))  # fmt: skip


def test_one_citation_table_and_one_generator():
    # No BibTeX entry, no ModelCard rendering and no template outside `cards.py` and its templates.
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "cards.py":
            continue
        text = path.read_text()
        assert not re.search(r"@(article|inproceedings)\{", text), path
        assert "ModelCard.from_template" not in text and "ModelCardData(" not in text, path
    assert sorted(p.name for p in (SRC / "model_cards").iterdir()) == ["adapter.md", "apa.md"]


def test_card_metadata_is_set_by_the_caller():
    versions = [{"version": 1, "tag": "v1", "event": "unlearn", "users_removed": 2, "status": "available"}]
    card = cards.model_card("e2urec", repo_id="user/rec", versions=versions, base_model="Qwen/Qwen2.5-0.5B",
                            datasets=["ml-1m"], metrics={"auc": 0.7}, license="apache-2.0", tags=["movies", "e2urec"],
                            library_name="transformers")  # fmt: skip
    data = card.data
    assert (data.license, data.base_model, data.datasets, data.library_name) == (
        "apache-2.0",
        "Qwen/Qwen2.5-0.5B",
        ["ml-1m"],
        "transformers",
    )
    assert data.tags == ["hf_recunlearn", "recommendation", "machine-unlearning", "e2urec", "movies"]
    text = str(card)
    assert "doi     = {10.1007/s11704-024-40044-2}" in text and "| v1 | unlearn | - | 2 | available | - |" in text
    assert 'AutoModelForCausalLM.from_pretrained("user/rec", revision="v1")' in text  # a full model, not an adapter
    # A local path is never published as the base model.
    local = cards.model_card("e2urec", base_model="/home/me/base")
    assert local.data.base_model is None and "/home/me" not in str(local)


def test_save_model_writes_our_card_not_peft_boilerplate(synthetic_splits, tiny_tokenizer, tmp_path):
    from hf_recunlearn.models import build_tiny_model

    model = build_tiny_model(tiny_tokenizer, "causal", "tiny")
    args = RecConfig(output_dir=str(tmp_path / "rec"), use_cpu=True, report_to="none")
    trainer = RecTrainer(model, args, train_dataset=synthetic_splits["train"], processing_class=tiny_tokenizer)
    trainer.save_model()
    text = (tmp_path / "rec" / "README.md").read_text()
    assert (tmp_path / "rec" / "adapter_model.safetensors").is_file()
    assert "### Framework versions" not in text and "[More Information Needed]" not in text  # PEFT's template
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "peft" and front["tags"][:4] == cards.BASE_TAGS + ["tallrec"]
    assert "base_model" not in front  # the tiny model is not on the Hub
    assert text.count("# rec: a TALLRec recommender") == 1 and 'PeftModel.from_pretrained(base_model, "PATH' in text

    # Metadata set from Python, as `push_to_hub(**kwargs)` passes it (Trainer's argument names).
    trainer.create_model_card(license="mit", dataset_name="user/ml-1m", tags="movies", finetuned_from="org/base")
    front = yaml.safe_load((tmp_path / "rec" / "README.md").read_text().split("---")[1])
    assert (front["license"], front["datasets"], front["base_model"]) == ("mit", ["user/ml-1m"], "org/base")
    assert "movies" in front["tags"]
