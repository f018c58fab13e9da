"""The training fixtures live in tests/conftest.py; REPO stays importable from here."""

from radpath.batch.dataset import PatientBagDataset
from radpath.data.manifest import read_manifest
from tests.conftest import REPO_ROOT as REPO

__all__ = ["REPO", "images_per_epoch"]


def images_per_epoch(manifest_path, config, split):
    """Mammograms and H&E tiles one pretraining epoch over ``split`` reads (None: all)."""
    data = config.data.model_copy(update={"max_tiles": config.data.preprocess.max_tiles})
    dataset = PatientBagDataset(read_manifest(manifest_path), data, split=split)
    items = [dataset[i] for i in range(len(dataset))]
    return {"mammo": sum(len(i["mammo"]) for i in items),
            "histo": sum(len(i["histo"]) for i in items)}
