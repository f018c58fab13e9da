"""IRMv1 (Arjovsky et al. 2019) for binary logits, with DomainBed's schedule.

IRMv1 asks that the classifier be optimal in every training domain at once. Its penalty
is the squared gradient of a domain's risk with respect to a dummy multiplicative scale
``w`` on the logits, taken at ``w = 1``: zero when rescaling the logits cannot lower that
domain's risk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F


def _scale_gradient(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d/dw of the mean BCE-with-logits of ``w * logits`` at ``w = 1``, kept differentiable."""
    scale = torch.ones((), device=logits.device, dtype=logits.dtype, requires_grad=True)
    risk = F.binary_cross_entropy_with_logits(logits * scale, targets)
    return torch.autograd.grad(risk, [scale], create_graph=True)[0]


Estimator = Literal["squared", "split"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"IRM estimator must be one of {ESTIMATORS}, got {estimator!r}")


def irm_penalty(logits: torch.Tensor, targets: torch.Tensor, *,
                estimator: Estimator = "squared") -> torch.Tensor:
    """The IRMv1 penalty of one domain for binary logits.

    ``squared`` (Arjovsky et al.) is the square of the batch gradient: a biased estimate
    of the squared expected gradient (it adds the gradient's variance over the batch),
    never negative. ``split`` (DomainBed) multiplies the gradients of the even and odd
    halves: unbiased, but it can be negative, and a network trained on the same split
    for many steps can learn to make it so (see :class:`~radpath.algorithms.irm.IrmSettings`).
    With a single example there is no split and the squared gradient is returned.

    Args:
        logits: (N,) or (N, 1) binary logits.
        targets: targets of the same number of elements, in [0, 1].
        estimator: ``squared`` or ``split``.

    Returns:
        The scalar penalty, differentiable with respect to ``logits``.
    """
    logits = logits.reshape(-1)
    targets = targets.reshape(-1).to(logits.dtype)
    if logits.shape != targets.shape:
        raise ValueError(f"logits ({logits.numel()}) and targets ({targets.numel()}) "
                         "must have as many elements")
    if logits.numel() == 0:
        return logits.sum() * 0.0
    _check_estimator(estimator)
    if logits.numel() == 1 or estimator == "squared":
        return _scale_gradient(logits, targets).pow(2)
    grad_even = _scale_gradient(logits[0::2], targets[0::2])
    grad_odd = _scale_gradient(logits[1::2], targets[1::2])
    return grad_even * grad_odd


def irm_penalty_by_domain(logits: torch.Tensor, targets: torch.Tensor, domains: torch.Tensor,
                          mask: torch.Tensor | None = None, *,
                          num_domains: int | None = None,
                          estimator: Estimator = "squared") -> torch.Tensor:
    """The mean IRMv1 penalty over the domains present in the batch.

    :func:`irm_penalty` of each domain's examples (in batch order), computed for all
    domains at once: for binary cross-entropy the gradient of the risk with respect to the
    logit scale has the closed form ``mean((sigmoid(z) - y) * z)``, so no example is
    selected by a mask and nothing waits for the device.

    Args:
        logits: (N,) or (N, 1) binary logits.
        targets: (N,) targets in [0, 1]; NaN marks an unknown target.
        domains: (N,) domain indices; -1 (no such modality) is ignored.
        mask: optional (N,) bool, False for examples to ignore (e.g. unknown labels).
        num_domains: how many domain indices there are (the algorithm's vocabulary);
            None reads it from ``domains``, which waits for the device.
        estimator: ``squared`` or ``split``, as in :func:`irm_penalty`.

    Returns:
        The scalar mean penalty; a zero attached to ``logits`` when no domain is present.
    """
    _check_estimator(estimator)
    logits = logits.reshape(-1)
    targets = targets.reshape(-1).to(logits.dtype)
    domains = domains.reshape(-1)
    keep = (domains >= 0) & ~torch.isnan(targets)
    if mask is not None:
        keep &= mask.reshape(-1).bool()
    if num_domains is None:
        num_domains = int(domains.max()) + 1 if domains.numel() else 0
    indices = torch.arange(max(num_domains, 1), device=domains.device)
    member = ((domains[:, None] == indices) & keep[:, None]).to(logits.dtype)  # (N, K)
    slopes = torch.where(keep, (torch.sigmoid(logits) - targets.nan_to_num()) * logits, 0.0)
    total = member.sum(dim=0)
    per_domain = (torch.einsum("nk,n->k", member, slopes) / total.clamp(min=1)) ** 2
    if estimator == "split":
        # DomainBed's unbiased even x odd product; one example has only its squared gradient.
        rank = (member.cumsum(0) * member).sum(1) - 1  # place among its domain's examples
        odd = (rank.remainder(2) == 1).to(logits.dtype)[:, None]
        halves = torch.stack([member * (1 - odd), member * odd])  # (2, N, K): even, odd
        half_grads = (torch.einsum("hnk,n->hk", halves, slopes)
                      / halves.sum(dim=1).clamp(min=1))
        per_domain = torch.where(total >= 2, half_grads[0] * half_grads[1], per_domain)
    present = (total > 0).to(logits.dtype)
    return (per_domain * present).sum() / present.sum().clamp(min=1)


@dataclass(frozen=True)
class IrmSchedule:
    """DomainBed's IRM penalty schedule.

    The penalty weight is 1 for the first ``anneal_steps`` updates, so the model first
    learns a useful predictor, then jumps to ``weight``. The jump changes the loss scale
    by orders of magnitude, and Adam's moment estimates from before it are stale:
    DomainBed therefore builds a fresh Adam optimiser at the step where
    :meth:`just_annealed` is True. An algorithm using this schedule should do the same.

    Attributes:
        weight: penalty weight (lambda) after annealing.
        anneal_steps: number of updates at weight 1.
    """

    weight: float = 100.0
    anneal_steps: int = 500

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"IRM weight must be non-negative, got {self.weight}")
        if self.anneal_steps < 0:
            raise ValueError(f"IRM anneal_steps must be non-negative, got {self.anneal_steps}")

    def weight_at(self, step: int) -> float:
        """The penalty weight at update ``step`` (0-based)."""
        return self.weight if step >= self.anneal_steps else 1.0

    def just_annealed(self, step: int) -> bool:
        """True at the first update with the full weight, when the optimiser is reset.

        Never True when ``anneal_steps`` is 0: a fresh optimiser needs no reset.
        """
        return self.anneal_steps > 0 and step == self.anneal_steps


def check_domains(domain_names: Sequence[str]) -> None:
    """Raise ValueError unless the training data holds at least two domains.

    With one domain the IRM penalty is a plain regulariser of the logit scale, not an
    invariance constraint, and a run would silently train something else than asked.

    Args:
        domain_names: the domain of every training unit, or the distinct domains.
    """
    distinct = sorted(set(domain_names))
    if len(distinct) < 2:
        listed = f": {', '.join(distinct)}" if distinct else ""
        raise ValueError("IRM needs at least two domains in the training data; "
                         f"found {len(distinct)}{listed}")
