"""Training algorithms, one registered class per file, one contract (:class:`Algorithm`)."""

from importlib import import_module

from radpath.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

for _module in ("erm", "irm", "mixstyle", "coral", "groupdro", "paper"):
    import_module(f"radpath.algorithms.{_module}")

__all__ = ["ALGORITHMS", "Algorithm", "register_algorithm"]
