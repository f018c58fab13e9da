"""The synthetic CAMELYON layouts live in the library (the viewer demo uses them too)."""

from radpath.slides.synthetic_layouts import asap_xml, camelyon16, camelyon17, square

__all__ = ["asap_xml", "camelyon16", "camelyon17", "square"]
