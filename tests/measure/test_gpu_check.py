"""measure.gpu_check: every stage fits its budget, every stage's CPU rehearsal runs (stage 1 with
DALI, PyAV and tqdm unimportable, as on the lent machine before DALI arrives), a stage cut short
keeps the report of every step it finished, and the report measures each target against its bound."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import sysconfig

import pytest

from measure import gpu_check as G

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ONE_COMMAND_S = 8 * 60           # a stage must end well inside the 10 minutes a command may run
# What the lent machine lacks before DALI's parts arrive, and (wandb, matplotlib) after.
ABSENT_BEFORE_DALI = ("nvidia.dali", "av", "tqdm", "wandb", "matplotlib")
ABSENT_WITH_DALI = ("wandb", "matplotlib")


def python_without(tmp_path, absent: tuple[str, ...]) -> str:
    """A virtual environment whose site-packages holds this one's packages but ``absent`` (dotted
    names: "nvidia.dali" leaves the rest of nvidia/): the lent machine's set, for a command and
    every process it starts."""
    venv = tmp_path / "machine-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = pathlib.Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                          "print(sysconfig.get_paths()['purelib'])"],
                                         stdout=subprocess.PIPE, text=True, check=True).stdout.strip())
    link_packages(pathlib.Path(sysconfig.get_paths()["purelib"]), target, absent)
    return str(venv / "bin" / "python")


def link_packages(source: pathlib.Path, target: pathlib.Path, absent: tuple[str, ...], prefix: str = "") -> None:
    """Symlink every entry of ``source`` into ``target`` but the packages ``absent``, their
    libraries (av.libs) and distributions (nvidia_dali_cuda130-2.4.0.dist-info); a folder that
    holds an absent subpackage (nvidia/ of nvidia.dali) is rebuilt one level down."""
    for entry in source.iterdir():
        name = prefix + entry.name.lower().split("-")[0]
        if any(name in (a, a + ".libs") or name.startswith(a.replace(".", "_") + "_") for a in absent):
            continue
        if entry.is_dir() and any(a.startswith(name + ".") for a in absent):
            (target / entry.name).mkdir()
            link_packages(entry, target / entry.name, absent, name + ".")
        else:
            (target / entry.name).symlink_to(entry)


def machine_env() -> dict:
    """This environment for a command on the lent machine's Python: the project on the path, no
    pytest plugins (pytest-timeout included), as there."""
    return {**os.environ, "PYTHONPATH": ROOT, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def stage_command(stage: int, out, work, python: str = sys.executable) -> list[str]:
    return [python, "-m", "measure.gpu_check", "--stage", str(stage), "--rehearse", "--out", str(out),
            "--work", str(work)]


@pytest.mark.parametrize("rehearse", [False, True])
@pytest.mark.parametrize("stage", G.STAGES)
def test_every_stage_fits_one_command(tmp_path, stage, rehearse):
    steps = G.stage_plan(stage, G.Layout(str(tmp_path / "out"), str(tmp_path / "work"), rehearse))
    assert sum(step.timeout_s for step in steps) <= G.STAGE_BUDGET_S <= ONE_COMMAND_S
    assert all(step.argv[0] == sys.executable for step in steps if step.argv)
    # nothing of a stage writes into the report's folder: what comes back is the report alone
    assert not any(str(tmp_path / "out") in arg for step in steps for arg in step.argv)


def test_stage_one_needs_no_dali_and_stage_two_pretrains_through_it(tmp_path):
    gpu = {s: {step.name: step for step in G.stage_plan(s, G.Layout("out", "work"))} for s in G.STAGES}
    assert all(not set(step.needs) & {"nvidia.dali", "av"} for step in gpu[1].values())
    commands = {name: " ".join(step.argv) for s in G.STAGES for name, step in gpu[s].items()}
    assert "--backend cupy" in commands["FAME op (bench-fame)"]
    assert "data.decode=gpu" in commands["profile: h264-nvdec"]
    assert "data.decode=gpu" in commands["profile: vp9-nvdec"] and "codec=vp9" in commands["profile: vp9-nvdec"]
    assert "data.decode=cpu" in commands["profile: vp9-hybrid"]
    # the trainer alone is timed on the very model, clip, batch and AMP that pretraining runs
    assert f"--config {G.CONFIG}" in commands["training step alone (bench-trainer)"]
    rate = commands["pretraining rate (one epoch, no checkpoint inside)"]
    assert f"data.train_list={G.LONG_LIST}" in rate and "train.checkpoint_steps=0" in rate and "train.epochs=1" in rate


def test_the_three_stages_run_every_gpu_test_between_them():
    layout = G.Layout("out", "work")
    commands = [step.argv for stage in G.STAGES for step in G.stage_plan(stage, layout) if "pytest" in step.argv]
    first, second, rest = ([arg for arg in argv if arg.startswith(("tests", "--ignore"))] for argv in commands)
    assert rest[0] == "tests" and sorted(rest[1:]) == sorted(f"--ignore={path}" for path in first + second)
    assert all(os.path.isdir(os.path.join(ROOT, path)) for path in first + second)


@pytest.mark.slow
def test_stage_one_rehearsal_runs_without_dali_pyav_or_tqdm(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(stage_command(1, out, work, python_without(tmp_path, ABSENT_BEFORE_DALI)), cwd=ROOT,
                          env=machine_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=G.STAGE_BUDGET_S)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((out / "stage1.json").read_text())
    status = {step["name"]: step["status"] for step in report["steps"]}
    assert list(status) == report["planned"]
    assert status == {"machine facts": "PASS", "CuPy FAME = NumPy (pytest -m gpu tests/fame)": "SKIP",
                      "FAME op (bench-fame)": "PASS", "training step alone (bench-trainer)": "PASS"}
    assert report["steps"][0]["figures"]["facts"]["nvidia.dali"] == "not installed"
    assert sorted(os.listdir(out)) == ["stage1.json", "stage1.md"]


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    """One work folder for the rehearsals of stages 2 and 3 (stage 3 finds the videos there)."""
    return tmp_path_factory.mktemp("gpu-check-work")


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_stage_rehearsal_runs_every_step_it_can_on_the_cpu(tmp_path, work_dir, stage):
    out = tmp_path / "out"
    proc = subprocess.run(stage_command(stage, out, work_dir, python_without(tmp_path, ABSENT_WITH_DALI)), cwd=ROOT,
                          env=machine_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=G.STAGE_BUDGET_S)
    assert proc.returncode == 0, proc.stdout[-3000:]
    report = json.loads((out / f"stage{stage}.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == report["planned"]
    # the GPU tests skip here (no GPU); the steps without a CPU form say why
    plan = G.stage_plan(stage, G.Layout(str(out), str(work_dir), rehearse=True))
    skipped = {step.name for step in plan if step.cpu_skip or "pytest" in step.argv}
    assert skipped
    for name, step in steps.items():
        assert step["status"] == ("SKIP" if name in skipped else "PASS"), \
            f"{name}: {step['detail']}\n{step['output'][-2000:]}"
    if stage == 2:
        killed = steps["pretrain, killed at its first checkpoint, resumed to the end"]["detail"]
        assert "killed with a checkpoint at step 10" in killed and "resumed at step 10" in killed
        assert "ended at step 52 of 52" in killed
        assert steps["profile: h264-nvdec"]["figures"]["profile"]["stages"]["to_torch"] > 0
    else:
        rate = steps["pretraining rate (one epoch, no checkpoint inside)"]["figures"]
        assert rate["pretrain_clips_per_s"] > 0
        assert "pretraining clips/s" in report["targets"][0]["target"] and report["targets"][0]["met"] in (True, False)
    assert sorted(os.listdir(out)) == [f"stage{stage}.json", f"stage{stage}.md"]


@pytest.mark.slow
def test_a_stage_cut_short_keeps_every_step_it_finished(tmp_path):
    """The command is killed (as a loan's time limit kills it) once two steps have said they are
    done: the report on disk holds both, and names the rest as not reached."""
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.Popen(stage_command(1, out, work), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    finished = []
    for line in proc.stdout:
        if line.startswith("gpu-check stage 1: ") and " in " in line and line.rstrip().endswith(")"):
            finished.append(line.split(": ")[1])
        if len(finished) == 2:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    report = json.loads((out / "stage1.json").read_text())
    assert [step["name"] for step in report["steps"]][:2] == finished
    text = (out / "stage1.md").read_text()
    assert all(f"| {name} | " in text for name in finished)
    assert "| training step alone (bench-trainer) | not reached |" in text or len(report["steps"]) > 2


def test_a_step_past_the_stage_budget_is_skipped_and_the_report_says_why(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(G, "run_step", lambda step, layout, left: ran.append(step.name) or
                        G.Result(step.name, G.PASS, 1.0))
    results = G.run_stage(1, G.Layout(str(tmp_path / "out"), str(tmp_path / "work"), True), budget_s=G.MIN_STEP_S - 1)
    assert ran == [] and {r.status for r in results} == {G.SKIP}
    assert "budget" in results[0].detail
    assert "budget of" in (tmp_path / "out" / "stage1.md").read_text()


def test_a_step_whose_packages_do_not_import_skips_naming_them(tmp_path):
    step = G.Step("needs a missing package", [sys.executable, "-c", "pass"], 10, ("no_such_package_here",))
    result = G.run_step(step, G.Layout(str(tmp_path), str(tmp_path)), 10)
    assert result.status == G.SKIP and "no_such_package_here" in result.detail


def test_a_step_past_its_limit_is_killed_and_fails(tmp_path):
    step = G.Step("sleeps", [sys.executable, "-c", "import time; time.sleep(30)"], 1, ())
    result = G.run_step(step, G.Layout(str(tmp_path), str(tmp_path)), 30)
    assert result.status == G.FAIL and result.detail == "exit 124" and "killed after 1 s" in result.output


def test_run_steps_reads_the_shape_pretraining_prints():
    assert G.run_steps("12:00:00 INFO run runs/x: 26 steps/epoch x 2 epochs on cuda:0 (world 1)") == 52
    assert G.run_steps("nothing") == -1


def test_pytest_figures_read_the_summary_line():
    assert G.pytest_figures("....\n3 passed, 17 skipped, 2 deselected in 4.1s\n") == \
        {"passed": 3, "skipped": 17, "deselected": 2}
    assert G.pytest_figures("no summary") == {}


def result(name, figures, status=G.PASS):
    return G.Result(name, status, 1.0, "exit 0", "output line", figures)


def test_report_measures_each_target_against_its_bound():
    results = [result("FAME op", {"fame_bench": [{"backend": "cupy", "size": 224, "batch": 64, "dtype": "uint8",
                                                  "clips_per_s": 5622.0}]}),
               result("training step alone", {"trainer_clips_per_s": 328.0}),
               result("rate", {"pretrain_clips_per_s": 320.0, "pretrain_data_wait": 0.04}),
               result("killed run", G.rate_figures([{"clips_per_s": 1.0, "data_wait": 0.9}], G.KILLED_RUN))]
    rows = {name.split(" ")[0]: (measured, met) for name, measured, met in G.targets(G.stage_figures(results))}
    assert rows["pretraining"] == ("320.0 / 328.0 = 0.98", True)
    assert rows["data"] == ("4.0%", True)      # the rate run's, not the kill-and-resume run's
    assert rows["CuPy"] == ("5,622 clips/s", False)
    report = G.format_report(3, results, "2026-12-04 10:00", "a GPU", [r.name for r in results] + ["later"], False)
    assert "| training step alone | PASS |" in report and "| FAIL |" in report and "Machine: a GPU" in report
    assert "| later | not reached |" in report


def test_targets_not_measured_are_not_passed():
    assert {met for _, measured, met in G.targets({})} == {None}
    report = G.format_report(2, [result("doctor", {}, G.FAIL)], "now", "no GPU visible", ["doctor"], True)
    assert "| doctor | FAIL |" in report and "not measured" in report and "CPU rehearsal" in report


def test_without_a_gpu_and_without_rehearse_it_stops_before_any_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(G, "gpu_visible", lambda: False)
    monkeypatch.setattr(G, "run_step", lambda *args: pytest.fail("a step ran without a GPU"))
    with pytest.raises(SystemExit) as exit_info:
        G.main(["--stage", "1", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "--rehearse" in capsys.readouterr().err


def test_only_runs_the_named_steps_and_writes_the_report(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(G, "run_step", lambda step, layout, left: ran.append(step.name) or result(step.name, {}))
    out = tmp_path / "out"
    assert G.main(["--stage", "2", "--rehearse", "--out", str(out), "--work", str(tmp_path), "--only", "doctor"]) == 0
    assert ran == ["doctor"]
    assert "| doctor | PASS |" in (out / "stage2.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        G.main(["--stage", "2", "--rehearse", "--out", str(out), "--only", "nothing"])
    assert exit_info.value.code == 2 and "its steps are: doctor" in capsys.readouterr().err


def test_make_gpu_check_installs_nothing_and_takes_the_python_it_finds():
    """Without a .venv, `make gpu-check` runs the Python it is given, as it is (an offline GPU
    machine): no `make setup`, no pip."""
    commands = subprocess.run(["make", "--no-print-directory", "-n", "gpu-check", "VENV=/nonexistent-venv",
                               "PYTHON=python3", "STAGE=2", "OUT=/tmp/o"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout
    assert commands.strip() == "python3 -m measure.gpu_check --stage 2 --out /tmp/o"
