"""The Python API: train, load, predict and explain from a notebook or a script.

A thin, stable layer over the pipeline the command line runs (``radpath train``,
``evaluate`` and ``explain`` call the same functions), so a figure made here and one made
in a shell agree. Heavy modules (torch, Lightning) are imported when a function is
called, never when ``radpath`` is imported.

Example:
    >>> import radpath
    >>> model = radpath.train("configs/tiny.yaml", "cohort.csv", "runs/mine")  # doctest: +SKIP
    >>> model = radpath.load("runs/mine")                                       # doctest: +SKIP
    >>> model.predict(mammo=["left.png", "right.png"], histo=["core.tif"])      # doctest: +SKIP
    {'mammo': 0.31, 'histo': 0.87, 'fused': 0.74}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radpath.engine.checkpoint import LoadedRun
    from radpath.engine.config import TrainConfig

PathLike = str | Path
# One file or several: ``mammo="a.png"`` and ``mammo=["a.png", "b.png"]`` both work.
Files = PathLike | Sequence[PathLike]
ConfigLike = PathLike | Mapping[str, Any] | None
OUTPUTS = ("mammo", "histo", "fused")
PAIRINGS = ("true", "pseudo")


def load_config(config: ConfigLike = None, overrides: Sequence[str] = ()) -> TrainConfig:
    """A validated training config from a YAML path, a mapping or a ``TrainConfig``.

    Args:
        config: a YAML file (``configs/real-cpu.yaml``), a nested mapping of settings, a
            ``TrainConfig``, or ``None`` for the defaults.
        overrides: ``key.sub=value`` settings applied on top, as ``--set`` does.

    Raises:
        ConfigError: naming each bad key and what was expected.
    """
    import tempfile

    import yaml

    from radpath.engine.config import TrainConfig
    from radpath.engine.config import load_config as load_yaml

    if isinstance(config, TrainConfig):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        return load_yaml(config, list(overrides))
    # A mapping goes through the YAML loader too, so overrides read exactly as --set.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(yaml.safe_dump(dict(config)))
        return load_yaml(path, list(overrides))


def train(config: ConfigLike, manifest: Files, out: PathLike, *,
          overrides: Sequence[str] = (), resume: bool = False,
          workers: int | None = None) -> Model:
    """Train a model, as ``radpath train`` does, and return it loaded.

    Args:
        config: YAML path, mapping or ``TrainConfig`` (see :func:`load_config`).
        manifest: one manifest or several (CSV or Parquet); unpaired or unsplit manifests
            are paired and split by patient with the config's seed.
        out: the run folder to write: ``config.yaml``, ``run.json``, ``checkpoints/``,
            TensorBoard logs.
        overrides: ``key.sub=value`` settings, as ``--set``.
        resume: continue from ``out/checkpoints/last.ckpt``.
        workers: processes for preprocessing (default: all CPUs).

    Returns:
        The trained run's best checkpoint (on its validation split), on the CPU.
    """
    from radpath.engine.run import train as run_training

    settings = load_config(config, overrides)
    run_training(settings, [Path(p) for p in _paths(manifest)], out, resume=resume,
                 workers=workers)
    return load(out)


def load(run_dir: PathLike, *, checkpoint: str = "best", device: str = "cpu",
         cache_dir: PathLike | None = None) -> Model:
    """Load a run folder written by ``radpath train`` (or :func:`train`).

    Args:
        run_dir: the run folder (it holds ``config.yaml``, ``run.json``, ``checkpoints/``).
        checkpoint: ``best`` (on the run's validation split) or ``last``.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        cache_dir: where preprocessed images are cached; default the run config's
            ``data.cache_dir``.

    Raises:
        RadpathError: the folder is not a run, or lacks the checkpoint.
    """
    from radpath.engine.checkpoint import load_run
    from radpath.engine.devices import resolve_device

    loaded = load_run(run_dir, which=checkpoint, device=resolve_device(device))
    if cache_dir is not None:
        data = loaded.config.data.model_copy(update={"cache_dir": str(cache_dir)})
        loaded.config = loaded.config.model_copy(update={"data": data})
    return Model(loaded)


class Model:
    """A trained radpath model: predict, explain and evaluate cases.

    Attributes:
        run_dir: the run folder it was loaded from.
        config: the run's resolved ``TrainConfig``.
        record: the run's ``run.json`` (seed, pairing, data hashes, validation AUCs).
    """

    def __init__(self, run: LoadedRun) -> None:
        self._run = run
        self.run_dir: Path = run.folder
        self.config = run.config
        self.record: dict[str, Any] = run.record

    def __repr__(self) -> str:
        return (f"radpath.Model({str(self.run_dir)!r}, algorithm="
                f"{self.config.algorithm.name!r}, checkpoint={self._run.checkpoint.name!r})")

    def predict(self, mammo: Files = (), histo: Files = (), *,
                pairing: str = "true") -> dict[str, float | None]:
        """Malignancy probabilities of one case, through the evaluation pipeline.

        Args:
            mammo: the case's mammogram files (DICOM, PGM, PNG, TIFF), possibly none.
            histo: its H&E images, possibly none; at least one file in all.
            pairing: ``true`` when both modalities come from this patient, ``pseudo``
                when the H&E is another patient's (as in label-matched cohorts).

        Returns:
            ``{"mammo", "histo", "fused"}``: each output's probability of malignancy, or
            ``None`` for a modality the case lacks (the fused head takes either alone).

        Raises:
            ImageReadError: a file is missing or not an image (the message names it).
            ValueError: no file at all, or an unknown ``pairing``.
        """
        from radpath.batch.dataset import PatientBagDataset
        from radpath.evaluation.predict import predict_dataset

        manifest = case_manifest(_paths(mammo), _paths(histo), pairing=pairing)
        dataset = PatientBagDataset(manifest, self.config.data, split=None,
                                    domains=self.record.get("domains", []))
        predictions = predict_dataset(self._run.algorithm, dataset)
        return {output: (float(predictions.prob[output][0])
                         if predictions.has[output][0] else None) for output in OUTPUTS}

    def explain(self, mammo: Files, histo: Files = (), *, pairing: str = "true",
                top_k: int = 3, tiles_per_region: int = 3, map_kind: str = "localisation",
                out: PathLike | None = None) -> dict[str, Any]:
        """Explain one case, as ``radpath explain`` does.

        Args:
            mammo: the case's mammograms, at least one.
            histo: its H&E images (optional): each region is linked to the most similar.
            pairing: ``true`` (same patient) or ``pseudo`` (H&E of another patient).
            top_k: suspicious regions to report.
            tiles_per_region: H&E tiles linked to each region.
            map_kind: ``localisation``, ``rollout``, ``gradcam`` or ``mil``.
            out: a folder to also write ``explanation.json``, ``figure.png`` and the
                overlays into.

        Returns:
            What ``explanation.json`` holds (schema: ``docs/explanation-schema.md``):
            predictions, modality contributions, regions in original pixels with their
            linked tiles, and the rationale.
        """
        from radpath.explain.case import explain_case, write_explanation

        if pairing not in PAIRINGS:
            raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}; got {pairing!r}")
        explanation = explain_case(self._run, _paths(mammo), _paths(histo), top_k=top_k,
                                   tiles_per_region=tiles_per_region, map_kind=map_kind,
                                   pairing=pairing)
        if out is not None:
            write_explanation(explanation, Path(out))
        return explanation.to_json()

    def evaluate(self, manifest: Files, out: PathLike, *, split: str = "test",
                 adapt: str = "none") -> list[dict[str, Any]]:
        """Score a manifest, as ``radpath evaluate`` does (this run's checkpoint).

        Args:
            manifest: one or more manifests.
            out: folder for ``metrics.json``, ``predictions.csv`` and ``report.html``.
            split: the split to score (every row when the manifests have none).
            adapt: test-time adaptation: ``none``, ``tent``, ``sar`` or ``causal``.

        Returns:
            The rows of ``metrics.json``: ``task``, ``modality``, ``domain``, ``metric``,
            ``value``, ``ci_low``, ``ci_high`` (95% bootstrap over patients) and ``n``.
        """
        from radpath.evaluation.runner import evaluate_run

        device = str(next(self._run.algorithm.parameters()).device)
        result = evaluate_run(self.run_dir, [Path(p) for p in _paths(manifest)], out,
                              adapt=adapt, split=split, checkpoint=self._checkpoint_name,
                              device=device, progress=False)
        return result.rows

    @property
    def _checkpoint_name(self) -> str:
        return "last" if self._run.checkpoint.name == "last.ckpt" else "best"


def case_manifest(mammo: Sequence[PathLike], histo: Sequence[PathLike], *,
                  pairing: str = "true"):
    """An in-memory manifest of one unlabelled case (one unit), for prediction."""
    from radpath.data.manifest import Manifest, Record
    from radpath.errors import ImageReadError

    if pairing not in PAIRINGS:
        raise ValueError(f"pairing must be one of {', '.join(PAIRINGS)}; got {pairing!r}")
    if not mammo and not histo:
        raise ValueError("predict needs at least one mammogram or H&E image")
    for file in (*mammo, *histo):
        if not Path(file).is_file():
            raise ImageReadError(file, "file not found")
    both = bool(mammo) and bool(histo)
    records = []
    for modality, files in (("mammo", mammo), ("histo", histo)):
        # A pseudo-pair's H&E belongs to another patient; a true pair's to this one.
        patient = "case-histo" if modality == "histo" and pairing == "pseudo" else "case"
        records += [Record(image_id=f"{modality}-{index}", patient_id=patient,
                           modality=modality, path=str(Path(file).resolve()),
                           pairing=pairing if both else "", pair_id="case" if both else "")
                    for index, file in enumerate(files)]
    return Manifest(records)


def _paths(files: Files) -> list[Path]:
    if isinstance(files, str | Path):
        return [Path(files)]
    return [Path(file) for file in files]
