"""One ablation trial: pretrain, then linear probe and retrieval on the result.

    python -m studies.trial --config configs/synthetic.yaml fame.beta=0.3 seed=1

This is what every grid point of `studies.sweep` (and a `wandb agent`) runs.
Runs: <run.name> (pretrain), <run.name>-linear, <run.name>-retrieval, and with
eval.unbiased_probe <run.name>-linear-unbiased: the same linear probe trained on a
copy of the synthetic data whose training split has class-independent backgrounds
(metrics linear_unbiased/*). Set against linear/*, it shows how much of the
motion the backbone learned the biased probe gives up to the background. On
synthetic data the trial also scores where the backbone looks: caam/energy_in_box_pct,
the share (%) of its class-agnostic activation map inside the moving object's box
on the first test clips, beside caam/box_fraction_pct, what a map with no
preference scores (studies.visualize). A trial that pretrains also records its pretext loss at the
end (pretext/loss_end, the mean over the last fifth of the logged steps) and pretext/margin,
how far below ln(K+1) the loss stayed after the run's first tenth (engine.reference). The
pretrain run directory gets trial.json: the sweep (wandb.group), the trial's
parameters (its key=value overrides, less run.*, wandb.* and seed), the seed and
the metrics that `studies.report` tabulates.

With `pretrained=<backbone.pt>` the trial skips pretraining and scores that backbone
(the same probes, retrieval and CAAM), e.g. a finished trial's backbone on a larger
test split; <run.name> then holds only config.yaml and trial.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys

import yaml

from engine.cli import parse_cli
from engine.config import Config, DataConfig, run_name
from engine.errors import run_command
from engine.evaluation import check_pretrained_path
from engine.logger import read_metrics, write_json_atomic
from engine.reference import pretext_trend
from engine.setup import prepare_run_dir
from runners import classify, pretrain, retrieve
from studies.visualize import caam_in_box

BOOKKEEPING = ("run.", "wandb.", "seed=")
TRIAL_FILE = "trial.json"
UNBIASED_SUFFIX = "-unbiased"
CAAM_VIDEOS = 64   # test clips scored for caam/energy_in_box on synthetic data
# The probes and retrieval resume from their own run directories (a MoCo checkpoint named by
# train.resume does not load into a classifier), unless train.resume=none starts everything anew.
DOWNSTREAM_RESUME = "auto"
NO_RESUME = "none"


def unbiased_data(data: DataConfig) -> DataConfig:
    """The synthetic dataset of ``data`` with class-independent backgrounds in its training
    split too, generated beside it (<root>-unbiased); its test split is drawn the same way."""
    synthetic = dataclasses.replace(data.synthetic, bg_correlation_train=0.0)
    return dataclasses.replace(data, root=data.root.rstrip("/") + UNBIASED_SUFFIX, synthetic=synthetic)


def trial_params(overrides: list[str]) -> dict:
    params = {}
    for item in overrides:
        if not item.startswith(BOOKKEEPING):
            key, _, value = item.partition("=")
            params[key] = yaml.safe_load(value)
    return params


def run_trial(cfg: Config, params: dict) -> dict:
    """Pretrain + linear probe + retrieval with cfg; returns (and writes) the trial record."""
    name = run_name(cfg)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=name))
    if cfg.pretrained is None:
        run_dir = pretrain.main(cfg)
        backbone = os.path.join(run_dir, "backbone.pt")
    else:                       # re-score a pretrained backbone (e.g. on other data): no pretraining
        check_pretrained_path(cfg)
        cfg, run_dir = prepare_run_dir(cfg)
        backbone = cfg.pretrained

    downstream_resume = NO_RESUME if cfg.train.resume == NO_RESUME else DOWNSTREAM_RESUME

    def downstream(suffix, data=cfg.data, **eval_changes):
        return dataclasses.replace(cfg, pretrained=backbone, run=dataclasses.replace(cfg.run, name=f"{name}-{suffix}"),
                                   data=data, eval=dataclasses.replace(cfg.eval, **eval_changes),
                                   train=dataclasses.replace(cfg.train, resume=downstream_resume))
    results = {"linear": classify.main(downstream("linear", protocol="linear")),
               "retrieval": retrieve.main(downstream("retrieval"))}
    if cfg.eval.unbiased_probe:
        results["linear_unbiased"] = classify.main(downstream("linear" + UNBIASED_SUFFIX, data=unbiased_data(cfg.data),
                                                              protocol="linear"))
    metrics = {f"{kind}/{k}": v for kind, result in results.items()
               for k, v in result["metrics"].items() if isinstance(v, (int, float))}
    trend = pretext_trend(read_metrics(run_dir), cfg.model.K) if cfg.pretrained is None else None
    if trend is not None:
        metrics.update({"pretext/loss_end": trend["loss_end"], "pretext/margin": trend["margin"]})
    if cfg.data.synthetic is not None:
        metrics.update({f"caam/{k}_pct": 100 * v for k, v in caam_in_box(backbone, cfg, CAAM_VIDEOS).items()})
    record = {"sweep": cfg.wandb.group or "adhoc", "name": name, "params": params, "seed": cfg.seed,
              "metrics": metrics, "run_dir": run_dir, "backbone": backbone}
    write_json_atomic(record, os.path.join(run_dir, TRIAL_FILE))
    return record


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = parse_cli(__doc__.splitlines()[0], argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("--")]
    record = run_trial(cfg, trial_params(overrides))
    print(json.dumps(record["metrics"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
