"""The one place that writes metrics: metrics.jsonl in the run directory and W&B.

W&B runs offline by default (wandb.mode), so nothing leaves the machine until
the user runs `wandb sync`. Only rank 0 logs. A run resumed at step s calls
truncate_after(s) first, so the steps it repeats are not in metrics.jsonl twice.
Records (trial.json) are written with write_json_atomic: a reader sees the old
file or the new one, never a part.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import time

import numpy as np
import torch

from engine.checkpoint import write_atomic

log = logging.getLogger("fame")
GIB = 2**30
METRICS_FILE = "metrics.jsonl"
AFTER_TRAINING_PREFIXES = ("summary/", "test/")   # rows a finished run logs after its last checkpoint
GPU_ALLOC_METRIC = "gpu_alloc_gb"   # peak of torch's caching allocator since the process started, GiB
GPU_USED_METRIC = "gpu_used_gb"     # the device's memory in use now (total - free), GiB


def gpu_memory_metrics(device: torch.device) -> dict:
    """GPU memory for a log row: the peak that torch's allocator handed out (GPU_ALLOC_METRIC) and
    the device's memory in use (GPU_USED_METRIC: total - free from the driver, so DALI's, CuPy's,
    NVDEC's and the allocator's cached blocks count, and so do other processes on the same GPU).
    Empty on the CPU. Neither waits for queued GPU work."""
    if device.type != "cuda":
        return {}
    free, total = torch.cuda.mem_get_info(device)
    return {GPU_ALLOC_METRIC: torch.cuda.max_memory_allocated(device) / GIB, GPU_USED_METRIC: (total - free) / GIB}


def _plain(v):
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        return v.item()
    return v


class Logger:
    """log(metrics, step) appends to metrics.jsonl and W&B; summary() ends up in both."""

    def __init__(self, run_dir: str, *, config: dict, name: str, mode: str = "offline",
                 project: str = "fame", entity: str | None = None, group: str | None = None,
                 tags: tuple = (), job_type: str = "pretrain", rank: int = 0):
        self.run_dir = run_dir
        self.enabled = rank == 0
        self._wandb = None
        if not self.enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        self._file = open(os.path.join(run_dir, METRICS_FILE), "a")
        if mode != "disabled":
            import wandb  # lazy: optional and heavy: only when wandb.mode is not disabled
            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb = wandb.init(project=project, entity=entity, group=group, tags=list(tags),
                                     name=name, id=_wandb_id(run_dir, name), resume="allow",
                                     job_type=job_type, dir=run_dir, mode=mode, config=config)

    @property
    def wandb_dir(self) -> str | None:
        return self._wandb.dir if self._wandb is not None else None

    def truncate_after(self, step: int) -> None:
        """Drop the metrics.jsonl records of steps after ``step``: a run resumed from its
        checkpoint at ``step`` logs them again. The file is rewritten atomically."""
        if not self.enabled:
            return
        path = os.path.join(self.run_dir, METRICS_FILE)
        with open(path) as f:
            kept = _lines_up_to(f.readlines(), step, path)
        self._file.close()
        write_text_atomic(path, "".join(kept))
        self._file = open(path, "a")

    def log(self, metrics: dict, step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time": time.time(), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)

    def log_images(self, name: str, images: list[np.ndarray], step: int, captions: list[str] | None = None) -> None:
        """HWC uint8 images to W&B (and as PNGs under <run>/examples/ when W&B is off)."""
        if not self.enabled:
            return
        if self._wandb is not None:
            import wandb  # lazy: optional and heavy: only when wandb.mode is not disabled
            self._wandb.log({name: [wandb.Image(im, caption=c) for im, c in
                                    zip(images, captions or [None] * len(images), strict=True)]}, step=step)
        else:
            import matplotlib.image  # lazy: plotting, only for W&B's images
            out = os.path.join(self.run_dir, "examples")
            os.makedirs(out, exist_ok=True)
            for i, im in enumerate(images):
                matplotlib.image.imsave(os.path.join(out, f"{name.replace('/', '_')}-{step:07d}-{i}.png"), im)

    def summary(self, values: dict) -> None:
        if not self.enabled:
            return
        self.log({f"summary/{k}": v for k, v in values.items()}, step=values.get("step", 0))
        if self._wandb is not None:
            self._wandb.summary.update(values)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def _logged_before_checkpoint(row: dict, step: int) -> bool:
    """Whether a metrics row was written before the checkpoint of ``step``: training rows up to
    it; not the summary and test rows a finished run writes after its last checkpoint."""
    if row.get("step", 0) != step:
        return row.get("step", 0) < step
    return not any(key.startswith(AFTER_TRAINING_PREFIXES) for key in row)


def _lines_up_to(lines: list[str], step: int, path: str) -> list[str]:
    """The metrics.jsonl lines written before the checkpoint of ``step``. A line that is not
    JSON (a write a crash cut short, perhaps with the next row appended to it) is dropped
    with a warning naming the file and line."""
    kept = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s: line %d is not a JSON record (a write cut short); dropped", path, number)
            continue
        if _logged_before_checkpoint(row, step):
            kept.append(line if line.endswith("\n") else line + "\n")
    return kept


def write_text_atomic(path: str, text: str) -> None:
    """Write text to path atomically (checkpoint.write_atomic)."""
    write_atomic(path, lambda f: f.write(text), mode="w")


def write_json_atomic(obj, path: str) -> None:
    """obj as indented JSON at path, written atomically (see write_text_atomic)."""
    write_text_atomic(path, json.dumps(obj, indent=1))


def _wandb_id(run_dir: str, name: str) -> str:
    """A W&B run id stable across resumes of the same run directory."""
    path = os.path.join(run_dir, "wandb_id.txt")
    if os.path.exists(path):
        with open(path) as f:
            return f.read().strip()
    run_id = f"{name[:40]}-{secrets.token_hex(4)}"
    with open(path, "w") as f:
        f.write(run_id)
    return run_id


def read_metrics(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, METRICS_FILE)) as f:
        return [json.loads(line) for line in f if line.strip()]
