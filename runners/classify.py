"""Action recognition on a pretrained backbone:
`python -m runners.classify --config X pretrained=runs/<name>/backbone.pt`.

eval.protocol (make linear / make finetune):
- linear: the backbone is frozen and kept in eval mode (BN statistics fixed,
  no gradients); only the classifier (no dropout) trains.
- finetune: the whole network trains; the classifier has eval.dropout.
Both: eval.optimizer (SGD with momentum 0.9, or AdamW) with eval.lr, eval.weight_decay and the eval.schedule
(step: x0.1 at eval.milestones, or cosine) over eval.epochs, one random clip
per training video per epoch, eval.batch_size clips per process. Then every
video of data.val_list is tested with eval.clips_per_video uniformly spaced
centre-cropped clips, softmax probabilities averaged per video: video top-1,
top-5 and clip top-1, gathered over all processes so each video counts once.
`pretrained` may be a backbone.pt or a pretraining checkpoint; without it the
backbone starts from random init (labelled so in results.json).
Resume, logging and the train.* runtime settings (amp, resume, log_every,
checkpoint_every, checkpoint_steps) work as in pretraining: the same loop,
engine.fit. The run directory gets checkpoints/last.pt, metrics.jsonl and
results.json.
"""
from __future__ import annotations

import torch

from engine.amp import amp_dtype
from engine.cli import parse_cli
from engine.config import PROBE, Config, resume_keys
from engine.dataset import ensure_data
from engine.errors import run_command
from engine.evaluation import (
    check_pretrained_path,
    evaluate_classifier,
    load_pretrained_backbone,
    results_record,
    write_results,
)
from engine.fit import Schedule, Task, fit
from engine.loaders import build_test_clips_loader, build_train_clips_loader, check_list_labels
from engine.models import make_backbone
from engine.reference import format_reference
from engine.setup import broadcast_buffers, end_run, start_run
from engine.steps import ClassifierStep, Update, make_optimizer
from models.classifier import VideoClassifier

SGD_MOMENTUM = 0.9
STEP_DECAY = 0.1
# What a resumed run must share with its checkpoint, besides the pretrained file's content and the
# process count (the file's path may differ: a moved run directory still resumes).


def build_classifier(cfg: Config, device: torch.device) -> tuple[VideoClassifier, dict]:
    """The classifier of cfg.eval.protocol on cfg.pretrained's backbone; returns it and the pretrained record."""
    backbone = make_backbone(cfg)
    pretrained = load_pretrained_backbone(backbone, cfg)
    linear = cfg.eval.protocol == "linear"
    model = VideoClassifier(backbone, cfg.data.num_classes, 0.0 if linear else cfg.eval.dropout, frozen=linear)
    return model.to(device), pretrained


def build_update(model: VideoClassifier, optimizer_name: str, lr: float, weight_decay: float,
                 amp: torch.dtype | None, device: torch.device) -> Update:
    """``optimizer_name`` (sgd: momentum SGD_MOMENTUM) over the trainable parameters (the classifier
    alone when frozen)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, optimizer_name, lr, weight_decay, SGD_MOMENTUM)
    return Update(optimizer, torch.amp.GradScaler(device.type, enabled=amp == torch.float16), amp)


def pretrained_name(pretrained: dict) -> str:
    return pretrained["path"] or pretrained["init"] + " init"


def format_results(record: dict, clips_per_video: int, path: str) -> str:
    """The test metrics of a results record, where it is written and what the backbone was."""
    metrics = record["metrics"]
    return (f"\n{record['protocol']} on {record['dataset']} ({record['split']['test']}, "
            f"{metrics['videos']} videos x {clips_per_video} clips): video top-1 {metrics['video_top1']:.1f}  "
            f"top-5 {metrics['video_top5']:.1f}  clip top-1 {metrics['clip_top1']:.1f}\n"
            f"results: {path}\npretrained: {pretrained_name(record['pretrained'])}")


def main(cfg: Config) -> dict:
    """Train and test; returns the results record (also <run>/results.json)."""
    check_pretrained_path(cfg)
    run = start_run(cfg, write_config=False)
    cfg, probe = run.cfg, run.cfg.eval
    ensure_data(cfg, run.rank)
    check_list_labels(cfg)
    model, pretrained = build_classifier(cfg, run.device)
    loader = build_train_clips_loader(cfg, cfg.data.train_list, run.rank, run.world, run.device)
    amp = amp_dtype(cfg.train.amp, run.device)
    fitted = fit(run, Task(
        f"{probe.protocol} on {cfg.data.train_list} ({pretrained_name(pretrained)})", probe.protocol, model, loader,
        ClassifierStep(build_update(model, probe.optimizer, probe.lr, probe.weight_decay, amp, run.device)),
        Schedule(probe.schedule, probe.epochs, milestones=probe.milestones, decay=STEP_DECAY),
        clips_per_step=probe.batch_size * run.world, resume_keys=resume_keys(PROBE),
        run_facts={"pretrained_sha256": pretrained["sha256"]}))

    broadcast_buffers(model)     # every rank scores the model rank 0 saved
    test = build_test_clips_loader(cfg, cfg.data.val_list, run.rank, run.world, run.device)
    metrics = evaluate_classifier(model, test, test.num_videos, cfg.data.num_classes, probe.clips_per_video,
                                  run.device, amp)
    record = results_record(cfg, probe.protocol, metrics, pretrained)
    if run.rank == 0:
        path = write_results(run.run_dir, record)
        fitted.logger.log({f"test/{k}": v for k, v in metrics.items()}, fitted.step)
        fitted.logger.summary({"step": fitted.step, **metrics})
        print(format_results(record, probe.clips_per_video, path))
        print(format_reference(cfg.reference, cfg.data.num_classes, probe.protocol))
    end_run(fitted.logger)
    return record


if __name__ == "__main__":
    run_command(main, parse_cli(__doc__.splitlines()[0]))
