import math

import pytest
import torch

from radpath.objectives import (
    ordinal_loss,
    ordinal_predict,
    ordinal_probabilities,
    ordinal_targets,
)


def test_targets_are_cumulative():
    targets = ordinal_targets(torch.tensor([0, 1, 3, -1]), num_classes=4)
    assert targets.tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_loss_by_hand_ignores_unknown_grades():
    logits = torch.tensor([[0.0, 0.0], [2.0, -1.0], [5.0, 5.0]])
    grade = torch.tensor([1, 2, -1])
    # Row 0, targets (1, 0): 2 log 2. Row 1, targets (1, 1): softplus(-2) + softplus(1).
    row0 = 2 * math.log(2)
    row1 = math.log1p(math.exp(-2)) + math.log1p(math.exp(1))
    assert ordinal_loss(logits, grade, 3).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_loss_without_known_grades_is_a_zero_attached_to_the_graph():
    logits = torch.randn(2, 3, requires_grad=True)
    loss = ordinal_loss(logits, torch.tensor([-1, -1]), 4)
    assert loss.item() == 0.0 and loss.grad_fn is not None


def test_loss_checks_shapes_and_grade_range():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        ordinal_loss(torch.zeros(2, 2), torch.tensor([0, 1]), 4)
    with pytest.raises(ValueError, match="below num_classes=3"):
        ordinal_loss(torch.zeros(1, 2), torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="at least 2"):
        ordinal_targets(torch.tensor([0]), 1)


def test_predict_counts_thresholds_passed():
    logits = torch.tensor([[-1.0, -2.0, -3.0], [1.0, -0.5, -3.0], [3.0, 2.0, 0.1]])
    assert ordinal_predict(logits).tolist() == [0, 1, 3]
    assert ordinal_predict(logits).dtype == torch.long


def test_probabilities_by_hand():
    # P(>0) = 0.75, P(>1) = 0.25 -> P = (0.25, 0.5, 0.25).
    logits = torch.tensor([[math.log(3), -math.log(3)]])
    assert torch.allclose(ordinal_probabilities(logits), torch.tensor([[0.25, 0.5, 0.25]]))


def test_probabilities_of_an_inconsistent_head_are_clamped_and_renormalised():
    # P(>0) = 0.25 < P(>1) = 0.75: raw (0.75, -0.5, 0.75) -> clamped (0.75, 0, 0.75) / 1.5.
    logits = torch.tensor([[-math.log(3), math.log(3)]])
    assert torch.allclose(ordinal_probabilities(logits), torch.tensor([[0.5, 0.0, 0.5]]))
    probs = ordinal_probabilities(torch.randn(10, 4) * 5)
    assert (probs >= 0).all() and torch.allclose(probs.sum(1), torch.ones(10))
