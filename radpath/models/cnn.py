"""Pretrained convolutional networks: a CNN backbone per modality, and a CNN stem for the ViT.

Two ways to start from ImageNet features (``model.backbone``):

* :class:`CnnBackbone` (``name: efficientnet_lite0``): one timm EfficientNet per modality
  (or one shared), its last feature map the patch tokens and their mean the CLS feature,
  so the modality adapters, MIL pooling and heads work as with the ViT;
* :class:`CnnPatchEmbed` (``stem: cnn``): the first stages of the CNN, up to the ViT's patch
  size, as the ViT's patch embedding (timm's ``HybridEmbed``, as in ViT-hybrid, Dosovitskiy
  et al. 2021), so the shared transformer keeps a pretrained front.

Both take the data pipeline's tensors and convert them to what the pretrained network saw
in training (:class:`PretrainedInput`): its own mean and standard deviation, and grey
mammograms as three equal channels (the RGB network's response to a grey photograph).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pydantic
import timm
import torch
from timm.layers import HybridEmbed, freeze_batch_norm_2d
from torch import Tensor, nn

from radpath.batch.tensors import IMAGENET_MEAN, IMAGENET_STD, MAMMO_MEAN, MAMMO_STD
from radpath.errors import RadpathError
from radpath.models.adapters import bottleneck_adapters
from radpath.models.pretrained import PretrainedReport, load_pretrained, strip_prefix

# The normalisation the batch contract applies (MAMMO_MEAN/STD on the [0, 1] film,
# ImageNet's mean/std on H&E tiles), undone here before the pretrained network's own.
PIPELINE_NORM = {"mammo": ((MAMMO_MEAN,), (MAMMO_STD,)),
                 "histo": (tuple(map(float, IMAGENET_MEAN)), tuple(map(float, IMAGENET_STD)))}
CNN_OWN_PREFIXES = ("trunks.", "adapters.")


class PretrainedInput(nn.Module):
    """The pipeline's normalised images as the pretrained network's inputs ``(B, 3, H, W)``.

    Args:
        modality: ``"mammo"`` (1 channel, repeated to 3) or ``"histo"`` (3 channels).
        mean: the pretrained network's per-channel mean (timm ``pretrained_cfg``).
        std: its per-channel standard deviation.
    """

    def __init__(self, modality: str, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        given_mean, given_std = PIPELINE_NORM[modality]
        # x_pretrained = (x * given_std + given_mean - mean) / std, one affine map a channel.
        scale = torch.tensor(given_std) / torch.tensor(std)
        shift = (torch.tensor(given_mean) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale[None, :, None, None], persistent=False)
        self.register_buffer("shift", shift[None, :, None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey film -> three equal channels
        return x * self.scale + self.shift


def timm_cnn(name: str) -> nn.Module:
    """An untrained timm CNN without classifier or pooling."""
    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="")


class CnnStages(nn.Module):
    """The stem and first stages of a timm CNN, down to stride ``reduction``: its feature
    map ``(B, C, H / reduction, W / reduction)``. Parameter names are timm's
    (``conv_stem``, ``bn1``, ``blocks.S``), so timm weights load by name.

    Raises:
        RadpathError: the CNN has no stage ending at that stride.
    """

    def __init__(self, name: str, reduction: int) -> None:
        super().__init__()
        full = timm_cnn(name)
        ends = {info["reduction"]: int(info["module"].split(".")[1])
                for info in full.feature_info if info["module"].startswith("blocks.")}
        if reduction not in ends:
            raise RadpathError(f"model.backbone.stem cnn: {name} has stages ending at "
                               f"strides {sorted(ends)}, not at the ViT's patch size "
                               f"{reduction}")
        self.conv_stem, self.bn1 = full.conv_stem, full.bn1
        self.blocks = full.blocks[:ends[reduction] + 1]
        # HybridEmbed reads the width of the map it projects from num_features.
        self.num_features: int = [info["num_chs"] for info in full.feature_info
                              if info["reduction"] == reduction][-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.bn1(self.conv_stem(x)))


def pretrained_norm(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std timm's pretrained weights of ``name`` expect."""
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg
    return tuple(cfg["mean"]), tuple(cfg["std"])


class CnnPatchEmbed(nn.Module):
    """A CNN's first stages as a ViT patch embedding: tokens ``(B, gh, gw, D)`` (NHWC, as
    timm's ``dynamic_img_size`` ViT takes them).

    Args:
        cnn: a timm CNN name, e.g. ``tf_efficientnet_lite0``.
        modality: the images it embeds (sets the input conversion).
        patch_size: the stride of the features used (16: ``blocks.4`` of EfficientNet).
        embed_dim: token width (a 1x1 projection of the CNN's channels).
        img_size: nominal image side (timm's bookkeeping; other sizes work).
    """

    def __init__(self, cnn: str, modality: str, patch_size: int, embed_dim: int,
                 img_size: int) -> None:
        super().__init__()
        self.input = PretrainedInput(modality, *pretrained_norm(cnn))
        stages = CnnStages(cnn, patch_size)
        self.embed = HybridEmbed(stages, img_size=img_size, patch_size=1,
                                 feature_size=img_size // patch_size,
                                 feature_ratio=patch_size, in_chans=3,
                                 embed_dim=embed_dim, output_fmt="NHWC",
                                 strict_img_size=False)
        self.patch_size = (patch_size, patch_size)

    def dynamic_feat_size(self, img_hw: tuple[int, int]) -> tuple[int, int]:
        # TensorFlow-style "same" padding: a partial last patch still gives a token.
        return tuple(math.ceil(side / self.patch_size[0]) for side in img_hw)

    def forward(self, x: Tensor) -> Tensor:
        return self.embed(self.input(x))


class CnnBackbone(nn.Module):
    """A pretrained CNN per modality (or one shared), speaking :class:`SharedBackbone`'s API.

    Tokens are the last feature map's positions ``(gh * gw)`` after the optional modality
    adapter, the CLS feature their mean (the network's own global pooling): ``(B, 1 + gh *
    gw, D)``, ``D`` the CNN's feature width.

    Args:
        config: the :class:`~radpath.models.backbone.BackboneConfig` (``norm``: BatchNorm
            statistics frozen at their pretrained values, or updated by each training batch).
        spec: its registered shape (``cnn``, ``embed_dim``, ``depth``, ``patch_size``).
    """

    def __init__(self, config: pydantic.BaseModel, spec: dict[str, Any]) -> None:
        super().__init__()
        self.config = config
        self.cnn_name: str = spec["cnn"]
        self.embed_dim: int = spec["embed_dim"]
        self.depth: int = spec["depth"]
        self.reduction: int = spec["patch_size"]
        norm = pretrained_norm(self.cnn_name)
        names = ("shared",) if config.shared else ("mammo", "histo")
        self.trunks = nn.ModuleDict({name: timm_cnn(self.cnn_name) for name in names})
        self.inputs = nn.ModuleDict({m: PretrainedInput(m, *norm) for m in ("mammo", "histo")})
        self.adapters = (bottleneck_adapters(("mammo", "histo"), 1, self.embed_dim,
                                             config.adapter_dim)
                         if config.adapter == "bottleneck" else None)
        self.compiled = False
        self.pretrained_report: PretrainedReport | None = None
        if config.pretrained:
            self.pretrained_report = load_pretrained(
                self, config.pretrained, self.pretrained_targets,
                reference=lambda: timm.create_model(self.cnn_name, pretrained=False).state_dict())
        if config.norm == "frozen":
            for name in names:  # after loading: frozen layers copy the loaded statistics
                self.trunks[name] = freeze_batch_norm_2d(self.trunks[name])

    def pretrained_targets(self, key: str, value: Tensor, own: Mapping[str, torch.Size]
                           ) -> list[tuple[str, Tensor]]:
        """A timm CNN tensor to every trunk; this backbone's own keys to themselves."""
        key = strip_prefix(key)
        if key.startswith(CNN_OWN_PREFIXES):
            return [(key, value)]
        return [(f"trunks.{name}.{key}", value) for name in self.trunks]

    def trunk(self, modality: str) -> nn.Module:
        """The CNN that encodes ``modality``."""
        _check(modality)
        return self.trunks["shared" if self.config.shared else modality]

    def grid_size(self, modality: str, img_hw: tuple[int, int]) -> tuple[int, int]:
        """Feature-map grid ``(gh, gw)`` of an image of ``img_hw`` pixels ("same" padding)."""
        _check(modality)
        return tuple(math.ceil(side / self.reduction) for side in img_hw)

    def layer_id(self, name: str) -> int | None:
        """Depth of parameter ``name`` for layer-wise learning-rate decay: 0 for the stem,
        ``s + 1`` for stage ``s``, ``depth + 1`` for the head convolution; None outside
        the trunks (adapters)."""
        if not name.startswith("trunks."):
            return None
        inner = name.split(".", 2)[2]
        if inner.startswith("blocks."):
            return int(inner.split(".")[1]) + 1
        return 0 if inner.startswith(("conv_stem", "bn1")) else self.depth + 1

    @property
    def num_layers(self) -> int:
        return self.depth + 1

    def forward_tokens(self, x: Tensor, modality: str, *, domains: Tensor | None = None,
                       mixstyle: nn.Module | None = None,
                       masking: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """CLS-first tokens ``(B, 1 + gh * gw, D)``; ``mixstyle(tokens, domains)`` after
        the stages in ``config.mixstyle_layers`` (the feature map seen as tokens)."""
        if masking is not None:
            raise RadpathError("masked image modelling needs a ViT backbone, not "
                               f"{self.config.name}: set pretrain.epochs to 0")
        _check_channels(x, modality)
        net = self.trunk(modality)
        x = net.bn1(net.conv_stem(self.inputs[modality](x)))
        for index, stage in enumerate(net.blocks):
            x = stage(x)
            if mixstyle is not None and index in self.config.mixstyle_layers:
                x = _as_map(mixstyle(_as_tokens(x), domains), x.shape)
        tokens = _as_tokens(net.bn2(net.conv_head(x)))
        if self.adapters is not None:
            tokens = self.adapters[modality][0](tokens)
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)

    def forward_tokens_many(self, images: Mapping[str, Tensor], *,
                            domains: Mapping[str, Tensor | None] | None = None,
                            mixstyle: nn.Module | None = None) -> dict[str, Tensor]:
        """:meth:`forward_tokens` of each modality's images."""
        domains = domains or {}
        return {m: self.forward_tokens(x, m, domains=domains.get(m), mixstyle=mixstyle)
                for m, x in images.items()}

    def forward(self, x: Tensor, modality: str) -> Tensor:
        """The pooled feature ``(B, D)``."""
        return self.forward_tokens(x, modality)[:, 0]

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the modality adapters, not of the CNN."""
        if self.adapters is not None:
            yield from self.adapters.parameters()

    @contextlib.contextmanager
    def set_fused_attn(self, enabled: bool) -> Iterator[None]:
        """Nothing to switch: a CNN has no attention (maps that read it refuse a CNN)."""
        yield

    def use_compiled(self, enabled: bool = True) -> None:
        """Accepted for the API; a CNN runs eagerly (its kernels are few and large)."""
        self.compiled = enabled


def _as_tokens(x: Tensor) -> Tensor:
    return x.flatten(2).transpose(1, 2)


def _as_map(tokens: Tensor, shape: torch.Size) -> Tensor:
    return tokens.transpose(1, 2).reshape(shape)


def _check(modality: str) -> None:
    if modality not in PIPELINE_NORM:
        raise ValueError(f"modality must be one of {tuple(PIPELINE_NORM)}, got '{modality}'")


def _check_channels(x: Tensor, modality: str) -> None:
    _check(modality)
    channels = len(PIPELINE_NORM[modality][0])
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{modality} images must be (B, {channels}, H, W), "
                         f"got {tuple(x.shape)}")
