"""The Config mapped onto the pretraining loader of pipelines.loader.

``build_pretrain_loader(cfg, rank, world, device)``: two clips per training video,
random resized crop + flip per clip, FAME per cfg.fame (none when fame.variant or
fame.background is "none"), colour augmentation per cfg.aug, normalisation;
train.batch_size videos per process, every process the same number of full batches.
Yields PretrainBatch(query, key, label, index[, masks, original, merged]).
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

import fame
from pipelines.loader import VideoLoader, pretrain_loader
from pipelines.params import AugParams
from pipelines.sampler import full_batches
from runners.config import Config
from runners.eval_data import dali_device, load_video_set

NO_FAME = "none"
NO_COMPENSATION = (False, "none")    # fame.camera_compensation values meaning "off"


def fame_config(cfg: Config, steps_per_epoch: int = 0) -> Optional[fame.FameConfig]:
    """cfg.fame as a FameConfig, or None when no merging is configured. The beta warm-up
    (fame.beta_warmup_epochs) is counted in steps of ``steps_per_epoch``."""
    section = cfg.fame
    if section.variant == NO_FAME or section.background == NO_FAME:
        return None
    compensation = False if section.camera_compensation in NO_COMPENSATION else section.camera_compensation
    return fame.FameConfig(beta=section.beta, variant=section.variant, hue=section.hue,
                           background=section.background, pick=section.pick, branches=section.branches,
                           beta_min=section.beta_min, beta_max=section.beta_max,
                           camera_compensation=compensation,
                           beta_warmup_steps=round(section.beta_warmup_epochs * steps_per_epoch))


def aug_params(cfg: Config) -> AugParams:
    return AugParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in dataclasses.asdict(cfg.aug).items()})


def pretrain_settings(cfg: Config, device: torch.device, decode: str, steps_per_epoch: int = 0) -> dict:
    """Keyword arguments of pipelines.loader.pretrain_loader for this config (all but the videos);
    ``decode`` is where the videos are decoded (``runners.eval_data.load_video_set`` settles it);
    ``steps_per_epoch`` sizes FAME's beta warm-up (0: none, as for profiling)."""
    dali, device_id = dali_device(device)
    return dict(device=dali, decode=decode, batch_size=cfg.train.batch_size, frames=cfg.clip.frames,
                stride=cfg.clip.stride, crop=cfg.clip.crop, aug=aug_params(cfg),
                fame_cfg=fame_config(cfg, steps_per_epoch), seed=cfg.seed,
                num_threads=cfg.train.num_threads, prefetch=cfg.train.prefetch, device_id=device_id,
                pipelines=cfg.train.pipelines)


def build_pretrain_loader(cfg: Config, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu"),
                          *, return_masks: Optional[bool] = None) -> VideoLoader:
    """The pretraining loader of this process. ``return_masks`` (FAME examples for the logs)
    defaults to train.examples_every > 0 when FAME is on."""
    videos, decode = load_video_set(cfg, cfg.data.train_list, rank, device)
    settings = pretrain_settings(cfg, device, decode, full_batches(len(videos), rank, world, cfg.train.batch_size))
    if return_masks is None:
        return_masks = cfg.train.examples_every > 0 and settings["fame_cfg"] is not None
    return pretrain_loader(videos, rank=rank, world=world, return_masks=return_masks, **settings)
