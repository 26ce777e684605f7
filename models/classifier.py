"""A backbone with a classification head on top: the model of the linear probe and of finetuning.

Input clips NCTHW float, output (N, num_classes) logits.
"""
import contextlib

import torch
from torch import nn

from models.heads import Classifier


class VideoClassifier(nn.Module):
    """backbone -> Classifier. frozen: the backbone stays in eval mode and gets no gradients."""

    def __init__(self, backbone: nn.Module, num_classes: int, dropout: float, frozen: bool):
        super().__init__()
        self.backbone = backbone
        self.head = Classifier(backbone.feat_dim, num_classes, dropout)
        self.frozen = frozen
        if frozen:
            backbone.requires_grad_(False)
            backbone.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward(self, x):
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            features = self.backbone(x)
        return self.head(features)
