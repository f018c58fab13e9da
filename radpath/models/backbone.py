"""One timm vision transformer shared by mammograms and H&E tiles.

Each modality has its own patch embedding (1-channel mammograms, 3-channel tiles) and its
own lightweight adapters; the transformer blocks are shared (or, for the ablation, one
transformer per modality). The ViT itself is timm's ``VisionTransformer``: this module only
swaps the patch embedding and inserts adapters and MixStyle between its blocks.

Backbone shapes are registered in :data:`BACKBONES`, each a small function returning
``VisionTransformer`` keyword arguments (timm's ``@register_model`` habit).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import pydantic
import torch
from timm.layers import freeze_batch_norm_2d
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from radpath.models.adapters import LoRALinear, bottleneck_adapters, inject_lora
from radpath.models.cnn import CnnBackbone, CnnPatchEmbed
from radpath.models.pretrained import (
    PretrainedReport,
    fit_pos_embed,
    grey_channels,
    load_pretrained,
    lora_key,
    strip_prefix,
)
from radpath.models.stems import hmlp_strides, patch_embedding
from radpath.registry import Registry

MODALITIES = ("mammo", "histo")
IN_CHANS = {"mammo": 1, "histo": 3}
NUM_PREFIX_TOKENS = 1  # the CLS token; no register tokens

BACKBONES: Registry[Callable[..., dict[str, Any]]] = Registry("backbone")


@BACKBONES.register
def vit_test() -> dict[str, Any]:
    """A 2-block, 64-wide ViT for unit tests (CPU, milliseconds)."""
    return dict(patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)


@BACKBONES.register
def vit_micro() -> dict[str, Any]:
    """A 4-block, 64-wide ViT: twice vit_test's depth at its width, for CPU runs."""
    return dict(patch_size=8, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0)


@BACKBONES.register
def vit_mini() -> dict[str, Any]:
    """A 4-block, 128-wide ViT for CPU runs on real data."""
    return dict(patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0)


@BACKBONES.register
def vit_mini16() -> dict[str, Any]:
    """vit_mini's blocks on 16-px patches: the transformer behind a CNN stem
    (``stem: cnn``), whose stride-16 features are its tokens."""
    return dict(patch_size=16, embed_dim=128, depth=4, num_heads=4, mlp_ratio=4.0)


@BACKBONES.register
def efficientnet_lite0() -> dict[str, Any]:
    """A CNN backbone (:class:`~radpath.models.cnn.CnnBackbone`): timm's
    ``tf_efficientnet_lite0`` (4.7 M parameters, ImageNet top-1 75 %), tokens at stride 32,
    seven stages (``mixstyle_layers`` index them)."""
    return dict(kind="cnn", cnn="tf_efficientnet_lite0", patch_size=32, embed_dim=1280,
                depth=7)


@BACKBONES.register
def vit_tiny() -> dict[str, Any]:
    """ViT-Ti/16 (timm ``vit_tiny_patch16_224``)."""
    return dict(patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4.0)


@BACKBONES.register
def vit_small() -> dict[str, Any]:
    """ViT-S/16 (timm ``vit_small_patch16_224``)."""
    return dict(patch_size=16, embed_dim=384, depth=12, num_heads=6, mlp_ratio=4.0)


@BACKBONES.register
def vit_base() -> dict[str, Any]:
    """ViT-B/16 (timm ``vit_base_patch16_224``)."""
    return dict(patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4.0)


class BackboneConfig(pydantic.BaseModel):
    """The shared encoder.

    Attributes:
        name: a registered backbone shape (:data:`BACKBONES`).
        img_size: mammogram side in pixels (sets the native position-embedding grid;
            other sizes work, the position embedding is resampled).
        histo_img_size: histology tile side in pixels.
        shared: one transformer for both modalities; False builds one per modality
            (the ablation without sharing).
        adapter: modality adapter kind: residual bottleneck after each block, LoRA on each
            block's ``qkv``, or none.
        adapter_dim: bottleneck width, or LoRA rank.
        mixstyle_layers: block indices after which a MixStyle module (when one is passed
            to the forward pass, by ``mixstyle`` and ``paper``) mixes token statistics;
            the first block by default: shallow features carry style (stain, exposure)
            rather than content (Zhou et al. 2021).
        drop_path: stochastic depth rate of the last block.
        stem: ``linear``, ViT's patch embedding; ``hmlp``, a nonlinear stem that stays
            within each patch (:mod:`radpath.models.stems`; pretrained ViT weights then
            leave the stem as initialised); or ``cnn``, the first stages of ``cnn`` up to
            the patch size (a hybrid ViT, :class:`~radpath.models.cnn.CnnPatchEmbed`),
            which CNN weights in ``pretrained`` initialise.
        cnn: the timm CNN of ``stem: cnn``.
        norm: the BatchNorm layers of a CNN (backbone or stem): ``frozen``, statistics and
            affine parameters kept at their pretrained values (batches of a few units
            estimate statistics badly, and a frozen trunk must not drift); ``batch``,
            updated by each training batch as usual. Unused by a plain ViT.
        pretrained: where the weights come from: a local ``.safetensors``/``.pth``/``.pt``
            file, ``pkg:NAME`` (an installed weights package), or ``timm:NAME`` /
            ``hf-hub:NAME`` to let timm download them (needs network access); see
            :mod:`radpath.models.pretrained`.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str = "vit_test"
    img_size: int = pydantic.Field(64, ge=8)
    histo_img_size: int = pydantic.Field(64, ge=8)
    shared: bool = True
    adapter: Literal["bottleneck", "lora", "none"] = "bottleneck"
    adapter_dim: int = pydantic.Field(16, ge=1)
    mixstyle_layers: tuple[int, ...] = (0,)
    drop_path: float = pydantic.Field(0.0, ge=0.0, lt=1.0)
    stem: Literal["linear", "hmlp", "cnn"] = "linear"
    cnn: str = "tf_efficientnet_lite0"
    norm: Literal["frozen", "batch"] = "frozen"
    pretrained: str | None = None

    @pydantic.field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone '{name}'; known: {', '.join(BACKBONES)}")
        return name

    @pydantic.model_validator(mode="after")
    def _fits_the_backbone(self) -> BackboneConfig:
        spec = BACKBONES.get(self.name)()
        bad = [i for i in self.mixstyle_layers if not 0 <= i < spec["depth"]]
        if bad:
            raise ValueError(f"mixstyle_layers {bad} outside the {spec['depth']} blocks of "
                             f"{self.name}")
        if self.stem == "hmlp":
            hmlp_strides(spec["patch_size"])  # raises unless a power of two
        if spec.get("kind") == "cnn" and (self.adapter == "lora" or self.stem != "linear"):
            raise ValueError(f"{self.name} is a CNN: model.backbone.adapter must be "
                             f"bottleneck or none and stem linear (got {self.adapter}, "
                             f"{self.stem})")
        return self

    @property
    def is_cnn(self) -> bool:
        """Whether :func:`build_backbone` makes a :class:`CnnBackbone`."""
        return BACKBONES.get(self.name)().get("kind") == "cnn"


def build_backbone(config: BackboneConfig) -> SharedBackbone | CnnBackbone:
    """The backbone ``config.name`` names: a ViT, or a CNN (``kind: cnn`` shapes)."""
    spec = BACKBONES.get(config.name)()
    if spec.get("kind") == "cnn":
        return CnnBackbone(config, spec)
    return SharedBackbone(config)


class _NativeGrid(nn.Module):
    """Stands in for the patch embedding inside timm's ``VisionTransformer``.

    timm's ``_pos_embed`` reads ``patch_embed.grid_size`` as the grid the position
    embedding was learned on, to resample it for other image sizes. The real patch
    embeddings live per modality in :attr:`SharedBackbone.patch_embed`.
    """

    def __init__(self, grid_size: tuple[int, int]) -> None:
        super().__init__()
        self.grid_size = grid_size

    def forward(self, x: Tensor) -> Tensor:
        raise RuntimeError("use SharedBackbone.patch_embed[modality], not the trunk's own")


def _trunk(spec: dict[str, Any], img_size: int, drop_path: float) -> VisionTransformer:
    """A timm ViT without head whose patch embedding is replaced by :class:`_NativeGrid`."""
    vit = VisionTransformer(img_size=img_size, num_classes=0, global_pool="token",
                            class_token=True, dynamic_img_size=True,
                            drop_path_rate=drop_path, **spec)
    vit.patch_embed = _NativeGrid(vit.patch_embed.grid_size)
    return vit


class SharedBackbone(nn.Module):
    """timm ViT blocks shared by both modalities, with per-modality embeddings and adapters.

    Args:
        config: the backbone configuration.

    Attributes:
        embed_dim: token width ``D``.
        patch_embed: ``{modality: PatchEmbed}``.
        encoders: ``{"shared": ViT}``, or ``{"mammo": ViT, "histo": ViT}`` when not shared.
        adapters: ``{modality: [BottleneckAdapter per block]}``, or None.
        pretrained_report: what loading ``config.pretrained`` did, or None.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        spec = BACKBONES.get(config.name)()
        self.config = config
        self.embed_dim: int = spec["embed_dim"]
        self.depth: int = spec["depth"]
        sizes = {"mammo": config.img_size, "histo": config.histo_img_size}
        self.patch_embed = nn.ModuleDict(
            {m: _embedding(config, spec, m, sizes[m]) for m in MODALITIES})
        trunks = {"shared": config.img_size} if config.shared else sizes
        self.encoders = nn.ModuleDict(
            {name: _trunk(spec, size, config.drop_path) for name, size in trunks.items()})
        self.adapters = (bottleneck_adapters(MODALITIES, self.depth, self.embed_dim,
                                             config.adapter_dim)
                         if config.adapter == "bottleneck" else None)
        if config.adapter == "lora":
            for name, vit in self.encoders.items():
                inject_lora(vit.blocks, MODALITIES if name == "shared" else (name,),
                            config.adapter_dim)
        self.compiled = False
        self.pretrained_report: PretrainedReport | None = None
        if config.pretrained:
            self.pretrained_report = load_pretrained(
                self, config.pretrained, self.pretrained_targets,
                reference=_cnn_reference(config) if config.stem == "cnn" else None)
        if config.stem == "cnn" and config.norm == "frozen":
            for m in MODALITIES:  # after loading: frozen layers copy the loaded statistics
                embed = self.patch_embed[m].embed
                embed.backbone = freeze_batch_norm_2d(embed.backbone)

    def pretrained_targets(self, key: str, value: Tensor, own: Mapping[str, torch.Size]
                           ) -> list[tuple[str, Tensor]]:
        """Where one source tensor goes: this backbone's own key; a timm ViT's blocks to
        every trunk, its 3-channel patch embedding to the histology one and, summed over
        channels (timm's ``adapt_input_conv``: the RGB filter's response to a grey
        image), to the mammography one, its position embedding resampled to this grid;
        with ``stem: cnn``, a timm CNN's stages to both modalities' stems."""
        key = strip_prefix(key)
        if key.startswith(_OWN_PREFIXES):
            return [(key, value)]
        if self.config.stem == "cnn":
            return [(f"patch_embed.{m}.embed.backbone.{key}", value) for m in MODALITIES]
        if key.startswith("patch_embed."):
            rest = key.removeprefix("patch_embed.")
            return [(f"patch_embed.{m}.{rest}", grey_channels(rest, value, IN_CHANS[m]))
                    for m in MODALITIES]
        targets = [lora_key(f"encoders.{name}.{key}", own) for name in self.encoders]
        return [(target, fit_pos_embed(target, value, own, NUM_PREFIX_TOKENS))
                for target in targets]

    def layer_id(self, name: str) -> int | None:
        """Depth of parameter ``name`` for layer-wise learning-rate decay: 0 for the patch
        embedding (a CNN stem included) and the CLS and position embeddings, ``i + 1`` for
        block ``i``, ``depth + 1`` for the final norm; None for the adapters."""
        if name.startswith("adapters.") or ".lora_" in name:
            return None
        if name.startswith("encoders.") and ".blocks." in name:
            return int(name.split(".blocks.")[1].split(".")[0]) + 1
        if name.startswith("encoders.") and ".norm." in name and ".blocks." not in name:
            return self.depth + 1
        return 0

    @property
    def num_layers(self) -> int:
        return self.depth + 1

    def trunk(self, modality: str) -> VisionTransformer:
        """The timm transformer that encodes ``modality``."""
        _check_modality(modality)
        return self.encoders["shared" if self.config.shared else modality]

    def grid_size(self, modality: str, img_hw: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` of an image of ``img_hw`` pixels."""
        _check_modality(modality)
        return tuple(self.patch_embed[modality].dynamic_feat_size(tuple(img_hw)))

    def forward_tokens(self, x: Tensor, modality: str, *, domains: Tensor | None = None,
                       mixstyle: nn.Module | None = None,
                       masking: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """All tokens after the final norm, CLS first: ``(B, 1 + gh * gw, D)``.

        Mirrors timm's ``VisionTransformer.forward_features`` with the modality's patch
        embedding, its adapter after every block, and ``mixstyle(tokens, domains)`` after
        the blocks listed in ``config.mixstyle_layers``.

        Args:
            x: images ``(B, C, H, W)`` with ``C`` = 1 (mammo) or 3 (histo).
            modality: ``"mammo"`` or ``"histo"``.
            domains: domain index of each image, passed on to ``mixstyle``.
            mixstyle: a module called as ``mixstyle(tokens, domains)``; None skips it.
            masking: ``(masked, token)``: patches where ``masked`` ``(B, gh, gw)`` is True
                enter the blocks as ``token`` ``(D,)`` instead of their embedding (masked
                image modelling, :mod:`radpath.models.masked`).
        """
        vit = self.trunk(modality)
        _check_images(x, modality)
        self._select_lora(vit, modality)
        encode = _compiled(_encode) if self.compiled else _encode
        return encode(self, vit, x, modality, domains, mixstyle, masking)

    def forward_tokens_many(self, images: Mapping[str, Tensor], *,
                            domains: Mapping[str, Tensor | None] | None = None,
                            mixstyle: nn.Module | None = None) -> dict[str, Tensor]:
        """:meth:`forward_tokens` of several modalities' images: ``{modality: tokens}``.

        When the modalities share one transformer, bottleneck (or no) adapters and one
        token grid, their images cross the blocks as one batch, each modality's adapter and
        MixStyle applied to its own rows: one pass launches half the kernels of two, and a
        GPU step of small batches is bound by launching them. The tokens are those of
        separate passes up to float rounding. Otherwise (separate encoders, LoRA, grids
        that differ) one :meth:`forward_tokens` per modality.

        Args:
            images: ``{modality: (B_m, C_m, H, W)}``.
            domains: ``{modality: (B_m,)}`` domain indices, passed on to ``mixstyle``.
            mixstyle: as in :meth:`forward_tokens`, applied to each modality's rows alone.
        """
        domains = domains or {}
        for modality, x in images.items():
            _check_images(x, modality)
        if not self._one_pass(images):
            return {m: self.forward_tokens(x, m, domains=domains.get(m), mixstyle=mixstyle)
                    for m, x in images.items()}
        encode = _compiled(_encode_joint) if self.compiled else _encode_joint
        return encode(self, self.encoders["shared"], dict(images), dict(domains), mixstyle)

    def _one_pass(self, images: Mapping[str, Tensor]) -> bool:
        """Whether ``images`` of several modalities can cross the blocks as one batch."""
        grids = {self.grid_size(m, tuple(x.shape[-2:])) for m, x in images.items()}
        return (len(images) > 1 and len(grids) == 1 and self.config.shared
                and self.config.adapter != "lora")  # LoRA's update is chosen per pass

    def forward(self, x: Tensor, modality: str) -> Tensor:
        """The CLS embedding ``(B, D)``."""
        return self.forward_tokens(x, modality)[:, 0]

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the modality adapters (bottleneck or LoRA), not of the ViT."""
        if self.adapters is not None:
            yield from self.adapters.parameters()
        for module in self.modules():
            if isinstance(module, LoRALinear):
                yield from module.lora_a.values()
                yield from module.lora_b.values()

    @contextlib.contextmanager
    def set_fused_attn(self, enabled: bool) -> Iterator[None]:
        """Switch timm's fused attention on or off in every block, restoring it on exit.

        Fused attention (``scaled_dot_product_attention``) never materialises the
        attention matrix, so hooks that explain the model need it off.
        """
        attns = [block.attn for vit in self.encoders.values() for block in vit.blocks]
        previous = [attn.fused_attn for attn in attns]
        for attn in attns:
            attn.fused_attn = enabled
        try:
            yield
        finally:
            for attn, value in zip(attns, previous, strict=True):
                attn.fused_attn = value

    def use_compiled(self, enabled: bool = True) -> None:
        """Run :meth:`forward_tokens` and :meth:`forward_tokens_many` through
        ``torch.compile`` (or back in eager mode).

        Compiling fuses the many small operations of the blocks and adapters (norms,
        activations, residual adds, casts) into few kernels: on a GPU an eager step of
        small batches spends its time launching them. The first step of each modality
        compiles (minutes for ViT-B on an H200); the weights and their names do not change.
        """
        self.compiled = enabled

    @staticmethod
    def _select_lora(vit: VisionTransformer, modality: str) -> None:
        # Shared blocks cannot tell which modality they see: tell the LoRA layers.
        for module in vit.blocks.modules():
            if isinstance(module, LoRALinear):
                module.modality = modality


def _embedding(config: BackboneConfig, spec: dict[str, Any], modality: str,
               img_size: int) -> nn.Module:
    if config.stem == "cnn":
        return CnnPatchEmbed(config.cnn, modality, spec["patch_size"], spec["embed_dim"],
                             img_size)
    return patch_embedding(img_size=img_size, patch_size=spec["patch_size"],
                           in_chans=IN_CHANS[modality], embed_dim=spec["embed_dim"],
                           stem=config.stem)


def _cnn_reference(config: BackboneConfig) -> Callable[[], dict[str, Tensor]]:
    import timm

    return lambda: timm.create_model(config.cnn, pretrained=False).state_dict()


def _encode(backbone: SharedBackbone, vit: VisionTransformer, x: Tensor, modality: str,
            domains: Tensor | None, mixstyle: nn.Module | None,
            masking: tuple[Tensor, Tensor] | None) -> Tensor:
    """The body of :meth:`SharedBackbone.forward_tokens`, a free function so that its
    compiled form holds no reference to one backbone (copies of a model stay apart)."""
    x = backbone.patch_embed[modality](x)
    if masking is not None:
        masked, token = masking
        x = torch.where(masked[..., None], token.to(x), x)
    x = vit.norm_pre(vit.patch_drop(vit._pos_embed(x)))
    for index, block in enumerate(vit.blocks):
        x = block(x)
        if backbone.adapters is not None:
            x = backbone.adapters[modality][index](x)
        if mixstyle is not None and index in backbone.config.mixstyle_layers:
            x = mixstyle(x, domains)
    return vit.norm(x)


def _encode_joint(backbone: SharedBackbone, vit: VisionTransformer, images: dict[str, Tensor],
                  domains: dict[str, Tensor | None],
                  mixstyle: nn.Module | None) -> dict[str, Tensor]:
    """The body of :meth:`SharedBackbone.forward_tokens_many`'s single pass: each
    modality's rows get its own patch embedding, adapters and MixStyle statistics."""
    modalities = list(images)
    embedded = [vit._pos_embed(backbone.patch_embed[m](images[m])) for m in modalities]
    counts = [len(tokens) for tokens in embedded]
    x = vit.norm_pre(vit.patch_drop(torch.cat(embedded)))
    for index, block in enumerate(vit.blocks):
        x = block(x)
        mixing = mixstyle is not None and index in backbone.config.mixstyle_layers
        if backbone.adapters is None and not mixing:
            continue
        rows = list(x.split(counts))
        for i, modality in enumerate(modalities):
            if backbone.adapters is not None:
                rows[i] = backbone.adapters[modality][index](rows[i])
            if mixing:
                rows[i] = mixstyle(rows[i], domains.get(modality))
        x = torch.cat(rows)
    return dict(zip(modalities, vit.norm(x).split(counts), strict=True))


@functools.cache
def _compiled(encode: Callable[..., Any]) -> Callable[..., Any]:
    # dynamic: the number of valid views and tiles changes from batch to batch.
    return torch.compile(encode, dynamic=True)


def _check_modality(modality: str) -> None:
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got '{modality}'")


def _check_images(x: Tensor, modality: str) -> None:
    _check_modality(modality)
    if x.ndim != 4 or x.shape[1] != IN_CHANS[modality]:
        raise ValueError(f"{modality} images must be (B, {IN_CHANS[modality]}, H, W), "
                         f"got {tuple(x.shape)}")




_OWN_PREFIXES = ("encoders.", "patch_embed.mammo.", "patch_embed.histo.", "adapters.")
