"""The data of a config: the synthetic dataset of data.synthetic generated when it is missing or
stale, a folder of the user's own used as it is. A command calls ``ensure_data`` itself, after
start-up and before it builds a loader."""
from __future__ import annotations

import logging
import os

import torch.distributed as dist

from data.synthetic import SPEC_FILE, NotSyntheticError, ensure_dataset
from engine import config as C
from engine.errors import DataError

log = logging.getLogger("fame")


def holds_own_data(cfg: C.Config) -> bool:
    """Whether data.root is data of the user's own: both configured lists there and no spec.json
    (the mark of a generated synthetic dataset)."""
    lists = (C.data_path(cfg, cfg.data.train_list), C.data_path(cfg, cfg.data.val_list))
    return not os.path.exists(os.path.join(cfg.data.root, SPEC_FILE)) and all(map(os.path.isfile, lists))


def check_synthetic_classes(cfg: C.Config) -> None:
    """data.num_classes must be the class count of the synthetic data about to be generated."""
    if cfg.data.synthetic.num_classes != cfg.data.num_classes:
        raise C.ConfigError(f"config keys 'data.num_classes' ({cfg.data.num_classes}) and "
                            f"'data.synthetic.num_classes' ({cfg.data.synthetic.num_classes}) must agree: "
                            f"data.synthetic generates data.root '{cfg.data.root}'; to use data of your own "
                            "there instead, set data.synthetic=null")


def ensure_data(cfg: C.Config, rank: int = 0) -> None:
    """Generate the synthetic dataset of data.synthetic when it is missing or stale (rank 0). A
    data.root holding data of its own (``holds_own_data``) is used as it is, and one holding
    part of a dataset but no spec.json is refused, naming the override that uses it."""
    if cfg.data.synthetic is not None and rank == 0:
        if holds_own_data(cfg):
            log.info("data.synthetic is ignored: data.root '%s' holds the configured lists and no spec.json, "
                     "so its videos are used as they are", cfg.data.root)
        else:
            check_synthetic_classes(cfg)
            try:
                ensure_dataset(cfg.data.root, cfg.data.synthetic)
            except NotSyntheticError as error:
                raise DataError(f"config key 'data.synthetic': {error}; to use the data there, set "
                                "data.synthetic=null and data.train_list / data.val_list to its lists") from error
    if dist.is_initialized():
        dist.barrier()
