import pytest
import torch

from engine import config as C
from engine.steps import build_training, make_optimizer


def test_make_optimizer_builds_sgd_with_momentum_or_adamw():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, "sgd", lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["lr"], sgd.defaults["weight_decay"], sgd.defaults["momentum"]) == (0.1, 1e-4, 0.8)
    adamw = make_optimizer(params, "adamw", lr=1e-3, weight_decay=0.05, momentum=0.8)
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["lr"], adamw.defaults["weight_decay"]) == (1e-3, 0.05)
    with pytest.raises(ValueError, match="unknown optimizer 'adam'; allowed: sgd, adamw"):
        make_optimizer(params, "adam", lr=1e-3, weight_decay=0.0, momentum=0.9)


def test_pretraining_takes_its_optimizer_and_pool_from_the_config():
    cfg = C.load_config("configs/synthetic_tiny.yaml", ["train.optimizer=adamw", "train.lr=0.002", "model.pool=max"])
    training = build_training(cfg, torch.device("cpu"))
    assert isinstance(training.update.optimizer, torch.optim.AdamW)
    assert training.update.optimizer.defaults["lr"] == 0.002
    pools = [m for m in training.model.modules() if isinstance(m, torch.nn.AdaptiveMaxPool3d)]
    assert len(pools) == 2            # the query and the key encoder
