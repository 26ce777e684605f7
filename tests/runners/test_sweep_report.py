import json
import os

import pytest
from PIL import Image

from runners import config as C
from runners import report, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
SWEEPS = os.path.join(ROOT, "configs", "sweeps")


@pytest.mark.parametrize("name", sorted(os.listdir(SWEEPS)))
def test_every_shipped_sweep_expands_to_valid_configs(name):
    s = sweep.read_sweep(os.path.join(SWEEPS, name))
    trials = sweep.expand_grid(s, BASE, seeds=[0])
    size = 1
    for spec in s["parameters"].values():
        size *= len(spec["values"])
    assert len(trials) == size
    assert "${args_no_hyphens}" in s["command"]


def test_beta_grid_applies_keys_seeds_and_group():
    s = sweep.read_sweep(os.path.join(SWEEPS, "beta.yaml"))
    trials = sweep.expand_grid(s, BASE, seeds=[0, 1, 2])
    assert len(trials) == 4 * 2 * 3
    t = next(t for t in trials if t.params == {"fame.beta": 0.3, "fame.branches": "both"} and t.seed == 2)
    cfg = C.load_config(BASE, t.overrides)
    assert (cfg.fame.beta, cfg.fame.branches, cfg.seed) == (0.3, "both", 2)
    assert cfg.run.name == t.name == "beta-beta=0.3-branches=both-s2"
    assert cfg.wandb.group == "beta" and "fame.beta=0.3" in cfg.wandb.tags
    assert len({t.name for t in trials}) == len(trials)


def test_invalid_key_or_value_is_rejected_before_running(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: grid\nparameters:\n  fame.bta: {values: [0.5]}\n")
    with pytest.raises(C.ConfigError, match="unknown config key 'fame.bta'"):
        sweep.expand_grid(sweep.read_sweep(str(bad)), BASE, [0])
    bad.write_text("method: grid\nparameters:\n  fame.beta: {values: [0.5, 2.0]}\n")
    with pytest.raises(C.ConfigError, match="'fame.beta': 2.0 is outside"):
        sweep.expand_grid(sweep.read_sweep(str(bad)), BASE, [0])
    bad.write_text("method: bayes\nparameters:\n  fame.beta: {values: [0.5]}\n")
    with pytest.raises(C.ConfigError, match="only method 'grid'"):
        sweep.read_sweep(str(bad))


def fabricate(runs, sweep_name, params, seed, top1):
    d = runs / f"{sweep_name}-{seed}-{params['fame.beta']}-{params['fame.branches']}"
    d.mkdir(parents=True)
    (d / "trial.json").write_text(json.dumps({"sweep": sweep_name, "params": params, "seed": seed,
                                              "metrics": {"linear/video_top1": top1, "retrieval/R@1": top1 / 2}}))


def test_report_table_and_plot_from_fabricated_results(tmp_path):
    runs = tmp_path / "runs"
    for seed, delta in ((0, -1.0), (1, 1.0)):
        fabricate(runs, "beta", {"fame.beta": 1.0, "fame.branches": "one"}, seed, 40 + delta)
        fabricate(runs, "beta", {"fame.beta": 0.5, "fame.branches": "one"}, seed, 70 + delta)
    fabricate(runs, "other", {"fame.beta": 0.5, "fame.branches": "one"}, 0, 99.0)
    assert report.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--runs", str(runs)]) == 0
    md = (runs / "beta.md").read_text()
    assert "| 1.0 | one | 2 | 40.0 ± 1.4 | 20.0 ± 0.7 |" in md
    assert "| 0.5 | one | 2 | 70.0 ± 1.4 | 35.0 ± 0.7 |" in md
    assert "99" not in md
    assert md.index("| 1.0 | one |") < md.index("| 0.5 | one |")   # the sweep file's order, not the runs'
    with Image.open(runs / "beta.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_report_without_trials_says_what_to_run(tmp_path, capsys):
    assert report.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--runs", str(tmp_path)]) == 1
    assert "make sweep SWEEP=" in capsys.readouterr().err


def test_report_columns_leave_out_counts_and_keep_recall_order():
    names = ["retrieval/R@10", "retrieval/R@1", "linear/videos", "retrieval/gallery", "linear/video_top1",
             "retrieval/R@5", "linear/clips", "retrieval/queries"]
    assert report.metric_columns(names) == ["linear/video_top1", "retrieval/R@1", "retrieval/R@5", "retrieval/R@10"]
