"""Objectives of the extra domain-generalisation baselines: Deep CORAL and Group DRO.

Both follow DomainBed's implementations so that radpath's baselines compare on the same
footing as the published ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def split_by_domain(features: torch.Tensor, domains: torch.Tensor) -> list[torch.Tensor]:
    """The rows of ``features`` grouped by domain, ignoring domain -1, in domain order.

    Args:
        features: (N, ...) per-example tensors.
        domains: (N,) domain indices.
    """
    return [features[domains == d] for d in torch.unique(domains[domains >= 0]).tolist()]


def _mean_and_covariance(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row mean and unbiased covariance of (N, D) features (zero covariance when N = 1)."""
    mean = x.mean(0, keepdim=True)
    centred = x - mean
    return mean, centred.T @ centred / max(len(x) - 1, 1)


def coral_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Deep CORAL distance between two (N, D) feature sets.

    The mean squared difference of the means plus that of the covariances, as DomainBed
    computes it (the original CORAL loss uses the covariance term only).
    """
    mean_x, cov_x = _mean_and_covariance(x)
    mean_y, cov_y = _mean_and_covariance(y)
    return (mean_x - mean_y).pow(2).mean() + (cov_x - cov_y).pow(2).mean()


def coral_penalty(features_by_domain: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean Deep CORAL distance (Sun & Saenko 2016) over all pairs of domains.

    Args:
        features_by_domain: one (N_d, D) feature tensor per domain; empty ones are skipped.

    Returns:
        The scalar penalty; 0 for identical distributions, and a zero attached to the
        features when fewer than two domains have examples.
    """
    present = [f.flatten(1) for f in features_by_domain if len(f) > 0]
    if len(present) < 2:
        if not features_by_domain:
            raise ValueError("coral_penalty needs a list of per-domain features, got none")
        return sum(f.sum() for f in features_by_domain) * 0.0
    distances = [coral_distance(present[i], present[j])
                 for i in range(len(present)) for j in range(i + 1, len(present))]
    return torch.stack(distances).mean()


def group_dro_weights(losses_per_group: torch.Tensor, q: torch.Tensor, eta: float,
                      present: torch.Tensor | None = None) -> torch.Tensor:
    """One exponentiated-gradient step of Group DRO's group weights (Sagawa et al. 2020).

    ``q_g <- q_g * exp(eta * loss_g)``, renormalised to sum to 1. Computed in log space so
    that many steps with large losses never overflow.

    Args:
        losses_per_group: (G,) mean loss of each group on the batch (detached here).
        q: (G,) current weights, positive and summing to 1.
        eta: step size (DomainBed's ``groupdro_eta``, default 1e-2).
        present: optional (G,) bool; absent groups keep their relative weight.

    Returns:
        The new (G,) weights, summing to 1.
    """
    if losses_per_group.shape != q.shape or q.ndim != 1:
        raise ValueError(f"losses_per_group {tuple(losses_per_group.shape)} and q "
                         f"{tuple(q.shape)} must both be (G,)")
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    step = eta * losses_per_group.detach().to(q.dtype)
    if present is not None:
        step = torch.where(present.bool(), step, torch.zeros_like(step))
    return torch.softmax(q.log() + step, dim=0)


class GroupDRO(nn.Module):
    """Group DRO's robust loss: updates the group weights, then weights the group losses.

    The weights live in a buffer so they are checkpointed and follow the module's device.

    Args:
        num_groups: number of groups (training domains).
        eta: exponentiated-gradient step size.
    """

    def __init__(self, num_groups: int, eta: float = 1e-2) -> None:
        super().__init__()
        if num_groups < 1:
            raise ValueError(f"num_groups must be at least 1, got {num_groups}")
        self.eta = eta
        self.register_buffer("q", torch.full((num_groups,), 1.0 / num_groups))

    def forward(self, losses_per_group: torch.Tensor,
                present: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``sum_g q_g * loss_g``, after updating ``q`` when training.

        Args:
            losses_per_group: (G,) mean loss of each group; absent groups may hold any
                finite value and are masked by ``present``.
            present: optional (G,) bool of the groups with examples in the batch.
        """
        if self.training:
            self.q = group_dro_weights(losses_per_group, self.q, self.eta, present)
        weighted = self.q * losses_per_group
        if present is not None:
            weighted = torch.where(present.bool(), weighted, torch.zeros_like(weighted))
        return weighted.sum()
