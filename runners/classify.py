"""Action recognition on a pretrained backbone: `python -m runners.classify --config X pretrained=runs/<name>/backbone.pt`.

eval.protocol (make linear / make finetune):
- linear: the backbone is frozen and kept in eval mode (BN statistics fixed,
  no gradients); only the classifier (no dropout) trains.
- finetune: the whole network trains; the classifier has eval.dropout.
Both: SGD (momentum 0.9) with eval.lr, eval.weight_decay and the eval.schedule
(step: x0.1 at eval.milestones, or cosine) over eval.epochs, one random clip
per training video per epoch, eval.batch_size clips per process. Then every
video of data.val_list is tested with eval.clips_per_video uniformly spaced
centre-cropped clips, softmax probabilities averaged per video: video top-1,
top-5 and clip top-1, gathered over all processes so each video counts once.
`pretrained` may be a backbone.pt or a pretraining checkpoint; without it the
backbone starts from random init (labelled so in results.json).
Resume, logging and the train.* runtime settings (amp, resume, log_every,
checkpoint_every) work as in pretraining. The run directory gets
checkpoints/last.pt, metrics.jsonl and results.json.
"""
from __future__ import annotations

import contextlib
import logging
import time
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from models.classifier import VideoClassifier
from engine import checkpoint as ckpt
from engine.setup import (MIN_ELAPSED_S, amp_dtype, broadcast_buffers, end_run, open_logger, parse_cli,
                            start_run, write_run_config)
from engine.config import Config, to_dict
from engine.loaders import build_test_clips_loader, build_train_clips_loader, check_list_labels
from engine.models import make_backbone
from engine.evaluation import (check_pretrained_path, evaluate_classifier,
                                load_pretrained_backbone, results_record, topk_correct, write_results)
from engine.logger import gpu_memory_metrics
from engine.schedule import lr_lambda

log = logging.getLogger("fame")
SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1
PERCENT = 100.0
# What a resumed run must share with its checkpoint, besides the pretrained file's content and the
# process count (the file's path may differ: a moved run directory still resumes).
RESUME_KEYS = ("seed", "data.root", "data.train_list", "data.num_classes", "data.min_frames",
               "data.synthetic", "clip", "aug", "model.backbone", "model.width", "model.checkpoint", "eval.protocol",
               "eval.epochs", "eval.batch_size", "eval.lr", "eval.weight_decay", "eval.dropout", "eval.schedule",
               "eval.milestones")


def build_classifier(cfg: Config, device: torch.device) -> tuple[VideoClassifier, dict]:
    """The classifier of cfg.eval.protocol on cfg.pretrained's backbone; returns it and the pretrained record."""
    backbone = make_backbone(cfg)
    pretrained = load_pretrained_backbone(backbone, cfg)
    linear = cfg.eval.protocol == "linear"
    model = VideoClassifier(backbone, cfg.data.num_classes, 0.0 if linear else cfg.eval.dropout, frozen=linear)
    return model.to(device), pretrained


def train_step(model, clips, labels, optimizer, scaler, amp, step: int = 0,
               watch: Optional[ckpt.LossWatch] = None):
    """One SGD step on cross-entropy; returns (loss, logits). The loss goes to ``watch`` (no host
    sync; the loop checks it at log steps and saves); without one a non-finite loss raises
    checkpoint.NonFiniteLoss here."""
    autocast = torch.autocast(clips.device.type, dtype=amp) if amp else contextlib.nullcontext()
    with autocast:
        logits = model(clips)
        loss = F.cross_entropy(logits.float(), labels)
    ckpt.check_loss(loss, step, watch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss, logits


def main(cfg: Config) -> dict:
    """Train and test; returns the results record (also <run>/results.json)."""
    check_pretrained_path(cfg)
    cfg, run_dir, device, rank, world = start_run(cfg, write_config=False)
    check_list_labels(cfg)

    model, pretrained = build_classifier(cfg, device)
    train_loader = build_train_clips_loader(cfg, cfg.data.train_list, rank, world, device)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * cfg.eval.epochs
    if steps_per_epoch == 0:
        raise ValueError(f"config key 'eval.batch_size' ({cfg.eval.batch_size}) x {world} process(es) is larger "
                         f"than this rank's share of the training videos in '{cfg.data.train_list}': no full batch")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.eval.lr, momentum=SGD_MOMENTUM, weight_decay=cfg.eval.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        cfg.eval.schedule, steps_per_epoch, cfg.eval.epochs, milestones=cfg.eval.milestones, decay=STEP_DECAY))
    amp = amp_dtype(cfg.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    run = {"world": world, "pretrained_sha256": pretrained["sha256"]}

    def same_run(path, state):
        ckpt.check_same_run(path, state, to_dict(cfg), RESUME_KEYS, run)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "loader": train_loader}
    step = ckpt.resume_training(run_dir, cfg.train.resume, parts, check=same_run)
    write_run_config(cfg, run_dir, rank)
    ddp = DDP(model) if world > 1 else model

    logger = open_logger(cfg, run_dir, cfg.eval.protocol, rank)
    logger.truncate_after(step)      # the steps after the checkpoint are logged again

    watch = ckpt.LossWatch(device)   # read back only at log steps and saves: no host sync per step

    def save(epoch_copy=None):       # every rank: checks the losses so far, gathers the RNG states
        ckpt.save_training_all_ranks(run_dir, parts, rank=rank, watch=watch, step=step,
                                     epoch=step // steps_per_epoch, config=to_dict(cfg), run=run,
                                     epoch_copy=epoch_copy)

    log.info("%s on %s (%s): %d steps/epoch x %d epochs on %s (world %d)", cfg.eval.protocol, cfg.data.train_list,
             pretrained["path"] or pretrained["init"] + " init", steps_per_epoch, cfg.eval.epochs, device, world)
    model.train()
    while step < total_steps:
        epoch = step // steps_per_epoch
        train_loader.set_epoch(epoch)
        t_last = time.perf_counter()
        for batch in train_loader:
            labels = batch.label
            loss, logits = train_step(ddp, batch.clip, labels, optimizer, scaler, amp, step, watch)
            scheduler.step()
            step += 1
            if step % cfg.train.log_every == 0 or step == total_steps:
                watch.check(step)
                now = time.perf_counter()
                elapsed = max(now - t_last, MIN_ELAPSED_S)
                metrics = {"train/loss": loss.item(), "lr": scheduler.get_last_lr()[0], "epoch": step / steps_per_epoch,
                           "train/clip_top1": PERCENT * topk_correct(logits.float(), labels, (1,))[1] / labels.numel(),
                           "clips_per_s": cfg.eval.batch_size * world * cfg.train.log_every / elapsed,
                           **gpu_memory_metrics(device)}
                logger.log(metrics, step)
                log.info("epoch %d step %d/%d loss %.4f clip top-1 %.1f lr %.4g", epoch, step, total_steps,
                         metrics["train/loss"], metrics["train/clip_top1"], metrics["lr"])
                t_last = now
        done_epoch = step // steps_per_epoch
        save(epoch_copy=done_epoch if done_epoch % cfg.train.checkpoint_every == 0 else None)

    broadcast_buffers(model)     # every rank scores the model rank 0 saved
    test = build_test_clips_loader(cfg, cfg.data.val_list, rank, world, device)
    metrics = evaluate_classifier(model, test, test.num_videos, cfg.data.num_classes, cfg.eval.clips_per_video,
                                  device, amp)
    record = results_record(cfg, cfg.eval.protocol, metrics, pretrained)
    if rank == 0:
        path = write_results(run_dir, record)
        logger.log({f"test/{k}": v for k, v in metrics.items()}, step)
        logger.summary({"step": step, **metrics})
        print(f"\n{cfg.eval.protocol} on {record['dataset']} ({record['split']['test']}, "
              f"{metrics['videos']} videos x {cfg.eval.clips_per_video} clips): video top-1 {metrics['video_top1']:.1f}  "
              f"top-5 {metrics['video_top5']:.1f}  clip top-1 {metrics['clip_top1']:.1f}\n"
              f"results: {path}\npretrained: {pretrained['path'] or pretrained['init'] + ' init'}")
    end_run(logger)
    return record


if __name__ == "__main__":
    main(parse_cli(__doc__.splitlines()[0]))
