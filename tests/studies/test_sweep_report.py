import json
import math
import os
import re

import pytest
from PIL import Image

from engine import config as C
from engine.logger import METRICS_FILE
from studies import report, sweep

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
    assert cfg.run.name == t.name == "beta-synthetic_tiny-beta=0.3-branches=both-s2"
    assert cfg.wandb.group == "beta" and "fame.beta=0.3" in cfg.wandb.tags
    assert len({t.name for t in trials}) == len(trials)


def test_trial_names_tell_base_configs_and_extra_overrides_apart(tmp_path):
    """A sweep run again under the same names resumes the finished trials, so another base
    config or other extra overrides must not reuse them; where runs go and how they are logged
    leave the names alone."""
    s = sweep.read_sweep(os.path.join(SWEEPS, "beta.yaml"))
    other = tmp_path / "other.yaml"
    other.write_text(f"inherit: {BASE}\n")

    def names(config, *extra):
        return [t.name for t in sweep.expand_grid(s, config, [0], list(extra))]
    plain = names(BASE)
    assert plain[0] == "beta-synthetic_tiny-beta=1.0-branches=one-s0"
    assert names(BASE) == plain
    assert names(BASE, f"run.dir={tmp_path}", "wandb.mode=disabled") == plain
    variants = [plain, names(str(other)), names(BASE, "train.epochs=3"), names(BASE, "train.epochs=2")]
    assert len({n for v in variants for n in v}) == 4 * len(plain)
    assert names(str(other))[0] == "beta-other-beta=1.0-branches=one-s0"
    assert names(BASE, "train.epochs=3") == names(BASE, "train.epochs=3", f"run.dir={tmp_path}")
    assert re.fullmatch(r"beta-synthetic_tiny-x[0-9a-f]{6}-beta=1.0-branches=one-s0", names(BASE, "train.epochs=3")[0])


@pytest.mark.parametrize("seeds", ["0,a", "", "1,1", "-1"])
def test_bad_seeds_are_a_usage_error(capsys, seeds):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--config", BASE, "--seeds", seeds, "--dry-run"])
    assert e.value.code == 2 and "--seeds: expected" in capsys.readouterr().err


def test_seeds_parse_as_a_list():
    assert sweep.parse_seeds("0,1,2") == [0, 1, 2] and sweep.parse_seeds(" 3") == [3]


@pytest.mark.parametrize("main", [sweep.main, report.main])
def test_missing_sweep_file_is_named(tmp_path, capsys, main):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(SystemExit) as e:
        main(["--sweep", missing])
    assert e.value.code == 2 and f"sweep file '{missing}' does not exist" in capsys.readouterr().err


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


def fabricate(runs, sweep_name, params, seed, top1, prefix=None):
    """A trial.json as studies.trial writes it, named as studies.sweep names trials (by default on BASE)."""
    label = "-".join(f"{key.split('.')[-1]}={value}" for key, value in params.items())
    name = f"{prefix or sweep.name_prefix(sweep_name, BASE)}-{label}-s{seed}"
    d = runs / f"{name}-{params['fame.branches']}"
    d.mkdir(parents=True)
    (d / "trial.json").write_text(json.dumps({"sweep": sweep_name, "name": name, "params": params, "seed": seed,
                                              "metrics": {"linear/video_top1": top1, "retrieval/R@1": top1 / 2}}))


def test_report_table_and_plot_from_fabricated_results(tmp_path):
    runs = tmp_path / "runs"
    for seed, delta in ((0, -1.0), (1, 1.0)):
        fabricate(runs, "beta", {"fame.beta": 1.0, "fame.branches": "one"}, seed, 40 + delta)
        fabricate(runs, "beta", {"fame.beta": 0.5, "fame.branches": "one"}, seed, 70 + delta)
    fabricate(runs, "other", {"fame.beta": 0.5, "fame.branches": "one"}, 0, 99.0)
    fabricate(runs, "beta", {"fame.beta": 0.5, "fame.branches": "one"}, 2, 98.0,     # another base config
              prefix=sweep.name_prefix("beta", "configs/benchmark.yaml"))
    fabricate(runs, "beta", {"fame.beta": 0.5, "fame.branches": "one"}, 3, 97.0,     # other extra overrides
              prefix=sweep.name_prefix("beta", BASE, ["train.epochs=3"]))
    assert report.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--config", BASE, f"run.dir={runs}"]) == 0
    md = (runs / f"{sweep.name_prefix('beta', BASE)}.md").read_text()
    assert "| 1.0 | one | 2 | 40.0 ± 1.4 | 20.0 ± 0.7 |" in md
    assert "| 0.5 | one | 2 | 70.0 ± 1.4 | 35.0 ± 0.7 |" in md
    table = md.split("\n\n", 1)[1]                  # below the header, which names run.dir
    assert "99" not in table and "98" not in table and "97" not in table
    assert md.index("| 1.0 | one |") < md.index("| 0.5 | one |")   # the sweep file's order, not the runs'
    with Image.open(runs / f"{sweep.name_prefix('beta', BASE)}.png") as im:
        assert im.size[0] > 300 and im.size[1] > 200
    assert report.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--config", BASE, f"run.dir={runs}",
                        "train.epochs=3"]) == 0
    assert "97.0" in (runs / f"{sweep.name_prefix('beta', BASE, ['train.epochs=3'])}.md").read_text()


def test_report_without_trials_says_what_to_run(tmp_path, capsys):
    assert report.main(["--sweep", os.path.join(SWEEPS, "beta.yaml"), "--config", BASE, f"run.dir={tmp_path}"]) == 1
    assert "make sweep SWEEP=" in capsys.readouterr().err


def test_report_columns_leave_out_counts_and_keep_recall_order():
    names = ["retrieval/R@10", "retrieval/R@1", "linear/videos", "retrieval/gallery", "linear/video_top1",
             "retrieval/R@5", "linear/clips", "retrieval/queries"]
    assert report.metric_columns(names) == ["linear/video_top1", "retrieval/R@1", "retrieval/R@5", "retrieval/R@10"]


def test_truncated_trial_record_is_named(tmp_path):
    fabricate(tmp_path, "beta", {"fame.beta": 1.0, "fame.branches": "one"}, 0, 40.0)
    broken = tmp_path / "broken" / "trial.json"
    broken.parent.mkdir()
    broken.write_text('{"sweep": "beta", "par')
    with pytest.raises(ValueError, match=f"trial record '{re.escape(str(broken))}' is not valid JSON"):
        report.collect_trials(str(tmp_path), "beta")


# ------------------------------------------------------------------ trial ----
@pytest.fixture
def fake_stages(monkeypatch, tmp_path):
    """studies.trial with its stages replaced: pretraining makes the run directory with a log of
    two steps, the probes and retrieval return a metric, and every stage's config is kept in
    ``configs``."""
    from studies import trial
    configs = {}

    def pretrain(cfg):
        configs["pretrain"] = cfg
        run_dir = os.path.join(cfg.run.dir, cfg.run.name)
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, METRICS_FILE), "w") as f:
            f.writelines(json.dumps({"step": s, "loss": loss, "acc1": 0.0}) + "\n" for s, loss in ((1, 5.0), (2, 4.0)))
        return run_dir

    def downstream(cfg):
        configs[cfg.run.name] = cfg
        return {"metrics": {"top1": 50.0}}
    monkeypatch.setattr(trial.pretrain, "main", pretrain)
    monkeypatch.setattr(trial.classify, "main", downstream)
    monkeypatch.setattr(trial.retrieve, "main", downstream)
    monkeypatch.setattr(trial, "caam_in_box", lambda *args: {})
    return trial, configs


def test_downstream_runs_resume_from_their_own_directories(tmp_path, fake_stages):
    trial, configs = fake_stages
    checkpoint = tmp_path / "elsewhere.pt"
    checkpoint.write_bytes(b"a MoCo checkpoint")
    cfg = C.load_config(BASE, [f"run.dir={tmp_path}", "run.name=t", f"train.resume={checkpoint}",
                               "eval.unbiased_probe=true"])
    record = trial.run_trial(cfg, {})
    assert configs["pretrain"].train.resume == str(checkpoint)
    # the pretext figures come from the pretraining log: its last fifth is step 2, and the
    # margin leaves out the first tenth (step 1)
    K = cfg.model.K
    assert record["metrics"]["pretext/loss_end"] == 4.0
    assert record["metrics"]["pretext/margin"] == pytest.approx(math.log(K + 1) - 4.0)
    assert set(configs) == {"pretrain", "t-linear", "t-retrieval", "t-linear-unbiased"}
    assert all(configs[name].train.resume == "auto" for name in configs if name != "pretrain")


def test_a_trial_started_anew_starts_its_probes_anew(tmp_path, fake_stages):
    trial, configs = fake_stages
    trial.run_trial(C.load_config(BASE, [f"run.dir={tmp_path}", "run.name=t", "train.resume=none"]), {})
    assert {name: c.train.resume for name, c in configs.items()} == {
        "pretrain": "none", "t-linear": "none", "t-retrieval": "none"}


def test_trial_record_is_replaced_whole_or_not_at_all(tmp_path, fake_stages):
    """A record that fails half-way through its writing leaves the previous trial.json readable."""
    import datetime
    trial, _ = fake_stages
    cfg = C.load_config(BASE, [f"run.dir={tmp_path}", "run.name=t", "wandb.group=beta"])
    trial.run_trial(cfg, {"fame.beta": 0.5})
    with pytest.raises(TypeError, match="not JSON serializable"):
        trial.run_trial(cfg, {"fame.beta": 0.5, "when": datetime.date(2024, 1, 1)})
    rows = report.collect_trials(str(tmp_path), "beta")
    assert [r["params"] for r in rows] == [{"fame.beta": 0.5}]
    assert sorted(os.listdir(tmp_path / "t")) == [METRICS_FILE, trial.TRIAL_FILE]


def test_tables_give_pretext_figures_in_nats_two_decimals_and_percentages_one():
    rows = [{"params": {"method": "FAME"}, "seeds": [4, 5],
             "stats": {"linear/video_top1": (53.47, 4.34, 2), "pretext/margin": (0.243, 0.013, 2)}}]
    assert "| FAME | 2 | 53.5 ± 4.3 | 0.24 ± 0.01 |" in report.markdown_table(rows, ["method"])
