"""engine.fit on a tiny fake task: log rows, checkpoints every N steps and at epoch ends, a
resume mid-epoch that takes the same steps, a non-finite loss that stops the run unsaved."""
import os
from typing import NamedTuple

import pytest
import torch

from engine import checkpoint as ckpt
from engine import config as C
from engine.fit import Schedule, Task, fit, format_eta, show_progress_bar
from engine.logger import read_metrics
from engine.schedule import lr_lambda
from engine.setup import Run
from engine.steps import ClassifierStep, Update

FEATURES = 6
CLASSES = 3
BATCH = 4
STEPS_PER_EPOCH = 4
EPOCHS = 2
LR = 0.1
DROPOUT = 0.5     # the steps draw from torch's RNG: a resume must restore it
NAN = float("nan")
LOOP_METRICS = {"lr", "epoch", "clips_per_s", "data_wait"}


class Batch(NamedTuple):
    clip: torch.Tensor     # (BATCH, FEATURES)
    label: torch.Tensor    # (BATCH,)


class FakeLoader:
    """Batches that are a function of (epoch, step) alone, resumable like pipelines' VideoLoader;
    ``served`` lists the (epoch, step) of every batch handed out. The batch at global step
    ``poisoned`` (if any) is NaN."""

    def __init__(self, poisoned=None):
        self.epoch, self.step, self.poisoned, self.served = 0, 0, poisoned, []

    def __len__(self):
        return STEPS_PER_EPOCH

    def set_epoch(self, epoch):
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def state_dict(self):
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state):
        self.epoch, self.step = state["epoch"], state["step"]

    def __iter__(self):
        if self.step >= len(self):
            self.step = 0
        while self.step < len(self):
            generator = torch.Generator().manual_seed(self.epoch * len(self) + self.step)
            clip = torch.randn(BATCH, FEATURES, generator=generator)
            if self.epoch * len(self) + self.step == self.poisoned:
                clip = clip * NAN
            self.served.append((self.epoch, self.step))
            self.step += 1
            yield Batch(clip, torch.randint(CLASSES, (BATCH,), generator=generator))


class Stop(Exception):
    """Stands for a killed process."""


def stop_at(step):
    def hook(trainer):
        if trainer.step == step:
            raise Stop(step)
    return hook


def make_run(tmp_path, name, *overrides):
    cfg = C.load_config(None, [f"run.dir={tmp_path}", f"run.name={name}", "wandb.mode=disabled",
                               "train.checkpoint_every=1", *overrides])
    run_dir = os.path.join(str(tmp_path), name)
    os.makedirs(run_dir, exist_ok=True)
    return Run(cfg, run_dir, torch.device("cpu"), 0, 1)


def make_task(loader, hooks=(), epochs=EPOCHS):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Dropout(DROPOUT), torch.nn.Linear(FEATURES, CLASSES))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    update = Update(optimizer, torch.amp.GradScaler("cpu", enabled=False))
    return Task("fake", "finetune", model, loader, ClassifierStep(update), Schedule("cosine", epochs),
                clips_per_step=BATCH, resume_keys=("seed", "train.lr"), hooks=hooks)


def losses(run_dir):
    return [(row["step"], row["train/loss"]) for row in read_metrics(run_dir) if "train/loss" in row]


def test_the_log_rows_name_the_task_and_loop_metrics(tmp_path):
    run = make_run(tmp_path, "rows", "train.log_every=3")
    fitted = fit(run, make_task(FakeLoader()))
    rows = read_metrics(run.run_dir)
    assert fitted.step == STEPS_PER_EPOCH * EPOCHS and fitted.output is not None
    assert [r["step"] for r in rows] == [3, 6, 8]                 # every log_every-th and the last
    assert all({"train/loss", "train/clip_top1"} | LOOP_METRICS <= set(r) for r in rows)
    assert rows[-1]["epoch"] == EPOCHS
    assert C.load_config(os.path.join(run.run_dir, "config.yaml")).run.name == "rows"
    fitted.logger.close()


def test_a_checkpoint_every_n_steps_and_at_every_epoch_end(tmp_path, monkeypatch):
    saves = []
    save_training = ckpt.save_training

    def recorded(run_dir, parts, **kw):
        saves.append((kw["step"], kw["epoch_copy"]))
        return save_training(run_dir, parts, **kw)
    monkeypatch.setattr(ckpt, "save_training", recorded)
    run = make_run(tmp_path, "saves", "train.checkpoint_steps=3", "train.checkpoint_every=2")
    fit(run, make_task(FakeLoader(), epochs=3)).logger.close()
    # step 12 ends an epoch: saved once
    assert saves == [(3, None), (4, None), (6, None), (8, 2), (9, None), (12, None)]
    assert sorted(os.listdir(ckpt.checkpoint_dir(run.run_dir))) == ["epoch_0002.pt", ckpt.LAST]


def test_a_run_stopped_mid_epoch_resumes_with_the_same_steps(tmp_path):
    ref = make_run(tmp_path, "ref", "train.checkpoint_steps=3", "train.log_every=1")
    fit(ref, make_task(FakeLoader())).logger.close()
    stopped = make_run(tmp_path, "stopped", "train.checkpoint_steps=3", "train.log_every=1")
    with pytest.raises(Stop):
        fit(stopped, make_task(FakeLoader(), hooks=(stop_at(7),)))     # saved last at step 6: epoch 1, step 2
    loader = FakeLoader()
    fitted = fit(stopped, make_task(loader))
    fitted.logger.close()
    assert loader.served == [(1, 2), (1, 3)] and fitted.step == STEPS_PER_EPOCH * EPOCHS
    assert losses(stopped.run_dir) == losses(ref.run_dir)         # step 7 logged once: the stopped run's row was cut
    a, b = (ckpt.load_checkpoint(os.path.join(ckpt.checkpoint_dir(r.run_dir), ckpt.LAST)) for r in (ref, stopped))
    assert all(torch.equal(value, b["model"][key]) for key, value in a["model"].items())


def test_a_finished_run_resumed_trains_nothing(tmp_path):
    run = make_run(tmp_path, "done")
    fit(run, make_task(FakeLoader())).logger.close()
    loader = FakeLoader()
    fitted = fit(run, make_task(loader))
    fitted.logger.close()
    assert (fitted.step, fitted.output, loader.served) == (STEPS_PER_EPOCH * EPOCHS, None, [])


def test_a_changed_resume_key_is_refused_and_the_config_kept(tmp_path):
    fit(make_run(tmp_path, "run"), make_task(FakeLoader())).logger.close()
    with pytest.raises(ValueError, match="config key 'train.lr' was 0.01, now 0.02"):
        fit(make_run(tmp_path, "run", "train.lr=0.02"), make_task(FakeLoader()))
    assert C.load_config(str(tmp_path / "run" / "config.yaml")).train.lr == 0.01


@pytest.mark.parametrize("checkpoint_steps, last_saved", [(0, None), (1, 2)])
def test_a_non_finite_loss_stops_the_run_naming_its_step(tmp_path, checkpoint_steps, last_saved):
    run = make_run(tmp_path, "nan", "train.log_every=2", f"train.checkpoint_steps={checkpoint_steps}")
    with pytest.raises(ckpt.NonFiniteLoss, match=r"non-finite loss nan at step 2 \(found at step 3"
                       if checkpoint_steps else r"non-finite loss nan at step 2 \(found at step 4"):
        fit(run, make_task(FakeLoader(poisoned=2)))
    last = os.path.join(ckpt.checkpoint_dir(run.run_dir), ckpt.LAST)
    assert (ckpt.load_checkpoint(last)["step"] if os.path.exists(last) else None) == last_saved
    assert [step for step, _ in losses(run.run_dir)] == [2]


def test_each_logged_lr_is_the_one_its_step_trained_with(tmp_path):
    run = make_run(tmp_path, "lr", "train.log_every=1")
    fit(run, make_task(FakeLoader())).logger.close()
    factor = lr_lambda("cosine", STEPS_PER_EPOCH, EPOCHS)
    rows = read_metrics(run.run_dir)
    assert rows[-1]["lr"] > 0                                       # not the next step's: cosine ends at 0
    assert [r["lr"] for r in rows] == pytest.approx([factor(r["step"] - 1) * LR for r in rows])


@pytest.mark.parametrize("isatty, columns, shown", [
    (True, 80, True),
    (True, 0, False),         # a terminal of unknown width (COLUMNS=0, some CI and IDE consoles)
    (False, 80, False),       # a pipe or a file
    (False, 0, False),
])
def test_the_progress_bar_only_on_a_terminal_of_known_width(isatty, columns, shown):
    assert show_progress_bar(isatty, columns) is shown


@pytest.mark.parametrize("seconds, text", [(0, "0:00:00"), (59.6, "0:01:00"), (3725, "1:02:05"),
                                           (100 * 3600 + 1, "100:00:01")])
def test_an_eta_reads_hours_minutes_seconds(seconds, text):
    assert format_eta(seconds) == text
