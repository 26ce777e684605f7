"""runners.gpu_check: the plan of the GPU verification, its kill-and-resume step (run here on the
CPU with the tiny config) and its report, targets included."""
import os
import sys

import pytest

from runners import gpu_check as G

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "gpu_check_tiny.yaml")


def test_plan_runs_every_check_with_this_python(tmp_path):
    steps = G.plan(str(tmp_path))
    commands = {step.name: " ".join(step.argv) for step in steps}
    assert all(step.argv[0] == sys.executable for step in steps)
    assert "runners.doctor" in commands["doctor"]
    assert "-m gpu" in commands["gpu tests"]
    assert "--backend cupy" in commands["FAME op on CuPy"]
    assert "data.decode=gpu" in commands["profile: H.264, GPU decode"]
    assert "data.decode=gpu" in commands["profile: VP9, GPU decode"] and "codec=vp9" in commands["profile: VP9, GPU decode"]
    assert "data.decode=cpu" in commands["profile: VP9, hybrid (CPU decode)"]
    # the trainer alone is timed on the very model, clip, batch and AMP that pretraining runs
    assert f"--config {G.CONFIG}" in commands["training step alone"]
    assert "runners.pretrain" in commands["pretrain 50 steps, kill, resume"]
    assert sum(step.timeout_s for step in steps) <= 25 * 60


def test_run_steps_reads_the_shape_pretraining_prints():
    assert G.run_steps("12:00:00 INFO run runs/x: 2 steps/epoch x 25 epochs on cuda:0 (world 1)") == 50
    assert G.run_steps("nothing") == -1


def result(name, figures, ok=True):
    return G.Result(name, ok, 1.0, "exit 0", "output line", figures)


def test_report_measures_each_target_against_its_bound():
    results = [result("FAME op on CuPy", {"fame_cupy": [{"size": 224, "batch": 64, "dtype": "uint8",
                                                          "clips_per_s": 5622.0}]}),
               result("training step alone", {"trainer_clips_per_s": 328.0}),
               result("pretrain", {"pretrain_clips_per_s": 320.0, "pretrain_data_wait": 0.04})]
    rows = {name.split(" ")[0]: (measured, met) for name, measured, met in G.targets(
        {k: v for r in results for k, v in r.figures.items()})}
    assert rows["pretraining"] == ("320.0 / 328.0 = 0.98", True)
    assert rows["data"] == ("4.0%", True)
    assert rows["CuPy"] == ("5,622 clips/s", False)
    report = G.format_report(results, "2026-12-04 10:00", "a GPU")
    assert "| training step alone | PASS |" in report and "| FAIL |" in report and "Machine: a GPU" in report


def test_targets_not_measured_are_not_passed():
    assert {met for _, measured, met in G.targets({})} == {None}
    report = G.format_report([result("doctor", {}, ok=False)], "now", "no GPU visible")
    assert "| doctor | FAIL |" in report and "not measured" in report


def test_pretrain_is_killed_at_its_first_checkpoint_and_resumes_to_the_end(tmp_path, tiny_data_root, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = [sys.executable, "-m", "runners.pretrain", "--config", TINY, f"data.root={tiny_data_root}",
            f"run.dir={tmp_path / 'runs'}", f"run.name={G.PRETRAIN_RUN}", "train.epochs=3"]
    step = G.Step("pretrain", argv, 300, run=G.pretrain_and_resume)
    for attempt in ("first", "again, over the first one's run"):
        outcome = G.run_step(step, str(tmp_path))
        assert outcome.ok, attempt + ": " + outcome.detail + outcome.output[-3000:]
        assert "resumed at step" in outcome.detail and "ended at step 12 of 12" in outcome.detail
        assert outcome.figures["pretrain_clips_per_s"] > 0


def test_without_a_gpu_it_stops_before_any_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(G, "gpu_visible", lambda: False)
    monkeypatch.setattr(G, "run_step", lambda step, out: pytest.fail("a step ran without a GPU"))
    with pytest.raises(SystemExit) as exit_info:
        G.main(["--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "no CUDA GPU is visible" in capsys.readouterr().err


def test_only_runs_the_named_steps_and_writes_the_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(G, "gpu_visible", lambda: True)
    ran = []
    monkeypatch.setattr(G, "run_step", lambda step, out: ran.append(step.name) or result(step.name, {}))
    assert G.main(["--out", str(tmp_path), "--only", "doctor"]) == 0
    assert ran == ["doctor"]
    assert "| doctor | PASS |" in (tmp_path / G.REPORT).read_text()
    with pytest.raises(SystemExit) as exit_info:
        G.main(["--out", str(tmp_path), "--only", "nothing"])
    assert exit_info.value.code == 2 and "the steps are: doctor" in capsys.readouterr().err
