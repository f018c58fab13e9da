"""The README's main command, run for real (shortened) on a small cohort."""

import numpy as np
from PIL import Image

from radpath.data.manifest import read_manifest
from radpath.data.splits import check_leakage
from radpath.demo import run_demo


def test_demo_runs_every_stage(tmp_path):
    result = run_demo(tmp_path, patients=9, workers=1, progress=False,
                      overrides=["optim.epochs=1"])
    manifest = read_manifest(result["manifest"])
    check_leakage(manifest)
    assert {r.modality for r in manifest} == {"mammo", "histo"}
    preview = np.asarray(Image.open(result["preview"]))
    assert preview.ndim == 3 and preview.std() > 10
    for adapt in ("none", "tent", "causal"):
        assert (tmp_path / "eval" / adapt / "metrics.json").is_file()
    page = result["report"].read_text()
    assert "Test-split AUC" in page and "data:image/png;base64," in page
    assert (tmp_path / "explanation" / "explanation.json").is_file()
