"""Tiny backbones for the MoCo tests (NCTHW in, (N, feat_dim) out)."""

from torch import nn

TINY_FEAT_DIM = 4


class TinyBackbone(nn.Module):
    """No batch norm: a sample's features do not depend on the rest of its batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, TINY_FEAT_DIM)
        self.feat_dim = TINY_FEAT_DIM

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3, 4)))


class TinyBNBackbone(nn.Module):
    """With batch norm: in training mode a sample's features depend on its batch."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, TINY_FEAT_DIM, 1)
        self.bn = nn.BatchNorm3d(TINY_FEAT_DIM)
        self.feat_dim = TINY_FEAT_DIM

    def forward(self, x):
        return self.bn(self.conv(x)).mean(dim=(2, 3, 4))
