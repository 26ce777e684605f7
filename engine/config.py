"""The one configuration schema of every runner: defaults, types, ranges.

An experiment is a YAML file under configs/ that names its parent with
``inherit: other.yaml`` (resolved relative to the file) and overrides some
keys; ``key=value`` pairs on the command line override last. The merged tree
is checked against the dataclasses below: an unknown key, a wrong type or a
value out of range fails before any work, naming the key and what is allowed.

    cfg = load_config("configs/synthetic.yaml", ["fame.beta=0.3"])
    cfg.fame.beta, cfg.train.epochs
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

INHERIT_KEY = "inherit"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def _range(lo=None, hi=None, *, lo_open=False):
    """Field metadata: the allowed closed interval [lo, hi] (lo open if lo_open); on a list
    field it bounds every element."""
    return {"range": (lo, hi, lo_open)}


# ---------------------------------------------------------------- schema ----
@dataclass
class SynthConfig:
    """The built-in synthetic dataset, generated under data.root when missing."""
    num_classes: int = field(default=4, metadata=_range(2, 8))   # 8 motion patterns exist
    videos_per_class_train: int = field(default=24, metadata=_range(1))
    videos_per_class_test: int = field(default=12, metadata=_range(1))
    width: int = field(default=128, metadata=_range(32))
    height: int = field(default=96, metadata=_range(32))
    frames: int = field(default=48, metadata=_range(2))
    fps: int = field(default=15, metadata=_range(1))
    codec: Literal["vp9", "h264", "mjpeg"] = "vp9"
    bg_correlation_train: float = field(default=0.9, metadata=_range(0.0, 1.0))
    bg_correlation_test: float = field(default=0.0, metadata=_range(0.0, 1.0))
    noise_std: float = field(default=3.0, metadata=_range(0.0))      # sensor noise, 0..255 levels
    pan_speed: float = field(default=0.5, metadata=_range(0.0))      # background pan, pixels per frame
    object_size: tuple[float, float] = (0.15, 0.3)   # object diameter range, fraction of the shorter side
    palette: int = field(default=0, metadata=_range(0))   # 0: a look per video; n: n looks shared by all classes
    backgrounds: Literal["images", "generated"] = "images"   # photo crops, or a new colour texture per video
    seed: int = 0


@dataclass
class DataConfig:
    root: str = "videos/synthetic"
    train_list: str = "trainlist.txt"      # relative to root unless absolute
    val_list: str = "testlist.txt"
    num_classes: int = field(default=4, metadata=_range(1))
    min_frames: int = field(default=0, metadata=_range(0))  # 0: clip.frames*clip.stride
    synthetic: Optional[SynthConfig] = None  # set: generate the data when missing
    # Where videos are decoded on a GPU run: gpu (NVDEC), cpu (DALI's CPU decoder, frames then
    # go to the GPU for the rest) or auto (pipelines.videos.choose_decoder picks, logged).
    # A CPU run always decodes on the CPU; 'gpu' there is an error.
    decode: Literal["auto", "gpu", "cpu"] = "auto"


@dataclass
class ClipConfig:
    frames: int = field(default=16, metadata=_range(2))
    stride: int = field(default=2, metadata=_range(1))
    crop: int = field(default=112, metadata=_range(16))


@dataclass
class FameSection:
    beta: Union[float, Literal["auto"]] = field(default=0.5, metadata=_range(0.0, 1.0))
    variant: Literal["fame", "seed", "grid", "gauss", "none"] = "fame"
    background: Literal["inter", "intra", "none"] = "inter"   # none: no merging (the baseline)
    branches: Literal["one", "both"] = "one"
    hue: Literal["published", "angle"] = "published"
    pick: Literal["derangement", "permutation"] = "derangement"
    beta_min: float = field(default=0.3, metadata=_range(0.0, 1.0))   # clamp of beta=auto
    beta_max: float = field(default=0.7, metadata=_range(0.0, 1.0))
    camera_compensation: Literal["none", "median", "phase"] = "none"
    beta_warmup_epochs: float = field(default=0.0, metadata=_range(0.0))   # beta from 1 down to beta over these


@dataclass
class AugConfig:
    crop_area: tuple[float, float] = (0.2, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = field(default=0.5, metadata=_range(0.0, 1.0))
    grayscale_p: float = field(default=0.2, metadata=_range(0.0, 1.0))
    jitter_p: float = field(default=0.8, metadata=_range(0.0, 1.0))
    brightness: float = field(default=0.4, metadata=_range(0.0))
    contrast: float = field(default=0.4, metadata=_range(0.0))
    saturation: float = field(default=0.4, metadata=_range(0.0))
    hue: float = field(default=0.1, metadata=_range(0.0, 0.5))
    blur_p: float = field(default=0.5, metadata=_range(0.0, 1.0))
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)


@dataclass
class ModelConfig:
    # models/backbones.py's BACKBONES (a test keeps the two lists equal); a Literal keeps this
    # module free of torch, which the sweep and report processes would otherwise import.
    backbone: Literal["i3d", "r2plus1d_18", "r3d_18", "s3d", "small3d"] = "small3d"
    width: int = field(default=32, metadata=_range(1))   # small3d only
    checkpoint: Optional[str] = None      # local torchvision weights to start from
    head: Literal["mlp", "linear"] = "mlp"
    dim: int = field(default=128, metadata=_range(1))
    K: int = field(default=2048, metadata=_range(1))
    m: float = field(default=0.999, metadata=_range(0.0, 1.0))
    T: float = field(default=0.1, metadata=_range(0.0, lo_open=True))
    symmetric: bool = True
    shuffle_bn_groups: int = field(default=2, metadata=_range(1))
    batch_negatives: bool = False     # also contrast with the step's other keys (models/moco.py)


@dataclass
class TrainConfig:
    epochs: int = field(default=200, metadata=_range(0))
    batch_size: int = field(default=64, metadata=_range(1))
    lr: float = field(default=0.01, metadata=_range(0.0, lo_open=True))
    momentum: float = field(default=0.9, metadata=_range(0.0, 1.0))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))
    schedule: Literal["cosine", "step"] = "cosine"
    warmup_epochs: float = field(default=0.0, metadata=_range(0.0))
    milestones: list[int] = field(default_factory=lambda: [60, 120])
    lr_decay: float = field(default=0.1, metadata=_range(0.0, 1.0))
    amp: Literal["none", "bf16", "fp16"] = "bf16"    # ignored on CPU
    grad_clip: float = field(default=0.0, metadata=_range(0.0))  # 0: off
    channels_last: bool = True     # channels-last-3d model and inputs on a GPU (ignored on the CPU)
    checkpoint_every: int = field(default=10, metadata=_range(1))  # epochs: keep epoch_NNNN.pt
    checkpoint_steps: int = field(default=0, metadata=_range(0))   # also refresh last.pt every N steps
    log_every: int = field(default=10, metadata=_range(1))         # steps
    examples_every: int = field(default=500, metadata=_range(0))   # steps, 0: never
    resume: str = "auto"      # auto | none | path to a checkpoint
    num_threads: int = field(default=2, metadata=_range(1))        # DALI CPU threads per pipeline
    pipelines: int = field(default=1, metadata=_range(1))          # DALI pipelines taking turns by batch
    prefetch: int = field(default=2, metadata=_range(1))


@dataclass
class EvalConfig:
    protocol: Literal["linear", "finetune"] = "linear"
    clips_per_video: int = field(default=10, metadata=_range(1))
    epochs: int = field(default=100, metadata=_range(0))
    batch_size: int = field(default=64, metadata=_range(1))
    lr: float = field(default=0.025, metadata=_range(0.0, lo_open=True))
    weight_decay: float = field(default=1e-4, metadata=_range(0.0))
    dropout: float = field(default=0.7, metadata=_range(0.0, 1.0))
    schedule: Literal["cosine", "step"] = "step"
    milestones: list[int] = field(default_factory=lambda: [60, 120])
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50], metadata=_range(1))   # every k
    # runners.trial: also linear-probe on the synthetic data's sibling whose training split
    # has class-independent backgrounds (<data.root>-unbiased), a control for the probe's shortcut
    unbiased_probe: bool = False


@dataclass
class RunConfig:
    dir: str = "runs"
    name: Optional[str] = None   # default: <config file stem>-<YYYYmmdd-HHMMSS>


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "fame"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    seed: int = 0
    device: Literal["auto", "cpu", "gpu"] = "auto"
    pretrained: Optional[str] = None     # backbone.pt for downstream runners
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    fame: FameSection = field(default_factory=FameSection)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    source: Optional[str] = None   # the experiment file this was loaded from (set by load_config)


# ------------------------------------------------------------ validation ----
def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_describe(args[0])}" + (f" (length {len(args)})" if origin is tuple else "")
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _float_from_text(text: str, bad: ConfigError) -> float:
    """A finite float written as text: YAML 1.1 reads 1e-4 (no dot in the mantissa) as a string."""
    try:
        value = float(text)
    except ValueError:
        raise bad from None
    if not math.isfinite(value):
        raise bad
    return value


def _coerce(key: str, tp, value, meta) -> Any:
    """Return value as type tp, or raise ConfigError naming key and the allowed values."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}': got {value!r}, expected {_describe(tp)}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of {sorted(f.name for f in dataclasses.fields(tp))}, got {value!r}")
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _coerce(key, arg, value, meta)
            except ConfigError as e:
                errors.append(str(e))
        if any("outside" in e for e in errors):
            raise ConfigError(next(e for e in errors if "outside" in e))
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(tp)
        if origin is tuple:
            if len(value) != len(args):
                raise bad
            return tuple(_coerce(f"{key}[{i}]", a, v, {}) for i, (a, v) in enumerate(zip(args, value)))
        return [_coerce(f"{key}[{i}]", args[0], v, meta) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif tp is float:
        if isinstance(value, str):
            value = _float_from_text(value, bad)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise bad
    if "range" in meta and isinstance(value, (int, float)):
        lo, hi, lo_open = meta["range"]
        if (lo is not None and (value < lo or (lo_open and value == lo))) or (hi is not None and value > hi):
            interval = f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            raise ConfigError(f"config key '{key}': {value!r} is outside the allowed range {interval}")
    return value


def _build(cls, tree: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; allowed keys under "
                          f"'{prefix.rstrip('.') or '<top>'}': {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in tree.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and value is None:
            continue
        inner = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        if inner and isinstance(value, dict):     # Optional[Section]
            tp = inner[0]
        kwargs[name] = _coerce(prefix + name, tp, value, dict(fields[name].metadata))
    return cls(**kwargs)


def _check_relations(cfg: Config) -> None:
    if cfg.fame.beta_min > cfg.fame.beta_max:
        raise ConfigError(f"config keys 'fame.beta_min' ({cfg.fame.beta_min}) and 'fame.beta_max' "
                          f"({cfg.fame.beta_max}): beta_min must not exceed beta_max")
    for key in ("crop_area", "crop_aspect", "blur_sigma"):
        lo, hi = getattr(cfg.aug, key)
        if not 0 < lo <= hi:
            raise ConfigError(f"config key 'aug.{key}': need 0 < low <= high, got {[lo, hi]}")
    if cfg.aug.crop_area[1] > 1:
        raise ConfigError(f"config key 'aug.crop_area': the area fraction must be at most 1, got {cfg.aug.crop_area[1]}")
    if cfg.train.resume not in ("auto", "none") and not os.path.exists(cfg.train.resume):
        raise ConfigError(f"config key 'train.resume': '{cfg.train.resume}' is neither auto, none, nor an existing checkpoint")
    if cfg.eval.unbiased_probe and cfg.data.synthetic is None:
        raise ConfigError("config key 'eval.unbiased_probe': needs synthetic data (data.synthetic), "
                          "which can be regenerated with class-independent training backgrounds")
    if cfg.eval.unbiased_probe and (os.path.isabs(cfg.data.train_list) or os.path.isabs(cfg.data.val_list)):
        raise ConfigError("config key 'eval.unbiased_probe': data.train_list and data.val_list must be relative "
                          "to data.root, or the control probe would read the biased lists")
    if cfg.device == "cpu" and cfg.data.decode == "gpu":
        raise ConfigError("config keys 'device' (cpu) and 'data.decode' (gpu): the GPU decoder needs a GPU run; "
                          "set data.decode to auto or cpu, or device to gpu")
    if cfg.data.synthetic is not None and cfg.data.synthetic.num_classes != cfg.data.num_classes:
        raise ConfigError(f"config keys 'data.num_classes' ({cfg.data.num_classes}) and "
                          f"'data.synthetic.num_classes' ({cfg.data.synthetic.num_classes}) must agree")


# ---------------------------------------------------------------- loading ----
def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_tree(path: str, _seen: tuple = ()) -> dict:
    """The YAML tree of `path` with its `inherit:` chain merged in (parents first)."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"config file '{path}': inherit cycle through {' -> '.join(_seen)}")
    if not os.path.isfile(path):
        raise ConfigError(f"config file '{path}' does not exist")
    with open(path) as f:
        try:
            tree = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file '{path}': not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file '{path}': the top level must be a mapping")
    parents = tree.pop(INHERIT_KEY, None) or []
    merged: dict = {}
    for parent in [parents] if isinstance(parents, str) else parents:
        merged = _deep_merge(merged, read_tree(os.path.join(os.path.dirname(path), parent), _seen + (path,)))
    return _deep_merge(merged, tree)


def apply_overrides(tree: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings; the value is parsed as YAML (3, 0.5, true, [1,2], null)."""
    tree = dict(tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}': expected key=value, e.g. fame.beta=0.3")
        value = yaml.safe_load(raw) if raw != "" else ""
        node = tree
        parts = key.split(".")
        for p in parts[:-1]:
            node[p] = dict(node.get(p) or {})
            node = node[p]
        node[parts[-1]] = value
    return tree


def build_config(tree: dict) -> Config:
    cfg = _build(Config, tree)
    _check_relations(cfg)
    return cfg


def load_config(path: Optional[str], overrides: list[str] = ()) -> Config:
    """Load an experiment file (or the defaults when path is None) plus overrides, validated."""
    tree = read_tree(path) if path else {}
    tree = apply_overrides(tree, list(overrides))
    tree["source"] = os.path.relpath(path) if path else None
    return build_config(tree)


def to_dict(cfg: Config) -> dict:
    """A plain tree (tuples as lists) that build_config reads back to an equal Config."""
    def plain(x):
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x
    return plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def run_name(cfg: Config, now: Optional[datetime.datetime] = None, prefix: str = "") -> str:
    """cfg.run.name, or <prefix><config stem>-<time> when unset."""
    if cfg.run.name:
        return cfg.run.name
    stem = os.path.splitext(os.path.basename(cfg.source))[0] if cfg.source else "defaults"
    return f"{prefix}{stem}-{(now or datetime.datetime.now()).strftime('%Y%m%d-%H%M%S')}"


def with_run_name(cfg: Config, prefix: str = "") -> Config:
    """cfg with run.name fixed (see run_name)."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=run_name(cfg, prefix=prefix)))


def data_path(cfg: Config, rel: str) -> str:
    """A data.* path resolved against data.root (absolute paths stay)."""
    return rel if os.path.isabs(rel) else os.path.join(cfg.data.root, rel)
