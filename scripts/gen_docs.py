"""Regenerate the generated parts of the docs: ``make docs`` runs it.

- ``docs/reference/configuration.md``, from the pydantic config models;
- the results table of ``README.md`` and ``docs/results.md`` (between the
  ``<!-- results:begin -->`` and ``<!-- results:end -->`` markers), from
  ``benchmarks/results``;
- the benchmark tables copied into docs pages between ``<!-- NAME:begin -->`` and
  ``<!-- NAME:end -->`` markers (``COPIED_TABLES``), from ``benchmarks/results/NAME.md``.

``--check`` writes nothing and exits 1, naming each stale file, when any differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import config_reference  # noqa: E402
import results_table  # noqa: E402

CONFIG_PAGE = ROOT / "docs" / "reference" / "configuration.md"
TABLE_PAGES = (ROOT / "README.md", ROOT / "docs" / "results.md")
COMMAND = ".venv/bin/python scripts/gen_docs.py (or make docs)"
RESULTS = ROOT / "benchmarks" / "results"
# page -> the results tables (benchmarks/results/NAME.md) copied into it, title dropped.
COPIED_TABLES = {ROOT / "docs" / "domain-generalisation.md":
                 ("colored_digits", "synthetic_lodo", "tta_nuisance")}


def expected() -> dict[Path, str]:
    """Each generated file's content as it should be now."""
    files = {CONFIG_PAGE: config_reference.render()}
    table = results_table.render()
    for page in TABLE_PAGES:
        files[page] = with_block(page.read_text(), table, page, "results")
    for page, names in COPIED_TABLES.items():
        text = files.get(page, page.read_text())
        for name in names:
            text = with_block(text, results_body(name), page, name)
        files[page] = text
    return files


def results_body(name: str) -> str:
    """``benchmarks/results/NAME.md`` without its title line, up to its first ``## ``
    section (the per-seed detail stays in the file)."""
    lines = (RESULTS / f"{name}.md").read_text().splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    sections = [i for i, line in enumerate(lines) if line.startswith("## ")]
    return "\n".join(lines[:sections[0]] if sections else lines).strip() + "\n"


def with_block(text: str, block: str, page: Path, name: str) -> str:
    """``text`` with the part between the ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``
    markers replaced by ``block``."""
    begin, end_marker = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    start, end = text.find(begin), text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(f"{page}: the markers {begin} ... {end_marker} are missing")
    return f"{text[:start + len(begin)]}\n{block}{text[end:]}"


def stale() -> list[Path]:
    """The generated files whose content differs from what the sources give now."""
    return [path for path, content in expected().items()
            if not path.is_file() or path.read_text() != content]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale files only")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path.relative_to(ROOT)}; regenerate with {COMMAND}")
        return 1 if outdated else 0
    for path, content in expected().items():
        if not path.is_file() or path.read_text() != content:
            path.write_text(content)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
