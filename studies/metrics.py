"""Where a backbone looks and how well a mask covers the moving object: the study's metrics.

Pure functions of arrays (NumPy masks and boxes, torch feature maps), free of plotting, so a
trial scores its backbone without loading matplotlib. Boxes are [x0, y0, x1, y1] in pixels of
the clip, x1/y1 exclusive; masks and maps are (B, H, W).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata


def box_masks(boxes, height: int, width: int) -> np.ndarray:
    """(B, H, W) bool: True inside each clip's box [x0, y0, x1, y1] (x1/y1 exclusive)."""
    inside = np.zeros((len(boxes), height, width), bool)
    for m, (x0, y0, x1, y1) in zip(inside, boxes, strict=True):
        m[y0:y1, x0:x1] = True
    return inside


def overlap_scores(masks: np.ndarray, inside: np.ndarray) -> dict:
    """Means over clips of (B, H, W) bool masks against the object's boxes: recall (share of
    the box kept), precision (share of the mask inside the box) and own_background (share
    of the frame kept outside the box: what merging leaves of the clip's own background)."""
    assert masks.shape == inside.shape and masks.dtype == bool, f"{masks.shape} {masks.dtype} vs {inside.shape}"
    hits = (masks & inside).sum((1, 2))
    return {"fraction": float(masks.mean()),
            "recall": float(np.mean(hits / np.maximum(inside.sum((1, 2)), 1))),
            "precision": float(np.mean(hits / np.maximum(masks.sum((1, 2)), 1))),
            "own_background": float((masks & ~inside).mean())}


def ranking_auc(scores: np.ndarray, inside: np.ndarray) -> float:
    """Mean over clips of the chance that a pixel inside the box outscores one outside it
    (ties count half; the Mann-Whitney U of each (H, W) map, scaled to [0, 1])."""
    aucs = []
    for s, m in zip(scores, inside, strict=True):
        positive, negative = int(m.sum()), int(m.size - m.sum())
        if positive == 0 or negative == 0:
            continue
        ranks = rankdata(s.ravel())
        aucs.append((ranks[m.ravel()].sum() - positive * (positive + 1) / 2) / (positive * negative))
    return float(np.mean(aucs)) if aucs else float("nan")


def last_feature_map(backbone: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last 5-D activation (N, C, T', H', W') with more than one spatial position: the
    feature map before the global pool (whose own 5-D output is 1 x 1)."""
    seen = []

    def keep(module, inputs, output):
        if torch.is_tensor(output) and output.dim() == 5 and output.shape[-2] * output.shape[-1] > 1:
            seen.append(output)

    hooks = [m.register_forward_hook(keep) for m in backbone.modules()]
    try:
        with torch.no_grad():
            backbone(x)
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ValueError(f"{type(backbone).__name__} produced no 5-D activation larger than 1 x 1 on a "
                         f"{tuple(x.shape[-2:])} clip; a larger clip.crop leaves it a spatial map")
    return seen[-1]


def caam(backbone: torch.nn.Module, clips_ncthw: torch.Tensor) -> torch.Tensor:
    """Class-agnostic activation map: channel-summed last activation, mean over time, upsampled,
    in [0, 1], on the CPU (backbone and clips on one device)."""
    a = last_feature_map(backbone, clips_ncthw).relu().sum(1).mean(1, keepdim=True)   # (N, 1, H', W')
    a = F.interpolate(a, size=clips_ncthw.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo = a.flatten(1).min(1).values.view(-1, 1, 1)
    hi = a.flatten(1).max(1).values.view(-1, 1, 1)
    return ((a - lo) / (hi - lo + 1e-8)).cpu()


def energy_in_box(maps: torch.Tensor, boxes) -> list[float]:
    """Fraction of each map's total inside its box (the object's, known on synthetic data)."""
    out = []
    for m, (x0, y0, x1, y1) in zip(maps, boxes, strict=True):
        out.append(float(m[y0:y1, x0:x1].sum() / m.sum().clamp_min(1e-8)))
    return out
