import glob
import json
import os

import numpy as np
import pytest
import torch

from runners import checkpoint as ckpt
from runners.logger import METRICS_FILE, Logger, read_metrics, write_json_atomic


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


def test_resume_drops_the_steps_it_logs_again(tmp_path):
    logger = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    for step in (1, 2, 3, 4):
        logger.log({"loss": float(step)}, step=step)
    logger.close()
    with open(tmp_path / METRICS_FILE, "a") as f:
        f.write('{"step": 5, "lo')                  # the line a crash cut short
    resumed = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    resumed.truncate_after(2)                        # the checkpoint was at step 2
    resumed.log({"loss": 3.5}, step=3)
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(str(tmp_path))] == [(1, 1.0), (2, 2.0), (3, 3.5)]
    assert os.listdir(tmp_path) == [METRICS_FILE]


def test_a_line_cut_short_mid_file_is_dropped_with_a_warning(tmp_path, caplog):
    """Before truncation existed, a resumed run appended its next row to a line a crash cut short."""
    (tmp_path / METRICS_FILE).write_text('{"step": 1}\n{"step": 2, "lo{"step": 2}\n{"step": 3}\n')
    logger = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    with caplog.at_level("WARNING"):
        logger.truncate_after(3)
    logger.close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 3]
    assert f"{METRICS_FILE}: line 2 is not a JSON record" in caplog.text


def test_a_finished_run_rerun_does_not_repeat_its_summary(tmp_path):
    logger = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    logger.log({"loss": 1.0}, step=2)
    logger.log({"test/video_top1": 50.0}, step=2)
    logger.summary({"step": 2, "final_loss": 1.0})
    logger.close()
    rerun = Logger(str(tmp_path), config={}, name="x", mode="disabled")
    rerun.truncate_after(2)                           # the last checkpoint: step 2, before testing
    rerun.log({"test/video_top1": 50.0}, step=2)
    rerun.summary({"step": 2, "final_loss": 1.0})
    rerun.close()
    rows = read_metrics(str(tmp_path))
    assert [sorted(r.keys() - {"step", "time"}) for r in rows] == [
        ["loss"], ["test/video_top1"], ["summary/final_loss", "summary/step"]]


def test_atomic_json_keeps_the_old_file_on_failure(tmp_path):
    path = str(tmp_path / "trial.json")
    write_json_atomic({"step": 1}, path)
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomic({"step": 2, "bad": object()}, path)
    with open(path) as f:
        assert json.load(f) == {"step": 1}
    assert os.listdir(tmp_path) == ["trial.json"]


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
