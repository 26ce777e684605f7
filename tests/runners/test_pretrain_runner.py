"""End to end: the real DALI pipeline, the real MoCo queue, on the tiny synthetic dataset."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from engine import config as C
from engine.logger import read_metrics
from models.backbones import load_backbone_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
KILL_AT_STEP = 4
# runners.pretrain with a hook in its FAME-examples slot that kills the process at a step.
KILLED_RUN = """
import os, signal, sys
from engine.cli import parse_cli
from runners import pretrain

def kill_at(trainer):
    if trainer.step == {step}:
        os.kill(os.getpid(), signal.SIGKILL)

pretrain.log_fame_examples = lambda every: kill_at
pretrain.main(parse_cli("pretrain", sys.argv[1:]))
"""
TINY_STEPS = 4               # 16 training videos / batch 4, one epoch
EVALUATE_HINT = re.compile(r"^evaluate: +(make .*)$", re.M)
CLASSIFY_RECIPE = re.compile(r"-m runners\.classify (.*)$", re.M)


def tiny(tmp_path, data_root, *overrides):
    return C.load_config(TINY, [f"data.root={data_root}", f"run.dir={tmp_path}", *overrides])


def run_cli(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "runners.pretrain", "--config", TINY, *args], cwd=ROOT,
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def test_tiny_pretrain_writes_run_directory(tmp_path, tiny_data_root):
    from runners.pretrain import main
    run_dir = main(tiny(tmp_path, tiny_data_root, "run.name=one"))
    assert run_dir == os.path.join(str(tmp_path), "one")
    rows = read_metrics(run_dir)
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if "loss" in r)
    assert {"loss", "acc1", "acc5", "lr", "clips_per_s", "data_wait"} <= set(rows[0])
    state = torch.load(os.path.join(run_dir, "checkpoints", "last.pt"), weights_only=False)
    assert state["config"]["fame"]["beta"] == 0.5 and state["step"] == rows[-1]["step"]
    assert state["model"]["queue_ptr"].item() == (2 * 4 * state["step"]) % 64
    assert C.load_config(os.path.join(run_dir, "config.yaml")).run.name == "one"
    load_backbone_state("small3d", torch.load(os.path.join(run_dir, "backbone.pt")), width=8)

    # Run again: the finished run resumes at its last step, trains nothing and re-exports the same backbone.
    backbone = torch.load(os.path.join(run_dir, "backbone.pt"))
    assert main(tiny(tmp_path, tiny_data_root, "run.name=one")) == run_dir
    assert [r for r in read_metrics(run_dir) if "loss" in r] == [r for r in rows if "loss" in r]
    again = torch.load(os.path.join(run_dir, "backbone.pt"))
    assert all(torch.equal(backbone[key], again[key]) for key in backbone)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, tiny_data_root):
    """A finished tiny pretraining run from the command line, stderr a pipe (not a terminal):
    its run.dir and the finished process (stdout, stderr)."""
    run_root = tmp_path_factory.mktemp("cli")
    out = run_cli([f"data.root={tiny_data_root}", f"run.dir={run_root}", "run.name=cli", "fame.variant=none"])
    assert out.returncode == 0, out.stderr[-3000:]
    return run_root, out


@pytest.mark.slow
def test_the_log_lines_off_a_terminal_carry_an_eta(cli_run):
    etas = re.findall(rf"step (\d+)/{TINY_STEPS} .* eta (\d+:\d\d:\d\d)$", cli_run[1].stderr, re.M)
    assert [int(step) for step, _ in etas] == list(range(1, TINY_STEPS + 1))
    assert etas[-1][1] == "0:00:00"


def test_the_hint_probes_a_run_that_resumed_a_named_checkpoint_in_its_own_directory():
    from runners.pretrain import format_probe_command
    assert format_probe_command("runs/a", "runs/a/backbone.pt", "a", "runs/a/checkpoints/epoch_0001.pt") == (
        'make linear CONFIG=runs/a/config.yaml ARGS="pretrained=runs/a/backbone.pt run.name=a-linear '
        'train.resume=auto"')


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make (the printed command is a make target)")
def test_the_printed_evaluate_command_probes_the_run_s_own_data(cli_run, tiny_data_root):
    """The end-of-run hint, run as make would: a linear probe on the run's config.yaml (its data),
    written to <run.name>-linear beside the pretraining run."""
    from engine.cli import parse_cli
    from runners import classify
    run_root, out = cli_run
    make, target, *variables = shlex.split(EVALUATE_HINT.search(out.stdout).group(1))
    assert (make, target) == ("make", "linear")
    recipe = subprocess.run(["make", "-n", "--no-print-directory", target, "NOVENV=1", f"PYTHON={sys.executable}",
                             *variables], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    cfg = parse_cli("probe", shlex.split(CLASSIFY_RECIPE.search(recipe).group(1)))
    pretrained = tiny(run_root, tiny_data_root, "run.name=cli", "fame.variant=none")
    assert C.to_dict(cfg)["data"] == C.to_dict(pretrained)["data"]
    record = classify.main(cfg)
    assert record["pretrained"]["path"] == str(run_root / "cli" / "backbone.pt")
    assert (run_root / "cli-linear" / "results.json").is_file() and not (run_root / "cli" / "results.json").exists()


@pytest.mark.slow
def test_resume_after_kill_is_bit_exact(tmp_path, tiny_data_root):
    """The run kills itself (SIGKILL) at step KILL_AT_STEP, after that step is logged and before it
    is saved (a hook in the runner's own hook slot), so the resume redoes the step: it ends with
    the very weights of a run never killed."""
    common = [f"data.root={tiny_data_root}", f"run.dir={tmp_path}", "train.epochs=2", "train.checkpoint_steps=1"]
    ref = run_cli(common + ["run.name=ref"])
    assert ref.returncode == 0, ref.stderr[-3000:]

    killed = subprocess.run([sys.executable, "-c", KILLED_RUN.format(step=KILL_AT_STEP), "--config", TINY, *common,
                             "run.name=killed"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)
    assert partial["step"] == KILL_AT_STEP - 1
    assert max(row["step"] for row in read_metrics(str(tmp_path / "killed"))) == KILL_AT_STEP

    resumed = run_cli(common + ["run.name=killed"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {KILL_AT_STEP - 1}" in resumed.stderr
    a = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=False)
    assert a["step"] == b["step"] == 8
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    steps = [row["step"] for row in read_metrics(str(tmp_path / "killed")) if "loss" in row]
    assert steps == sorted(set(steps)), "the redone step is logged once"


def test_non_finite_loss_stops_with_the_step(tmp_path, tiny_data_root, monkeypatch):
    from engine.checkpoint import NonFiniteLoss
    from runners import pretrain
    poison_losses_from_step(monkeypatch, 2)
    with pytest.raises(NonFiniteLoss, match="at step 2"):
        pretrain.main(tiny(tmp_path, tiny_data_root, "run.name=nan", "train.checkpoint_steps=1"))
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def poison_losses_from_step(monkeypatch, first_bad_step):
    """Make MoCo's loss NaN from the (0-based) step ``first_bad_step`` on (symmetric: two InfoNCE calls a step)."""
    from models.moco import MoCo
    calls = {"n": 0}
    infonce = MoCo.infonce

    def poisoned(self, q, k, ids=None):
        calls["n"] += 1
        loss, logits, labels = infonce(self, q, k, ids)
        return (loss * float("nan") if calls["n"] > 2 * first_bad_step else loss), logits, labels
    monkeypatch.setattr(MoCo, "infonce", poisoned)


def test_a_non_finite_loss_is_read_back_late_but_named_and_never_saved(tmp_path, tiny_data_root, monkeypatch):
    """The loss is read from the device only at log steps and saves: the steps after the bad one
    run on, yet the error names the first bad step and no checkpoint holds their weights."""
    from engine.checkpoint import NonFiniteLoss
    from runners import pretrain
    poison_losses_from_step(monkeypatch, 1)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss nan at step 1 \(found at step 4"):
        pretrain.main(tiny(tmp_path, tiny_data_root, "run.name=late", "train.log_every=100"))   # 4 steps
    assert not (tmp_path / "late" / "checkpoints").exists()
    assert not read_metrics(str(tmp_path / "late"))


def test_the_logs_report_the_gpu_memory_metrics(tmp_path, tiny_data_root, monkeypatch):
    from engine import fit
    from runners import pretrain
    memory = {"gpu_alloc_gb": 1.0, "gpu_used_gb": 2.5}
    devices = []
    monkeypatch.setattr(fit, "gpu_memory_metrics", lambda device: devices.append(device) or memory)
    run_dir = pretrain.main(tiny(tmp_path, tiny_data_root, "run.name=memory", "train.log_every=2"))
    rows = [r for r in read_metrics(run_dir) if "loss" in r]
    assert [r["step"] for r in rows] == [2, 4] and all(memory.items() <= r.items() for r in rows)
    assert devices == [torch.device("cpu")] * 2


@pytest.mark.parametrize("override, message", [
    ("model.backbone=resnet9000", "config key 'model.backbone': got 'resnet9000'"),
    ("pretrained=runs/x/backbone.pt", "config key 'pretrained'"),
])
def test_bad_config_fails_before_the_run_directory_is_made(tmp_path, tiny_data_root, override, message):
    from runners.pretrain import main
    with pytest.raises(ValueError, match=message):
        main(tiny(tmp_path, tiny_data_root, "run.name=bad", override))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("override, message", [
    ("model.K=66", "config key 'model.K'"),               # depends on the number of processes
    ("train.batch_size=64", "config key 'train.batch_size'"),   # depends on the number of videos
])
def test_settings_that_depend_on_the_run_fail_before_training(tmp_path, tiny_data_root, override, message):
    from runners.pretrain import main
    with pytest.raises(ValueError, match=message):
        main(tiny(tmp_path, tiny_data_root, "run.name=bad", override))
    assert not (tmp_path / "bad" / "checkpoints").exists() and not (tmp_path / "bad" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_two_process_gloo_run(tmp_path, tiny_data_root):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    out = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "runners.pretrain",
                          "--config", TINY, f"data.root={tiny_data_root}", f"run.dir={tmp_path}", "run.name=ddp",
                          "train.batch_size=2", "model.shuffle_bn_groups=1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    state = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 4            # 16 videos / (2 ranks x batch 2)
    assert state["model"]["queue_ptr"].item() == (2 * 2 * 2 * 4) % 64
    assert (tmp_path / "ddp" / "backbone.pt").exists()


@pytest.mark.parametrize("name", ["k400_r21d_pretrain", "k400_i3d_pretrain", "ucf101_i3d_pretrain",
                                  "ucf101_r21d_pretrain"])
def test_paper_configs_tiny_variants_pretrain(tmp_path, tiny_data_root, name):
    from runners.pretrain import main
    cfg = C.load_config(os.path.join(ROOT, "configs", f"{name}_tiny.yaml"),
                        [f"data.root={tiny_data_root}", f"run.dir={tmp_path}", "run.name=t"])
    run_dir = main(cfg)
    assert os.path.exists(os.path.join(run_dir, "backbone.pt"))
    full = C.load_config(os.path.join(ROOT, "configs", f"{name}.yaml"))
    assert (full.train.lr, full.train.weight_decay, full.model.m, full.model.T) == (0.01, 1e-4, 0.999, 0.1)
    assert full.model.K % (2 * 8 * full.train.batch_size) == 0      # 8 processes
