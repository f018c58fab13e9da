"""Faithfulness of the explanation maps on a trained run's validation mammograms.

For each map kind (and a random map as the baseline), over the annotated mammograms of a
split (MIAS lesions):

* deletion AUC: mammography probability as the most salient tokens are blanked (lower is
  more faithful); insertion AUC: as they are put back on a blank image (higher is better);
* sanity: Spearman correlation between the maps of the trained model and of the same model
  with re-initialised weights (Adebayo et al. 2018; low is a pass, NaN for constant maps);
* hit rate: the map's peak lies in a lesion cell, with its Wilson 95% interval.

It also writes the explanation figure of one malignant annotated patient, linked to
malignant histology of the same split (a pseudo-pair).

    .venv/bin/python benchmarks/explain.py --run /tmp/real/run-try \
        --manifest /tmp/real/real.csv --split val --limit 10 --figure explain.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from radpath.batch.tensors import MAMMO_MEAN, MAMMO_STD
from radpath.data.cache import ArrayCache
from radpath.data.manifest import Manifest, Record, read_manifest
from radpath.data.preprocess import RecordPreprocessor, load_cached
from radpath.engine.checkpoint import LoadedRun, load_run
from radpath.explain.case import explain_case
from radpath.explain.faithfulness import (
    deletion_curve,
    localisation_hit,
    random_map,
    randomised_copy,
    rank_correlation,
    single_view_batch,
)
from radpath.explain.maps import MAP_KINDS, compute_maps
from radpath.stats.estimate import wilson_interval


def _records(manifest: Manifest, split: str, limit: int) -> list[Record]:
    chosen = [r.with_(path=str(manifest.resolve_path(r))) for r in manifest
              if r.modality == "mammo" and r.lesions and (not split or r.split == split)]
    # Malignant first: deletion is most telling where the model has something to lose.
    chosen.sort(key=lambda r: (r.label != "malignant", r.image_id))
    return chosen[:limit]


def evaluate(run: LoadedRun, records: list[Record], steps: int) -> dict[str, dict[str, list]]:
    model = run.algorithm.model
    randomised = randomised_copy(model, seed=0)
    cache = ArrayCache(run.config.data.cache_dir)
    pre = RecordPreprocessor(run.config.data.preprocess)
    results: dict[str, dict[str, list]] = {k: {"del": [], "ins": [], "sanity": [], "hit": []}
                                           for k in (*MAP_KINDS, "random")}
    for n, record in enumerate(records):
        arrays = load_cached(record, cache, pre)
        image = arrays["image"].astype(np.float32)
        tensor = torch.from_numpy((image - MAMMO_MEAN) / MAMMO_STD)[None]
        batch = single_view_batch(tensor[None])
        maps = {k: v[0] for k, v in compute_maps(model, batch).items()}
        random_maps = {k: v[0] for k, v in compute_maps(randomised, batch).items()}
        maps["random"] = random_map(maps["rollout"].shape, seed=n)
        random_maps["random"] = random_map(maps["rollout"].shape, seed=10_000 + n)
        lesions = arrays.get("lesions", np.zeros((0, 3)))
        for kind, grid_map in maps.items():
            row = results[kind]
            row["del"].append(deletion_curve(model, tensor, grid_map, steps=steps).auc)
            row["ins"].append(deletion_curve(model, tensor, grid_map, steps=steps,
                                             insertion=True).auc)
            row["sanity"].append(rank_correlation(grid_map, random_maps[kind]))
            row["hit"].append(localisation_hit(grid_map, image, lesions))
        print(f"  {n + 1}/{len(records)} {record.image_id}", flush=True)
    return results


def table(results: dict[str, dict[str, list]]) -> str:
    lines = [f"{'map':<13}{'deletion AUC':>13}{'insertion AUC':>15}{'sanity rho':>12}"
             f"{'hit rate [95% CI]':>26}",
             "-" * 79]
    for kind, row in results.items():
        hits = wilson_interval(int(sum(row["hit"])), len(row["hit"]))
        sanity = np.array(row["sanity"], dtype=np.float64)
        rho = f"{np.nanmean(sanity):.3f}" if np.isfinite(sanity).any() else "n/a"
        lines.append(f"{kind:<13}{np.mean(row['del']):>13.3f}{np.mean(row['ins']):>15.3f}"
                     f"{rho:>12}{f'{hits.value:.2f} [{hits.ci_low:.2f}, {hits.ci_high:.2f}]':>26}")
    lines.append("deletion: lower is better; insertion: higher; sanity rho: lower is better "
                 "(n/a for maps constant within a view); random = baseline.")
    return "\n".join(lines)


def figure(run: LoadedRun, manifest: Manifest, split: str, out: Path, map_kind: str) -> None:
    records = [r.with_(path=str(manifest.resolve_path(r))) for r in manifest
               if r.label == "malignant" and (not split or r.split == split)]
    mammo = [r for r in records if r.modality == "mammo" and r.lesions]
    histo = [r for r in records if r.modality == "histo"]
    if not mammo:
        print(f"no malignant annotated mammogram in split {split!r}: no figure")
        return
    explanation = explain_case(run, [mammo[0].path], [r.path for r in histo[:2]],
                               map_kind=map_kind, pairing="pseudo")
    out.write_bytes(explanation.figure_png())
    lesion = mammo[0].lesions[0]
    print(f"figure: {out} ({mammo[0].image_id}, annotated lesion at ({lesion.x:.0f}, "
          f"{lesion.y:.0f}) r={lesion.r:.0f})\n{explanation.rationale}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--figure", type=Path)
    parser.add_argument("--figure-map", default="localisation", choices=MAP_KINDS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    run = load_run(args.run)
    manifest = read_manifest(args.manifest)
    records = _records(manifest, args.split, args.limit)
    print(f"{len(records)} annotated mammograms of split {args.split!r} "
          f"({sum(r.label == 'malignant' for r in records)} malignant)")
    print(table(evaluate(run, records, args.steps)))
    if args.figure:
        figure(run, manifest, args.split, args.figure, args.figure_map)
    print(f"took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
