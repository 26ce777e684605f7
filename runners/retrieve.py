"""Nearest-neighbour video retrieval: `python -m runners.retrieve --config X pretrained=runs/<name>/backbone.pt`.

No training. Every video of data.train_list (the gallery) and data.val_list
(the queries) is encoded as the mean backbone feature of eval.clips_per_video
uniformly spaced centre-cropped clips, L2-normalised. Each test video queries
the gallery by cosine similarity; it is a hit at k when a training video of
its class is among its k nearest (equal similarities: the earlier training
video first). R@k is printed for every k of eval.ks; a k larger than the
gallery is computed as k = gallery size (with a warning).

The features are cached in the run directory as features_train.pt and
features_test.pt, keyed by the weights (the pretrained file's hash, or without one
the init and the seed), model.backbone, model.width, model.checkpoint and its content, the
clip settings, eval.clips_per_video, the normalisation, the list file (path and
content), every listed video's size and modification time, the device and the
autocast dtype: rerunning with the same run.name and other eval.ks is free.
"""
from __future__ import annotations

import hashlib
import logging
import os

import torch
import torch.distributed as dist

from data.filelist import read_file_list
from engine import checkpoint as ckpt
from engine.amp import amp_dtype
from engine.cli import parse_cli
from engine.config import Config, data_path, to_dict
from engine.dataset import ensure_data
from engine.errors import run_command
from engine.evaluation import (
    SHA_HEX_CHARS,
    check_pretrained_path,
    extract_video_features,
    file_sha256,
    load_pretrained_backbone,
    results_record,
    retrieval_recall,
    write_results,
)
from engine.loaders import build_test_clips_loader, check_list_labels
from engine.models import make_backbone
from engine.setup import end_run, open_logger, start_run

log = logging.getLogger("fame")
PROTOCOL = "retrieval"
SPLITS = {"train": "train_list", "test": "val_list"}


def videos_fingerprint(list_path: str) -> str:
    """A hash of every listed video's path, size and modification time (or its absence): the
    same list over regenerated or replaced videos gives another fingerprint."""
    digest = hashlib.sha256()
    for entry in read_file_list(list_path):
        try:
            stat = os.stat(entry.path)
            digest.update(f"{entry.path} {stat.st_size} {stat.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{entry.path} missing\n".encode())
    return digest.hexdigest()[:SHA_HEX_CHARS]


def feature_cache_key(cfg: Config, pretrained: dict, list_name: str, device: torch.device, amp) -> dict:
    """Everything the cached features of one list depend on: the weights, the model, the clips,
    the videos themselves, and the device and autocast dtype they were computed with."""
    list_path = data_path(cfg, list_name)
    checkpoint = cfg.model.checkpoint
    return {"pretrained_sha256": pretrained["sha256"], "init": pretrained["init"],
            "seed": cfg.seed if pretrained["sha256"] is None else None,      # random init depends on it
            "backbone": cfg.model.backbone, "width": cfg.model.width, "pool": cfg.model.pool,
            "model_checkpoint": checkpoint,
            "model_checkpoint_sha256": file_sha256(checkpoint) if checkpoint else None,
            "clip": to_dict(cfg)["clip"], "clips_per_video": cfg.eval.clips_per_video,
            "mean": list(cfg.aug.mean), "std": list(cfg.aug.std),
            "list": os.path.abspath(list_path), "list_sha256": file_sha256(list_path),
            "videos": videos_fingerprint(list_path), "device": device.type, "amp": str(amp)}


def read_cached_features(path: str, key: dict):
    """(features, labels) from path when it was made with the same key, else None."""
    if not os.path.isfile(path):
        return None
    cached = ckpt.load_checkpoint(path)
    if cached.get("key") != key:
        log.info("%s was made with other settings: extracting again", path)
        return None
    return cached["features"], cached["labels"]


def video_features(cfg: Config, backbone, pretrained: dict, split: str, run_dir: str, rank: int, world: int,
                   device: torch.device, amp):
    """(features (V, D) L2-normalised, labels (V,)) of one split, from the cache or extracted on all ranks."""
    list_name = getattr(cfg.data, SPLITS[split])
    # Only rank 0 reads and writes the cache (the key hashes files: no need on every rank).
    key = feature_cache_key(cfg, pretrained, list_name, device, amp) if rank == 0 else None
    path = os.path.join(run_dir, f"features_{split}.pt")
    found = [read_cached_features(path, key) if rank == 0 else None]
    if dist.is_initialized():
        dist.broadcast_object_list(found, src=0)
    if found[0] is not None:
        log.info("%s features: cached in %s", split, path)
        return found[0]
    loader = build_test_clips_loader(cfg, list_name, rank, world, device)
    features, labels = extract_video_features(backbone, loader, loader.num_videos, cfg.eval.clips_per_video,
                                              device, amp)
    if rank == 0:
        ckpt.save_atomic({"key": key, "features": features, "labels": labels}, path)
        log.info("%s features of %d videos x %d clips saved to %s", split, loader.num_videos,
                 cfg.eval.clips_per_video, path)
    return features, labels


def main(cfg: Config) -> dict:
    """Extract (or reuse) features, compute R@k; returns the results record (also <run>/results.json)."""
    check_pretrained_path(cfg)
    cfg, run_dir, device, rank, world = start_run(cfg)
    ensure_data(cfg, rank)
    check_list_labels(cfg)

    backbone = make_backbone(cfg)
    pretrained = load_pretrained_backbone(backbone, cfg)
    backbone = backbone.to(device)
    amp = amp_dtype(cfg.train.amp, device)
    gallery, gallery_labels = video_features(cfg, backbone, pretrained, "train", run_dir, rank, world, device, amp)
    query, query_labels = video_features(cfg, backbone, pretrained, "test", run_dir, rank, world, device, amp)
    metrics = retrieval_recall(query.to(device), query_labels, gallery.to(device), gallery_labels, cfg.eval.ks)
    metrics.update(queries=int(query.shape[0]), gallery=int(gallery.shape[0]))
    record = results_record(cfg, PROTOCOL, metrics, pretrained)

    logger = open_logger(cfg, run_dir, PROTOCOL, rank)
    if rank == 0:
        path = write_results(run_dir, record)
        logger.summary(metrics)
        recalls = "  ".join(f"R@{k} {metrics[f'R@{k}']:.1f}" for k in cfg.eval.ks)
        print(f"\nretrieval on {record['dataset']}: {metrics['queries']} test videos query {metrics['gallery']} "
              f"training videos\n{recalls}\nresults: {path}\nfeatures: {os.path.join(run_dir, 'features_*.pt')} "
              f"(rerun with run.name={cfg.run.name} for other eval.ks)")
    end_run(logger)
    return record


if __name__ == "__main__":
    run_command(main, parse_cli(__doc__.splitlines()[0]))
