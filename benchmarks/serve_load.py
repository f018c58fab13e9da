"""Load test of ``radpath serve``: latency, status codes, server memory, slow clients.

Starts the server on 127.0.0.1 (a free port) in a subprocess and, for each number of
concurrent clients (``--clients 8 16``), posts cases until --requests are done or
--seconds have passed. Reports p50/p95/p99 latency, requests/s, the status codes (any
5xx fails the run), and the server's resident memory (VmRSS) before and after each level.
Then --slow-clients clients open a case and send its body a byte a second while normal
cases keep coming: each slow connection must be closed by the server within the body
deadline (--body-timeout) plus a margin, and the normal cases must still be answered.

Without --run, a tiny run is trained first on a synthetic cohort (about a minute).
Results go to --out (.md and .json).

    python benchmarks/serve_load.py --clients 8 16 --requests 64
    python benchmarks/serve_load.py --run RUN --mammo a.dcm --histo t1.tif t2.tif
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SERVER = """
import sys, uvicorn
from radpath.serve import Limits, create_app
run, port, threads, body_timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
limits = Limits(max_pending=64, body_timeout_s=float(body_timeout))
app = create_app(run, threads=threads, limits=limits)
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
            limit_concurrency=64)
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="run folder to serve (default: train a tiny synthetic one)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 16],
                        help="numbers of concurrent clients, one load level each")
    parser.add_argument("--requests", type=int, default=64, help="cases to post per level")
    parser.add_argument("--slow-clients", type=int, default=15,
                        help="clients sending their body a byte a second")
    parser.add_argument("--body-timeout", type=float, default=5.0,
                        help="the server's body deadline in seconds (body_timeout_s)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_load",
                        help="results file stem (.md and .json are written)")
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


def start_server(run: Path, port: int, threads: int, body_timeout: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", SERVER, str(run), str(port), str(threads),
                             str(body_timeout)], env=env, cwd=REPO)


def wait_healthy(url: str, server: subprocess.Popen, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            return httpx.get(url + "/v1/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def load(url: str, files: list, clients: int, requests: int,
         seconds: float) -> dict[str, object]:
    """``requests`` cases from ``clients`` threads: latencies, status codes, wall time."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + seconds

    def client() -> None:
        nonlocal issued
        with httpx.Client(base_url=url, timeout=seconds + 30) as session:
            while time.monotonic() < deadline:
                with lock:
                    if issued >= requests:
                        return
                    issued += 1
                started = time.perf_counter()
                try:
                    status = str(session.post("/v1/cases", files=files).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    latencies.append(time.perf_counter() - started)
                    statuses[status] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"latencies": latencies, "statuses": dict(statuses),
            "wall": time.perf_counter() - started}


def slow_client(port: int, limit: float) -> dict[str, object]:
    """Open a case and send its body a byte a second; how long until the server closes
    the connection, and with what status line."""
    head = (b"POST /v1/cases HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
            b"boundary=b\r\nContent-Length: 1000000\r\n\r\n--b\r\n")
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=limit) as conn:
        conn.sendall(head)
        conn.settimeout(1.0)
        while time.monotonic() - started < limit:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                try:
                    conn.sendall(b"x")
                except OSError:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            answer += chunk
    line = answer.split(b"\r\n", 1)[0].decode("latin-1") or "(closed without an answer)"
    return {"held_s": time.monotonic() - started, "status_line": line}


def slow_phase(url: str, port: int, files: list, args: argparse.Namespace) -> dict[str, object]:
    """Slow clients and, meanwhile, normal cases from two clients."""
    limit = args.body_timeout * 3 + 10
    results: list[dict[str, object]] = []
    threads = [threading.Thread(target=lambda: results.append(slow_client(port, limit)))
               for _ in range(args.slow_clients)]
    for thread in threads:
        thread.start()
    normal = load(url, files, 2, 8, args.body_timeout * 3 + 60)
    for thread in threads:
        thread.join()
    held = [float(r["held_s"]) for r in results]
    return {"slow_clients": len(results), "body_timeout_s": args.body_timeout,
            "held_max_s": max(held, default=float("nan")),
            "held_median_s": statistics.median(held) if held else float("nan"),
            "status_lines": dict(Counter(str(r["status_line"]) for r in results)),
            "normal_statuses": normal["statuses"],
            "normal_p50_s": percentile(normal["latencies"], 50)}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def tiny_run(folder: Path) -> Path:
    """A run trained in about a minute on a synthetic cohort (configs/tiny.yaml)."""
    sys.path.insert(0, str(REPO))
    from radpath.data.synthetic import SyntheticConfig, make_synthetic_cohort
    from radpath.data.workflow import combine_pair_split
    from radpath.engine.config import load_config
    from radpath.engine.run import train

    source = make_synthetic_cohort(folder / "cohort", SyntheticConfig(
        n_patients=12, mammo_size=64, tile_size=64, seed=3))
    manifest = folder / "cohort.csv"
    combine_pair_split([source], manifest, seed=0, fractions=(0.6, 0.4, 0.0))
    config = load_config(REPO / "configs" / "tiny.yaml",
                         [f"data.cache_dir={folder / 'cache'}", "optim.epochs=1",
                          "trainer.progress_bar=false"])
    train(config, [manifest], folder / "run", workers=1)
    return folder / "run"


def level_row(clients: int, result: dict, before: dict, after: dict) -> dict[str, object]:
    latencies = result["latencies"]
    statuses = result["statuses"]
    return {"clients": clients, "requests": len(latencies),
            "requests_per_s": round(len(latencies) / result["wall"], 2),
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "p99_s": round(percentile(latencies, 99), 3),
            "statuses": statuses,
            "server_5xx": sum(n for code, n in statuses.items() if code.startswith("5")),
            "transport_errors": sum(n for code, n in statuses.items() if not code.isdigit()),
            "rss_before_mb": round(before.get("VmRSS", 0) / 1024),
            "rss_after_mb": round(after.get("VmRSS", 0) / 1024),
            "rss_peak_mb": round(after.get("VmHWM", 0) / 1024)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    files = case_files(args)
    with tempfile.TemporaryDirectory(prefix="radpath-load-") as scratch:
        run = args.run or tiny_run(Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(run, port, args.threads, args.body_timeout)
        try:
            health = wait_healthy(url, server)
            start = memory_kb(server.pid)
            if args.warmup:
                load(url, files, 2, args.warmup, args.seconds)
            levels = []
            for clients in args.clients:
                before = memory_kb(server.pid)
                result = load(url, files, clients, args.requests, args.seconds)
                levels.append(level_row(clients, result, before, memory_kb(server.pid)))
            slow = slow_phase(url, port, files, args)
            alive = httpx.get(url + "/v1/health", timeout=10).status_code == 200
            final = memory_kb(server.pid)
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
    report = {"model": health.get("model", {}), "torch_threads": args.threads,
              "host": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "load_average": [round(v, 1) for v in os.getloadavg()],
              "case": {"mammo": sum(f == "mammo" for f, _ in files),
                       "histo": sum(f == "histo" for f, _ in files),
                       "kb": round(sum(len(d) for _, (_, d) in files) / 1024)},
              "rss_start_mb": round(start.get("VmRSS", 0) / 1024),
              "rss_end_mb": round(final.get("VmRSS", 0) / 1024),
              "levels": levels, "slow": slow, "serving_after": alive}
    bound = args.body_timeout + 3
    failed = (any(row["server_5xx"] or row["transport_errors"] for row in levels)
              or slow["held_max_s"] > bound or not alive
              or any(not code.startswith("2") for code in slow["normal_statuses"]))
    report["passed"] = not failed
    write_report(report, args.out, bound)
    print(args.out.with_suffix(".md").read_text())
    return 1 if failed else 0


def write_report(report: dict, out: Path, bound: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    case = report["case"]
    lines = [
        "# Service under load (`benchmarks/serve_load.py`)", "",
        f"Model {report['model'].get('algorithm')} on {report['model'].get('backbone')}, "
        f"server torch threads {report['torch_threads']}; host {report['host']}, load "
        f"average at the end {report['load_average']}. Each case: {case['mammo']} "
        f"mammogram(s), {case['histo']} histology file(s), {case['kb']} kB.", "",
        "| clients | requests | req/s | p50 s | p95 s | p99 s | status codes | 5xx | "
        "RSS before MB | RSS after MB | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["levels"]:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(row["statuses"].items()))
        lines.append(f"| {row['clients']} | {row['requests']} | {row['requests_per_s']} | "
                     f"{row['p50_s']} | {row['p95_s']} | {row['p99_s']} | {codes} | "
                     f"{row['server_5xx']} | {row['rss_before_mb']} | {row['rss_after_mb']} | "
                     f"{row['rss_peak_mb']} |")
    slow = report["slow"]
    lines += ["", f"Slow clients: {slow['slow_clients']} sending a byte a second against a "
              f"{slow['body_timeout_s']:g} s body deadline; the server closed them after "
              f"{slow['held_median_s']:.1f} s (median), {slow['held_max_s']:.1f} s at most "
              f"(bound {bound:g} s), answering {slow['status_lines']}. Meanwhile normal "
              f"cases: {slow['normal_statuses']} (p50 {slow['normal_p50_s']:.2f} s).", "",
              f"Server RSS {report['rss_start_mb']} MB at start, {report['rss_end_mb']} MB at "
              f"the end; serving afterwards: {report['serving_after']}. "
              f"Result: {'passed' if report['passed'] else 'FAILED'}.", ""]
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
