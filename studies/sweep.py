"""Run an ablation grid locally: `python -m studies.sweep --sweep configs/sweeps/beta.yaml --config X`.

The sweep files are in W&B's sweep format (method: grid, parameters as config
keys), so with a W&B server the same file also works as
`wandb sweep configs/sweeps/beta.yaml` + `wandb agent ID`. Locally every grid
point x seed runs `studies.trial` (pretrain + linear probe + retrieval) as
its own process, `--parallel N` at a time, named
<sweep>-<config stem>[-x<hash>]-<key=value...>-s<seed> (<hash>: of the extra
key=value overrides given to every trial, when there are any, less those that
only place or log a run), grouped in W&B under the sweep's name and tagged with
its settings. A sweep run again under the same names resumes its trials, so
another base config or other extra overrides must give other names.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import subprocess
import sys
from typing import NamedTuple

import yaml

from engine import config as C
from engine.errors import run_command

# Extra overrides that leave a trial's result alone (where it is written, how it is logged):
# they do not enter its name, so moving run.dir or muting W&B still resumes the same trials.
NAME_NEUTRAL_OVERRIDES = ("run.dir=", "wandb.")
EXTRA_HASH_CHARS = 6
NO_CONFIG_STEM = "defaults"
DEFAULT_BASE_CONFIG = "configs/synthetic.yaml"
SEED_MARK = "-s"    # a trial name ends with -s<seed>


class Trial(NamedTuple):
    name: str
    params: dict
    seed: int
    overrides: list


def parse_seeds(text: str) -> list[int]:
    """--seeds: comma-separated distinct non-negative integers, e.g. 0,1,2 (an argparse type)."""
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 0,1,2, got {text!r}") from None
    if any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct non-negative seeds, got {text!r}")
    return seeds


def read_sweep(path: str) -> dict:
    if not os.path.isfile(path):
        raise C.ConfigError(f"sweep file '{path}' does not exist")
    with open(path) as f:
        try:
            sweep = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise C.ConfigError(f"sweep file '{path}': not valid YAML: {e}") from None
    if not isinstance(sweep, dict) or not isinstance(sweep.get("parameters"), dict) or not sweep["parameters"]:
        raise C.ConfigError(f"sweep file '{path}': needs a 'parameters' mapping of config keys to {{values: [...]}}")
    if sweep.get("method", "grid") != "grid":
        raise C.ConfigError(f"sweep file '{path}': only method 'grid' runs locally, got {sweep['method']!r}")
    for key, spec in sweep["parameters"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("values"), list) or not spec["values"]:
            raise C.ConfigError(f"sweep file '{path}': parameter '{key}' needs a non-empty 'values' list")
    sweep.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    return sweep


def _fmt(v) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def name_prefix(sweep_name: str, config: str | None, extra: list[str] = ()) -> str:
    """<sweep>-<config stem>[-x<hash of the extra overrides>]: what tells this sweep's trials
    from those of the same sweep file run on another base config or with other overrides."""
    stem = os.path.splitext(os.path.basename(config))[0] if config else NO_CONFIG_STEM
    changing = [o for o in extra if not o.startswith(NAME_NEUTRAL_OVERRIDES)]
    if not changing:
        return f"{sweep_name}-{stem}"
    digest = hashlib.sha256("\n".join(changing).encode()).hexdigest()[:EXTRA_HASH_CHARS]
    return f"{sweep_name}-{stem}-x{digest}"


def expand_grid(sweep: dict, config: str, seeds: list[int], extra: list[str] = ()) -> list[Trial]:
    """Every grid point x seed as a Trial; each is validated against the schema before anything runs."""
    keys = list(sweep["parameters"])
    prefix = name_prefix(sweep["name"], config, extra)
    trials = []
    for values in itertools.product(*(sweep["parameters"][k]["values"] for k in keys)):
        params = dict(zip(keys, values, strict=True))
        for seed in seeds:
            label = "-".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in params.items())
            name = f"{prefix}-{label}{SEED_MARK}{seed}"
            overrides = [*extra, *(f"{k}={_fmt(v)}" for k, v in params.items()), f"seed={seed}",
                         f"run.name={name}", f"wandb.group={sweep['name']}",
                         f"wandb.tags=[{', '.join(f'{k}={_fmt(v)}' for k, v in params.items())}]"]
            C.load_config(config, overrides)   # raises ConfigError naming a bad key or value
            trials.append(Trial(name, params, seed, overrides))
    return trials


def run_trials(trials: list[Trial], config: str, parallel: int = 1) -> list[int]:
    """Run `studies.trial` for each, `parallel` at a time; returns the exit codes in order."""
    codes: dict[int, int] = {}
    running: list[tuple[int, subprocess.Popen]] = []
    queue = list(enumerate(trials))
    while queue or running:
        while queue and len(running) < parallel:
            i, t = queue.pop(0)
            print(f"[sweep] start {t.name}", flush=True)
            running.append((i, subprocess.Popen([sys.executable, "-m", "studies.trial", "--config", config,
                                                 *t.overrides])))
        i, p = running.pop(0)
        codes[i] = p.wait()
        print(f"[sweep] {'done' if codes[i] == 0 else f'FAILED (exit {codes[i]})'} {trials[i].name}", flush=True)
    return [codes[i] for i in range(len(trials))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", required=True, help="configs/sweeps/NAME.yaml")
    p.add_argument("--config", default=DEFAULT_BASE_CONFIG, help="the base experiment")
    p.add_argument("--seeds", type=parse_seeds, default="0", help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--parallel", type=int, default=1, help="trials at a time")
    p.add_argument("--dry-run", action="store_true", help="list the trials and stop")
    p.add_argument("overrides", nargs="*", help="key=value applied to every trial")
    a = p.parse_args(argv)
    try:
        trials = expand_grid(read_sweep(a.sweep), a.config, a.seeds, a.overrides)
    except C.ConfigError as e:
        p.error(str(e))
    for t in trials:
        print(f"[sweep] {t.name}: {' '.join(t.overrides)}")
    if a.dry_run:
        return 0
    codes = run_trials(trials, a.config, a.parallel)
    failed = [t.name for t, c in zip(trials, codes, strict=True) if c]
    if failed:
        print(f"[sweep] {len(failed)} of {len(trials)} trials failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_command(main))
