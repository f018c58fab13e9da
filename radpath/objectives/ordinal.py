"""Ordinal regression for pathological grading (CORAL, Cao, Mirjalili & Raschka 2020).

A grade in ``0 .. K-1`` becomes ``K - 1`` binary questions "is the grade above k?", each
answered by one logit. The loss is the binary cross-entropy of these answers; the
predicted grade is the number of questions answered yes. Whatever ordered label a cohort
provides (BACH's 4 classes, CAMELYON17's pN stage) fits this head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")


def ordinal_targets(grade: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cumulative binary targets: ``target[:, k] = grade > k`` for ``k < K - 1``.

    Args:
        grade: (B,) grades in ``0 .. K-1`` (-1 for unknown gives all zeros).
        num_classes: the number of grades K.

    Returns:
        A (B, K-1) float tensor.
    """
    _check_num_classes(num_classes)
    thresholds = torch.arange(num_classes - 1, device=grade.device)
    return (grade[:, None] > thresholds).float()


def ordinal_loss(logits: torch.Tensor, grade: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CORAL loss: BCE summed over the thresholds, averaged over units with a known grade.

    Summing over thresholds (as Cao et al. do) weights a grade two steps off twice as much
    as one step off.

    Args:
        logits: (B, K-1) threshold logits.
        grade: (B,) grades, -1 for unknown.
        num_classes: the number of grades K.

    Returns:
        The scalar loss; a zero attached to ``logits`` when no grade is known.
    """
    _check_num_classes(num_classes)
    if logits.ndim != 2 or logits.shape != (len(grade), num_classes - 1):
        raise ValueError(f"logits must be ({len(grade)}, {num_classes - 1}), "
                         f"got {tuple(logits.shape)}")
    known = grade >= 0
    if bool((grade[known] >= num_classes).any()):
        raise ValueError(f"grades must be below num_classes={num_classes}, "
                         f"got {int(grade.max())}")
    if not bool(known.any()):
        return logits.sum() * 0.0
    targets = ordinal_targets(grade[known], num_classes).to(logits.dtype)
    per_threshold = F.binary_cross_entropy_with_logits(logits[known], targets, reduction="none")
    return per_threshold.sum(1).mean()


def ordinal_predict(logits: torch.Tensor) -> torch.Tensor:
    """The predicted grade: the number of thresholds with probability above 0.5.

    Args:
        logits: (B, K-1) threshold logits.

    Returns:
        A (B,) long tensor of grades in ``0 .. K-1``.
    """
    return (logits > 0).sum(dim=1)


def ordinal_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Class probabilities from the cumulative ones ``P(grade > k) = sigmoid(logit_k)``.

    ``P(grade = k) = P(grade > k - 1) - P(grade > k)``. A head whose thresholds are not
    rank-consistent can make a difference negative: it is clamped at 0 and the row
    renormalised.

    Args:
        logits: (B, K-1) threshold logits.

    Returns:
        A (B, K) tensor of probabilities, each row summing to 1.
    """
    above = torch.sigmoid(logits)
    ones = torch.ones_like(above[:, :1])
    cumulative = torch.cat([ones, above, torch.zeros_like(ones)], dim=1)
    probs = (cumulative[:, :-1] - cumulative[:, 1:]).clamp(min=0)
    # A row is all zero only if every difference was clamped, which the telescoping sum
    # of 1 forbids; the floor guards the division all the same.
    return probs / probs.sum(dim=1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
