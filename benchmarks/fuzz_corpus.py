"""The whole fuzz corpus (``tests/fuzz_corpus.py``, ~1,300 files) through ingest and the
service: where each file ended, what preprocessing said of those admitted, and how the
service answered each one. Any unaccounted file, admitted file that preprocessing refuses,
or answer other than 200 / JSON 4xx fails the run.

    python benchmarks/fuzz_corpus.py                 # trains a tiny run first (a minute)
    python benchmarks/fuzz_corpus.py --run RUN --seeds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fuzz_corpus import audit_ingest, audit_service, make_corpus, samples  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=None,
                        help="run folder to serve (default: train a tiny synthetic one)")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per (format, corruption)")
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--no-service", action="store_true", help="ingest only")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" /
                        "fuzz_corpus", help="results file stem (.md and .json)")
    return parser.parse_args(argv)


def _serve_load():
    spec = importlib.util.spec_from_file_location("serve_load", REPO / "benchmarks" /
                                                  "serve_load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _corruption(path: Path) -> str:
    name = path.name.lstrip(".")
    for item in _KNOWN:
        if name.startswith(f"{item[0]}-{item[1]}-"):
            return item[1]
    return "?"


_KNOWN: list[tuple[str, str]] = []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _KNOWN.extend(sorted({(s.fmt, s.corruption) for s in samples(1)},
                         key=lambda fc: -len(fc[0]) - len(fc[1])))
    with tempfile.TemporaryDirectory(prefix="radpath-fuzz-") as scratch:
        scratch = Path(scratch)
        root = scratch / "corpus"
        started = time.perf_counter()
        files = [p.resolve() for p in make_corpus(root, seeds=args.seeds)]
        audits = {m: audit_ingest(root, m, scratch / "out", workers=args.workers)
                  for m in ("mammo", "histo")}
        ingest_s = time.perf_counter() - started
        answers = {} if args.no_service else _service(args, scratch, root)
        report = _report(files, audits, answers, ingest_s)
    _write_report(report, args.out)
    print(args.out.with_suffix(".md").read_text())
    return 0 if report["passed"] else 1


def _service(args: argparse.Namespace, scratch: Path, root: Path) -> dict:
    from fastapi.testclient import TestClient

    from radpath.serve import create_app

    load = _serve_load()
    run = args.run or load.tiny_run(scratch / "run")
    mammo, _ = load.synthetic_case()
    with TestClient(create_app(run, threads=1), raise_server_exceptions=False) as client:
        answers = audit_service(client, root, mammo)
        answers["__health__"] = (client.get("/v1/health").status_code, "")
    return answers


def _report(files: list[Path], audits: dict, answers: dict, ingest_s: float) -> dict:
    rows: dict[str, Counter] = defaultdict(Counter)
    for audit in audits.values():
        for path in audit.files:
            key = _corruption(path)
            rows[key]["files"] += 1
            rows[key]["admitted" if path in audit.admitted else
                      "skipped" if path in audit.skipped else "unaccounted"] += 1
        for path in audit.preprocessing_failures:
            rows[_corruption(path)]["preprocessing_failures"] += 1
    for path, (status, kind) in answers.items():
        if path == "__health__":
            continue
        key = _corruption(Path(path).resolve())
        rows[key][f"http_{status}"] += 1
        if status >= 500 or not kind.startswith("application/json"):
            rows[key]["bad_answers"] += 1
    totals = sum(rows.values(), Counter())
    health = answers.get("__health__", (None, ""))[0]
    passed = (not totals["unaccounted"] and not totals["preprocessing_failures"]
              and not totals["bad_answers"] and (not answers or health == 200))
    return {"files": len(files), "ingest_and_preprocess_s": round(ingest_s, 1),
            "totals": dict(totals), "by_corruption": {k: dict(v) for k, v in sorted(rows.items())},
            "health_after": health, "passed": passed}


def _write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    statuses = sorted({k for row in report["by_corruption"].values() for k in row
                       if k.startswith("http_")})
    totals = report["totals"]
    lines = ["# Fuzz corpus through ingest and the service (`benchmarks/fuzz_corpus.py`)", "",
             f"{report['files']} files; ingest (2 workers) and preprocessing of the admitted "
             f"took {report['ingest_and_preprocess_s']} s. Unaccounted files: "
             f"{totals.get('unaccounted', 0)}; admitted files that preprocessing refused: "
             f"{totals.get('preprocessing_failures', 0)}; service answers other than 200 or a "
             f"JSON 4xx: {totals.get('bad_answers', 0)}; /v1/health afterwards: "
             f"{report['health_after']}. Result: {'passed' if report['passed'] else 'FAILED'}.",
             "", "| corruption | files | admitted | skipped | " +
             " | ".join(s.removeprefix("http_") for s in statuses) + " |",
             "|---|---|---|---|" + "---|" * len(statuses)]
    for name, row in report["by_corruption"].items():
        lines.append(f"| {name} | {row.get('files', 0)} | {row.get('admitted', 0)} | "
                     f"{row.get('skipped', 0)} | " +
                     " | ".join(str(row.get(s, 0)) for s in statuses) + " |")
    lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
