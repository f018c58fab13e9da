"""SAR-like safety layer on TENT (after Niu et al., "Towards stable test-time adaptation
in dynamic wild world", ICLR 2023).

Three safeguards over :mod:`radpath.adapt.tent`, for binary malignancy heads (C = 2
classes, so the largest possible entropy is ``ln 2`` nats):

* **reliable samples only**: a (unit, head) term joins the entropy loss only when its
  entropy is below ``e0 * ln 2`` (SAR: ``0.4 * ln C``). Near-0.5 predictions carry
  gradients that point anywhere, and are what drives collapse.
* **sharpness-aware step** (``sam=True``): SAR's SAM step (Foret et al. 2021): perturb the
  LayerNorm parameters by ``rho * g / ||g||``, recompute the filtered entropy there (the
  samples must pass the margin again), and step with that gradient from the unperturbed
  point. It costs a second forward and backward pass per step, so it is off by default.
* **reset on collapse**, two criteria, either restoring the source weights, optimiser and
  moving average before the batch is predicted:

  - the exponential moving average of the (filtered) loss,
    ``ema <- m * ema + (1 - m) * loss`` (``m = ema_momentum``, 0.9 as in SAR), falls
    below ``reset_threshold * ln 2``. SAR resets below an absolute 0.2 with 1000
    classes, i.e. 0.029 of ``ln C``; the default ``reset_threshold = 0.03`` keeps that
    fraction. (``0.2 * ln 2`` would reset any binary model whose reliable predictions
    average p > 0.97, which a good source model does on easy cases.)
  - the fused predictions collapse to one class: the batch held both predicted classes
    before this batch's adaptation and holds only one after it. (Requiring a change
    matters: a batch of screening patients that are all predicted normal is common and
    healthy; losing a class the source model saw is not.)

In episodic mode the moving average restarts with every batch, so the first criterion
reads "this batch's reliable entropy is already near zero: do not sharpen further".
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from radpath.adapt.base import Batch, TTAMethod, register_tta
from radpath.adapt.tent import Tent, entropy_loss

LN2 = math.log(2.0)  # ln C for C = 2 classes: the largest binary entropy, in nats


class SarSettings(BaseModel):
    """SAR's settings, ``tta.sar`` (the causal method's normalisation adaptation reads the
    collapse reset from here too).

    Attributes:
        e0: the entropy margin factor: only samples with entropy below ``e0 * ln 2``
            (binary heads, C = 2 classes) contribute.
        reset_threshold: reset to the source weights when the moving average of the
            (filtered) entropy loss falls below ``reset_threshold * ln 2``, a sign of
            collapse. 0.03 is SAR's absolute 0.2 for 1000 classes as a fraction of
            ``ln 1000``; 0.2 would be far stricter for two classes (it fires on any
            model whose reliable predictions average p > 0.97).
        ema_momentum: weight of the past in that moving average (SAR: 0.9).
        sam: take a sharpness-aware (SAM) step, as SAR does.
        sam_rho: SAM's neighbourhood radius.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    e0: float = Field(0.4, gt=0)
    reset_threshold: float = Field(0.03, ge=0)
    ema_momentum: float = Field(0.9, ge=0, lt=1)
    sam: bool = False
    sam_rho: float = Field(0.05, gt=0)


def reliable_mask(entropy: Tensor, margin: float) -> Tensor:
    """True where a prediction's entropy is below ``margin`` (SAR's sample filter)."""
    return entropy < margin


def predictions_collapsed(before: Tensor, after: Tensor, mask: Tensor | None = None) -> bool:
    """Whether logits ``before`` predicted both classes and ``after`` only one.

    Args:
        before: logits ``(B,)`` before adaptation.
        after: logits ``(B,)`` of the same units after adaptation.
        mask: ``(B,)`` bool of the units to consider; None means all.
    """
    if mask is not None:
        before, after = before[mask], after[mask]
    both_before = bool((before > 0).any()) and bool((before <= 0).any())
    one_after = bool((after > 0).all()) or bool((after <= 0).all())
    return both_before and one_after


class CollapseGuard:
    """The moving average of the adaptation loss, and the test for a reset.

    Args:
        threshold: reset when the moving average falls below this (nats).
        momentum: weight of the past in the moving average.
    """

    def __init__(self, threshold: float, momentum: float = 0.9) -> None:
        self.threshold = threshold
        self.momentum = momentum
        self.ema: float | None = None

    def update(self, loss: float) -> bool:
        """Fold ``loss`` into the average; True when the average signals a collapse."""
        self.ema = loss if self.ema is None else (
            self.momentum * self.ema + (1 - self.momentum) * loss)
        return self.ema < self.threshold

    def clear(self) -> None:
        self.ema = None


def guard_for(adapter: TTAMethod) -> CollapseGuard:
    """The collapse guard configured by ``adapter.config``."""
    settings = adapter.config.sar
    return CollapseGuard(settings.reset_threshold * LN2, settings.ema_momentum)


@register_tta
class SAR(Tent):
    """TENT on reliable samples, with an optional SAM step and a reset on collapse."""

    name = "sar"
    settings = SarSettings

    def reset_method_state(self) -> None:
        self.guard = guard_for(self)

    @property
    def margin(self) -> float:
        return self.config.sar.e0 * LN2

    def filtered_loss(self, batch: Batch, keep: dict[str, Tensor] | None = None
                      ) -> tuple[dict[str, Tensor], Tensor | None, dict[str, Tensor]]:
        """Outputs, the entropy loss over reliable terms (None if none), and the filter.

        ``keep`` further restricts the terms (SAM's second pass keeps the first filter).
        """
        out, terms = self.entropy_terms(batch)
        reliable = {head: reliable_mask(entropy.detach(), self.margin)
                    for head, (entropy, _) in terms.items()}
        if keep is not None:
            reliable = {head: mask & keep[head] for head, mask in reliable.items()}
        return out, entropy_loss(terms, reliable), reliable

    def adapt_batch(self, batch: Batch) -> dict[str, Tensor]:
        before: Tensor | None = None
        for _ in range(self.config.steps):
            out, loss, reliable = self.filtered_loss(batch)
            if before is None:
                before = out["fused_logit"].detach()
            if loss is None:
                break
            if self.config.sar.sam:
                loss = self.sam_gradient(batch, loss, reliable)
                if loss is None:
                    break
                self.optimizer.step()
            else:
                self.step(loss)
            if self.guard.update(float(loss.detach())):
                self.reset()
                return self.algorithm.predict(batch)
        result = self.algorithm.predict(batch)
        units = batch["has_mammo"].bool() | batch["has_histo"].bool()
        if before is not None and predictions_collapsed(
                before, torch.logit(result["fused_prob"]), units):
            self.reset()
            result = self.algorithm.predict(batch)
        return result

    def sam_gradient(self, batch: Batch, loss: Tensor, reliable: dict[str, Tensor]
                     ) -> Tensor | None:
        """SAM: the filtered loss at ``w + rho g / ||g||``, its gradient left in ``.grad``.

        The parameters are back at ``w`` on return, so the caller's optimiser step applies
        the gradient taken at the perturbed point to ``w``. Returns the (detached) second
        loss, or None when no sample passes the filter there (``.grad`` is then cleared).
        """
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None))
        scale = self.config.sar.sam_rho / (norm + 1e-12)
        shifts = [None if g is None else g * scale for g in grads]
        with torch.no_grad():
            for param, shift in zip(params, shifts, strict=True):
                if shift is not None:
                    param.add_(shift)
        _, second, _ = self.filtered_loss(batch, keep=reliable)
        self.optimizer.zero_grad(set_to_none=True)
        if second is not None:
            second.backward()
        with torch.no_grad():
            for param, shift in zip(params, shifts, strict=True):
                if shift is not None:
                    param.sub_(shift)
        return None if second is None else second.detach()
