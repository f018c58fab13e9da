"""radpath: domain-generalised cross-modal learning on mammography and histopathology.

Importing the package stays light: no torch, no CLI, no web server.
"""

__version__ = "0.1.0"

from radpath.errors import ImageReadError, ManifestError, RadpathError

__all__ = ["ImageReadError", "ManifestError", "RadpathError", "__version__"]
