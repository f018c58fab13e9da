import pytest
import torch

from radpath.augment import (
    MammoIntensityAugment,
    adjust_gamma,
    adjust_window,
    gaussian_noise,
    random_gamma,
    random_window,
)


def _images(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


AUGMENTS = [
    lambda x, g: random_gamma(x, g),
    lambda x, g: random_window(x, g, shift=0.2),
    lambda x, g: gaussian_noise(x, g, std=0.1),
]


@pytest.mark.parametrize("augment", AUGMENTS)
def test_shape_range_and_determinism(augment):
    x = _images()
    out = augment(x, _gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, augment(x, _gen(1)))
    assert not torch.equal(out, augment(x, _gen(2)))
    assert not torch.equal(out, x)


def test_neutral_parameters_are_the_identity():
    x = _images()
    assert torch.equal(random_gamma(x, _gen(), 1.0, 1.0), x)
    assert torch.equal(random_window(x, _gen(), shift=0.0), x)
    assert torch.equal(gaussian_noise(x, _gen(), std=0.0), x)
    assert torch.equal(adjust_gamma(x, 1.0), x)
    assert torch.equal(adjust_window(x, 0.0, 1.0), x)


def test_gamma_is_one_value_per_image_within_range():
    x = torch.full((4, 8, 8), 0.5)
    out = random_gamma(x, _gen(), 0.7, 1.5)
    gamma = torch.log(out[:, 0, 0]) / torch.log(torch.tensor(0.5))
    assert (gamma >= 0.7 - 1e-5).all() and (gamma <= 1.5 + 1e-5).all()
    assert torch.equal(out, out[:, :1, :1].expand_as(out))


def test_window_by_hand():
    x = torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]])
    out = adjust_window(x, 0.25, 0.75)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 0.5, 1.0, 1.0]]))


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="gamma range"):
        random_gamma(_images(), _gen(), 1.5, 0.7)
    with pytest.raises(ValueError, match="window shift"):
        random_window(_images(), _gen(), shift=0.6)


def test_module_is_seeded_and_identity_in_eval():
    x = _images()
    kwargs = {"p_gamma": 1.0, "p_window": 1.0, "p_noise": 1.0, "seed": 5}
    out = MammoIntensityAugment(**kwargs)(x)
    assert torch.equal(out, MammoIntensityAugment(**kwargs)(x))
    assert not torch.equal(out, x) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(MammoIntensityAugment(**kwargs).eval()(x), x)
    never = MammoIntensityAugment(p_gamma=0.0, p_window=0.0, p_noise=0.0, seed=5)
    assert torch.equal(never(x), x)
