"""The README's main command, run for real on a small cohort."""

import numpy as np
from PIL import Image

from radpath.data.demo import run_demo
from radpath.data.manifest import read_manifest
from radpath.data.splits import check_leakage


def test_demo_runs_end_to_end(tmp_path):
    result = run_demo(tmp_path, patients=6, workers=2, progress=False)
    manifest = read_manifest(result["manifest"])
    check_leakage(manifest)
    assert {r.modality for r in manifest} == {"mammo", "histo"}
    assert all(r.pairing in ("true", "pseudo", "unpaired") for r in manifest)
    preview = np.asarray(Image.open(result["preview"]))
    assert preview.ndim == 3 and preview.std() > 10
    assert any(result["cache"].rglob("*.npz"))
