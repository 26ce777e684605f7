import glob
import json
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from engine import checkpoint as ckpt
from engine.logger import (
    GIB,
    GPU_ALLOC_METRIC,
    GPU_USED_METRIC,
    METRICS_FILE,
    Logger,
    gpu_memory_metrics,
    read_metrics,
    write_json_atomic,
)
from engine.setup import seed_everything

CUDA_STATE_BYTES = 16    # a fake CUDA RNG state (the real one is a longer ByteTensor)
WORLD = 2
SEED = 5


@pytest.mark.slow
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


def test_gpu_memory_metrics_count_the_allocator_and_the_whole_device(monkeypatch):
    """Used memory is the driver's total - free: DALI, CuPy and NVDEC memory count, unlike torch's allocator."""
    asked = []
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: asked.append(device) or 2 * GIB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: asked.append(device) or (3 * GIB, 8 * GIB))
    gpu = torch.device("cuda", 1)
    assert gpu_memory_metrics(gpu) == {GPU_ALLOC_METRIC: 2.0, GPU_USED_METRIC: 5.0}
    assert asked == [gpu, gpu]
    assert gpu_memory_metrics(torch.device("cpu")) == {}


class FakeCuda:
    """torch.cuda's RNG functions on ``count`` fake GPUs of which ``current`` is this process's;
    each state is a ByteTensor filled with its device's index until something sets it."""

    def __init__(self, monkeypatch, count: int, current: int):
        self.count, self.current = count, current
        self.states = [self.state(index) for index in range(count)]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: self.current)
        monkeypatch.setattr(torch.cuda, "get_rng_state", self.get)
        monkeypatch.setattr(torch.cuda, "set_rng_state", self.set)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [self.get(i) for i in range(self.count)])
        monkeypatch.setattr(torch.cuda, "set_rng_state_all",
                            lambda states: [self.set(s, i) for i, s in enumerate(states)])

    @staticmethod
    def state(fill: int) -> torch.Tensor:
        return torch.full((CUDA_STATE_BYTES,), fill, dtype=torch.uint8)

    def get(self, device):
        return self.states[device].clone()     # IndexError past the visible GPUs, as torch.cuda raises

    def set(self, state, device):
        self.states[device] = state.clone()


def test_a_process_that_never_initialised_cuda_saves_no_cuda_state(monkeypatch):
    """A CPU run on a GPU host: saving its RNG states must not initialise CUDA."""
    fake = FakeCuda(monkeypatch, count=1, current=0)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: pytest.fail("CUDA was touched"))
    assert ckpt.rng_state()["cuda"] is None
    assert fake.states[0].eq(0).all()


def draws():
    """The next values of the CPU RNGs a run uses (torch, numpy, python)."""
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), [random.random(), random.random()]


def rank_states(fake, world=WORLD):
    """rng_state() of each rank as the runners seed them (seed + rank, own GPU), and what each draws next."""
    states, expected = [], []
    for rank in range(world):
        seed_everything(SEED, rank)
        fake.states[rank] = FakeCuda.state(100 + rank)
        fake.current = rank
        states.append(ckpt.rng_state())
        expected.append(draws())
    return states, expected


def test_each_rank_restores_its_own_cpu_and_gpu_rng_states(monkeypatch):
    fake = FakeCuda(monkeypatch, count=WORLD, current=0)
    states, expected = rank_states(fake)
    assert expected[0] != expected[1]                  # seed + rank: the ranks' streams differ
    saved = {**states[0], ckpt.RANKS: states}
    fake.states = [FakeCuda.state(0), FakeCuda.state(1)]
    fake.current = 1
    torch.manual_seed(99)
    ckpt.set_rng_state(saved, rank=1)
    assert draws() == expected[1]
    assert torch.equal(fake.states[1], FakeCuda.state(101)) and torch.equal(fake.states[0], FakeCuda.state(0))


def test_a_checkpoint_holds_the_cuda_state_of_its_own_device_only(monkeypatch, tmp_path):
    fake = FakeCuda(monkeypatch, count=4, current=2)
    state = ckpt.load_checkpoint(ckpt.save_checkpoint(str(tmp_path), {"step": 1}))
    assert torch.equal(state["rng"]["cuda"], FakeCuda.state(2))
    assert len(state["rng"][ckpt.RANKS]) == 1 and torch.equal(state["rng"][ckpt.RANKS][0]["cuda"], FakeCuda.state(2))
    fake.count, fake.current, fake.states = 1, 0, [FakeCuda.state(0)]         # resumed with one GPU visible
    ckpt.set_rng_state(state["rng"])
    assert torch.equal(fake.states[0], FakeCuda.state(2))


def old_layout(count: int) -> dict:
    """A checkpoint's rng entry as saved before: rank 0's CPU states and every visible GPU's state."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": [FakeCuda.state(50 + index) for index in range(count)]}


def test_an_old_checkpoint_resumes_on_fewer_visible_gpus(monkeypatch):
    fake = FakeCuda(monkeypatch, count=1, current=0)
    seed_everything(SEED)
    saved = old_layout(count=8)                        # saved where 8 GPUs were visible
    expected = draws()
    ckpt.set_rng_state(saved, rank=0)
    assert draws() == expected
    assert torch.equal(fake.states[0], FakeCuda.state(50))


def test_an_old_checkpoint_without_this_rank_or_device_is_skipped_with_warnings(monkeypatch, caplog):
    fake = FakeCuda(monkeypatch, count=4, current=3)
    seed_everything(SEED)
    saved = old_layout(count=2)
    seed_everything(SEED, rank=1)
    own = draws()
    seed_everything(SEED, rank=1)
    with caplog.at_level("WARNING"):
        ckpt.set_rng_state(saved, rank=1)
    assert draws() == own                              # rank 1 keeps its own seeded streams
    assert torch.equal(fake.states[3], FakeCuda.state(3))
    assert "holds rank 0's CPU RNG states only: rank 1 keeps" in caplog.text
    assert "CUDA RNG states of 2 GPU(s), none for device 3 of rank 1" in caplog.text
    fake.current = 1
    ckpt.set_rng_state(saved, rank=1)
    assert torch.equal(fake.states[1], FakeCuda.state(51))


def test_a_rank_the_checkpoint_does_not_hold_is_skipped_with_a_warning(monkeypatch, caplog):
    FakeCuda(monkeypatch, count=WORLD, current=0)
    saved = ckpt.gather_rng_states()
    seed_everything(SEED, rank=1)
    own = draws()
    seed_everything(SEED, rank=1)
    with caplog.at_level("WARNING"):
        ckpt.set_rng_state(saved, rank=1)
    assert draws() == own
    assert "RNG states of 1 process(es), none of rank 1" in caplog.text


class Counter:
    """A checkpoint part."""

    def __init__(self):
        self.value = 0

    def state_dict(self):
        return {"value": self.value}

    def load_state_dict(self, state):
        self.value = state["value"]


def rng_worker(rank, run_dir, init_file, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        seed_everything(SEED, rank)
        draws()
        ckpt.save_training_all_ranks(run_dir, {"part": Counter()}, rank=rank, step=1, epoch=0, config={},
                                     run={"world": WORLD}, watch=ckpt.LossWatch(torch.device("cpu")))
        expected = draws()
        dist.barrier()                                  # rank 0 has written the checkpoint
        seed_everything(SEED + 1000, rank)
        assert ckpt.resume_training(run_dir, "auto", {"part": Counter()}) == 1
        results[rank] = (expected, draws())
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_save_and_restore_their_own_rng_states(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(rng_worker, args=(str(tmp_path / "run"), str(tmp_path / "rendezvous"), results), nprocs=WORLD, join=True)
    assert results[0][0] == results[0][1] and results[1][0] == results[1][1]
    assert results[0][0] != results[1][0]
    saved = ckpt.load_checkpoint(str(tmp_path / "run" / ckpt.CHECKPOINT_DIR / ckpt.LAST))["rng"]
    assert len(saved[ckpt.RANKS]) == WORLD and torch.equal(saved["torch"], saved[ckpt.RANKS][0]["torch"])
