"""MoCo + FAME pretraining: `python -m runners.pretrain --config X key=value ...`.

Also under torchrun (`make pretrain NPROC=N`): DDP, one DALI shard per rank,
shuffle-BN and all-gathered keys inside MoCo. The run directory
<run.dir>/<run.name>/ holds config.yaml, metrics.jsonl, checkpoints/ (last.pt
and every train.checkpoint_every epochs), backbone.pt and W&B's files.
"""
from __future__ import annotations

import math
import os

from engine import checkpoint as ckpt
from engine.cli import parse_cli
from engine.config import PRETRAIN, Config, ConfigError, resume_keys
from engine.dataset import ensure_data
from engine.errors import run_command
from engine.evaluation import BACKBONE_FILE
from engine.examples import fame_example_images
from engine.fit import Hook, Schedule, Task, Trainer, fit
from engine.loaders import build_pretrain_loader
from engine.logger import read_metrics
from engine.reference import format_pretext, format_reference, pretext_trend
from engine.setup import CLIPS_PER_VIDEO, RUN_CONFIG, end_run, start_run
from engine.steps import MocoStep, build_training
from models.backbones import export_backbone_state

EXAMPLES_NAME = "fame/examples"
PROBE_SUFFIX = "-linear"             # the evaluate hint's run.name: <run.name>-linear, beside this run
NOT_A_CHECKPOINT = ("auto", "none")  # train.resume values that name no checkpoint file


def refuse_pretrained(pretrained: str | None) -> None:
    if pretrained is not None:
        raise ConfigError(f"config key 'pretrained' ('{pretrained}') is for the downstream runners and "
                         "studies.trial; pretraining starts from scratch (continue a run with train.resume)")


def log_fame_examples(every: int) -> Hook:
    """A fit hook: every ``every`` steps (0: never) the batch's FAME examples (original | mask | merged)."""
    def log_examples(trainer: Trainer) -> None:
        batch = trainer.batch
        if every and trainer.step % every == 0 and batch.masks is not None:
            trainer.logger.log_images(EXAMPLES_NAME, fame_example_images(
                batch.original.cpu().numpy(), batch.masks.cpu().numpy(), batch.merged.cpu().numpy()), trainer.step)
    return log_examples


def final_loss(output) -> float:
    """The last step's loss; NaN when no step ran (a finished run resumed)."""
    return output.loss.item() if output is not None else math.nan


def format_probe_command(run_dir: str, backbone_path: str, name: str, resume: str) -> str:
    """`make linear` on the run's own resolved config (<run_dir>/config.yaml: the same data.* and
    model as the run) with its backbone, in a run directory of its own, <name>-linear (without it
    the probe would write into this run's). A run that resumed a checkpoint named by path hands the
    probe train.resume=auto: a MoCo checkpoint does not load into a classifier."""
    overrides = [f"pretrained={backbone_path}", f"run.name={name}{PROBE_SUFFIX}"]
    if resume not in NOT_A_CHECKPOINT:
        overrides.append("train.resume=auto")
    return f"make linear CONFIG={os.path.join(run_dir, RUN_CONFIG)} ARGS=\"{' '.join(overrides)}\""


def format_next_steps(run_dir: str, backbone_path: str, wandb_dir: str | None, wandb_offline: bool,
                      probe_command: str) -> str:
    """Where the run's files are and the command that evaluates its backbone (format_probe_command)."""
    sync = f"  (sync with: wandb sync {run_dir}/wandb)" if wandb_offline else ""
    return (f"\nrun directory: {run_dir}\ncheckpoint:    {os.path.join(ckpt.checkpoint_dir(run_dir), ckpt.LAST)}\n"
            f"backbone:      {backbone_path}\nW&B files:     {wandb_dir or 'disabled'}{sync}\n"
            f"evaluate:      {probe_command}")


def main(cfg: Config) -> str:
    """Pretrain MoCo (+ FAME) as cfg says; returns the run directory."""
    refuse_pretrained(cfg.pretrained)
    run = start_run(cfg, write_config=False)
    cfg, train = run.cfg, run.cfg.train
    ensure_data(cfg, run.rank)
    loader = build_pretrain_loader(cfg, rank=run.rank, world=run.world, device=run.device)
    model, update, memory_format = build_training(cfg, run.device, run.world)
    fitted = fit(run, Task(
        f"run {run.run_dir}", "pretrain", model, loader, MocoStep(update, memory_format, cfg.model.drop_own_keys),
        Schedule(train.schedule, train.epochs, train.warmup_epochs, train.milestones, train.lr_decay),
        clips_per_step=CLIPS_PER_VIDEO * train.batch_size * run.world, resume_keys=resume_keys(PRETRAIN),
        broadcast_buffers=False,                 # the queues agree by construction
        hooks=(log_fame_examples(train.examples_every),)))

    if run.rank == 0:
        backbone_path = os.path.join(run.run_dir, BACKBONE_FILE)
        ckpt.save_atomic(export_backbone_state(model.backbone), backbone_path)
        fitted.logger.summary({"step": fitted.step, "final_loss": final_loss(fitted.output)})
        print(format_next_steps(run.run_dir, backbone_path, fitted.logger.wandb_dir, cfg.wandb.mode == "offline",
                                format_probe_command(run.run_dir, backbone_path, cfg.run.name, train.resume)))
        print(format_pretext(pretext_trend(read_metrics(run.run_dir), cfg.model.K), cfg.model.K))
        print("after the probe, " + format_reference(cfg.reference, cfg.data.num_classes))
    end_run(fitted.logger)
    return run.run_dir


if __name__ == "__main__":
    run_command(main, parse_cli(__doc__.splitlines()[0]))
