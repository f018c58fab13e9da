"""Whole slides above the reader (``radpath.data.wsi``): tissue detection, patch grids,
catalogues, cached features, sharding and slide bags.

Import the submodules (``radpath.slides.grid``, ...): this package imports nothing heavy
itself, so ``import radpath`` stays light.
"""
