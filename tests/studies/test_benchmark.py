"""The benchmark runner end to end on the tiny setting (both methods, one seed), and its gap arithmetic."""
import json
import os

import pytest

from engine import config as C
from engine.logger import read_metrics
from engine.reference import pretext_margin, pretext_trend
from studies import benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "benchmark_tiny.yaml")


def record(variant, seed, top1, r1):
    return {"params": {"fame.variant": variant}, "seed": seed,
            "metrics": {"linear/video_top1": top1, "retrieval/R@1": r1, "linear/video_top5": 100.0}}


def test_gap_is_taken_per_seed_then_averaged():
    records = [record("none", 0, 30.0, 20.0), record("fame", 0, 50.0, 25.0),
               record("none", 1, 40.0, 30.0), record("fame", 1, 50.0, 45.0)]
    gaps = benchmark.seed_gaps(records)
    assert gaps["linear/video_top1"][0] == pytest.approx(15.0) and gaps["linear/video_top1"][2] == 2
    assert gaps["linear/video_top1"][1] == pytest.approx(7.0710678)
    assert gaps["retrieval/R@1"][0] == pytest.approx(10.0)
    rows = benchmark.benchmark_rows(records)
    assert [r["params"]["method"] for r in rows] == ["MoCo baseline", "MoCo + FAME", benchmark.GAP_LABEL]
    assert set(rows[0]["stats"]) == {"linear/video_top1", "retrieval/R@1"}
    assert rows[1]["stats"]["linear/video_top1"][:2] == (50.0, 0.0)


def test_the_fame_arm_is_the_configs_mask_variant():
    records = [record("none", 0, 30.0, 20.0), record("seed", 0, 45.0, 25.0),
               record("none", 1, 40.0, 30.0), record("seed", 1, 41.0, 35.0)]
    assert benchmark.seed_gaps(records)["linear/video_top1"][:3:2] == (8.0, 2)
    rows = benchmark.benchmark_rows(records)
    assert [r["params"]["method"] for r in rows] == ["MoCo baseline", "MoCo + FAME (seed mask)", benchmark.GAP_LABEL]
    assert benchmark.benchmark_sweep("b", "seed")["parameters"] == {"fame.variant": {"values": ["none", "seed"]}}


@pytest.mark.parametrize("setting, message", [("variant: none", "fame.variant is 'none'"),
                                              ("background: none", "fame.background 'none', so FAME merges nothing")])
def test_a_config_without_fame_is_a_usage_error(tmp_path, capsys, setting, message):
    config = tmp_path / "no_fame.yaml"
    config.write_text(f"inherit: {TINY}\nfame:\n  {setting}\n")
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--config", str(config)])
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("override", ["fame.variant=fame", "pretrained=runs/x/backbone.pt"])
def test_benchmark_refuses_to_override_what_it_compares(capsys, override):
    with pytest.raises(SystemExit):
        benchmark.main(["--config", TINY, override])
    assert f"{override}: the benchmark sets fame.variant" in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["0,a", "0,0"])
def test_bad_seeds_are_a_usage_error_as_in_the_sweep(capsys, seeds):
    with pytest.raises(SystemExit) as e:
        benchmark.main(["--config", TINY, "--seeds", seeds])
    assert e.value.code == 2 and "argument --seeds: expected" in capsys.readouterr().err


def test_control_row_averages_the_seeds_results(tmp_path):
    for seed, top1 in ((0, 90.0), (1, 80.0)):
        run = tmp_path / benchmark.control_run_name("b", seed)
        run.mkdir()
        (run / "results.json").write_text(json.dumps({"metrics": {"video_top1": top1}}))
    row = benchmark.control_row(str(tmp_path), "b", [0, 1])
    assert row["params"] == {"method": benchmark.CONTROL_LABEL} and row["seeds"] == [0, 1]
    mean, std, n = row["stats"][benchmark.CONTROL_METRIC]
    assert (mean, n) == (85.0, 2) and std == pytest.approx(7.0710678)
    with pytest.raises(FileNotFoundError, match="control run of seed 2 left no .*b-control-s2"):
        benchmark.control_row(str(tmp_path), "b", [0, 2])


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path):
    runs, data = tmp_path / "runs", tmp_path / "data"
    control = tmp_path / "control.yaml"      # the tiny supervised control, its data under tmp_path
    control.write_text(f"inherit: {os.path.join(ROOT, 'configs', 'small_objects_control_tiny.yaml')}\n"
                       f"data:\n  root: {tmp_path / 'control-data'}\n")
    control_column = "eval.unbiased_probe=true"     # off in benchmark.yaml by default
    code = benchmark.main(["--config", TINY, "--seeds", "0", "--name", "bench", "--control", str(control),
                           f"run.dir={runs}", f"data.root={data}", control_column])
    assert code == 0
    md = (runs / "bench.md").read_text()
    for label in ("MoCo baseline", "MoCo + FAME", benchmark.GAP_LABEL, "linear/video_top1", "retrieval/R@1",
                  "linear_unbiased/video_top1", "caam/energy_in_box_pct", "pretext/margin", benchmark.CONTROL_LABEL,
                  benchmark.CONTROL_METRIC, f"control `{control}`"):
        assert label in md
    results = json.loads((runs / "bench-control-s0" / "results.json").read_text())
    assert results["protocol"] == "finetune" and results["pretrained"]["init"] == "random"
    assert results["config"]["model"]["pool"] == "max" and results["config"]["eval"]["optimizer"] == "adamw"
    # the control probe's data: a sibling dataset whose training backgrounds ignore the class
    spec = json.loads((tmp_path / "data-unbiased" / "spec.json").read_text())["spec"]
    assert spec["bg_correlation_train"] == 0.0
    assert json.loads((data / "spec.json").read_text())["spec"]["bg_correlation_train"] == 0.9
    out = json.loads((runs / "bench.json").read_text())
    assert [r["params"]["method"] for r in out["rows"]] == ["MoCo baseline", "MoCo + FAME", benchmark.GAP_LABEL,
                                                             benchmark.CONTROL_LABEL]
    assert out["rows"][-1]["stats"][benchmark.CONTROL_METRIC][0] == results["metrics"]["video_top1"]
    assert sorted(t["params"]["fame.variant"] for t in out["trials"]) == ["fame", "none"]
    assert all(t["seed"] == 0 for t in out["trials"])
    baseline, fame_, gap = (r["stats"]["linear/video_top1"][0] for r in out["rows"][:3])
    assert gap == pytest.approx(fame_ - baseline)
    assert 0.0 <= baseline <= 100.0 and 0.0 <= fame_ <= 100.0
    assert out["seconds"] > 0 and "cores" in out["machine"]
    for t in out["trials"]:
        assert os.path.isfile(os.path.join(t["run_dir"], "backbone.pt"))
        assert 0.0 <= t["metrics"]["linear_unbiased/video_top1"] <= 100.0
        assert 0.0 <= t["metrics"]["caam/energy_in_box_pct"] <= 100.0
        assert 0.0 < t["metrics"]["caam/box_fraction_pct"] < 100.0
        assert os.path.isdir(os.path.join(runs, t["name"] + "-linear-unbiased"))
        rows = read_metrics(t["run_dir"])     # the pretext figures come from the run's own log
        assert t["metrics"]["pretext/margin"] == pretext_margin(rows, C.load_config(TINY).model.K)
        assert t["metrics"]["pretext/loss_end"] == pretext_trend(rows, C.load_config(TINY).model.K)["loss_end"]

    # Re-scoring a trial's backbone (pretrained=...) skips pretraining and, on the same data and
    # seed, repeats the trial's downstream metrics exactly.
    from studies import trial
    base = next(t for t in out["trials"] if t["params"]["fame.variant"] == "none")
    backbone = os.path.join(base["run_dir"], "backbone.pt")
    assert trial.main(["--config", TINY, f"run.dir={runs}", f"data.root={data}", "run.name=rescored", "seed=0",
                       f"pretrained={backbone}", control_column]) == 0
    again = json.loads((runs / "rescored" / trial.TRIAL_FILE).read_text())
    downstream = {k: v for k, v in base["metrics"].items() if not k.startswith("pretext/")}  # no pretraining here
    assert again["backbone"] == backbone and again["metrics"] == downstream
    assert sorted(os.listdir(runs / "rescored")) == ["config.yaml", trial.TRIAL_FILE]

    # Rerunning a finished trial under its own name (an interrupted sweep run again) resumes every
    # stage at its end and repeats the metrics.
    def logged():
        return [json.loads(line) for line in (runs / base["name"] / "metrics.jsonl").read_text().splitlines()]
    before = logged()
    assert trial.main(["--config", TINY, f"run.dir={runs}", f"data.root={data}", f"run.name={base['name']}",
                       "seed=0", "fame.variant=none", control_column]) == 0
    rerun = json.loads((runs / base["name"] / trial.TRIAL_FILE).read_text())
    assert rerun["metrics"] == base["metrics"]
    after = logged()
    assert [r for r in after if "loss" in r] == [r for r in before if "loss" in r]    # no pretraining step ran again
    assert sum(any(key.startswith("summary/") for key in r) for r in after) == 1     # its summary, once
