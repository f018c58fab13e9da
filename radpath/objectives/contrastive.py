"""Patient-level cross-modal alignment: a CLIP-style symmetric InfoNCE with label-aware masking.

Each valid batch row holds one mammography embedding and one histology embedding of the
same unit (a true pair or a label-matched pseudo-pair, see :mod:`radpath.batch.keys`).
The loss pulls each row's two embeddings together and pushes them away from the other
rows' embeddings, in both directions (mammography -> histology and back), as open_clip's
``ClipLoss`` does.

Under data parallelism the rows of every process are gathered first, with their gradients
(:mod:`radpath.objectives.gather`, open_clip's ``gather_with_grad``), so each row meets the
negatives of the whole global batch, not only those of its own GPU.

Pseudo-pairs are matched on the label only, so another row with the same label is as
much a "partner" as the row's own: pushing it away would contradict the pull. Such
entries are removed from the softmax denominator (supervised-contrastive style).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radpath.batch.keys import PAIRING_CODES
from radpath.objectives.gather import gather_rows

TRUE_PAIR = PAIRING_CODES["true"]
PSEUDO_PAIR = PAIRING_CODES["pseudo"]


def pseudo_pair_mask(labels: torch.Tensor, pairing: torch.Tensor) -> torch.Tensor:
    """Off-diagonal entries that are not negatives, as a (B, B) bool matrix.

    Entry (i, j) is masked when i != j, both labels are known and equal, and row i or row
    j is a pseudo-pair. The mask is symmetric, so it serves both directions of the loss
    and the loss stays symmetric in the two modalities.

    Args:
        labels: (B,) label codes, -1 for unknown.
        pairing: (B,) pairing codes.

    Returns:
        A (B, B) bool mask, True where the logit is dropped from the denominator.
    """
    known = labels >= 0
    same = (labels[:, None] == labels[None, :]) & known[:, None] & known[None, :]
    pseudo = pairing == PSEUDO_PAIR
    either_pseudo = pseudo[:, None] | pseudo[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & either_pseudo & off_diagonal


class SymmetricInfoNCE(nn.Module):
    """Symmetric InfoNCE between the two modalities' patient embeddings.

    Args:
        init_temperature: initial softmax temperature; the logit scale starts at its
            inverse.
        max_logit_scale: upper bound of the effective scale ``exp(logit_scale)``; an
            unbounded scale diverges (CLIP clamps at 100).
        learnable: learn the logit scale; otherwise it is a fixed buffer.
    """

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0,
                 learnable: bool = True) -> None:
        super().__init__()
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be positive, got {init_temperature}")
        if max_logit_scale <= 0:
            raise ValueError(f"max_logit_scale must be positive, got {max_logit_scale}")
        self.max_log_scale = math.log(max_logit_scale)
        initial = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.logit_scale = nn.Parameter(initial)
        else:
            self.register_buffer("logit_scale", initial)

    def scale(self) -> torch.Tensor:
        """The effective, clamped logit scale ``exp(logit_scale)``."""
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the stored parameter in place; call after each optimiser step.

        The clamp in :meth:`forward` already bounds the effective scale, but a parameter
        left far above the bound receives no gradient and would never come back down.
        """
        self.logit_scale.clamp_(0.0, self.max_log_scale)

    def forward(self, mammo_emb: torch.Tensor, histo_emb: torch.Tensor, labels: torch.Tensor,
                pairing: torch.Tensor, *, return_dict: bool = False,
                ) -> torch.Tensor | dict[str, torch.Tensor]:
        """Compute the loss over the rows with a pair (``pairing`` 1 or 2), those of every
        process when several train together (each then computes the same global loss).

        Args:
            mammo_emb: (B, D) mammography embeddings (raw projections; normalised here).
            histo_emb: (B, D) histology embeddings of the same units.
            labels: (B,) label codes, -1 for unknown.
            pairing: (B,) pairing codes; rows with 0 (unpaired) are ignored.
            return_dict: return ``{"loss", "logit_scale", "accuracy"}`` instead of the loss.

        Returns:
            The scalar loss (zero, still attached to the graph, with fewer than two pairs),
            or the dict of named terms.
        """
        _check_shapes(mammo_emb, histo_emb, labels, pairing)
        mammo_emb, histo_emb, labels, pairing = gather_rows(mammo_emb, histo_emb, labels,
                                                            pairing)
        scale = self.scale()
        loss, accuracy = self._loss(mammo_emb, histo_emb, labels, pairing, scale)
        if return_dict:
            return {"loss": loss, "logit_scale": scale.detach(), "accuracy": accuracy}
        return loss

    def _loss(self, mammo_emb: torch.Tensor, histo_emb: torch.Tensor, labels: torch.Tensor,
              pairing: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked symmetric loss and the mean retrieval accuracy of the paired rows.

        Unpaired rows are masked out of the softmax and the mean rather than selected, so
        nothing waits for the device. With fewer than two pairs there is no negative: the
        loss is a zero still attached to every input (under DDP a rank that skipped the
        loss would otherwise leave its peers waiting for gradients).
        """
        # float32 logits: under bf16 autocast a scale of 100 leaves too few mantissa bits.
        mammo = F.normalize(mammo_emb.float(), dim=-1)
        histo = F.normalize(histo_emb.float(), dim=-1)
        logits = scale * mammo @ histo.T
        paired = pairing > 0
        diagonal = torch.eye(len(logits), dtype=torch.bool, device=logits.device)
        # Each row keeps its own pair: an unpaired row's loss is finite, and then ignored.
        unused = ~(paired[:, None] & paired[None, :]) & ~diagonal
        logits = logits.masked_fill(pseudo_pair_mask(labels, pairing) | unused, float("-inf"))
        target = torch.arange(len(logits), device=logits.device)
        per_row = (F.cross_entropy(logits, target, reduction="none")
                   + F.cross_entropy(logits.T, target, reduction="none")) / 2
        pairs = paired.sum()
        counted = paired & (pairs >= 2)
        loss = torch.where(counted, per_row, 0.0).sum() / pairs.clamp(min=1)
        if not len(logits):  # an empty batch: argmax has nothing to reduce
            return loss, loss.detach()
        with torch.no_grad():
            hits = ((logits.argmax(1) == target).float()
                    + (logits.T.argmax(1) == target).float()) / 2
            accuracy = torch.where(counted, hits, 0.0).sum() / pairs.clamp(min=1)
        return loss, accuracy


def _check_shapes(mammo_emb: torch.Tensor, histo_emb: torch.Tensor, labels: torch.Tensor,
                  pairing: torch.Tensor) -> None:
    """Raise ValueError unless the embeddings are (B, D) alike and labels/pairing are (B,)."""
    if mammo_emb.ndim != 2 or mammo_emb.shape != histo_emb.shape:
        raise ValueError("embeddings must both be (B, D); got "
                         f"{tuple(mammo_emb.shape)} and {tuple(histo_emb.shape)}")
    batch = mammo_emb.shape[0]
    for name, codes in (("labels", labels), ("pairing", pairing)):
        if codes.shape != (batch,):
            raise ValueError(f"{name} must be ({batch},), got {tuple(codes.shape)}")
