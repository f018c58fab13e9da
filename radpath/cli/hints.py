"""Commands that the CLI suggests, spelt so that they run where they are printed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def radpath_command() -> str:
    """How to call radpath from the user's shell: ``radpath`` when that name finds this
    very program on PATH, else the path of the program that is running (``make demo``
    runs ``.venv/bin/radpath`` without activating the environment)."""
    running = Path(sys.argv[0])
    if running.name != "radpath":  # python -m radpath
        return f"{_shown(Path(sys.executable))} -m radpath"
    found = shutil.which("radpath")
    if found and _same(Path(found), running):
        return "radpath"
    return _shown(running)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else absolute."""
    return _shown(Path(path))


def _shown(path: Path) -> str:
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
