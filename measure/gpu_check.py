"""The GPU verification in stages that each fit one short command on a lent GPU machine:
`python -m measure.gpu_check --stage 1|2|3 --out DIR [--work DIR] [--rehearse] [--only STEP]`.

Each stage runs its steps one after another, each in its own process with a time limit, inside
the stage's budget (STAGE_BUDGET_S, well inside the 10 minutes one command may run), and
rewrites its report (``stage<N>.md`` and ``stage<N>.json`` in --out) after every step, so a
stage cut short still returns every step it finished. --out holds nothing else; the videos,
runs and the steps' own JSON files go under --work.

1. No DALI needed (torch and CuPy only): the machine's facts (GPU, driver, NVDEC's library),
   CuPy FAME = NumPy (the GPU tests of tests/fame), the FAME op on CuPy (bench-fame), the MoCo
   step alone (bench-trainer).
2. DALI: the doctor, the GPU tests of the pipelines and the data, the workload's videos
   (320x240 H.264), pretraining through the real pipeline killed at its first checkpoint and
   resumed to its end, one profile of that H.264 data decoded by NVDEC.
3. The targets: the pipeline feeding the trainer (pretraining clips/s against the step alone,
   on an epoch long enough that no checkpoint falls inside the timed steps), the profiles of
   VP9 decoded by NVDEC and by the CPU (hybrid), the GPU tests stages 1 and 2 left (all three
   stages together run the whole `pytest -m gpu`).

--rehearse runs a stage on the CPU with the tiny workload (configs/gpu_check_tiny.yaml):
device=cpu wherever a step allows it, a SKIP naming the cause where it does not, so the
commands, the limits and the report writing are checked before any GPU time is spent
(tests/runners/test_gpu_check.py runs every stage so). Without a GPU and without --rehearse
it stops at once (exit 2). A step whose packages do not import SKIPs, naming them.

Exit code 0 when no step FAILed, 1 otherwise. docs/gpu.md has the loan, command by command.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from data.filelist import TRAIN_LIST, read_file_list, write_file_list
from engine import checkpoint as ckpt
from engine import errors
from engine.checkpoint import write_atomic
from engine.logger import read_metrics

CONFIG = "configs/gpu_check.yaml"
TINY_CONFIG = "configs/gpu_check_tiny.yaml"
DEFAULT_WORK = "runs/gpu-check"
STAGES = (1, 2, 3)
STAGE_BUDGET_S = 420             # every stage's limits fit in 7 minutes: one command may run 10
MIN_STEP_S = 10                  # a step with less of the budget left is skipped, not started
TAIL_CHARS = 3000
POLL_S = 0.2
FACTS_TIMEOUT_S = 20
LIBNVCUVID = "libnvcuvid.so.1"
# What runners.pretrain prints: its shape at the start, the step it resumed from.
RUN_SHAPE = re.compile(r"(\d+) steps/epoch x (\d+) epochs")
RESUMED = re.compile(r"resumed from \S+ at step (\d+)")
PYTEST_SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|deselected)")
# The workload's training list, each video listed LIST_REPEATS times: an epoch of 26 steps at
# batch 64 (2 with the 128 videos once), so the timed steps of stage 3 hold no checkpoint.
LIST_REPEATS = 13
LONG_LIST = f"trainlist-x{LIST_REPEATS}.txt"
PRETRAIN_RUN, RATE_RUN = "pretrain", "rate"
KILLED_RUN = "killed_run"       # the kill-and-resume run's figures: informative, not the rate target
VP9 = "vp9"
# Targets of the GPU path (the bounds).
PIPELINE_VS_TRAINER = 0.95       # pretraining clips/s / training step alone
MAX_DATA_WAIT = 0.10             # share of the step spent waiting for the loader (GPU busy >= 90%)
FAME_TARGET = {"backend": "cupy", "size": 224, "batch": 64, "dtype": "uint8", "clips_per_s": 20_000}
PROFILE_STEPS, PROFILE_REPEATS = 10, 1
TRAINER_STEPS = 20
REHEARSAL_STEPS = 3
# The GPU tests of stage 1 and 2; stage 3 runs all the others.
STAGE_TESTS = {1: ("tests/fame",), 2: ("tests/pipelines", "tests/data")}
REHEARSAL_FAME = ["--backend", "numpy", "--sizes", "112", "--batches", "8", "--repeats", "1"]
# Packages each kind of step needs beyond the standard library.
TORCH_CUPY = ("torch", "cupy")
DALI_STACK = ("torch", "nvidia.dali", "av", "tqdm")
PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Step:
    """One check: its command, time limit and packages; what to read from its outputs afterwards;
    ``run``: a custom runner (the kill-and-resume, the facts). A step without a command on the
    CPU says why in ``cpu_skip`` and SKIPs in a rehearsal."""

    name: str
    argv: list[str]
    timeout_s: int
    needs: tuple[str, ...] = TORCH_CUPY
    figures: Callable[[str], dict] = lambda output: {}
    run: Callable[[Step, Layout], Result] | None = None
    cpu_skip: str = ""


@dataclass
class Result:
    name: str
    status: str                  # PASS | FAIL | SKIP
    seconds: float
    detail: str = ""
    output: str = ""
    figures: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Where a stage writes: its report (``out``), its videos and runs (``work``); on the GPU or a
    CPU rehearsal of it (``rehearse``: the tiny workload, device=cpu)."""

    out: str
    work: str
    rehearse: bool = False

    @property
    def config(self) -> str:
        return TINY_CONFIG if self.rehearse else CONFIG

    @property
    def runs(self) -> str:
        return os.path.join(self.work, "runs")

    def data(self, codec: str = "") -> str:
        return os.path.join(self.work, "videos", "gpu_check" + (f"_{codec}" if codec else ""))

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)


def python() -> list[str]:
    return [sys.executable]


def child_env() -> dict:
    """This process's environment, W&B off (the report is the record)."""
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def run_command(argv: list[str], timeout_s: float) -> tuple[int, str, float]:
    """(exit code, stdout + stderr, seconds); a command past its limit is killed and reads as 124."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout_s, env=child_env())
        return proc.returncode, proc.stdout, time.perf_counter() - started
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout or ""
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        return 124, output + f"\n[killed after {timeout_s:.0f} s]", time.perf_counter() - started


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def missing_packages(names: tuple[str, ...]) -> list[str]:
    """The packages of ``names`` that this Python cannot import (found by spec, not imported)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):      # a parent package missing
            found = False
        if not found:
            missing.append(name)
    return missing


def gpu_visible() -> bool:
    try:
        return torch.cuda.is_available()
    except Exception:       # a torch whose CUDA cannot start: no usable GPU
        return False


# ------------------------------------------------------------ figures ----
def fame_figures(path: str) -> Callable[[str], dict]:
    def read(output: str) -> dict:
        report = read_json(path)
        if not report:
            return {}
        return {"fame_bench": [{k: r[k] for k in ("backend", "size", "batch", "dtype", "clips_per_s")}
                               for r in report["results"]]}
    return read


def profile_figures(run_dir: str) -> Callable[[str], dict]:
    def read(output: str) -> dict:
        result = read_json(os.path.join(run_dir, "profile.json"))
        if not result:
            return {}
        return {"profile": {"stages": {r["stage"]: round(r["clips_per_s"], 1) for r in result["stages"]},
                            "baseline": round(result["baseline"]["clips_per_s"], 1),
                            "fame_op": result["fame_op"] and round(result["fame_op"]["clips_per_s"], 1),
                            "gpu_memory_gib": result["stages"][-1].get("gpu_memory_gib")}}
    return read


def trainer_figures(path: str) -> Callable[[str], dict]:
    def read(output: str) -> dict:
        result = read_json(path)
        return {"trainer_clips_per_s": result["clips_per_s"]} if result else {}
    return read


def pytest_figures(output: str) -> dict:
    """{"passed": n, "skipped": n, ...} from pytest's last summary line."""
    lines = [line for line in output.splitlines() if PYTEST_SUMMARY.search(line)]
    return {kind.rstrip("s") if kind.startswith("error") else kind: int(n)
            for n, kind in PYTEST_SUMMARY.findall(lines[-1])} if lines else {}


def logged_steps(run_dir: str) -> list[dict]:
    """The training rows of a run's metrics.jsonl (those with a loss and a rate); none when it has none."""
    try:
        return [row for row in read_metrics(run_dir) if "loss" in row and "clips_per_s" in row]
    except (OSError, ValueError):
        return []


def rate_figures(rows: list[dict], prefix: str = "pretrain") -> dict:
    """Median clips/s and data wait over the logged windows, the first (cuDNN's search, the
    pipeline's start) left out, named <prefix>_clips_per_s, ... ("pretrain" is what the targets read)."""
    steady = rows[1:] or rows
    if not steady:
        return {}
    return {f"{prefix}_clips_per_s": statistics.median(r["clips_per_s"] for r in steady),
            f"{prefix}_data_wait": statistics.median(r["data_wait"] for r in steady),
            f"{prefix}_gpu_used_gib": max((r.get("gpu_used_gb") or 0.0) for r in steady) or None}


# ------------------------------------------------------------ custom steps ----
def command_output(argv: list[str]) -> str:
    """What a command printed, or why it could not run (never raises)."""
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=FACTS_TIMEOUT_S)
        return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"{argv[0]}: {error}"


def machine_facts() -> dict:
    """The host (cores, Python, torch, CuPy), the GPU and its driver (nvidia-smi), whether NVDEC's
    driver library loads, and the decoder lines of `nvidia-smi -q`."""
    facts = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
    try:
        facts["torch"] = f"{torch.__version__} (CUDA {torch.version.cuda})"
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            facts["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, compute {props.major}.{props.minor}"
    except Exception as error:      # the facts are still worth having
        facts["torch"] = f"not usable: {error}"
    for module in ("cupy", "nvidia.dali", "av"):
        facts[module] = (importlib.import_module(module).__version__ if not missing_packages((module,))
                         else "not installed")
    try:
        ctypes.CDLL(LIBNVCUVID)
        facts["libnvcuvid"] = "loads"
    except OSError as error:
        facts["libnvcuvid"] = f"does not load: {error}"
    if shutil.which("nvidia-smi"):
        facts["nvidia-smi"] = command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                                              "clocks.max.sm,pcie.link.gen.max", "--format=csv,noheader"])
        query = command_output(["nvidia-smi", "-q"])
        facts["decoder"] = [line.strip() for line in query.splitlines() if "ecoder" in line or "NVDEC" in line]
    else:
        facts["nvidia-smi"] = "not found"
    return facts


def facts_step(step: Step, layout: Layout) -> Result:
    started = time.perf_counter()
    facts = machine_facts()
    found = "gpu" in facts or layout.rehearse
    detail = facts.get("gpu", "no GPU visible") + f"; libnvcuvid {facts['libnvcuvid']}; {facts['cores']} cores"
    return Result(step.name, PASS if found else FAIL, time.perf_counter() - started, detail,
                  json.dumps(facts, indent=1), {"facts": facts})


def write_long_list(step: Step, layout: Layout) -> Result:
    """The workload's videos (generated by the step's command), then its training list with every
    video LIST_REPEATS times: an epoch long enough to time steps without a checkpoint."""
    code, output, seconds = run_command(step.argv, step.timeout_s)
    if code != 0:
        return Result(step.name, FAIL, seconds, f"exit {code}", output)
    root = layout.data()
    entries = read_file_list(os.path.join(root, TRAIN_LIST))
    write_file_list(os.path.join(root, LONG_LIST), [(e.relpath, e.label) for e in entries] * LIST_REPEATS)
    return Result(step.name, PASS, seconds, f"{len(entries)} training videos, listed {LIST_REPEATS} times in "
                  f"{LONG_LIST}", output)


def run_steps(output: str) -> int:
    """The run's total steps, from the shape runners.pretrain prints at its start (-1 if absent)."""
    shape = RUN_SHAPE.search(output)
    return int(shape[1]) * int(shape[2]) if shape else -1


def checkpoint_step(path: str) -> int:
    """The step a last.pt holds, -1 where there is none or it cannot be read."""
    try:
        return int(ckpt.load_checkpoint(path)["step"])
    except (OSError, ValueError, KeyError):
        return -1


def fresh_run(step: Step, layout: Layout) -> Result:
    """The step's run from its first step: a run directory left by an earlier check is removed
    (it would only resume)."""
    shutil.rmtree(run_dir_of(step.argv), ignore_errors=True)
    return run_plain(step)


def run_dir_of(argv: list[str]) -> str:
    """<run.dir>/<run.name> of a runner's command line."""
    values = dict(arg.split("=", 1) for arg in argv if arg.startswith(("run.dir=", "run.name=")))
    return os.path.join(values["run.dir"], values["run.name"])


def pretrain_and_resume(step: Step, layout: Layout) -> Result:
    """Start the run, kill it (SIGKILL) once its first checkpoint is on disk, rerun it: the rerun
    must resume from a checkpoint at least that far and finish every step of the run."""
    run_dir = run_dir_of(step.argv)
    last = os.path.join(ckpt.checkpoint_dir(run_dir), ckpt.LAST)
    shutil.rmtree(run_dir, ignore_errors=True)      # a run left by an earlier check would only resume
    started = time.perf_counter()
    proc = subprocess.Popen(step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=child_env())
    killed = False
    while proc.poll() is None and time.perf_counter() - started < step.timeout_s:
        if os.path.isfile(last):       # written by rename: once there, it is whole
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(POLL_S)
    timed_out = proc.poll() is None and not killed
    if timed_out:
        proc.kill()
    first_output = proc.communicate()[0] or ""
    killed_at = checkpoint_step(last)
    if not killed:
        why = (f"wrote no checkpoint within {step.timeout_s} s" if timed_out
               else "ended before a checkpoint could be killed" if proc.returncode == 0
               else f"failed (exit {proc.returncode})")
        return Result(step.name, FAIL, time.perf_counter() - started, "the first run " + why, first_output)
    left = max(1.0, step.timeout_s - (time.perf_counter() - started))
    code, output, _ = run_command(step.argv, left)
    final, total = checkpoint_step(last), run_steps(first_output)
    resumed_at = [int(found) for found in RESUMED.findall(output)]
    resumed = bool(resumed_at) and resumed_at[0] >= killed_at
    ok = code == 0 and resumed and final == total
    detail = (f"killed with a checkpoint at step {killed_at}; rerun exit {code}, "
              f"{f'resumed at step {resumed_at[0]}' if resumed else 'did NOT resume from it'}, "
              f"ended at step {final} of {total}")
    return Result(step.name, PASS if ok else FAIL, time.perf_counter() - started, detail,
                  first_output[-TAIL_CHARS // 2:] + "\n--- rerun ---\n" + output,
                  rate_figures(logged_steps(run_dir), KILLED_RUN))   # its windows hold checkpoints: not a target


# ------------------------------------------------------------ the stages ----
def stage_plan(stage: int, layout: Layout) -> list[Step]:
    """The steps of ``stage`` for ``layout``, in order, with their limits (STAGE_BUDGET_S in all
    at most; tests/runners/test_gpu_check.py holds every stage to it)."""
    py, cfg, cpu = python(), layout.config, layout.rehearse
    runs = f"run.dir={layout.runs}"
    device = ["device=cpu"] if cpu else []
    workload = [f"data.root={layout.data()}", *device]       # overrides: after a runner's options
    long_epoch = [f"data.train_list={LONG_LIST}"]
    pytest = [*py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider"]
    fame_json, trainer_json = layout.path("bench_fame.json"), layout.path("bench_trainer.json")
    def trainer(timeout_s: int) -> Step:
        return Step("training step alone (bench-trainer)",
                    [*py, "-m", "measure.bench_trainer", "--config", cfg, "--steps",
                     str(REHEARSAL_STEPS if cpu else TRAINER_STEPS), "--warmup", "1" if cpu else "5",
                     "--json", trainer_json, *workload], timeout_s, figures=trainer_figures(trainer_json))
    data = Step("videos: the workload's (H.264 320x240; VP9 in a rehearsal)",
                [*py, "-m", "runners.prepare", "synthetic", "--config", cfg, f"data.root={layout.data()}",
                 "--workers", str(os.cpu_count() or 1)], 60, DALI_STACK, run=write_long_list)

    def profile(name: str, *overrides: str, timeout_s: int, cpu_skip: str = "") -> Step:
        run_dir = os.path.join(layout.runs, name)
        return Step(f"profile: {name}", [*py, "-m", "measure.profile", "--config", cfg, "--steps", str(PROFILE_STEPS),
                                        "--repeats", str(PROFILE_REPEATS), *workload, *overrides, runs,
                                        f"run.name={name}"], timeout_s, DALI_STACK,
                    figures=profile_figures(run_dir), cpu_skip=cpu_skip)

    if stage == 1:
        return [
            Step("machine facts", [], 20, ("torch",), run=facts_step),
            Step("CuPy FAME = NumPy (pytest -m gpu tests/fame)", [*pytest, *STAGE_TESTS[1]], 150,
                 figures=pytest_figures),
            Step("FAME op (bench-fame)", [*py, "-m", "measure.bench_fame", "--json", fame_json,
                                          *(REHEARSAL_FAME if cpu else ["--backend", "cupy"])], 120,
                 figures=fame_figures(fame_json)),
            trainer(120),
        ]
    if stage == 2:
        pretrain = [*py, "-m", "runners.pretrain", "--config", cfg, *workload, *long_epoch, runs,
                    f"run.name={PRETRAIN_RUN}"]
        return [
            Step("doctor", [*py, "-m", "runners.doctor", "--config", cfg], 60, DALI_STACK),
            Step("GPU tests of the pipelines and the data (pytest -m gpu)", [*pytest, *STAGE_TESTS[2]],
                 100, DALI_STACK, figures=pytest_figures),
            data,
            Step("pretrain, killed at its first checkpoint, resumed to the end", pretrain, 140, DALI_STACK,
                 run=pretrain_and_resume),
            profile("h264-nvdec", *([] if cpu else ["data.decode=gpu"]), timeout_s=60),
        ]
    if stage == 3:
        vp9 = [f"data.root={layout.data(VP9)}", f"data.synthetic.codec={VP9}"]
        rate = [*py, "-m", "runners.pretrain", "--config", cfg, *workload, *long_epoch, "train.epochs=1",
                "train.checkpoint_steps=0",
                "train.log_every=5", runs, f"run.name={RATE_RUN}"]
        rate_dir = os.path.join(layout.runs, RATE_RUN)
        no_nvdec = "NVDEC needs a GPU (the CPU decodes this data in stage 2's profile)"
        return [
            data,
            Step("videos: VP9 320x240", [*py, "-m", "runners.prepare", "synthetic", "--config", cfg, *vp9,
                                         "--workers", str(os.cpu_count() or 1)], 60, DALI_STACK,
                 cpu_skip="the rehearsal's videos are VP9 already"),
            trainer(50),
            Step("pretraining rate (one epoch, no checkpoint inside)", rate, 80, DALI_STACK,
                 figures=lambda output: rate_figures(logged_steps(rate_dir)), run=fresh_run),
            profile("vp9-nvdec", *vp9, "data.decode=gpu", timeout_s=45, cpu_skip=no_nvdec),
            profile("vp9-hybrid", *vp9, "data.decode=cpu", timeout_s=45, cpu_skip="hybrid decoding is the GPU graph "
                    "after a CPU decode; a CPU run has no GPU graph"),
            Step("the other GPU tests (pytest -m gpu, but those of stages 1 and 2)",
                 [*pytest, "tests", *(f"--ignore={path}" for paths in STAGE_TESTS.values() for path in paths)], 80,
                 DALI_STACK, figures=pytest_figures),
        ]
    raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


def run_step(step: Step, layout: Layout, limit_s: float) -> Result:
    """One step under ``limit_s`` seconds (its own limit or what is left of the stage's budget):
    SKIP where its packages do not import, or in a rehearsal where it has no CPU form."""
    missing = missing_packages(step.needs)
    if missing:
        return Result(step.name, SKIP, 0.0, f"needs {', '.join(missing)}, which do(es) not import here "
                                            "(docs/gpu.md: bringing DALI)")
    if layout.rehearse and step.cpu_skip:
        return Result(step.name, SKIP, 0.0, f"on the CPU: {step.cpu_skip}")
    step.timeout_s = int(min(step.timeout_s, limit_s))
    if step.run is not None:
        return step.run(step, layout)
    return run_plain(step)


def run_plain(step: Step) -> Result:
    """The step's command; PASS on exit 0, SKIP when it ran tests and every one skipped."""
    code, output, seconds = run_command(step.argv, step.timeout_s)
    figures = step.figures(output)
    status = PASS if code == 0 else FAIL
    if status == PASS and figures.get("skipped") and not figures.get("passed"):
        status = SKIP                  # every test skipped: no GPU here
    return Result(step.name, status, seconds, f"exit {code}", output, figures)


# ------------------------------------------------------------ the report ----
def targets(figures: dict) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met: True/False/None when not measured)."""
    rows = []
    trainer, pipeline = figures.get("trainer_clips_per_s"), figures.get("pretrain_clips_per_s")
    bound = f">= {PIPELINE_VS_TRAINER:.2f} x the training step alone"
    if trainer and pipeline:
        ratio = pipeline / trainer
        rows.append((f"pretraining clips/s {bound}", f"{pipeline:.1f} / {trainer:.1f} = {ratio:.2f}",
                     ratio >= PIPELINE_VS_TRAINER))
    else:
        rows.append((f"pretraining clips/s {bound}", "not measured", None))
    wait = figures.get("pretrain_data_wait")
    rows.append((f"data wait <= {MAX_DATA_WAIT:.0%} of the step (GPU busy >= {1 - MAX_DATA_WAIT:.0%})",
                 "not measured" if wait is None else f"{wait:.1%}", None if wait is None else wait <= MAX_DATA_WAIT))
    fame_rows = [r for r in figures.get("fame_bench", []) if all(r[k] == FAME_TARGET[k] for k in
                                                               ("backend", "size", "batch", "dtype"))]
    name = (f"CuPy FAME op, 16x{FAME_TARGET['size']}x{FAME_TARGET['size']} {FAME_TARGET['dtype']} batch "
            f"{FAME_TARGET['batch']} >= {FAME_TARGET['clips_per_s']:,} clips/s")
    rows.append((name, f"{fame_rows[0]['clips_per_s']:,.0f} clips/s" if fame_rows else "not measured",
                 fame_rows[0]["clips_per_s"] >= FAME_TARGET["clips_per_s"] if fame_rows else None))
    return rows


def verdict(met: bool | None) -> str:
    return {True: PASS, False: FAIL, None: "n/a"}[met]


def stage_figures(results: list[Result]) -> dict:
    """Every step's figures in one dict."""
    return {name: value for r in results for name, value in r.figures.items()}


def format_report(stage: int, results: list[Result], when: str, where: str, planned: list[str],
                  rehearse: bool) -> str:
    figures = stage_figures(results)
    done = {r.name for r in results}
    kind = "CPU rehearsal" if rehearse else "GPU"
    lines = [f"# GPU check, stage {stage} ({kind}), {when}", "", f"Machine: {where}", "",
             "| step | result | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {r.name} | {r.status} | {r.seconds:.0f} | {r.detail} |" for r in results]
    lines += [f"| {name} | not reached | | |" for name in planned if name not in done]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {measured} | {verdict(met)} |" for name, measured, met in targets(figures)]
    lines += ["", "## Figures", "", "```json", json.dumps({r.name: r.figures for r in results if r.figures},
                                                           indent=1, default=str), "```", "",
              "## Output of each step (tail)"]
    for r in results:
        lines += ["", f"### {r.name}", "", "```", r.output[-TAIL_CHARS:].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def machine() -> str:
    facts = machine_facts()
    return f"{facts.get('gpu', 'no GPU visible')}; torch {facts['torch']}; {facts['cores']} CPU cores; " \
           f"Python {facts['python']}"


def write_report(out: str, stage: int, results: list[Result], planned: list[str], where: str,
                 rehearse: bool) -> str:
    """stage<N>.md and stage<N>.json in ``out``, each written whole (a rename): a cut leaves the last one."""
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    base = os.path.join(out, f"stage{stage}")
    record = {"stage": stage, "rehearsal": rehearse, "when": when, "machine": where, "planned": planned,
              "steps": [{**asdict(r), "output": r.output[-TAIL_CHARS:]} for r in results],
              "targets": [{"target": t, "measured": m, "met": met} for t, m, met in targets(stage_figures(results))]}
    write_atomic(base + ".json", lambda f: json.dump(record, f, indent=1, default=str), mode="w")
    report = format_report(stage, results, when, where, planned, rehearse)
    write_atomic(base + ".md", lambda f: f.write(report), mode="w")
    return base + ".md"


def run_stage(stage: int, layout: Layout, only: list[str] | None = None,
              budget_s: float = STAGE_BUDGET_S) -> list[Result]:
    """Every step of the stage (or those whose name starts with one of ``only``) within
    ``budget_s`` seconds, the report rewritten after each."""
    steps = [s for s in stage_plan(stage, layout) if not only or any(s.name.startswith(o) for o in only)]
    planned, where = [s.name for s in steps], machine()
    os.makedirs(layout.out, exist_ok=True)
    os.makedirs(layout.work, exist_ok=True)
    started, results = time.perf_counter(), []
    write_report(layout.out, stage, results, planned, where, layout.rehearse)
    for step in steps:
        left = budget_s - (time.perf_counter() - started)
        print(f"gpu-check stage {stage}: {step.name} ...", flush=True)
        if left < MIN_STEP_S:
            result = Result(step.name, SKIP, 0.0, f"the stage's budget of {budget_s:.0f} s is spent")
        else:
            result = run_step(step, layout, left)
        results.append(result)
        write_report(layout.out, stage, results, planned, where, layout.rehearse)   # before the line that says so
        print(f"gpu-check stage {stage}: {step.name}: {result.status} in {result.seconds:.0f} s ({result.detail})",
              flush=True)
    return results


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", type=int, choices=STAGES, required=True, help="which stage (docs/gpu.md)")
    p.add_argument("--out", required=True, help="folder of the stage's report (stage<N>.md, stage<N>.json), "
                                                "nothing else")
    p.add_argument("--work", default=DEFAULT_WORK, help="folder of the videos, runs and figures (default: %(default)s)")
    p.add_argument("--rehearse", action="store_true", help="run the stage on the CPU with the tiny workload")
    p.add_argument("--only", action="append", metavar="STEP",
                   help="run only the steps whose name starts with this (repeatable)")
    a = p.parse_args(argv)
    layout = Layout(a.out, a.work, a.rehearse)
    if not a.rehearse and not gpu_visible():
        p.error("no CUDA GPU is visible here; a stage runs on a GPU machine (`make doctor` says what this one "
                "lacks), or on the CPU with --rehearse")
    names = [s.name for s in stage_plan(a.stage, layout)]
    if a.only and not any(n.startswith(o) for n in names for o in a.only):
        p.error(f"--only {a.only} matches no step of stage {a.stage}; its steps are: {'; '.join(names)}")
    results = run_stage(a.stage, layout, a.only)
    print(format_report(a.stage, results, "now", machine(), [r.name for r in results],
                        a.rehearse).split("## Figures")[0])
    print(f"report: {os.path.join(a.out, f'stage{a.stage}.md')}")
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(errors.run_command(main))
