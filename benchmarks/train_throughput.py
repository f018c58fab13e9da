"""Training throughput: radpath's training step against a bare timm loop on the same ViT.

Every variant runs forward + loss + backward + AdamW step, in one process, on the same
number of images of the same size per step:

* ``timm (bare)``: timm's ``VisionTransformer`` built with the kwargs of
  ``radpath.models.backbone.BACKBONES[name]``, cross-entropy on its linear head;
* ``radpath <algorithm>``: ``Algorithm.update`` on a patient batch shaped by
  ``collate_patients`` (B units x V one-channel views + T three-channel tiles);
* ``lightning training_step``: ``RadpathModule.training_step`` called directly, then
  backward, the optimiser step and ``on_train_batch_end`` (no Trainer loop).

Variants are timed in interleaved rounds and each reports its median step time, so a
neighbour process slowing the machine for a while biases no variant in particular. On a
GPU the steps run under bf16 autocast. Peak memory is the step's high-water mark above
what was resident before it (parameters and optimiser state excluded): the process's
peak RSS on CPU (reset through /proc/self/clear_refs where Linux allows it), else
``torch.cuda.max_memory_allocated``.

    .venv/bin/python benchmarks/train_throughput.py [--backbone vit_mini --size 128]
    python3 benchmarks/train_throughput.py --device cuda --backbone vit_base --size 224 \
        [--batch 32 --views 4 --tiles 16] [--profile 3] [--compile]

Every variant's aten operator calls a step are counted by the profiler (deterministic,
unlike times on a shared host); ``--ops-json`` writes them, ``--ops-before`` shows those of
an earlier checkout beside them, ``--ops-only`` skips the timing. ``--write FILE`` puts
this configuration's table into a Markdown results file (its other sections kept), with
each ratio's range over the rounds and the host's load average. ``--profile N`` adds, per
variant, its kernel launches, the source lines that synchronise with the GPU (on a CPU:
the lines whose operators would), and its busiest operators; ``--compile`` times radpath
with ``trainer.compile`` and adds a compiled timm row (the eager one stays the reference).

    .venv/bin/python benchmarks/train_throughput.py --rounds 4 \
        --ops-before benchmarks/results/train_throughput_ops_before.json \
        --write benchmarks/results/train_throughput_cpu.md
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import ctypes.util
import datetime
import json
import os
import resource
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from radpath.algorithms import ALGORITHMS, Algorithm
from radpath.algorithms.config import AlgorithmConfig
from radpath.batch.collate import collate_patients
from radpath.engine.config import OptimConfig
from radpath.engine.devices import batch_to
from radpath.engine.module import RadpathModule
from radpath.models.backbone import BACKBONES, BackboneConfig
from radpath.models.crossmodal import CrossModalModel, ModelConfig

CLEAR_REFS = Path("/proc/self/clear_refs")
STATUS = Path("/proc/self/status")


@dataclass
class Variant:
    """One training loop under test: ``step()`` trains on ``images`` images."""

    name: str
    step: Callable[[], None]
    images: int
    times: list[float] = field(default_factory=list)
    peak_bytes: int = 0
    round_medians: list[float] = field(default_factory=list)
    operators: float = 0.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="vit_test", choices=list(BACKBONES))
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="units per step")
    parser.add_argument("--views", type=int, default=2, help="mammogram views per unit")
    parser.add_argument("--tiles", type=int, default=4, help="H&E tiles per unit")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant")
    parser.add_argument("--rounds", type=int, default=2,
                        help="interleaved rounds the timed steps are split into")
    parser.add_argument("--algorithms", nargs="+", default=["erm", "paper"])
    parser.add_argument("--mixstyle-layers", type=int, nargs="*", default=[0],
                        help="blocks after which MixStyle mixes (paper, mixstyle)")
    parser.add_argument("--no-lightning", action="store_true",
                        help="skip the RadpathModule.training_step variant")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 keeps the default")
    parser.add_argument("--compile", action="store_true",
                        help="compile radpath's transformer (trainer.compile) and add a "
                             "compiled timm variant; the eager timm loop stays the reference")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="after timing, profile STEPS steps of each variant (torch.profiler) "
                             "and print its busiest operators and kernel launches per step")
    parser.add_argument("--ops-json", type=Path, help="write each variant's aten operator "
                        "calls a step into this JSON file, under this configuration")
    parser.add_argument("--ops-before", type=Path, help="an --ops-json file of an earlier "
                        "checkout, shown beside this one's counts")
    parser.add_argument("--ops-only", action="store_true",
                        help="count operators only, without timing")
    parser.add_argument("--write", type=Path, metavar="MARKDOWN",
                        help="replace this configuration's section of a Markdown results file")
    return parser.parse_args()


def patient_batch(units: int, views: int, tiles: int, size: int, patch: int,
                  device: torch.device) -> dict[str, Tensor]:
    """A random batch of complete true pairs over two domains, collated as a loader does."""
    grid = size // patch
    items = [{
        "unit_id": f"u{i}",
        "mammo": torch.randn(views, 1, size, size),
        "histo": torch.randn(tiles, 3, size, size),
        "lesion_map": (torch.rand(views, grid, grid) > 0.9).float(),
        "lesion_known": torch.ones(views, dtype=torch.bool),
        "mammo_side": torch.arange(views) % 2,
        "mammo_view_label": torch.full((views,), i % 3),
        "has_mammo": torch.tensor(True), "has_histo": torch.tensor(True),
        "label": torch.tensor(i % 3), "malignant": torch.tensor(float(i % 3 == 2)),
        "grade": torch.tensor(-1), "mammo_domain": torch.tensor(i % 2),
        "histo_domain": torch.tensor(i % 2), "pairing": torch.tensor(1),
    } for i in range(units)]
    batch = collate_patients(items)
    del batch["unit_id"]
    return batch_to(batch, device)


def encoded_images(batch: dict[str, Tensor]) -> int:
    """Mammogram views plus tiles that go through the backbone."""
    return int(batch["mammo_mask"].sum() + batch["histo_mask"].sum())


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timm_variant(args: argparse.Namespace, images: int, device: torch.device, *,
                 compiled: bool = False) -> Variant:
    """The reference: a plain timm ViT classifying ``images`` images per step."""
    model = VisionTransformer(img_size=args.size, num_classes=2,
                              **BACKBONES.get(args.backbone)()).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.05)
    if compiled:
        model.compile()
    x = torch.randn(images, 3, args.size, args.size, device=device)
    y = torch.randint(0, 2, (images,), device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    return Variant("timm (bare, compiled)" if compiled else "timm (bare)", step, images)


def build_algorithm(name: str, args: argparse.Namespace, device: torch.device) -> Algorithm:
    backbone = BackboneConfig(name=args.backbone, img_size=args.size, histo_img_size=args.size,
                              mixstyle_layers=tuple(args.mixstyle_layers))
    model = CrossModalModel(ModelConfig(backbone=backbone))
    model.backbone.use_compiled(args.compile)
    algorithm = ALGORITHMS.get(name)(model, AlgorithmConfig(name=name), domains=["a", "b"])
    return algorithm.to(device)


def algorithm_variant(name: str, args: argparse.Namespace, batch: dict[str, Tensor],
                      device: torch.device) -> Variant:
    """``Algorithm.update``: the standalone step scripts and tests use."""
    algorithm = build_algorithm(name, args, device)

    def step() -> None:
        with autocast(device):
            algorithm.update(batch)

    return Variant(f"radpath {name}{_compiled(args)}", step, encoded_images(batch))


def _compiled(args: argparse.Namespace) -> str:
    return ", compiled" if args.compile else ""


def lightning_variant(args: argparse.Namespace, batch: dict[str, Tensor],
                      device: torch.device) -> Variant:
    """``RadpathModule.training_step`` (erm) with the optimiser step Lightning would take."""
    algorithm = build_algorithm("erm", args, device)
    module = RadpathModule(algorithm, OptimConfig()).train()
    optimizer = algorithm.make_optimizer()
    index = iter(range(1 << 30))

    def step() -> None:
        i = next(index)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = module.training_step(batch, i)
        loss.backward()
        optimizer.step()
        module.on_train_batch_end(loss, batch, i)

    return Variant(f"lightning training_step (erm{_compiled(args)})", step,
                   encoded_images(batch))


def _status_kib(key: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so the RSS counts live memory only.

    Otherwise a step reuses pages an earlier one freed and its peak RSS barely moves.
    """
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    """Yields a function returning the peak bytes above those resident on entry."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield lambda: torch.cuda.max_memory_allocated(device) - base
        return
    _release_free_heap()
    try:  # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS
        CLEAR_REFS.write_text("5")
        base = _status_kib("VmRSS")
        yield lambda: max(0, _status_kib("VmHWM") - base) * 1024
    except OSError:  # ru_maxrss only grows: a delta misses peaks below an earlier one
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield lambda: (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024


def timed(variant: Variant, steps: int, device: torch.device) -> None:
    """Run ``steps`` steps, recording each step's time and the peak memory."""
    with peak_memory(device) as peak:
        for _ in range(steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            variant.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            variant.times.append(time.perf_counter() - started)
        variant.peak_bytes = max(variant.peak_bytes, peak())


def warm_up(variants: list[Variant], args: argparse.Namespace) -> None:
    for variant in variants:
        for _ in range(args.warmup):
            variant.step()


def run(variants: list[Variant], args: argparse.Namespace, device: torch.device) -> None:
    per_round = [args.steps // args.rounds + (r < args.steps % args.rounds)
                 for r in range(args.rounds)]
    for steps in per_round:
        for variant in variants:
            before = len(variant.times)
            timed(variant, steps, device)
            variant.round_medians.append(statistics.median(variant.times[before:]))


def ratio_range(variant: Variant, reference: Variant) -> tuple[float, float]:
    """The lowest and highest images-per-second ratio to ``reference`` over the rounds,
    each round's median step against the reference's median of the same round."""
    ratios = [(variant.images / mine) / (reference.images / theirs)
              for mine, theirs in zip(variant.round_medians, reference.round_medians,
                                      strict=True)]
    return min(ratios), max(ratios)


def summary_line(args: argparse.Namespace, device: torch.device) -> str:
    precision = "bf16 autocast" if device.type == "cuda" else "fp32"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (f"device {name} ({precision}), torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; backbone {args.backbone} at {args.size} px; "
            f"{args.batch} units x ({args.views} views + {args.tiles} tiles); "
            f"{args.steps} timed steps in {args.rounds} interleaved rounds after "
            f"{args.warmup} warm-up, median step time")


def table_rows(variants: list[Variant], device: torch.device,
               before: dict[str, float]) -> list[list[str]]:
    """One row per variant: images, median and quartiles of the step, the ratio to the
    first variant with its range over the rounds, peak memory, operator calls a step."""
    reference = variants[0]
    reference_rate = reference.images / statistics.median(reference.times)
    rows = []
    for variant in variants:
        seconds = statistics.median(variant.times)
        quartiles = (statistics.quantiles(variant.times, n=4) if len(variant.times) > 1
                     else [seconds, seconds, seconds])
        low, high = ratio_range(variant, reference)
        rate = variant.images / seconds
        earlier = before.get(variant.name)
        rows.append([variant.name, f"{variant.images}", f"{seconds * 1e3:.1f}",
                     f"{quartiles[0] * 1e3:.1f}-{quartiles[2] * 1e3:.1f}",
                     f"{rate / reference_rate:.2f}", f"{low:.2f}-{high:.2f}",
                     f"{variant.peak_bytes / 2**20:.1f}", f"{variant.operators:.0f}",
                     f"{earlier:.0f}" if earlier is not None else "-"])
    return rows


HEADER = ["variant", "img/step", "ms/step", "IQR ms", "vs timm", "rounds", "peak MiB",
          "aten ops", "ops before"]


def report(variants: list[Variant], args: argparse.Namespace, device: torch.device,
           before: dict[str, float]) -> list[list[str]]:
    rows = table_rows(variants, device, before)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print(summary_line(args, device))
    for row in [HEADER, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
    return rows


def count_operators(variant: Variant, steps: int = 2) -> float:
    """aten operator calls a step, as the profiler counts them (nested calls included)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            variant.step()
    return sum(e.count for e in profiler.key_averages() if e.key.startswith("aten::")) / steps


def load_line(loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    return (f"host load average (1, 5, 15 min) {', '.join(f'{v:.1f}' for v in loads[0])} at "
            f"the start and {', '.join(f'{v:.1f}' for v in loads[1])} at the end, "
            f"on {os.cpu_count()} cores")


def markdown_section(args: argparse.Namespace, device: torch.device, rows: list[list[str]],
                     loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    """This configuration's section of the results file: title, provenance, table."""
    lines = [f"## {section_key(args, device)}", "",
             f"{summary_line(args, device)}. Measured {datetime.date.today().isoformat()}; "
             f"{load_line(loads)}. \"vs timm\" is the ratio of images per second to the bare "
             "timm loop (medians over all timed steps); \"rounds\" is its lowest and highest "
             "value over the interleaved rounds; \"aten ops\" is the profiler's operator calls "
             "a step, \"ops before\" those of the checkout given by `--ops-before`.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def section_key(args: argparse.Namespace, device: torch.device) -> str:
    return (f"{args.backbone} at {args.size} px, {args.batch} units x ({args.views} views + "
            f"{args.tiles} tiles), {device.type}")


TITLE = ("# Training throughput: radpath's step against a bare timm loop\n\n"
         "Written by `benchmarks/train_throughput.py --write` (one section per configuration, "
         "replaced when it is measured again). Same images per step, forward + loss + "
         "backward + AdamW step; see the script's docstring for each variant.\n")


def write_section(path: Path, section: str) -> None:
    """Replace (or append) ``section`` in the Markdown file ``path``, keyed by its heading."""
    text = path.read_text() if path.is_file() else TITLE
    head, *sections = text.split("\n## ")
    heading = section.split("\n", 1)[0].removeprefix("## ")
    kept = [s for s in sections if s.split("\n", 1)[0] != heading]
    parts = [head.rstrip("\n") + "\n", *("## " + s.rstrip("\n") + "\n" for s in kept), section]
    from radpath.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(parts))


def profile(variant: Variant, steps: int, device: torch.device) -> None:
    """Where a variant's step time goes: operators by self time, kernel launches per step."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        for _ in range(steps):
            variant.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = profiler.key_averages()
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                        "cudaLaunchKernelExC"))
    operators = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"\n{variant.name}: {operators / steps:.0f} aten operator calls and "
          f"{launches / steps:.0f} kernel launches a step")
    if device.type == "cuda":
        print_synchronisations(variant, device)
    else:
        print_device_waits(variant)
    sorts = ["self_cpu_time_total"] + (["self_cuda_time_total"] if device.type == "cuda" else [])
    for sort in sorts:
        print(events.table(sort_by=sort, row_limit=20, max_name_column_width=48))


def print_synchronisations(variant: Variant, device: torch.device) -> None:
    """The lines of one step that wait for the GPU (CUDA's sync debug mode, as warnings)."""
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            variant.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    lines = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                                if "synchroniz" in str(w.message))
    print(f"{sum(lines.values())} synchronisations a step: "
          + ", ".join(f"{where} x{count}" for where, count in lines.most_common()))


# Operators whose result a GPU must hand back before the CPU can go on: a tensor read as a
# Python number, and outputs whose size depends on the values.
_WAITING_OPS = {"_local_scalar_dense", "nonzero", "_unique2", "unique_dim", "masked_select"}
_INDEX_OPS = {"index", "index_put", "index_put_", "_index_put_impl_"}


class _DeviceWaits(TorchDispatchMode):
    """Counts, by calling source line, the operators that would wait for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__.split(".")[0]
        by_mask = name in _INDEX_OPS and any(  # boolean-mask indexing runs a nonzero
            isinstance(i, Tensor) and i.dtype == torch.bool for i in args[1] if i is not None)
        if name in _WAITING_OPS or by_mask:
            frames = [f for f in traceback.extract_stack()
                      if "/torch/" not in f.filename and f.filename != __file__]
            where = (f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames
                     else "inside torch")
            self.lines[where] += 1
        return func(*args, **(kwargs or {}))


def print_device_waits(variant: Variant) -> None:
    """On a CPU, the lines of one step that would wait for a GPU, found by operator."""
    with _DeviceWaits() as waits:
        variant.step()
    print(f"{sum(waits.lines.values())} operators a step would wait for a GPU: "
          + ", ".join(f"{where} x{count}" for where, count in waits.lines.most_common()))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    # training_step logs through self.log, which only warns without a Trainer attached.
    warnings.filterwarnings("ignore", message=".*self.log.*")
    torch.manual_seed(0)
    patch = BACKBONES.get(args.backbone)()["patch_size"]
    batch = patient_batch(args.batch, args.views, args.tiles, args.size, patch, device)
    variants = [timm_variant(args, encoded_images(batch), device)]
    if args.compile:
        variants.append(timm_variant(args, encoded_images(batch), device, compiled=True))
    variants += [algorithm_variant(name, args, batch, device) for name in args.algorithms]
    if not args.no_lightning:
        variants.append(lightning_variant(args, batch, device))
    loads = [os.getloadavg()]
    warm_up(variants, args)
    for variant in variants:
        variant.operators = count_operators(variant)
    key = section_key(args, device)
    before = json.loads(args.ops_before.read_text()).get(key, {}) if args.ops_before else {}
    if args.ops_json:  # one entry per configuration, the file's others kept
        counts = json.loads(args.ops_json.read_text()) if args.ops_json.is_file() else {}
        counts[key] = {v.name: v.operators for v in variants}
        args.ops_json.write_text(json.dumps(counts, indent=1) + "\n")
    if args.ops_only:
        for variant in variants:
            print(f"{variant.name}: {variant.operators:.0f} aten operator calls a step "
                  f"(before: {before.get(variant.name, '-')})")
        return
    run(variants, args, device)
    loads.append(os.getloadavg())
    rows = report(variants, args, device, before)
    print(load_line(tuple(loads)))
    if args.write:
        write_section(args.write, markdown_section(args, device, rows, tuple(loads)))
    for variant in variants if args.profile else []:
        profile(variant, args.profile, device)


if __name__ == "__main__":
    main()
