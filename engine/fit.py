"""The one training loop: fit(run, task) trains a Task to its last step, resumably.

Set-up, once the model is built: the LambdaLR schedule, the resume of train.resume (refused when
the checkpoint differs in the task's resume keys or run facts), config.yaml (written only once
the checkpoint is accepted), the DDP wrap under torchrun, metrics.jsonl cut back to the resumed
step. Then the epoch loop (Trainer): set_epoch, iterate, the task's step, the schedule's step,
and after each step the hooks in order: the log row at log steps (the loss watch checked, the
task's metrics, the lr the step trained with, epoch, clips_per_s, data_wait, GPU memory; on a
terminal of known width a tqdm bar, elsewhere a log line with an ETA), the task's own hooks (e.g.
FAME example images), the checkpoint every train.checkpoint_steps; after each epoch the
checkpoint, kept as epoch_NNNN.pt every train.checkpoint_every epochs. A step's loss stays on
the device (LossWatch) until a log step or a save reads it: a non-finite one raises
NonFiniteLoss naming its step, and nothing from that step on is saved.
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from engine import checkpoint as ckpt
from engine.config import to_dict
from engine.logger import Logger, gpu_memory_metrics
from engine.schedule import lr_lambda
from engine.setup import MIN_ELAPSED_S, Run, open_logger, write_run_config
from engine.steps import Update

log = logging.getLogger("fame")
UNKNOWN_TERMINAL_SIZE = (0, 0)   # shutil.get_terminal_size's answer where no width is known
SECONDS_PER_MINUTE = 60
MINUTES_PER_HOUR = 60


class Schedule(NamedTuple):
    """The learning-rate schedule of a task (see engine.schedule.lr_lambda)."""
    kind: str                        # cosine | step
    epochs: int
    warmup_epochs: float = 0.0
    milestones: tuple = ()           # epochs of the step schedule's decays
    decay: float = 0.1               # the step schedule's factor at each milestone


class EpochLoader(Protocol):
    """A resumable training loader (pipelines.loader.VideoLoader): full batches, sharded by rank."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Any]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Step(Protocol):
    """One optimisation step of a task (engine.steps.MocoStep, ClassifierStep)."""
    update: Update                   # its optimizer and loss scaler are checkpointed

    def __call__(self, model: nn.Module, batch: Any, step: int, watch: ckpt.LossWatch) -> Any: ...
    def metrics(self, output: Any, batch: Any) -> dict: ...   # the task's log-row values (may read the host)


Hook = Callable[["Trainer"], None]   # runs after every step; reads trainer.step, .batch, .output, .logger


@dataclasses.dataclass(frozen=True)
class Task:
    """What fit trains and how: the parts, the step, the schedule and what a resume must share."""
    title: str                       # starts the run's first log line ("run <dir>", "linear on ...")
    job: str                         # the logger's job type: pretrain | linear | finetune
    model: nn.Module                 # checkpointed as "model"; the step gets it wrapped in DDP under torchrun
    loader: EpochLoader
    step: Step
    schedule: Schedule
    clips_per_step: int              # clips one step trains on over all processes (clips_per_s)
    resume_keys: tuple[str, ...]     # config keys a resumed run must share with its checkpoint
    run_facts: dict = dataclasses.field(default_factory=dict)   # besides the process count, ditto
    broadcast_buffers: bool = True   # DDP's; False where the buffers agree by construction (MoCo's queue)
    hooks: tuple[Hook, ...] = ()


class Fitted(NamedTuple):
    step: int                        # steps done in all
    output: Any                      # the last step's output; None when a finished run was resumed
    logger: Logger                   # still open: the runner logs its results and ends the run


class Throughput:
    """Clips/s and the fraction of wall time spent waiting for the loader, since the last read();
    ``step_s``: the seconds per step over that span (the ETA's rate)."""

    def __init__(self, clips_per_step: int):
        self.clips_per_step = clips_per_step
        self.start, self.wait, self.steps, self._t = time.perf_counter(), 0.0, 0, None
        self.step_s = 0.0

    def fetching(self) -> None:
        self._t = time.perf_counter()

    def fetched(self) -> None:
        self.wait += time.perf_counter() - self._t
        self.steps += 1

    def read(self) -> dict:
        now = time.perf_counter()
        elapsed = max(now - self.start, MIN_ELAPSED_S)
        self.step_s = elapsed / max(self.steps, 1)
        out = {"clips_per_s": self.clips_per_step * self.steps / elapsed, "data_wait": self.wait / elapsed}
        self.start, self.wait, self.steps = now, 0.0, 0
        return out


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: Schedule,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The per-step LambdaLR of ``schedule`` (fit steps it after every optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        schedule.kind, steps_per_epoch, schedule.epochs, schedule.warmup_epochs, schedule.milestones, schedule.decay))


def format_values(values: dict) -> str:
    """A log line's "name value" pairs."""
    return " ".join(f"{name} {value:.4g}" for name, value in values.items())


def format_eta(seconds: float) -> str:
    """A duration as h:mm:ss (the hours unbounded), e.g. 3725 s -> 1:02:05."""
    minutes, secs = divmod(round(seconds), SECONDS_PER_MINUTE)
    hours, minutes = divmod(minutes, MINUTES_PER_HOUR)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def show_progress_bar(isatty: bool, columns: int) -> bool:
    """Whether the tqdm bar shows the progress: only on a terminal of known, non-zero width. A pipe,
    a file, or a terminal that reports 0 columns (some CI and IDE consoles) gets the log lines instead."""
    return isatty and columns > 0


def stderr_shows_progress_bar() -> bool:
    """show_progress_bar for this process's stderr (the bar's stream) and terminal width."""
    return show_progress_bar(sys.stderr.isatty(), shutil.get_terminal_size(UNKNOWN_TERMINAL_SIZE).columns)


class Trainer:
    """A Task's set-up (in the constructor: see the module's docstring) and epoch loop. ``step``
    counts the steps done; ``batch``, ``output`` and ``lr`` (the rate it trained with) are the last
    step's while the hooks run."""

    def __init__(self, run: Run, task: Task):
        self.run, self.task, self.settings = run, task, run.cfg.train
        self.steps_per_epoch = len(task.loader)
        self.total_steps = self.steps_per_epoch * task.schedule.epochs
        self.scheduler = build_scheduler(task.step.update.optimizer, task.schedule, self.steps_per_epoch)
        self.parts = {"model": task.model, "optimizer": task.step.update.optimizer, "scheduler": self.scheduler,
                      "scaler": task.step.update.scaler, "loader": task.loader}
        self.config, self.facts = to_dict(run.cfg), {"world": run.world, **task.run_facts}
        self.step = ckpt.resume_training(run.run_dir, self.settings.resume, self.parts, check=self.check_same_run)
        write_run_config(run.cfg, run.run_dir, run.rank)      # only once the checkpoint is accepted
        self.model = DDP(task.model, broadcast_buffers=task.broadcast_buffers) if run.world > 1 else task.model
        self.logger = open_logger(run.cfg, run.run_dir, task.job, run.rank)
        self.logger.truncate_after(self.step)       # the steps after the checkpoint are logged again
        self.watch = ckpt.LossWatch(run.device)     # read back only at log steps and saves: no sync per step
        self.meter = Throughput(task.clips_per_step)
        self.batch, self.output, self.lr = None, None, None
        self.hooks: tuple[Hook, ...] = (Trainer.log_step, *task.hooks, Trainer.save_every_steps)
        self.bar: tqdm | None = None

    def check_same_run(self, path: str, state: dict) -> None:
        ckpt.check_same_run(path, state, self.config, self.task.resume_keys, self.facts)

    def train(self) -> None:
        """Train from the resumed step to the last one, checkpointing every epoch."""
        log.info("%s: %d steps/epoch x %d epochs on %s (world %d)", self.task.title, self.steps_per_epoch,
                 self.task.schedule.epochs, self.run.device, self.run.world)
        self.task.model.train()
        self.bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc=self.run.cfg.run.name,
                        dynamic_ncols=True, disable=self.run.rank != 0 or not stderr_shows_progress_bar())
        while self.step < self.total_steps:
            self.train_epoch()
            done_epoch = self.step // self.steps_per_epoch
            self.save(epoch_copy=done_epoch if done_epoch % self.settings.checkpoint_every == 0 else None)
        self.bar.close()

    def train_epoch(self) -> None:
        """The rest of the current epoch: step, schedule, hooks."""
        self.task.loader.set_epoch(self.step // self.steps_per_epoch)
        self.meter.fetching()
        for batch in self.task.loader:
            self.meter.fetched()
            self.lr = self.task.step.update.optimizer.param_groups[0]["lr"]   # before the scheduler steps past it
            self.batch, self.output = batch, self.task.step(self.model, batch, self.step, self.watch)
            self.scheduler.step()
            self.step += 1
            self.bar.update(1)
            for hook in self.hooks:
                hook(self)
            self.meter.fetching()
        self.batch = None

    def log_step(self) -> None:
        """At every train.log_every-th and the last step: check the losses, log the row, show progress."""
        if self.step % self.settings.log_every and self.step != self.total_steps:
            return
        self.watch.check(self.step)
        values = self.task.step.metrics(self.output, self.batch)
        row = {**values, "lr": self.lr, "epoch": self.step / self.steps_per_epoch,
               **self.meter.read(), **gpu_memory_metrics(self.run.device)}
        self.logger.log(row, self.step)
        self.bar.set_postfix({**{name: f"{value:.3g}" for name, value in values.items()},
                              "clips_s": f"{row['clips_per_s']:.0f}", "wait": f"{row['data_wait']:.0%}"})
        if self.bar.disable:
            log.info("step %d/%d epoch %.2f %s lr %.4g %.1f clips/s data-wait %.0f%% eta %s", self.step,
                     self.total_steps, row["epoch"], format_values(values), row["lr"], row["clips_per_s"],
                     100 * row["data_wait"], format_eta((self.total_steps - self.step) * self.meter.step_s))

    def save_every_steps(self) -> None:
        """Every train.checkpoint_steps steps; not at an epoch's end, which train() saves anyway."""
        epoch_end = self.step % self.steps_per_epoch == 0
        if self.settings.checkpoint_steps and self.step % self.settings.checkpoint_steps == 0 and not epoch_end:
            self.save()

    def save(self, epoch_copy: int | None = None) -> None:
        """Checkpoint the current step; every rank calls this (the losses so far are checked, the RNG
        states gathered), rank 0 writes."""
        ckpt.save_training_all_ranks(self.run.run_dir, self.parts, rank=self.run.rank, watch=self.watch,
                                     step=self.step, epoch=self.step // self.steps_per_epoch, config=self.config,
                                     run=self.facts, epoch_copy=epoch_copy)


def fit(run: Run, task: Task) -> Fitted:
    """Set up ``task`` for ``run`` (resuming per train.resume) and train it to its last step."""
    trainer = Trainer(run, task)
    trainer.train()
    return Fitted(trainer.step, trainer.output, trainer.logger)
