"""Fine-tuning a pretrained backbone as practitioners do: a frozen warm-up, then layer-wise
learning-rate decay (``optim.freeze_pretrained_epochs``, ``optim.layer_decay``).

During the warm-up only what is new learns (adapters, MIL pooling, heads, a ViT behind a
CNN stem): the randomly initialised heads' first, large gradients would otherwise run back
into the pretrained weights and wreck them (Kumar et al. 2022, "Fine-tuning can distort
pretrained features"). Afterwards every layer trains (but the ``optim.frozen_layers``
first, the generic edges and textures small data should not move; also what makes a CPU
step cheap, since no gradient then runs back through the high-resolution stages), the
deeper the faster: layer ``l`` of
``L`` at ``decay ** (L - l)`` times the rate (BEiT, Bao et al. 2022; timm's
``param_groups_layer_decay``), since early layers hold the generic features.
"""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer


def pretrained_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The backbone's parameters that received pretrained tensors (none without weights)."""
    report = getattr(backbone, "pretrained_report", None)
    if report is None:
        return []
    loaded = set(report.loaded)
    return [p for name, p in backbone.named_parameters() if name in loaded]


def early_layers(backbone: nn.Module, below: int) -> list[nn.Parameter]:
    """The backbone's pretrained parameters whose ``layer_id`` is below ``below`` (the stem
    and first stages: ``optim.frozen_layers``); a new layer among them, such as a hybrid's
    projection behind its CNN stem, still learns."""
    pretrained = {id(p) for p in pretrained_parameters(backbone)}
    return [p for name, p in backbone.named_parameters()
            if id(p) in pretrained and (layer := backbone.layer_id(name)) is not None
            and layer < below]


def set_frozen(parameters: list[nn.Parameter], frozen: bool) -> None:
    """Switch gradients of ``parameters`` off (``frozen``) or on; AdamW skips parameters
    without a gradient, so neither their moments nor their weight decay move meanwhile."""
    for param in parameters:
        param.requires_grad_(not frozen)


def layer_scales(backbone: nn.Module, decay: float) -> dict[int, float]:
    """``{id(parameter): decay ** (num_layers - layer)}`` for the backbone's layered
    parameters (its ``layer_id``; adapters are not layered and keep the full rate)."""
    scales = {}
    for name, param in backbone.named_parameters():
        layer = backbone.layer_id(name)
        if layer is not None:
            scales[id(param)] = decay ** (backbone.num_layers - layer)
    return scales


def scale_by_layer(optimizer: Optimizer, scales: dict[int, float]) -> Optimizer:
    """Split each parameter group of a fresh ``optimizer`` by the scale of its parameters
    (1 for those not in ``scales``), each part at the group's rate times its scale, in place."""
    groups = []
    for group in optimizer.param_groups:
        by_scale: dict[float, list[nn.Parameter]] = {}
        for param in group["params"]:
            by_scale.setdefault(scales.get(id(param), 1.0), []).append(param)
        for scale, params in sorted(by_scale.items()):
            groups.append({**group, "params": params, "lr": group["lr"] * scale})
    optimizer.param_groups.clear()
    for group in groups:
        optimizer.add_param_group(group)
    return optimizer
