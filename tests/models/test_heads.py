from __future__ import annotations

import pytest
import torch

from radpath.models.heads import BinaryHead, LocalisationHead, OrdinalHead


def test_binary_head_gives_one_logit_per_row() -> None:
    logits = BinaryHead(16)(torch.randn(5, 16))
    assert logits.shape == (5,)


def test_binary_head_is_finite_on_zero_features() -> None:
    # Units missing a modality pool to zero features; LayerNorm must not turn them into NaN.
    assert torch.isfinite(BinaryHead(16)(torch.zeros(3, 16))).all()


def test_ordinal_head_shares_one_weight_and_is_rank_consistent() -> None:
    head = OrdinalHead(16, num_classes=4)
    logits = head(torch.randn(6, 16))
    assert logits.shape == (6, 3)
    # One weight vector and descending biases: "grade > k" is never likelier than "> k-1".
    assert torch.all(logits[:, 1:] <= logits[:, :-1])
    torch.testing.assert_close(logits[:, 0] - logits[:, 1], torch.full((6,), 1 / 3))


def test_ordinal_head_rejects_fewer_than_two_classes() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        OrdinalHead(16, num_classes=1)


def test_localisation_scores_and_token_map_are_row_major() -> None:
    head = LocalisationHead(16)
    scores = head(torch.randn(2, 6, 16))
    assert scores.shape == (2, 6)
    grid = LocalisationHead.token_map(torch.arange(12.0).reshape(2, 6), (2, 3))
    torch.testing.assert_close(grid[0], torch.tensor([[0.0, 1, 2], [3, 4, 5]]))


def test_image_logit_is_a_smooth_max_between_mean_and_max() -> None:
    scores = torch.tensor([[0.0, 1.0, 4.0, -2.0]])
    logit = LocalisationHead(8, r=5.0).image_logit(scores)
    assert scores.mean() < logit < scores.max()
    sharp = LocalisationHead(8, r=1000.0).image_logit(scores)
    torch.testing.assert_close(sharp, scores.amax(dim=1), atol=2e-3, rtol=0)
    flat = LocalisationHead(8).image_logit(torch.full((1, 5), 0.7))
    torch.testing.assert_close(flat, torch.tensor([0.7]))


def test_image_logit_ignores_masked_tokens_and_empty_rows() -> None:
    head = LocalisationHead(8)
    scores = torch.tensor([[0.3, 9.0, 0.3], [1.0, 2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 0, 0]], dtype=torch.bool)
    logit = head.image_logit(scores, mask)
    torch.testing.assert_close(logit, torch.tensor([0.3, 0.0]))
    logit.sum().backward()
    assert torch.isfinite(scores.grad).all() and torch.all(scores.grad[1] == 0)


def test_localisation_rejects_non_positive_sharpness() -> None:
    with pytest.raises(ValueError, match="positive"):
        LocalisationHead(8, r=0.0)
