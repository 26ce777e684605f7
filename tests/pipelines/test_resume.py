"""Loader state: a run resumed mid-epoch sees exactly the batches of an uninterrupted run."""
import pytest
import torch

import fame
from pipelines.loader import pretrain_loader
from pipelines.params import AugParams, ClipGeometry, Runtime, Sharding
from tests.pipelines.conftest import count_graph_builds

SETTINGS = dict(clip=ClipGeometry(frames=4, stride=2, crop=32), batch_size=2, shard=Sharding(seed=7),
                aug=AugParams(), fame_cfg=fame.FameConfig())
EPOCHS = 2


def run(loader, epochs=range(EPOCHS)):
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(epoch, b.query.clone(), b.key.clone(), b.index.clone()) for b in loader]
    return out


def same(a, b):
    assert len(a) == len(b)
    for (ea, qa, ka, ia), (eb, qb, kb, ib) in zip(a, b, strict=True):
        assert ea == eb and torch.equal(ia, ib) and torch.equal(qa, qb) and torch.equal(ka, kb)


def test_resume_mid_epoch_reproduces_the_uninterrupted_batches(coded_videos):
    reference = run(pretrain_loader(coded_videos, **SETTINGS))
    steps = len(reference) // EPOCHS
    first = pretrain_loader(coded_videos, **SETTINGS)
    first.set_epoch(0)
    consumed = []
    for batch in first:
        consumed.append((0, batch.query.clone(), batch.key.clone(), batch.index.clone()))
        if len(consumed) == 2:
            break
    state = first.state_dict()
    assert (state["epoch"], state["step"]) == (0, 2)
    resumed = pretrain_loader(coded_videos, **SETTINGS)
    resumed.load_state_dict(state)
    rest = run(resumed)
    same(consumed + rest, reference)
    assert len(rest) == 2 * steps - 2


def test_breaking_off_and_iterating_again_continues_where_it_stopped(coded_videos):
    reference = run(pretrain_loader(coded_videos, **SETTINGS), epochs=[0])
    loader = pretrain_loader(coded_videos, **SETTINGS)
    got = []
    for batch in loader:
        got.append((0, batch.query.clone(), batch.key.clone(), batch.index.clone()))
        break
    got += run(loader, epochs=[0])
    same(got, reference)


def test_a_finished_epoch_replays_unless_the_epoch_moves_on(coded_videos):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    first = [b.index.clone() for b in loader]
    again = [b.index.clone() for b in loader]
    assert len(again) == len(first) > 0
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    loader.set_epoch(1)
    assert loader.state_dict()["step"] == 0


def test_a_state_from_another_seed_is_refused(coded_videos):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = dict(loader.state_dict(), seed=8)
    with pytest.raises(ValueError, match="seed 8"):
        loader.load_state_dict(state)


def test_a_state_from_another_batch_size_continues_at_the_same_share_of_the_epoch(coded_videos, caplog):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = dict(loader.state_dict(), epoch=1, step=2, batch_size=1)
    with caplog.at_level("WARNING"):
        loader.load_state_dict(state)
    assert (loader.epoch, loader.step) == (1, 1)
    assert "batch_size 1, now 2" in caplog.text and "batches not identical" in caplog.text


@pytest.mark.parametrize("key, saved", [("world", 2), ("num_videos", 10)])
def test_a_state_from_another_number_of_processes_or_videos_is_refused(coded_videos, caplog, key, saved):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = dict(loader.state_dict(), step=2, batch_size=1, **{key: saved})
    current = loader.state_dict()[key]
    assert current != saved
    with caplog.at_level("WARNING"), pytest.raises(ValueError) as error:
        loader.load_state_dict(state)
    message = str(error.value)
    assert f"saved with world={state['world']}, num_videos={state['num_videos']}" in message
    assert f"this run has world=1, num_videos={len(coded_videos)}" in message
    assert "same number of processes and videos" in message and "train.resume=none" in message
    assert (loader.epoch, loader.step) == (0, 0) and not caplog.text


def test_a_state_missing_keys_is_refused_naming_them(coded_videos):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = {key: value for key, value in loader.state_dict().items() if key not in ("world", "num_videos")}
    with pytest.raises(ValueError, match="loader state lacks world, num_videos"):
        loader.load_state_dict(state)
    with pytest.raises(ValueError, match="loader state lacks seed, epoch, step"):
        loader.load_state_dict({"batch_size": 2, "world": 1, "num_videos": len(coded_videos)})


@pytest.mark.parametrize("pipelines", [3, 5])   # 4 steps per epoch; 5: one pipeline runs none
def test_pipelines_taking_turns_yield_the_batches_of_one_pipeline(coded_videos, pipelines):
    reference = run(pretrain_loader(coded_videos, **SETTINGS))
    assert len(reference) // EPOCHS % pipelines != 0   # a pass ends part-way through a round of turns
    same(run(pretrain_loader(coded_videos, **SETTINGS, runtime=Runtime(pipelines=pipelines))), reference)


def test_pipelines_taking_turns_resume_and_break_off_like_one(coded_videos):
    reference = run(pretrain_loader(coded_videos, **SETTINGS))
    first = pretrain_loader(coded_videos, **SETTINGS, runtime=Runtime(pipelines=2))
    got = []
    for batch in first:     # breaks off after step 0: the next pass starts at an odd step
        got.append((0, batch.query.clone(), batch.key.clone(), batch.index.clone()))
        break
    for batch in first:
        got.append((0, batch.query.clone(), batch.key.clone(), batch.index.clone()))
        if len(got) == 3:
            break
    resumed = pretrain_loader(coded_videos, **SETTINGS, runtime=Runtime(pipelines=2))
    resumed.load_state_dict(first.state_dict())
    same(got + run(resumed), reference)


def test_pipelines_must_be_at_least_one(coded_videos):
    with pytest.raises(ValueError, match="pipelines must be >= 1"):
        pretrain_loader(coded_videos, **SETTINGS, runtime=Runtime(pipelines=0))


def test_pipelines_read_on_into_the_next_epoch_and_restart_only_elsewhere(coded_videos, monkeypatch):
    builds = count_graph_builds(monkeypatch, "pretrain_graph")
    loader = pretrain_loader(coded_videos, **SETTINGS, runtime=Runtime(pipelines=2))
    reference = run(loader)                 # epochs 0 and 1 back to back: one set of pipelines
    assert len(builds) == 2
    replay = run(loader, epochs=[1])        # epoch 1 again: the pipelines had read on into epoch 2
    assert len(builds) == 4
    same(replay, reference[len(reference) // 2:])
