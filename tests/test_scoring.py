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


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_load_model_of_an_adapter_directory_loads_its_base_then_the_adapter(
    arch, tmp_path, tiny_tokenizer, synthetic_splits
):
    from peft import LoraConfig, PeftModel, get_peft_model

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    build_tiny_model(tiny_tokenizer, arch, "tiny", seed=2).save_pretrained(base_dir)
    tiny_tokenizer.save_pretrained(base_dir)
    task = "SEQ_2_SEQ_LM" if arch == "seq2seq" else "CAUSAL_LM"
    base, _ = load_model(str(base_dir))
    peft_model = get_peft_model(base, LoraConfig(r=2, init_lora_weights=False, task_type=task))
    peft_model.save_pretrained(adapter_dir)  # no tokenizer here: it comes from the base
    loaded, tok = load_model(str(adapter_dir))
    assert isinstance(loaded, PeftModel) and loaded.peft_config["default"].base_model_name_or_path == str(base_dir)
    assert tok.convert_tokens_to_ids("Yes") == tiny_tokenizer.convert_tokens_to_ids("Yes")
    rows = synthetic_splits["test"].select(range(4))
    original = score(build_tiny_model(tiny_tokenizer, arch, "tiny", seed=2), tiny_tokenizer, rows)
    adapted = score(peft_model, tiny_tokenizer, rows)
    assert np.abs(adapted - original).max() > 1e-4  # the adapter changes the answers...
    np.testing.assert_allclose(score(loaded, tok, rows), adapted, rtol=1e-5)  # ...and is what was loaded


def test_load_model_missing_path_is_clear():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/model")


def test_every_p_like_reader_agrees_with_score(tmp_path, tiny_data):
    """
    `score`, `evaluation.predict` (with its full-vocabulary logits), `RecTrainer`'s evaluation loop and the unlearning
    trainers' teacher logits all read P(like) through `p_like` and `map_batches`: same rows, same numbers.
    """
    from hf_recunlearn import NegGradConfig, NegGradTrainer
    from hf_recunlearn.evaluation import predict
    from hf_recunlearn.scoring import p_like
    from hf_recunlearn.trainer import RecConfig, RecTrainer

    tok, rows = tiny_data["tokenizer"], tiny_data["test"].select(range(7))
    model = build_tiny_model(tok, arch="causal", size="tiny", seed=3)
    answer = AnswerTokens.from_dataset(tok, rows)
    model.train()
    reference = score(model, tok, rows, batch_size=3)
    assert model.training  # the loop restores the caller's mode
    assert reference.shape == (7,) and reference.dtype == np.float64 and np.ptp(reference) > 0

    predictions = predict(model, tok, rows, batch_size=4, full_vocab=True)
    np.testing.assert_array_equal(predictions.labels, rows["label"])
    np.testing.assert_allclose(predictions.probs, reference, rtol=0, atol=1e-6)
    assert predictions.vocab_logits.shape == (7, model.config.vocab_size)
    np.testing.assert_allclose(p_like(torch.from_numpy(predictions.vocab_logits), answer), reference, atol=1e-6)

    common = dict(output_dir=str(tmp_path), use_cpu=True, disable_tqdm=True, report_to="none")
    neggrad = NegGradTrainer(
        model,
        args=NegGradConfig(teacher_batch_size=5, **common),
        train_dataset=tiny_data["train"],
        forget_dataset=tiny_data["split"].forget,
        processing_class=tok,
    )
    yes_no = neggrad.teacher_logits(neggrad.model, rows, scope="yes_no")
    assert yes_no.shape == (7, 2)
    np.testing.assert_allclose(p_like(yes_no), reference, atol=1e-6)

    rec = RecTrainer(model, RecConfig(per_device_eval_batch_size=5, **common), eval_dataset=rows, processing_class=tok)
    output = rec.predict(rows)
    np.testing.assert_allclose(output.predictions, reference, atol=1e-5)
    np.testing.assert_array_equal(output.label_ids, rows["label"])
