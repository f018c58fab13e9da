"""Whole-slide images: reading, tissue detection, patch grids, slide bags and heatmaps.

Import the submodules (``radpath.slides.reader``, ``.grid``, ...): this package imports
nothing heavy itself, so ``import radpath`` stays light.
"""
