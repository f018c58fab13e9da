"""The algorithm contract: ``update(batch) -> dict[str, float]`` and ``predict(batch)``.

Every training algorithm wraps the same :class:`~radpath.models.crossmodal.CrossModalModel`
and the same supervised multi-task loss, and adds only its own terms, so methods are
compared on equal footing (DomainBed's contract). ``compute_loss`` is what the Lightning
engine calls; ``update`` runs one optimisation step on its own, for scripts and tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel
from torch import Tensor, nn

from radpath.algorithms.config import AlgorithmConfig
from radpath.augment.mixstyle import TokenMixStyle
from radpath.augment.tilemix import TileMix
from radpath.batch.keys import LABEL_CODES, MALIGNANT
from radpath.models.crossmodal import CrossModalModel
from radpath.objectives.ordinal import ordinal_loss, ordinal_probabilities
from radpath.registry import Registry

Batch = Mapping[str, Tensor]
MODALITIES = ("mammo", "histo")


class Algorithm(nn.Module):
    """Base class: the supervised multi-task loss, prediction and a standalone update."""

    name: ClassVar[str]
    settings: ClassVar[type[BaseModel] | None] = None
    uses_mixstyle: ClassVar[bool] = False

    def __init__(self, model: CrossModalModel, config: AlgorithmConfig, *,
                 domains: Sequence[str], seed: int = 0) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.domains = list(domains)
        self.mixstyle = (TokenMixStyle(p=config.mixstyle.p, alpha=config.mixstyle.alpha,
                                       mix=config.mixstyle.mix, seed=seed)
                         if self.uses_mixstyle else None)
        mix = config.tile_mix
        self.tile_mix = (TileMix(p=mix.p, alpha=mix.alpha, mode=mix.mode, seed=seed)
                         if mix.p > 0 else None)
        # Counted in a buffer so that schedules resume correctly from a checkpoint, and
        # mirrored on the host: reading the buffer of a model on a GPU waits for the GPU.
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        # How far the finding cut point lies below the malignancy one, through a softplus
        # so that P(finding) >= P(malignant) always (0 starts it at log 2).
        self.finding_margin = (nn.Parameter(torch.zeros(()))
                               if config.mammo_target == "ordinal" else None)
        self._steps_on_host: int | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        return self.model(batch, mixstyle=self.mixstyle if self.training else None)

    def compute_loss(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss of one batch and its named terms, detached, for logging.

        The terms stay tensors: reading one as a float waits for the device to finish the
        forward pass, so a caller reads them after queueing the backward (:meth:`update`).
        """
        if self.tile_mix is not None and self.training:
            batch = self.tile_mix(batch)
        out = self(batch)
        terms = self.supervised_terms(out, batch)
        terms.update(self.extra_terms(out, batch))
        total = sum(weight * value for weight, value in terms.values())
        total = self.rescale(total)
        if self.training:
            steps = self.steps_taken()
            self.steps_done += 1
            self._steps_on_host = steps + 1
        logs = {name: value.detach() for name, (_, value) in terms.items()}
        logs["loss"] = total.detach()
        return total, logs

    def steps_taken(self) -> int:
        """Training steps so far: the buffer is read once after loading, then counted here."""
        if self._steps_on_host is None:
            self._steps_on_host = int(self.steps_done)
        return self._steps_on_host

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._steps_on_host = None  # a checkpoint's count replaces the host's

    def rescale(self, total: Tensor) -> Tensor:
        """Hook: a final scaling of the loss (IRM divides by its penalty weight)."""
        return total

    def extra_terms(self, out: dict[str, Tensor], batch: Batch) -> dict[str, tuple[float, Tensor]]:
        """Hook: the algorithm's own terms as ``name -> (weight, value)``."""
        return {}

    def supervised_terms(self, out: dict[str, Tensor], batch: Batch
                         ) -> dict[str, tuple[float, Tensor]]:
        """Malignancy per modality and fused, grading, and localisation."""
        weights = self.config.weights
        known = batch["label"] >= 0
        histo_target = malignancy_target(batch, "histo")
        terms = {
            "mammo_bce": (weights.mammo, masked_bce(out["mammo_logit"],
                                                    malignancy_target(batch, "mammo"),
                                                    known & batch["has_mammo"])),
            "histo_bce": (weights.histo, masked_bce(out["histo_logit"], histo_target,
                                                    known & batch["has_histo"])),
            "fused_bce": (weights.fused, masked_bce(out["fused_logit"],
                                                    malignancy_target(batch, "fused"), known)),
        }
        if self.finding_margin is not None:
            finding_logit = out["mammo_logit"] + F.softplus(self.finding_margin)
            terms["mammo_finding_bce"] = (weights.mammo, masked_bce(
                finding_logit, has_finding(batch), known & batch["has_mammo"]))
        if weights.histo_tiles > 0 and "histo_tile_logit" in out:
            tiles = batch["histo_mask"].bool() & (known & batch["has_histo"])[:, None]
            tile_target = histo_target[:, None].expand_as(out["histo_tile_logit"])
            terms["histo_tile_bce"] = (weights.histo_tiles, masked_bce(
                out["histo_tile_logit"], tile_target, tiles))
        if weights.mammo_views > 0 and "mammo_view_label" in batch:
            view_label = batch["mammo_view_label"]
            views = batch["mammo_mask"].bool() & (view_label >= 0) & batch["has_mammo"][:, None]
            terms["mammo_view_bce"] = (weights.mammo_views, masked_bce(
                out["mammo_view_logit"], (view_label == MALIGNANT).float(), views))
        if "grade_logits" in out:
            classes = out["grade_logits"].shape[1] + 1
            terms["grade"] = (weights.grade, ordinal_loss(out["grade_logits"], batch["grade"],
                                                          classes))
        if "view_logit" in out:
            terms["localisation"] = (weights.localisation, self.localisation_loss(out, batch))
        return terms

    def localisation_loss(self, out: dict[str, Tensor], batch: Batch) -> Tensor:
        """Weak MIL loss (a patient is positive iff some view is), plus lesion supervision.

        The weak term takes the most suspicious valid view of each patient against the
        patient's ``localisation_target`` (malignant, or any finding); with
        ``lesion_supervision`` the token scores of views with annotated lesions (or of
        normal views, whose empty map is the truth) are also trained against the lesion map.
        """
        views = batch["mammo_mask"]
        most_suspicious = out["view_logit"].masked_fill(~views, -1e4).amax(dim=1)
        target = (batch["malignant"].float() if self.config.localisation_target == "malignant"
                  else has_finding(batch))
        weak = masked_bce(most_suspicious, target, (batch["label"] >= 0) & batch["has_mammo"])
        if not self.config.lesion_supervision:
            return weak
        # Every token of the views whose map is known, weighed in rather than selected.
        known = (batch["lesion_known"] & views).to(weak.dtype)
        known = known[..., None, None].expand_as(batch["lesion_map"])
        maps = batch["lesion_map"] * known
        tokens = known.sum()
        # Lesions cover few tokens: weight positives up so the map does not collapse to 0.
        positives = maps.sum().clamp(min=1.0)
        pos_weight = ((tokens - positives) / positives).clamp(max=50.0)
        dense = F.binary_cross_entropy_with_logits(out["token_scores"], maps,
                                                   pos_weight=pos_weight, reduction="none")
        return weak + torch.where(known > 0, dense, 0.0).sum() / tokens.clamp(min=1.0)

    @torch.no_grad()
    def predict(self, batch: Batch) -> dict[str, Tensor]:
        """Malignancy probabilities per modality and fused, grades, maps and attention."""
        was_training = self.training
        self.eval()
        try:
            out = self(batch)
        finally:
            self.train(was_training)
        result = {f"{m}_prob": torch.sigmoid(out[f"{m}_logit"]) for m in (*MODALITIES, "fused")}
        if "grade_logits" in out:
            result["grade_prob"] = ordinal_probabilities(out["grade_logits"])
        for key in ("token_scores", "view_logit", "mammo_attention", "histo_attention",
                    "mammo_proj", "histo_proj", "mammo_feat", "histo_feat"):
            if key in out:
                result[key] = out[key]
        return result

    def make_optimizer(self, lr: float = 3e-4, weight_decay: float = 0.05
                       ) -> torch.optim.Optimizer:
        """AdamW over every trainable parameter (no decay on norms, biases and scales)."""
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
        # The fused kernel updates every tensor at once (measured 5x faster than the
        # per-tensor loop on CPU for this many small parameter tensors).
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=lr,
                                 fused=True)

    def after_step(self) -> None:
        """Hook run after each optimiser step (the contrastive scale is clamped there)."""

    def update(self, batch: Batch) -> dict[str, float]:
        """One optimisation step on ``batch`` with the algorithm's own optimiser."""
        if self._optimizer is None:
            self._optimizer = self.make_optimizer()
        # train() sets the flag of every module through nn.Module.__setattr__ on each call;
        # reading the flags is far cheaper, and a step after predict() still switches back.
        if not all(module.training for module in self.modules()):
            self.train()
        self._optimizer.zero_grad(set_to_none=True)
        loss, logs = self.compute_loss(batch)
        loss.backward()
        self._optimizer.step()
        self.after_step()
        return {name: float(value) for name, value in logs.items()}


def masked_bce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean BCE over ``mask``; a zero that keeps the graph when nothing is selected.

    Weighted rather than indexed: selecting by a boolean mask, or asking whether it
    selects anything, waits for the device on every call.
    """
    losses = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    chosen = mask.to(losses.dtype)
    return torch.where(mask, losses, 0.0).sum() / chosen.sum().clamp(min=1.0)


def malignancy_target(batch: Batch, output: str) -> Tensor:
    """The (B,) malignancy target of ``mammo``, ``histo`` or ``fused``.

    Tiles mixed across units (:class:`~radpath.augment.tilemix.TileMix`) carry a soft
    target in ``histo_target``, and so do the units' fused outputs, which read those tiles;
    the mammograms are never mixed.
    """
    if output != "mammo" and "histo_target" in batch:
        return batch["histo_target"]
    return batch["malignant"].float()


def has_finding(batch: Batch) -> Tensor:
    """1.0 for units with any benign or malignant finding, 0.0 for normal ones (and unknown)."""
    return (batch["label"] > LABEL_CODES["normal"]).float()


def modality_rows(out: dict[str, Tensor], batch: Batch, modality: str
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Logits, targets, domain ids and features of the labelled units having ``modality``."""
    rows = batch[f"has_{modality}"] & (batch["label"] >= 0)
    return (out[f"{modality}_logit"][rows], malignancy_target(batch, modality)[rows],
            batch[f"{modality}_domain"][rows], out[f"{modality}_feat"][rows])


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


def register_algorithm(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator registering an algorithm under its ``name``.

    An algorithm with hyperparameters of its own declares them as a pydantic model in
    ``settings``; the config then nests them under its name (``algorithm.coral.weight``).
    """
    return ALGORITHMS.register(cls)
