"""Training algorithms, one registered class per file, one contract (:class:`Algorithm`).

Each built-in is imported here by name, which registers it; a new algorithm is one file
with one ``@register_algorithm`` class (its name and settings on the class), imported
before the config that names it is read.
"""

from radpath.algorithms import coral, erm, groupdro, irm, mixstyle, paper  # noqa: F401
from radpath.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "register_algorithm"]
