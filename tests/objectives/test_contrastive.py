import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radpath.objectives import SymmetricInfoNCE, pseudo_pair_mask


def _embeddings(batch: int = 6, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen)


def _codes(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def test_symmetric_in_the_two_modalities():
    loss_fn = SymmetricInfoNCE()
    a, b = _embeddings()
    labels, pairing = _codes(0, 1, 2, 2, 1, 0), _codes(2, 2, 2, 1, 1, 2)
    assert torch.allclose(loss_fn(a, b, labels, pairing), loss_fn(b, a, labels, pairing))


def test_matches_a_hand_computation_on_three_patients():
    loss_fn = SymmetricInfoNCE(init_temperature=0.5)
    a, b = _embeddings(3, 4)
    an = a.numpy() / np.linalg.norm(a.numpy(), axis=1, keepdims=True)
    bn = b.numpy() / np.linalg.norm(b.numpy(), axis=1, keepdims=True)
    logits = 2.0 * an @ bn.T

    def cross_entropy(m: np.ndarray) -> float:
        log_softmax = m - np.log(np.exp(m).sum(axis=1, keepdims=True))
        return float(-np.mean(np.diag(log_softmax)))

    expected = (cross_entropy(logits) + cross_entropy(logits.T)) / 2
    loss = loss_fn(a, b, _codes(0, 1, 2), _codes(1, 1, 1))
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_all_pseudo_pairs_with_one_label_give_exactly_zero():
    a, b = _embeddings(5)
    loss = SymmetricInfoNCE()(a, b, _codes(2, 2, 2, 2, 2), _codes(2, 2, 2, 2, 2))
    assert loss.item() == 0.0


def test_masking_drops_same_label_pseudo_partners_only():
    loss_fn = SymmetricInfoNCE()
    a, b = _embeddings(4)
    labels = _codes(1, 1, 2, 2)
    masked = loss_fn(a, b, labels, _codes(2, 2, 2, 2))
    unmasked = loss_fn(a, b, labels, _codes(1, 1, 1, 1))
    assert masked.item() < unmasked.item()
    # Unknown labels are never masked.
    unknown = loss_fn(a, b, _codes(-1, -1, -1, -1), _codes(2, 2, 2, 2))
    assert torch.allclose(unknown, unmasked)


def test_mask_is_symmetric_and_spares_the_diagonal():
    mask = pseudo_pair_mask(_codes(1, 1, 1, -1), _codes(1, 2, 1, 2))
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]).bool()
    assert torch.equal(mask, expected)


def test_unpaired_rows_are_ignored():
    loss_fn = SymmetricInfoNCE()
    a, b = (t.requires_grad_() for t in _embeddings(5))
    labels = _codes(0, 1, 2, 0, 1)
    with_unpaired = loss_fn(a, b, labels, _codes(1, 0, 1, 0, 1), return_dict=True)
    keep = torch.tensor([0, 2, 4])
    alone = loss_fn(a[keep], b[keep], labels[keep], _codes(1, 1, 1), return_dict=True)
    assert torch.allclose(with_unpaired["loss"], alone["loss"])
    assert with_unpaired["accuracy"] == alone["accuracy"]
    grads = torch.autograd.grad(with_unpaired["loss"], [a, b])
    grads_alone = torch.autograd.grad(alone["loss"], [a, b])
    for grad, grad_alone in zip(grads, grads_alone, strict=True):
        assert torch.allclose(grad, grad_alone) and not grad[[1, 3]].any()


def test_an_empty_batch_gives_a_zero():
    loss = SymmetricInfoNCE()(torch.zeros(0, 4), torch.zeros(0, 4), _codes(), _codes(),
                              return_dict=True)
    assert loss["loss"].item() == 0.0 and loss["accuracy"].item() == 0.0


@pytest.mark.parametrize("pairing", [(0, 0, 0), (1, 0, 0)])
def test_fewer_than_two_pairs_give_a_zero_attached_to_the_graph(pairing):
    loss_fn = SymmetricInfoNCE()
    a, b = (t.requires_grad_() for t in _embeddings(3))
    loss = loss_fn(a, b, _codes(0, 1, 2), _codes(*pairing))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    assert loss_fn.logit_scale.grad is not None


def test_logit_scale_is_clamped_at_the_maximum():
    loss_fn = SymmetricInfoNCE()
    assert loss_fn.scale().item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        loss_fn.logit_scale.fill_(10.0)
    a, b = _embeddings()
    out = loss_fn(a, b, _codes(0, 1, 2, 0, 1, 2), _codes(1, 1, 1, 1, 1, 1), return_dict=True)
    assert out["logit_scale"].item() == pytest.approx(100.0)
    loss_fn.clamp_()
    assert loss_fn.logit_scale.item() == pytest.approx(math.log(100.0))


def test_perfect_alignment_with_a_large_scale_is_near_zero():
    loss_fn = SymmetricInfoNCE(init_temperature=0.01)
    emb = torch.eye(4, 8)
    out = loss_fn(emb, 3 * emb, _codes(0, 1, 2, 0), _codes(1, 1, 1, 1), return_dict=True)
    assert out["loss"].item() < 1e-6
    assert out["accuracy"].item() == 1.0


def test_gradient_reaches_both_embeddings_and_the_logit_scale():
    loss_fn = SymmetricInfoNCE()
    a, b = (t.requires_grad_() for t in _embeddings())
    loss_fn(a, b, _codes(0, 1, 2, 0, 1, 2), _codes(1, 2, 2, 1, 2, 1)).backward()
    for grad in (a.grad, b.grad, loss_fn.logit_scale.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_fixed_temperature_is_a_buffer():
    loss_fn = SymmetricInfoNCE(learnable=False)
    assert not list(loss_fn.parameters())
    assert "logit_scale" in dict(loss_fn.named_buffers())


def test_raw_projections_are_normalised_inside():
    loss_fn = SymmetricInfoNCE()
    a, b = _embeddings()
    labels, pairing = _codes(0, 1, 2, 0, 1, 2), _codes(1, 1, 1, 1, 1, 1)
    scaled = loss_fn(5 * a, 0.1 * b, labels, pairing)
    assert torch.allclose(scaled, loss_fn(F.normalize(a), b, labels, pairing))


def test_shape_errors_name_the_shapes():
    a, b = _embeddings()
    with pytest.raises(ValueError, match=r"\(6, 16\) and \(5, 16\)"):
        SymmetricInfoNCE()(a, b[:5], _codes(*[0] * 6), _codes(*[1] * 6))
    with pytest.raises(ValueError, match="pairing"):
        SymmetricInfoNCE()(a, b, _codes(*[0] * 6), _codes(1, 1))
