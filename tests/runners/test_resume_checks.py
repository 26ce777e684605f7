"""A resume is refused when the run differs from its checkpoint; checkpoints load onto the CPU."""
import os
import shutil

import pytest
import torch

from engine import checkpoint as ckpt
from engine import config as C
from tests.runners.test_classify import pretrained_run, tiny

SAVED = {"seed": 0, "train": {"lr": 0.05, "log_every": 5}, "model": {"K": 64, "T": 0.1}}


def saved_state(**extra):
    return {"config": SAVED, "run": {"world": 1}, **extra}


def test_same_run_is_accepted_and_unchecked_keys_may_differ():
    now = {**SAVED, "train": {"lr": 0.05, "log_every": 1}}
    ckpt.check_same_run("last.pt", saved_state(), now, ("seed", "train.lr", "model"), {"world": 1})


@pytest.mark.parametrize("now, run, message", [
    ({**SAVED, "train": {"lr": 0.01, "log_every": 5}}, {"world": 1}, "config key 'train.lr' was 0.05, now 0.01"),
    ({**SAVED, "model": {"K": 128, "T": 0.1}}, {"world": 1}, "config key 'model.K' was 64, now 128"),
    (SAVED, {"world": 2}, "world was 1, now 2"),
    ({k: v for k, v in SAVED.items() if k != "seed"}, {"world": 1}, "'seed' was 0, now '<missing>'"),
])
def test_a_differing_key_or_run_fact_is_refused_by_name(now, run, message):
    with pytest.raises(ValueError, match=f"cannot resume last.pt: .*{message}"):
        ckpt.check_same_run("last.pt", saved_state(), now, ("seed", "train.lr", "model"), run)


def test_a_refusal_names_only_the_differing_keys_of_a_section_with_both_values():
    saved = {**SAVED, "model": {"K": 64, "T": 0.1, "head": {"dim": 128, "layers": 2}}}
    now = {**SAVED, "model": {"K": 128, "T": 0.1, "head": {"dim": 128, "layers": 3}, "m": 0.99}}
    with pytest.raises(ValueError) as refused:
        ckpt.check_same_run("last.pt", {"config": saved, "run": {"world": 1}}, now, ("model",), {"world": 2})
    assert str(refused.value).startswith(
        "cannot resume last.pt: config key 'model.K' was 64, now 128; config key 'model.head.layers' was 2, "
        "now 3; config key 'model.m' was '<missing>', now 0.99; world was 1, now 2. ")
    assert "model.T" not in str(refused.value) and "'dim'" not in str(refused.value)


def test_a_file_that_is_not_a_training_checkpoint_is_named(tmp_path):
    path = str(tmp_path / "backbone.pt")
    torch.save({"conv.weight": torch.zeros(1)}, path)
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match=f"cannot resume {path}: it has no 'model', 'step', 'epoch', 'rng'"):
        ckpt.resume_training(str(tmp_path), path, {"model": model})


class DeviceRecorder:
    """A checkpoint part that records the devices of the tensors it is handed."""

    def __init__(self):
        self.devices = set()

    def state_dict(self):
        return {"t": torch.ones(2)}

    def load_state_dict(self, state):
        self.devices.add(state["t"].device.type)


def test_resume_hands_cpu_tensors_and_restores_the_rng(tmp_path):
    part = DeviceRecorder()
    torch.manual_seed(3)
    ckpt.save_training(str(tmp_path), {"part": part}, step=4, epoch=1, config=SAVED, run={"world": 1})
    expected = torch.rand(3)
    torch.manual_seed(99)
    assert ckpt.resume_training(str(tmp_path), "auto", {"part": part}) == 4
    assert part.devices == {"cpu"}
    assert torch.equal(torch.rand(3), expected)
    state = ckpt.load_checkpoint(os.path.join(ckpt.checkpoint_dir(str(tmp_path)), ckpt.LAST))
    assert state["rng"]["torch"].device.type == "cpu"


def test_pretraining_refuses_a_changed_rate_and_keeps_its_config(tmp_path, tiny_data_root):
    from runners.pretrain import main
    main(tiny(tmp_path, tiny_data_root, "run.name=run", "train.epochs=1", "fame.variant=none"))
    with pytest.raises(ValueError, match="config key 'train.lr' was 0.05, now 0.01"):
        main(tiny(tmp_path, tiny_data_root, "run.name=run", "train.epochs=1", "fame.variant=none", "train.lr=0.01"))
    assert C.load_config(str(tmp_path / "run" / "config.yaml")).train.lr == 0.05


def test_a_probe_refuses_a_pretrained_file_whose_content_changed(tmp_path, tmp_path_factory, tiny_data_root):
    from runners.classify import main
    backbone_pt = str(tmp_path / "backbone.pt")
    shutil.copy(os.path.join(pretrained_run(tmp_path_factory, tiny_data_root), "backbone.pt"), backbone_pt)
    args = ["run.name=lin", f"pretrained={backbone_pt}", "eval.protocol=linear", "eval.epochs=1"]
    main(tiny(tmp_path, tiny_data_root, *args))
    state = torch.load(backbone_pt)
    first = next(iter(state))
    state[first] = state[first] + 1
    torch.save(state, backbone_pt)
    with pytest.raises(ValueError, match="cannot resume .*pretrained_sha256 was '[0-9a-f]+', now '[0-9a-f]+'"):
        main(tiny(tmp_path, tiny_data_root, *args))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_model_and_optimizer_resume(tmp_path):
    def build():
        model = torch.nn.Linear(4, 2).to("cuda")
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model, optimizer = build()
    model(torch.ones(3, 4, device="cuda")).sum().backward()
    optimizer.step()
    ckpt.save_training(str(tmp_path), {"model": model, "optimizer": optimizer}, step=1, epoch=0, config=SAVED,
                       run={"world": 1})
    again, again_optimizer = build()
    assert ckpt.resume_training(str(tmp_path), "auto", {"model": again, "optimizer": again_optimizer}) == 1
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), model.parameters(), strict=True))
    assert again_optimizer.state_dict()["state"][0]["momentum_buffer"].device.type == "cuda"


def test_keys_added_to_the_schema_since_the_save_resume_at_their_defaults():
    now = C.to_dict(C.load_config("configs/synthetic_tiny.yaml"))
    saved = {**now, "fame": {k: v for k, v in now["fame"].items() if k != "bins"}}      # saved before fame.bins
    ckpt.check_same_run("last.pt", {"config": saved, "run": {"world": 1}}, now, ("fame",), {"world": 1})
    changed = {**now, "fame": {**now["fame"], "bins": now["fame"]["bins"] + 1}}
    with pytest.raises(ValueError, match=rf"config key 'fame.bins' was {now['fame']['bins']}, now "
                                         rf"{now['fame']['bins'] + 1}\. Resume"):
        ckpt.check_same_run("last.pt", {"config": saved, "run": {"world": 1}}, changed, ("fame",), {"world": 1})
