import pytest
import torch

from engine import config as C
from engine.checkpoint import LossWatch
from engine.steps import MocoStep, build_training, make_optimizer
from pipelines.loader import PretrainBatch


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


def test_the_moco_options_beyond_the_paper_come_from_the_config():
    cfg = C.load_config("configs/synthetic_tiny.yaml", ["model.head=mlp_bn", "model.predictor_dim=16",
                                                        "model.drop_own_keys=true"])
    model = build_training(cfg, torch.device("cpu")).model
    assert model.predictor is not None and model.predictor.layers[0].out_features == 16
    assert model.drop_own_keys and model.queue_ids.shape == (cfg.model.K,)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.f_k.head.modules())
    published = build_training(C.load_config("configs/ucf101_r21d_pretrain_tiny.yaml"), torch.device("cpu")).model
    assert published.predictor is None and not published.drop_own_keys
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in published.f_q.head.modules())


def test_the_moco_step_hands_the_batch_videos_to_the_model_for_drop_own_keys():
    cfg = C.load_config("configs/synthetic_tiny.yaml", ["model.drop_own_keys=true", "model.K=16"])
    model, update, memory_format = build_training(cfg, torch.device("cpu"))
    batch = PretrainBatch(torch.randn(4, 3, 4, 32, 32), torch.randn(4, 3, 4, 32, 32), torch.zeros(4, dtype=torch.long),
                          torch.tensor([3, 1, 2, 0]))
    MocoStep(update, memory_format, video_ids=True)(model, batch, 0, LossWatch(torch.device("cpu")))
    assert model.queue_ids.tolist()[:8] == [3, 1, 2, 0, 3, 1, 2, 0]
    MocoStep(update, memory_format)(model, batch, 1, LossWatch(torch.device("cpu")))
    assert model.queue_ids.tolist()[8:] == [-1] * 8      # a step without ids leaves nothing out
