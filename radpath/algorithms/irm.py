"""Invariant risk minimisation (IRMv1, Arjovsky et al. 2019), per modality and domain."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.algorithms.base import (
    MODALITIES,
    Algorithm,
    Batch,
    malignancy_target,
    register_algorithm,
)
from radpath.objectives.irm import (
    Estimator,
    IrmSchedule,
    check_domains,
    irm_penalty_by_domain,
)


class IrmSettings(BaseModel):
    """IRMv1 (DomainBed defaults scaled to short runs), ``algorithm.irm``; the paper's
    algorithm reads them too."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(10.0, ge=0, description="penalty weight after annealing")
    anneal_steps: int = Field(100, ge=0, description="steps with weight 1 before the jump")
    # DomainBed's unbiased even x odd product can be negative; trained full-batch on one
    # split, a network learns to make it so and the penalty rewards instead of constraining
    # (benchmarks/colored_digits.py: test accuracy 0.41 with it against 0.69 squared).
    estimator: Estimator = Field(
        "squared", description="squared batch gradient (Arjovsky et al.) or even x odd "
                               "halves' product (DomainBed)")


def irm_term(algorithm: Algorithm, out: dict[str, Tensor], batch: Batch) -> Tensor:
    """The IRM penalty of each modality's logits across that modality's domains, summed
    over the labelled units having the modality."""
    penalty = out["fused_logit"].sum() * 0.0
    labelled = batch["label"] >= 0
    for modality in MODALITIES:
        penalty = penalty + irm_penalty_by_domain(
            out[f"{modality}_logit"], malignancy_target(batch, modality),
            batch[f"{modality}_domain"],
            labelled & batch[f"has_{modality}"].bool(), num_domains=len(algorithm.domains),
            estimator=algorithm.config.irm.estimator)
    return penalty


class IrmMixin:
    """The IRM penalty with DomainBed's annealing: weight 1, then ``irm.weight``."""

    def _init_irm(self: Algorithm) -> None:
        check_domains(self.domains)
        settings = self.config.irm
        self.irm_schedule = IrmSchedule(weight=settings.weight, anneal_steps=settings.anneal_steps)

    def irm_weight(self: Algorithm) -> float:
        return self.irm_schedule.weight_at(self.steps_taken())

    def rescale(self: Algorithm, total: Tensor) -> Tensor:
        # As in the IRM authors' code: keep the gradient scale stable once the weight jumps.
        weight = self.irm_weight()
        return total / weight if weight > 1.0 else total


@register_algorithm
class IRM(IrmMixin, Algorithm):
    """ERM plus the IRMv1 penalty across domains."""

    name = "irm"
    settings = IrmSettings

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._init_irm()

    def extra_terms(self, out, batch):
        return {"irm": (self.irm_weight(), irm_term(self, out, batch))}
