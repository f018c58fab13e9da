"""The patient batch: the one structure data, models, objectives and algorithms share.

A *unit* is what one batch row holds: a patient (both modalities when the patient has
both: a true pair), a pseudo-pair (a mammography patient and a histology patient with the
same label), or a single-modality patient. Missing modalities are all-zero with a False
``has_*`` flag; missing views/tiles are zero with a False ``*_mask`` entry.

Keys (B units, V mammogram views, T histology tiles):

=================  ======================  ==================================================
key                shape / dtype           meaning
=================  ======================  ==================================================
mammo              (B, V, 1, H, W) float   preprocessed mammograms, roughly zero-mean
mammo_mask         (B, V) bool             which views exist
histo              (B, T, 3, h, w) float   stain-normalised H&E tiles, ImageNet-normalised
histo_mask         (B, T) bool             which tiles exist
has_mammo          (B,) bool               the unit has at least one mammogram
has_histo          (B,) bool               the unit has at least one tile
label              (B,) long               0 normal, 1 benign, 2 malignant, -1 unknown
malignant          (B,) float              1.0 if label == 2 else 0.0 (ignored when unknown)
grade              (B,) long               ordinal grade 0..K-1, -1 when unknown
mammo_domain       (B,) long               domain index of the mammograms, -1 when absent
histo_domain       (B,) long               domain index of the tiles, -1 when absent
pairing            (B,) long               PAIRING_CODES: 0 unpaired, 1 true, 2 pseudo
lesion_map         (B, V, gh, gw) float    1 on patch-grid cells inside a lesion circle
lesion_known       (B, V) bool             the view has lesion annotations (its map is truth)
mammo_side         (B, V) long             laterality of each view: 0 left, 1 right, -1 unknown
                                           or absent (used by ``model.bilateral``)
mammo_view_label   (B, V) long             each view's own label (codes of ``label``), -1 when
                                           unknown or absent (``weights.mammo_views``)
mammo_rows         (M,) long               flat positions ``unit * V + view`` of the M views
                                           that exist in units that have mammograms
histo_rows         (N,) long               the same for the N tiles, ``unit * T + tile``
=================  ======================  ==================================================

The ``*_rows`` keys restate the masks as the collate function sees them on the host: a
model selects the images by them without reading a mask back from a GPU (the number of
rows is in their shape). They are optional; a batch built by hand may leave them out, and
one whose masks or ``has_*`` flags are changed must drop or recompute them.

Unit ids travel beside the tensors as ``unit_id`` (a list of strings).
"""

from __future__ import annotations

from radpath.data.manifest import PAIRING_MODES

LABEL_CODES = {"normal": 0, "benign": 1, "malignant": 2, "": -1}
# The one pairing vocabulary, the manifest's: "unpaired", "true", "pseudo". A record not
# yet paired has an empty field, which reads as unpaired.
UNPAIRED = "unpaired"
PAIRING_CODES = {UNPAIRED: 0, "true": 1, "pseudo": 2, "": 0}
assert set(PAIRING_CODES) - {""} == set(PAIRING_MODES)
MALIGNANT = LABEL_CODES["malignant"]

TENSOR_KEYS = (
    "mammo", "mammo_mask", "histo", "histo_mask", "has_mammo", "has_histo", "label",
    "malignant", "grade", "mammo_domain", "histo_domain", "pairing", "lesion_map",
    "lesion_known", "mammo_side", "mammo_view_label", "mammo_rows", "histo_rows",
)
SIDE_CODES = {"L": 0, "R": 1}
