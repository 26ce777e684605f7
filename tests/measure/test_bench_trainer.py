"""measure.bench_trainer: the MoCo step timed on random clips of the config's shape."""
import json
import math
import os

import pytest
import torch

from engine.config import load_config
from measure import bench_trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")


def test_cli_times_the_step_and_writes_json(tmp_path, capsys):
    path = tmp_path / "trainer.json"
    result = bench_trainer.main(["--config", TINY, "--steps", "2", "--warmup", "1", "--json", str(path),
                                 "train.batch_size=2", "model.K=16"])
    assert json.loads(path.read_text()) == result
    cfg = load_config(TINY)
    assert result["clip"] == [cfg.clip.frames, cfg.clip.crop, cfg.clip.crop] and result["batch_size"] == 2
    assert result["clips_per_s"] == pytest.approx(2 * 2 / result["seconds_per_step"])
    assert result["steps"] == 2 and result["warmup"] == 1 and math.isfinite(result["final_loss"])
    assert "clips/s" in capsys.readouterr().out


def test_views_have_the_config_shape():
    cfg = load_config(TINY, ["train.batch_size=3"])
    q, k = bench_trainer.random_views(cfg, torch.device("cpu"), torch.contiguous_format)
    assert q.shape == k.shape == (3, 3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop)
    assert not torch.equal(q, k)


def test_queue_that_does_not_fit_the_batch_names_the_key():
    cfg = load_config(TINY, ["train.batch_size=3", "model.K=16"])
    with pytest.raises(ValueError, match="config key 'model.K'"):
        bench_trainer.time_train_steps(cfg, torch.device("cpu"), steps=1, warmup=0)


def test_bad_step_count_exits():
    with pytest.raises(SystemExit):
        bench_trainer.main(["--config", TINY, "--steps", "0"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_step_in_bf16_channels_last():
    cfg = load_config(TINY, ["device=gpu", "train.amp=bf16", "train.channels_last=true", "train.batch_size=2",
                             "model.K=16"])
    result = bench_trainer.time_train_steps(cfg, torch.device("cuda"), steps=2, warmup=1)
    assert result["amp"] == "bfloat16" and result["channels_last"] and result["gpu_max_memory_gib"] > 0
    assert math.isfinite(result["final_loss"])
