"""Slide-level learning on cached features: gated-attention MIL with three heads.

The bags come from :mod:`radpath.slides.bags`; the lesion hit rate that scores the patch
head is :func:`radpath.slides.localisation.lesion_hit_rate`.

The bag of a patient's patch features is pooled by radpath's :class:`GatedAttentionPool`
into a malignancy logit (:class:`BinaryHead`) and ordinal grade logits
(:class:`OrdinalHead`, the pN stage for CAMELYON17); a patch-level localisation head scores
each patch for tumour, supervised by the lesion outlines where a slide has them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydantic
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from radpath.models.heads import BinaryHead, OrdinalHead
from radpath.models.mil import GatedAttentionPool
from radpath.objectives.ordinal import ordinal_loss
from radpath.slides.bags import SlideBag


class SlideMILConfig(pydantic.BaseModel):
    """Slide MIL settings (a method's settings beside it)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    hidden: int = pydantic.Field(64, gt=0)
    num_grades: int = pydantic.Field(5, ge=0)  # 0: no grading head
    epochs: int = pydantic.Field(30, gt=0)
    lr: float = pydantic.Field(1e-3, gt=0)
    weight_decay: float = pydantic.Field(1e-4, ge=0)
    localisation_weight: float = pydantic.Field(1.0, ge=0)
    grade_weight: float = pydantic.Field(1.0, ge=0)
    seed: int = 0


class SlideMIL(nn.Module):
    """Gated-attention MIL over patch features with malignancy, grade and patch heads."""

    def __init__(self, dim: int, config: SlideMILConfig | None = None) -> None:
        super().__init__()
        config = config or SlideMILConfig()
        self.project = nn.Sequential(nn.Linear(dim, config.hidden), nn.GELU())
        self.pool = GatedAttentionPool(config.hidden, config.hidden)
        self.malignancy = BinaryHead(config.hidden)
        self.grade = OrdinalHead(config.hidden, config.num_grades) if config.num_grades > 1 \
            else None
        self.patch = nn.Linear(config.hidden, 1)

    def forward(self, features: Tensor) -> dict[str, Tensor]:
        """``features`` ``(B, K, D)`` -> logits and the attention ``(B, K)``."""
        tokens = self.project(features)
        pooled, attention = self.pool(tokens)
        out = {"malignancy": self.malignancy(pooled).reshape(-1), "attention": attention,
               "patch": self.patch(tokens).squeeze(-1)}
        if self.grade is not None:
            out["grade"] = self.grade(pooled)
        return out


def bag_loss(model: SlideMIL, bag: SlideBag, config: SlideMILConfig) -> Tensor:
    out = model(bag.features[None])
    target = torch.tensor([bag.malignant])
    loss = F.binary_cross_entropy_with_logits(out["malignancy"], target)
    known = bag.patch_tumour >= 0
    if config.localisation_weight and bool(known.any()):
        loss = loss + config.localisation_weight * F.binary_cross_entropy_with_logits(
            out["patch"][0][known], bag.patch_tumour[known])
    if "grade" in out and bag.grade >= 0 and config.grade_weight:
        loss = loss + config.grade_weight * ordinal_loss(
            out["grade"], torch.tensor([bag.grade]), model.grade.num_classes)
    return loss


def fit_slide_mil(bags: Sequence[SlideBag], config: SlideMILConfig | None = None) -> SlideMIL:
    """Train on ``bags``, one bag a step, in a seeded order (same seed, same model on CPU)."""
    config = config or SlideMILConfig()
    torch.manual_seed(config.seed)
    model = SlideMIL(bags[0].features.shape[1], config)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    model.train()
    for _ in range(config.epochs):
        for index in rng.permutation(len(bags)):
            optimiser.zero_grad()
            bag_loss(model, bags[index], config).backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def predict_bags(model: SlideMIL, bags: Sequence[SlideBag]) -> list[dict[str, np.ndarray]]:
    """Per bag: malignancy probability, attention and patch tumour probabilities."""
    model.eval()
    results = []
    for bag in bags:
        out = model(bag.features[None])
        item = {"malignancy": torch.sigmoid(out["malignancy"])[0].numpy(),
                "attention": out["attention"][0].numpy(),
                "patch": torch.sigmoid(out["patch"][0]).numpy()}
        if "grade" in out:
            item["grade"] = (torch.sigmoid(out["grade"][0]) > 0.5).sum().numpy()
        results.append(item)
    return results


def save_slide_model(model: SlideMIL, folder: str | Path, *, dim: int, config: SlideMILConfig,
                     encoder: str, grid: dict) -> Path:
    """``slide_model.safetensors`` and ``slide_model.json`` (settings, encoder, patch grid)."""
    import json

    from safetensors.torch import save_file

    from radpath.atomic import atomic_path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "slide_model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {"dim": dim, "config": config.model_dump(), "encoder": encoder, "grid": grid}
    with atomic_path(folder / "slide_model.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def load_slide_model(folder: str | Path) -> tuple[SlideMIL, dict]:
    """The model and its metadata saved by :func:`save_slide_model` (no pickle)."""
    import json

    from safetensors.torch import load_file

    from radpath.errors import RadpathError

    folder = Path(folder)
    meta_path = folder / "slide_model.json"
    if not meta_path.is_file():
        raise RadpathError(f"{folder}: no slide_model.json (expected a folder written by "
                           "save_slide_model)")
    meta = json.loads(meta_path.read_text())
    model = SlideMIL(int(meta["dim"]), SlideMILConfig(**meta["config"]))
    model.load_state_dict(load_file(folder / "slide_model.safetensors"))
    return model.eval(), meta
