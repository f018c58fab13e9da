"""The training fixtures live in tests/conftest.py; REPO stays importable from here."""

from tests.conftest import REPO_ROOT as REPO

__all__ = ["REPO"]
