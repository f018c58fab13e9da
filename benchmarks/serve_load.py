"""Load test of ``radpath serve``: latency, throughput, errors and server memory.

Starts the server on 127.0.0.1 (a free port) in a subprocess, posts cases from N
concurrent clients until --requests are done or --seconds have passed, prints p50/p95
latency, requests/s, errors, and the server's resident memory (VmRSS) before and after
(and its peak, VmHWM), then stops the server.

    python benchmarks/serve_load.py --run runs/tiny --requests 40 --clients 4
    python benchmarks/serve_load.py --run RUN --mammo a.dcm --histo t1.tif t2.tif
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SERVER = """
import sys, uvicorn
from radpath.serve import Limits, create_app
run, port, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
app = create_app(run, threads=threads, limits=Limits(max_pending=64))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder to serve")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=40, help="cases to post in all")
    parser.add_argument("--seconds", type=float, default=120, help="stop after this long")
    parser.add_argument("--mammo", type=Path, nargs="*", default=[],
                        help="mammogram files (default: one synthetic 256 px PNG)")
    parser.add_argument("--histo", type=Path, nargs="*", default=None,
                        help="histology files (default: one synthetic 128 px PNG; "
                             "give --histo alone for none)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--warmup", type=int, default=8,
                        help="cases posted before the 'before' memory reading: the first "
                             "requests fill allocator and library caches, which is not growth")
    return parser.parse_args(argv)


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_case() -> tuple[bytes, bytes]:
    """A 256 px greyscale mammogram-like PNG and a 128 px H&E-like PNG."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256] / 256
    breast = ((xx ** 2 + (yy - 0.5) ** 2) < 0.6) * 0.5
    blob = np.exp(-(((xx - 0.35) ** 2 + (yy - 0.55) ** 2) / 0.005)) * 0.4
    grey = np.clip(breast + blob + rng.normal(0, 0.03, xx.shape), 0, 1)
    tile = np.full((128, 128, 3), (230, 160, 200), np.uint8)
    tile[rng.random((128, 128)) < 0.15] = (110, 60, 160)
    return _png((grey * 255).astype(np.uint8)), _png(tile)


def case_files(args: argparse.Namespace) -> list[tuple[str, tuple[str, bytes]]]:
    mammo_png, histo_png = synthetic_case()
    mammo = [(p.name, p.read_bytes()) for p in args.mammo] or [("synthetic.png", mammo_png)]
    histo = ([("synthetic-he.png", histo_png)] if args.histo is None else
             [(p.name, p.read_bytes()) for p in args.histo])
    return [("mammo", item) for item in mammo] + [("histo", item) for item in histo]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of ``pid`` in kB, from /proc (Linux)."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except OSError:
        pass
    return values


def start_server(run: Path, port: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", SERVER, str(run), str(port), str(threads)],
                            env=env)


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            return httpx.get(url + "/v1/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def load(url: str, files: list, args: argparse.Namespace) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + args.seconds

    def client() -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=args.seconds + 30) as session:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= args.requests:
                        return
                    issued += 1
                started = time.perf_counter()
                try:
                    response = session.post("/v1/cases", files=files)
                    problem = None if response.status_code == 200 else (
                        f"{response.status_code}: {response.text[:120]}")
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(time.perf_counter() - started)
                    if problem:
                        errors.append(problem)

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(args.clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return latencies, errors, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = case_files(args)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.run, port, args.threads)
    try:
        health = wait_healthy(url, server)
        start = memory_kb(server.pid)
        if args.warmup:
            load(url, files, argparse.Namespace(**{**vars(args), "requests": args.warmup}))
        before = memory_kb(server.pid)
        latencies, errors, wall = load(url, files, args)
        after = memory_kb(server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
    model = health.get("model", {})
    done = len(latencies)
    print(f"model      {model.get('algorithm')} on {model.get('backbone')} "
          f"(run {model.get('run')}); server torch threads {args.threads}")
    print(f"case       {sum(f == 'mammo' for f, _ in files)} mammogram(s), "
          f"{sum(f == 'histo' for f, _ in files)} histology file(s), "
          f"{sum(len(data) for _, (_, data) in files) / 1024:.0f} kB")
    print(f"requests   {done} in {wall:.1f} s with {args.clients} clients: "
          f"{done / wall:.2f} requests/s")
    print(f"latency    p50 {percentile(latencies, 50):.3f} s, p95 {percentile(latencies, 95):.3f} s"
          f", max {max(latencies, default=float('nan')):.3f} s, mean "
          f"{statistics.fmean(latencies) if latencies else float('nan'):.3f} s")
    print(f"errors     {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    print(f"server RSS at start {start.get('VmRSS', 0) / 1024:.0f} MB; after {args.warmup} "
          f"warm-up cases (before) {before.get('VmRSS', 0) / 1024:.0f} MB, after "
          f"{after.get('VmRSS', 0) / 1024:.0f} MB, peak {after.get('VmHWM', 0) / 1024:.0f} MB")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
