"""Lesion-level localisation of a slide model's patch scores (one point of CAMELYON16's FROC)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radpath.slides.bags import SlideBag


def lesion_hit_rate(polygons_by_slide: dict[str, list], bags: Sequence[SlideBag],
                    patch_scores: Sequence[np.ndarray], size0: int, *, threshold: float = 0.5
                    ) -> dict[str, float]:
    """Lesion-level localisation, one point of CAMELYON16's FROC.

    A lesion is hit when a patch whose centre lies inside its outline scores at least
    ``threshold``; a false positive is a patch at or above it whose centre lies in no
    lesion. Returns hits, lesions, the hit rate and false positives per slide.
    """
    from matplotlib.path import Path as Outline

    hits = lesions_seen = false_positives = slides = 0
    for bag, scores in zip(bags, patch_scores, strict=True):
        centres = bag.coords.numpy() + size0 / 2
        for slide, image_id in enumerate(bag.image_ids):
            on_slide = (bag.slide_index == slide).numpy()
            lesions = [p for p in polygons_by_slide.get(image_id, []) if not p.is_exclusion]
            inside = np.zeros(len(centres), bool)
            for lesion in lesions:
                covered = Outline(lesion.points).contains_points(centres) & on_slide
                inside |= covered
                hits += bool((scores[covered] >= threshold).any())
            lesions_seen += len(lesions)
            false_positives += int(((scores >= threshold) & on_slide & ~inside).sum())
            slides += 1
    return {"hits": hits, "lesions": lesions_seen,
            "hit_rate": hits / lesions_seen if lesions_seen else float("nan"),
            "false_positives_per_slide": false_positives / max(slides, 1)}
