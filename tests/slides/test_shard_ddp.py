"""Feature caching sharded by slide over a real 2-process gloo group: no rank reads every
slide, and together the ranks cover each slide once."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from radpath.data.wsi import Slide
from radpath.slides.grid import GridConfig, make_grid, write_coords
from tests.slides import layouts


def _rank_main(rank: int, world: int, port: int, slides: list, out: str, log: str) -> None:
    import torch.distributed as dist

    from radpath.slides import patches
    from radpath.slides.features import ColourStats, cache_features
    from radpath.slides.shard import current_rank

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    opened = []
    original = patches.Slide

    def recording(path, **kwargs):  # which slides this rank actually opens
        opened.append(Path(path).name)
        return original(path, **kwargs)

    patches.Slide = recording
    me, size = current_rank()
    written = cache_features([tuple(s) for s in slides], out, ColourStats(), rank=me,
                             world_size=size)
    Path(log, f"rank{rank}.json").write_text(json.dumps(
        {"rank": me, "world": size, "written": [p.name for p in written],
         "opened": sorted(set(opened))}))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_split_the_slides(tmp_path):
    root = layouts.camelyon17(tmp_path / "c17")
    slides = []
    for path in sorted(root.rglob("*.tif"))[:6]:
        with Slide(path) as slide:
            grid = make_grid(slide, GridConfig(mpp=1.0, size=64, min_tissue=0.5))
        coords = write_coords(grid, tmp_path / "coords" / f"{path.stem}.h5")
        slides.append((path.stem, str(path), str(coords)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank_main, args=(2, port, slides, str(tmp_path / "features"), str(tmp_path)),
             nprocs=2, join=True)
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(log["rank"], log["world"]) for log in logs] == [(0, 2), (1, 2)]
    written = [set(log["written"]) for log in logs]
    assert written[0] and written[1] and not written[0] & written[1]
    assert written[0] | written[1] == {f"{s[0]}.h5" for s in slides}
    for log, files in zip(logs, written, strict=True):  # each opened only its own slides
        assert {f"{Path(name).stem}.h5" for name in log["opened"]} == files
