"""Causal test-time adaptation: radpath's own definition (the paper leaves it open).

The causal reading
------------------
The malignancy label is caused by the tissue. How the tissue was imaged (stain batch,
scanner, exposure, detector curve, display window, noise) differs between institutions
and does not cause the label. A feature direction that moves when only those nuisances
change therefore carries no evidence about malignancy, and a prediction that leans on it
will shift with the institution. Causal TTA estimates those directions *on the test batch
itself*, by intervening on the nuisances, and removes them before predicting (in the
spirit of TACT, NeurIPS 2025). Nothing is learned from labels; nothing is written to disk.

The procedure, for each test batch
----------------------------------
1. **Intervene.** Draw ``K = n_interventions`` versions of the batch, each image given one
   random nuisance change (:mod:`radpath.adapt.interventions`: gamma, window or noise for
   mammograms; HED stain jitter or brightness for H&E tiles), only on
   ``config.modalities``. The unchanged batch is version 0, so there are ``K + 1``.
2. **Encode.** Run the model on every version, giving per unit the pooled features
   ``mammo_feat``, ``histo_feat`` and ``fused_feat`` (B, D).
3. **Where the projection acts.** Each malignancy head (:class:`~radpath.models.heads.
   BinaryHead`) is ``fc(norm(f))``: a LayerNorm, then a Linear layer whose weight vector
   ``w`` (1, D) is the class prototype (the logit is ``w . z + b``). LayerNorm is not
   linear, so a direction removed before it would come back after it; the projection
   therefore acts on ``z = norm(f)``, the LayerNorm *output*, i.e. the input of ``fc``.
   The nuisance directions are estimated in that same space.
4. **Nuisance subspace.** Per head (``mammo`` and ``histo`` for the units having that
   modality, ``fused`` for every unit with any modality), subtract from each unit's
   ``K + 1`` vectors ``z`` their per-unit mean; the residuals are the within-sample
   variation caused by the interventions alone. Their top ``k = n_directions`` right
   singular vectors (SVD) form ``U`` (D, k) (:func:`nuisance_directions`; fewer when the
   residuals have lower rank, none when nothing moved).
5. **Remove it.** ``z <- z - U U^T z`` and ``w <- w - U U^T w`` (:func:`project_out`),
   bias unchanged, and the logit of the *unchanged* batch is recomputed from them. (As
   ``I - U U^T`` is a projector, projecting ``w`` alone gives the same logit; both are
   projected so the prototypes themselves are nuisance-free.) The ordinal grade head,
   also LayerNorm + Linear (shared weight, per-threshold biases), gets the same
   treatment with directions estimated from its own LayerNorm output of ``fused_feat``.
   Units without a modality keep that modality's unprojected (meaningless) output.
6. **Optional normalisation adaptation** (``adapt_norm=True``), before steps 4-5: TENT's
   entropy minimisation on the LayerNorm affine parameters
   (:func:`~radpath.adapt.tent.configure_layernorm`), using only the (unit, head) terms
   whose prediction the interventions agree on: the sign of the logit (malignant or
   not) is the same in all ``K + 1`` versions. A prediction that flips under a nuisance
   change is not evidence to sharpen. Agreement is judged once per batch, with the
   weights the batch arrives with, and holds for its ``steps``. SAR's collapse reset
   (:mod:`radpath.adapt.sar`) guards it: the source weights come back when the moving
   average of the loss falls below ``reset_threshold * ln 2``, or when the fused
   predictions of the batch fall to a single class that they did not before. The
   versions are then encoded again with the adapted weights for steps 4-5.

Probabilities stay in [0, 1] (a sigmoid of the recomputed logits); the returned
dictionary has the keys of ``Algorithm.predict``, with ``*_prob`` and ``grade_prob``
replaced. The directions of the last batch are kept in ``last_directions`` for
inspection. The intervention generator is seeded by ``config.seed`` and re-seeded by
``reset()``, so in episodic mode a batch's prediction is reproducible.

Cost: ``K + 2`` forward passes per batch without ``adapt_norm`` (one for the keys of
``Algorithm.predict``), plus ``K + 1`` and ``steps`` forward/backward passes with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from radpath.adapt.base import Batch, TTAMethod, register_tta
from radpath.adapt.interventions import InterventionConfig, intervene
from radpath.adapt.sar import guard_for, predictions_collapsed
from radpath.adapt.tent import configure_layernorm, entropy_loss, head_entropies
from radpath.models.heads import OrdinalHead
from radpath.objectives.ordinal import ordinal_probabilities


class CausalSettings(BaseModel):
    """The causal method's settings, ``tta.causal`` (its collapse reset: ``tta.sar``).

    Attributes:
        n_interventions: intervened versions of each batch (K).
        n_directions: nuisance directions removed per head (k).
        nuisance_ratio: a direction is removed only when the variance the interventions
            cause along it is at least this multiple of the variance between cases along
            it: directions where cases differ more than their imaging does carry content,
            and are kept (0 removes all ``k``).
        adapt_norm: also adapt LayerNorms on the samples the interventions agree on
            (entropy minimisation, with SAR's collapse reset).
        interventions: strengths of the interventions.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_interventions: int = Field(8, ge=1)
    n_directions: int = Field(4, ge=0)
    nuisance_ratio: float = Field(1.0, ge=0)
    adapt_norm: bool = False
    interventions: InterventionConfig = InterventionConfig()


def nuisance_directions(features: Tensor, k: int, mask: Tensor | None = None, *,
                        min_ratio: float = 0.0) -> Tensor:
    """Orthonormal directions ``U`` (D, k') of the within-sample variation of features.

    Args:
        features: ``(K, B, D)``: each of ``B`` samples encoded under ``K`` interventions.
        k: how many directions at most; fewer (possibly 0) when the variation has lower
            numerical rank.
        mask: ``(B,)`` bool of the samples to use; None uses all.
        min_ratio: keep a direction only when the within-sample (intervention) variance
            along it is at least ``min_ratio`` times the between-sample variance of the
            per-sample means along it. Imaging changes that move features less than cases
            differ from each other are not what makes a domain shift; removing them would
            mostly remove content (measured: on the synthetic cohort, removing all top-4
            directions cut an H&E AUC of 1.0 to 0.17).

    Returns:
        The kept top right singular vectors of the features minus their per-sample mean
        over the ``K`` versions, as columns.
    """
    if features.ndim != 3:
        raise ValueError(f"features must be (K, B, D), got shape {tuple(features.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if mask is not None:
        features = features[:, mask]
    dim = features.shape[-1]
    residuals = (features - features.mean(dim=0, keepdim=True)).reshape(-1, dim)
    if k == 0 or residuals.shape[0] == 0:
        return features.new_zeros(dim, 0)
    _, singular, vh = torch.linalg.svd(residuals.double(), full_matrices=False)
    # Numerical rank at the precision of the input (as torch.linalg.matrix_rank does).
    tolerance = singular.max() * max(residuals.shape) * torch.finfo(features.dtype).eps
    rank = int((singular > tolerance).sum())
    directions = vh[:min(k, rank)].T
    if min_ratio > 0 and directions.shape[1]:
        means = features.mean(dim=0).double()
        between = ((means - means.mean(dim=0)) @ directions).var(dim=0, unbiased=False)
        within = (residuals.double() @ directions).pow(2).mean(dim=0)
        directions = directions[:, within >= min_ratio * between]
    return directions.to(features.dtype)


def project_out(x: Tensor, directions: Tensor) -> Tensor:
    """``x - U U^T x`` for rows ``x`` (..., D) and orthonormal columns ``U`` (D, k)."""
    return x - (x @ directions) @ directions.T


def agreement_mask(logits: Tensor) -> Tensor:
    """``(B,)`` True where logits ``(K, B)`` have the same sign in all ``K`` versions."""
    positive = logits > 0
    return positive.all(dim=0) | (~positive).all(dim=0)


def head_logits(head: nn.Module, z: Tensor, directions: Tensor) -> Tensor:
    """Logits of a LayerNorm + Linear head from its LayerNorm output ``z``, both projected.

    Args:
        head: a :class:`~radpath.models.heads.BinaryHead` (logits ``(B,)``) or an
            :class:`~radpath.models.heads.OrdinalHead` (logits ``(B, K-1)``).
        z: the head's LayerNorm output ``(B, D)``.
        directions: ``U`` (D, k) to remove from ``z`` and from the weight vector.
    """
    fc = head.fc
    logits = F.linear(project_out(z, directions), project_out(fc.weight, directions), fc.bias)
    if isinstance(head, OrdinalHead):
        return logits + head.biases
    return logits.squeeze(-1)


@register_tta
class CausalTTA(TTAMethod):
    """Removes intervention-estimated nuisance directions (see the module docstring).

    Attributes:
        last_directions: ``{head: U (D, k')}`` of the last batch (``grade`` included when
            the model grades).
    """

    name = "causal"
    settings = CausalSettings

    def trainable_parameters(self) -> list[nn.Parameter]:
        if self.config.causal.adapt_norm:
            return configure_layernorm(self.algorithm, self.config.norm_scope)
        return super().trainable_parameters()

    def reset_method_state(self) -> None:
        self.generator = torch.Generator().manual_seed(self.config.seed)
        self.guard = guard_for(self)
        self.last_directions: dict[str, Tensor] = {}

    def versions(self, batch: Batch) -> list[Batch]:
        """The batch itself, then ``n_interventions`` intervened copies."""
        config = self.config
        return [batch, *(intervene(batch, self.generator, config.modalities,
                                   config.causal.interventions)
                         for _ in range(config.causal.n_interventions))]

    @torch.no_grad()
    def encode(self, versions: list[Batch]) -> list[dict[str, Tensor]]:
        return [self.algorithm(version) for version in versions]

    def adapt_batch(self, batch: Batch) -> dict[str, Tensor]:
        versions = self.versions(batch)
        outs = self.encode(versions)
        if self.config.causal.adapt_norm and self.config.steps > 0 and self.adapt_norm(batch, outs):
            before = outs[0]["fused_logit"]
            outs = self.encode(versions)
            units = batch["has_mammo"].bool() | batch["has_histo"].bool()
            if predictions_collapsed(before, outs[0]["fused_logit"], units):
                self.reset()
                outs = self.encode(versions)
        return self.project_predictions(batch, outs)

    def adapt_norm(self, batch: Batch, outs: list[dict[str, Tensor]]) -> bool:
        """Entropy steps on the terms the interventions agree on; True if weights moved."""
        heads = (*self.config.modalities, "fused")
        keep = {head: agreement_mask(torch.stack([out[f"{head}_logit"] for out in outs]))
                for head in heads}
        moved = False
        for _ in range(self.config.steps):
            out = self.algorithm(batch)
            loss = entropy_loss(head_entropies(out, batch, self.config.modalities), keep)
            if loss is None:
                break
            self.step(loss)
            moved = True
            if self.guard.update(float(loss.detach())):
                self.reset()
                break
        return moved

    @torch.no_grad()
    def project_predictions(self, batch: Batch, outs: list[dict[str, Tensor]]
                            ) -> dict[str, Tensor]:
        """``Algorithm.predict`` of the batch with nuisance-free malignancy and grade heads."""
        result = self.algorithm.predict(batch)
        model = self.algorithm.model
        has = {m: batch[f"has_{m}"].bool() for m in ("mammo", "histo")}
        units = {**has, "fused": has["mammo"] | has["histo"]}
        self.last_directions = {}
        for head in (*self.config.modalities, "fused"):
            if not bool(units[head].any()):
                continue
            logits = self._projected(model.heads[head], head, outs, f"{head}_feat", units[head])
            result[f"{head}_prob"] = torch.where(units[head], torch.sigmoid(logits),
                                                 result[f"{head}_prob"])
        if model.grade_head is not None and bool(units["fused"].any()):
            logits = self._projected(model.grade_head, "grade", outs, "fused_feat",
                                     units["fused"])
            result["grade_prob"] = torch.where(units["fused"][:, None],
                                               ordinal_probabilities(logits),
                                               result["grade_prob"])
        return result

    def _projected(self, head: nn.Module, name: str, outs: list[dict[str, Tensor]],
                   key: str, mask: Tensor) -> Tensor:
        """Logits of ``head`` on version 0, with its nuisance directions removed."""
        z = head.norm(torch.stack([out[key] for out in outs]))
        directions = nuisance_directions(z, self.config.causal.n_directions, mask,
                                         min_ratio=self.config.causal.nuisance_ratio)
        self.last_directions[name] = directions
        return head_logits(head, z[0], directions)
