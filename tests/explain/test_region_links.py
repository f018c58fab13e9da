"""Region-specific histology links: centred similarity, the synthetic check, the figure."""

import numpy as np
import torch

from radpath.data.manifest import read_manifest
from radpath.explain import render
from radpath.explain.evidence import (
    LINK_METHOD,
    Region,
    link_tiles,
    region_embeddings,
    tile_embeddings,
)
from radpath.explain.link_check import (
    LinkTrial,
    distinct_links,
    link_hit_rates,
    region_link_trials,
)


def _regions() -> list[Region]:
    return [Region(0, 0, 0, 1, 1.0, output_xyr=(4.0, 4.0, 4.0)),
            Region(0, 0, 0, 1, 0.5, output_xyr=(28.0, 28.0, 4.0))]


def test_centred_links_follow_what_sets_each_region_apart(tiny_model):
    """Two regions whose tokens differ along opposite directions link opposite tiles, even
    though a common component makes every raw similarity nearly the same."""
    torch.manual_seed(0)
    grid, size = (4, 4), 32
    dim = tiny_model.projections["mammo"].in_features
    common, apart = torch.randn(dim) * 5, torch.randn(dim)
    patches = common.repeat(1, 16, 1)
    patches[0, 0] += apart  # cell (0, 0): region 1
    patches[0, 15] -= apart  # cell (3, 3): region 2
    regions = _regions()
    emb = region_embeddings(tiny_model, patches, regions, grid, size)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    # Tiles are the regions' own directions: each region must link its own one first.
    projected = torch.stack([tiny_model.projections["mammo"](patches[0, i]) for i in (0, 15)])
    tiles = torch.nn.functional.normalize(
        projected - tiny_model.projections["mammo"](patches[0].mean(0)), dim=-1)
    link_tiles(regions, emb, tiles, 2)
    assert regions[0].links[0][0] == 0 and regions[1].links[0][0] == 1
    assert regions[0].links[0][1] > 0.9 and regions[1].links[0][1] > 0.9


def test_tile_centring_needs_two_tiles(tiny_model):
    cls = torch.randn(3, tiny_model.projections["histo"].in_features)
    one = tile_embeddings(tiny_model, cls[:1], centred=True)  # centring one would leave 0
    assert torch.allclose(one, tile_embeddings(tiny_model, cls[:1]))
    three = tile_embeddings(tiny_model, cls, centred=True)
    raw = tiny_model.projections["histo"](cls)
    expected = torch.nn.functional.normalize(raw - raw.mean(0), dim=-1)
    assert torch.allclose(three, expected, atol=1e-6)


def test_region_links_on_a_synthetic_case(loaded_run, cohort):
    """The whole check on the tiny cohort: trials for every lesion and a normal patch, hit
    rates with intervals that contain their estimate, random links at exactly 1/3."""
    records = list(read_manifest(cohort))
    mammograms = [r for r in records if r.modality == "mammo" and r.lesions][:3]
    histology = [r for r in records if r.modality == "histo"]
    trials = region_link_trials(loaded_run, mammograms, histology, per_label=1)
    lesions = sum(len(r.lesions) for r in mammograms)
    assert len(trials) == lesions + len(mammograms)
    assert {t.expected for t in trials} >= {"normal"}
    assert all(len(t.linked) == 3 and 0 <= t.top < 3 for t in trials)
    rates = link_hit_rates(trials, n_boot=200)
    for estimate, low, high in rates.values():
        assert low - 1e-9 <= estimate <= high + 1e-9
    assert rates["random"][0] == 1 / 3
    assert 0.0 <= distinct_links(trials) <= 1.0


def test_hit_rates_against_known_values():
    trials = [LinkTrial("a", "malignant", ("malignant", "normal"), 0.5, 0),
              LinkTrial("a", "normal", ("malignant", "normal"), 0.5, 1),
              LinkTrial("b", "benign", ("benign",), 0.25, 1)]
    rates = link_hit_rates(trials, n_boot=100)
    assert rates["region"][0] == 2 / 3
    assert np.isclose(rates["random"][0], 1.25 / 3)
    assert np.isclose(rates["difference"][0], 2 / 3 - 1.25 / 3)
    assert distinct_links(trials) == 0.5  # a's regions link tiles 0 and 1; b has one


def test_explanation_says_how_similarity_is_computed(loaded_run, case_files):
    from radpath.explain.case import explain_case, validate_explanation

    data = explain_case(loaded_run, case_files["mammo"][:1], case_files["histo"]).to_json()
    validate_explanation(data)
    assert data["link_method"] == LINK_METHOD and "less its whole view" in LINK_METHOD


def test_figure_keeps_no_histology_clear_of_the_region_label():
    left = np.zeros((64, 64, 3), np.uint8)
    tile = np.full((8, 8, 3), 200, np.uint8)
    bare = render.figure(left, [render.TileRow(1, 0.5, [])], height=64, tile_side=32)
    linked = render.figure(left, [render.TileRow(1, 0.5, [(tile, 0.1)])], height=64,
                           tile_side=32, note="")
    x0, label_w = 64 + 10, 90
    # The label column holds the same "region 1 / score" text in both: nothing drawn over it.
    assert np.array_equal(bare[34:34 + 58, x0:x0 + label_w - 4],
                          linked[34:34 + 58, x0:x0 + label_w - 4])
    assert bare[34:34 + 30, x0 + label_w:].any()  # "no histology linked", beside it
