import math

import pytest
import torch

from radpath.objectives import IrmSchedule, check_domains, irm_penalty, irm_penalty_by_domain


def _calibrated_half() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ±log 3 whose targets are 1 in exactly sigmoid(logit) of the cases.

    Then d/dw BCE(w * logits) at w = 1, the mean of (sigmoid(z) - y) * z, is exactly 0.
    """
    z = math.log(3.0)
    logits = torch.tensor([z, z, z, z, -z, -z, -z, -z], dtype=torch.float64)
    targets = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1], dtype=torch.float64)
    return logits, targets


def _interleave(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.stack([a, b], dim=1).reshape(-1)


def _scale_gradient(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return float(((torch.sigmoid(logits) - targets) * logits).mean())


def test_penalty_vanishes_at_the_optimal_scale():
    logits, targets = _calibrated_half()
    penalty = irm_penalty(_interleave(logits, logits), _interleave(targets, targets))
    assert abs(penalty.item()) < 1e-12


def test_penalty_is_the_product_of_the_halves_gradients_when_off_scale():
    logits, targets = _calibrated_half()
    even, odd = 3 * logits, 3 * logits.flip(0)
    penalty = irm_penalty(_interleave(even, odd), _interleave(targets, targets.flip(0)))
    expected = _scale_gradient(even, targets) * _scale_gradient(odd, targets.flip(0))
    assert penalty.item() > 0
    assert penalty.item() == pytest.approx(expected, rel=1e-9)


def test_single_example_uses_the_squared_gradient():
    logits, targets = torch.tensor([2.0]), torch.tensor([0.0])
    expected = _scale_gradient(logits, targets) ** 2
    assert irm_penalty(logits, targets).item() == pytest.approx(expected, rel=1e-6)


def test_penalty_is_differentiable_in_the_logits():
    logits, targets = _calibrated_half()
    logits = (3 * logits).requires_grad_()
    irm_penalty(logits, targets).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_per_domain_penalty_is_the_mean_over_domains_present():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 1, generator=gen)
    targets = torch.randint(0, 2, (12,), generator=gen).float()
    domains = torch.tensor([0, 1, 0, 1, 3, 3, 0, 1, 3, -1, -1, 0])
    expected = torch.stack([irm_penalty(logits[domains == d], targets[domains == d])
                            for d in (0, 1, 3)]).mean()
    assert torch.allclose(irm_penalty_by_domain(logits, targets, domains), expected)


def test_per_domain_penalty_skips_masked_and_nan_targets():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(8, generator=gen)
    targets = torch.tensor([1.0, 0.0, float("nan"), 1.0, 0.0, 1.0, 0.0, 1.0])
    domains = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    mask = torch.tensor([True, True, True, True, True, True, False, False])
    keep0, keep1 = torch.tensor([0, 1, 3]), torch.tensor([4, 5])
    expected = (irm_penalty(logits[keep0], targets[keep0])
                + irm_penalty(logits[keep1], targets[keep1])) / 2
    assert torch.allclose(irm_penalty_by_domain(logits, targets, domains, mask), expected)


def test_no_domain_present_gives_a_zero_attached_to_the_graph():
    logits = torch.randn(3, requires_grad=True)
    penalty = irm_penalty_by_domain(logits, torch.ones(3), torch.full((3,), -1))
    assert penalty.item() == 0.0 and penalty.grad_fn is not None


def test_schedule_anneals_like_domainbed():
    schedule = IrmSchedule(weight=100.0, anneal_steps=500)
    assert [schedule.weight_at(s) for s in (0, 499, 500, 10_000)] == [1.0, 1.0, 100.0, 100.0]
    assert [schedule.just_annealed(s) for s in (499, 500, 501)] == [False, True, False]
    assert not IrmSchedule(anneal_steps=0).just_annealed(0)
    with pytest.raises(ValueError, match="anneal_steps"):
        IrmSchedule(anneal_steps=-1)


def test_single_domain_is_refused_with_its_name():
    with pytest.raises(ValueError, match="IRM needs at least two domains in the training data; "
                                         "found 1: mias"):
        check_domains(["mias", "mias"])
    check_domains(["mias", "cbis"])


def _penalty_domain_by_domain(logits, targets, domains, mask):
    """The definition, one domain at a time: irm_penalty of each present domain's examples."""
    keep = (domains >= 0) & ~torch.isnan(targets) & mask
    penalties = [irm_penalty(logits[keep & (domains == d)], targets[keep & (domains == d)])
                 for d in torch.unique(domains[keep]).tolist()]
    return torch.stack(penalties).mean() if penalties else logits.sum() * 0.0


@pytest.mark.parametrize("seed", range(6))
def test_all_domains_at_once_equal_the_definition_with_gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    size = 5 + seed * 3
    logits = (torch.randn(size, generator=gen) * 2).requires_grad_()
    targets = torch.randint(0, 2, (size,), generator=gen).float()
    targets[torch.rand(size, generator=gen) < 0.15] = float("nan")
    domains = torch.randint(-1, 4, (size,), generator=gen)  # some domains hold one example
    mask = torch.rand(size, generator=gen) < 0.8
    expected = _penalty_domain_by_domain(logits, targets, domains, mask)
    for known in (4, None):
        penalty = irm_penalty_by_domain(logits, targets, domains, mask, num_domains=known)
        torch.testing.assert_close(penalty, expected, atol=1e-6, rtol=1e-5)
        (grad,) = torch.autograd.grad(penalty, logits)
        (expected_grad,) = torch.autograd.grad(expected, logits, retain_graph=True)
        torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-5)


def test_squared_estimator_is_the_squared_batch_gradient():
    torch.manual_seed(0)
    logits, targets = torch.randn(10, dtype=torch.float64), torch.rand(10).round().double()
    expected = _scale_gradient(logits, targets) ** 2
    assert irm_penalty(logits, targets, estimator="squared").item() == pytest.approx(expected)


def test_split_estimate_can_be_negative_the_squared_one_cannot():
    # Even and odd halves pull the scale in opposite directions: their product is negative,
    # which a network trained long on one split can learn to produce (IrmSettings).
    logits = torch.tensor([2.0, 2.0, 2.0, 2.0])
    targets = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert irm_penalty(logits, targets, estimator="split").item() < 0
    assert irm_penalty(logits, targets, estimator="squared").item() > 0
    domains = torch.zeros(4, dtype=torch.long)
    assert irm_penalty_by_domain(logits, targets, domains, estimator="split").item() < 0


def test_squared_estimator_by_domain_matches_each_domain():
    torch.manual_seed(1)
    logits, targets = torch.randn(12, dtype=torch.float64), torch.rand(12).round().double()
    domains = torch.tensor([0, 1, 2] * 4)
    expected = torch.stack([irm_penalty(logits[domains == d], targets[domains == d],
                                        estimator="squared") for d in range(3)]).mean()
    got = irm_penalty_by_domain(logits, targets, domains, estimator="squared")
    assert torch.allclose(got, expected)


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="estimator"):
        irm_penalty(torch.zeros(4), torch.zeros(4), estimator="mean")
    with pytest.raises(ValueError, match="estimator"):
        irm_penalty_by_domain(torch.zeros(4), torch.zeros(4), torch.zeros(4), estimator="x")
