"""Patient-bag dataset and collate on a tiny synthetic cohort."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from radpath.batch.collate import collate_patients
from radpath.batch.dataset import DataConfig, PatientBagDataset, pairing_mode, unit_table
from radpath.batch.keys import TENSOR_KEYS
from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD, lesion_map
from radpath.batch.units import Unit
from radpath.data.cache import ArrayCache
from radpath.data.histo import HistoConfig
from radpath.data.mammo import MammoConfig
from radpath.data.manifest import Manifest
from radpath.data.preprocess import PreprocessConfig, RecordPreprocessor, load_cached
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.data.workflow import combine_pair_split

SIZE, TILE, PATCH, MAX_TILES = 64, 32, 16, 3


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    # 8 patients, half with both modalities: true pairs, one pseudo-pair and unpaired ones.
    root = tmp_path_factory.mktemp("cohort")
    path = make_synthetic_cohort(root / "cohort", SyntheticConfig(
        n_patients=8, mammo_size=96, tile_size=64, both_fraction=0.5))
    paired, _ = combine_pair_split([path], root / "split.csv")
    return paired


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> DataConfig:
    # min_tissue=0 keeps all 4 tiles of each 64 px image: 8 per histo patient > MAX_TILES.
    preprocess = PreprocessConfig(mammo=MammoConfig(size=SIZE),
                                  histo=HistoConfig(tile_size=TILE, min_tissue=0.0))
    return DataConfig(preprocess=preprocess, cache_dir=str(tmp_path_factory.mktemp("cache")),
                      max_tiles=MAX_TILES, eval_tiles=MAX_TILES, patch_size=PATCH)


def _unit_of(dataset: PatientBagDataset, predicate: Callable[[Unit], object]) -> int:
    return next(i for i, u in enumerate(dataset.units) if predicate(u))


def _items(dataset: PatientBagDataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def test_one_unit_per_pair_or_patient(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    keys = {r.pair_id if r.pairing in ("true", "pseudo") else r.patient_id for r in manifest}
    assert len(dataset) == len(keys) == 7
    pseudo = dataset.units[_unit_of(dataset, lambda u: u.pairing == "pseudo")]
    assert len(pseudo.patient_ids) == 2 and pseudo.mammo and pseudo.histo
    assert pairing_mode(dataset) == "mixed"


def test_collate_matches_batch_contract(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    batch = collate_patients(_items(dataset))
    assert set(batch) == {*TENSOR_KEYS, "unit_id"}
    b, grid = len(dataset), SIZE // PATCH
    expected = {
        "mammo": ((b, 2, 1, SIZE, SIZE), torch.float32), "mammo_mask": ((b, 2), torch.bool),
        "histo": ((b, MAX_TILES, 3, TILE, TILE), torch.float32),
        "histo_mask": ((b, MAX_TILES), torch.bool),
        "lesion_map": ((b, 2, grid, grid), torch.float32), "lesion_known": ((b, 2), torch.bool),
        "has_mammo": ((b,), torch.bool), "has_histo": ((b,), torch.bool),
        "label": ((b,), torch.long), "malignant": ((b,), torch.float32),
        "grade": ((b,), torch.long), "mammo_domain": ((b,), torch.long),
        "histo_domain": ((b,), torch.long), "pairing": ((b,), torch.long),
        "mammo_side": ((b, 2), torch.long), "mammo_view_label": ((b, 2), torch.long),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape, key
        assert batch[key].dtype == dtype, key
    assert batch["unit_id"] == [u.unit_id for u in dataset.units]
    sides = [[{"L": 0, "R": 1}.get(r.laterality, -1) for r in u.mammo] for u in dataset.units]
    assert batch["mammo_side"].tolist() == [s + [-1] * (2 - len(s)) for s in sides]
    assert (batch["mammo_side"] >= 0).any()
    codes = {"normal": 0, "benign": 1, "malignant": 2}
    films = [[codes.get(r.label, -1) for r in u.mammo] for u in dataset.units]
    assert batch["mammo_view_label"].tolist() == [f + [-1] * (2 - len(f)) for f in films]
    assert any(len(set(f)) > 1 for f in films)  # a finding beside a normal film
    assert torch.equal(batch["malignant"], (batch["label"] == 2).float())


def test_masks_match_real_views_and_tiles(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    batch = collate_patients(_items(dataset))
    for b, unit in enumerate(dataset.units):
        tiles = min(MAX_TILES, 4 * len(unit.histo))
        assert batch["mammo_mask"][b].sum() == len(unit.mammo)
        assert batch["histo_mask"][b].sum() == tiles
        assert batch["histo_mask"][b, :tiles].all()
        assert not batch["mammo"][b][~batch["mammo_mask"][b]].any()
        assert not batch["histo"][b][~batch["histo_mask"][b]].any()


def test_evaluation_sees_every_tile_training_draws_a_subset(manifest: Manifest,
                                                           config: DataConfig) -> None:
    every = config.model_copy(update={"eval_tiles": None})
    evaluation = PatientBagDataset(manifest, every)
    b = _unit_of(evaluation, lambda u: u.histo)
    cached = 4 * len(evaluation.units[b].histo)
    assert cached > MAX_TILES
    assert evaluation[b]["histo"].shape[0] == cached
    assert PatientBagDataset(manifest, every, train=True)[b]["histo"].shape[0] == MAX_TILES


def test_single_modality_unit_is_zero_and_flagged(manifest: Manifest,
                                                  config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    batch = collate_patients(_items(dataset))
    b = _unit_of(dataset, lambda u: u.mammo and not u.histo)
    assert batch["has_mammo"][b] and not batch["has_histo"][b]
    assert not batch["histo"][b].any() and not batch["histo_mask"][b].any()
    assert batch["histo_domain"][b] == -1 and batch["mammo_domain"][b] >= 0
    b = _unit_of(dataset, lambda u: u.histo and not u.mammo)
    assert not batch["has_mammo"][b] and not batch["mammo"][b].any()
    assert not batch["lesion_known"][b].any() and batch["mammo_domain"][b] == -1


def test_modality_absent_from_batch_has_one_masked_slot(manifest: Manifest,
                                                        config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    b = _unit_of(dataset, lambda u: u.mammo and not u.histo)
    batch = collate_patients([dataset[b]])
    assert batch["histo"].shape == (1, 1, 3, TILE, TILE)
    assert not batch["histo_mask"].any() and not batch["histo"].any()


def test_lesion_map_marks_lesion_cell(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    b = _unit_of(dataset, lambda u: any(r.lesions for r in u.mammo))
    unit, item = dataset.units[b], dataset[b]
    v = next(k for k, r in enumerate(unit.mammo) if r.lesions)
    arrays = load_cached(unit.mammo[v], ArrayCache(config.cache_dir),
                         RecordPreprocessor(config.preprocess))
    x, y, _ = arrays["lesions"][0]
    assert item["lesion_map"][v, int(y // PATCH), int(x // PATCH)] == 1
    assert item["lesion_known"][v]
    for k, record in enumerate(unit.mammo):  # normal views are known and empty
        if record.label == "normal":
            assert item["lesion_known"][k] and not item["lesion_map"][k].any()


def test_shifted_and_flipped_training_views_carry_their_lesion_map(
        manifest: Manifest, config: DataConfig) -> None:
    moving = config.model_copy(update={"mammo_shift": 0.4, "mammo_vflip": True,
                                       "mammo_noise": 0.0, "mammo_gamma": (1.0, 1.0)})
    dataset = PatientBagDataset(manifest, moving, train=True)
    still = PatientBagDataset(manifest, config)
    b = _unit_of(dataset, lambda u: any(r.lesions for r in u.mammo))
    v = next(k for k, r in enumerate(dataset.units[b].mammo) if r.lesions)
    reference = still[b]
    moved_any = False
    for epoch in range(6):
        dataset.set_epoch(epoch)
        item = dataset[b]
        image, original = item["mammo"][v, 0], reference["mammo"][v, 0]
        # The moved image is the original moved by whole patches (and maybe flipped): find
        # the move, then check the lesion map moved the same way.
        matches = [(flip, dy, dx) for flip in (False, True)
                   for dy in range(-SIZE + PATCH, SIZE, PATCH)
                   for dx in range(-SIZE + PATCH, SIZE, PATCH)
                   if torch.equal(_moved(original, flip, dy, dx), image)]
        assert matches, f"epoch {epoch}: not a whole-patch move of the original"
        flip, dy, dx = matches[0]
        moved_any |= (dy, dx) != (0, 0)
        expected = _moved(reference["lesion_map"][v], flip, dy // PATCH, dx // PATCH, fill=0.0)
        assert torch.equal(item["lesion_map"][v], expected)
    assert moved_any


def _moved(image: torch.Tensor, flip: bool, dy: int, dx: int,
           fill: float = -MAMMO_MEAN / MAMMO_STD) -> torch.Tensor:
    image = image.flip(0) if flip else image
    size = image.shape[0]
    out = torch.full_like(image, fill)
    out[max(dy, 0):size + min(dy, 0), max(dx, 0):size + min(dx, 0)] = (
        image[max(-dy, 0):size - max(dy, 0), max(-dx, 0):size - max(dx, 0)])
    return out


def test_lesion_map_function() -> None:
    # A circle of radius 12 around (32, 32) holds the centres (24 or 40) of the 4 middle cells.
    assert lesion_map(np.array([[32.0, 32.0, 12.0]]), 64, 16)[1:3, 1:3].all()
    tiny = lesion_map(np.array([[50.0, 5.0, 1.0]]), 64, 16)
    assert tiny[0, 3] == 1 and tiny.sum() == 1
    assert not lesion_map(np.zeros((0, 3)), 64, 16).any()


def test_training_draws_follow_seed_and_epoch(manifest: Manifest, config: DataConfig) -> None:
    b = 1
    first = PatientBagDataset(manifest, config, train=True, seed=3)[b]
    again = PatientBagDataset(manifest, config, train=True, seed=3)[b]
    later = PatientBagDataset(manifest, config, train=True, seed=3)
    later.set_epoch(1)
    assert first["mammo"].shape[0] and first["histo"].shape[0]
    for key in ("mammo", "histo"):
        assert torch.equal(first[key], again[key])
        assert not torch.equal(first[key], later[b][key])
    # The epoch may come with the key instead (EpochTagged), whatever set_epoch said.
    tagged = PatientBagDataset(manifest, config, train=True, seed=3)
    for key in ("mammo", "histo"):
        assert torch.equal(tagged[(1, b)][key], later[b][key])
        assert torch.equal(later[(0, b)][key], first[key])


@pytest.mark.parametrize("train", [True, False])
def test_items_read_from_memory_equal_items_read_from_disk(manifest: Manifest,
                                                           config: DataConfig,
                                                           train: bool) -> None:
    remembered = PatientBagDataset(manifest, config, train=train, seed=3)
    from_disk = PatientBagDataset(manifest, config.model_copy(update={"memory_cache_mb": 0}),
                                  train=train, seed=3)
    for epoch in (0, 1):  # the second epoch reads every entry from memory
        remembered.set_epoch(epoch)
        from_disk.set_epoch(epoch)
        for a, b in zip(_items(remembered), _items(from_disk), strict=True):
            for key in ("mammo", "histo", "lesion_map"):
                assert torch.equal(a[key], b[key])
    assert len(remembered._worker["memory"]) > 0 and len(from_disk._worker["memory"]) == 0


def test_eval_items_are_deterministic_and_unaugmented(manifest: Manifest,
                                                      config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    b = _unit_of(dataset, lambda u: u.mammo and u.histo)
    item = dataset[b]
    dataset.set_epoch(5)
    assert torch.equal(item["mammo"], dataset[b]["mammo"])
    assert torch.equal(item["histo"], dataset[b]["histo"])
    cached = load_cached(dataset.units[b].mammo[0], ArrayCache(config.cache_dir),
                         RecordPreprocessor(config.preprocess))["image"].astype(np.float32)
    expected = torch.from_numpy((cached - MAMMO_MEAN) / MAMMO_STD)
    assert torch.allclose(item["mammo"][0, 0], expected)


def test_unknown_domain_maps_to_minus_one(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config, domains=["site-b"])
    batch = collate_patients(_items(dataset))
    for b, unit in enumerate(dataset.units):
        expected = {"site-b": 0}.get(unit.mammo_domain, -1)
        assert batch["mammo_domain"][b] == expected
    assert (batch["mammo_domain"] == -1).any() and (batch["mammo_domain"] == 0).any()
    assert PatientBagDataset(manifest, config).domains == ("site-a", "site-b", "site-c")


def test_split_filtering(manifest: Manifest, config: DataConfig) -> None:
    total = 0
    for split in ("train", "val", "test"):
        dataset = PatientBagDataset(manifest, config, split=split)
        assert {r.split for r in dataset.records} == {split}
        total += len(dataset)
    assert total == len(PatientBagDataset(manifest, config))


def test_labels_grades_and_table(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    table = unit_table(dataset)
    assert [row["label"] for row in table] == dataset.labels.tolist()
    grades = [u.grade for u in dataset.units]
    assert dataset.num_grades == max(grades) + 1 > 0
    for row, unit, domains in zip(table, dataset.units, dataset.modality_domains, strict=True):
        assert domains == {m: row[f"{m}_domain"] for m in ("mammo", "histo") if getattr(unit, m)}
    assert {len(domains) for domains in dataset.modality_domains} == {1, 2}  # pairs hold both
    # A unit's label is its worst image's: a malignant patient with a normal view stays so.
    b = _unit_of(dataset, lambda u: u.label == "malignant" and u.mammo)
    assert {r.label for r in dataset.units[b].mammo} >= {"normal"}


def test_max_views_cuts_in_stable_order(manifest: Manifest, config: DataConfig) -> None:
    one = PatientBagDataset(manifest, config.model_copy(update={"max_views": 1}))
    assert all(len(u.mammo) <= 1 for u in one.units)
    assert all(u.mammo[0].laterality == "L" for u in one.units if u.mammo)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        DataConfig(preprocess=PreprocessConfig(mammo=MammoConfig(size=72)), patch_size=16)
    with pytest.raises(ValueError, match="mammo_gamma"):
        DataConfig(mammo_gamma=(1.5, 1.0))


def test_pickles_and_loads_in_workers(manifest: Manifest, config: DataConfig) -> None:
    dataset = PatientBagDataset(manifest, config)
    dataset[0]  # builds the per-process preprocessor, which must not travel
    copy = pickle.loads(pickle.dumps(dataset))
    assert len(copy) == len(dataset) and copy._worker == {}

    def batches(workers: int) -> list[dict]:
        return list(DataLoader(dataset, batch_size=3, num_workers=workers,
                               collate_fn=collate_patients))

    for serial, parallel in zip(batches(0), batches(2), strict=True):
        assert serial["unit_id"] == parallel["unit_id"]
        for key in TENSOR_KEYS:
            assert torch.equal(serial[key], parallel[key]), key
