"""From a slide manifest to a trained, evaluated slide MIL (``radpath features`` and
``radpath train-slides``).

Training bags are the patients whose slides are not ``split=test``; the test patients are
scored once by the trained model: malignancy AUC by patient, the grade's quadratic kappa
where grades exist, and the lesion hit rate where outlines exist, each with its 95% CI.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from radpath.atomic import atomic_path
from radpath.data.manifest import Record, read_manifest
from radpath.data.sources.camelyon16 import annotation_path
from radpath.data.wsi import Slide
from radpath.errors import RadpathError
from radpath.models.slide_mil import (
    SlideMILConfig,
    fit_slide_mil,
    predict_bags,
    save_slide_model,
)
from radpath.slides.grid import read_coords
from radpath.slides.localisation import lesion_hit_rate


def _records(manifest: str | Path) -> list[Record]:
    loaded = read_manifest(manifest)
    return [r.with_(path=str(loaded.resolve_path(r))) for r in loaded]


def cache_manifest_features(manifest: str | Path, coords_dir: str | Path, out_dir: str | Path,
                            *, encoder: str = "colour-stats", checkpoint: str | None = None,
                            rank: int = 0, world_size: int = 1, batch_size: int = 32,
                            workers: int = 0) -> list[Path]:
    """Encode the patches of every slide of ``manifest`` that has a coords file (this rank's
    share of them)."""
    from radpath.slides.features import build_encoder, cache_features

    slides = []
    for record in _records(manifest):
        coords = Path(coords_dir) / f"{record.image_id}.h5"
        if coords.is_file():
            slides.append((record.image_id, record.path, coords))
    if not slides:
        raise RadpathError(f"no slide of {manifest} has a coords file in {coords_dir} "
                           "(run radpath tiles first)")
    return cache_features(slides, out_dir, build_encoder(encoder, checkpoint), rank=rank,
                          world_size=world_size, batch_size=batch_size, workers=workers)


def train_slides(manifest: str | Path, coords_dir: str | Path, features_dir: str | Path,
                 out: str | Path, config: SlideMILConfig | None = None, *,
                 encoder: str = "colour-stats") -> dict:
    """Train on the non-test patients, evaluate on the test ones, save model and metrics."""
    from radpath.data.asap import read_asap_xml
    from radpath.slides.bags import build_bags

    config = config or SlideMILConfig()
    records = [r for r in _records(manifest)
               if (Path(features_dir) / f"{r.image_id}.h5").is_file()]
    if not records:
        raise RadpathError(f"no slide of {manifest} has features in {features_dir} "
                           "(run radpath features first)")
    sizes = {r.image_id: read_coords(Path(coords_dir) / f"{r.image_id}.h5").level0_size
             for r in records}
    if len(set(sizes.values())) != 1:
        raise RadpathError(f"slides of {manifest} were tiled at different level-0 patch sizes "
                           f"({sorted(set(sizes.values()))}); tile them at one mpp")
    size0 = sizes[records[0].image_id]
    dims, xmls = {}, {}
    for record in records:
        with Slide(record.path) as slide:
            dims[record.image_id] = slide.dimensions
        xmls[record.image_id] = annotation_path(Path(record.path))
    train = [r for r in records if r.split != "test"]
    test = [r for r in records if r.split == "test"]
    if not train:
        raise RadpathError(f"{manifest}: every slide is split=test; nothing to train on")
    bags = build_bags(train, features_dir, patch_size0=size0, dimensions=dims, annotations=xmls)
    model = fit_slide_mil(bags, config)
    dim = int(bags[0].features.shape[1])
    save_slide_model(model, out, dim=dim, config=config, encoder=encoder,
                     grid={"level0_size": size0})
    metrics: dict = {"train_patients": len(bags), "encoder": encoder,
                     "config": config.model_dump()}
    if test:
        test_bags = build_bags(test, features_dir, patch_size0=size0, dimensions=dims,
                               annotations=xmls)
        polygons = {i: read_asap_xml(x) for i, x in xmls.items() if x is not None}
        metrics.update(evaluate(model, test_bags, polygons, size0))
    with atomic_path(Path(out) / "metrics.json") as tmp:
        tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate(model, bags, polygons: dict, size0: int) -> dict:
    """Test metrics, each with its 95% CI (n = patients, or lesions for the hit rate)."""
    from radpath.stats.estimate import wilson_interval
    from radpath.stats.metrics import auc_with_ci, quadratic_weighted_kappa

    results = predict_bags(model, bags)
    out: dict = {"test_patients": len(bags)}
    labels = np.array([b.malignant for b in bags])
    if len(set(labels.tolist())) == 2:
        scores = np.array([float(r["malignancy"]) for r in results])
        out["malignancy_auc"] = auc_with_ci(labels, scores).as_dict()
    graded = [(b.grade, int(r["grade"])) for b, r in zip(bags, results, strict=True)
              if b.grade >= 0 and "grade" in r]
    if graded:
        truth, predicted = zip(*graded, strict=True)
        out["grade_quadratic_kappa"] = quadratic_weighted_kappa(list(truth), list(predicted),
                                                                num_classes=5).as_dict()
    hits = lesion_hit_rate(polygons, bags, [r["patch"] for r in results], size0)
    if hits["lesions"]:
        out["lesion_hit_rate"] = wilson_interval(hits["hits"], hits["lesions"]).as_dict()
        out["false_positive_patches_per_slide"] = hits["false_positives_per_slide"]
    return out
