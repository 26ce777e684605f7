"""The backbone of a config, built one way for pretraining, the probes, retrieval and the figures."""
from __future__ import annotations

from torch import nn

from engine.config import Config
from models.backbones import build_backbone


def make_backbone(cfg: Config) -> nn.Module:
    """The backbone of cfg.model (random init, or model.checkpoint's torchvision weights)."""
    kwargs = {"width": cfg.model.width, "pool": cfg.model.pool} if cfg.model.backbone == "small3d" else {}
    return build_backbone(cfg.model.backbone, checkpoint=cfg.model.checkpoint, **kwargs)
