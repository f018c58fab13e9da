"""Data commands: ingest, pair, preview, cache, synth."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)

Workers = Annotated[int | None, typer.Option(help="Worker processes (default: all CPUs).")]


def ingest(
    source: Annotated[str, typer.Argument(help="Dataset source: mias, cbis-ddsm, breakhis, "
                                               "ucsb, inbreast, bach, camelyon16, camelyon17, "
                                               "folder, csv, or wsi (whole slides).")],
    path: Annotated[Path, typer.Argument(help="The dataset folder (or CSV for 'csv').")],
    out: Annotated[Path, typer.Option("--out", help="Manifest to write (.csv or .parquet).")],
    labels: Annotated[Path | None, typer.Option(help="CSV mapping path/patient_id/image_id "
                                                      "to label.")] = None,
    descriptions: Annotated[list[Path] | None, typer.Option(
        "--descriptions", help="CBIS-DDSM description CSV (repeatable).")] = None,
    domain: Annotated[str | None, typer.Option(help="Override the source's domain.")] = None,
    modality: Annotated[str | None, typer.Option(help="mammo or histo (for 'folder').")] = None,
    workers: Workers = None,
    verify: Annotated[bool, typer.Option(help="Decode every image to catch bad files.")] = True,
    preview: Annotated[Path | None, typer.Option(help="Also write a PNG grid of preprocessed "
                                                       "samples per domain.")] = None,
    pseudonymise: Annotated[Path | None, typer.Option(
        help="Key file (made when missing; keep it outside the outputs): image and patient "
             "ids become keyed hashes instead of file or folder names.")] = None,
    mpp: Annotated[float | None, typer.Option(help="Microns per pixel overriding the slides' "
                                                    "metadata (for 'wsi').")] = None,
) -> None:
    """Read a dataset layout into a validated manifest; bad files go to skipped.csv."""
    if source == "wsi":
        from radpath.cli.slides_command import ingest_wsi

        ingest_wsi(path, out, mpp=mpp, domain=domain, workers=workers)
        return
    from radpath.data.ingest import ingest as run_ingest
    from radpath.data.sources import SourceOptions

    options = SourceOptions(labels=labels, descriptions=tuple(descriptions or ()),
                             domain=domain, modality=modality)
    report = run_ingest(source, path, out, options=options, workers=workers, verify=verify,
                        pseudonym_key=pseudonymise)
    _print_ingest_summary(report)
    if preview is not None:
        _write_preview(out, preview)


def _print_ingest_summary(report) -> None:
    from collections import Counter

    table = Table(title=f"ingested {report.manifest_path}", show_edge=False)
    for column in ("domain", "images", "patients", "normal", "benign", "malignant", "unknown"):
        table.add_column(column, justify="left" if column == "domain" else "right")
    by_domain: dict[str, list] = {}
    for record in report.records:
        by_domain.setdefault(record.domain, []).append(record)
    for domain, records in sorted(by_domain.items()):
        labels = Counter(r.label or "unknown" for r in records)
        table.add_row(domain, str(len(records)), str(len({r.patient_id for r in records})),
                      *(str(labels[k]) for k in ("normal", "benign", "malignant", "unknown")))
    console.print(table)
    lesions = sum(len(r.lesions) for r in report.records)
    console.print(f"{len(report.records)} images, {report.patients} patients, {lesions} lesions"
                  f" with coordinates; {len(report.skipped)} skipped (see {report.skipped_path})")
    for skipped in report.skipped[:10]:
        console.print(f"  skipped {skipped.path}: {skipped.reason}", highlight=False)
    if len(report.skipped) > 10:
        console.print(f"  ... and {len(report.skipped) - 10} more")


def pair(
    manifests: Annotated[list[Path], typer.Argument(help="Manifests to combine.")],
    out: Annotated[Path, typer.Option("--out", help="Combined manifest to write.")],
    seed: Annotated[int, typer.Option(help="Seed of pseudo-pairing and splitting.")] = 0,
    fractions: Annotated[str, typer.Option(help="train,val,test patient fractions.")]
    = "0.7,0.15,0.15",
) -> None:
    """Combine manifests, pair modalities (true or pseudo-pairs) and split by patient."""
    from radpath.data.workflow import combine_pair_split

    parts = [float(x) for x in fractions.split(",")]
    manifest, summary = combine_pair_split(manifests, out, seed=seed, fractions=tuple(parts))
    console.print(f"wrote {out}: {len(manifest)} images; pairing {summary}")


def preview(
    manifest: Annotated[Path, typer.Argument(help="Manifest to preview.")],
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")],
    per_domain: Annotated[int, typer.Option(help="Samples per domain.")] = 4,
) -> None:
    """Write a grid of preprocessed samples per domain, lesions circled."""
    _write_preview(manifest, out, per_domain)


def _write_preview(manifest: Path, out: Path, per_domain: int = 4) -> None:
    from radpath.data.manifest import read_manifest
    from radpath.data.preview import write_preview

    write_preview(read_manifest(manifest), out, per_domain=per_domain)
    console.print(f"preview written to {out}")


def cache(
    manifest: Annotated[Path, typer.Argument(help="Manifest whose images to preprocess.")],
    cache_dir: Annotated[Path, typer.Option(help="Cache folder.")] = Path(".radpath-cache"),
    workers: Workers = None,
) -> None:
    """Preprocess every image of a manifest into the cache (reused across runs)."""
    from radpath.data.manifest import read_manifest
    from radpath.data.preprocess import PreprocessConfig, cache_manifest

    report = cache_manifest(read_manifest(manifest), cache_dir, PreprocessConfig(),
                            workers=workers)
    console.print(f"{report.done} cached ({report.hits} already there), "
                  f"{len(report.failed)} failed")
    for path, reason in report.failed[:10]:
        console.print(f"  failed {path}: {reason}", highlight=False)
    if report.failed and not report.done:
        raise typer.Exit(1)


def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for images and manifest.csv.")],
    patients: Annotated[int, typer.Option(help="Number of synthetic patients.")] = 24,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Write the synthetic cohort (tests and demos only, never a reported result)."""
    from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort

    path = make_synthetic_cohort(out, SyntheticConfig(n_patients=patients, seed=seed))
    console.print(f"synthetic cohort written: {path}")


def register(app: typer.Typer) -> None:
    for command in (ingest, pair, preview, cache, synth):
        app.command()(command)
