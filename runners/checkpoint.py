"""The one place that saves and resumes: atomic checkpoints with everything a
bit-exact resume needs (model, optimizer, scheduler, scaler, MoCo queue,
loader position, RNG states, step, config)."""
from __future__ import annotations

import logging
import os
import random
from typing import Optional

import numpy as np
import torch

log = logging.getLogger("fame")
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
RUN = "run"              # checkpoint entry: facts of the run a resume must share (process count ...)
MISSING = "<missing>"    # config_value of a key the config does not have


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT_DIR)


def write_atomic(path: str, write, mode: str = "wb") -> None:
    """Call ``write(f)`` on a temp file in path's folder, fsync, then rename it over path:
    a reader sees the old file or the new one, never a part."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_atomic(obj, path: str) -> None:
    """torch.save obj to path atomically (see write_atomic)."""
    write_atomic(path, lambda f: torch.save(obj, f))


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: str, state: dict, *, epoch_copy: Optional[int] = None) -> str:
    """Write <run>/checkpoints/last.pt (and epoch_NNNN.pt when epoch_copy is given)."""
    state = {**state, "rng": rng_state()}
    path = os.path.join(checkpoint_dir(run_dir), LAST)
    save_atomic(state, path)
    if epoch_copy is not None:
        save_atomic(state, os.path.join(checkpoint_dir(run_dir), f"epoch_{epoch_copy:04d}.pt"))
    return path


def load_checkpoint(path: str) -> dict:
    """The checkpoint's contents with every tensor on the CPU: load_state_dict moves them to
    the parts' devices, and the RNG states must stay CPU tensors."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ValueError(f"checkpoint '{path}' cannot be read: {e}") from e


def find_resume(run_dir: str, resume: str) -> Optional[str]:
    """The checkpoint to resume from: train.resume = auto (last of this run, if any) | none | a path."""
    if resume == "none":
        return None
    if resume == "auto":
        path = os.path.join(checkpoint_dir(run_dir), LAST)
        return path if os.path.isfile(path) else None
    return resume


def save_training(run_dir: str, parts: dict, *, step: int, epoch: int, config: dict, run: dict,
                  epoch_copy: Optional[int] = None) -> str:
    """Checkpoint a training loop: every part's state_dict (model, optimizer, scheduler,
    scaler, loader ...), the step, the epoch, the resolved config and ``run``, the facts a
    resume must share that the config does not hold (RNG states added)."""
    state = {name: part.state_dict() for name, part in parts.items()}
    return save_checkpoint(run_dir, {**state, "step": step, "epoch": epoch, "config": config, RUN: run},
                           epoch_copy=epoch_copy)


def config_value(config: dict, key: str):
    """The value at a dotted key ("train.lr") of a config dict; MISSING where it has none."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def check_same_run(path: str, state: dict, config: dict, keys: tuple[str, ...], run: dict) -> None:
    """Refuse to resume ``path`` into a run that differs from it in a config key of ``keys``
    (a whole section for a key like "model") or in a ``run`` fact (e.g. the process count):
    its weights, schedule, queue and loader position belong to the settings it was saved with."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"cannot resume {path}: it holds no 'config' (not a training checkpoint of this project)")
    differences = [f"config key '{key}' was {config_value(saved, key)!r}, now {config_value(config, key)!r}"
                   for key in keys if config_value(saved, key) != config_value(config, key)]
    saved_run = state.get(RUN, {})
    differences += [f"{name} was {saved_run[name]!r}, now {value!r}"
                    for name, value in run.items() if name in saved_run and saved_run[name] != value]
    if differences:
        raise ValueError(f"cannot resume {path}: " + "; ".join(differences) +
                         ". Resume with the settings it was saved with, or start anew with train.resume=none "
                         "(or another run.name, when train.resume is auto).")


def resume_training(run_dir: str, resume: str, parts: dict, check=None) -> int:
    """Restore the checkpoint train.resume names (see find_resume) into `parts` and the RNGs;
    returns its step, or 0 when there is nothing to resume. `check(path, state)` may refuse it."""
    path = find_resume(run_dir, resume)
    if path is None:
        return 0
    state = load_checkpoint(path)
    missing = [name for name in (*parts, "step", "epoch", "rng") if name not in state]
    if missing:
        raise ValueError(f"cannot resume {path}: it has no {', '.join(repr(m) for m in missing)} "
                         f"(a training checkpoint, checkpoints/{LAST}, has {', '.join(map(repr, parts))}, "
                         "step, epoch and rng; backbone.pt is for `pretrained=`)")
    if check is not None:
        check(path, state)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d (epoch %d)", path, state["step"], state["epoch"])
    return state["step"]
