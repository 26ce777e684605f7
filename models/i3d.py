"""I3D: Inception-v1 (GoogLeNet with batch norm) inflated to 3D (Carreira & Zisserman, CVPR 2017).

Input: float video batch in NCTHW layout. Output: (N, 1024) features, global
average pooled over time and space (the original's (2, 7, 7) average pool at
16x224 is the same thing; a global pool also accepts other clip sizes).

Layout of the network, as in the paper (module names follow the original's):
  Conv3d_1a_7x7 (64, 7x7x7, stride 2) -> MaxPool3d_2a (1x3x3, stride 1,2,2)
  -> Conv3d_2b_1x1 (64) -> Conv3d_2c_3x3 (192) -> MaxPool3d_3a (1x3x3, stride 1,2,2)
  -> Mixed_3b, Mixed_3c -> MaxPool3d_4a (3x3x3, stride 2)
  -> Mixed_4b .. Mixed_4f -> MaxPool3d_5a (2x2x2, stride 2)
  -> Mixed_5b, Mixed_5c -> global average pool.
Every convolution is Conv3d (no bias) + BatchNorm3d + ReLU. An inception block
has four branches concatenated on channels: 1x1x1; 1x1x1 -> 3x3x3;
1x1x1 -> 3x3x3; 3x3x3 max pool (stride 1) -> 1x1x1.
The original's "SAME" padding is reproduced in output sizes by symmetric
padding (convolutions and strided pools give ceil(size / stride)).
"""

import torch
from torch import nn

from models.layout import check_video_layout

FEAT_DIM = 1024
# Batch-norm settings of the original TensorFlow model (epsilon 1e-3, slow running averages).
BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# Inception block widths: (branch0 1x1, branch1 reduce, branch1 3x3, branch2 reduce, branch2 3x3, pool proj).
INCEPTION_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
LAYER_ORDER = (
    "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
    "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3",
    "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f", "MaxPool3d_5a_2x2",
    "Mixed_5b", "Mixed_5c",
)


class Unit3D(nn.Module):
    """Conv3d (no bias) + BatchNorm3d + ReLU with 'same'-style symmetric padding."""

    def __init__(self, in_channels, out_channels, kernel_size=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        padding = tuple(k // 2 for k in kernel_size)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class InceptionBlock3D(nn.Module):
    """Four parallel branches concatenated along channels."""

    def __init__(self, in_channels, widths):
        super().__init__()
        b0, b1_reduce, b1, b2_reduce, b2, b3 = widths
        self.branch0 = Unit3D(in_channels, b0)
        self.branch1 = nn.Sequential(Unit3D(in_channels, b1_reduce), Unit3D(b1_reduce, b1, (3, 3, 3)))
        self.branch2 = nn.Sequential(Unit3D(in_channels, b2_reduce), Unit3D(b2_reduce, b2, (3, 3, 3)))
        self.branch3 = nn.Sequential(nn.MaxPool3d((3, 3, 3), stride=1, padding=1), Unit3D(in_channels, b3))
        self.out_channels = b0 + b1 + b2 + b3

    def forward(self, x):
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], dim=1)


class I3D(nn.Module):
    """Inflated Inception-v1 backbone: (N, 3, T, H, W) -> (N, 1024)."""

    def __init__(self):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), stride=(2, 2, 2))
        self.MaxPool3d_2a_3x3 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        channels = 192
        for name in ("Mixed_3b", "Mixed_3c"):
            channels = self._add_inception(name, channels)
        self.MaxPool3d_4a_3x3 = nn.MaxPool3d((3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            channels = self._add_inception(name, channels)
        self.MaxPool3d_5a_2x2 = nn.MaxPool3d((2, 2, 2), stride=(2, 2, 2), ceil_mode=True)
        for name in ("Mixed_5b", "Mixed_5c"):
            channels = self._add_inception(name, channels)
        assert channels == FEAT_DIM
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.feat_dim = FEAT_DIM
        self._init_weights()

    def _add_inception(self, name, in_channels):
        block = InceptionBlock3D(in_channels, INCEPTION_WIDTHS[name])
        self.add_module(name, block)
        return block.out_channels

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        check_video_layout(x, "i3d")
        for name in LAYER_ORDER:
            x = getattr(self, name)(x)
        return self.pool(x).flatten(1)
