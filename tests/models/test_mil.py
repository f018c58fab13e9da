from __future__ import annotations

import torch

from radpath.models.mil import GatedAttentionPool


def _pool() -> GatedAttentionPool:
    torch.manual_seed(0)
    return GatedAttentionPool(dim=8, hidden=4)


def test_weights_sum_to_one_over_valid_and_zero_on_masked() -> None:
    x = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], dtype=torch.bool)
    pooled, attention = _pool()(x, mask)
    assert pooled.shape == (3, 8) and attention.shape == (3, 5)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(3))
    assert torch.all(attention[~mask] == 0)
    torch.testing.assert_close(pooled, torch.einsum("bk,bkd->bd", attention, x))


def test_masked_instances_do_not_change_the_result() -> None:
    x = torch.randn(2, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]], dtype=torch.bool)
    pool = _pool()
    first = pool(x, mask)
    x[~mask] = 1e3
    second = pool(x, mask)
    torch.testing.assert_close(first[0], second[0])
    torch.testing.assert_close(first[1], second[1])


def test_weights_are_permutation_equivariant() -> None:
    x = torch.randn(2, 6, 8)
    mask = torch.tensor([[1, 1, 1, 0, 1, 0], [1] * 6], dtype=torch.bool)
    order = torch.randperm(6)
    pool = _pool()
    pooled, attention = pool(x, mask)
    pooled_p, attention_p = pool(x[:, order], mask[:, order])
    torch.testing.assert_close(attention_p, attention[:, order])
    torch.testing.assert_close(pooled_p, pooled)


def test_all_masked_row_gives_zeros_without_nan() -> None:
    x = torch.randn(2, 3, 8, requires_grad=True)
    mask = torch.tensor([[0, 0, 0], [1, 0, 1]], dtype=torch.bool)
    pooled, attention = _pool()(x, mask)
    assert torch.all(pooled[0] == 0) and torch.all(attention[0] == 0)
    pooled.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[0] == 0)


def test_single_instance_gets_weight_one() -> None:
    x = torch.randn(2, 1, 8)
    pooled, attention = _pool()(x)
    torch.testing.assert_close(attention, torch.ones(2, 1))
    torch.testing.assert_close(pooled, x[:, 0])
