"""Downstream evaluation shared by runners.classify and runners.retrieve.

- Pretrained weights: ``load_pretrained_backbone`` reads either a backbone
  state (runs/<name>/backbone.pt, or the run directory runs/<name> that holds
  it) or a pretraining checkpoint (checkpoints/*.pt, whose "model" entry is
  MoCo's state: the query encoder's backbone keys ``f_q.backbone.*`` are mapped
  to the backbone; the key encoder, the projection heads and the queue are
  left out and counted). Unusable weights raise engine.errors.DataError.
- Per-video averaging: a test loader yields (clips NCTHW, labels (N,),
  video index (N,)) batches; ``VideoAccumulator`` sums per-clip outputs per
  video and, under torch.distributed, all-reduces the sums, so a video whose
  clips are spread over ranks is still one video. It fails unless every video
  got exactly ``clips_per_video`` clips (a dropped last batch, or a padded one
  counted twice, is an error, not a silent bias).
- Metrics, in percent: video-level top-k of the softmax probabilities
  averaged over a video's clips (k capped at the number of classes), clip-level
  top-1, retrieval recall@k (``retrieval_recall``).
- results.json: ``results_record`` / ``write_results``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from contextlib import nullcontext

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from engine import checkpoint as ckpt
from engine.config import Config, ConfigError, ModelConfig, read_tree, to_dict
from engine.errors import DataError, MissingFileError, raise_as_data_errors
from engine.setup import RUN_CONFIG
from models.backbones import apply_backbone_state

log = logging.getLogger("fame")

PERCENT = 100.0
SHA_HEX_CHARS = 16
HASH_BLOCK_BYTES = 1 << 20
RESULTS_FILE = "results.json"
BACKBONE_FILE = "backbone.pt"                # what a finished pretraining run writes into its directory
MOCO_STATE_ENTRY = "model"                   # the MoCo state_dict inside a pretraining checkpoint
MOCO_QUERY_BACKBONE = "f_q.backbone."        # its query encoder's backbone keys
WRAPPER_PREFIX = "module."                   # DistributedDataParallel's key prefix
NO_LABEL = -1
DEFAULT_POOL = ModelConfig.pool          # what a config written before model.pool existed pooled with
# Rows x gallery size of one block of the similarity matrix sorted at once.
SIMILARITY_BLOCK_ELEMENTS = 1 << 25


# ------------------------------------------------------------ pretrained ----
def file_sha256(path: str, hex_chars: int = SHA_HEX_CHARS) -> str:
    """The first ``hex_chars`` hex digits of the file's sha256."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()[:hex_chars]


def find_pretrained_file(path: str) -> str:
    """The weights file config key 'pretrained' names: the file itself, or a run directory's
    backbone.pt; a MissingFileError saying what to pass when there is none."""
    if os.path.isdir(path):
        backbone = os.path.join(path, BACKBONE_FILE)
        if not os.path.isfile(backbone):
            raise MissingFileError(f"config key 'pretrained': '{path}' is a directory; pass {backbone} (a finished "
                                   f"pretraining run writes it) or a checkpoint such as "
                                   f"{os.path.join(ckpt.checkpoint_dir(path), ckpt.LAST)}")
        log.info("config key 'pretrained': the run directory %s -> its %s", path, BACKBONE_FILE)
        return backbone
    if not os.path.isfile(path):
        raise MissingFileError(f"config key 'pretrained': '{path}' does not exist")
    return path


def check_pretrained_path(cfg: Config) -> None:
    """Fail before any work when config key 'pretrained' names neither a file nor a run directory
    holding a backbone.pt."""
    if cfg.pretrained is not None:
        find_pretrained_file(cfg.pretrained)


def backbone_state_from_file(path: str) -> tuple[dict, str, dict]:
    """(backbone state, format "backbone"|"moco", its config or {}) read from ``path`` (a weights
    file, or a run directory holding a backbone.pt); DataError when it holds neither. The config
    of a backbone file is its run's config.yaml beside it, where there is one."""
    path = find_pretrained_file(path)
    with raise_as_data_errors():
        obj = ckpt.load_checkpoint(path)
    if isinstance(obj, dict) and isinstance(obj.get(MOCO_STATE_ENTRY), dict):
        model_state = obj[MOCO_STATE_ENTRY]
        if model_state and all(k.startswith(WRAPPER_PREFIX) for k in model_state):
            model_state = {k[len(WRAPPER_PREFIX):]: v for k, v in model_state.items()}
        state = {k[len(MOCO_QUERY_BACKBONE):]: v for k, v in model_state.items() if k.startswith(MOCO_QUERY_BACKBONE)}
        if not state:
            raise DataError(f"checkpoint '{path}' has a '{MOCO_STATE_ENTRY}' entry but no query-encoder keys "
                             f"'{MOCO_QUERY_BACKBONE}*'; expected a MoCo pretraining checkpoint or a backbone.pt")
        log.info("%s: MoCo checkpoint, %d query-backbone tensors mapped '%s*' -> backbone, %d other entries "
                 "(key encoder, heads, queue) left out", path, len(state), MOCO_QUERY_BACKBONE,
                 len(model_state) - len(state))
        return state, "moco", obj.get("config") or {}
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, "backbone", run_config_beside(path)
    raise DataError(f"'{path}' is neither a backbone state_dict (backbone.pt) nor a pretraining checkpoint "
                     f"with a '{MOCO_STATE_ENTRY}' entry")


def run_config_beside(path: str) -> dict:
    """The run config (config.yaml) in the directory of ``path``, or {} where there is none."""
    config_path = os.path.join(os.path.dirname(path), RUN_CONFIG)
    if not os.path.isfile(config_path):
        return {}
    try:
        return read_tree(config_path)
    except ConfigError as e:
        log.warning("%s: the pretrained run's settings are not checked", e)
        return {}


def check_same_pool(saved_model: dict, cfg: Config, path: str) -> None:
    """Refuse a small3d backbone pretrained with another global pool than cfg.model.pool: a pool has
    no weights, so the state would load and the features silently change. A file without its
    config (a bare backbone state away from its run) is not checked."""
    if not saved_model or cfg.model.backbone != "small3d":
        return
    saved = saved_model.get("pool", DEFAULT_POOL)
    if saved != cfg.model.pool:
        raise DataError(f"config key 'model.pool' ({cfg.model.pool}): {path} was pretrained with "
                        f"model.pool={saved}; set model.pool={saved} to use it as it was trained")


def load_pretrained_backbone(backbone: nn.Module, cfg: Config) -> dict:
    """Load cfg.pretrained into ``backbone``; return the results' "pretrained" record.

    Random init (pretrained null) is allowed: {"path": None, "init": "random"}
    (or "model.checkpoint" when torchvision weights were loaded instead).
    """
    if cfg.pretrained is None:
        init = "model.checkpoint" if cfg.model.checkpoint else "random"
        log.info("no pretrained weights: backbone %s from %s init", cfg.model.backbone, init)
        return {"path": None, "sha256": None, "init": init}
    path = find_pretrained_file(cfg.pretrained)
    state, fmt, saved_cfg = backbone_state_from_file(path)
    check_same_pool(saved_cfg.get("model", {}), cfg, path)
    try:
        report = apply_backbone_state(backbone, state, name=cfg.model.backbone, source=path)
    except ValueError as e:
        saved_model = saved_cfg.get("model", {})
        hint = ""
        saved = (saved_model.get("backbone"), saved_model.get("width")) if saved_model else None
        if saved_model and saved != (cfg.model.backbone, cfg.model.width):
            hint = (f"; it was pretrained with model.backbone={saved_model.get('backbone')} "
                    f"model.width={saved_model.get('width')}")
        raise DataError(f"config key 'pretrained': {e}{hint}") from None
    if report.ignored_keys:
        log.info("%s: ignored head keys %s", path, report.ignored_keys)
    return {"path": path, "sha256": file_sha256(path), "init": "pretrained", "format": fmt}


# ------------------------------------------------------------ per video ----
class VideoAccumulator:
    """Per-video sums of clip outputs (num_videos, dim), clip counts and labels, reducible across ranks."""

    def __init__(self, num_videos: int, dim: int, device: torch.device):
        self.sums = torch.zeros(num_videos, dim, dtype=torch.float64, device=device)
        self.counts = torch.zeros(num_videos, dtype=torch.long, device=device)
        self.labels = torch.full((num_videos,), NO_LABEL, dtype=torch.long, device=device)

    @property
    def num_videos(self) -> int:
        return self.counts.shape[0]

    def add(self, values: torch.Tensor, labels: torch.Tensor, video_index: torch.Tensor) -> None:
        """values (N, dim) of N clips, their labels (N,) and video indices (N,)."""
        if values.dim() != 2 or values.shape[1] != self.sums.shape[1]:
            raise ValueError(f"expected clip values of shape (N, {self.sums.shape[1]}), got {tuple(values.shape)}")
        if not labels.shape == video_index.shape == values.shape[:1]:
            raise ValueError(f"labels {tuple(labels.shape)} and video indices {tuple(video_index.shape)} must be "
                             f"({values.shape[0]},) like the clip values")
        video_index = video_index.to(self.counts.device, torch.long)
        labels = labels.to(self.labels.device, torch.long)
        if video_index.numel() and (video_index.min() < 0 or video_index.max() >= self.num_videos):
            raise ValueError(f"video index out of range [0, {self.num_videos}): got "
                             f"{video_index.min().item()}..{video_index.max().item()}")
        known = self.labels[video_index]
        self.labels[video_index] = labels
        if bool(((known != NO_LABEL) & (known != labels)).any()) or bool((self.labels[video_index] != labels).any()):
            raise ValueError("clips of the same video arrived with different labels")
        self.sums.index_add_(0, video_index, values.to(self.sums.device, torch.float64))
        self.counts.index_add_(0, video_index, torch.ones_like(video_index))

    def all_reduce(self) -> None:
        """Sum the per-video sums and counts of every rank (labels: max); no-op in one process."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.sums)
            dist.all_reduce(self.counts)
            dist.all_reduce(self.labels, op=dist.ReduceOp.MAX)

    def check_complete(self, clips_per_video: int, what: str = "test") -> None:
        """Every video exactly clips_per_video clips, or a ValueError naming how many are off."""
        wrong = torch.nonzero(self.counts != clips_per_video).flatten()
        if wrong.numel():
            first = wrong[0].item()
            raise ValueError(f"{what} videos: {wrong.numel()} of {self.num_videos} got a clip count other than "
                             f"{clips_per_video} (first: video {first} with {self.counts[first].item()} clips); "
                             f"the loader must yield every clip of every video exactly once")

    def means(self) -> torch.Tensor:
        """(num_videos, dim) float32 mean of each video's clip values."""
        return (self.sums / self.counts.clamp(min=1).unsqueeze(1)).float()


# --------------------------------------------------------------- metrics ----
def topk_correct(scores: torch.Tensor, labels: torch.Tensor, ks: Iterable[int]) -> dict[int, int]:
    """{k: number of rows whose label is among the k highest scores}, k capped at the number of classes."""
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"expected scores (N, C) and labels (N,), got {tuple(scores.shape)} and {tuple(labels.shape)}")
    ks = list(ks)
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices
    hits = top == labels.view(-1, 1).to(top.device)
    return {k: int(hits[:, :min(k, scores.shape[1])].any(dim=1).sum()) for k in ks}


def video_topk(mean_probs: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """{"video_top{k}": percent} from per-video averaged probabilities (V, C) and labels (V,)."""
    correct = topk_correct(mean_probs, labels, ks)
    return {f"video_top{k}": PERCENT * c / max(1, labels.numel()) for k, c in correct.items()}


def nearest_neighbours(query: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    """(Q, min(k, G)) gallery indices by decreasing dot product; equal similarities in gallery order."""
    k = min(k, gallery.shape[0])
    rows = max(1, SIMILARITY_BLOCK_ELEMENTS // max(1, gallery.shape[0]))
    out = []
    for start in range(0, query.shape[0], rows):
        sim = query[start:start + rows] @ gallery.T
        out.append(torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k])
    return torch.cat(out) if out else torch.zeros(0, k, dtype=torch.long)


def retrieval_recall(query: torch.Tensor, query_labels: torch.Tensor, gallery: torch.Tensor,
                     gallery_labels: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """{"R@k": percent of queries with a same-class gallery item among their k nearest by cosine similarity}.

    Features are L2-normalised here. Ties are broken by gallery order (lower
    index first). A k larger than the gallery is capped at the gallery size
    (R@k is then the fraction of queries whose class is in the gallery at all).
    """
    if query.dim() != 2 or gallery.dim() != 2 or query.shape[1] != gallery.shape[1]:
        raise ValueError(f"expected query (Q, D) and gallery (G, D) features, got {tuple(query.shape)} and "
                         f"{tuple(gallery.shape)}")
    if gallery.shape[0] == 0:
        raise ValueError("retrieval needs a non-empty gallery")
    ks = list(ks)
    capped = [k for k in ks if k > gallery.shape[0]]
    if capped:
        log.warning("R@k for k=%s exceeds the gallery of %d videos: computed with k=%d", capped, gallery.shape[0],
                    gallery.shape[0])
    order = nearest_neighbours(F.normalize(query, dim=1), F.normalize(gallery, dim=1), max(ks))
    hits = gallery_labels.to(order.device)[order] == query_labels.view(-1, 1).to(order.device)
    hit_within = hits.cumsum(dim=1) > 0                     # (Q, kmax): a hit among the first j+1
    return {f"R@{k}": PERCENT * hit_within[:, min(k, order.shape[1]) - 1].float().mean().item() for k in ks}


# ----------------------------------------------------------------- loops ----
def _autocast(device: torch.device, amp_dtype):
    return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()


@torch.no_grad()
def evaluate_classifier(model: nn.Module, batches: Iterable, num_videos: int, num_classes: int,
                        clips_per_video: int, device: torch.device, amp_dtype=None,
                        ks=(1, 5)) -> dict[str, float]:
    """Video top-k (softmax averaged over each video's clips) and clip top-1, in percent, over all ranks.

    ``batches`` yields (clips NCTHW, labels (N,), video index (N,)) on ``device``.
    """
    model.eval()
    acc = VideoAccumulator(num_videos, num_classes, device)
    clip_stats = torch.zeros(2, dtype=torch.long, device=device)    # correct, total
    for clips, labels, video_index in batches:
        with _autocast(device, amp_dtype):
            logits = model(clips)
        logits = logits.float()
        acc.add(logits.softmax(dim=1), labels, video_index)
        clip_stats += torch.tensor([topk_correct(logits, labels, (1,))[1], labels.numel()], device=device)
    acc.all_reduce()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(clip_stats)
    acc.check_complete(clips_per_video)
    metrics = video_topk(acc.means(), acc.labels, ks)
    metrics["clip_top1"] = PERCENT * clip_stats[0].item() / max(1, clip_stats[1].item())
    metrics["videos"], metrics["clips"] = num_videos, int(clip_stats[1].item())
    return metrics


@torch.no_grad()
def extract_video_features(backbone: nn.Module, batches: Iterable, num_videos: int, clips_per_video: int,
                           device: torch.device, amp_dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (V, feat_dim) averaged over each video's clips and L2-normalised, labels (V,)), all ranks, CPU."""
    backbone.eval()
    acc = VideoAccumulator(num_videos, backbone.feat_dim, device)
    for clips, labels, video_index in batches:
        with _autocast(device, amp_dtype):
            features = backbone(clips)
        acc.add(features.float(), labels, video_index)
    acc.all_reduce()
    acc.check_complete(clips_per_video)
    return F.normalize(acc.means(), dim=1).cpu(), acc.labels.cpu()


# --------------------------------------------------------------- results ----
def dataset_name(cfg: Config) -> str:
    """data.root's last folder (videos/ucf101 -> ucf101), or the config's name when that is empty."""
    name = os.path.basename(os.path.normpath(cfg.data.root))
    if name in ("", ".", os.sep):
        name = os.path.splitext(os.path.basename(cfg.source or "defaults"))[0]
    return name


def results_record(cfg: Config, protocol: str, metrics: dict, pretrained: dict) -> dict:
    """The results.json content: protocol, dataset, split, metrics, pretrained (path, sha256, init), config."""
    return {
        "protocol": protocol,
        "dataset": dataset_name(cfg),
        "split": {"train": os.path.basename(cfg.data.train_list), "test": os.path.basename(cfg.data.val_list)},
        "backbone": cfg.model.backbone,
        "input": f"{cfg.clip.frames}x{cfg.clip.crop}",
        "metrics": metrics,
        "pretrained": pretrained,
        "run": cfg.run.name,
        "config": to_dict(cfg),
    }


def write_results(run_dir: str, record: dict) -> str:
    """Write <run_dir>/results.json atomically; return its path."""
    path = os.path.join(run_dir, RESULTS_FILE)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path

