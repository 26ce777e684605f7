"""engine.loaders (Config -> pretraining loader) and measure.profile on the tiny synthetic config."""
import json
import os

import torch

from engine.config import load_config
from engine.loaders import build_pretrain_loader, fame_config, load_video_set, pretrain_settings
from measure import profile
from pipelines.loader import pretrain_loader
from tests.conftest import ROOT

TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")


def tiny_config(root, *overrides):
    return load_config(TINY, [f"data.root={root}", "wandb.mode=disabled", *overrides])


def test_build_pretrain_loader_follows_the_config(tiny_data_root):
    cfg = tiny_config(tiny_data_root, "train.examples_every=5", "fame.branches=both")
    loader = build_pretrain_loader(cfg, rank=0, world=1, device=torch.device("cpu"))
    assert fame_config(cfg).branches == "both"
    batch = next(iter(loader))
    frames, crop = cfg.clip.frames, cfg.clip.crop
    assert batch.query.shape == (cfg.train.batch_size, 3, frames, crop, crop)
    assert batch.masks is not None and batch.original.shape[1:] == (frames, crop, crop, 3)


def test_beta_warmup_epochs_become_steps(tiny_data_root):
    cfg = tiny_config(tiny_data_root, "fame.beta=0.3", "fame.beta_warmup_epochs=1.5")
    assert fame_config(cfg, steps_per_epoch=4).beta_warmup_steps == 6
    loader = build_pretrain_loader(cfg)
    assert loader.sampler.steps_per_epoch > 0


def test_no_merging_configured_means_no_fame_stage(tiny_data_root):
    assert fame_config(tiny_config(tiny_data_root, "fame.variant=none")) is None
    assert fame_config(tiny_config(tiny_data_root, "fame.background=none")) is None
    cfg = tiny_config(tiny_data_root, "fame.background=none", "train.examples_every=5")
    assert next(iter(build_pretrain_loader(cfg))).masks is None


def test_profile_writes_a_table_and_json(tiny_data_root, tmp_path, capsys):
    cfg = tiny_config(tiny_data_root, f"run.dir={tmp_path}", "run.name=prof")
    path = profile.main(cfg, steps=1, warmup=0, repeats=1)
    assert path == os.path.join(tmp_path, "prof", profile.PROFILE_FILE)
    with open(path) as f:
        result = json.load(f)
    assert [row["stage"] for row in result["stages"]] == [name for name, _, _ in profile.ROWS]
    assert all(row["clips_per_s"] > 0 and row["cpu_seconds_per_batch"] >= 0 for row in result["stages"])
    assert result["baseline"]["clips_per_s"] > 0 and result["fame_op"]["clips_per_s"] > 0
    # The baseline's workers decode and augment: their CPU time counts (a fork server's children
    # are not this process's, so the time is measured in them), and it is not less than half of
    # what DALI's decoding alone costs.
    assert result["baseline"]["cpu_seconds_per_batch"] > 0.5 * result["stages"][0]["cpu_seconds_per_batch"]
    assert set(result["ratios"]) >= {"full_vs_decode", "full_vs_baseline"}
    assert result["baseline_workers"] == result["pipelines"] * result["num_threads"] == 4   # synthetic.yaml: 2 x 2
    assert (result["warmup"], result["baseline_warmup"]) == (4, 8)   # what each can have in the making
    out = capsys.readouterr().out
    assert "PyAV + NumPy baseline" in out and "full / decode alone" in out
    assert result["decode"] == "cpu" and ", decode on cpu, " in out
    assert os.path.exists(os.path.join(tmp_path, "prof", "metrics.jsonl"))


def test_the_baseline_counts_the_cpu_time_its_workers_spend(tiny_data_root):
    """Made by worker processes (children of a fork server, not of this process), a batch costs
    about what it costs made here: the workers' CPU time is counted where it is spent."""
    cfg = tiny_config(tiny_data_root)
    cpu = torch.device("cpu")
    videos, decode = load_video_set(cfg, cfg.data.train_list, 0, cpu)
    settings = pretrain_settings(cfg, cpu, decode)
    fame_cfg = settings.pop("fame_cfg")
    loader = pretrain_loader(videos, fame_cfg=fame_cfg, **settings)
    sampler = loader.sampler
    loader.close()
    here = profile.time_baseline(sampler, fame_cfg, 0, steps=3, warmup=1)
    in_workers = profile.time_baseline(sampler, fame_cfg, 2, steps=3, warmup=1)
    assert in_workers.cpu > 0.5 * here.cpu > 0
