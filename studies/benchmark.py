"""Background-bias benchmark: `python -m studies.benchmark --config configs/benchmark.yaml --seeds 0,1,2`.

On the synthetic dataset of the config (background correlated with the class
in the training split, independent of it in the test split) every seed
pretrains MoCo without FAME (fame.variant=none, the baseline) and MoCo + FAME
(the config's own fame settings, its mask variant included) with the same seed,
budget and backbone, then linear-probes (trained on the training split, tested
on the background-shifted test split) and retrieves
(test videos query the training videos) with each: one `studies.trial` per
method and seed, each its own process. Prints and writes a table with a row
per method (mean ± std over seeds) and a row for the gap FAME - baseline (per
seed, then mean ± std), plus the machine and the time taken. Its columns:
caam/energy_in_box_pct (on synthetic data: the share of the class-agnostic
activation map inside the moving object's box), linear/video_top1,
linear_unbiased/video_top1 (with eval.unbiased_probe, off by default in
configs/benchmark.yaml: the control, the same probe trained on
class-independent backgrounds; studies.trial), retrieval/R@1 and pretext/margin (how far
below ln(K+1) the pretext loss stayed after the run's first tenth: near 0, the embedding
drifted toward a constant somewhere in the run; engine.reference). With
``--control CONFIG`` every seed also runs `runners.classify` on that config (e.g.
configs/small_objects_control.yaml: the backbone trained with labels from random
init on class-independent backgrounds), a row of its own with control/video_top1:
what the backbone can learn of the motion at all. Files:
<run.dir>/<name>.md and <run.dir>/<name>.json, name = benchmark-<time>.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from engine import config as C
from engine.errors import run_command
from engine.evaluation import RESULTS_FILE
from measure.machine import cpu_model
from studies.report import markdown_table, summarize
from studies.sweep import expand_grid, parse_seeds, run_trials
from studies.trial import TRIAL_FILE

VARIANT_KEY = "fame.variant"
BASELINE, FAME = "none", "fame"
GAP_LABEL = "gap (FAME - baseline)"
TABLE_METRICS = ("linear/video_top1", "retrieval/R@1", "linear_unbiased/video_top1", "caam/energy_in_box_pct",
                 "pretext/margin")
CONTROL_LABEL = "supervised control"
CONTROL_METRIC = "control/video_top1"


def benchmark_sweep(name: str, variant: str = FAME) -> dict:
    """The two methods as a one-parameter grid (the format of studies.sweep): the baseline and
    FAME with the mask ``variant``."""
    return {"name": name, "parameters": {VARIANT_KEY: {"values": [BASELINE, variant]}}}


def method_label(variant: str) -> str:
    """A table's name for the method of a fame.variant value."""
    if variant == BASELINE:
        return "MoCo baseline"
    return "MoCo + FAME" if variant == FAME else f"MoCo + FAME ({variant} mask)"


def machine_description(device: str) -> str:
    """CPU model and core count (and the GPU when the runs use one)."""
    model = cpu_model()
    text = f"{model}, {os.cpu_count()} cores"
    if device != "cpu" and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def read_trial_records(run_dir: str, trials: list) -> list[dict]:
    """The trial.json of every trial, in order; a missing one raises, naming it."""
    records = []
    for t in trials:
        path = os.path.join(run_dir, t.name, TRIAL_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"trial {t.name} left no {path}")
        with open(path) as f:
            records.append(json.load(f))
    return records


def seed_gaps(records: list[dict], metrics=TABLE_METRICS) -> dict:
    """Per metric: (mean, std, n) over seeds of FAME minus baseline (seeds with both methods only)."""
    by_seed: dict[int, dict] = {}
    for r in records:
        by_seed.setdefault(r["seed"], {})[r["params"][VARIANT_KEY]] = r["metrics"]
    gaps = {}
    for m in metrics:
        values = [fame[m] - pair[BASELINE][m] for pair in by_seed.values() if m in pair.get(BASELINE, {})
                  for variant, fame in pair.items() if variant != BASELINE and m in fame]
        if values:
            gaps[m] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
    return gaps


def benchmark_rows(records: list[dict], metrics=TABLE_METRICS) -> list[dict]:
    """Rows in studies.report's summary format: one per method, then the gap."""
    rows = []
    for s in summarize(records, [VARIANT_KEY]):
        rows.append({"params": {"method": method_label(s["params"][VARIANT_KEY])}, "seeds": s["seeds"],
                     "stats": {m: v for m, v in s["stats"].items() if m in metrics}})
    seeds = sorted({r["seed"] for r in records})
    rows.append({"params": {"method": GAP_LABEL}, "seeds": seeds, "stats": seed_gaps(records, metrics)})
    return rows


def control_run_name(name: str, seed: int) -> str:
    return f"{name}-control-s{seed}"


def run_controls(config: str, name: str, seeds: list[int], run_dir: str) -> list[int]:
    """`runners.classify --config config` once per seed, each its own process; the exit codes."""
    codes = []
    for seed in seeds:
        run = control_run_name(name, seed)
        print(f"[benchmark] start {run}", flush=True)
        codes.append(subprocess.run([sys.executable, "-m", "runners.classify", "--config", config, f"seed={seed}",
                                     f"run.name={run}", f"run.dir={run_dir}"]).returncode)
    return codes


def control_row(run_dir: str, name: str, seeds: list[int]) -> dict:
    """The control's row in studies.report's summary format: video top-1 of every seed's results.json."""
    values = []
    for seed in seeds:
        path = os.path.join(run_dir, control_run_name(name, seed), RESULTS_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"control run of seed {seed} left no {path}")
        with open(path) as f:
            values.append(json.load(f)["metrics"]["video_top1"])
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"params": {"method": CONTROL_LABEL}, "seeds": list(seeds),
            "stats": {CONTROL_METRIC: (statistics.fmean(values), std, len(values))}}


def write_outputs(out_base: str, record: dict, table: str) -> tuple[str, str]:
    md_path, json_path = f"{out_base}.md", f"{out_base}.json"
    with open(md_path, "w") as f:
        f.write(f"### Background-bias benchmark `{record['name']}`\n\n"
                f"config `{record['config']}`"
                f"{', control `' + record['control'] + '`' if record['control'] else ''}"
                f", seeds {','.join(map(str, record['seeds']))}"
                f"{', overrides ' + ' '.join(record['overrides']) if record['overrides'] else ''}\n\n{table}\n"
                f"linear: video top-1 (%) on the background-shifted test split; R@1: test videos retrieving "
                f"training videos; linear_unbiased (with eval.unbiased_probe): the linear probe trained on "
                f"class-independent backgrounds instead, a control; caam/energy_in_box_pct: the share (%) of the "
                f"backbone's class-agnostic activation map inside the moving object's box (a map with no "
                f"preference scores the box's share of the frame); pretext/margin: ln(K+1) less the highest mean "
                f"pretext loss over a tenth of the run's logged steps, the first tenth left out; {CONTROL_METRIC} "
                f"(with --control): video top-1 of the backbone trained with labels from random init on the "
                f"control config's data.\n"
                f"Machine: {record['machine']}; {record['seconds'] / 60:.1f} min in all.\n")
    with open(json_path, "w") as f:
        json.dump(record, f, indent=1)
    return md_path, json_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/benchmark.yaml", help="the benchmark experiment")
    p.add_argument("--seeds", type=parse_seeds, default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--name", help="run-name prefix and output file stem (default benchmark-<time>)")
    p.add_argument("--control", help="a supervised control config run by runners.classify once per seed "
                                     "(e.g. configs/small_objects_control.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value applied to both methods")
    a = p.parse_args(argv)
    name = a.name or f"benchmark-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    bad = [o for o in a.overrides if o.startswith((VARIANT_KEY + "=", "seed=", "run.name=", "pretrained="))]
    if bad:
        p.error(f"{bad[0]}: the benchmark sets {VARIANT_KEY}, seed and run.name itself and pretrains both methods")
    try:
        cfg = C.load_config(a.config, a.overrides)
        if not cfg.fame.merges:
            p.error(f"{a.config}: fame.variant is {cfg.fame.variant!r} and fame.background {cfg.fame.background!r}, "
                    f"so FAME merges nothing; the benchmark compares the config's FAME (fame.variant fame, seed, "
                    f"grid or gauss, a background other than 'none') with the baseline")
        trials = expand_grid(benchmark_sweep(name, cfg.fame.variant), a.config, a.seeds, a.overrides)
        if a.control:
            C.load_config(a.control)
    except C.ConfigError as e:
        p.error(str(e))

    started = time.perf_counter()
    trial_seconds, failed = {}, []
    for t in trials:
        t0 = time.perf_counter()
        if run_trials([t], a.config)[0]:
            failed.append(t.name)
        trial_seconds[t.name] = time.perf_counter() - t0
    if a.control:
        t0 = time.perf_counter()
        failed += [control_run_name(name, seed) for seed, code in
                   zip(a.seeds, run_controls(a.control, name, a.seeds, cfg.run.dir), strict=True) if code]
        trial_seconds["control"] = time.perf_counter() - t0
    seconds = time.perf_counter() - started
    if failed:
        print(f"[benchmark] {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1

    records = read_trial_records(cfg.run.dir, trials)
    rows = benchmark_rows(records)
    if a.control:
        rows.append(control_row(cfg.run.dir, name, a.seeds))
    table = markdown_table(rows, ["method"])
    record = {"name": name, "config": a.config, "control": a.control, "seeds": a.seeds, "overrides": a.overrides,
              "machine": machine_description(cfg.device), "seconds": seconds, "trial_seconds": trial_seconds,
              "rows": rows, "trials": records}
    md_path, json_path = write_outputs(os.path.join(cfg.run.dir, name), record, table)
    print(f"\n{table}\nmachine: {record['machine']}; {seconds / 60:.1f} min\nwrote {md_path} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
