"""The batch contract between ``data/`` and ``models/``: what one training or prediction
batch holds, and how manifest records become it.

* :mod:`~radpath.batch.keys`: the keys, their shapes and the label, pairing and side codes;
* :mod:`~radpath.batch.tensors`: normalisation constants, tile tensors, lesion maps,
  the rows of the images that exist;
* :mod:`~radpath.batch.units`: records grouped into units (pairs or single patients);
* :mod:`~radpath.batch.dataset`: the patient-bag dataset and its settings;
* :mod:`~radpath.batch.collate`: padding items into one batch;
* :mod:`~radpath.batch.sampler`: domain- and label-balanced, epoch-tagged sampling.
"""
