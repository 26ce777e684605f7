"""The whole GPU verification in one command: `python -m runners.gpu_check [--out DIR]` (`make gpu-check`).

Runs, one after another, each in its own process with a time limit, and writes one
markdown report (<out>/report.md) with every step's verdict, time, figures and the tail
of what it printed:

1. doctor: the GPU stack loads and works (runners.doctor);
2. the GPU tests (pytest -m gpu);
3. the FAME op on CuPy, batch 8/32/64 at 16x112x112 and 16x224x224 (runners.bench_fame);
4. the pretraining pipeline profile with device=gpu, batch 64, on 320x240 H.264 videos decoded
   on the GPU, and on 320x240 VP9 videos decoded on the GPU and on the CPU (hybrid: DALI's
   CPU decoder reads VP8/VP9/MJPEG only, so hybrid decoding is profiled on VP9);
5. the training step alone of the same model, clips, batch and AMP as step 6 (runners.bench_trainer:
   R(2+1)D-18, 16x112x112, batch 64, bf16);
6. 50 pretraining steps with device=gpu through the real pipeline (configs/gpu_check.yaml),
   killed (SIGKILL) at its first checkpoint and rerun: it must resume there and finish.

The report closes with the GPU targets, each measured against its bound: the pipeline
feeds the trainer (pretraining clips/s >= 0.95 of the step alone, data wait <= 10% of the
step) and the CuPy FAME op at 16x224x224 batch 64 reaches 20,000 clips/s. Exit code 0 when
every step passed (the targets are reported, not enforced), 1 otherwise.

It runs with whatever Python starts it: a virtual environment, or (`make gpu-check NOVENV=1`)
a machine's own Python that holds torch and CuPy, with DALI and the other wheels on PYTHONPATH.
"""
from __future__ import annotations

import argparse
import datetime
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
from dataclasses import dataclass, field
from typing import Callable, Optional

from engine import errors

CONFIG = "configs/gpu_check.yaml"
DEFAULT_OUT = "runs/gpu-check"
REPORT = "report.md"
VP9_ROOT = "videos/gpu_check_vp9"
PRETRAIN_RUN = "pretrain"
TAIL_CHARS = 4000
POLL_S = 0.2
# What runners.pretrain prints: its shape at the start, the step it resumed from.
RUN_SHAPE = re.compile(r"(\d+) steps/epoch x (\d+) epochs")
RESUMED = re.compile(r"resumed from \S+ at step (\d+)")
# Targets of the GPU path (the bounds).
PIPELINE_VS_TRAINER = 0.95        # pretraining clips/s / training step alone
MAX_DATA_WAIT = 0.10              # share of the step spent waiting for the loader (GPU busy >= 90%)
FAME_TARGET = {"backend": "cupy", "size": 224, "batch": 64, "dtype": "uint8", "clips_per_s": 20_000}
PROFILE_STEPS, PROFILE_REPEATS = 10, 1
TRAINER_STEPS = 20


@dataclass
class Step:
    """One check: a command, its time limit, and what to read from its outputs afterwards."""

    name: str
    argv: list[str]
    timeout_s: int
    figures: Callable[[str], dict] = lambda out: {}
    run: Optional[Callable[["Step", str], "Result"]] = None     # a custom runner (the kill-and-resume)


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    output: str = ""
    figures: dict = field(default_factory=dict)


def python() -> list[str]:
    return [sys.executable]


def run_command(argv: list[str], timeout_s: float) -> tuple[int, str, float]:
    """(exit code, stdout + stderr, seconds); a command past its limit is killed and reads as 124."""
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=timeout_s, env=child_env())
        return proc.returncode, proc.stdout, time.perf_counter() - started
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode(errors="replace") if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        return 124, output + f"\n[killed after {timeout_s:.0f} s]", time.perf_counter() - started


def child_env() -> dict:
    """This process's environment, W&B off (the report is the record)."""
    return {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


# ------------------------------------------------------------ figures ----
def fame_figures(out: str) -> dict:
    report = read_json(os.path.join(out, "bench_fame.json"))
    if not report:
        return {}
    rows = [r for r in report["results"] if r["backend"] == "cupy"]
    return {"fame_cupy": [{k: r[k] for k in ("size", "batch", "dtype", "clips_per_s")} for r in rows]}


def profile_figures(name: str) -> Callable[[str], dict]:
    def read(out: str) -> dict:
        result = read_json(os.path.join(out, "runs", name, "profile.json"))
        if not result:
            return {}
        return {"profile": {"stages": {r["stage"]: round(r["clips_per_s"], 1) for r in result["stages"]},
                            "baseline": round(result["baseline"]["clips_per_s"], 1),
                            "fame_op": result["fame_op"] and round(result["fame_op"]["clips_per_s"], 1),
                            "gpu_memory_gib": result["stages"][-1].get("gpu_memory_gib")}}
    return read


def trainer_figures(out: str) -> dict:
    result = read_json(os.path.join(out, "bench_trainer.json"))
    return {"trainer_clips_per_s": result["clips_per_s"]} if result else {}


def logged_steps(run_dir: str) -> list[dict]:
    """The training rows of a run's metrics.jsonl (those with a loss and a rate); none when it has none."""
    from engine.logger import read_metrics
    try:
        return [row for row in read_metrics(run_dir) if "loss" in row and "clips_per_s" in row]
    except (OSError, ValueError):
        return []


def pretrain_figures(rows: list[dict]) -> dict:
    """Median clips/s and data wait over the logged steps, the first (cuDNN's search, the
    pipeline's start) left out."""
    steady = rows[1:] or rows
    if not steady:
        return {}
    return {"pretrain_clips_per_s": statistics.median(r["clips_per_s"] for r in steady),
            "pretrain_data_wait": statistics.median(r["data_wait"] for r in steady),
            "pretrain_gpu_used_gib": max((r.get("gpu_used_gb") or 0.0) for r in steady) or None}


# ------------------------------------------------------------ kill and resume ----
def run_steps(output: str) -> int:
    """The run's total steps, from the shape runners.pretrain prints at its start (-1 if absent)."""
    shape = RUN_SHAPE.search(output)
    return int(shape[1]) * int(shape[2]) if shape else -1


def checkpoint_step(path: str) -> int:
    """The step a last.pt holds, -1 where there is none or it cannot be read."""
    from engine import checkpoint as ckpt
    try:
        return int(ckpt.load_checkpoint(path)["step"])
    except (OSError, ValueError, KeyError):
        return -1


def pretrain_and_resume(step: Step, out: str) -> Result:
    """Start the run, kill it (SIGKILL) once its first checkpoint is on disk, rerun it: the rerun
    must resume from a checkpoint at least that far and finish every step of the run."""
    from engine import checkpoint as ckpt
    run_dir = os.path.join(out, "runs", PRETRAIN_RUN)
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
        return Result(step.name, False, time.perf_counter() - started, "the first run " + why, first_output)
    left = max(1.0, step.timeout_s - (time.perf_counter() - started))
    code, output, _ = run_command(step.argv, left)
    rows = logged_steps(run_dir)
    final, total = checkpoint_step(last), run_steps(first_output)
    resumed_at = [int(found) for found in RESUMED.findall(output)]
    resumed = bool(resumed_at) and resumed_at[0] >= killed_at
    ok = code == 0 and resumed and final == total
    detail = (f"killed with a checkpoint at step {killed_at}; rerun exit {code}, "
              f"{f'resumed at step {resumed_at[0]}' if resumed else 'did NOT resume from it'}, "
              f"ended at step {final} of {total}")
    return Result(step.name, ok, time.perf_counter() - started, detail,
                  first_output[-TAIL_CHARS // 2:] + "\n--- rerun ---\n" + output, pretrain_figures(rows))


# ------------------------------------------------------------ the plan ----
def plan(out: str, config: str = CONFIG) -> list[Step]:
    """The steps of the verification, in order, with their time limits (under 8 minutes in all
    on one GPU with the default config; the limits are the worst case)."""
    py = python()
    runs = f"run.dir={os.path.join(out, 'runs')}"
    vp9 = [f"data.root={VP9_ROOT}", "data.synthetic.codec=vp9"]
    profile = [*py, "-m", "runners.profile", "--config", config, "--steps", str(PROFILE_STEPS),
               "--repeats", str(PROFILE_REPEATS), runs]
    return [
        Step("doctor", [*py, "-m", "runners.doctor", "--config", config], 120),
        Step("gpu tests", [*py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"], 240),
        Step("FAME op on CuPy", [*py, "-m", "runners.bench_fame", "--backend", "cupy",
                                 "--json", os.path.join(out, "bench_fame.json")], 120, fame_figures),
        Step("profile: H.264, GPU decode", [*profile, "run.name=profile-h264-gpu", "data.decode=gpu"], 150,
             profile_figures("profile-h264-gpu")),
        Step("profile: VP9, GPU decode", [*profile, "run.name=profile-vp9-gpu", "data.decode=gpu", *vp9], 150,
             profile_figures("profile-vp9-gpu")),
        Step("profile: VP9, hybrid (CPU decode)", [*profile, "run.name=profile-vp9-hybrid", "data.decode=cpu", *vp9],
             150, profile_figures("profile-vp9-hybrid")),
        Step("training step alone", [*py, "-m", "runners.bench_trainer", "--config", config,
                                     "--steps", str(TRAINER_STEPS), "--json", os.path.join(out, "bench_trainer.json")],
             120, trainer_figures),
        Step("pretrain 50 steps, kill, resume", [*py, "-m", "runners.pretrain", "--config", config, runs,
                                                 f"run.name={PRETRAIN_RUN}"], 300, run=pretrain_and_resume),
    ]


def run_step(step: Step, out: str) -> Result:
    if step.run is not None:
        return step.run(step, out)
    code, output, seconds = run_command(step.argv, step.timeout_s)
    return Result(step.name, code == 0, seconds, f"exit {code}", output, step.figures(out))


# ------------------------------------------------------------ the report ----
def targets(figures: dict) -> list[tuple[str, str, Optional[bool]]]:
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
    fame_rows = [r for r in figures.get("fame_cupy", [])
                 if all(r[k] == FAME_TARGET[k] for k in ("size", "batch", "dtype"))]
    name = (f"CuPy FAME op, 16x{FAME_TARGET['size']}x{FAME_TARGET['size']} {FAME_TARGET['dtype']} batch "
            f"{FAME_TARGET['batch']} >= {FAME_TARGET['clips_per_s']:,} clips/s")
    rows.append((name, f"{fame_rows[0]['clips_per_s']:,.0f} clips/s" if fame_rows else "not measured",
                 fame_rows[0]["clips_per_s"] >= FAME_TARGET["clips_per_s"] if fame_rows else None))
    return rows


def gpu_visible() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:       # no torch, or a torch whose CUDA cannot start: no usable GPU
        return False


def machine() -> str:
    gpu = "no GPU visible"
    try:
        import torch
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            gpu = f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__} (CUDA {torch.version.cuda})"
    except Exception as error:      # the report must still be written
        gpu = f"torch not usable: {error}"
    return f"{gpu}; {os.cpu_count()} CPU cores; Python {platform.python_version()}"


def verdict(ok: Optional[bool]) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a"}[ok]


def format_report(results: list[Result], when: str, where: str) -> str:
    figures = {k: v for r in results for k, v in r.figures.items()}
    lines = [f"# GPU check, {when}", "", f"Machine: {where}", "",
             "| step | result | seconds | detail |", "|---|---|---:|---|"]
    lines += [f"| {r.name} | {verdict(r.ok)} | {r.seconds:.0f} | {r.detail} |" for r in results]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {measured} | {verdict(met)} |" for name, measured, met in targets(figures)]
    lines += ["", "## Figures", "", "```json", json.dumps({r.name: r.figures for r in results if r.figures}, indent=1),
              "```", "", "## Output of each step (tail)"]
    for r in results:
        lines += ["", f"### {r.name}", "", "```", r.output[-TAIL_CHARS:].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="folder of the report and of every step's runs")
    p.add_argument("--config", default=CONFIG, help="the pretraining workload (default: %(default)s)")
    p.add_argument("--only", action="append", metavar="STEP",
                   help="run only the steps whose name starts with this (repeatable)")
    a = p.parse_args(argv)
    if not gpu_visible():
        p.error("no CUDA GPU is visible here, and every step but the report needs one; run it on a machine "
                "with a GPU (`make doctor` says what this one lacks)")
    os.makedirs(a.out, exist_ok=True)
    steps = [s for s in plan(a.out, a.config) if not a.only or any(s.name.startswith(o) for o in a.only)]
    if not steps:
        p.error(f"--only {a.only} matches no step; the steps are: {', '.join(s.name for s in plan(a.out))}")
    results = []
    for step in steps:
        print(f"gpu-check: {step.name} ...", flush=True)
        result = run_step(step, a.out)
        print(f"gpu-check: {step.name}: {verdict(result.ok)} in {result.seconds:.0f} s ({result.detail})", flush=True)
        results.append(result)
    path = os.path.join(a.out, REPORT)
    report = format_report(results, datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), machine())
    with open(path, "w", encoding="utf-8") as f:
        f.write(report)
    print(report.split("## Figures")[0])
    print(f"report: {path}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(errors.run_command(main))
