"""Patch embeddings with a nonlinear, patch-local stem (``model.backbone.stem: hmlp``).

ViT's patch embedding is one linear map per patch. Trained from scratch on a few hundred
images, a transformer learns better with a few convolutions in front of it (Xiao et al.
2021, *Early convolutions help transformers see better*), but overlapping convolutions
let each token see its neighbours' pixels, which breaks masked image modelling: a masked
patch could be read off its neighbours' tokens. The hierarchical MLP stem of DeiT III
(Touvron et al. 2022) keeps every kernel equal to its stride, 4 then 2 then 2 for 16-px
patches, so each token still depends on its own patch alone, while the embedding gains a
nonlinear layer per extra stage (one for 8-px patches, two for 16-px ones).
"""

from __future__ import annotations

from timm.layers import LayerNorm2d, PatchEmbed
from torch import nn

STEMS = ("linear", "hmlp")


def hmlp_strides(patch: int) -> list[int]:
    """Kernel and stride of each stage: 4 (or the patch, when smaller), then 2s."""
    if patch < 2 or patch & (patch - 1):
        raise ValueError(f"the hmlp stem needs a patch size that is a power of two, "
                         f"got {patch}")
    strides = [min(4, patch)]
    while strides[0] * 2 ** (len(strides) - 1) < patch:
        strides.append(2)
    return strides


def hmlp_stem(in_chans: int, embed_dim: int, patch: int) -> nn.Sequential:
    """Convolutions with kernel = stride, a quarter of ``embed_dim`` wide until the last,
    each but the last followed by a channel LayerNorm and GELU."""
    strides = hmlp_strides(patch)
    hidden = max(8, embed_dim // 4)
    layers: list[nn.Module] = []
    channels = in_chans
    for stage, stride in enumerate(strides):
        last = stage == len(strides) - 1
        out = embed_dim if last else hidden
        layers.append(nn.Conv2d(channels, out, kernel_size=stride, stride=stride))
        if not last:
            layers += [LayerNorm2d(out), nn.GELU()]
        channels = out
    return nn.Sequential(*layers)


def patch_embedding(*, img_size: int, patch_size: int, in_chans: int, embed_dim: int,
                    stem: str = "linear") -> PatchEmbed:
    """timm's ``PatchEmbed`` as ``dynamic_img_size`` ViTs build it, its projection replaced
    by :func:`hmlp_stem` when ``stem`` is ``hmlp`` (same grid, same output format)."""
    if stem not in STEMS:
        raise ValueError(f"unknown stem '{stem}'; known: {', '.join(STEMS)}")
    embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                       embed_dim=embed_dim, output_fmt="NHWC", strict_img_size=False)
    if stem == "hmlp":
        embed.proj = hmlp_stem(in_chans, embed_dim, patch_size)
    return embed
