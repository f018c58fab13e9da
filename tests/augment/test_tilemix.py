import pytest
import torch

from radpath.augment import TileMix
from tests.models import random_batch


def _batch(units: int = 6, tiles: int = 4) -> dict[str, torch.Tensor]:
    """Six units with tiles, labels 2, 0, 1, 2, 0, 2; unit 0 has 2 of its 4 tiles."""
    batch = random_batch(units=units, tiles=tiles, histo_size=16, seed=1)
    batch["histo_mask"][1] = True  # random_batch leaves unit 1 without tiles
    batch["histo_mask"][2] = True
    batch["histo_mask"][0, 2:] = False
    batch["histo"] = torch.randn(batch["histo"].shape) * batch["histo_mask"][..., None, None, None]
    batch["has_histo"] = batch["histo_mask"].any(dim=1)
    batch["label"] = torch.tensor([2, 0, 1, 2, 0, 2])[:units]
    batch["malignant"] = (batch["label"] == 2).float()
    return batch


def _partner_tiles(batch: dict[str, torch.Tensor], partner: torch.Tensor) -> torch.Tensor:
    """Tile t of each unit's partner, t modulo the partner's tile count (by loops)."""
    histo, mask = batch["histo"], batch["histo_mask"]
    expected = torch.empty_like(histo)
    for unit, other in enumerate(partner.tolist()):
        count = int(mask[other].sum())
        for tile in range(histo.shape[1]):
            expected[unit, tile] = histo[other, tile % count]
    return expected


def test_identity_in_eval_mode_and_at_p_zero() -> None:
    batch = _batch()
    for module in (TileMix(p=1.0, seed=0).eval(), TileMix(p=0.0, seed=0)):
        out = module(batch)
        assert torch.equal(out["histo"], batch["histo"])
        assert torch.equal(out["histo_target"], batch["malignant"])
        assert module.last_partner is None


def test_mixup_blends_each_tile_with_a_partner_tile_and_mixes_the_target() -> None:
    batch = _batch()
    module = TileMix(p=1.0, alpha=0.4, mode="mixup", seed=3)
    out = module(batch)
    partner, lam = module.last_partner, module.last_lam
    assert not torch.equal(partner, torch.arange(6))  # every unit is eligible here
    assert torch.all(partner != torch.arange(6))
    weight = lam[:, None, None, None, None]
    expected = weight * batch["histo"] + (1 - weight) * _partner_tiles(batch, partner)
    expected = expected * batch["histo_mask"][..., None, None, None]  # padding stays zero
    assert torch.allclose(out["histo"], expected, atol=1e-6)
    y = batch["malignant"]
    assert torch.allclose(out["histo_target"], lam * y + (1 - lam) * y[partner])
    assert torch.equal(out["histo_mask"], batch["histo_mask"])
    assert torch.equal(out["histo"][0, 2:], torch.zeros_like(out["histo"][0, 2:]))


def test_units_without_tiles_or_label_neither_mix_nor_are_partners() -> None:
    batch = _batch()
    batch["histo_mask"][1] = False
    batch["histo"][1] = 0.0
    batch["has_histo"][1] = False
    batch["label"][4] = -1
    module = TileMix(p=1.0, seed=0)
    for _ in range(20):
        out = module(batch)
        partner = module.last_partner
        assert partner[1] == 1 and partner[4] == 4
        assert not torch.isin(partner[[0, 2, 3, 5]], torch.tensor([1, 4])).any()
        assert module.last_lam[1] == 1.0 and module.last_lam[4] == 1.0
        assert torch.equal(out["histo"][[1, 4]], batch["histo"][[1, 4]])


def test_a_single_eligible_unit_is_left_as_it_is() -> None:
    batch = _batch()
    batch["label"][1:] = -1
    out = TileMix(p=1.0, seed=0)(batch)
    assert torch.equal(out["histo"], batch["histo"])
    assert torch.equal(out["histo_target"], batch["malignant"])


def test_cutmix_pastes_one_box_of_the_partner_covering_one_minus_lam() -> None:
    batch = _batch()
    module = TileMix(p=1.0, alpha=1.0, mode="cutmix", seed=5)
    out = module(batch)
    partner, lam = module.last_partner, module.last_lam
    own, other = batch["histo"], _partner_tiles(batch, partner)
    for unit in range(6):
        tiles = int(batch["histo_mask"][unit].sum())
        kept = out["histo"][unit, :tiles] == own[unit, :tiles]
        pasted = out["histo"][unit, :tiles] == other[unit, :tiles]
        assert torch.all(kept | pasted)
        # One box for every tile and channel of the unit: a product of row and column runs.
        box = pasted[0, 0] & ~kept[0, 0]
        assert torch.equal((pasted & ~kept), box.expand_as(kept))
        rows, cols = box.any(dim=1), box.any(dim=0)
        assert torch.equal(box, rows[:, None] & cols[None, :])
        assert torch.isclose(lam[unit], 1 - box.float().mean(), atol=1e-6)
    y = batch["malignant"]
    assert torch.allclose(out["histo_target"], lam * y + (1 - lam) * y[partner])
    assert float(lam.min()) > 0 and float(lam.max()) < 1


def test_same_seed_same_mixing_and_reseed_restarts() -> None:
    batch = _batch()
    first = TileMix(p=1.0, seed=7)(batch)["histo"]
    assert torch.equal(TileMix(p=1.0, seed=7)(batch)["histo"], first)
    assert not torch.equal(TileMix(p=1.0, seed=8)(batch)["histo"], first)
    module = TileMix(p=1.0, seed=7)
    module(batch)
    module.reseed(7)
    assert torch.equal(module(batch)["histo"], first)


def test_batches_mixed_follow_p() -> None:
    module = TileMix(p=0.5, seed=0)
    batch = _batch()
    mixed = 0
    for _ in range(200):
        module(batch)
        mixed += module.last_partner is not None
    assert 70 < mixed < 130


@pytest.mark.parametrize(("field", "value"), [("p", 1.5), ("alpha", 0.0), ("mode", "mosaic")])
def test_bad_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TileMix(**{field: value})
