"""Start-up shared by every runner: device, distributed, run directory, seeds, logging."""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from typing import NamedTuple

import numpy as np
import torch
import torch.distributed as dist

from engine import config as C
from engine import doctor
from engine.logger import Logger

log = logging.getLogger("fame")
RUN_CONFIG = "config.yaml"
CLIPS_PER_VIDEO = 2      # pretraining reads two clips of every video: the query and the key
MIN_ELAPSED_S = 1e-9     # floor of a measured duration that is divided by (a fast step can read as 0 s)


def resolve_device(setting: str, cfg: C.Config | None = None, dali: bool = True) -> torch.device:
    """device: auto|cpu|gpu -> the torch.device every other part follows. A CUDA device is
    checked first (engine.doctor.preflight: the quick checks of ``cfg``'s settings, DALI's and
    NVDEC's only where the run reads videos through DALI (``dali``); a FAIL exits with code 2,
    the failures and their fixes on stderr)."""
    has_gpu = torch.cuda.is_available()
    if setting == "gpu" and not has_gpu:
        raise C.ConfigError("config key 'device' is 'gpu' but no CUDA GPU is visible; use device=cpu or auto")
    if setting == "gpu" or (setting == "auto" and has_gpu):
        # A launcher may give each process all of the node's GPUs (torchrun) or only its own one.
        local = int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        doctor.preflight(cfg, dali)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world) from torchrun's environment; a single process is (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def seed_everything(seed: int, rank: int = 0) -> None:
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Every rank takes rank 0's buffers (BatchNorm running statistics). DDP syncs them only
    at the start of each training forward, so after the last step each rank holds the
    statistics of its own last batch; rank 0's are the ones its checkpoint saves."""
    if dist.is_initialized():
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def prepare_run_dir(cfg: C.Config, rank: int = 0, write_config: bool = True) -> tuple[C.Config, str]:
    """Fix run.name (agreed across ranks), create <run.dir>/<run.name>/, write config.yaml
    there (a runner that may resume writes it once the checkpoint has been accepted)."""
    name = [C.run_name(cfg)]
    if dist.is_initialized():
        dist.broadcast_object_list(name, src=0)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name[0]))
    run_dir = os.path.join(cfg.run.dir, cfg.run.name)
    if rank == 0:
        os.makedirs(run_dir, exist_ok=True)
    if write_config:
        write_run_config(cfg, run_dir, rank)
    return cfg, run_dir


def write_run_config(cfg: C.Config, run_dir: str, rank: int = 0) -> None:
    """<run_dir>/config.yaml, the resolved config of the run (rank 0)."""
    if rank == 0:
        C.dump_config(cfg, os.path.join(run_dir, RUN_CONFIG))


def setup_logging(rank: int = 0) -> None:
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def open_logger(cfg: C.Config, run_dir: str, job_type: str, rank: int = 0):
    """The run's Logger (metrics.jsonl + W&B per cfg.wandb)."""
    return Logger(run_dir, config=C.to_dict(cfg), name=cfg.run.name, mode=cfg.wandb.mode,
                  project=cfg.wandb.project, entity=cfg.wandb.entity, group=cfg.wandb.group,
                  tags=cfg.wandb.tags, job_type=job_type, rank=rank)


class Run(NamedTuple):
    """What every runner starts from: the resolved config, its directory, device and process group."""
    cfg: C.Config
    run_dir: str
    device: torch.device
    rank: int
    world: int


def start_run(cfg: C.Config, write_config: bool = True) -> Run:
    """Device, process group, logging, run directory (config.yaml unless ``write_config`` is
    False: see prepare_run_dir) and seeds, in that order. The data is the command's own next
    line (engine.dataset.ensure_data)."""
    device = resolve_device(cfg.device, cfg)
    rank, world = init_distributed(device)
    setup_logging(rank)
    cfg, run_dir = prepare_run_dir(cfg, rank, write_config)
    seed_everything(cfg.seed, rank)
    return Run(cfg, run_dir, device, rank, world)


def end_run(logger=None) -> None:
    if logger is not None:
        logger.close()
    if dist.is_initialized():
        dist.destroy_process_group()
