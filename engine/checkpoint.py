"""The one place that saves and resumes: atomic checkpoints with everything a
bit-exact resume needs (model, optimizer, scheduler, scaler, MoCo queue,
loader position, every process's RNG states, step, config), and the guard
that no checkpoint holds weights updated from a non-finite loss (LossWatch).

RNG states are per process: the runners seed process r with seed + r, and
each process's CUDA generator is the one of its own device. A training
runner gathers them from every rank (gather_rng_states, a collective) and
rank 0 saves them as rng["ranks"][r]; on resume each rank restores its own
entry, the CUDA state into its current device. rng's top-level entries are
rank 0's (what a single-process checkpoint always held). Checkpoints of
the older layout (rank 0's CPU states and a list of the CUDA states of
every GPU rank 0 saw) still resume: see set_rng_state.
"""
from __future__ import annotations

import logging
import os
import random
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from engine.config import ConfigError, build_config, to_dict
from engine.errors import DataError, MissingFileError

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


RANKS = "ranks"          # rng entry: the RNG states of every process, indexed by rank
NO_STEP = torch.iinfo(torch.long).max   # LossWatch's first non-finite step while every loss was finite


class NonFiniteLoss(RuntimeError):
    """A training loss was NaN or infinite; the message names the first step at which it was."""


def raise_non_finite(first_step: int, loss: float | None, found_at: int | None = None):
    value = "" if loss is None else f" {loss}"
    found = "" if found_at is None else f" (found at step {found_at}: the loss is read back at log steps and saves)"
    raise NonFiniteLoss(f"non-finite loss{value} at step {first_step}{found}; nothing was saved from that "
                        f"step on: the last checkpoint holds at most step {first_step}")


class LossWatch:
    """The first step whose loss was not finite, kept on the loss's device: ``update`` runs every
    step and never waits for the device; ``check`` reads it back (a host sync, plus one all-reduce
    under torch.distributed, on every rank) and raises NonFiniteLoss naming that step. The training
    loops check at their log steps and before every save, so the steps that ran after a bad one
    (their weights already NaN) are never saved."""

    def __init__(self, device: torch.device):
        self.first_step = torch.full((), NO_STEP, dtype=torch.long, device=device)
        self.first_loss = torch.zeros((), dtype=torch.float32, device=device)

    @torch.no_grad()
    def update(self, loss: torch.Tensor, step: int) -> None:
        first = (~torch.isfinite(loss.detach())) & (self.first_step == NO_STEP)
        self.first_step.masked_fill_(first, step)
        self.first_loss.copy_(torch.where(first, loss.detach().float(), self.first_loss))

    def check(self, at_step: int | None = None) -> None:
        """Raise NonFiniteLoss if any process's loss was non-finite at a step so far (every rank calls this)."""
        first = self.first_step.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
        first_step = first.item()
        if first_step != NO_STEP:
            own = self.first_step.item() == first_step     # else another process saw it first
            raise_non_finite(first_step, self.first_loss.item() if own else None, at_step)


def check_loss(loss: torch.Tensor, step: int, watch: LossWatch | None = None) -> None:
    """Hand the step's loss to ``watch`` (no host sync); without one, check it now (a sync)."""
    if watch is not None:
        watch.update(loss, step)
    elif not torch.isfinite(loss):
        raise_non_finite(step, loss.item())


def rng_state() -> dict:
    """This process's RNG states: torch's CPU generator, numpy's, python's, and the CUDA
    generator of its current device (None where this process has not initialised CUDA, as
    in a CPU run on a GPU host: its CUDA generator was never drawn from)."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(torch.cuda.current_device()) if torch.cuda.is_initialized() else None}


def gather_rng_states() -> dict:
    """The checkpoint's rng entry: every rank's rng_state() (all_gather_object under
    torch.distributed, so every rank must call it) as ``ranks``, rank 0's also at the top level."""
    own = rng_state()
    ranks = [own]
    if dist.is_available() and dist.is_initialized():
        ranks = [None] * dist.get_world_size()
        dist.all_gather_object(ranks, own)
    return {**ranks[0], RANKS: ranks}


def _process_rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def set_rng_state(state: dict, rank: int | None = None) -> None:
    """Restore ``rank``'s (default: this process's) entry of a checkpoint's rng states.

    Its CUDA state goes into the current device only. The older layout (no ``ranks``) held
    rank 0's CPU states and the states of every GPU rank 0 saw: rank 0 restores the CPU states,
    another rank keeps its own seeded ones (with a warning); each rank takes the CUDA state of
    its device's index where the list has one. What is missing is skipped with a warning."""
    rank = _process_rank() if rank is None else rank
    if RANKS in state:
        if rank >= len(state[RANKS]):
            log.warning("the checkpoint holds the RNG states of %d process(es), none of rank %d: "
                        "its RNGs keep their seeds (the resume is not bit-exact)", len(state[RANKS]), rank)
            return
        own = state[RANKS][rank]
    elif rank == 0:
        own = state
    else:
        log.warning("the checkpoint (older layout) holds rank 0's CPU RNG states only: rank %d keeps its own "
                    "seeded ones (the resume is not bit-exact)", rank)
        own = {"cuda": state.get("cuda")}
    if "torch" in own:
        torch.set_rng_state(own["torch"])
        np.random.set_state(own["numpy"])
        random.setstate(own["python"])
    _set_cuda_rng_state(own.get("cuda"), rank)


def _set_cuda_rng_state(cuda, rank: int) -> None:
    """Restore a saved CUDA state into the current device: one state, or (older layout) the
    list of every GPU's, whose entry at this device's index is taken."""
    if cuda is None or not torch.cuda.is_available():
        return
    device = torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):
        if device >= len(cuda):
            log.warning("the checkpoint holds the CUDA RNG states of %d GPU(s), none for device %d of rank %d: "
                        "its CUDA RNG keeps its seed (the resume is not bit-exact)", len(cuda), device, rank)
            return
        cuda = cuda[device]
    torch.cuda.set_rng_state(cuda, device)


def save_checkpoint(run_dir: str, state: dict, *, epoch_copy: int | None = None,
                    rng: dict | None = None) -> str:
    """Write <run>/checkpoints/last.pt (and epoch_NNNN.pt when epoch_copy is given) with the RNG
    states ``rng`` (gather_rng_states(), which every rank must call); by default this process's."""
    if rng is None:
        own = rng_state()
        rng = {**own, RANKS: [own]}
    state = {**state, "rng": rng}
    path = os.path.join(checkpoint_dir(run_dir), LAST)
    save_atomic(state, path)
    if epoch_copy is not None:
        save_atomic(state, os.path.join(checkpoint_dir(run_dir), f"epoch_{epoch_copy:04d}.pt"))
    return path


def load_checkpoint(path: str) -> dict:
    """The checkpoint's contents with every tensor on the CPU: load_state_dict moves them to
    the parts' devices, and the RNG states must stay CPU tensors."""
    if not os.path.isfile(path):
        raise MissingFileError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DataError(f"checkpoint '{path}' cannot be read: {e}") from e


def find_resume(run_dir: str, resume: str) -> str | None:
    """The checkpoint to resume from: train.resume = auto (last of this run, if any) | none | a path."""
    if resume == "none":
        return None
    if resume == "auto":
        path = os.path.join(checkpoint_dir(run_dir), LAST)
        return path if os.path.isfile(path) else None
    return resume


def save_training(run_dir: str, parts: dict, *, step: int, epoch: int, config: dict, run: dict,
                  epoch_copy: int | None = None, rng: dict | None = None) -> str:
    """Checkpoint a training loop: every part's state_dict (model, optimizer, scheduler,
    scaler, loader ...), the step, the epoch, the resolved config and ``run``, the facts a
    resume must share that the config does not hold, and the RNG states ``rng`` (see save_checkpoint)."""
    state = {name: part.state_dict() for name, part in parts.items()}
    return save_checkpoint(run_dir, {**state, "step": step, "epoch": epoch, "config": config, RUN: run},
                           epoch_copy=epoch_copy, rng=rng)


def save_training_all_ranks(run_dir: str, parts: dict, *, rank: int, step: int,
                            watch: LossWatch | None = None, **kw) -> None:
    """What a training loop calls on every rank to checkpoint at ``step``: the loss watch is
    checked (a non-finite loss so far raises, and nothing is saved), every rank's RNG states
    are gathered, and rank 0 writes the checkpoint (``kw``: save_training's other keywords)."""
    if watch is not None:
        watch.check(step)
    rng = gather_rng_states()
    if rank == 0:
        save_training(run_dir, parts, step=step, rng=rng, **kw)


def config_value(config: dict, key: str):
    """The value at a dotted key ("train.lr") of a config dict; MISSING where it has none."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def with_added_keys(saved: dict, current: dict) -> dict:
    """``saved`` plus the config keys ``current`` has and it lacks (keys added to the schema since
    it was saved), at the schema's defaults: a run that kept a new key's default resumes. A saved
    config today's schema cannot read stays as it is."""
    try:
        defaults = to_dict(build_config(dict(saved)))
    except (ConfigError, TypeError):
        return saved
    return _fill_missing(saved, current, defaults)


def _fill_missing(saved: dict, current: dict, defaults: dict) -> dict:
    filled = dict(saved)
    for key, value in current.items():
        if key not in saved and key in defaults:
            filled[key] = defaults[key]
        elif isinstance(value, dict) and isinstance(saved.get(key), dict) and isinstance(defaults.get(key), dict):
            filled[key] = _fill_missing(saved[key], value, defaults[key])
    return filled


def differing_leaves(key: str, saved: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, saved value, current value) of every leaf under ``key`` whose values differ:
    a section (a dict on both sides) is compared key by key, a key one side lacks as MISSING."""
    if not (isinstance(saved, dict) and isinstance(now, dict)):
        return [] if saved == now else [(key, saved, now)]
    return [leaf for name in dict.fromkeys([*saved, *now])
            for leaf in differing_leaves(f"{key}.{name}", saved.get(name, MISSING), now.get(name, MISSING))]


def check_same_run(path: str, state: dict, config: dict, keys: tuple[str, ...], run: dict) -> None:
    """Refuse to resume ``path`` into a run that differs from it in a config key of ``keys``
    (for a section like "model", in any key inside it) or in a ``run`` fact (e.g. the process
    count): its weights, schedule, queue and loader position belong to the settings it was
    saved with. The message names each differing key with both values."""
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise DataError(f"cannot resume {path}: it holds no 'config' (not a training checkpoint of this project)")
    saved = with_added_keys(saved, config)
    differences = [f"config key '{leaf}' was {was!r}, now {now!r}" for key in keys
                   for leaf, was, now in differing_leaves(key, config_value(saved, key), config_value(config, key))]
    saved_run = state.get(RUN, {})
    differences += [f"{name} was {saved_run[name]!r}, now {value!r}"
                    for name, value in run.items() if name in saved_run and saved_run[name] != value]
    if differences:
        raise DataError(f"cannot resume {path}: " + "; ".join(differences) +
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
        raise DataError(f"cannot resume {path}: it has no {', '.join(repr(m) for m in missing)} "
                         f"(a training checkpoint, checkpoints/{LAST}, has {', '.join(map(repr, parts))}, "
                         "step, epoch and rng; backbone.pt is for `pretrained=`)")
    if check is not None:
        check(path, state)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    set_rng_state(state["rng"])
    log.info("resumed from %s at step %d (epoch %d)", path, state["step"], state["epoch"])
    return state["step"]
