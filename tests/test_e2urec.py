"""E2URecTrainer and the UnlearningTrainer base on tiny offline models."""

import copy
import hashlib

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

import hf_recunlearn
from hf_recunlearn import E2URecConfig, E2URecTrainer
from hf_recunlearn.evaluation import predict
from hf_recunlearn.losses import forgetting_teacher_logits, kl_divergence
from hf_recunlearn.metrics import mean_confidence, utility_metrics
from hf_recunlearn.models import build_tiny_model
from hf_recunlearn.scoring import score


def make_args(tmp_path, **overrides):
    settings = dict(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=2,
        logging_steps=1,
        augment_epochs=1,
        augment_batch_size=4,
        disable_tqdm=True,
        use_cpu=True,
        report_to="none",
    )
    settings.update(overrides)
    return E2URecConfig(**settings)


def make_trainer(tiny_data, tmp_path, arch="causal", model=None, **overrides):
    split = tiny_data["split"]
    return E2URecTrainer(
        model if model is not None else build_tiny_model(tiny_data["tokenizer"], arch, "tiny"),
        args=make_args(tmp_path, **overrides),
        train_dataset=tiny_data["train"],
        eval_dataset=tiny_data["test"],
        forget_dataset=split.forget,
        processing_class=tiny_data["tokenizer"],
    )


def yes_no_on(trainer, dataset):
    """Student (Yes/No) logits on `dataset`, through the same path as the teachers."""
    return trainer.teacher_logits(trainer.model, dataset, scope="yes_no")


def test_retain_is_train_minus_forget_and_pairs_are_fixed(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path)
    split = tiny_data["split"]
    assert sorted(trainer.retain_dataset["sample_id"]) == sorted(split.retain["sample_id"])
    assert len(trainer.train_dataset) == len(split.forget)
    paired = trainer.paired_retain_dataset
    assert len(paired) == len(split.forget)  # one retained sample per forgotten one, drawn once
    assert not set(paired["sample_id"]) & set(split.forget["sample_id"])
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["is_forget"].tolist() == [True, True, False, False]
    assert batch["input_ids"].shape[0] == 4


@pytest.mark.parametrize("arch", ["causal", "seq2seq"])
def test_student_moves_towards_the_forgetting_teacher_and_keeps_the_rest(tiny_data, tmp_path, arch):
    model = build_tiny_model(tiny_data["tokenizer"], arch, "tiny")
    for module in model.modules():  # T5's dropout makes a one-layer model's few steps a coin toss
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    # A strong augmented model (high learning rate) so the forgetting teacher differs from the original.
    trainer = make_trainer(
        tiny_data, tmp_path, arch, model=model, augment_learning_rate=5e-2, augment_epochs=3, num_train_epochs=6,
        learning_rate=5e-2, alpha=4.0, lora_dropout=0.0,
    )  # fmt: skip
    forget = tiny_data["split"].forget
    before = yes_no_on(trainer, forget)
    trainer.train()
    teacher = trainer.teacher_outputs["forget"]
    after = yes_no_on(trainer, forget)
    assert kl_divergence(teacher, before).item() > 1e-3, "the forgetting teacher equals the original"
    # A one-layer student with LoRA on q/v cannot match every per-sample target; it must close a good part of the gap.
    assert kl_divergence(teacher, after).item() < 0.7 * kl_divergence(teacher, before).item()
    remembered = yes_no_on(trainer, trainer.paired_retain_dataset)
    with trainer.original_model():
        original = yes_no_on(trainer, trainer.paired_retain_dataset)
    assert kl_divergence(original, remembered).item() < kl_divergence(teacher, before).item()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"loss/forget", "loss/retain_kl", "loss/retain_ce", "loss/remember"} <= logged


def test_only_the_student_lora_weights_change(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in before if "lora_" in n]
    assert lora, "no LoRA student was added"
    for name, value in before.items():
        if name in lora:
            assert not torch.equal(value, after[name]), f"student weight {name} did not change"
        else:
            assert torch.equal(value, after[name]), f"original weight {name} changed"


def test_teacher_forward_passes_happen_once_per_sample(tiny_data, tmp_path):
    tokenizer = tiny_data["tokenizer"]
    augmented = build_tiny_model(tokenizer, "causal", "tiny", seed=1)
    trainer = E2URecTrainer(
        build_tiny_model(tokenizer, "causal", "tiny"),
        augmented,
        args=make_args(tmp_path, num_train_epochs=3),
        train_dataset=tiny_data["train"],
        forget_dataset=tiny_data["split"].forget,
        processing_class=tokenizer,
    )
    lora_layer = next(m for m in trainer.model.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A"))
    rows = {"teacher": 0, "student": 0, "augmented": 0}

    def count(key_fn):
        def hook(module, args, kwargs):
            rows[key_fn()] += kwargs["input_ids"].shape[0]

        return hook

    trainer.model.get_base_model().register_forward_pre_hook(
        count(lambda: "teacher" if lora_layer.disable_adapters else "student"), with_kwargs=True
    )
    augmented.register_forward_pre_hook(count(lambda: "augmented"), with_kwargs=True)
    trainer.train()
    n_forget, n_paired = len(tiny_data["split"].forget), len(trainer.paired_retain_dataset)
    assert rows["augmented"] == n_forget
    assert rows["teacher"] == n_forget + n_paired  # original on D_f (for v) and on the paired retained samples
    assert rows["student"] == 3 * (n_forget + n_paired)  # three epochs of paired batches
    assert trainer.augmented_model is None  # released once its logits were taken


def test_an_augmented_model_equal_to_the_original_is_flagged(tiny_data, tmp_path):
    model = build_tiny_model(tiny_data["tokenizer"], "causal", "tiny")
    trainer = E2URecTrainer(
        model,
        copy.deepcopy(model),
        args=make_args(tmp_path),
        train_dataset=tiny_data["train"],
        forget_dataset=tiny_data["split"].forget,
        processing_class=tiny_data["tokenizer"],
    )
    with pytest.warns(UserWarning, match="Raise `alpha`, `augment_learning_rate`"):
        trainer.compute_teacher_outputs()
    assert trainer.augmented_shift == pytest.approx(0.0, abs=1e-5)
    assert trainer.teacher_shift == pytest.approx(0.0, abs=1e-5)


def make_trainer_with_augmented(tiny_data, tmp_path, **overrides):
    """An E2URec trainer given an explicit augmented model (another tiny network), so its logits can be recomputed."""
    tokenizer = tiny_data["tokenizer"]
    torch.manual_seed(1)
    augmented = build_tiny_model(tokenizer, "causal", "tiny", seed=1)
    trainer = E2URecTrainer(
        build_tiny_model(tokenizer, "causal", "tiny"),
        copy.deepcopy(augmented),
        args=make_args(tmp_path, **overrides),
        train_dataset=tiny_data["train"],
        forget_dataset=tiny_data["split"].forget,
        processing_class=tokenizer,
    )
    return trainer, augmented


def answer_vocab_logits(model, tokenizer, dataset):
    """Full-vocabulary logits at the answer position, computed by the evaluation path (not the trainer's)."""
    return torch.as_tensor(predict(model, tokenizer, dataset, full_vocab=True).vocab_logits)


def test_beta_one_and_zero_reduce_to_forgetting_and_remembering(tiny_data, tmp_path):
    tokenizer = tiny_data["tokenizer"]
    forget = tiny_data["split"].forget
    for beta in (1.0, 0.0):
        trainer, augmented = make_trainer_with_augmented(tiny_data, tmp_path, beta=beta)
        answers = [trainer.answer_tokens.no_id, trainer.answer_tokens.yes_id]
        with trainer.original_model() as original:
            v = answer_vocab_logits(original, tokenizer, forget)[:, answers]
        v_aug = answer_vocab_logits(augmented, tokenizer, forget)[:, answers]
        teacher = forgetting_teacher_logits(v, v_aug, trainer.args.alpha, form=trainer.args.teacher_form)
        trainer.teacher_outputs = trainer.compute_teacher_outputs()
        batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        loss = trainer.compute_loss(trainer.model, batch).item()
        is_forget = batch["is_forget"].bool()
        if beta == 1.0:
            # Only L_FGT: KL(softmax(v_f) ‖ student) on the batch's forgotten rows. The student starts as the
            # original (a zero LoRA), so its Yes/No distribution is P(like) of the original, scored independently.
            rows = batch["row_index"][is_forget].tolist()
            p_t = torch.softmax(teacher[rows].double(), -1).numpy()
            p_like = score(trainer.model, tokenizer, forget.select(rows))
            p_s = np.stack([1 - p_like, p_like], -1)
            expected = float(np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), -1)))
        else:
            # Only L_REM: the remembering KL is 0 at the start (the student is the original), so the loss is the
            # original's next-token loss on the retained rows' completions, as transformers computes it.
            with trainer.original_model() as original, torch.no_grad():
                keep = ~is_forget
                expected = original(input_ids=batch["input_ids"][keep], attention_mask=batch["attention_mask"][keep],
                                    position_ids=batch["position_ids"][keep], labels=batch["labels"][keep]).loss.item()  # fmt: skip
        assert loss == pytest.approx(expected, rel=1e-4, abs=1e-6), beta
    with pytest.raises(ValueError, match="`beta`"):
        make_args(tmp_path, beta=1.5)


def test_reference_code_weights_are_expressible(tmp_path):
    paper = make_args(tmp_path)
    code = make_args(tmp_path, forget_weight=0.4, remember_weight=0.6)
    assert paper.loss_weights == pytest.approx((0.6, 0.4))
    assert code.loss_weights == pytest.approx((0.4, 0.6))


def test_full_vocab_scope_and_paper_form_train(tiny_data, tmp_path):
    tokenizer = tiny_data["tokenizer"]
    forget = tiny_data["split"].forget
    trainer, augmented = make_trainer_with_augmented(tiny_data, tmp_path, kl_scope="full", teacher_form="paper",
                                                     num_train_epochs=1, alpha=2.0)  # fmt: skip
    with trainer.original_model() as original:
        v = answer_vocab_logits(original, tokenizer, forget)
        v_retain = answer_vocab_logits(original, tokenizer, trainer.paired_retain_dataset)
    v_aug = answer_vocab_logits(augmented, tokenizer, forget)
    vocab = len(tokenizer)
    assert v.shape == (len(forget), vocab)
    # The paper's form (eq. 4) on raw full-vocabulary logits: v − α·ReLU(v_aug − v), computed here by hand.
    by_hand = v - 2.0 * torch.clamp(v_aug - v, min=0.0)
    np.testing.assert_allclose(forgetting_teacher_logits(v, v_aug, 2.0, form="paper"), by_hand, atol=1e-6)
    outputs = trainer.compute_teacher_outputs()
    np.testing.assert_allclose(outputs["forget"], by_hand, atol=1e-4)
    np.testing.assert_allclose(outputs["retain"], v_retain, atol=1e-4)
    # The forgetting KL runs over the whole vocabulary: at the start (student = original) it is KL(softmax(v_f) ‖
    # softmax(v)) on the batch's forgotten rows, computed here outside the trainer.
    trainer.teacher_outputs = outputs
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.compute_loss(trainer.model, batch)
    rows = batch["row_index"][batch["is_forget"].bool()].tolist()
    log_t, log_s = by_hand[rows].double().log_softmax(-1), v[rows].double().log_softmax(-1)
    expected = float((log_t.exp() * (log_t - log_s)).sum(-1).mean())
    assert expected > 1e-3  # the teacher differs from the original: the check is not trivially 0
    assert trainer._metrics["loss/forget"][-1] == pytest.approx(expected, rel=1e-4)
    trainer.train()
    assert trainer.state.global_step > 0


def test_lora_augmented_model_is_temporary(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, augment_method="lora", augment_learning_rate=5e-2, num_train_epochs=1)
    trainer.train()
    assert list(trainer.model.peft_config) == ["default"]
    assert trainer.model.active_adapter == "default"
    assert not any("e2urec_augment" in n for n, _ in trainer.model.named_parameters())


def test_a_peft_original_is_merged_and_stays_the_original(tiny_data, tmp_path):
    tokenizer = tiny_data["tokenizer"]
    base = build_tiny_model(tokenizer, "causal", "tiny")
    torch.manual_seed(0)
    original = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    forget = tiny_data["split"].forget
    expected = score(original, tokenizer, forget)
    trainer = make_trainer(tiny_data, tmp_path, model=original, learning_rate=5e-2)
    assert isinstance(trainer.model, PeftModel) and list(trainer.model.peft_config) == ["default"]
    with trainer.original_model() as model:
        np.testing.assert_allclose(score(model, tokenizer, forget), expected, atol=1e-5)
    trainer.train()
    with trainer.original_model() as model:
        np.testing.assert_allclose(score(model, tokenizer, forget), expected, atol=1e-5)


def test_evaluate_reports_utility_and_forgetting(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path, num_train_epochs=1, learning_rate=5e-2)
    trainer.train()
    metrics = trainer.evaluate()
    tokenizer, model = tiny_data["tokenizer"], trainer.model
    # Against predictions scored independently of the Trainer's evaluation loop.
    for prefix, dataset in (("eval", tiny_data["test"]), ("eval_forget", tiny_data["split"].forget)):
        probs = score(model, tokenizer, dataset)
        labels = np.asarray(dataset["label"])
        expected = utility_metrics(labels, probs) | {"confidence": mean_confidence(labels, probs)}
        for key, value in expected.items():
            if np.isnan(value):
                assert np.isnan(metrics[f"{prefix}_{key}"]), (prefix, key)
            else:
                assert metrics[f"{prefix}_{key}"] == pytest.approx(value, abs=1e-5), (prefix, key)


def test_model_card_names_the_method_and_hides_user_ids(tiny_data, tmp_path):
    trainer = make_trainer(tiny_data, tmp_path)
    trainer.create_model_card(license="apache-2.0", dataset_name="user/ml-1m")  # what push_to_hub(**kwargs) passes
    card = (tmp_path / "out" / "README.md").read_text()
    assert "E2URec" in card and "@article" in card and "10.1007/s11704-024-40044-2" in card
    meta = card.split("---")[1]
    assert "e2urec" in meta and "license: apache-2.0" in meta and "- user/ml-1m" in meta  # metadata
    forget = tiny_data["split"].forget
    # No digest of the forgotten ids (unsalted, anyone holding the public data could test candidate users against it)
    # and no sample count (it narrows the request to users with that many rows): the number of users only.
    digest = hashlib.sha256("\n".join(sorted(forget["sample_id"])).encode()).hexdigest()
    assert digest not in card and f"num forgotten users: `{len(set(forget['user_id']))}`" in card
    assert str(len(forget)) not in card.split("## Forget request")[1].split("##")[0]
    for user in set(forget["user_id"]):
        assert f"`{user}`" not in card and f" {user}\n" not in card


@pytest.mark.parametrize(
    "forget, match",
    [
        ("empty", r"`forget_dataset` is empty"),
        ("foreign", r"`forget_dataset` has 2 of 2 sample\(s\) whose `sample_id` is not in `train_dataset`"),
        ("missing", r"`forget_dataset` is required"),
    ],
)
def test_bad_forget_sets_are_refused(tiny_data, tmp_path, forget, match):
    split = tiny_data["split"]
    forget_ds = {
        "empty": split.forget.select([]),
        "foreign": tiny_data["test"].select([0, 1]),
        "missing": None,
    }[forget]
    with pytest.raises(ValueError, match=match):
        E2URecTrainer(
            build_tiny_model(tiny_data["tokenizer"], "causal", "tiny"),
            args=make_args(tmp_path),
            train_dataset=tiny_data["train"],
            forget_dataset=forget_ds,
            processing_class=tiny_data["tokenizer"],
        )


def test_a_retain_set_holding_forgotten_samples_is_refused(tiny_data, tmp_path):
    split = tiny_data["split"]
    with pytest.raises(ValueError, match="`retain_dataset` contains"):
        E2URecTrainer(
            build_tiny_model(tiny_data["tokenizer"], "causal", "tiny"),
            args=make_args(tmp_path),
            forget_dataset=split.forget,
            retain_dataset=tiny_data["train"],
            processing_class=tiny_data["tokenizer"],
        )


def test_config_validation_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`teacher_form`"):
        make_args(tmp_path, teacher_form="relu")
    with pytest.raises(ValueError, match="`kl_scope`"):
        make_args(tmp_path, kl_scope="vocab")
    with pytest.raises(ValueError, match="`augment_method='lora'`"):
        make_args(tmp_path, augment_method="lora", use_lora=False)
    with pytest.raises(ValueError, match="`remove_unused_columns=True`"):
        make_args(tmp_path, remove_unused_columns=True)


def test_public_api_is_in_sync():
    for name in hf_recunlearn.__all__:
        assert hasattr(hf_recunlearn, name), name
    assert sorted(hf_recunlearn.__all__) == hf_recunlearn.__all__
    from hf_recunlearn import trainer

    for name in trainer.__all__:
        assert hasattr(trainer, name), name
    for name in ("E2URecTrainer", "E2URecConfig", "UnlearningTrainer", "UnlearningConfig", "NegGradTrainer",
                 "NegKLTrainer", "BadTeacherTrainer", "retrain_reference", "evaluate_unlearning"):  # fmt: skip
        assert name in hf_recunlearn.__all__, name
