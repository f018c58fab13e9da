"""Training objectives: cross-modal contrastive loss, IRM, DG baselines, ordinal grading."""

from radpath.objectives.contrastive import SymmetricInfoNCE, pseudo_pair_mask
from radpath.objectives.dg import (
    GroupDRO,
    coral_distance,
    coral_penalty,
    group_dro_weights,
    split_by_domain,
)
from radpath.objectives.irm import IrmSchedule, check_domains, irm_penalty, irm_penalty_by_domain
from radpath.objectives.ordinal import (
    ordinal_loss,
    ordinal_predict,
    ordinal_probabilities,
    ordinal_targets,
)

__all__ = [
    "GroupDRO",
    "IrmSchedule",
    "SymmetricInfoNCE",
    "check_domains",
    "coral_distance",
    "coral_penalty",
    "group_dro_weights",
    "irm_penalty",
    "irm_penalty_by_domain",
    "ordinal_loss",
    "ordinal_predict",
    "ordinal_probabilities",
    "ordinal_targets",
    "pseudo_pair_mask",
    "split_by_domain",
]
