"""Read an ablation without a server:
`python -m studies.report --sweep configs/sweeps/beta.yaml [--config X] [key=value ...]`.

Takes the --config and key=value overrides the sweep ran with (studies.sweep), so
it reads exactly that sweep's trials: those under run.dir named
<sweep>-<config stem>[-x<hash>]-..., not those of the same sweep file run on
another base config or with other overrides. Writes <run.dir>/<that prefix>.md
(a table: one row per setting, mean ± std over seeds for each metric) and .png
(bars with the seeds' spread).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
from collections import defaultdict

from engine import config as C
from engine.errors import run_command
from studies.sweep import DEFAULT_BASE_CONFIG, SEED_MARK, expand_grid, name_prefix, read_sweep

TRIAL_FILE = "trial.json"
PLOT_METRIC = "linear/video_top1"
ANY_SEED = 0    # trial_stems expands the grid with one seed and drops it from the names
# Trial metrics that count things (test videos, clips, gallery size) rather than measure them.
COUNT_SUFFIXES = ("/videos", "/clips", "/queries", "/gallery")
NATS_PREFIX, NATS_DECIMALS = "pretext/", 2   # pretext losses and margins, in nats: tenths of one matter
PERCENT_DECIMALS = 1


def metric_columns(names) -> list[str]:
    """Measured metrics in reading order (R@1 before R@10), counts left out."""
    def order(name: str):
        head, _, k = name.rpartition("@")
        return (head, int(k)) if k.isdigit() else (name, 0)
    return sorted((n for n in set(names) if not n.endswith(COUNT_SUFFIXES)), key=order)


def trial_stems(sweep: dict, config: str, extra: list[str]) -> set[str]:
    """The names studies.sweep gives this sweep's trials on ``config`` with ``extra``, less their -s<seed>."""
    return {t.name.removesuffix(f"{SEED_MARK}{ANY_SEED}") for t in expand_grid(sweep, config, [ANY_SEED], extra)}


def collect_trials(runs_dir: str, sweep_name: str, stems: set[str] | None = None) -> list[dict]:
    """The trial records of sweep ``sweep_name`` under runs_dir; with ``stems`` (trial_stems),
    only the trials of that base config and those extra overrides."""
    rows = []
    for path in sorted(glob.glob(os.path.join(runs_dir, "*", TRIAL_FILE))):
        with open(path) as f:
            try:
                row = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"trial record '{path}' is not valid JSON ({e}); rerun its trial") from None
        if row.get("sweep") == sweep_name and (stems is None or
                                               str(row.get("name", "")).rpartition(SEED_MARK)[0] in stems):
            rows.append(row)
    return rows


def grid_position(params: dict, parameters: dict) -> tuple:
    """Where a setting sits in the sweep's grid: the index of each value in its key's list
    (a value the file does not list goes last)."""
    position = []
    for key, spec in parameters.items():
        values = spec["values"]
        position.append(values.index(params.get(key)) if params.get(key) in values else len(values))
    return tuple(position)


def summarize(trials: list[dict], keys: list[str]) -> list[dict]:
    """One entry per setting: params, seeds, and per metric (mean, std, n), in order of first appearance."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for t in trials:
        groups[tuple(json.dumps(t["params"].get(k)) for k in keys)].append(t)
    out = []
    for key, members in groups.items():
        metrics = sorted({m for t in members for m in t["metrics"]})
        stats = {}
        for m in metrics:
            vals = [t["metrics"][m] for t in members if m in t["metrics"]]
            stats[m] = (statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))
        out.append({"params": {k: json.loads(v) for k, v in zip(keys, key, strict=True)},
                    "seeds": sorted(t["seed"] for t in members), "stats": stats})
    return out


def metric_decimals(metric: str) -> int:
    """Decimals a table gives a metric: two for losses in nats (pretext/*), one for percentages."""
    return NATS_DECIMALS if metric.startswith(NATS_PREFIX) else PERCENT_DECIMALS


def markdown_table(summary: list[dict], keys: list[str]) -> str:
    metrics = metric_columns(m for s in summary for m in s["stats"])
    head = "| " + " | ".join(keys + ["seeds"] + metrics) + " |"
    sep = "|" + "---|" * (len(keys) + 1 + len(metrics))
    lines = [head, sep]
    for s in summary:
        cells = [str(s["params"][k]) for k in keys] + [str(len(s["seeds"]))]
        for m in metrics:
            if m in s["stats"]:
                mean, std, n = s["stats"][m]
                d = metric_decimals(m)
                cells.append(f"{mean:.{d}f} ± {std:.{d}f}" if n > 1 else f"{mean:.{d}f}")
            else:
                cells.append("–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], keys: list[str], metric: str, path: str, title: str) -> None:
    import matplotlib  # lazy: plotting only
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: plotting only
    rows = [s for s in summary if metric in s["stats"]]
    labels = [", ".join(str(s["params"][k]) for k in keys) for s in rows]
    means = [s["stats"][metric][0] for s in rows]
    stds = [s["stats"][metric][1] for s in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.2), dpi=120)
    ax.bar(range(len(rows)), means, yerr=stds, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(metric)
    ax.set_title(f"{title} ({', '.join(keys)})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", required=True)
    p.add_argument("--config", default=DEFAULT_BASE_CONFIG, help="the base experiment the sweep ran on")
    p.add_argument("--metric", default=PLOT_METRIC, help="the metric to plot")
    p.add_argument("overrides", nargs="*", help="the key=value overrides the sweep was given (run.dir among them)")
    a = p.parse_args(argv)
    try:
        sweep = read_sweep(a.sweep)
        runs = C.load_config(a.config, a.overrides).run.dir
        stems = trial_stems(sweep, a.config, a.overrides)
    except C.ConfigError as e:
        p.error(str(e))
    keys = list(sweep["parameters"])
    prefix = name_prefix(sweep["name"], a.config, a.overrides)
    trials = collect_trials(runs, sweep["name"], stems)
    if not trials:
        print(f"no {TRIAL_FILE} of trials {prefix}-* under {runs}/: run `make sweep SWEEP={a.sweep} "
              f"CONFIG={a.config}` with the same overrides first", file=sys.stderr)
        return 1
    summary = sorted(summarize(trials, keys), key=lambda entry: grid_position(entry["params"], sweep["parameters"]))
    table = markdown_table(summary, keys)
    md, png = (os.path.join(runs, f"{prefix}.{ext}") for ext in ("md", "png"))
    with open(md, "w") as f:
        f.write(f"### Sweep `{sweep['name']}` on `{a.config}`{' ' + ' '.join(a.overrides) if a.overrides else ''}\n\n"
                f"{table}")
    plot(summary, keys, a.metric, png, prefix)
    print(table + f"\nwrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
