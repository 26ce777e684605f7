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

Stills: a first pass over the test list takes each video's per-pixel median over every frame of
all its test clips (uint8, one per video: ``video_stills``), in which an actor that moves across
the video is gone; a small, slow actor stays in one clip's median, which the probe therefore does
not use. Background-only clips fill their mask from their own video's still; swaps put video i's
foreground on the still of a video j of another class (``studies.bias.pair_across_classes``), so a
swapped clip carries the motion of i alone.

Where the data has the object's boxes (annotations.json), the probe also says how much of the
actor the background-only clips still show (``studies.bias.actor_kept``: outside the mask, or
where the still holds it) and stars a background reliance above MAX_ACTOR_KEPT % as not to be
trusted: such clips are not background only, and a classifier that reads the motion scores on
them too. Without boxes the reliance is marked unverified; the swap shares do not depend on it.

One process; the probe runs where the classifier's config says (``device``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

import fame
from engine.checkpoint import CHECKPOINT_DIR, LAST, load_checkpoint
from engine.config import Config, load_config
from engine.errors import DataError
from engine.evaluation import VideoAccumulator
from engine.models import make_backbone
from engine.setup import RUN_CONFIG
from fame.mask import masks_from_config
from models.classifier import VideoClassifier
from pipelines.params import ClipGeometry
from pipelines.sampler import DEFAULT_CENTRE_FRACTION, centre_window, clip_frame_indices, uniform_clip_starts
from studies import bias
from studies.metrics import box_masks

MASK_SOURCES = ("fame", "box")
PIXEL_MAX = 255.0
MODEL_ENTRY = "model"          # the VideoClassifier state inside a classify run's checkpoint
EXAMPLE_VIDEOS = 4             # rows of the example grid
SWAP_SEED = 0                  # the class pairing of the swaps
# % of the actor (its boxes' area over the clip's frames) a background-only clip may still show
# before its score says more about the actor than about the scenery
MAX_ACTOR_KEPT = 10.0


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
def clip_frame_boxes(frame_boxes: np.ndarray, num_frames: int, width: int, height: int, cfg: Config) -> np.ndarray:
    """(clips_per_video, clip.frames, 4) int: the object's box in every frame of each test clip of
    a video, in crop pixels. ``frame_boxes``: (frames, 4) [x0, y0, x1, y1] per frame of the video
    in video pixels. The clips and the centre window are the test loader's (uniformly spaced
    starts, DEFAULT_CENTRE_FRACTION)."""
    geometry = ClipGeometry(cfg.clip.frames, cfg.clip.stride, cfg.clip.crop)
    window = centre_window(width, height, DEFAULT_CENTRE_FRACTION)
    scale = np.array([cfg.clip.crop / window.width, cfg.clip.crop / window.height] * 2)
    origin = np.array([window.x, window.y] * 2)
    out = [frame_boxes[clip_frame_indices(int(start), geometry)]
           for start in uniform_clip_starts(num_frames, geometry.span, cfg.eval.clips_per_video)]
    return np.clip(np.round((np.asarray(out) - origin) * scale), 0, cfg.clip.crop).astype(np.int64)


def union_boxes(frame_boxes: np.ndarray) -> np.ndarray:
    """(..., T, 4) per-frame boxes -> (..., 4): the box over all T frames."""
    return np.concatenate([frame_boxes[..., :2].min(axis=-2), frame_boxes[..., 2:].max(axis=-2)], axis=-1)


def fame_masks(pixels: np.ndarray, fame_cfg: fame.FameConfig) -> np.ndarray:
    """(N, H, W) uint8: FAME's foreground mask of each clip (pixels NTHWC in 0..1)."""
    return np.asarray(masks_from_config(pixels, fame_cfg))


# ------------------------------------------------------------ the probe ----
@dataclass
class ProbeData:
    """What the probe needs to know of the test list besides the batches."""

    labels: np.ndarray                          # (V,) class of each video, list order
    # per video (clips_per_video, clip.frames, 4): the object's box in every frame of its test clips,
    # crop pixels (the "box" masks, and how much of the actor a background-only clip keeps)
    boxes: list[np.ndarray] | None = None


def video_stills(model_batches, num_videos: int, clips_per_video: int, mean, std) -> np.ndarray:
    """(V, H, W, 3) uint8: each video's per-pixel median over every frame of all its test clips (the
    scenery, from which an actor that moves across the video drops out). A video's clips are
    consecutive rows of the batches, and may straddle two."""
    stills, pending = None, {}
    for clips, _, video_index in model_batches:
        pixels = np.round(to_pixels(clips, mean, std) * PIXEL_MAX).astype(np.uint8)
        for row, video in enumerate(video_index.cpu().numpy()):
            pending.setdefault(int(video), []).append(pixels[row])
            if len(pending[int(video)]) == clips_per_video:
                frames = np.concatenate(pending.pop(int(video)))
                if stills is None:
                    stills = np.zeros((num_videos, *frames.shape[1:]), np.uint8)
                stills[video] = bias.median_frame(frames[None])[0, 0]
    if pending:
        raise ProbeError(f"the test loader gave videos {sorted(pending)[:5]} fewer than {clips_per_video} clips")
    return stills


def condition_clips(pixels: np.ndarray, masks: np.ndarray, own_stills: np.ndarray, partner_stills: np.ndarray,
                    mean) -> dict:
    """Every condition of ``studies.bias.CONDITIONS`` for these clips (NTHWC float 0..1): background
    only filled from the clip's own video's still, swaps onto the partner video's still ((N, H, W, 3)
    uint8 each, ``video_stills``)."""
    own, partner = (stills.astype(np.float32) / PIXEL_MAX for stills in (own_stills, partner_stills))
    return {"original": pixels,
            "background_only": bias.background_only(pixels, masks, still=own),
            "foreground_only": bias.foreground_only(pixels, masks, np.asarray(mean, np.float32)),
            "swap": bias.swap_backgrounds(pixels, masks, np.broadcast_to(partner[:, None], pixels.shape))}


@torch.no_grad()
def probe_classifier(model: torch.nn.Module, loader, data: ProbeData, stills: np.ndarray, source: str, cfg: Config,
                     fame_cfg: fame.FameConfig, device: torch.device) -> dict:
    """Scores of ``studies.bias.bias_scores`` with ``source`` masks, plus example frames per condition;
    ``stills``: each video's still scenery, (V, H, W, 3) uint8 (``video_stills``). Where the data has
    the object's boxes, also the share of the actor the background-only clips keep and whether the
    background reliance can be trusted (``trust_reliance``)."""
    if source not in MASK_SOURCES:
        raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {source!r}")
    if source == "box" and data.boxes is None:
        raise ProbeError("box masks need the object boxes of a synthetic dataset (annotations.json in data.root)")
    mean, std, per_video = cfg.aug.mean, cfg.aug.std, cfg.eval.clips_per_video
    num_videos = len(data.labels)
    partner = bias.pair_across_classes(data.labels, np.random.default_rng(SWAP_SEED))
    sums = {c: VideoAccumulator(num_videos, cfg.data.num_classes, device) for c in bias.CONDITIONS}
    examples = {c: [] for c in bias.CONDITIONS}
    kept = []
    for clips, labels, video_index in loader:
        pixels = to_pixels(clips, mean, std)
        index = video_index.cpu().numpy()
        frame_boxes = None if data.boxes is None else np.stack([data.boxes[v][k % per_video]
                                                                for k, v in enumerate(index)])
        if source == "box":
            masks = box_masks(union_boxes(frame_boxes), *pixels.shape[2:4]).astype(np.uint8)
        else:
            masks = fame_masks(pixels, fame_cfg)
        if frame_boxes is not None:
            persistent = np.stack([bias.persistent_pixels(data.boxes[v].reshape(-1, 4), *pixels.shape[2:4])
                                   for v in index])
            kept += list(bias.actor_kept(masks, frame_boxes, persistent))
        for condition, x in condition_clips(pixels, masks, stills[index], stills[partner[index]], mean).items():
            probs = model(to_model(x, mean, std, device)).float().softmax(dim=1)
            sums[condition].add(probs, labels.to(device), video_index.to(device))
            first = [row for row in range(0, len(index), per_video) if index[row] < EXAMPLE_VIDEOS]
            examples[condition] += [x[row + per_video // 2, x.shape[1] // 2] for row in first]
    for accumulator in sums.values():
        accumulator.check_complete(per_video, "bias probe")
    predictions = {c: acc.means().argmax(dim=1).cpu().numpy() for c, acc in sums.items()}
    scores = bias.bias_scores(predictions, data.labels, data.labels[partner], cfg.data.num_classes)
    scores.update(trust_reliance(float(np.mean(kept)) * bias.PERCENT if kept else None))
    return {"scores": scores, "examples": examples}


def trust_reliance(actor_kept: float | None) -> dict:
    """The background reliance's warrant: ``actor_kept`` (%, None without the object's boxes) of the
    actor the background-only clips still show; above MAX_ACTOR_KEPT they are not background only,
    and a classifier that reads the motion scores on them too."""
    if actor_kept is None:
        return {"actor_kept": None, "reliance_trusted": None,
                "reliance_note": "unverified: no object boxes to tell how much of the actor the background-only "
                                 "clips keep; the swap shares do not depend on it"}
    trusted = actor_kept <= MAX_ACTOR_KEPT
    note = "" if trusted else (f"not to be trusted: the background-only clips keep {actor_kept:.0f}% of the actor "
                               f"(more than {MAX_ACTOR_KEPT:.0f}%); read the swap shares instead")
    return {"actor_kept": actor_kept, "reliance_trusted": trusted, "reliance_note": note}


def format_table(results: dict) -> str:
    """A markdown table: one row per mask source, top-1 per condition, the share of the actor the
    background-only clips keep, reliance (starred where it is not to be trusted) and swap shares;
    the notes on the reliance below it."""
    head = ("| masks | videos | chance | " + " | ".join(f"{c} top-1" for c in bias.CONDITIONS) +
            " | actor kept in background only | background reliance | swap follows foreground | background | neither |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    notes = []
    for source, s in results.items():
        top = " | ".join(f"{s['top1'][c]:.1f}" for c in bias.CONDITIONS)
        swap = s["swap"]
        kept = "n/a" if s["actor_kept"] is None else f"{s['actor_kept']:.1f}%"
        star = "" if s["reliance_trusted"] else "*"
        lines.append(f"| {source} | {s['videos']} | {s['chance']:.1f} | {top} | {kept} | "
                     f"{s['background_reliance']:.2f}{star} | {swap['foreground']:.1f} | {swap['background']:.1f} | "
                     f"{swap['neither']:.1f} |")
        if s["reliance_note"]:
            notes.append(f"{source} masks: background reliance {s['reliance_note']}")
    return "\n".join(lines + ([""] + [f"* {note}" for note in notes] if notes else []))
