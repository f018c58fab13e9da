"""``radpath benchmark``: compare algorithms under domain shift (leave-one-domain-out, with
test-time adaptations) or by patient-grouped k-fold cross-validation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

console = Console(stderr=True)


def benchmark(
    manifest: Annotated[list[Path], typer.Option("--manifest", help="Manifest (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for runs and tables.")],
    config: Annotated[Path | None, typer.Option(help="YAML training config.")] = None,
    protocol: Annotated[str, typer.Option(help="lodo (leave-one-domain-out) or cv (k-fold "
                                               "cross-validation by patient).")] = "lodo",
    folds: Annotated[int, typer.Option(help="Folds of --protocol cv.")] = 3,
    group: Annotated[str, typer.Option(help="--protocol cv only: one fold per value of this "
                                            "manifest column (e.g. domain) instead of "
                                            "--folds folds by patient; every unit is still "
                                            "tested once and the predictions pooled.")] = "",
    checkpoint: Annotated[str, typer.Option(help="best, last or snapshots (their mean logit, "
                                                 "optim.cycles): the weights --protocol cv "
                                                 "predicts with.")] = "best",
    val_fraction: Annotated[float | None, typer.Option(
        help="--protocol cv only: share of each fold's training units held out as its "
             "inner validation split, in proportion across strata, at least one unit "
             "[default: 0.15].")] = None,
    algorithms: Annotated[str, typer.Option(help="Comma-separated algorithms.")] = "erm,paper",
    adapt: Annotated[str, typer.Option(help="Comma-separated adaptations on unseen domains "
                                            "(none, tent, sar, causal).")] = "none",
    column: Annotated[str, typer.Option(help="Manifest column naming the domain.")] = "domain",
    holdout: Annotated[str, typer.Option(help="Comma-separated domains to hold out (default: "
                                              "every value).")] = "",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes for preprocessing.")] = None,
) -> None:
    """Train each algorithm per fold; write lodo.md / cv.md and .json with CIs and DeLong p."""
    from radpath.data.manifest import read_manifest
    from radpath.data.splits import manifest_column
    from radpath.data.workflow import combine
    from radpath.engine.config import load_config
    from radpath.errors import ConfigError
    from radpath.evaluation.crossval import VAL_FRACTION, run_cv
    from radpath.evaluation.protocols import run_lodo

    if protocol not in ("lodo", "cv"):
        raise ConfigError(f"--protocol: 'lodo' or 'cv' (a held-out test is 'radpath evaluate "
                          f"--split test'); got {protocol!r}")
    if group and protocol != "cv":
        raise ConfigError("--group belongs to --protocol cv (lodo folds by --column)")
    if val_fraction is not None and protocol != "cv":
        raise ConfigError("--val-fraction belongs to --protocol cv (lodo splits the seen "
                          "domains' patients 0.6 / 0.2 / 0.2 into train, val and test)")
    if protocol == "cv" and (adapt != "none" or holdout):
        raise ConfigError("--adapt and --holdout belong to --protocol lodo; cross-validation "
                          "tests in-distribution held-out patients")
    settings = load_config(config, list(set_ or []))
    records = combine([read_manifest(path) for path in manifest])
    if protocol == "cv":
        run_cv(settings, records, out, k=folds, algorithms=_names(algorithms),
               checkpoint=checkpoint, workers=workers,
               val_fraction=VAL_FRACTION if val_fraction is None else val_fraction,
               group_of=manifest_column(group) if group else None)
    else:
        run_lodo(settings, records, out, algorithms=_names(algorithms),
                 adaptations=_names(adapt), column=column, holdout=_names(holdout),
                 workers=workers)
    # Rendered, so that the tables fit the terminal instead of wrapping mid-row.
    console.print(Markdown((out / f"{protocol}.md").read_text()))


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def register(app: typer.Typer) -> None:
    app.command()(benchmark)
