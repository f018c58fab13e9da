import pytest
import torch

from radpath.objectives import (
    GroupDRO,
    coral_distance,
    coral_penalty,
    group_dro_weights,
    split_by_domain,
)


def _features(seed: int, n: int = 32, dim: int = 8) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_coral_is_zero_for_identical_batches():
    x = _features(0)
    assert coral_penalty([x, x.clone(), x[torch.randperm(32)]]).item() == pytest.approx(0, abs=1e-6)


def test_coral_grows_with_a_shift_and_is_symmetric():
    x, y = _features(0), _features(1)
    shifted = x + 2.0
    assert coral_penalty([x, shifted]).item() > coral_penalty([x, y]).item() > 0
    assert torch.allclose(coral_penalty([x, y]), coral_penalty([y, x]))


def test_coral_matches_the_hand_formula_and_averages_pairs():
    x, y, z = _features(0, 5, 3), _features(1, 7, 3), _features(2, 4, 3)
    expected = ((x.mean(0) - y.mean(0)) ** 2).mean() + ((x.T.cov() - y.T.cov()) ** 2).mean()
    assert torch.allclose(coral_distance(x, y), expected, atol=1e-6)
    pairs = (coral_distance(x, y) + coral_distance(x, z) + coral_distance(y, z)) / 3
    assert torch.allclose(coral_penalty([x, y, z]), pairs)


def test_coral_with_one_domain_is_a_zero_attached_to_the_graph():
    x = _features(0).requires_grad_()
    penalty = coral_penalty([x, x[:0]])
    assert penalty.item() == 0.0 and penalty.grad_fn is not None


def test_split_by_domain_ignores_unknown():
    features = torch.arange(6.0)[:, None]
    parts = split_by_domain(features, torch.tensor([2, 0, -1, 2, 0, 0]))
    assert [p.flatten().tolist() for p in parts] == [[1.0, 4.0, 5.0], [0.0, 3.0]]


def test_group_dro_moves_weight_to_the_worst_group_and_stays_normalised():
    q = torch.full((3,), 1 / 3)
    losses = torch.tensor([0.2, 1.5, 0.4])
    for _ in range(50):
        q = group_dro_weights(losses, q, eta=0.1)
        assert q.sum().item() == pytest.approx(1.0)
    assert q.argmax().item() == 1 and q[1] > 0.9
    # Hand value of one step: q_g proportional to exp(eta * loss_g).
    one = group_dro_weights(losses, torch.full((3,), 1 / 3), eta=1.0)
    assert torch.allclose(one, torch.softmax(losses, 0))


def test_group_dro_leaves_absent_groups_and_survives_huge_losses():
    q = torch.tensor([0.5, 0.25, 0.25])
    new = group_dro_weights(torch.tensor([1e4, 0.0, 9.9]), q, eta=1.0,
                            present=torch.tensor([False, True, False]))
    assert torch.allclose(new, q)
    assert torch.isfinite(group_dro_weights(torch.tensor([1e6, 0.0, 0.0]), q, eta=1.0)).all()


def test_group_dro_module_updates_in_training_only():
    module = GroupDRO(2, eta=1.0)
    losses = torch.tensor([1.0, 0.0], requires_grad=True)
    loss = module(losses)
    assert module.q[0] > module.q[1]
    assert torch.allclose(loss, (module.q * losses).sum())
    loss.backward()
    assert losses.grad is not None
    before = module.q.clone()
    module.eval()
    module(losses)
    assert torch.equal(module.q, before)
