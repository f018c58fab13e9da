"""``cv.json`` and ``cv.md``: the metric rows of a cross-validation, stored and summarised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from radpath.atomic import atomic_path
from radpath.evaluation.evaluate import BOTH_MODALITIES, SUMMARY_GROUPS
from radpath.evaluation.predict import MODALITY_OUTPUTS
from radpath.evaluation.protocols import format_estimate, without_nan


def write_cv_tables(rows: list[dict[str, Any]], out: Path, context: dict[str, Any]) -> None:
    """Every row to ``cv.json``; the malignancy AUCs, fusion tests and localisation to
    ``cv.md``."""
    with atomic_path(out / "cv.json") as tmp:
        tmp.write_text(json.dumps(without_nan(rows), indent=1) + "\n")
    lines = [f"{context['protocol']}; pairing: {context['pairing']}; checkpoint: "
             f"{context['checkpoint']}.", "",
             "| algorithm | modality | pooled AUC [95% CI] | per-fold AUC | DeLong p vs ERM |",
             "|---|---|---|---|---|"]
    lines += _auc_lines(rows)
    if any(r["domain"] == BOTH_MODALITIES for r in rows):
        lines.append(f"\nRows marked \"{BOTH_MODALITIES}\" score only the units holding a "
                     "mammogram and H&E. Over all units the fused AUC also rewards knowing "
                     "which units have H&E, which tracks the label where only abnormal "
                     "patients have it (pseudo-pairs by label, or biopsy after a finding).")
    lines += _fusion_lines(rows)
    for r in rows:
        if r["task"] == "localisation" and r["scope"] == "pooled" and r["domain"] == "all" \
                and r["metric"] == "hit_rate":
            lines.append(f"\nLocalisation ({r['algorithm']}): peak inside a lesion circle on "
                         f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] of "
                         f"{r['n']} lesion views.")
    with atomic_path(out / "cv.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def modality_group_label(modality: str, group: str) -> str:
    """How tables name an AUC: the modality over all its units ("mammo"), or over a group of
    them ("mammo, both modalities")."""
    return modality if group == "all" else f"{modality}, {group}"


def _auc_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table's rows: per algorithm, each modality over all its units, then over the
    units with both modalities where the cohort mixes the two kinds."""
    pick = _malignancy_rows(rows)
    lines = []
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        for group in SUMMARY_GROUPS:
            for modality in MODALITY_OUTPUTS:
                pooled = pick.get((algorithm, "pooled", modality, group, "auc"))
                if pooled is None:
                    continue
                folds = [r for key, r in pick.items() if key[0] == algorithm
                         and key[2:] == (modality, group, "auc") and key[1] != "pooled"]
                per_fold = ", ".join(_value(r) for r in folds)
                delong = pick.get((algorithm, "pooled", modality, group, "delong_p_vs_erm"))
                name = modality_group_label(modality, group)
                lines.append(f"| {algorithm} | {name} | {format_estimate(pooled)} | {per_fold} "
                             f"| {'–' if delong is None else format(delong['value'], '.3f')} |")
    return lines


def _fusion_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per algorithm: the fused head against each modality alone on the units
    with both, where the pairing cannot help it."""
    pick = _malignancy_rows(rows)
    lines = []
    for algorithm in dict.fromkeys(r["algorithm"] for r in rows):
        tests = {m: pick.get((algorithm, "pooled", "fused", BOTH_MODALITIES,
                              f"delong_p_fused_vs_{m}")) for m in ("mammo", "histo")}
        if None in tests.values():
            continue
        n = tests["histo"]["n"]
        lines.append(f"\nFusion ({algorithm}) on the {n} units with both modalities: DeLong "
                     f"p of fused against mammography alone {tests['mammo']['value']:.3f}, "
                     f"against H&E alone {tests['histo']['value']:.3f}.")
    return lines


def _malignancy_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {(r["algorithm"], r["scope"], r["modality"], r["domain"], r["metric"]): r
            for r in rows if r["task"] == "malignancy"}


def _value(row: dict[str, Any]) -> str:
    return "–" if row["value"] is None else f"{row['value']:.3f}"

