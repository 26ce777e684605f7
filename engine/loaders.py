"""The Config mapped onto the loaders of pipelines.loader, one per role.

- ``build_pretrain_loader``: two clips per training video, random resized crop +
  flip per clip, FAME per cfg.fame (none when fame.variant or fame.background is
  "none"), colour augmentation per cfg.aug, normalisation; train.batch_size
  videos per process, every process the same number of full batches. Yields
  PretrainBatch(query, key, label, index[, masks, original, merged]).
- ``build_train_clips_loader``: one random clip per training video per epoch
  (random resized crop of aug.crop_area / aug.crop_aspect, flip aug.flip_p; no
  colour augmentation), eval.batch_size clips per process, every process the
  same number of full batches. Yields ClipBatch(clip NCTHW, label, index).
- ``build_test_clips_loader``: eval.clips_per_video uniformly spaced clips of
  every listed video, centre crop, list order, each video exactly once over
  all processes (the last batch may be smaller). Yields
  EvalBatch(clips NCTHW, label, video_index); ``loader.num_videos`` is the
  size of the whole list.

File lists hold paths relative to the list's own folder (data.filelist). Every loader checks
its list first: it exists and its labels lie in [0, data.num_classes) (pretraining too: the
probes read the same labels later). Bad input raises engine.errors.DataError (or
MissingFileError) naming the list, the entry or the videos.
The video index (<list>.index.json) is probed by rank 0 first, then read by
the others.

Where the videos are decoded is settled once per loader (``decode_for``): on the
CPU for a CPU run; on a GPU run as data.decode says, "auto" asking
``pipelines.videos.choose_decoder`` about the indexed videos and the CPU cores.
The choice and its reason are logged ("decode: cpu (...)"), and the videos are
checked against that decoder up front.
"""
from __future__ import annotations

import logging
import os
from typing import NamedTuple

import torch
import torch.distributed as dist

import fame
from data.filelist import check_labels, read_file_list
from data.index import build_index
from engine.config import ClipConfig, Config, ConfigError, TrainConfig, data_path
from engine.errors import DataError, MissingFileError, raise_as_data_errors
from pipelines import videos as video_checks
from pipelines.loader import VideoLoader, eval_clips_loader, pretrain_loader, train_clips_loader
from pipelines.params import AugParams, ClipGeometry, Runtime, Sharding
from pipelines.sampler import equal_shard, full_batches
from pipelines.videos import VideoMeta, videos_from_index

log = logging.getLogger(__name__)

AUTO_DECODE = "auto"
CPU_RUN_REASON = "a CPU run decodes on the CPU"

LIST_KEYS = {"train_list": "data.train_list", "val_list": "data.val_list"}


def dali_device(device: torch.device) -> tuple[str, int]:
    """The DALI device string and device id of a torch device."""
    return ("gpu", device.index or 0) if device.type == "cuda" else ("cpu", 0)


def min_frames(cfg: Config) -> int:
    """data.min_frames, or clip.frames x clip.stride when it is 0."""
    return cfg.data.min_frames or cfg.clip.frames * cfg.clip.stride


def _list_key(cfg: Config, list_name: str) -> str:
    for field, key in LIST_KEYS.items():
        if getattr(cfg.data, field) == list_name:
            return key
    return "file list"


def require_list_file(cfg: Config, list_name: str) -> str:
    """The path of a configured file list, or a MissingFileError naming its config key and data.root."""
    path = data_path(cfg, list_name)
    if not os.path.isfile(path):
        raise MissingFileError(f"config key '{_list_key(cfg, list_name)}': file list '{path}' does not exist "
                               f"(data.root '{cfg.data.root}')")
    return path


def check_labels_of(cfg: Config, list_name: str) -> None:
    """The list exists, reads, and every label lies in [0, data.num_classes), or a DataError naming
    the list and its first bad entry (entry number, path, label)."""
    path = require_list_file(cfg, list_name)
    with raise_as_data_errors():
        entries = read_file_list(path)
    try:
        check_labels(entries, cfg.data.num_classes, path)
    except ValueError as e:
        raise DataError(f"config key '{_list_key(cfg, list_name)}' / 'data.num_classes': {e}") from None


def check_list_labels(cfg: Config) -> None:
    """Both lists exist and every label lies in [0, data.num_classes), or an error naming the list."""
    for field in LIST_KEYS:
        check_labels_of(cfg, getattr(cfg.data, field))


class VideoSet(NamedTuple):
    """The usable videos of a list and where they are decoded ("cpu" | "gpu")."""

    videos: list[VideoMeta]
    decode: str


def decode_for(cfg: Config, index, device: torch.device) -> tuple[str, str]:
    """Where this run decodes the videos of ``index``, and why: "cpu" on a CPU run (data.decode
    "gpu" is refused there), data.decode on a GPU run, or on "auto" what
    ``pipelines.videos.choose_decoder`` picks for the usable videos and this host's cores."""
    setting = cfg.data.decode
    if dali_device(device)[0] == "cpu":
        if setting == "gpu":
            raise ConfigError("config key 'data.decode' is 'gpu' but this run is on the CPU "
                              "(device resolved to cpu); set data.decode to auto or cpu")
        return "cpu", CPU_RUN_REASON
    if setting != AUTO_DECODE:
        return setting, f"data.decode={setting}"
    return video_checks.choose_decoder(index.good(), os.cpu_count() or 1)


def _probe_index(cfg: Config, path: str, rank: int):
    """The list's video index, built (probed) by rank 0 first, then read by the others."""
    index = None
    if rank == 0:
        index = build_index(path, min_frames=min_frames(cfg))
    if dist.is_initialized():
        dist.barrier()
    if index is None:
        index = build_index(path, min_frames=min_frames(cfg))
    return index


def load_video_set(cfg: Config, list_name: str, rank: int, device: torch.device) -> VideoSet:
    """The usable videos of a list, probed by rank 0 first, and where they are decoded (logged).
    A bad list, a label outside [0, data.num_classes) and videos unusable with that decoder
    raise a DataError naming them."""
    check_labels_of(cfg, list_name)
    with raise_as_data_errors():
        index = _probe_index(cfg, data_path(cfg, list_name), rank)
    decode, reason = decode_for(cfg, index, device)
    log.info("decode: %s (%s)", decode, reason)
    with raise_as_data_errors():
        videos = videos_from_index(index, min_frames=min_frames(cfg), device=decode)
    return VideoSet(videos, decode)


def clip_geometry(clip: ClipConfig) -> ClipGeometry:
    return ClipGeometry(clip.frames, clip.stride, clip.crop)


def pipeline_runtime(train: TrainConfig, device: torch.device, decode: str) -> Runtime:
    """How the DALI pipelines run: on ``device``, decoding on ``decode``, with train.num_threads
    threads, train.prefetch batches ahead and train.pipelines pipelines taking turns."""
    dali, device_id = dali_device(device)
    return Runtime(device=dali, decode=decode, device_id=device_id, num_threads=train.num_threads,
                   prefetch=train.prefetch, pipelines=train.pipelines)


def require_full_batches(loader: VideoLoader, batch_key: str, batch_size: int, world: int,
                         train_list: str) -> VideoLoader:
    """``loader``, or a DataError when it has no full batch per epoch, naming the batch-size key,
    the list, the videos each rank has and the largest batch size that works."""
    if len(loader) == 0:
        share = len(equal_shard(loader.num_videos, 0, world))
        fix = (f"set {batch_key} to at most {share}" if share else
               f"list at least {world} usable videos or run fewer processes")
        raise DataError(f"config key '{batch_key}' ({batch_size}) x {world} process(es) is larger than this "
                        f"rank's share of the training videos in '{train_list}': no full batch; each rank has "
                        f"{share} of the {loader.num_videos} usable videos, so {fix}")
    return loader


def build_train_clips_loader(cfg: Config, list_name: str, rank: int, world: int, device: torch.device) -> VideoLoader:
    """The probes' training loader of this process: at least one full batch an epoch, or a DataError."""
    videos, decode = load_video_set(cfg, list_name, rank, device)
    with raise_as_data_errors():          # e.g. videos shorter than a clip, named
        loader = train_clips_loader(videos, clip=clip_geometry(cfg.clip), batch_size=cfg.eval.batch_size,
                                    runtime=pipeline_runtime(cfg.train, device, decode),
                                    shard=Sharding(seed=cfg.seed, rank=rank, world=world),
                                    aug=cfg.aug.without_colour())   # the probes train on spatial augmentation only
    return require_full_batches(loader, "eval.batch_size", cfg.eval.batch_size, world, list_name)


def build_test_clips_loader(cfg: Config, list_name: str, rank: int, world: int, device: torch.device) -> VideoLoader:
    videos, decode = load_video_set(cfg, list_name, rank, device)
    with raise_as_data_errors():
        return eval_clips_loader(videos, clip=clip_geometry(cfg.clip), centre_fraction=cfg.clip.test_centre_fraction,
                                 batch_size=cfg.eval.batch_size,
                                 runtime=pipeline_runtime(cfg.train, device, decode),
                                 shard=Sharding(rank=rank, world=world), clips_per_video=cfg.eval.clips_per_video,
                                 aug=AugParams(mean=cfg.aug.mean, std=cfg.aug.std))


# ------------------------------------------------------------- pretraining ----
def fame_config(cfg: Config, steps_per_epoch: int = 0) -> fame.FameConfig | None:
    """cfg.fame for a run of ``steps_per_epoch`` steps an epoch (which sizes its beta warm-up),
    or None when it merges nothing (fame.variant or fame.background "none")."""
    return cfg.fame.for_steps_per_epoch(steps_per_epoch) if cfg.fame.merges else None


def pretrain_settings(cfg: Config, device: torch.device, decode: str, *, rank: int = 0, world: int = 1,
                      steps_per_epoch: int = 0) -> dict:
    """Keyword arguments of pipelines.loader.pretrain_loader for this config and process (all
    but the videos and return_masks): clip, batch_size, runtime, shard, aug, fame_cfg.
    ``decode`` is where the videos are decoded (``load_video_set`` settles it);
    ``steps_per_epoch`` sizes FAME's beta warm-up (0: none, as for profiling)."""
    return dict(clip=clip_geometry(cfg.clip), batch_size=cfg.train.batch_size,
                runtime=pipeline_runtime(cfg.train, device, decode),
                shard=Sharding(seed=cfg.seed, rank=rank, world=world), aug=cfg.aug,
                fame_cfg=fame_config(cfg, steps_per_epoch))


def build_pretrain_loader(cfg: Config, rank: int = 0, world: int = 1, device: torch.device = torch.device("cpu"),
                          *, return_masks: bool | None = None) -> VideoLoader:
    """The pretraining loader of this process: at least one full batch an epoch, or a DataError.
    ``return_masks`` (FAME examples for the logs) defaults to train.examples_every > 0 when FAME is on."""
    videos, decode = load_video_set(cfg, cfg.data.train_list, rank, device)
    settings = pretrain_settings(cfg, device, decode, rank=rank, world=world,
                                 steps_per_epoch=full_batches(len(videos), rank, world, cfg.train.batch_size))
    if return_masks is None:
        return_masks = cfg.train.examples_every > 0 and settings["fame_cfg"] is not None
    with raise_as_data_errors():
        loader = pretrain_loader(videos, return_masks=return_masks, **settings)
    return require_full_batches(loader, "train.batch_size", cfg.train.batch_size, world, cfg.data.train_list)
