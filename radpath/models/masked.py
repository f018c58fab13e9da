"""Masked image modelling (SimMIM): self-supervised pretraining of the shared backbone.

Blocks of patches of each image are replaced by a learnable mask token; the backbone
encodes the image and a linear decoder predicts the pixels of the masked patches from
their tokens (L1 loss on the masked patches only). No label is read, so every image of a
cohort, labelled or not, can teach the backbone what mammograms and H&E tiles look like
before a few dozen labels teach it malignancy.

The targets are the model's normalised input pixels, not MAE's per-patch normalised ones:
per-patch normalisation removes a patch's colour and contrast, and in the H&E here a
logistic regression on tile colour statistics beats every ViT tried
(``benchmarks/results/real_baselines.md``), mostly through the within-tile spread of
colour (measured by feature subset: RGB and HSV means and deviations 0.79-0.81, the means
alone 0.56). Masking whole blocks of patches, as SimMIM
does, keeps the task from being solved by interpolating a patch from its neighbours.

Reference: Xie et al., "SimMIM: a simple framework for masked image modeling", CVPR 2022.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import Tensor, nn

from radpath.batch.tensors import valid_rows
from radpath.models.backbone import IN_CHANS, MODALITIES, NUM_PREFIX_TOKENS
from radpath.models.crossmodal import CrossModalModel


class MaskedImageModel(nn.Module):
    """A :class:`CrossModalModel`'s backbone with mask tokens and pixel decoders.

    Args:
        model: the model whose backbone learns (in place); its heads are left alone.
        mask_ratio: fraction of each image's patches that are masked.
        mask_block: masks are drawn on a grid of ``mask_block`` x ``mask_block`` patches.
    """

    def __init__(self, model: CrossModalModel, *, mask_ratio: float = 0.5,
                 mask_block: int = 2) -> None:
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1), got {mask_ratio}")
        if mask_block < 1:
            raise ValueError(f"mask_block must be at least 1, got {mask_block}")
        self.model = model
        self.mask_ratio = mask_ratio
        self.mask_block = mask_block
        backbone = model.backbone
        self.patch = int(backbone.patch_embed["histo"].patch_size[0])
        dim = backbone.embed_dim
        self.mask_tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.randn(dim) * 0.02) for m in MODALITIES})
        self.decoders = nn.ModuleDict(
            {m: nn.Linear(dim, self.patch * self.patch * IN_CHANS[m]) for m in MODALITIES})

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The backbone, the mask tokens and the decoders (not the model's heads)."""
        yield from self.model.backbone.parameters()
        yield from self.mask_tokens.values()
        yield from self.decoders.parameters()

    def forward(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """``{"loss": mean over modalities present, modality: its loss}`` for a patient batch."""
        losses = {}
        for modality, images in batch_images(self.model, batch).items():
            if len(images):
                losses[modality] = self.image_loss(images, modality)
        if not losses:
            raise ValueError("the batch holds no image to reconstruct")
        losses["loss"] = torch.stack(list(losses.values())).mean()
        return losses

    def image_loss(self, images: Tensor, modality: str) -> Tensor:
        """Mean absolute error of the predicted pixels of the masked patches of ``images``."""
        grid = self.model.backbone.grid_size(modality, tuple(images.shape[-2:]))
        masked = self.draw_mask(len(images), grid, images.device)
        tokens = self.model.backbone.forward_tokens(
            images, modality, masking=(masked, self.mask_tokens[modality]))
        predicted = self.decoders[modality](tokens[:, NUM_PREFIX_TOKENS:])
        target = patch_pixels(images, self.patch).flatten(1, 2)
        # Every token's error weighed by its mask rather than the masked tokens selected:
        # a boolean selection would wait for the device to count them.
        token_error = (predicted - target).abs().mean(dim=-1)
        weights = masked.flatten(1).to(token_error.dtype)
        return (token_error * weights).sum() / weights.sum()

    def draw_mask(self, count: int, grid: tuple[int, int], device: torch.device) -> Tensor:
        """``(count, gh, gw)`` bool: ``mask_ratio`` of each image's blocks, at random."""
        block = self.mask_block
        rows, cols = -(-grid[0] // block), -(-grid[1] // block)
        masked_blocks = max(1, round(self.mask_ratio * rows * cols))
        ranks = torch.rand(count, rows * cols, device=device).argsort(dim=1).argsort(dim=1)
        coarse = (ranks < masked_blocks).reshape(count, rows, cols)
        fine = coarse.repeat_interleave(block, dim=1).repeat_interleave(block, dim=2)
        return fine[:, :grid[0], :grid[1]]


def batch_images(model: CrossModalModel, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The images of a patient batch as the model encodes them, flat per modality: every
    H&E tile present, and every mammogram view present, cut into the windows the model
    encodes when ``model.mammo_window`` is set (background windows left out)."""
    images = {}
    for modality in MODALITIES:
        stack = batch[modality]
        images[modality] = stack.reshape(-1, *stack.shape[2:])[valid_rows(batch, modality)]
    if model.config.mammo_window and len(images["mammo"]):
        windows, keep, _ = model.mammo_windows(images["mammo"])
        images["mammo"] = windows[keep]
    return images


def patch_pixels(images: Tensor, patch: int) -> Tensor:
    """``(N, C, H, W)`` as ``(N, H // patch, W // patch, patch * patch * C)``: each patch's
    pixels, in the order of the decoder's outputs."""
    n, channels, height, width = images.shape
    rows, cols = height // patch, width // patch
    return (images[:, :, :rows * patch, :cols * patch]
            .reshape(n, channels, rows, patch, cols, patch)
            .permute(0, 2, 4, 3, 5, 1).reshape(n, rows, cols, patch * patch * channels))
