import numpy as np
import pytest
import torch

from radpath.augment import TokenMixStyle, cross_domain_partners


def _tokens(batch: int = 6, tokens: int = 17, dim: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.rand(batch, 1, dim, generator=gen) * 3 + 0.5
    shift = torch.randn(batch, 1, dim, generator=gen) * 2
    return torch.randn(batch, tokens, dim, generator=gen) * scale + shift


def test_identity_in_eval_mode():
    module = TokenMixStyle(p=1.0, seed=0).eval()
    x = _tokens()
    assert torch.equal(module(x), x)


def test_identity_when_p_is_zero():
    x = _tokens()
    assert torch.equal(TokenMixStyle(p=0.0, seed=0)(x), x)


def test_output_carries_the_mixed_statistics():
    module = TokenMixStyle(p=1.0, alpha=0.3, seed=3, skip_tokens=1)
    x = _tokens()
    out = module(x)
    body = x[:, 1:]
    mu, sigma = body.mean(1, keepdim=True), (body.var(1, keepdim=True) + 1e-6).sqrt()
    perm, lam = module.last_perm, module.last_lam
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
    assert torch.allclose(out[:, 1:].mean(1, keepdim=True), mu_mix, atol=1e-4)
    assert torch.allclose(out[:, 1:].std(1, keepdim=True), sigma_mix, atol=1e-4)
    assert not torch.allclose(out, x)


def test_cls_token_is_untouched():
    x = _tokens()
    out = TokenMixStyle(p=1.0, seed=0, skip_tokens=1)(x)
    assert torch.equal(out[:, :1], x[:, :1])


def test_same_seed_same_mixing_and_different_seed_different():
    x = _tokens()
    first, again = TokenMixStyle(p=1.0, seed=7)(x), TokenMixStyle(p=1.0, seed=7)(x)
    assert torch.equal(first, again)
    assert not torch.allclose(first, TokenMixStyle(p=1.0, seed=8)(x))
    module = TokenMixStyle(p=1.0, seed=7)
    module(x)
    module.reseed(7)
    assert torch.equal(module(x), first)


def test_skip_draws_follow_p():
    module = TokenMixStyle(p=0.5, seed=0)
    x = _tokens()
    mixed = sum(not torch.equal(module(x), x) for _ in range(200))
    assert 70 < mixed < 130


def test_crossdomain_partners_come_from_another_domain():
    domains = torch.tensor([0, 0, 0, 1, 1, 2])
    module = TokenMixStyle(p=1.0, mix="crossdomain", seed=0)
    for _ in range(20):
        module(_tokens(), domains)
        assert (domains[module.last_perm] != domains).all()


def test_crossdomain_falls_back_to_random_without_another_domain():
    partners = cross_domain_partners(np.array([0, 0, 0, -1]), np.random.default_rng(0))
    assert sorted(partners.tolist()) == [0, 1, 2, 3]  # the fallback permutation
    partners = cross_domain_partners(np.array([0, 0, 1, -1]), np.random.default_rng(0))
    assert partners[0] == 2 and partners[1] == 2 and partners[2] in (0, 1)


def test_crossdomain_needs_domains():
    with pytest.raises(ValueError, match="domains"):
        TokenMixStyle(p=1.0, mix="crossdomain", seed=0)(_tokens())


def test_gradient_flows_through_the_mixing():
    x = _tokens().requires_grad_()
    (TokenMixStyle(p=1.0, seed=0)(x) ** 2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="p must be"):
        TokenMixStyle(p=1.5)
    with pytest.raises(ValueError, match="mix must be"):
        TokenMixStyle(mix="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        TokenMixStyle(p=1.0, seed=0)(torch.zeros(2, 3))


def test_crossdomain_partners_are_uniform_over_other_domains_and_scale():
    domains = np.repeat([0, 1, 2], [5000, 3000, 2000])
    partners = cross_domain_partners(domains, np.random.default_rng(0))  # O(B): instant
    assert (domains[partners] != domains).all()
    # A domain-0 sample's partners: 3 of 5 from domain 1, 2 of 5 from domain 2.
    share = (domains[partners[domains == 0]] == 1).mean()
    assert share == pytest.approx(0.6, abs=0.03)
    assert len(np.unique(partners[domains == 0])) > 3000  # spread over the candidates
