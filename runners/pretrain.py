"""MoCo + FAME pretraining: `python -m runners.pretrain --config X key=value ...`.

Also under torchrun (`make pretrain NPROC=N`): DDP, one DALI shard per rank,
shuffle-BN and all-gathered keys inside MoCo. The run directory
<run.dir>/<run.name>/ holds config.yaml, metrics.jsonl, checkpoints/ (last.pt
and every train.checkpoint_every epochs), backbone.pt and W&B's files.
"""
from __future__ import annotations

import logging
import math
import os
import time

import torch
from tqdm import tqdm
from torch.nn.parallel import DistributedDataParallel as DDP

from models.backbones import export_backbone_state
from models.moco import contrastive_accuracy
from engine import checkpoint as ckpt
from engine.loaders import build_pretrain_loader
from engine.setup import CLIPS_PER_VIDEO, MIN_ELAPSED_S, end_run, open_logger, parse_cli, start_run, write_run_config
from engine.config import Config, to_dict
from engine.examples import fame_example_images
from engine.logger import gpu_memory_metrics
from engine.moco_step import build_training, train_step
from engine.schedule import lr_lambda

log = logging.getLogger("fame")
# What a resumed run must share with its checkpoint (a key names a whole section or one value).
RESUME_KEYS = ("seed", "data.root", "data.train_list", "data.min_frames", "data.synthetic", "clip", "fame", "aug",
               "model", "train.epochs", "train.batch_size", "train.lr", "train.momentum", "train.weight_decay",
               "train.schedule", "train.warmup_epochs", "train.milestones", "train.lr_decay", "train.grad_clip")


class Throughput:
    """Clips/s and the fraction of wall time spent waiting for the loader, since the last read()."""

    def __init__(self, clips_per_step: int):
        self.clips_per_step = clips_per_step
        self.start, self.wait, self.steps, self._t = time.perf_counter(), 0.0, 0, None

    def fetching(self):
        self._t = time.perf_counter()

    def fetched(self):
        self.wait += time.perf_counter() - self._t
        self.steps += 1

    def read(self) -> dict:
        now = time.perf_counter()
        elapsed = max(now - self.start, MIN_ELAPSED_S)
        out = {"clips_per_s": self.clips_per_step * self.steps / elapsed, "data_wait": self.wait / elapsed}
        self.start, self.wait, self.steps = now, 0.0, 0
        return out


def main(cfg: Config) -> str:
    if cfg.pretrained is not None:
        raise ValueError(f"config key 'pretrained' ('{cfg.pretrained}') is for the downstream runners and "
                         "runners.trial; pretraining starts from scratch (continue a run with train.resume)")
    cfg, run_dir, device, rank, world = start_run(cfg, write_config=False)

    loader = build_pretrain_loader(cfg, rank=rank, world=world, device=device)
    steps_per_epoch, total_steps = len(loader), len(loader) * cfg.train.epochs
    if steps_per_epoch == 0:
        raise ValueError(f"config key 'train.batch_size' ({cfg.train.batch_size}) x {world} process(es) is larger "
                         f"than this rank's share of the training videos in '{cfg.data.train_list}': no full batch")
    model, optimizer, scaler, amp, memory_format = build_training(cfg, device, world)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        cfg.train.schedule, steps_per_epoch, cfg.train.epochs, cfg.train.warmup_epochs,
        cfg.train.milestones, cfg.train.lr_decay))
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, "loader": loader}
    run = {"world": world}

    def same_run(path, state):
        ckpt.check_same_run(path, state, to_dict(cfg), RESUME_KEYS, run)
    step = ckpt.resume_training(run_dir, cfg.train.resume, parts, check=same_run)
    write_run_config(cfg, run_dir, rank)
    ddp = DDP(model, broadcast_buffers=False) if world > 1 else model   # queues agree by construction

    logger = open_logger(cfg, run_dir, "pretrain", rank)
    logger.truncate_after(step)      # the steps after the checkpoint are logged again

    watch = ckpt.LossWatch(device)   # read back only at log steps and saves: no host sync per step

    def save(epoch_copy=None):       # every rank: checks the losses so far, gathers the RNG states
        ckpt.save_training_all_ranks(run_dir, parts, rank=rank, watch=watch, step=step,
                                     epoch=step // steps_per_epoch, config=to_dict(cfg), run=run,
                                     epoch_copy=epoch_copy)

    log.info("run %s: %d steps/epoch x %d epochs on %s (world %d)", run_dir, steps_per_epoch,
             cfg.train.epochs, device, world)
    meter = Throughput(clips_per_step=CLIPS_PER_VIDEO * cfg.train.batch_size * world)
    bar = tqdm(total=total_steps, initial=step, unit="step", desc=cfg.run.name, dynamic_ncols=True,
               disable=True if rank else None)       # None: only on a terminal; log lines otherwise
    out = None                                       # stays None when a finished run is resumed
    while step < total_steps:
        loader.set_epoch(step // steps_per_epoch)
        meter.fetching()
        for batch in loader:
            meter.fetched()
            q, k = (x.contiguous(memory_format=memory_format) for x in (batch.query, batch.key))
            out = train_step(ddp, q, k, optimizer, scaler, amp, cfg.train.grad_clip, step, watch)
            scheduler.step()
            step += 1
            bar.update(1)
            if step % cfg.train.log_every == 0 or step == total_steps:
                watch.check(step)
                acc1, acc5 = (a.item() for a in contrastive_accuracy(out.logits, out.labels, topk=(1, 5)))
                metrics = {"loss": out.loss.item(), "acc1": acc1, "acc5": acc5, "lr": scheduler.get_last_lr()[0],
                           "epoch": step / steps_per_epoch, **meter.read()}
                metrics.update(gpu_memory_metrics(device))
                logger.log(metrics, step)
                bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc1=f"{acc1:.1f}",
                                clips_s=f"{metrics['clips_per_s']:.0f}", wait=f"{metrics['data_wait']:.0%}")
                if bar.disable:
                    log.info("step %d/%d epoch %.2f loss %.4f acc@1 %.1f lr %.4g %.1f clips/s data-wait %.0f%%",
                             step, total_steps, metrics["epoch"], metrics["loss"], acc1, metrics["lr"],
                             metrics["clips_per_s"], 100 * metrics["data_wait"])
            if cfg.train.examples_every and step % cfg.train.examples_every == 0 and batch.masks is not None:
                logger.log_images("fame/examples", fame_example_images(
                    batch.original.cpu().numpy(), batch.masks.cpu().numpy(), batch.merged.cpu().numpy()), step)
            if cfg.train.checkpoint_steps and step % cfg.train.checkpoint_steps == 0:
                save()
            meter.fetching()
        done_epoch = step // steps_per_epoch
        save(epoch_copy=done_epoch if done_epoch % cfg.train.checkpoint_every == 0 else None)
    bar.close()

    if rank == 0:
        backbone_path = os.path.join(run_dir, "backbone.pt")
        ckpt.save_atomic(export_backbone_state(model.backbone), backbone_path)
        logger.summary({"step": step, "final_loss": out.loss.item() if out is not None else math.nan})
        print(f"\nrun directory: {run_dir}\ncheckpoint:    {os.path.join(ckpt.checkpoint_dir(run_dir), ckpt.LAST)}\n"
              f"backbone:      {backbone_path}\nW&B files:     {logger.wandb_dir or 'disabled'}"
              f"{'  (sync with: wandb sync ' + run_dir + '/wandb)' if cfg.wandb.mode == 'offline' else ''}\n"
              f"evaluate:      make linear CONFIG={cfg.source or 'configs/synthetic.yaml'} "
              f"ARGS=\"pretrained={backbone_path}\"")
    end_run(logger)
    return run_dir


if __name__ == "__main__":
    main(parse_cli(__doc__.splitlines()[0]))
