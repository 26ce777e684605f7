import glob
import os

import numpy as np
import pytest
import torch

from runners import checkpoint as ckpt
from runners.logger import Logger, read_metrics


def test_offline_wandb_and_metrics_jsonl(tmp_path):
    logger = Logger(str(tmp_path), config={"a": 1}, name="unit", mode="offline")
    logger.log({"loss": torch.tensor(1.5), "lr": 0.1}, step=3)
    logger.log_images("ex", [np.zeros((8, 24, 3), np.uint8)], step=3)
    logger.summary({"final": 2.0})
    logger.close()
    rows = read_metrics(str(tmp_path))
    assert rows[0]["step"] == 3 and rows[0]["loss"] == 1.5 and rows[-1]["summary/final"] == 2.0
    assert glob.glob(str(tmp_path / "wandb" / "offline-run-*"))
    again = Logger(str(tmp_path), config={}, name="unit", mode="disabled")
    again.close()
    assert (tmp_path / "wandb_id.txt").read_text().startswith("unit-")


def test_disabled_wandb_writes_example_pngs(tmp_path):
    logger = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    logger.log_images("fame/examples", [np.full((8, 24, 3), 200, np.uint8)], step=7)
    logger.close()
    assert os.listdir(tmp_path / "examples") == ["fame_examples-0000007-0.png"]


def test_only_rank_zero_writes(tmp_path):
    logger = Logger(str(tmp_path / "r1"), config={}, name="x", mode="offline", rank=1)
    logger.log({"loss": 1.0}, step=1)
    logger.close()
    assert not (tmp_path / "r1").exists()


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "checkpoints" / "last.pt")
    ckpt.save_atomic({"step": 1}, path)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        ckpt.save_atomic({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path)["step"] == 1
    assert os.listdir(tmp_path / "checkpoints") == ["last.pt"]


def test_rng_state_round_trip_and_resume_lookup(tmp_path):
    torch.manual_seed(0)
    path = ckpt.save_checkpoint(str(tmp_path), {"step": 5}, epoch_copy=1)
    expected = torch.rand(3)
    state = ckpt.load_checkpoint(path)
    ckpt.set_rng_state(state["rng"])
    assert torch.equal(torch.rand(3), expected)
    assert ckpt.find_resume(str(tmp_path), "auto") == path
    assert ckpt.find_resume(str(tmp_path), "none") is None
    assert ckpt.find_resume(str(tmp_path / "elsewhere"), "auto") is None
    assert os.path.exists(tmp_path / "checkpoints" / "epoch_0001.pt")


def test_unreadable_checkpoint_is_named(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="x.pt' cannot be read"):
        ckpt.load_checkpoint(str(bad))
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        ckpt.load_checkpoint(str(tmp_path / "nope.pt"))
