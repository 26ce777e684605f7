"""Loader state: a run resumed mid-epoch sees exactly the batches of an uninterrupted run."""
import pytest
import torch

import fame
from pipelines.loader import pretrain_loader
from pipelines.params import AugParams

SETTINGS = dict(device="cpu", batch_size=2, frames=4, stride=2, crop=32, aug=AugParams(),
                fame_cfg=fame.FameConfig(), seed=7)
EPOCHS = 2


def run(loader, epochs=range(EPOCHS)):
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(epoch, b.query.clone(), b.key.clone(), b.index.clone()) for b in loader]
    return out


def same(a, b):
    assert len(a) == len(b)
    for (ea, qa, ka, ia), (eb, qb, kb, ib) in zip(a, b):
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
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    loader.set_epoch(1)
    assert loader.state_dict()["step"] == 0


def test_a_state_from_another_seed_is_refused(coded_videos):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = dict(loader.state_dict(), seed=8)
    with pytest.raises(ValueError, match="seed 8"):
        loader.load_state_dict(state)


def test_a_state_from_another_batch_size_continues_at_the_same_share_of_the_epoch(coded_videos, caplog):
    loader = pretrain_loader(coded_videos, **SETTINGS)
    state = dict(loader.state_dict(), step=2, batch_size=1)
    with caplog.at_level("WARNING"):
        loader.load_state_dict(state)
    assert loader.step == 1 and "batches not identical" in caplog.text
