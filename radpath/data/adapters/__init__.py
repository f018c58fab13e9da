"""Dataset adapters, one registered class per source layout.

Importing this package registers every built-in adapter.
"""

from importlib import import_module

from radpath.data.adapters.base import ADAPTERS, AdapterOptions, DatasetAdapter, Skipped

_BUILTIN = ("mias", "cbis_ddsm", "breakhis", "ucsb", "folder", "csv_manifest", "inbreast", "bach",
            "camelyon16", "camelyon17")


def _register_builtins() -> None:
    for module in _BUILTIN:
        try:
            import_module(f"radpath.data.adapters.{module}")
        except ModuleNotFoundError as exc:  # an adapter still being written must not break others
            if exc.name != f"radpath.data.adapters.{module}":
                raise


_register_builtins()

__all__ = ["ADAPTERS", "AdapterOptions", "DatasetAdapter", "Skipped"]
