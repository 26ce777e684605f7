"""The training steps engine.fit runs: the MoCo step of pretraining and the classifier step of
the probes, and the MoCo model of a config. No data pipeline here, so the MoCo step can be timed
alone (measure.bench_trainer) wherever torch runs.

Every step: forward under autocast (``amp``: a dtype, or None for fp32) on the inputs' device,
the loss handed to a LossWatch (no host sync; without a watch a non-finite loss raises
NonFiniteLoss at once, which waits for the device), backward through the loss scaler, optional
gradient-norm clipping, the optimizer step. Clips are NCTHW float.
"""
from __future__ import annotations

import contextlib
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from engine.amp import amp_dtype
from engine.checkpoint import LossWatch, check_loss
from engine.config import Config
from engine.evaluation import PERCENT, topk_correct
from engine.models import make_backbone
from models.backbones import unwrap_module
from models.moco import MoCo, MoCoOutput, check_queue_size, contrastive_accuracy

MOCO_TOPK = (1, 5)       # contrastive accuracies logged by pretraining (acc1, acc5)


class Update(NamedTuple):
    """How a step turns a loss into new weights; optimizer and scaler are checkpointed by fit."""
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: torch.dtype | None = None   # autocast dtype; None: fp32
    grad_clip: float = 0.0              # max gradient norm; 0: no clipping


class Training(NamedTuple):
    """What build_training makes for pretraining."""
    model: MoCo
    update: Update
    memory_format: torch.memory_format  # of the model and of its inputs


def autocast(device: torch.device, amp: torch.dtype | None):
    """torch.autocast on ``device`` with dtype ``amp``; a no-op context for None (fp32)."""
    return torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()


def apply_update(loss: torch.Tensor, model: nn.Module, update: Update) -> None:
    """Backward of ``loss`` through the scaler, optional clipping of model's gradients, optimizer step."""
    update.optimizer.zero_grad(set_to_none=True)
    update.scaler.scale(loss).backward()
    if update.grad_clip > 0:
        update.scaler.unscale_(update.optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), update.grad_clip)
    update.scaler.step(update.optimizer)
    update.scaler.update()


def moco_step(model: nn.Module, q: torch.Tensor, k: torch.Tensor, update: Update, step: int,
              watch: LossWatch | None = None, ids: torch.Tensor | None = None) -> MoCoOutput:
    """One MoCo step on query and key clips: forward (enqueues the keys), backward, SGD step,
    then θk ← m θk + (1 - m) θq. ``model``: MoCo, or MoCo under DDP. ``ids``: the clips'
    video indices, for model.drop_own_keys."""
    with autocast(q.device, update.amp):
        out = model(q, k, ids)
    check_loss(out.loss, step, watch)
    apply_update(out.loss, model, update)
    unwrap_module(model).momentum_update()
    return out


def classifier_step(model: nn.Module, clips: torch.Tensor, labels: torch.Tensor, update: Update, step: int,
                    watch: LossWatch | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step on the cross-entropy of clips (N,) ``labels``; returns (loss, logits (N, classes))."""
    with autocast(clips.device, update.amp):
        logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
    check_loss(loss, step, watch)
    apply_update(loss, model, update)
    return loss, logits


class MocoStep(NamedTuple):
    """fit's step for pretraining: a PretrainBatch's query and key, in the model's memory format;
    with ``video_ids`` (model.drop_own_keys) also its videos' indices."""
    update: Update
    memory_format: torch.memory_format = torch.contiguous_format
    video_ids: bool = False

    def __call__(self, model: nn.Module, batch, step: int, watch: LossWatch) -> MoCoOutput:
        q, k = (x.contiguous(memory_format=self.memory_format) for x in (batch.query, batch.key))
        ids = batch.index.to(q.device, non_blocking=True) if self.video_ids else None
        return moco_step(model, q, k, self.update, step, watch, ids)

    @staticmethod
    def metrics(out: MoCoOutput, batch) -> dict:
        """The loss and the contrastive top-1/top-5 accuracy (%) of the step (host reads)."""
        acc1, acc5 = (a.item() for a in contrastive_accuracy(out.logits, out.labels, topk=MOCO_TOPK))
        return {"loss": out.loss.item(), "acc1": acc1, "acc5": acc5}


class ClassifierStep(NamedTuple):
    """fit's step for the probes: a ClipBatch's clip and label."""
    update: Update

    def __call__(self, model: nn.Module, batch, step: int, watch: LossWatch) -> tuple[torch.Tensor, torch.Tensor]:
        return classifier_step(model, batch.clip, batch.label, self.update, step, watch)

    @staticmethod
    def metrics(output: tuple[torch.Tensor, torch.Tensor], batch) -> dict:
        """The loss and the clip top-1 accuracy (%) of the step's batch (host reads)."""
        loss, logits = output
        correct = topk_correct(logits.float(), batch.label, (1,))[1]
        return {"train/loss": loss.item(), "train/clip_top1": PERCENT * correct / batch.label.numel()}


def build_model(cfg: Config, device: torch.device) -> MoCo:
    return MoCo(make_backbone(cfg), make_backbone(cfg), dim=cfg.model.dim, K=cfg.model.K, m=cfg.model.m, T=cfg.model.T,
                head=cfg.model.head, symmetric=cfg.model.symmetric,
                shuffle_bn_groups=cfg.model.shuffle_bn_groups, batch_negatives=cfg.model.batch_negatives,
                queue_seed=cfg.seed, predictor_dim=cfg.model.predictor_dim,
                drop_own_keys=cfg.model.drop_own_keys).to(device)


def make_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """"sgd": SGD with ``momentum``; "adamw": AdamW (torch's betas; ``momentum`` unused). AdamW
    scales each weight's step by its own gradient history, so features whose gradients are
    small (a small object's) learn as fast as the rest (docs/exploration.md, small objects)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; allowed: sgd, adamw")


def build_training(cfg: Config, device: torch.device, world: int = 1) -> Training:
    """The model in its memory format and its Update (train.optimizer over its parameters, the loss
    scaler, the AMP dtype and grad_clip of train.*), after checking that model.K holds a whole number of
    steps' keys over ``world`` processes.

    On a GPU cuDNN picks its convolution algorithms by timing them (the clip shape never
    changes): 7% more clips/s for R(2+1)D-18 at batch 64 on an H200 (measure.bench_trainer).
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
    optimizer = make_optimizer(model.parameters(), cfg.train.optimizer, cfg.train.lr, cfg.train.weight_decay,
                               cfg.train.momentum)
    amp = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    return Training(model, Update(optimizer, scaler, amp, cfg.train.grad_clip), memory_format)
