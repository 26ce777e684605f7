"""The MoCo model of a config and its training step; no data pipeline here, so the
step can be timed (runners.bench_trainer) wherever torch runs."""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Optional

import torch

from models.backbones import unwrap_module
from models.moco import MoCo, check_queue_size
from engine.checkpoint import LossWatch, NonFiniteLoss, check_loss  # noqa: F401  (NonFiniteLoss: re-exported)
from engine.setup import amp_dtype
from engine.config import Config
from engine.models import make_backbone


class Training(NamedTuple):
    model: MoCo
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: Optional[torch.dtype]          # autocast dtype; None: fp32
    memory_format: torch.memory_format  # of the model and of its inputs


def build_model(cfg: Config, device: torch.device) -> MoCo:
    return MoCo(make_backbone(cfg), make_backbone(cfg), dim=cfg.model.dim, K=cfg.model.K, m=cfg.model.m, T=cfg.model.T,
                head=cfg.model.head, symmetric=cfg.model.symmetric,
                shuffle_bn_groups=cfg.model.shuffle_bn_groups, batch_negatives=cfg.model.batch_negatives,
                queue_seed=cfg.seed).to(device)


def build_training(cfg: Config, device: torch.device, world: int = 1) -> Training:
    """The model in its memory format, SGD over its parameters, the AMP dtype and the loss scaler of train.*,
    after checking that model.K holds a whole number of steps' keys over ``world`` processes.

    On a GPU cuDNN picks its convolution algorithms by timing them (the clip shape never
    changes): 7% more clips/s for R(2+1)D-18 at batch 64 on an H200 (runners.bench_trainer).
    """
    try:
        check_queue_size(cfg.model.K, cfg.train.batch_size, world, cfg.model.symmetric)
    except ValueError as e:
        raise ValueError(f"config key 'model.K': {e}") from None
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    memory_format = (torch.channels_last_3d if cfg.train.channels_last and device.type == "cuda"
                     else torch.contiguous_format)
    model = build_model(cfg, device).to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.train.lr, momentum=cfg.train.momentum,
                                weight_decay=cfg.train.weight_decay)
    amp = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    return Training(model, optimizer, scaler, amp, memory_format)


def train_step(model, q, k, optimizer, scaler, amp, grad_clip: float, step: int,
               watch: Optional[LossWatch] = None):
    """One MoCo step: forward (enqueues the keys), backward, SGD step, then θk ← m θk + (1 - m) θq.

    The loss goes to ``watch`` (no host sync: the loop checks it at log steps and before saving);
    without a watch a non-finite loss raises NonFiniteLoss here, which waits for the device."""
    autocast = torch.autocast(q.device.type, dtype=amp) if amp else contextlib.nullcontext()
    with autocast:
        out = model(q, k)
    check_loss(out.loss, step, watch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(out.loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    unwrap_module(model).momentum_update()
    return out
