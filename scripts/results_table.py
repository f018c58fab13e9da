"""The front page's results table, read from the tables in ``benchmarks/results``.

Each row names the results file and the table row it reads; the figures are parsed from
there (seed 0 with its 95% CI, and the mean ± sd of the seeds' figures, numpy's ddof 0 as
``benchmarks/real_baselines.py`` computes it), never typed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
SEEDS = (0, 1, 2)
# "0.907 [0.817, 0.978] (n=49)"
ESTIMATE = re.compile(r"(\d\.\d+) \[(\d\.\d+), (\d\.\d+)\](?: \(n=(\d+)\))?")


@dataclass(frozen=True)
class Row:
    """One line of the table: where its figures are read from, and how to remake them."""

    cohort: str
    model: str
    file: str
    # Section heading holding seed S's table ("{seed}" filled in), or "" for one table.
    section: str
    # The first cells of the table row, e.g. ("erm", "histo").
    key: tuple[str, ...]
    remake: str


RECIPE_CV = "python benchmarks/real_cpu_cv.py --seeds 0,1,2"
HISTO_BASELINES = "python benchmarks/real_baselines.py --modality histo"
MAMMO_BASELINES = "python benchmarks/real_baselines.py --modality mammo"
HISTO = "H&E, 49 units (UCSB, BreakHis)"
MIAS = "MIAS mammograms, 97 patients"
ROWS = (
    Row(HISTO, "**radpath**, `configs/real-cpu.yaml`", "real_cpu_cv_encoders.md",
        "(two{seed})", ("erm", "histo"), RECIPE_CV),
    Row(HISTO, "tissue share of the image (nothing learnt)", "real_baselines.md", "",
        ("histo", "tissue-fraction"), HISTO_BASELINES),
    Row(HISTO, "colour-texture logistic regression", "real_baselines.md", "",
        ("histo", "colour-texture"), HISTO_BASELINES),
    Row(HISTO, "plain timm ViT, quarter-resolution tiles", "real_baselines.md", "",
        ("histo", "tile-vit-quarter"), HISTO_BASELINES),
    Row(MIAS, "**radpath**, `configs/real-cpu.yaml`", "real_cpu_cv_encoders.md",
        "(two{seed})", ("erm", "mammo"), RECIPE_CV),
    Row(MIAS, "plain timm ViT on whole films", "real_baselines.md", "",
        ("mammo", "naive-vit"), MAMMO_BASELINES),
    Row(MIAS, "oracle told which patients have a finding", "real_baselines.md", "",
        ("mammo", "oracle-detection"), MAMMO_BASELINES),
)


def render(results: Path = RESULTS) -> str:
    """The Markdown table, with a line naming its sources."""
    lines = ["| cohort | model | AUC, seed 0 [95% CI] | seeds 0–2, mean ± sd | remade by |",
             "|---|---|---|---|---|"]
    previous = None
    for row in ROWS:
        seed0, spread = figures(row, results)
        cohort = row.cohort if row.cohort != previous else ""
        previous = row.cohort
        lines.append(f"| {cohort} | {row.model} | {seed0} | {spread} | `{row.remake}` |")
    sources = ", ".join(f"`benchmarks/results/{name}`"
                        for name in dict.fromkeys(row.file for row in ROWS))
    lines += ["", f"Malignancy AUC (malignant against the rest), 3-fold cross-validation "
                  f"grouped by patient, out-of-fold predictions pooled, 95% bootstrap CIs; "
                  f"mammograms and H&E as label-matched pseudo-pairs (no public cohort has "
                  f"both for one patient). Read from {sources} by `scripts/gen_docs.py`."]
    return "\n".join(lines) + "\n"


def figures(row: Row, results: Path = RESULTS) -> tuple[str, str]:
    """Seed 0's estimate with its CI, and the seeds' mean ± sd, as printed."""
    text = (results / row.file).read_text()
    if row.section:
        cells = [_row_cells(_section(text, row.section.format(seed=seed), row.file), row)
                 for seed in SEEDS]
        values = [float(ESTIMATE.search(c[0]).group(1)) for c in cells]
        value, low, high, n = ESTIMATE.search(cells[0][0]).groups()
    else:
        cells = _row_cells(text, row)
        value, low, high, n = ESTIMATE.search(cells[0]).groups()
        values = [float(v) for v in cells[2].split(",")]
    seed0 = f"{value} [{low}, {high}]" + (f" (n={n})" if n else "")
    if len(values) != len(SEEDS):
        raise ValueError(f"{row.file}: {row.key} has {len(values)} seeds, expected "
                         f"{len(SEEDS)}")
    return seed0, f"{np.mean(values):.3f} ± {np.std(values):.3f}"


def _section(text: str, marker: str, file: str) -> str:
    """The text from the heading containing ``marker`` to the next heading of its level."""
    for match in re.finditer(r"^(#+) .*$", text, flags=re.MULTILINE):
        if marker in match.group(0):
            level = match.group(1)
            rest = text[match.end():]
            end = re.search(rf"^{level} ", rest, flags=re.MULTILINE)
            return rest[:end.start()] if end else rest
    raise ValueError(f"{file}: no heading containing {marker!r}")


def _row_cells(text: str, row: Row) -> list[str]:
    """The cells after ``row.key`` of the first table row starting with it."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and tuple(cells[:len(row.key)]) == row.key:
            return cells[len(row.key):]
    raise ValueError(f"{row.file}: no table row starting with {' | '.join(row.key)}")
