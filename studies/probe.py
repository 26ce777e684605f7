"""The background-bias probe of a trained classifier on any test list (``studies.bias_probe``).

The test clips come from the classifier's own test loader (``eval.clips_per_video`` uniformly
spaced clips per video, centre crop: the protocol of its test), as normalised NCTHW batches.
Each batch is turned back into pixels (NTHWC float in 0..1), a mask of the moving
foreground is made per clip, and the classifier scores every condition of ``studies.bias``
on the same clips: original, background only, foreground only (on the normalisation's mean
colour, which normalises to zero), and swap. Per video the softmax is averaged over its clips,
as in the test; the predicted classes go to ``studies.bias.bias_scores``.

Masks (``MASK_SOURCES``):
- "fame": FAME's own mask of each clip (fame.* of the config: beta, variant, hue, camera
  compensation): what FAME would cut out. It holds int(beta*H*W) pixels whatever the
  actor's size.
- "box": on the synthetic datasets, the object's box over the clip's frames (annotations.json),
  mapped into the crop: exact up to the box's own corners of background.

Swap backgrounds: video i's foreground goes on a still background of a video j of another
class (``studies.bias.pair_across_classes``): the temporal median frame of j's middle clip,
in which j's own moving actor is gone, so a swapped clip carries the motion of i alone. A
first pass over the test list collects these frames (uint8, one per video).

One process; the probe runs where the classifier's config says (``device``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

import fame
from studies import bias
from engine.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint
from engine.config import Config, load_config
from engine.errors import DataError
from engine.evaluation import VideoAccumulator
from studies.metrics import box_masks
from engine.models import make_backbone
from engine.setup import RUN_CONFIG
from fame.mask import masks_from_config
from models.classifier import VideoClassifier
from pipelines.params import ClipGeometry
from pipelines.sampler import DEFAULT_CENTRE_FRACTION, centre_window, clip_frame_indices, uniform_clip_starts

MASK_SOURCES = ("fame", "box")
PIXEL_MAX = 255.0
MODEL_ENTRY = "model"          # the VideoClassifier state inside a classify run's checkpoint
EXAMPLE_VIDEOS = 4             # rows of the example grid
SWAP_SEED = 0                  # the class pairing of the swaps


class ProbeError(DataError):
    """A run directory, checkpoint or dataset the probe cannot use; the message says what to do."""


def classifier_files(run_dir: str) -> tuple[str, str]:
    """(config.yaml, checkpoints/last.pt) of a ``runners.classify`` run, or a ProbeError naming what is missing."""
    if not os.path.isdir(run_dir):
        raise ProbeError(f"--run {run_dir}: not a directory; pass the run directory of a finished "
                         "`make linear` / `make finetune` (runs/<name>)")
    paths = os.path.join(run_dir, RUN_CONFIG), os.path.join(run_dir, CHECKPOINT_DIR, LAST)
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ProbeError(f"--run {run_dir}: {', '.join(missing)} missing; the probe reads a classify run's resolved "
                         "config and its last checkpoint (run `make linear` or `make finetune` first)")
    return paths


def load_classifier(run_dir: str, overrides: list[str] = ()) -> tuple[Config, VideoClassifier]:
    """The resolved config of a classify run (``overrides`` applied on top) and its trained classifier."""
    config_path, checkpoint_path = classifier_files(run_dir)
    cfg = load_config(config_path, list(overrides))
    state = load_checkpoint(checkpoint_path)
    if MODEL_ENTRY not in state:
        raise ProbeError(f"{checkpoint_path} holds no '{MODEL_ENTRY}' entry: not a classify run's checkpoint")
    model = VideoClassifier(make_backbone(cfg), cfg.data.num_classes, cfg.eval.dropout, frozen=True)
    try:
        model.load_state_dict(state[MODEL_ENTRY])
    except RuntimeError as error:
        raise ProbeError(f"{checkpoint_path} does not fit the classifier of {config_path} (model.* or "
                         f"data.num_classes differ?): {str(error).splitlines()[0]}") from None
    return cfg, model.eval()


# ------------------------------------------------------------ pixels ----
def _channel_shape(values, like: torch.Tensor, shape: tuple) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(shape)


def to_pixels(clips: torch.Tensor, mean, std) -> np.ndarray:
    """NCTHW normalised clips -> NTHWC float32 pixels in 0..1 (NumPy, on the CPU)."""
    assert clips.dim() == 5 and clips.shape[1] == 3, f"expected NCTHW clips, got {tuple(clips.shape)}"
    shape = (1, 3, 1, 1, 1)
    pixels = clips.float() * _channel_shape(std, clips.float(), shape) + _channel_shape(mean, clips.float(), shape)
    return pixels.clamp(0.0, 1.0).permute(0, 2, 3, 4, 1).contiguous().cpu().numpy()


def to_model(pixels: np.ndarray, mean, std, device: torch.device) -> torch.Tensor:
    """NTHWC pixels in 0..1 -> NCTHW clips normalised with ``mean`` / ``std`` on ``device``."""
    assert pixels.ndim == 5 and pixels.shape[-1] == 3, f"expected NTHWC pixels, got {pixels.shape}"
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(device).permute(0, 4, 1, 2, 3)
    shape = (1, 3, 1, 1, 1)
    return (x - _channel_shape(mean, x, shape)) / _channel_shape(std, x, shape)


# ------------------------------------------------------------ masks ----
def clip_boxes(frame_boxes: np.ndarray, num_frames: int, width: int, height: int, cfg: Config) -> np.ndarray:
    """(clips_per_video, 4) int: the object's box over each test clip of a video, in crop pixels.

    ``frame_boxes``: (frames, 4) [x0, y0, x1, y1] per frame in video pixels. The clips and the
    centre window are the test loader's (uniformly spaced starts, DEFAULT_CENTRE_FRACTION)."""
    geometry = ClipGeometry(cfg.clip.frames, cfg.clip.stride, cfg.clip.crop)
    span = geometry.span
    window = centre_window(width, height, DEFAULT_CENTRE_FRACTION)
    scale_x, scale_y = cfg.clip.crop / window.width, cfg.clip.crop / window.height
    out = []
    for start in uniform_clip_starts(num_frames, span, cfg.eval.clips_per_video):
        frames = frame_boxes[clip_frame_indices(int(start), geometry)]
        box = [(frames[:, 0].min() - window.x) * scale_x, (frames[:, 1].min() - window.y) * scale_y,
               (frames[:, 2].max() - window.x) * scale_x, (frames[:, 3].max() - window.y) * scale_y]
        out.append(np.clip(np.round(box), 0, cfg.clip.crop))
    return np.asarray(out, dtype=np.int64)


def fame_masks(pixels: np.ndarray, fame_cfg: fame.FameConfig) -> np.ndarray:
    """(N, H, W) uint8: FAME's foreground mask of each clip (pixels NTHWC in 0..1)."""
    return np.asarray(masks_from_config(pixels, fame_cfg))


# ------------------------------------------------------------ the probe ----
@dataclass
class ProbeData:
    """What the probe needs to know of the test list besides the batches."""

    labels: np.ndarray                          # (V,) class of each video, list order
    boxes: Optional[list[np.ndarray]] = None    # per video (clips_per_video, 4), crop pixels ("box" masks)


def middle_clip_stills(model_batches, num_videos: int, clips_per_video: int, mean, std) -> np.ndarray:
    """(V, H, W, 3) uint8: the temporal median frame of each video's middle clip."""
    stills = None
    middle = clips_per_video // 2
    for clips, _, video_index in model_batches:
        pixels = to_pixels(clips, mean, std)
        index = video_index.cpu().numpy()
        for row in range(middle, len(index), clips_per_video):
            median = bias.median_frame(pixels[row:row + 1])[0, 0]
            if stills is None:
                stills = np.zeros((num_videos, *median.shape), np.uint8)
            stills[index[row]] = np.round(median * PIXEL_MAX).astype(np.uint8)
    return stills


def condition_clips(pixels: np.ndarray, masks: np.ndarray, partner_stills: np.ndarray, mean) -> dict:
    """Every condition of ``studies.bias.CONDITIONS`` for these clips (NTHWC float 0..1)."""
    stills = (partner_stills.astype(np.float32) / PIXEL_MAX)[:, None]
    return {"original": pixels,
            "background_only": bias.background_only(pixels, masks),
            "foreground_only": bias.foreground_only(pixels, masks, np.asarray(mean, np.float32)),
            "swap": bias.swap_backgrounds(pixels, masks, np.broadcast_to(stills, pixels.shape))}


@torch.no_grad()
def probe_classifier(model: torch.nn.Module, loader, data: ProbeData, stills: np.ndarray, source: str, cfg: Config,
                     fame_cfg: fame.FameConfig, device: torch.device) -> dict:
    """Scores of ``studies.bias.bias_scores`` with ``source`` masks, plus example frames per condition;
    ``stills``: the swaps' backgrounds, (V, H, W, 3) uint8 (``middle_clip_stills``)."""
    if source not in MASK_SOURCES:
        raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
    if source == "box" and data.boxes is None:
        raise ProbeError("box masks need the object boxes of a synthetic dataset (annotations.json in data.root)")
    mean, std, per_video = cfg.aug.mean, cfg.aug.std, cfg.eval.clips_per_video
    num_videos = len(data.labels)
    partner = bias.pair_across_classes(data.labels, np.random.default_rng(SWAP_SEED))
    sums = {c: VideoAccumulator(num_videos, cfg.data.num_classes, device) for c in bias.CONDITIONS}
    examples = {c: [] for c in bias.CONDITIONS}
    for clips, labels, video_index in loader:
        pixels = to_pixels(clips, mean, std)
        index = video_index.cpu().numpy()
        if source == "box":
            boxes = [data.boxes[v][k % per_video] for k, v in enumerate(index)]
            masks = box_masks(boxes, *pixels.shape[2:4]).astype(np.uint8)
        else:
            masks = fame_masks(pixels, fame_cfg)
        for condition, x in condition_clips(pixels, masks, stills[partner[index]], mean).items():
            probs = model(to_model(x, mean, std, device)).float().softmax(dim=1)
            sums[condition].add(probs, labels.to(device), video_index.to(device))
            first = [row for row in range(0, len(index), per_video) if index[row] < EXAMPLE_VIDEOS]
            examples[condition] += [x[row + per_video // 2, x.shape[1] // 2] for row in first]
    for accumulator in sums.values():
        accumulator.check_complete(per_video, "bias probe")
    predictions = {c: acc.means().argmax(dim=1).cpu().numpy() for c, acc in sums.items()}
    scores = bias.bias_scores(predictions, data.labels, data.labels[partner], cfg.data.num_classes)
    return {"scores": scores, "examples": examples}


def format_table(results: dict) -> str:
    """A markdown table: one row per mask source, top-1 per condition, reliance and swap shares."""
    head = ("| masks | videos | chance | " + " | ".join(f"{c} top-1" for c in bias.CONDITIONS) +
            " | background reliance | swap follows foreground | background | neither |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for source, s in results.items():
        top = " | ".join(f"{s['top1'][c]:.1f}" for c in bias.CONDITIONS)
        swap = s["swap"]
        lines.append(f"| {source} | {s['videos']} | {s['chance']:.1f} | {top} | {s['background_reliance']:.2f} | "
                     f"{swap['foreground']:.1f} | {swap['background']:.1f} | {swap['neither']:.1f} |")
    return "\n".join(lines)
