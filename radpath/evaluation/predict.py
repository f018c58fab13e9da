"""Run a trained algorithm (optionally through a test-time adaptation method) over a dataset.

Predictions are kept per unit (a patient, or a pseudo-pair), with the unit's label,
domains and, per mammogram view, the peak of the localisation map next to the view's
lesions, both in preprocessed pixels. Crop, flip, resize and padding are similarity
transforms, so "the peak lies inside the lesion circle" reads the same there as in the
original image.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

from radpath.algorithms.base import Algorithm
from radpath.atomic import atomic_path
from radpath.batch.collate import collate_patients
from radpath.batch.dataset import PatientBagDataset
from radpath.data.cache import ArrayCache
from radpath.data.preprocess import RecordPreprocessor, load_cached
from radpath.engine.devices import batch_to

MODALITY_OUTPUTS = ("mammo", "histo", "fused")
# The columns of predictions.csv holding each output's probability.
PREDICTION_COLUMNS = {output: f"{output}_prob" for output in MODALITY_OUTPUTS}
# The columns naming the patients whose images a unit holds in each modality: a
# pseudo-pair's H&E patient is a unit of its own when H&E is evaluated alone.
PATIENT_COLUMNS = {"mammo": "mammo_patients", "histo": "histo_patients"}
# predictions.csv's header: the unit, its fold (or split), its label code, the outputs,
# then the patients.
PREDICTION_FIELDS = ("unit_id", "fold", "label", *PREDICTION_COLUMNS.values(),
                     *PATIENT_COLUMNS.values())


@dataclass
class ViewResult:
    """The localisation outcome of one mammogram view."""

    unit: int
    image_id: str
    domain: str
    heatmap: np.ndarray  # (gh, gw) token scores over the preprocessed image
    lesions: np.ndarray  # (K, 3) x, y, r in preprocessed pixels
    image_size: int
    image: np.ndarray  # the preprocessed mammogram, for figures


@dataclass
class UnitPredictions:
    """Per-unit predictions and ground truth of one evaluation pass."""

    unit_id: list[str]
    label: np.ndarray
    grade: np.ndarray
    has: dict[str, np.ndarray]
    domain: dict[str, list[str]]
    prob: dict[str, np.ndarray]
    grade_prob: np.ndarray | None = None
    views: list[ViewResult] = field(default_factory=list)
    # Per modality, each unit's patient ids joined by ";" ("" without that modality).
    patients: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.unit_id)


Predictor = Callable[[dict], dict]


def predict_dataset(algorithm: Algorithm, dataset: PatientBagDataset, *,
                    predictor: Predictor | None = None, batch_size: int = 8) -> UnitPredictions:
    """Predict every unit of ``dataset`` with ``predictor`` (default: ``algorithm.predict``),
    on the device that holds ``algorithm``'s weights."""
    predict = predictor or algorithm.predict
    device = next(algorithm.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=collate_patients)
    chunks: list[dict[str, np.ndarray]] = []
    scores: list[np.ndarray] = []
    for batch in loader:
        out = predict(batch_to(batch, device))
        chunks.append({
            **{f"{m}_prob": out[f"{m}_prob"].float().cpu().numpy() for m in MODALITY_OUTPUTS},
            "grade_prob": (out["grade_prob"].float().cpu().numpy() if "grade_prob" in out
                           else np.zeros((len(batch["label"]), 0))),
        })
        if "token_scores" in out:
            scores.extend(out["token_scores"].float().cpu().numpy())
    merged = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}
    units = dataset.units
    result = UnitPredictions(
        unit_id=[u.unit_id for u in units],
        label=np.array([dataset.labels[i] for i in range(len(units))], dtype=int),
        grade=np.array([u.grade for u in units], dtype=int),
        has={"mammo": np.array([bool(u.mammo) for u in units]),
             "histo": np.array([bool(u.histo) for u in units]),
             "fused": np.ones(len(units), dtype=bool)},
        domain={"mammo": [u.mammo_domain for u in units],
                "histo": [u.histo_domain for u in units],
                "fused": ["all"] * len(units)},
        prob={m: merged.get(f"{m}_prob", np.zeros(0)) for m in MODALITY_OUTPUTS},
        grade_prob=merged["grade_prob"] if merged.get("grade_prob", np.zeros(0)).size else None,
        patients={m: [patient_ids(getattr(u, m)) for u in units] for m in PATIENT_COLUMNS},
    )
    if scores:
        result.views = _view_results(dataset, scores)
    return result


def patient_ids(records) -> str:
    """The distinct patient ids of ``records``, sorted, joined by ";"."""
    return ";".join(sorted({record.patient_id for record in records}))


def _view_results(dataset: PatientBagDataset, scores: list[np.ndarray]) -> list[ViewResult]:
    cache = ArrayCache(dataset.config.cache_dir)
    pre = RecordPreprocessor(dataset.config.preprocess)
    size = dataset.config.preprocess.mammo.size
    views = []
    for index, unit in enumerate(dataset.units):
        for view, record in enumerate(unit.mammo[: scores[index].shape[0]]):
            arrays = load_cached(record, cache, pre)
            lesions = np.asarray(arrays.get("lesions", np.zeros((0, 3))), dtype=float)
            views.append(ViewResult(index, record.image_id, record.domain, scores[index][view],
                                    lesions.reshape(-1, 3), size,
                                    np.asarray(arrays["image"], dtype=np.float32)))
    return views


def concat_predictions(parts: list[UnitPredictions]) -> UnitPredictions:
    """The units of ``parts`` as one set, in order (views re-indexed to the joined units)."""
    if not parts:
        raise ValueError("concat_predictions needs at least one set of predictions")
    offsets = np.cumsum([0, *(len(p) for p in parts[:-1])])
    grades = [p.grade_prob for p in parts]
    if any(g is None for g in grades) and not all(g is None for g in grades):
        raise ValueError("cannot join predictions with and without grade probabilities")
    return UnitPredictions(
        unit_id=[u for p in parts for u in p.unit_id],
        label=np.concatenate([p.label for p in parts]),
        grade=np.concatenate([p.grade for p in parts]),
        has={m: np.concatenate([p.has[m] for p in parts]) for m in MODALITY_OUTPUTS},
        domain={m: [d for p in parts for d in p.domain[m]] for m in MODALITY_OUTPUTS},
        prob={m: np.concatenate([p.prob[m] for p in parts]) for m in MODALITY_OUTPUTS},
        grade_prob=None if grades[0] is None else np.concatenate(grades),
        views=[replace(v, unit=v.unit + int(offset))
               for p, offset in zip(parts, offsets, strict=True) for v in p.views],
        patients={m: [i for p in parts for i in _patients_of(p, m)] for m in PATIENT_COLUMNS},
    )


def _patients_of(predictions: UnitPredictions, modality: str) -> list[str]:
    """The units' patient ids in ``modality``, empty strings where they were not kept."""
    return predictions.patients.get(modality) or [""] * len(predictions)


def write_predictions(path: Path, parts: list[tuple[str, UnitPredictions]]) -> Path:
    """``predictions.csv``: one row per unit of each (name, predictions) part, written
    atomically. Columns: ``unit_id``; ``fold`` (the part's name: a CV fold, or the split
    evaluated); ``label``, the unit's code (0 normal, 1 benign, 2 malignant, -1 unknown);
    then each output's malignancy probability (:data:`PREDICTION_COLUMNS`), empty where the
    unit lacks that modality; then the unit's patients per modality
    (:data:`PATIENT_COLUMNS`). ``benchmarks/compare_cv.py`` pairs two such files, by unit or
    by one modality's patients."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_FIELDS)
        for name, p in parts:
            for i, unit in enumerate(p.unit_id):
                probs = [f"{p.prob[m][i]:.6f}" if p.has[m][i] else "" for m in MODALITY_OUTPUTS]
                patients = [_patients_of(p, m)[i] for m in PATIENT_COLUMNS]
                writer.writerow([unit, name, int(p.label[i]), *probs, *patients])
    return path
