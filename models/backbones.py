"""Video backbones by name, and their exported state.

Every backbone maps a float video batch in NCTHW layout (N, 3, T, H, W) to
pooled features (N, feat_dim) and exposes ``feat_dim``. Heads are separate
(models/heads.py); dropout for finetuning lives in heads.Classifier.

Names:
- "r2plus1d_18", "r3d_18": torchvision's VideoResNet without its ``fc``.
- "s3d": torchvision's S3D without its ``classifier``; global average pool.
- "i3d": Inception-v1 inflated to 3D (models/i3d.py).
- "small3d": a few Conv3d-BN-ReLU blocks for CPU runs (options width, depth, pool).

The torchvision backbones register torchvision's own submodules under their
own names, so a backbone's state_dict keys are exactly torchvision's minus the
classification head: ``export_backbone_state`` of an r2plus1d_18 backbone
loads into ``torchvision.models.video.r2plus1d_18()`` with
``load_state_dict(state, strict=False)`` reporting only ``fc.weight`` and
``fc.bias`` missing. ``build_backbone(name, checkpoint=PATH)`` loads such a
state (or a full torchvision state_dict: its head keys are dropped).
"""

import inspect
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
import torchvision.models.video as tv_video
from torch import nn

from models.i3d import I3D
from models.layout import RGB_CHANNELS, check_video_layout

# Keys of the classification heads that torchvision checkpoints carry and backbones do not.
HEAD_KEY_PREFIXES = ("fc.", "classifier.")
# Wrappers whose prefixes are stripped from loaded states (DDP, torch.compile).
WRAPPER_KEY_PREFIXES = ("module.", "_orig_mod.")
# How many key names an error message lists.
KEYS_SHOWN = 5
# Fraction of shared key names above which a checkpoint is said to look like a registered backbone.
ARCHITECTURE_MATCH_FRACTION = 0.5

VIDEO_RESNET_FEAT_DIM = 512
SMALL3D_POOLS = {"avg": nn.AdaptiveAvgPool3d, "max": nn.AdaptiveMaxPool3d}
S3D_FEAT_DIM = 1024


class VideoResNetBackbone(nn.Module):
    """torchvision VideoResNet (r2plus1d_18, r3d_18) up to its global pool; keys as torchvision's."""

    def __init__(self, tv_model: nn.Module, name: str):
        super().__init__()
        self.name = name
        self.stem = tv_model.stem
        self.layer1 = tv_model.layer1
        self.layer2 = tv_model.layer2
        self.layer3 = tv_model.layer3
        self.layer4 = tv_model.layer4
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.feat_dim = VIDEO_RESNET_FEAT_DIM

    def forward(self, x):
        check_video_layout(x, self.name)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class S3DBackbone(nn.Module):
    """torchvision S3D features with a global average pool; keys as torchvision's."""

    def __init__(self, tv_model: nn.Module):
        super().__init__()
        self.features = tv_model.features
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.feat_dim = S3D_FEAT_DIM

    def forward(self, x):
        check_video_layout(x, "s3d")
        return self.avgpool(self.features(x)).flatten(1)


class ConvBlock3D(nn.Module):
    """Conv3d 3x3x3 (no bias) + BatchNorm3d + ReLU."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class Small3D(nn.Module):
    """A small 3D CNN: ``depth`` blocks, channels width * 2**i, first block strides space only,
    then a global ``pool`` over time and space: "avg" (the mean, as the torchvision backbones)
    or "max". An average spreads a small moving object's response over the whole frame: an
    object of 3% of the frame contributes 3% of the pooled feature, and of its gradient.
    The max passes the object's response whole (docs/exploration.md, small objects)."""

    def __init__(self, width: int = 16, depth: int = 4, pool: str = "avg"):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"small3d needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        if pool not in SMALL3D_POOLS:
            raise ValueError(f"small3d pool must be one of {sorted(SMALL3D_POOLS)}, got {pool!r}")
        blocks = []
        in_channels = RGB_CHANNELS
        for index in range(depth):
            out_channels = width * 2**index
            stride = (1, 2, 2) if index == 0 else (2, 2, 2)
            blocks.append(ConvBlock3D(in_channels, out_channels, stride))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = SMALL3D_POOLS[pool](1)
        self.feat_dim = in_channels

    def forward(self, x):
        check_video_layout(x, "small3d")
        return self.pool(self.blocks(x)).flatten(1)


def build_r2plus1d_18() -> nn.Module:
    return VideoResNetBackbone(tv_video.r2plus1d_18(weights=None), "r2plus1d_18")


def build_r3d_18() -> nn.Module:
    return VideoResNetBackbone(tv_video.r3d_18(weights=None), "r3d_18")


def build_s3d() -> nn.Module:
    return S3DBackbone(tv_video.s3d(weights=None))


def build_i3d() -> nn.Module:
    return I3D()


def build_small3d(width: int = 16, depth: int = 4, pool: str = "avg") -> nn.Module:
    return Small3D(width=width, depth=depth, pool=pool)


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "r2plus1d_18": build_r2plus1d_18,
    "r3d_18": build_r3d_18,
    "s3d": build_s3d,
    "i3d": build_i3d,
    "small3d": build_small3d,
}


def backbone_names() -> list[str]:
    return sorted(BACKBONES)


def build_backbone(name: str, checkpoint: str | None = None, **kwargs) -> nn.Module:
    """Build backbone ``name`` with its options; load a local state_dict file when ``checkpoint`` is given."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(backbone_names())}")
    builder = BACKBONES[name]
    accepted = inspect.signature(builder).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"backbone {name!r} got unknown option(s) {unknown}; it accepts {sorted(accepted) or 'no options'}"
        )
    backbone = builder(**kwargs)
    backbone.backbone_name = name
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"checkpoint {checkpoint} holds a {type(state).__name__}, expected a state_dict")
        apply_backbone_state(backbone, state, name=name, source=str(checkpoint))
    return backbone


def unwrap_module(module: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        else:
            return module


def export_backbone_state(backbone: nn.Module) -> "OrderedDict[str, torch.Tensor]":
    """A plain CPU state_dict of ``backbone`` (wrappers removed) that ``load_backbone_state`` accepts."""
    state = unwrap_module(backbone).state_dict()
    return OrderedDict((key, value.detach().cpu().clone()) for key, value in state.items())


class LoadReport(NamedTuple):
    """What loading a state into a backbone did: head keys ignored (the rest must match exactly)."""

    ignored_keys: list[str]


def _strip_wrapper_prefixes(state: dict) -> dict:
    """Drop the prefixes wrappers (DDP, torch.compile) put on every key, nested in any order."""
    while state:
        prefix = next((p for p in WRAPPER_KEY_PREFIXES if all(key.startswith(p) for key in state)), None)
        if prefix is None:
            return state
        state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def _guess_architecture(keys: set[str]) -> str | None:
    """The registered backbone whose default key names best overlap ``keys`` (built on the meta device)."""
    best_name, best_fraction = None, 0.0
    for name in backbone_names():
        with torch.device("meta"):
            candidate_keys = set(BACKBONES[name]().state_dict())
        fraction = len(keys & candidate_keys) / max(len(keys | candidate_keys), 1)
        if fraction > best_fraction:
            best_name, best_fraction = name, fraction
    return best_name if best_fraction >= ARCHITECTURE_MATCH_FRACTION else None


def _list_keys(keys) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > KEYS_SHOWN else ""
    return ", ".join(keys[:KEYS_SHOWN]) + more


def apply_backbone_state(backbone: nn.Module, state: dict, name: str = "", source: str = "state_dict") -> LoadReport:
    """Load ``state`` into ``backbone`` in place; raise a ValueError naming the mismatch.

    Head keys (fc.*, classifier.*) and DDP/compile prefixes are dropped; every
    other key must exist in the backbone with the same shape, and every
    backbone key must be present.
    """
    name = name or getattr(backbone, "backbone_name", type(backbone).__name__)
    state = _strip_wrapper_prefixes(dict(state))
    ignored = sorted(key for key in state if key.startswith(HEAD_KEY_PREFIXES))
    state = {key: value for key, value in state.items() if not key.startswith(HEAD_KEY_PREFIXES)}
    expected = backbone.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    if missing or unexpected:
        guess = _guess_architecture(set(state))
        looks_like = f"; it looks like a {guess!r} backbone state" if guess and guess != name else ""
        raise ValueError(
            f"{source} does not match backbone {name!r}{looks_like}: "
            f"{len(missing)} missing key(s) [{_list_keys(missing)}], "
            f"{len(unexpected)} unexpected key(s) [{_list_keys(unexpected)}]"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"{source} does not match backbone {name!r}: key {key!r} has shape {tuple(value.shape)} "
                f"but the backbone expects {tuple(expected[key].shape)} (built with other options?)"
            )
    backbone.load_state_dict(state, strict=True)
    return LoadReport(ignored_keys=ignored)


def load_backbone_state(name: str, state: dict, **kwargs) -> nn.Module:
    """Build backbone ``name`` (with options ``kwargs``) and load ``state`` into it (see apply_backbone_state)."""
    backbone = build_backbone(name, **kwargs)
    apply_backbone_state(backbone, state, name=name)
    return backbone
