"""Data: manifests, dataset sources, image reading, preprocessing, pairing, splits, cache."""
