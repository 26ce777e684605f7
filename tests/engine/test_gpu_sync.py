"""No host synchronisation per training step: the loss is watched on the device (LossWatch) and
read back only at log steps and saves, and nothing is saved after a non-finite loss."""
import pytest
import torch

from engine import checkpoint as ckpt
from engine.checkpoint import NonFiniteLoss
from engine.steps import Update, classifier_step, moco_step
from models.moco import MoCo
from tests.models.moco_test_nets import TinyBNBackbone

BATCH = 4
CLIP = (3, 2, 4, 4)    # C, T, H, W
CLASSES = 3
K = 16
LR = 0.1
GRAD_CLIP = 1.0
STEPS = 3
NAN = float("nan")
INF = float("inf")


def refuse_host_reads(monkeypatch):
    """Make every Python-level read of a tensor's value raise: on a GPU each is a host sync."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")
    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


def moco_training(device):
    torch.manual_seed(0)
    model = MoCo(TinyBNBackbone(), dim=3, K=K, head="linear", symmetric=True).to(device).train()
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)


def views(device, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(BATCH, *CLIP, generator=generator).to(device) for _ in range(2))


def classifier_training(device):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 2 * 4 * 4, CLASSES)).to(device)
    return model, torch.optim.SGD(model.parameters(), lr=LR)


def test_the_watch_names_the_first_non_finite_step_and_its_loss():
    watch = ckpt.LossWatch(torch.device("cpu"))
    watch.update(torch.tensor(1.0), step=0)
    watch.check(at_step=1)                                  # all finite: nothing raised
    for step, loss in [(1, 2.0), (2, NAN), (3, INF), (4, 1.0)]:
        watch.update(torch.tensor(loss), step)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss nan at step 2 \(found at step 5"):
        watch.check(at_step=5)


def test_watching_a_loss_reads_nothing_back(monkeypatch):
    watch = ckpt.LossWatch(torch.device("cpu"))
    with monkeypatch.context() as patch:
        refuse_host_reads(patch)
        watch.update(torch.tensor(INF), step=7)
    with pytest.raises(NonFiniteLoss, match="loss inf at step 7"):
        watch.check()


def test_a_watched_moco_step_reads_nothing_back_and_a_bad_loss_surfaces_at_the_check(monkeypatch):
    device = torch.device("cpu")
    model, optimizer = moco_training(device)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    update = Update(optimizer, scaler, None, GRAD_CLIP)
    watch = ckpt.LossWatch(device)
    q, k = views(device)
    with monkeypatch.context() as patch:
        refuse_host_reads(patch)
        for step in range(STEPS):
            moco_step(model, q, k, update, step, watch)
        moco_step(model, q * NAN, k, update, STEPS, watch)    # runs on
        moco_step(model, q, k, update, STEPS + 1, watch)
    with pytest.raises(NonFiniteLoss, match=f"at step {STEPS} "):
        watch.check(STEPS + 2)


def test_an_unwatched_step_stops_at_once():
    device = torch.device("cpu")
    model, optimizer = moco_training(device)
    q, k = views(device)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteLoss, match="non-finite loss nan at step 4;"):
        moco_step(model, q * NAN, k, Update(optimizer, torch.amp.GradScaler("cpu", enabled=False)), 4)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))     # no update


def test_a_watched_classification_step_reads_nothing_back(monkeypatch):
    device = torch.device("cpu")
    model, optimizer = classifier_training(device)
    update = Update(optimizer, torch.amp.GradScaler("cpu", enabled=False))
    watch = ckpt.LossWatch(device)
    clips, _ = views(device)
    labels = torch.arange(BATCH) % CLASSES
    with monkeypatch.context() as patch:
        refuse_host_reads(patch)
        classifier_step(model, clips, labels, update, 0, watch)
        classifier_step(model, clips * INF, labels, update, 1, watch)
    with pytest.raises(NonFiniteLoss, match="at step 1"):
        watch.check(2)
    with pytest.raises(NonFiniteLoss, match="at step 5"):
        classifier_step(model, clips * NAN, labels, update, 5)


class Part:
    def __init__(self, value):
        self.value = value

    def state_dict(self):
        return {"value": self.value}


def test_nothing_is_saved_once_a_loss_was_non_finite(tmp_path):
    run_dir = str(tmp_path)
    watch = ckpt.LossWatch(torch.device("cpu"))
    common = dict(rank=0, watch=watch, epoch=0, config={}, run={"world": 1})
    watch.update(torch.tensor(1.0), step=0)
    ckpt.save_training_all_ranks(run_dir, {"part": Part(1)}, step=1, **common)
    watch.update(torch.tensor(NAN), step=1)
    watch.update(torch.tensor(1.0), step=2)
    with pytest.raises(NonFiniteLoss, match="at step 1 .*holds at most step 1"):
        ckpt.save_training_all_ranks(run_dir, {"part": Part(3)}, step=3, epoch_copy=0, **common)
    last = ckpt.load_checkpoint(str(tmp_path / ckpt.CHECKPOINT_DIR / ckpt.LAST))
    assert (last["step"], last["part"]["value"]) == (1, 1)
    assert sorted(p.name for p in (tmp_path / ckpt.CHECKPOINT_DIR).iterdir()) == [ckpt.LAST]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_watched_training_steps_never_wait_for_the_gpu():
    """CUDA's sync debug mode raises on any synchronising call during the watched steps."""
    device = torch.device("cuda")
    model, optimizer = moco_training(device)
    classifier, classifier_optimizer = classifier_training(device)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    update = Update(optimizer, scaler, torch.bfloat16, GRAD_CLIP)
    classifier_update = Update(classifier_optimizer, scaler, torch.bfloat16)
    watch = ckpt.LossWatch(device)
    q, k = views(device)
    labels = (torch.arange(BATCH) % CLASSES).to(device)
    moco_step(model, q, k, update, 0, watch)      # warm-up: lazy inits
    classifier_step(classifier, q, labels, classifier_update, 0, watch)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, STEPS):
            moco_step(model, q, k, update, step, watch)
            classifier_step(classifier, q, labels, classifier_update, step, watch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    watch.check(STEPS)
    assert int(model.queue_ptr) == (STEPS * 2 * BATCH) % K
