"""CUDA's bf16 autocast policy, emulated on the CPU, for tests of the mixed-precision path.

CPU autocast runs matrix products in bf16 as CUDA's does, but leaves ops such as
``logsumexp``, ``softmax`` or ``sum`` in bf16 where CUDA's autocast computes them in float32
(and promotes ops such as ``index_put`` to the widest input). Code that mixes the two kinds of
output, fine on CPU, then fails on a GPU only: a ``masked_scatter`` of float32 logits into
bf16 scores did, in ``configs/paper.yaml``'s first GPU run. Under :func:`cuda_bf16_autocast`
the CPU reproduces CUDA's output dtypes, so such code fails here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

# CUDA autocast's float32 lists (ATen's AT_FORALL_FP32 and AT_FORALL_FP32_SET_OPT_DTYPE, and
# the torch.amp docs), by the names the Python functions and Tensor methods carry. Only
# out-of-place ops autocast: in-place ones (``exp_``) keep their tensor's dtype.
FLOAT32_OPS = frozenset({
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow", "__pow__", "__rpow__", "__rtruediv__",
    "__rdiv__", "softplus", "layer_norm", "group_norm", "norm", "nuclear_norm", "normalize",
    "cosine_similarity", "poisson_nll_loss", "cosine_embedding_loss", "nll_loss",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist",
    "renorm", "logsumexp", "interpolate", "prod", "softmax", "softmin", "log_softmax",
    "cumprod", "cumsum", "sum", "vector_norm", "matrix_norm", "cross_entropy",
})
# CUDA autocast's "widest input type" list.
PROMOTE_OPS = frozenset({
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "grid_sampler", "index_put",
    "scatter_add", "tensordot", "cat", "stack", "index_copy",
})


def _widest(args: tuple) -> torch.dtype | None:
    dtypes = [a.dtype for a in _tensors(args) if a.is_floating_point()]
    return max(dtypes, key=lambda d: torch.finfo(d).bits) if dtypes else None


def _tensors(args) -> Iterator[Tensor]:
    for arg in args:
        if isinstance(arg, Tensor):
            yield arg
        elif isinstance(arg, list | tuple):
            yield from _tensors(arg)


def _cast(args, dtype: torch.dtype):
    if isinstance(args, Tensor):
        return args.to(dtype) if args.is_floating_point() else args
    if isinstance(args, list | tuple):
        return type(args)(_cast(a, dtype) for a in args)
    return args


class _CudaPolicy(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if not torch.is_autocast_enabled("cpu"):
            return func(*args, **kwargs)
        if name in PROMOTE_OPS and (widest := _widest(args)) is not None:
            args = _cast(args, widest)
        out = func(*args, **kwargs)
        # An explicit dtype= makes an op ineligible for autocast: its output keeps it.
        if (name in FLOAT32_OPS and "dtype" not in kwargs and isinstance(out, Tensor)
                and out.dtype == torch.bfloat16):
            return out.float()
        return out


@contextlib.contextmanager
def cuda_bf16_autocast(enter_autocast: bool = True) -> Iterator[None]:
    """CPU bf16 autocast with CUDA's float32 and promotion lists applied to outputs.

    Args:
        enter_autocast: also enter ``torch.autocast("cpu", torch.bfloat16)``; leave it to the
            caller (e.g. Lightning's ``bf16-mixed`` precision) when False.
    """
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if enter_autocast
                else contextlib.nullcontext())
    with _CudaPolicy(), autocast:
        yield
