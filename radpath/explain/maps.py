"""Saliency maps of mammogram views on the ViT token grid, and their way back to the film.

Four kinds (:data:`MAP_KINDS`), each ``(V, gh, gw)`` for the ``V`` views of one unit:

* ``rollout``: attention rollout (Abnar & Zuidema 2020). Each block's attention matrix,
  averaged over heads, plus the identity (the residual path), rows renormalised, multiplied
  through the blocks; the CLS row over the patch tokens. The modality adapters after each
  block are residual too and are not modelled (the identity stands for them).
* ``gradcam``: Grad-CAM on ViT tokens. The gradient of the unit's mammography malignancy
  logit with respect to the patch tokens entering the last block (the last block's own
  output patch tokens never reach the CLS token, so their gradient is zero), averaged over
  tokens to one weight per channel; the map is ``ReLU(sum_c weight_c * token_c)``.
* ``localisation``: the localisation head's token scores through a sigmoid (a per-token
  lesion probability, trained weakly from image labels).
* ``mil``: the gated-attention MIL weight of each view, as a constant map. It ranks *views*,
  not pixels: within a view it says nothing about where. With ``model.mammo_window`` the
  MIL pools windows, and the map holds each window's weight over the window.

With ``model.mammo_window``, ``rollout`` and ``gradcam`` are computed per window and
stitched into the view's grid (windows left out as background are 0).

timm's fused attention (``scaled_dot_product_attention``) never materialises the attention
matrix, so :func:`explaining` switches it off (and restores it, also on error) while the
hooks of :class:`AttentionRecorder` read the softmaxed matrix at ``attn.attn_drop``.

:func:`map_to_original` carries a grid map into the original film through the recorded
:class:`~radpath.data.mammo.Geometry` (crop, flip, resize, padding).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from radpath.data.mammo import Geometry
from radpath.models.crossmodal import CrossModalModel

MAP_KINDS = ("rollout", "gradcam", "localisation", "mil")


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`MAP_KINDS`, else a ``ValueError`` naming it."""
    if kind not in MAP_KINDS:
        raise ValueError(f"map kind must be one of {', '.join(MAP_KINDS)}; got {kind!r}")
    return kind


@contextlib.contextmanager
def explaining(model: CrossModalModel) -> Iterator[CrossModalModel]:
    """Evaluation mode with timm's fused attention off; both restored on exit, even on error."""
    was_training = model.training
    model.eval()
    try:
        with model.backbone.set_fused_attn(False):
            yield model
    finally:
        model.train(was_training)


class AttentionRecorder:
    """Records the attention matrices ``(N, heads, T, T)`` of every block of a trunk.

    Use inside :func:`explaining` (with fused attention on, nothing is recorded)::

        with explaining(model), AttentionRecorder(model, "mammo") as recorder:
            model.encode_images(images, "mammo")
        recorder.matrices  # one tensor per block
    """

    def __init__(self, model: CrossModalModel, modality: str = "mammo") -> None:
        self.blocks = list(model.backbone.trunk(modality).blocks)
        self.matrices: list[Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> AttentionRecorder:
        self.matrices = []
        # timm applies attn_drop to the softmaxed matrix when fused attention is off.
        self._handles = [block.attn.attn_drop.register_forward_hook(self._record)
                         for block in self.blocks]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _record(self, module: torch.nn.Module, inputs: tuple[Tensor, ...],
                output: Tensor) -> None:
        self.matrices.append(output.detach())


def rollout(matrices: Sequence[Tensor], grid: tuple[int, int]) -> Tensor:
    """Attention rollout ``(N, gh, gw)`` of per-block matrices ``(N, heads, T, T)``."""
    if not matrices:
        raise RuntimeError("no attention matrix was recorded: is fused attention still on?")
    joint = None
    for matrix in matrices:
        attention = matrix.float().mean(dim=1)
        attention = attention + torch.eye(attention.shape[-1], device=attention.device)
        attention = attention / attention.sum(dim=-1, keepdim=True)
        joint = attention if joint is None else attention @ joint
    return joint[:, 0, 1:].reshape(-1, *grid)


def _valid_views(batch: Mapping[str, Tensor]) -> Tensor:
    """Indices of the unit's existing views (batch of one unit)."""
    return torch.nonzero(batch["mammo_mask"][0].bool(), as_tuple=False).flatten()


def rollout_maps(model: CrossModalModel, batch: Mapping[str, Tensor]) -> np.ndarray:
    """Attention rollout of every existing view of the one unit in ``batch`` (per window,
    stitched, for a windowed model)."""
    images = batch["mammo"][0, _valid_views(batch)]
    windowed = bool(model.config.mammo_window)
    if windowed:
        windows, keep, layout = model.mammo_windows(images)
        images = windows[keep]
    grid = model.backbone.grid_size("mammo", tuple(images.shape[-2:]))
    with explaining(model), AttentionRecorder(model, "mammo") as recorder, torch.no_grad():
        model.encode_images(images, "mammo")
    maps = rollout(recorder.matrices, grid)
    if windowed:
        maps = model.stitch_kept(maps, keep, layout)
    return maps.cpu().numpy()


def gradcam_maps(model: CrossModalModel, batch: Mapping[str, Tensor]) -> np.ndarray:
    """Grad-CAM of the unit's mammography logit on the last block's patch tokens."""
    trunk = model.backbone.trunk("mammo")
    captured: list[Tensor] = []

    def keep(module: torch.nn.Module, inputs: tuple[Tensor, ...]) -> None:
        inputs[0].retain_grad()
        captured.append(inputs[0])

    # The tokens *entering* the last block: its output patch tokens no longer reach the
    # CLS token, so their gradient would be zero (pytorch-grad-cam uses blocks[-1].norm1).
    handle = trunk.blocks[-1].register_forward_pre_hook(keep)
    try:
        with explaining(model), torch.enable_grad():
            out = model(batch)
            out["mammo_logit"][0].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    tokens = captured[0]  # (valid views or windows, 1 + P, D): the mammograms pass first
    patches, grads = tokens[:, 1:].detach(), tokens.grad[:, 1:]
    weights = grads.mean(dim=1, keepdim=True)
    cam = torch.relu((patches * weights).sum(dim=-1))
    if not model.config.mammo_window:
        grid = model.backbone.grid_size("mammo", tuple(batch["mammo"].shape[-2:]))
        return cam.reshape(-1, *grid).cpu().numpy()
    _, keep, layout = model.mammo_windows(batch["mammo"][0, _valid_views(batch)])
    return model.stitch_kept(cam.reshape(-1, *model.window_grid), keep, layout).cpu().numpy()


def localisation_maps(out: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> np.ndarray:
    """Sigmoid of the localisation head's token scores of the unit's existing views."""
    if "token_scores" not in out:
        raise ValueError("this model has no localisation head (model.localisation is off); "
                         "use another map kind")
    return torch.sigmoid(out["token_scores"][0, _valid_views(batch)]).detach().cpu().numpy()


def mil_maps(out: Mapping[str, Tensor], batch: Mapping[str, Tensor],
             grid: tuple[int, int], window_grid: tuple[int, int] | None = None) -> np.ndarray:
    """The MIL attention weight of each view (constant over it), or of each window (constant
    over the window) for a windowed model, whose windows span ``window_grid`` tokens."""
    views = _valid_views(batch)
    if "mammo_window_attention" in out and window_grid is not None:
        windows = out["mammo_window_attention"][0, views].detach().cpu().numpy()
        layout = (grid[0] // window_grid[0], grid[1] // window_grid[1])
        weights = windows.reshape(len(windows), *layout)
        return np.kron(weights, np.ones(window_grid, dtype=np.float32)).astype(np.float32)
    weights = out["mammo_attention"][0, views].detach().cpu().numpy()
    return np.ones((len(weights), *grid), dtype=np.float32) * weights[:, None, None]


def compute_maps(model: CrossModalModel, batch: Mapping[str, Tensor],
                 kinds: Sequence[str] = MAP_KINDS,
                 out: Mapping[str, Tensor] | None = None) -> dict[str, np.ndarray]:
    """Maps ``{kind: float32 (V, gh, gw)}`` of the existing views of one unit.

    Args:
        model: the cross-modal model (left in the training mode it came in).
        batch: a batch of one unit (:func:`radpath.batch.dataset.collate_patients`).
        kinds: which of :data:`MAP_KINDS` to compute.
        out: the model's outputs on ``batch`` in evaluation mode, when already computed.
    """
    if batch["mammo"].shape[0] != 1:
        raise ValueError(f"maps are computed for one unit at a time, got {batch['mammo'].shape[0]}")
    if not bool(batch["mammo_mask"][0].any()):
        raise ValueError("the unit has no mammogram to explain")
    if out is None:
        with explaining(model), torch.no_grad():
            out = model(batch)
    grid = model.backbone.grid_size("mammo", tuple(batch["mammo"].shape[-2:]))
    if model.config.backbone.is_cnn and {"rollout", "gradcam"} & set(kinds):
        # Both read a transformer's attention or its last block's input tokens.
        raise ValueError(f"map kinds rollout and gradcam need a ViT backbone, not "
                         f"{model.config.backbone.name}: use localisation or mil")
    makers = {"rollout": lambda: rollout_maps(model, batch),
              "gradcam": lambda: gradcam_maps(model, batch),
              "localisation": lambda: localisation_maps(out, batch),
              "mil": lambda: mil_maps(out, batch, grid, model.window_grid)}
    return {kind: makers[check_kind(kind)]().astype(np.float32) for kind in kinds}


# ---------------------------------------------------------------- into image coordinates

def map_to_output(grid_map: np.ndarray, output_size: int) -> np.ndarray:
    """A ``(gh, gw)`` grid map bilinearly resampled to the ``output_size``-pixel square image.

    Cell ``(i, j)`` covers output pixels ``[j p, (j + 1) p) x [i p, (i + 1) p)``; its value
    sits at the cell centre (OpenCV's half-pixel convention makes that exact).
    """
    grid_map = np.asarray(grid_map, dtype=np.float32)
    return cv2.resize(grid_map, (output_size, output_size), interpolation=cv2.INTER_LINEAR)


def _axis_affine(geometry: Geometry, axis: int, grid_cells: int,
                 display_scale: float) -> tuple[float, float]:
    """``(a, b)``: grid-cell index ``a * k + b`` sampled by display pixel index ``k``.

    Display pixel ``k`` has its centre at original coordinate ``(k + 0.5) / display_scale``;
    :meth:`Geometry.to_output` carries it into output pixels, and a cell of ``S / g`` output
    pixels holds its value at its centre, index ``x / (S / g) - 0.5``.
    """
    cell = geometry.output_size / grid_cells

    def index(k: float) -> float:
        point = np.zeros(2)
        point[axis] = (k + 0.5) / display_scale
        return float(geometry.to_output(point)[axis]) / cell - 0.5

    b = index(0.0)
    return index(1.0) - b, b


def map_to_original(grid_map: np.ndarray, geometry: Geometry,
                    original_shape: tuple[int, int] | None = None, *,
                    display_scale: float = 1.0) -> np.ndarray:
    """Carry a token-grid map into the original image's frame.

    Bilinear resampling of the grid into output pixels followed by the inverse of the
    preprocessing geometry (padding, resize, flip, crop) is one affine map, applied with a
    single ``cv2.warpAffine``. Pixels outside the crop box (outside the preprocessed area)
    are 0.

    Args:
        grid_map: ``(gh, gw)`` map on the token grid of the ``geometry.output_size`` image.
        geometry: the preprocessing geometry of the view.
        original_shape: ``(height, width)`` of the original image; defaults to
            ``geometry.original_shape``.
        display_scale: pixels of the result per original pixel (< 1 for a smaller image
            in the original frame, e.g. for display).

    Returns:
        float32 ``(round(height * display_scale), round(width * display_scale))`` map.
    """
    grid_map = np.asarray(grid_map, dtype=np.float32)
    height, width = original_shape or geometry.original_shape
    out_h, out_w = max(1, round(height * display_scale)), max(1, round(width * display_scale))
    ax, bx = _axis_affine(geometry, 0, grid_map.shape[1], display_scale)
    ay, by = _axis_affine(geometry, 1, grid_map.shape[0], display_scale)
    matrix = np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)
    # BORDER_REPLICATE inside the crop: its edge pixels sample half a cell past the grid.
    warped = cv2.warpAffine(grid_map, matrix, (out_w, out_h),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    y0, x0, y1, x1 = geometry.crop_box
    centres_x = (np.arange(out_w) + 0.5) / display_scale
    centres_y = (np.arange(out_h) + 0.5) / display_scale
    inside = (((centres_y >= y0) & (centres_y < y1))[:, None]
              & ((centres_x >= x0) & (centres_x < x1))[None, :])
    return np.where(inside, warped, 0.0).astype(np.float32)
