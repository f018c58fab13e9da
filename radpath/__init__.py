"""radpath: domain-generalised cross-modal learning on mammography and histopathology.

Importing the package stays light: no torch, no CLI, no web server. The Python API
(:func:`radpath.train`, :func:`radpath.load`, :class:`radpath.Model`) lives in
:mod:`radpath.api` and is imported on first use.
"""

from typing import Any

__version__ = "0.1.0"

from radpath.errors import ImageReadError, ManifestError, RadpathError

# Names served by radpath.api, imported when first asked for (PEP 562).
_API = ("Model", "load", "load_config", "train")

__all__ = ["ImageReadError", "ManifestError", "Model", "RadpathError", "__version__", "load",
           "load_config", "train"]


def __getattr__(name: str) -> Any:
    if name in _API:
        from radpath import api

        return getattr(api, name)
    raise AttributeError(f"module 'radpath' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
