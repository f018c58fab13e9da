"""Data: manifests, dataset adapters, image reading, preprocessing, pairing, splits, cache."""
