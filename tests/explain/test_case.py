"""explain_case: the JSON contract, images, bad inputs, atomic writing and the CLI."""

import io
import itertools
import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from radpath.cli import explain_command
from radpath.engine.checkpoint import load_run
from radpath.engine.config import load_config
from radpath.engine.run import train
from radpath.errors import ImageReadError, RadpathError
from radpath.explain.case import (
    MAP_KINDS,
    Explanation,
    explain_case,
    validate_explanation,
    write_explanation,
)
from tests.explain.conftest import REPO, write_png


@pytest.fixture(scope="module")
def explained(loaded_run, case_files):
    return explain_case(loaded_run, case_files["mammo"], case_files["histo"], top_k=3,
                        tiles_per_region=2)


def _png_size(data: bytes) -> tuple[tuple[int, int], str]:
    image = Image.open(io.BytesIO(data))
    return image.size, image.mode


def test_json_validates_and_round_trips(explained):
    data = explained.to_json()
    validate_explanation(data)
    assert json.loads(json.dumps(data)) == data
    assert data["schema"] == "radpath.explanation/1" and data["pairing"] == "true"
    assert data["rationale"] == explained.rationale and "probability" in explained.rationale
    assert set(data["predictions"]) == {"mammo", "histo", "fused"}
    assert data["predictions"]["histo"] is not None
    shares = data["modality_contributions"]
    assert np.isclose(shares["mammo"] + shares["histo"], 1.0) or not any(shares.values())


def test_regions_sorted_inside_the_image_and_linked(explained):
    data = explained.to_json()
    regions = data["regions"]
    assert 1 <= len(regions) <= 3
    assert [r["rank"] for r in regions] == list(range(1, len(regions) + 1))
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(regions))
    for region in regions:
        view = data["views"][region["view"]]
        assert 0 <= region["x"] <= view["width"] and 0 <= region["y"] <= view["height"]
        assert region["r"] > 0
        assert 1 <= len(region["links"]) <= 2
        assert all(-1 <= link["similarity"] <= 1 for link in region["links"])
    assert all("/" not in v["file"] for v in data["views"])


def test_images_share_one_size_and_modes(explained):
    for view in range(len(explained.displays)):
        base, _ = _png_size(explained.base_png(view))
        heat, heat_mode = _png_size(explained.heatmap_png(view))
        over, over_mode = _png_size(explained.overlay_png(view, opacity=0.8))
        assert base == heat == over and heat_mode == "RGBA" and over_mode == "RGB"
    assert _png_size(explained.tile_png(0))[1] == "RGB"
    assert _png_size(explained.figure_png())[0][0] > base[0]
    with pytest.raises(IndexError):
        explained.tile_png(99)


@pytest.mark.parametrize("kind", MAP_KINDS)
def test_every_map_kind_explains(loaded_run, case_files, kind):
    data = explain_case(loaded_run, case_files["mammo"][:1], map_kind=kind).to_json()
    validate_explanation(data)
    assert data["map_kind"] == kind and data["pairing"] == "none"
    assert data["predictions"]["histo"] is None and data["tiles"] == []


@pytest.fixture(scope="module")
def windowed_run(cohort, tmp_path_factory):
    """A tiny run whose model encodes mammograms in 16-px windows."""
    root = tmp_path_factory.mktemp("windowed-run")
    config = load_config(REPO / "configs" / "tiny.yaml",
                         [f"data.cache_dir={root / 'cache'}", "model.mammo_window=16",
                          "model.backbone.img_size=16", "optim.epochs=1"])
    train(config, [cohort], root / "run", workers=1)
    return load_run(root / "run")


@pytest.mark.parametrize("kind", MAP_KINDS)
def test_a_windowed_model_explains_with_every_map_kind(windowed_run, case_files, kind):
    data = explain_case(windowed_run, case_files["mammo"], case_files["histo"],
                        map_kind=kind, tiles_per_region=1).to_json()
    validate_explanation(data)
    assert data["regions"] and all(r["links"] for r in data["regions"])
    attention = [v["mil_attention"] for v in data["views"]]
    assert sum(attention) == pytest.approx(1.0, abs=1e-3)


def test_large_film_is_shown_at_most_1024_pixels(loaded_run, case_files, tmp_path):
    small = np.asarray(Image.open(case_files["mammo"][0]).convert("L"))
    big = write_png(tmp_path / "big.png", np.asarray(
        Image.fromarray(small).resize((900, 1400), Image.BILINEAR)))
    explanation = explain_case(loaded_run, [big], pairing="pseudo")
    size, _ = _png_size(explanation.overlay_png())
    assert max(size) == 1024 and size == _png_size(explanation.base_png())[0]
    data = explanation.to_json()
    assert (data["views"][0]["width"], data["views"][0]["height"]) == (900, 1400)
    assert all(r["x"] <= 900 and r["y"] <= 1400 for r in data["regions"])


def test_pseudo_pairing_is_said(loaded_run, case_files):
    explanation = explain_case(loaded_run, case_files["mammo"][:1], case_files["histo"][:1],
                               pairing="pseudo")
    assert explanation.to_json()["pairing"] == "pseudo"
    assert "pseudo-pair" in explanation.rationale


def test_validator_names_the_broken_field(explained):
    data = explained.to_json()
    data["regions"][0]["view"] = 7
    with pytest.raises(ValueError, match=r"regions\[0\]\.view"):
        validate_explanation(data)
    data = explained.to_json()
    del data["schema"]
    with pytest.raises(ValueError, match="schema"):
        validate_explanation(data)


def test_text_file_named_png_names_the_file_and_leaves_no_folder(loaded_run, tmp_path):
    fake = tmp_path / "scan.png"
    fake.write_text("not an image")
    out = tmp_path / "out" / "case"
    with pytest.raises(ImageReadError, match=r"scan\.png"):
        explain_case(loaded_run, [fake])
    app = typer.Typer()
    explain_command.register(app)
    app.command("noop")(lambda: None)
    result = CliRunner().invoke(app, ["explain", "--run", str(loaded_run.folder), "--mammo",
                                      str(fake), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, ImageReadError)
    assert not (tmp_path / "out").exists()


def test_colour_image_as_mammogram_is_refused(loaded_run, case_files, tmp_path):
    rgb = np.asarray(Image.open(case_files["histo"][0]).convert("RGB"))
    colour = write_png(tmp_path / "tile.png", rgb)
    with pytest.raises(RadpathError, match=r"tile\.png: looks like a colour"):
        explain_case(loaded_run, [colour])


def test_grey_saved_as_rgb_is_accepted(loaded_run, case_files, tmp_path):
    grey = np.asarray(Image.open(case_files["mammo"][0]).convert("L"))
    as_rgb = explain_case(loaded_run, [write_png(tmp_path / "grey-rgb.png",
                                                 np.dstack([grey] * 3))]).to_json()
    as_grey = explain_case(loaded_run, [write_png(tmp_path / "grey.png", grey)]).to_json()
    validate_explanation(as_rgb)
    # Same pixels, one channel or three: the same case, to the last digit.
    assert as_rgb["predictions"] == as_grey["predictions"]
    assert as_rgb["regions"] == as_grey["regions"]


def test_too_small_and_grey_histology_are_refused(loaded_run, case_files, tmp_path):
    tiny = write_png(tmp_path / "tiny.png",
                     np.random.default_rng(0).integers(0, 255, (20, 24), dtype=np.uint8))
    with pytest.raises(RadpathError, match=r"tiny\.png.*too small"):
        explain_case(loaded_run, [tiny])
    grey = write_png(tmp_path / "grey-he.png",
                     np.asarray(Image.open(case_files["mammo"][0]).convert("L")))
    with pytest.raises(RadpathError, match=r"grey-he\.png: greyscale"):
        explain_case(loaded_run, case_files["mammo"][:1], [grey])
    with pytest.raises(RadpathError, match="at least one mammogram"):
        explain_case(loaded_run, [])
    with pytest.raises(ValueError, match="map kind"):
        explain_case(loaded_run, case_files["mammo"][:1], map_kind="saliency")


def test_write_is_atomic(explained, tmp_path, monkeypatch):
    written = write_explanation(explained, tmp_path / "case")
    assert {"explanation", "figure", "overlay_view0"} <= written.keys()
    validate_explanation(json.loads(written["explanation"].read_text()))
    assert written["figure"].read_bytes().startswith(b"\x89PNG")

    def broken(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Explanation, "figure_png", broken)
    with pytest.raises(RuntimeError):
        write_explanation(explained, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    monkeypatch.undo()
    with pytest.raises(RadpathError, match="not an explanation folder"):
        write_explanation(explained, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    write_explanation(explained, tmp_path / "case")  # a previous explanation is replaced


def test_cli_writes_json_and_figure(loaded_run, case_files, tmp_path):
    app = typer.Typer()
    explain_command.register(app)
    app.command("noop")(lambda: None)
    args = ["explain", "--run", str(loaded_run.folder), "--out", str(tmp_path / "case"),
            "--top-k", "2", "--map", "rollout", "--pairing", "pseudo"]
    for path in case_files["mammo"]:
        args += ["--mammo", str(path)]
    for path in case_files["histo"]:
        args += ["--histo", str(path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "case" / "explanation.json").read_text())
    validate_explanation(data)
    assert data["map_kind"] == "rollout" and data["pairing"] == "pseudo"
    assert len(data["regions"]) <= 2 and (tmp_path / "case" / "figure.png").is_file()
