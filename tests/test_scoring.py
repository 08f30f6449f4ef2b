import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from hf_recunlearn.models import build_tiny_model, load_model
from hf_recunlearn.scoring import AnswerTokens, make_collator, score


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_score_equals_hand_computed_yes_no_softmax(arch, synthetic_splits, tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, arch=arch, size="tiny", seed=1).eval()
    rows = synthetic_splits["test"].select(range(5))
    answer = AnswerTokens.from_dataset(tok, rows)
    assert answer.prefix == () and answer.yes_id == tok.convert_tokens_to_ids("Yes")
    assert answer.no_id == tok.convert_tokens_to_ids("No")
    expected = []
    with torch.no_grad():
        for prompt in rows["prompt"]:
            ids = torch.tensor([tok(prompt)["input_ids"]])
            if arch == "causal":
                logits = model(input_ids=ids).logits[0, -1]
            else:
                start = torch.tensor([[model.config.decoder_start_token_id]])
                logits = model(input_ids=ids, decoder_input_ids=start).logits[0, -1]
            expected.append(torch.softmax(torch.stack([logits[answer.no_id], logits[answer.yes_id]]), 0)[1].item())
    got = score(model, tok, rows, batch_size=3)  # padded batches must not change the answer
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, got[0])  # the prompts really differ


def test_training_batch_marks_the_answer_position(synthetic_splits, tiny_tokenizer):
    tok = tiny_tokenizer
    model = build_tiny_model(tok, "causal", "tiny")
    rows = [synthetic_splits["train"][i] for i in range(4)]
    answer = AnswerTokens.from_dataset(tok, synthetic_splits["train"])
    batch = make_collator(model, tok, answer)(rows)
    for i, row in enumerate(rows):
        j = batch["answer_index"][i]
        assert batch["labels"][i, j + 1] == (answer.yes_id if row["label"] else answer.no_id)
        assert (batch["labels"][i, : j + 1] == -100).all()  # no loss on the prompt or padding
        assert batch["attention_mask"][i, j] == 1


def test_answer_tokens_need_distinct_answers(tiny_tokenizer):
    with pytest.raises(ValueError, match="tell the answers apart"):
        AnswerTokens.from_completions(tiny_tokenizer, " Yes", " Yes")


def test_tiny_model_round_trips_through_from_pretrained(tmp_path, tiny_tokenizer, synthetic_splits):
    model = build_tiny_model(tiny_tokenizer, "causal", "tiny", seed=2)
    model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_model(str(tmp_path))
    assert AutoTokenizer.from_pretrained(tmp_path).convert_tokens_to_ids("Yes") == tiny_tokenizer.convert_tokens_to_ids("Yes")
    rows = synthetic_splits["test"].select(range(4))
    np.testing.assert_allclose(score(loaded, tok, rows), score(model, tiny_tokenizer, rows), rtol=1e-5)


def test_load_model_missing_path_is_clear():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/model")
