"""The paper's figures, from the command line.

    python -m studies.visualize masks   --config X [--videos 4]            (Fig. 5)
    python -m studies.visualize caam    --config X --ckpt A.pt --ckpt B.pt  (Fig. 1 + energy in the box)
    python -m studies.visualize kernels --ckpt A.pt --ckpt B.pt [--label L]  (Fig. 3)
    python -m studies.visualize mask-quality --config X [--videos 64]        (masks vs the object's box)

Clips are read with PyAV (a few videos; no training pipeline needed): the
middle clip.frames x clip.stride window, short side resized to clip.crop and
centre-cropped. PNGs land in <run.dir>/<run.name>/ and are logged to W&B.
The CAAM backbones run on the config's device (engine.setup.resolve_device);
their maps come back to the CPU.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import fame
from data.filelist import read_file_list
from data.synthetic import load_annotations
from data.video_io import read_video
from engine.config import Config, ConfigError, data_path, load_config, with_run_name
from engine.errors import run_command
from engine.evaluation import backbone_state_from_file
from engine.models import make_backbone
from engine.setup import open_logger, prepare_run_dir, resolve_device
from fame.config import AUTO_BETA
from fame.mask import smoothed_statistics, soft_mask_from
from models.backbones import apply_backbone_state
from studies.metrics import box_masks, caam, energy_in_box, overlap_scores, ranking_auc

VARIANTS = ("gauss", "seed", "grid", "fame")
QUALITY_BETAS = (0.3, 0.5, 0.7, AUTO_BETA)
HEAT = "inferno"
CPU = torch.device("cpu")
VIOLIN_POINTS = 4_000
log = logging.getLogger(__name__)


# ----------------------------------------------------------------- clips ----
def centre_clip(frames: np.ndarray, length: int, stride: int, crop: int, boxes=None):
    """THWC uint8 video -> (THWC uint8 clip of `length` frames, box [x0,y0,x1,y1] in crop pixels or None)."""
    assert frames.ndim == 4 and frames.shape[-1] == 3, f"expected THWC frames, got {frames.shape}"
    span = (length - 1) * stride + 1
    if frames.shape[0] < span:
        raise ValueError(f"video has {frames.shape[0]} frames, a clip needs {span}")
    start = (frames.shape[0] - span) // 2
    idx = np.arange(start, start + span, stride)
    h, w = frames.shape[1:3]
    scale = crop / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    x = torch.from_numpy(frames[idx]).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    clip = x[:, :, top:top + crop, left:left + crop].round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    box = None
    if boxes is not None:
        b = np.asarray(boxes)[idx]
        x0, y0 = b[:, 0].min() * nw / w - left, b[:, 1].min() * nh / h - top
        x1, y1 = b[:, 2].max() * nw / w - left, b[:, 3].max() * nh / h - top
        box = np.clip(np.round([x0, y0, x1, y1]), 0, crop).astype(int)
    return clip, box


def read_clips(cfg: Config, n: int, list_key: str = "val_list"):
    """The first n videos of a list, one per class first: (NTHWC uint8, labels, boxes or None)."""
    entries = read_file_list(data_path(cfg, getattr(cfg.data, list_key)), cfg.data.root)
    by_class: dict[int, list] = {}
    for e in entries:
        by_class.setdefault(e.label, []).append(e)
    ordered = [e for group in zip(*by_class.values(), strict=False) for e in group] or entries   # to the smallest class
    try:
            videos = load_annotations(cfg.data.root)["videos"]
    except FileNotFoundError:
        videos = None
    clips, labels, boxes = [], [], []
    for e in ordered[:n]:
        clip, box = centre_clip(read_video(e.path), cfg.clip.frames, cfg.clip.stride, cfg.clip.crop,
                                videos[e.relpath]["boxes"] if videos and e.relpath in videos else None)
        clips.append(clip)
        labels.append(e.label)
        boxes.append(box)
    return np.stack(clips), labels, (boxes if all(b is not None for b in boxes) else None)


# ----------------------------------------------------------------- masks ----
def mask_panels(clips: np.ndarray, cfg: Config) -> list[tuple[str, list[np.ndarray]]]:
    """Columns of Fig. 5: frame, seed region S, soft mask M, then binary mask and merged
    frame of every variant (NTHWC uint8 in)."""
    fc = figure_fame_config(cfg)
    rng = np.random.default_rng(cfg.seed)
    background = fame.pick_backgrounds(len(clips), rng, fc.pick)
    t = clips.shape[1] // 2
    seed, mean = smoothed_statistics(clips, fc)
    soft = soft_mask_from(seed, mean, fc)
    cols = [("frame", list(clips[:, t])), ("seed region S", list(seed)), ("soft mask M", list(soft))]
    for variant in VARIANTS:
        masks = fame.foreground_mask(clips, **{**dataclasses.asdict(fc), "variant": variant})
        merged = fame.merge(clips, masks, background)
        cols.append((f"{variant} mask", [np.repeat(m[..., None] * 255, 3, -1).astype(np.uint8) for m in masks]))
        cols.append((f"{variant} merged", list(merged[:, t])))
    return cols


def figure_fame_config(cfg: Config) -> fame.FameConfig:
    """cfg.fame for the figures: every variant is drawn, so a baseline config still gets masks."""
    return dataclasses.replace(cfg.fame, variant="fame", background="inter")


def save_grid(columns: list[tuple[str, list[np.ndarray]]], path: str, row_labels=None) -> None:
    """A PNG grid: one column per (title, images), one row per example."""
    import matplotlib.pyplot as plt  # lazy: plotting only
    rows = len(columns[0][1])
    fig, axes = plt.subplots(rows, len(columns), figsize=(1.6 * len(columns), 1.6 * rows), dpi=100, squeeze=False)
    for c, (title, images) in enumerate(columns):
        for r, im in enumerate(images):
            ax = axes[r][c]
            ax.imshow(im, cmap=HEAT if im.ndim == 2 else None, vmin=0, vmax=1 if im.ndim == 2 else None)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=7)
            if c == 0 and row_labels:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------- mask quality ----


def mask_quality(clips: np.ndarray, boxes, cfg: Config) -> dict:
    """How well each variant's mask covers the moving object, per beta (NTHWC uint8 clips,
    boxes: the object's box over the clip, in crop pixels). The box holds the object and
    some background beside it, so precision is an upper bound for the object itself and
    own_background a lower bound on what the merge keeps of the clip's own background."""
    fc = figure_fame_config(cfg)
    inside = box_masks(boxes, *clips.shape[2:4])
    seed, mean = smoothed_statistics(clips, fc)
    rows = []
    for variant in VARIANTS:
        for beta in (QUALITY_BETAS if variant != "grid" else (fc.grid_keep / fc.grid_cells**2,)):
            masks = fame.foreground_mask(clips, **{**dataclasses.asdict(fc), "variant": variant, "beta": beta})
            rows.append({"variant": variant, "beta": beta, **overlap_scores(masks.astype(bool), inside)})
    return {"videos": len(clips), "box_fraction": float(inside.mean()), "rows": rows,
            "auc": {"seed region S": ranking_auc(seed, inside),
                    "soft mask M": ranking_auc(soft_mask_from(seed, mean, fc), inside)}}


def quality_table(quality: dict) -> str:
    """The mask_quality result as markdown."""
    lines = [f"{quality['videos']} clips; the object's box covers {quality['box_fraction']:.3f} of the frame; "
             + "; ".join(f"AUC of {k} {v:.3f}" for k, v in quality["auc"].items()), "",
             "| variant | beta | mask fraction | recall | precision | own background kept |",
             "|---|---|---|---|---|---|"]
    for r in quality["rows"]:
        beta = r["beta"] if isinstance(r["beta"], str) else f"{r['beta']:.2f}"
        lines.append(f"| {r['variant']} | {beta} | {r['fraction']:.3f} | {r['recall']:.3f} | "
                     f"{r['precision']:.3f} | {r['own_background']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_quality(quality: dict, path: str) -> None:
    """Precision against recall, one line per variant through its betas."""
    import matplotlib.pyplot as plt  # lazy: plotting only
    fig, ax = plt.subplots(figsize=(4.5, 3.5), dpi=100)
    for i, variant in enumerate(VARIANTS):
        rows = [r for r in quality["rows"] if r["variant"] == variant]
        fixed = [r for r in rows if not isinstance(r["beta"], str)]
        ax.plot([r["recall"] for r in fixed], [r["precision"] for r in fixed], "o-", color=f"C{i}", label=variant)
        for r in fixed:
            ax.annotate(f"{r['beta']:.2g}", (r["recall"], r["precision"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
        auto = [r for r in rows if isinstance(r["beta"], str)]
        ax.plot([r["recall"] for r in auto], [r["precision"] for r in auto], "*", color=f"C{i}", markersize=10)
    ax.plot([], [], "k*", label=f"beta={AUTO_BETA}")
    ax.axhline(quality["box_fraction"], color="gray", linestyle=":", label="chance (box fraction)")
    ax.set_xlabel("recall of the object's box")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.05), ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------ CAAM ----


def caam_in_box(path: str, cfg: Config, videos: int) -> dict:
    """The CAAM of a backbone on the first ``videos`` test clips of synthetic data: mean share
    of its energy inside the object's box, and the box's share of the frame (what a map
    with no preference scores). Empty when the data has no boxes or the last feature map
    is 1 x 1 at this crop (logged)."""
    clips, _, boxes = read_clips(cfg, videos)
    if boxes is None:
        log.warning("no CAAM score: %s has no object boxes (annotations.json)", cfg.data.root)
        return {}
    device = resolve_device(cfg.device)
    try:
        maps = caam(load_for_figures(path, cfg, device), normalise(clips, cfg).to(device))
    except ValueError as e:
        log.warning("no CAAM score for %s: %s", path, e)
        return {}
    return {"energy_in_box": float(np.mean(energy_in_box(maps, boxes))),
            "box_fraction": float(box_masks(boxes, *clips.shape[2:4]).mean())}


def normalise(clips: np.ndarray, cfg: Config) -> torch.Tensor:
    """NTHWC uint8 -> NCTHW float, normalised as in training."""
    x = torch.from_numpy(clips).float().div(255).permute(0, 4, 1, 2, 3)
    mean = torch.tensor(cfg.aug.mean).view(1, 3, 1, 1, 1)
    std = torch.tensor(cfg.aug.std).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def load_for_figures(path: str, cfg: Config, device: torch.device = CPU) -> torch.nn.Module:
    """A backbone from backbone.pt or a pretraining checkpoint (its query encoder), in eval mode on device."""
    state, _, _ = backbone_state_from_file(path)
    backbone = make_backbone(cfg)
    apply_backbone_state(backbone, state, name=cfg.model.backbone, source=path)
    return backbone.to(device).eval()


# --------------------------------------------------------------- kernels ----
def temporal_kernels(backbone: torch.nn.Module) -> list[tuple[str, np.ndarray]]:
    """Weights of every purely temporal convolution (kernel k x 1 x 1, k > 1), by layer, in order."""
    out = []
    for name, m in backbone.named_modules():
        if isinstance(m, torch.nn.Conv3d) and m.kernel_size[0] > 1 and m.kernel_size[1:] == (1, 1):
            out.append((name, m.weight.detach().flatten().numpy()))
    return out


def violin_sample(weights: np.ndarray, n: int = VIOLIN_POINTS) -> np.ndarray:
    """At most n weights, drawn without replacement by a fixed generator (a violin's density needs no more)."""
    if weights.size <= n:
        return weights
    return np.random.default_rng(0).choice(weights, n, replace=False)


def plot_kernels(named: list[tuple[str, list]], path: str) -> None:
    import matplotlib.pyplot as plt  # lazy: plotting only
    layers = [n for n, _ in named[0][1]]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(layers) * len(named)), 3.5), dpi=100)
    width = 0.8 / len(named)
    for i, (label, kernels) in enumerate(named):
        pos = [j + (i - (len(named) - 1) / 2) * width for j in range(len(kernels))]
        parts = ax.violinplot([violin_sample(w) for _, w in kernels], positions=pos, widths=width, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(f"C{i}")
        ax.plot([], [], color=f"C{i}", label=label, linewidth=6)
    ax.set_xticks(range(len(layers)), [layer.replace(".", "\n", 1) for layer in layers], fontsize=6)
    ax.set_ylabel("temporal kernel weight")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------ main ----
@dataclasses.dataclass(frozen=True)
class FigureJob:
    """What drawing one figure takes: the config, the clips to read, the backbones to compare
    (paths and labels), where the PNG goes, the run directory and its logger."""

    cfg: Config
    videos: int
    ckpts: list[str]
    labels: list[str]
    out: str
    run_dir: str
    logger: object


def draw_masks(job: FigureJob) -> None:
    """Fig. 5: frames, seed region, soft mask, mask and merge of every variant."""
    clips, labels, _ = read_clips(job.cfg, job.videos)
    save_grid(mask_panels(clips, job.cfg), job.out, [f"class {label}" for label in labels])


def draw_caam(job: FigureJob) -> None:
    """Fig. 1: each backbone's class-agnostic activation map over the middle frame, and (with the
    object's boxes) the share of its energy inside the box (caam_energy.json)."""
    import matplotlib  # lazy: plotting only
    clips, _, boxes = read_clips(job.cfg, job.videos)
    device = resolve_device(job.cfg.device)
    x = normalise(clips, job.cfg).to(device)
    t = clips.shape[1] // 2
    columns, scores = [("frame", list(clips[:, t]))], {}
    for label, path in zip(job.labels, job.ckpts, strict=True):
        maps = caam(load_for_figures(path, job.cfg, device), x)
        heat = (matplotlib.colormaps[HEAT](maps.numpy())[..., :3] * 255).astype(np.uint8)
        columns.append((label, [(0.5 * clips[i, t] + 0.5 * heat[i]).astype(np.uint8) for i in range(len(clips))]))
        if boxes is not None:
            scores[label] = float(np.mean(energy_in_box(maps, boxes)))
    save_grid(columns, job.out)
    if scores:
        with open(os.path.join(job.run_dir, "caam_energy.json"), "w") as f:
            json.dump(scores, f, indent=1)
        job.logger.summary({f"caam_energy_in_box/{k}": v for k, v in scores.items()})
        print("CAAM energy inside the object's box: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))


def draw_mask_quality(job: FigureJob) -> None:
    """Each variant's mask against the object's box, per beta: mask_quality.json and .md, a plot."""
    clips, _, boxes = read_clips(job.cfg, job.videos)
    if boxes is None:
        raise SystemExit(f"mask-quality needs the object boxes of synthetic data: "
                         f"{job.cfg.data.root} has no annotations.json")
    quality = mask_quality(clips, boxes, job.cfg)
    with open(os.path.join(job.run_dir, "mask_quality.json"), "w") as f:
        json.dump(quality, f, indent=1)
    table = quality_table(quality)
    with open(os.path.join(job.run_dir, "mask_quality.md"), "w") as f:
        f.write(table)
    job.logger.summary({f"mask_quality/{r['variant']}/{r['beta']}/{k}": r[k]
                        for r in quality["rows"] for k in ("recall", "precision", "own_background")})
    plot_quality(quality, job.out)
    print(table)


def draw_kernels(job: FigureJob) -> None:
    """Fig. 3: violins of the temporal (k x 1 x 1) kernels of R(2+1)D backbones, per layer."""
    named = [(label, temporal_kernels(load_for_figures(path, job.cfg)))
             for label, path in zip(job.labels, job.ckpts, strict=True)]
    if not named[0][1]:
        raise SystemExit(f"backbone {job.cfg.model.backbone} has no temporal (k x 1 x 1) convolutions; "
                         "kernels is for R(2+1)D (model.backbone=r2plus1d_18)")
    plot_kernels(named, job.out)


@dataclasses.dataclass(frozen=True)
class Figure:
    draw: Callable[[FigureJob], None]
    videos: int                     # clips read unless --videos says otherwise
    needs_ckpt: bool = False


FIGURES = {"masks": Figure(draw_masks, 4), "caam": Figure(draw_caam, 4, needs_ckpt=True),
           "kernels": Figure(draw_kernels, 4, needs_ckpt=True), "mask-quality": Figure(draw_mask_quality, 64)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("figure", choices=list(FIGURES))
    p.add_argument("--config", default="configs/synthetic.yaml")
    p.add_argument("--ckpt", action="append", default=[], help="backbone.pt or checkpoint (repeat to compare)")
    p.add_argument("--label", action="append", default=[], help="a name per --ckpt")
    p.add_argument("--videos", type=int, help="clips to read (default per figure: "
                                              f"{ {name: f.videos for name, f in FIGURES.items()} })")
    p.add_argument("overrides", nargs="*")
    a = p.parse_intermixed_args(argv)
    figure = FIGURES[a.figure]
    try:
        cfg = load_config(a.config, a.overrides)
    except ConfigError as e:
        p.error(str(e))
    if figure.needs_ckpt and not a.ckpt:
        p.error(f"{a.figure} needs at least one --ckpt")
    for path in a.ckpt:
        if not os.path.isfile(path):
            p.error(f"--ckpt '{path}' does not exist")
    if a.videos is not None and a.videos < 1:
        p.error(f"--videos must be >= 1, got {a.videos}")
    labels = a.label + [os.path.basename(os.path.dirname(c)) or c for c in a.ckpt[len(a.label):]]
    cfg, run_dir = prepare_run_dir(with_run_name(cfg, prefix=f"{a.figure}-"))
    logger = open_logger(cfg, run_dir, "figures")
    out = os.path.join(run_dir, f"{a.figure}.png")
    figure.draw(FigureJob(cfg, a.videos or figure.videos, a.ckpt, labels, out, run_dir, logger))
    import matplotlib.image  # lazy: plotting only
    logger.log_images(f"figures/{a.figure}", [(matplotlib.image.imread(out)[..., :3] * 255).astype(np.uint8)], 0)
    logger.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
