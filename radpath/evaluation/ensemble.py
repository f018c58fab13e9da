"""Several trained runs scored as one model: each unit's mean logit over the runs.

Seeds of one recipe rank the same units differently enough that their average beats a
typical member (three seeds of ``configs/real-cpu.yaml`` under cross-validation: H&E AUC
0.887 for the mean logit against 0.849 for one seed on average,
``benchmarks/results/real_cpu_cv_encoders.md``). The mean is taken over logits, as
``benchmarks/compare_cv.py`` scores seed ensembles, so that figures from either agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy.special import expit, logit

from radpath.errors import RadpathError
from radpath.evaluation.predict import MODALITY_OUTPUTS, UnitPredictions

# Probabilities are clipped before the logit: a saturated sigmoid (1.0 in float32) would
# otherwise give an infinite vote.
_EPS = 1e-7


def mean_logit(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The sigmoid of the mean logit of ``probabilities`` (same shapes), elementwise."""
    stacked = np.clip(np.stack([np.asarray(p, dtype=float) for p in probabilities]),
                      _EPS, 1 - _EPS)
    return expit(logit(stacked).mean(axis=0))


def ensemble_predictions(members: Sequence[UnitPredictions],
                         names: Sequence[str] | None = None) -> UnitPredictions:
    """One set of predictions from ``members`` that scored the same units in the same order:
    malignancy by the mean logit per output, grade probabilities and localisation maps by
    their mean. ``names`` (the runs, say) label the members in errors."""
    if not members:
        raise RadpathError("an ensemble needs at least one run")
    if len(members) == 1:
        return members[0]
    names = list(names or [f"member {i + 1}" for i in range(len(members))])
    first = members[0]
    for name, member in zip(names[1:], members[1:], strict=True):
        _check_same_units(first, member, names[0], name)
    grades = [m.grade_prob for m in members]
    if len({None if g is None else g.shape for g in grades}) > 1:
        raise RadpathError(f"the runs {names} grade differently (a grading head in some "
                           "only, or of other sizes): their grades cannot be averaged")
    return replace(
        first,
        prob={m: (mean_logit([member.prob[m] for member in members]) if first.prob[m].size
                  else first.prob[m]) for m in MODALITY_OUTPUTS},
        grade_prob=None if grades[0] is None else np.mean(grades, axis=0),
        views=_mean_views(members, names),
    )


def _check_same_units(first: UnitPredictions, other: UnitPredictions, first_name: str,
                      other_name: str) -> None:
    if other.unit_id != first.unit_id:
        raise RadpathError(f"{other_name} scored other units than {first_name} (the runs "
                           "must predict the same manifests and split)")
    if not np.array_equal(other.label, first.label):
        raise RadpathError(f"{other_name} and {first_name} disagree on the units' labels")


def _mean_views(members: Sequence[UnitPredictions], names: Sequence[str]) -> list:
    first = members[0].views
    for name, member in zip(names, members, strict=True):
        shapes = [v.heatmap.shape for v in member.views]
        if shapes != [v.heatmap.shape for v in first]:
            raise RadpathError(f"{name} maps the mammograms on another grid than {names[0]} "
                               "(different preprocessing, window or patch size): their "
                               "localisation maps cannot be averaged")
    return [replace(view, heatmap=np.mean([m.views[i].heatmap for m in members], axis=0))
            for i, view in enumerate(first)]
