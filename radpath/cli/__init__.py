"""The ``radpath`` command line. Kept apart from the library: ``import radpath`` never loads it."""
