"""Slide heatmaps: the MIL attention and the localisation head's patch scores over a slide.

Both maps are painted patch by patch at thumbnail scale (a slide is never decoded whole)
and written as RGBA overlays (transparent where no patch was scored), as a figure of the
thumbnail beside each overlay, and as ``slide_explanation.json`` with the top patches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radpath.atomic import atomic_path

SLIDE_MAPS = ("attention", "localisation")


def patch_heatmap(coords: np.ndarray, values: np.ndarray, size0: int, shape: tuple[int, int],
                  downsample: float) -> np.ndarray:
    """``shape`` float map, each patch's value over its footprint; NaN where no patch lies."""
    heat = np.full(shape, np.nan, np.float32)
    for (x, y), value in zip(coords, values, strict=True):
        x0, y0 = int(x / downsample), int(y / downsample)
        x1 = max(x0 + 1, int(np.ceil((x + size0) / downsample)))
        y1 = max(y0 + 1, int(np.ceil((y + size0) / downsample)))
        heat[y0:y1, x0:x1] = value
    return heat


def heatmap_rgba(heat: np.ndarray, *, alpha: float = 0.55) -> np.ndarray:
    """Heat scaled to [0, 1] over the scored patches, coloured by matplotlib's ``inferno``."""
    from matplotlib import colormaps

    scored = np.isfinite(heat)
    values = np.where(scored, heat, 0.0)
    if scored.any():
        low, high = float(values[scored].min()), float(values[scored].max())
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    rgba = (colormaps["inferno"](values) * 255).astype(np.uint8)
    rgba[..., 3] = np.where(scored, int(alpha * 255), 0)
    return rgba


def blend(thumbnail: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    weight = rgba[..., 3:4].astype(np.float32) / 255.0
    mixed = thumbnail.astype(np.float32) * (1 - weight) + rgba[..., :3] * weight
    return mixed.round().astype(np.uint8)


@dataclass(frozen=True)
class SlideExplanation:
    image_id: str
    malignancy: float
    grade: int | None
    maps: dict[str, np.ndarray]      # name -> (N,) value per patch
    coords: np.ndarray
    size0: int


def explain_slide(slide_path: str | Path, coords_file: str | Path, model_dir: str | Path,
                  out_dir: str | Path, *, image_id: str = "", top_k: int = 5,
                  thumbnail_side: int = 1024) -> dict[str, Path]:
    """Score one slide with a saved slide MIL and write its heatmaps into ``out_dir``."""
    import torch

    from radpath.data.wsi import Slide
    from radpath.models.slide_mil import load_slide_model, predict_bags
    from radpath.slides.bags import SlideBag
    from radpath.slides.features import build_encoder, encode_slide
    from radpath.slides.grid import read_coords
    from radpath.slides.patches import SlidePatchDataset

    model, meta = load_slide_model(model_dir)
    dataset = SlidePatchDataset(slide_path, coords_file)
    stored = read_coords(coords_file)
    features = encode_slide(dataset, build_encoder(meta["encoder"]))
    bag = SlideBag(image_id, (image_id,), torch.from_numpy(features),
                   torch.from_numpy(stored.coords), torch.zeros(len(features), dtype=torch.long),
                   torch.full((len(features),), -1.0), 0.0, -1)
    result = predict_bags(model, [bag])[0]
    size0 = round(stored.patch_size * _level_downsample(slide_path, stored.patch_level))
    explanation = SlideExplanation(image_id or Path(slide_path).stem, float(result["malignancy"]),
                                   int(result["grade"]) if "grade" in result else None,
                                   {"attention": result["attention"],
                                    "localisation": result["patch"]}, stored.coords, size0)
    with Slide(slide_path) as slide:
        thumbnail, downsample = slide.thumbnail(thumbnail_side)
    return write_slide_explanation(explanation, thumbnail, downsample, out_dir, top_k=top_k,
                                   encoder=meta["encoder"])


def _level_downsample(slide_path: str | Path, level: int) -> float:
    from radpath.data.wsi import Slide

    with Slide(slide_path) as slide:
        return slide.level_downsamples[level]


def write_slide_explanation(explanation: SlideExplanation, thumbnail: np.ndarray,
                            downsample: float, out_dir: str | Path, *, top_k: int = 5,
                            encoder: str = "") -> dict[str, Path]:
    """Overlays ``<map>.png`` (RGBA, thumbnail size), ``figure.png`` and the JSON summary."""
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    panels = [thumbnail]
    for name, values in explanation.maps.items():
        heat = patch_heatmap(explanation.coords, values, explanation.size0, thumbnail.shape[:2],
                             downsample)
        rgba = heatmap_rgba(heat)
        written[name] = _save_png(Image.fromarray(rgba, "RGBA"), out / f"{name}.png")
        panels.append(blend(thumbnail, rgba))
    written["figure"] = _save_png(Image.fromarray(np.concatenate(panels, axis=1)),
                                  out / "figure.png")
    order = np.argsort(-explanation.maps["attention"])[:top_k]
    summary = {
        "image_id": explanation.image_id, "malignancy_probability": explanation.malignancy,
        "grade": explanation.grade, "encoder": encoder, "patches": len(explanation.coords),
        "patch_size_level0": explanation.size0, "thumbnail_downsample": downsample,
        "maps": {name: f"{name}.png" for name in explanation.maps},
        "top_patches": [{"x": int(explanation.coords[i][0]), "y": int(explanation.coords[i][1]),
                         **{k: float(v[i]) for k, v in explanation.maps.items()}}
                        for i in order],
    }
    with atomic_path(out / "slide_explanation.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    written["explanation"] = out / "slide_explanation.json"
    return written


def _save_png(image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
