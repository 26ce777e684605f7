"""The one configuration schema of every runner: defaults, types, ranges.

An experiment is a YAML file under configs/ that names its parent with
``inherit: other.yaml`` (resolved relative to the file) and overrides some
keys; ``key=value`` pairs on the command line override last. The merged tree
is checked against the dataclasses below (the sections fame, aug and data.synthetic
are the library's own settings classes: fame.FameConfig, pipelines.params.AugParams,
data.spec.SyntheticSpec): an unknown key, a wrong type or a value out of range fails
before any work, naming the dotted key and what is allowed. Each field's rule is its
type hint and range (fame.fields), written once. Loading imports neither torch nor
DALI, PyAV or scikit-image.

    cfg = load_config("configs/synthetic.yaml", ["fame.beta=0.3"])
    cfg.fame.beta, cfg.train.epochs
"""
from __future__ import annotations

import dataclasses
import datetime
import math
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from data.spec import SyntheticSpec
from fame.config import FameConfig
from fame.fields import UNIONS, SettingError, bounded, check_fields, fraction, setting_fields, type_hints, value_problem
from pipelines.params import AugParams

INHERIT_KEY = "inherit"
# The jobs whose resumed runs must share the keys marked for them (``resumes``) with their checkpoint.
PRETRAIN, PROBE = "pretrain", "probe"
RESUME = "resume"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema."""


def resumes(*jobs: str, metadata: dict | None = None) -> dict:
    """Field metadata (added to ``metadata``): a resumed run of each of ``jobs`` is refused when its
    value of this key (of every key in it, for a section) differs from its checkpoint's: the
    weights, schedule, queue or batches depend on it."""
    return {**(metadata or {}), RESUME: frozenset(jobs)}


# ---------------------------------------------------------------- schema ----
@dataclass
class DataConfig:
    root: str = field(default="videos/synthetic", metadata=resumes(PRETRAIN, PROBE))
    # the lists: relative to root unless absolute
    train_list: str = field(default="trainlist.txt", metadata=resumes(PRETRAIN, PROBE))
    val_list: str = "testlist.txt"
    num_classes: int = field(default=4, metadata=resumes(PROBE, metadata=bounded(1)))
    # 0: clip.frames * clip.stride
    min_frames: int = field(default=0, metadata=resumes(PRETRAIN, PROBE, metadata=bounded(0)))
    # set: generate the data when missing (data.spec)
    synthetic: SyntheticSpec | None = field(default=None, metadata=resumes(PRETRAIN, PROBE))
    # Where videos are decoded on a GPU run: gpu (NVDEC), cpu (DALI's CPU decoder, frames then
    # go to the GPU for the rest) or auto (pipelines.videos.choose_decoder picks, logged).
    # A CPU run always decodes on the CPU; 'gpu' there is an error.
    decode: Literal["auto", "gpu", "cpu"] = "auto"


@dataclass
class ClipConfig:
    frames: int = field(default=16, metadata=bounded(2))
    stride: int = field(default=2, metadata=bounded(1))
    crop: int = field(default=112, metadata=bounded(16))
    # Test clips (and retrieval, the bias probe) see a centre square of this fraction of the
    # frame's shorter side, resized to crop: 112 of 128, as the published test protocol.
    test_centre_fraction: float = field(default=112 / 128, metadata=bounded(0.0, 1.0, lo_open=True))


@dataclass
class ModelConfig:
    # models/backbones.py's BACKBONES (a test keeps the two lists equal); a Literal keeps this
    # module free of torch, which the sweep and report processes would otherwise import.
    backbone: Literal["i3d", "r2plus1d_18", "r3d_18", "s3d", "small3d"] = field(default="small3d",
                                                                                metadata=resumes(PROBE))
    width: int = field(default=32, metadata=resumes(PROBE, metadata=bounded(1)))   # small3d only
    # small3d only: its global pool (models/backbones.py)
    pool: Literal["avg", "max"] = field(default="avg", metadata=resumes(PROBE))
    checkpoint: str | None = field(default=None, metadata=resumes(PROBE))   # local torchvision weights to start from
    head: Literal["mlp", "linear", "mlp_bn"] = "mlp"   # mlp_bn: MoCo v3's, batch norm in the projection
    predictor_dim: int = field(default=0, metadata=bounded(0))   # query-branch predictor's hidden width, 0: none
    dim: int = field(default=128, metadata=bounded(1))
    K: int = field(default=2048, metadata=bounded(1))
    m: float = fraction(0.999)
    T: float = field(default=0.1, metadata=bounded(0.0, lo_open=True))
    symmetric: bool = True
    shuffle_bn_groups: int = field(default=2, metadata=bounded(1))
    batch_negatives: bool = False     # also contrast with the step's other keys (models/moco.py)
    drop_own_keys: bool = False       # leave the queue's keys of a query's own video out of its negatives


@dataclass
class TrainConfig:
    epochs: int = field(default=200, metadata=resumes(PRETRAIN, metadata=bounded(0)))
    batch_size: int = field(default=64, metadata=resumes(PRETRAIN, metadata=bounded(1)))
    optimizer: Literal["sgd", "adamw"] = field(default="sgd", metadata=resumes(PRETRAIN))  # engine.steps.make_optimizer
    lr: float = field(default=0.01, metadata=resumes(PRETRAIN, metadata=bounded(0.0, lo_open=True)))
    momentum: float = field(default=0.9, metadata=resumes(PRETRAIN, metadata=bounded(0.0, 1.0)))   # sgd only
    weight_decay: float = field(default=1e-4, metadata=resumes(PRETRAIN, metadata=bounded(0.0)))
    schedule: Literal["cosine", "step"] = field(default="cosine", metadata=resumes(PRETRAIN))
    warmup_epochs: float = field(default=0.0, metadata=resumes(PRETRAIN, metadata=bounded(0.0)))
    milestones: list[int] = field(default_factory=lambda: [60, 120], metadata=resumes(PRETRAIN))
    lr_decay: float = field(default=0.1, metadata=resumes(PRETRAIN, metadata=bounded(0.0, 1.0)))
    amp: Literal["none", "bf16", "fp16"] = "bf16"    # ignored on CPU
    grad_clip: float = field(default=0.0, metadata=resumes(PRETRAIN, metadata=bounded(0.0)))  # 0: off
    channels_last: bool = True     # channels-last-3d model and inputs on a GPU (ignored on the CPU)
    checkpoint_every: int = field(default=10, metadata=bounded(1))  # epochs: keep epoch_NNNN.pt
    checkpoint_steps: int = field(default=0, metadata=bounded(0))   # also refresh last.pt every N steps
    log_every: int = field(default=10, metadata=bounded(1))         # steps
    examples_every: int = field(default=500, metadata=bounded(0))   # steps, 0: never
    resume: str = "auto"      # auto | none | path to a checkpoint
    num_threads: int = field(default=2, metadata=bounded(1))        # DALI CPU threads per pipeline
    pipelines: int = field(default=1, metadata=bounded(1))          # DALI pipelines taking turns by batch
    prefetch: int = field(default=2, metadata=bounded(1))


@dataclass
class EvalConfig:
    protocol: Literal["linear", "finetune"] = field(default="linear", metadata=resumes(PROBE))
    clips_per_video: int = field(default=10, metadata=bounded(1))
    epochs: int = field(default=100, metadata=resumes(PROBE, metadata=bounded(0)))
    batch_size: int = field(default=64, metadata=resumes(PROBE, metadata=bounded(1)))
    # engine.steps.make_optimizer (sgd: momentum 0.9)
    optimizer: Literal["sgd", "adamw"] = field(default="sgd", metadata=resumes(PROBE))
    lr: float = field(default=0.025, metadata=resumes(PROBE, metadata=bounded(0.0, lo_open=True)))
    weight_decay: float = field(default=1e-4, metadata=resumes(PROBE, metadata=bounded(0.0)))
    dropout: float = field(default=0.7, metadata=resumes(PROBE, metadata=bounded(0.0, 1.0)))
    schedule: Literal["cosine", "step"] = field(default="step", metadata=resumes(PROBE))
    milestones: list[int] = field(default_factory=lambda: [60, 120], metadata=resumes(PROBE))
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20, 50], metadata=bounded(1))   # every k
    # studies.trial: also linear-probe on the synthetic data's sibling whose training split
    # has class-independent backgrounds (<data.root>-unbiased), a control for the probe's shortcut
    unbiased_probe: bool = False


@dataclass
class ReferenceConfig:
    """Measured figures a run on this config's data is compared against, printed at the end of
    runners.pretrain and runners.classify (engine.reference); null: not measured. Linear video
    top-1 (%) on the test split of MoCo without FAME and of MoCo + FAME with this config's
    recipe, and of the supervised control on the same data; ``note`` says where and how they
    were measured (seeds, docs/benchmarks.md)."""
    moco_top1: float | None = field(default=None, metadata=bounded(0.0, 100.0))
    fame_top1: float | None = field(default=None, metadata=bounded(0.0, 100.0))
    control_top1: float | None = field(default=None, metadata=bounded(0.0, 100.0))
    note: str = ""


@dataclass
class RunConfig:
    dir: str = "runs"
    name: str | None = None   # default: <config file stem>-<YYYYmmdd-HHMMSS>


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "fame"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Config:
    seed: int = field(default=0, metadata=resumes(PRETRAIN, PROBE))
    device: Literal["auto", "cpu", "gpu"] = "auto"
    pretrained: str | None = None     # backbone.pt for downstream runners (the probe compares its content)
    data: DataConfig = field(default_factory=DataConfig)
    clip: ClipConfig = field(default_factory=ClipConfig, metadata=resumes(PRETRAIN, PROBE))
    fame: FameConfig = field(default_factory=FameConfig, metadata=resumes(PRETRAIN))     # fame/config.py
    aug: AugParams = field(default_factory=AugParams, metadata=resumes(PRETRAIN, PROBE))  # pipelines/params.py
    model: ModelConfig = field(default_factory=ModelConfig, metadata=resumes(PRETRAIN))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    run: RunConfig = field(default_factory=RunConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    source: str | None = None   # the experiment file this was loaded from (set by load_config)


# ------------------------------------------------------------ validation ----
# Every section is a settings class (fame.fields): its field types and ranges are its rules,
# checked when it is built. Reading YAML only moves values toward those types first.
def _float_from_text(text: str) -> Any:
    """A finite float written as text (YAML 1.1 reads 1e-4, no dot in the mantissa, as a
    string), or the text itself for the check to refuse."""
    try:
        value = float(text)
    except ValueError:
        return text
    return value if math.isfinite(value) else text


def _section_type(tp) -> type | None:
    """The settings class of a section field (``Section`` or ``Optional[Section]``), else None."""
    candidates = typing.get_args(tp) if typing.get_origin(tp) in UNIONS else (tp,)
    return next((c for c in candidates if dataclasses.is_dataclass(c)), None)


def _convert(key: str, tp, value) -> Any:
    """A YAML value moved toward type hint tp: a mapping becomes its section, an int or float
    text a float, a list a tuple, element by element; what does not convert is left for the
    settings class to refuse."""
    section = _section_type(tp)
    if section is not None and (isinstance(value, dict) or tp is section):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}': expected a mapping of "
                              f"{sorted(f.name for f in setting_fields(section))}, got {value!r}")
        return _build(section, value, key + ".")
    origin = typing.get_origin(tp)
    if origin in UNIONS:
        for arg in (a for a in typing.get_args(tp) if not dataclasses.is_dataclass(a)):
            converted = _convert(key, arg, value)
            if value_problem(arg, converted) is None:
                return converted
        return value
    if tp is float and isinstance(value, str):
        return _float_from_text(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        args = typing.get_args(tp)
        if origin is tuple and len(args) != len(value):
            return value
        element_types = args if origin is tuple else args * len(value)
        pairs = enumerate(zip(element_types, value, strict=True))
        return origin(_convert(f"{key}[{i}]", arg, v) for i, (arg, v) in pairs)
    return value


def _build(cls, tree: dict, prefix: str = ""):
    """The settings class ``cls`` of a YAML mapping, checked; errors name the dotted key."""
    names = sorted(f.name for f in setting_fields(cls))
    unknown = sorted(set(tree) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; allowed keys under "
                          f"'{prefix.rstrip('.') or '<top>'}': {', '.join(names)}")
    hints = type_hints(cls)
    kwargs = {name: _convert(prefix + name, hints[name], value) for name, value in tree.items()
              if not (dataclasses.is_dataclass(hints[name]) and value is None)}
    try:
        settings = cls(**kwargs)
        check_fields(settings)
    except SettingError as e:
        raise ConfigError(f"config key '{prefix}{e.field}': {e.problem}") from None
    return settings


def _check_relations(cfg: Config) -> None:
    if cfg.train.resume not in ("auto", "none") and not os.path.exists(cfg.train.resume):
        raise ConfigError(f"config key 'train.resume': '{cfg.train.resume}' is neither auto, none, "
                          "nor an existing checkpoint")
    if cfg.eval.unbiased_probe and cfg.data.synthetic is None:
        raise ConfigError("config key 'eval.unbiased_probe': needs synthetic data (data.synthetic), "
                          "which can be regenerated with class-independent training backgrounds")
    if cfg.eval.unbiased_probe and (os.path.isabs(cfg.data.train_list) or os.path.isabs(cfg.data.val_list)):
        raise ConfigError("config key 'eval.unbiased_probe': data.train_list and data.val_list must be relative "
                          "to data.root, or the control probe would read the biased lists")
    if cfg.model.pool != "avg" and cfg.model.backbone != "small3d":
        raise ConfigError(f"config key 'model.pool' ({cfg.model.pool}): only small3d has a choice of pool; "
                          f"{cfg.model.backbone} averages (remove the key, or use model.backbone=small3d)")
    if cfg.device == "cpu" and cfg.data.decode == "gpu":
        raise ConfigError("config keys 'device' (cpu) and 'data.decode' (gpu): the GPU decoder needs a GPU run; "
                          "set data.decode to auto or cpu, or device to gpu")


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


def load_config(path: str | None, overrides: list[str] = ()) -> Config:
    """Load an experiment file (or the defaults when path is None) plus overrides, validated."""
    tree = read_tree(path) if path else {}
    tree = apply_overrides(tree, list(overrides))
    tree["source"] = os.path.relpath(path) if path else None
    return build_config(tree)


def resume_keys(job: str, cls: type = Config, prefix: str = "") -> tuple[str, ...]:
    """The dotted keys (a section's name standing for all of it) a resumed run of ``job`` must
    share with its checkpoint: those the schema marks with ``resumes(job)``."""
    keys = []
    hints = type_hints(cls)
    for f in setting_fields(cls):
        section = _section_type(hints[f.name])
        if job in f.metadata.get(RESUME, ()):
            keys.append(prefix + f.name)
        elif section is not None:
            keys += resume_keys(job, section, prefix + f.name + ".")
    return tuple(keys)


def to_dict(cfg: Config) -> dict:
    """A plain tree (tuples as lists, no derived fields) that build_config reads back to an equal Config."""
    def plain(x):
        if dataclasses.is_dataclass(x):
            return {f.name: plain(getattr(x, f.name)) for f in setting_fields(x)}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x
    return plain(cfg)


def dump_config(cfg: Config, path: str) -> None:
    with open(path, "w") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)


def run_name(cfg: Config, now: datetime.datetime | None = None, prefix: str = "") -> str:
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
