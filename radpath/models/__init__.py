"""Models: the shared timm backbone with modality adapters, MIL pooling and heads."""

from radpath.models.backbone import BACKBONES, BackboneConfig, SharedBackbone
from radpath.models.crossmodal import CrossModalModel, ModelConfig

__all__ = ["BACKBONES", "BackboneConfig", "CrossModalModel", "ModelConfig", "SharedBackbone"]
