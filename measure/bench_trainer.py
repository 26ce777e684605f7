"""Clips/s of the MoCo training step alone: python -m measure.bench_trainer --config X [key=value ...].

The step of runners.pretrain (forward of both encoders, backward, SGD, momentum update,
enqueue) on random query/key clips of the config's shape (NCTHW: train.batch_size x 3 x
clip.frames x clip.crop x clip.crop), with its AMP and memory format. No data pipeline and
no DALI: the input pipeline must outrun this rate (`make profile` gives the pipeline's).
Clips count as in `make profile`: two per video (query and key).
"""
from __future__ import annotations

import json
import time

import torch

from engine import config as C
from engine.checkpoint import LossWatch
from engine.cli import cli_parser, parse_cli_args
from engine.errors import run_command
from engine.logger import GIB
from engine.setup import CLIPS_PER_VIDEO, resolve_device, seed_everything, setup_logging
from engine.steps import build_training, moco_step
from models.layout import RGB_CHANNELS

DEFAULT_STEPS, DEFAULT_WARMUP = 20, 5
MS_PER_S = 1000.0


def random_views(cfg: C.Config, device: torch.device, memory_format: torch.memory_format):
    """Query and key batches, NCTHW float32, standard normal like normalised pixels."""
    shape = (cfg.train.batch_size, RGB_CHANNELS, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop)
    return tuple(torch.randn(shape, device=device).contiguous(memory_format=memory_format) for _ in range(2))


def time_train_steps(cfg: C.Config, device: torch.device, steps: int = DEFAULT_STEPS,
                     warmup: int = DEFAULT_WARMUP) -> dict:
    """Seconds per training step over ``steps`` steps after ``warmup`` untimed ones."""
    model, update, memory_format = build_training(cfg, device)
    q, k = random_views(cfg, device, memory_format)
    watch = LossWatch(device)      # as in pretraining: the loss is read back once, not every step
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup):
        moco_step(model, q, k, update, step, watch)
    synchronize()
    started = time.perf_counter()
    for step in range(warmup, warmup + steps):
        out = moco_step(model, q, k, update, step, watch)
    synchronize()
    seconds = (time.perf_counter() - started) / steps
    watch.check()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "backbone": cfg.model.backbone, "batch_size": cfg.train.batch_size,
        "clip": [cfg.clip.frames, cfg.clip.crop, cfg.clip.crop],
        "amp": str(update.amp).replace("torch.", "") if update.amp else "fp32",
        "channels_last": memory_format == torch.channels_last_3d, "symmetric": cfg.model.symmetric,
        "steps": steps, "warmup": warmup, "seconds_per_step": seconds,
        "clips_per_s": CLIPS_PER_VIDEO * cfg.train.batch_size / seconds, "final_loss": out.loss.item(),
        "gpu_max_memory_gib": torch.cuda.max_memory_allocated(device) / GIB if device.type == "cuda" else None,
    }


def format_result(r: dict) -> str:
    frames, height, width = r["clip"]
    memory = f", peak GPU memory {r['gpu_max_memory_gib']:.1f} GiB" if r["gpu_max_memory_gib"] is not None else ""
    return (f"MoCo step, {r['backbone']}, batch {r['batch_size']} x {CLIPS_PER_VIDEO} clips of "
            f"{frames}x{height}x{width}, "
            f"{r['amp']}{', channels-last' if r['channels_last'] else ''} on {r['device']}: "
            f"{r['clips_per_s']:.1f} clips/s ({MS_PER_S * r['seconds_per_step']:.1f} ms/step, "
            f"mean of {r['steps']} after {r['warmup']}){memory}")


def main(argv=None) -> dict:
    p = cli_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="timed training steps")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed steps first (cuDNN, allocator)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH")
    cfg, a = parse_cli_args(p, argv)
    if a.steps < 1 or a.warmup < 0:
        p.error("--steps must be >= 1, --warmup >= 0")
    setup_logging()
    seed_everything(cfg.seed)
    result = time_train_steps(cfg, resolve_device(cfg.device, cfg, dali=False), a.steps, a.warmup)   # no videos
    print(format_result(result))
    if a.json:
        with open(a.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
        print(f"written: {a.json}")
    return result


if __name__ == "__main__":
    run_command(main)
