"""The loss functions against tensors computed by hand."""

import math

import pytest
import torch

from hf_recunlearn.losses import e2urec_loss, forgetting_teacher_logits, kl_divergence, token_cross_entropy


def test_paper_teacher_subtracts_alpha_relu_of_raw_logit_change():
    v = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    v_aug = torch.tensor([[1.5, 1.0], [3.0, 1.0]])
    # row 0: ReLU([0.5, -1]) = [0.5, 0] -> [1 - 2*0.5, 2]; row 1: ReLU([3, 1]) = [3, 1] -> [-6, -2]
    expected = torch.tensor([[0.0, 2.0], [-6.0, -2.0]])
    torch.testing.assert_close(forgetting_teacher_logits(v, v_aug, alpha=2.0, form="paper"), expected)


def test_normalized_teacher_works_on_log_softmax():
    v = torch.tensor([[0.0, 0.0]])
    v_aug = torch.tensor([[1.0, 0.0]])
    ln2 = math.log(2.0)
    lse = math.log(1.0 + math.e)  # log-sum-exp of [1, 0]
    change = (1.0 - lse) + ln2  # log-prob change of class 0; class 1 changes by -(1 - ...) < 0
    expected = torch.tensor([[-ln2 - 2.0 * change, -ln2]])
    torch.testing.assert_close(forgetting_teacher_logits(v, v_aug, alpha=2.0, form="normalized"), expected)
    assert expected[0, 0].item() == pytest.approx(-1.452917, abs=1e-5)


def test_a_shift_common_to_all_logits_counts_only_in_the_paper_form():
    v = torch.tensor([[0.0, 0.0]])
    v_aug = torch.tensor([[1.0, -1.0]])
    shifted = v_aug + 2.0  # [3, 1]: fine-tuning raised every logit, one more than the other
    normalized = [forgetting_teacher_logits(v, a, 2.0, "normalized").softmax(-1) for a in (v_aug, shifted)]
    torch.testing.assert_close(normalized[0], normalized[1])
    paper = [forgetting_teacher_logits(v, a, 2.0, "paper") for a in (v_aug, shifted)]
    # paper form: [-2, 0] (gap 2) before the shift, [-6, -2] (gap 4) after
    torch.testing.assert_close(paper[0], torch.tensor([[-2.0, 0.0]]))
    torch.testing.assert_close(paper[1], torch.tensor([[-6.0, -2.0]]))


def test_alpha_zero_teacher_is_the_original_distribution():
    v = torch.randn(4, 5)
    v_aug = torch.randn(4, 5)
    for form in ("paper", "normalized"):
        torch.testing.assert_close(forgetting_teacher_logits(v, v_aug, 0.0, form).softmax(-1), v.softmax(-1))


def test_teacher_rejects_bad_arguments():
    v = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="`form`"):
        forgetting_teacher_logits(v, v, 1.0, form="relu")
    with pytest.raises(ValueError, match="`alpha`"):
        forgetting_teacher_logits(v, v, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        forgetting_teacher_logits(v, torch.zeros(2, 3), 1.0)


def test_kl_divergence_by_hand():
    teacher = torch.tensor([[0.0, 0.0]])  # p = [1/2, 1/2]
    student = torch.tensor([[math.log(3.0), 0.0]])  # q = [3/4, 1/4]
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence(teacher, student).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.143841, abs=1e-6)
    assert kl_divergence(student, student).item() == pytest.approx(0.0, abs=1e-7)


def test_masked_kl_ignores_masked_positions_entirely():
    teacher = torch.tensor([[[0.0, 0.0], [5.0, -5.0]], [[0.0, 0.0], [9.0, 9.0]]])
    student = torch.tensor([[[math.log(3.0), 0.0], [-5.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, False], [True, False]])  # second position is padding in both rows
    expected = (0.143841 + 0.0) / 2  # mean over the two unmasked positions only
    assert kl_divergence(teacher, student, mask).item() == pytest.approx(expected, abs=1e-6)

    student = student.clone().requires_grad_(True)
    kl_divergence(teacher, student, mask).backward()
    assert torch.all(student.grad[:, 1] == 0), "padding received gradient"


def test_all_false_mask_gives_zero_with_a_graph():
    student = torch.randn(3, 2, requires_grad=True)
    loss = kl_divergence(torch.randn(3, 2), student, torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(student.grad == 0)


def test_token_cross_entropy_by_hand():
    logits = torch.zeros(2, 3, 2)
    logits[1, 0] = torch.tensor([math.log(3.0), 0.0])  # P(token 0) = 3/4
    labels = torch.tensor([[1, -100, -100], [0, 1, -100]])
    # row 0: ln 2; row 1: -ln(3/4) and ln 2 -> token mean over 3 tokens
    expected = (math.log(2) - math.log(0.75) + math.log(2)) / 3
    assert token_cross_entropy(logits, labels).item() == pytest.approx(expected, abs=1e-6)
    only_row1 = (-math.log(0.75) + math.log(2)) / 2
    row1 = torch.tensor([False, True])
    assert token_cross_entropy(logits, labels, row1).item() == pytest.approx(only_row1, abs=1e-6)


def test_e2urec_loss_weights_and_the_extreme_betas():
    f, rk, rc = torch.tensor(0.3), torch.tensor(0.2), torch.tensor(0.7)
    assert e2urec_loss(f, rk, rc, 0.6, 0.4).item() == pytest.approx(0.6 * 0.3 + 0.4 * (0.7 + 0.2))
    assert e2urec_loss(f, rk, rc, 1.0, 0.0).item() == pytest.approx(0.3)  # beta = 1: forgetting only
    assert e2urec_loss(f, rk, rc, 0.0, 1.0).item() == pytest.approx(0.9)  # beta = 0: remembering only
