"""TENT: test-time entropy minimisation (Wang et al., ICLR 2021), for LayerNorm ViTs.

TENT adapts only the affine parameters of the normalisation layers, by minimising the
entropy of the model's own predictions on each test batch. The original adapts BatchNorm
(and re-estimates its statistics); a ViT has LayerNorm, which keeps no batch statistics,
so here only the LayerNorm scales and shifts move. By default those of the shared encoder
and its modality adapters (``norm_scope="backbone"``), every other weight frozen.

The loss is the mean binary entropy of the malignancy probabilities: the fused head for
every unit, and each per-modality head (of ``config.modalities``) for the units that have
that modality. ``config.steps`` optimiser steps are taken per batch, then the batch is
predicted with the adapted weights.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radpath.adapt.base import Batch, TTAMethod, register_tta


def layernorm_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The affine ``weight`` and ``bias`` of every LayerNorm in ``module``, with names.

    Names are relative to ``module``; LayerNorms without affine parameters are skipped.
    timm's own ``LayerNorm`` subclasses ``nn.LayerNorm`` and is found too.
    """
    found = []
    for prefix, child in module.named_modules():
        if isinstance(child, nn.LayerNorm):
            for name, param in child.named_parameters(recurse=False):
                found.append((f"{prefix}.{name}" if prefix else name, param))
    return found


def configure_layernorm(algorithm: nn.Module, scope: str = "backbone") -> list[nn.Parameter]:
    """Freeze ``algorithm`` except the LayerNorm affine parameters in ``scope``.

    Args:
        algorithm: an algorithm whose ``model`` is a ``CrossModalModel``.
        scope: ``backbone`` (encoder and modality adapters) or ``model`` (also heads).

    Returns:
        The parameters left trainable.
    """
    algorithm.requires_grad_(False)
    root = algorithm.model.backbone if scope == "backbone" else algorithm.model
    params = [param for _, param in layernorm_parameters(root)]
    for param in params:
        param.requires_grad_(True)
    return params


def binary_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), elementwise and stable for any logit.

    ``H = -p log p - (1 - p) log(1 - p) = softplus(z) - z sigmoid(z)``.
    """
    return F.softplus(logits) - logits * torch.sigmoid(logits)


def head_entropies(out: Mapping[str, Tensor], batch: Batch,
                   modalities: tuple[str, ...]) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-unit entropies of the malignancy heads, and which units they count for.

    Returns:
        ``{head: (entropy (B,), mask (B,) bool)}`` for ``fused`` (units with any
        modality) and each of ``modalities`` (units having it).
    """
    has = {m: batch[f"has_{m}"].bool() for m in ("mammo", "histo")}
    terms = {"fused": (binary_entropy(out["fused_logit"]), has["mammo"] | has["histo"])}
    for modality in modalities:
        terms[modality] = (binary_entropy(out[f"{modality}_logit"]), has[modality])
    return terms


def entropy_loss(terms: Mapping[str, tuple[Tensor, Tensor]],
                 keep: Mapping[str, Tensor] | None = None) -> Tensor | None:
    """Mean entropy over every (unit, head) selected by the masks, and ``keep`` if given.

    Returns:
        The loss, or None when nothing is selected (no step should be taken).
    """
    selected = []
    for head, (entropy, mask) in terms.items():
        if keep is not None and head in keep:
            mask = mask & keep[head]
        selected.append(entropy[mask])
    values = torch.cat(selected)
    return values.mean() if values.numel() else None


@register_tta
class Tent(TTAMethod):
    """Entropy minimisation on the LayerNorm affine parameters (see the module docstring)."""

    name = "tent"

    def trainable_parameters(self) -> list[nn.Parameter]:
        return configure_layernorm(self.algorithm, self.config.norm_scope)

    def entropy_terms(self, batch: Batch) -> tuple[dict[str, Tensor],
                                                   dict[str, tuple[Tensor, Tensor]]]:
        """The model outputs on ``batch`` (with gradients) and their head entropies."""
        out = self.algorithm(batch)
        return out, head_entropies(out, batch, self.config.modalities)

    def adapt_batch(self, batch: Batch) -> dict[str, Tensor]:
        for _ in range(self.config.steps):
            _, terms = self.entropy_terms(batch)
            loss = entropy_loss(terms)
            if loss is None:
                break
            self.step(loss)
        return self.algorithm.predict(batch)
