"""Typed settings of the training algorithms (every field has a default and a reason)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from radpath.registry import nest_settings

# Keys of configs written before each algorithm's settings moved beside it.
RENAMED = {"coral_weight": "coral.weight", "groupdro_eta": "groupdro.eta",
           "temperature": "paper.temperature"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LossWeights(_Strict):
    """Multi-task weights; a zero weight switches the term off.

    ``histo_tiles`` weighs a tile-level loss: every H&E tile, through the histology head,
    against its unit's label. H&E images of these cohorts are regions of interest whose
    tiles mostly share the image's diagnosis, so each tile is a (noisy) labelled example:
    many more than one per bag, which a small cohort needs.

    ``mammo_views`` weighs a film-level loss: every mammogram view whose own label is known
    (batch key ``mammo_view_label``), through the mammography head, against that label.
    A patient's label says only that *some* film is malignant; where the manifest labels
    each film (MIAS, CBIS-DDSM), the film that holds the finding is known and the other is
    a labelled negative.
    """

    mammo: float = Field(1.0, ge=0, description="the mammography malignancy term")
    histo: float = Field(1.0, ge=0, description="the H&E malignancy term")
    fused: float = Field(1.0, ge=0, description="the fused malignancy term")
    grade: float = Field(0.5, ge=0, description="the ordinal grading term")
    localisation: float = Field(0.5, ge=0, description="the localisation term")
    contrastive: float = Field(0.5, ge=0, description="the contrastive alignment term (paper)")
    histo_tiles: float = Field(0.0, ge=0, description="the tile-level H&E term (see above)")
    mammo_views: float = Field(0.0, ge=0, description="the film-level mammography term (see above)")


class TileMixSettings(_Strict):
    """Mixup or CutMix of H&E tiles across labelled units, with soft targets (off at p 0).

    DeiT's remedy for a ViT trained from scratch on too few images; see
    :mod:`radpath.augment.tilemix`.
    """

    p: float = Field(0.0, ge=0, le=1, description="probability of mixing a batch")
    alpha: float = Field(0.4, gt=0, description="Beta(alpha, alpha) weight of a unit's own tiles")
    mode: Literal["mixup", "cutmix"] = Field(
        "mixup", description="blend two tiles, or paste a box of one into the other")


class AlgorithmConfig(_Strict):
    """Which algorithm trains the model, and its hyperparameters.

    Attributes:
        name: a registered algorithm: ``erm``, ``irm``, ``mixstyle``, ``coral``,
            ``groupdro`` or ``paper`` (contrastive + MixStyle + IRM).
        irm, mixstyle, coral, groupdro, paper, ...: each registered algorithm's own
            settings, declared in its file (``IrmSettings`` in ``algorithms/irm.py``...),
            nested under its name; every one is present, with its defaults where the
            config gives none.
        lesion_supervision: train the localisation head on lesion circles where the
            manifest has them (else it learns weakly, from image labels only).
        localisation_target: what the localisation head's weak, patient-level term asks
            of the most suspicious view: ``malignant`` (a malignancy map), or ``finding``
            (any benign or malignant finding; normal patients are the negatives), the same
            question the lesion circles answer, which mark benign lesions as well.
        mammo_target: what the mammography malignancy score is trained against:
            ``malignant`` (malignant against the rest), or ``ordinal`` (the same, plus
            "any finding?" asked of the same score at a learnt lower cut point, the
            normal < benign < malignant order as CORAL ties its thresholds to one score):
            a film's finding is a question more of the cohort's films answer than its
            malignancy, and the malignancy probability stays the sigmoid of the score.
        tile_mix: mixup or CutMix of H&E tiles across units; the H&E, tile and fused
            malignancy terms (and IRM's and Group DRO's H&E terms) then take the mixed
            target of each unit's tiles, while the contrastive term (``paper``) still
            masks by the units' own labels.
    """

    # Extra keys are the algorithms' settings, each checked by _nest against its class.
    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = "erm"
    weights: LossWeights = LossWeights()
    lesion_supervision: bool = True
    localisation_target: Literal["malignant", "finding"] = "malignant"
    mammo_target: Literal["malignant", "ordinal"] = "malignant"
    tile_mix: TileMixSettings = TileMixSettings()

    @model_validator(mode="before")
    @classmethod
    def _nest(cls, data: Any) -> Any:
        from radpath.algorithms import ALGORITHMS  # the built-ins register on import

        return nest_settings(data, ALGORITHMS, "algorithm", cls.model_fields, RENAMED)
