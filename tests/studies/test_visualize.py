import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import load_config
from models.backbones import build_backbone, export_backbone_state
from studies import metrics, visualize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")


def run(figure, tmp_path, data_root, *args):
    common = ["--config", TINY, f"data.root={data_root}", f"run.dir={tmp_path}", f"run.name={figure}"]
    assert visualize.main([figure, *common, *args]) == 0
    with Image.open(tmp_path / figure / f"{figure}.png") as im:
        return im.size, np.asarray(im)


def test_masks_figure_has_every_variant_column(tmp_path, tiny_data_root):
    (w, h), pixels = run("masks", tmp_path, tiny_data_root, "--videos", "3")
    columns = 3 + 2 * len(visualize.VARIANTS)
    assert w >= columns * 120 and h >= 3 * 120
    assert pixels.std() > 10          # not a blank canvas


def test_caam_compares_checkpoints_and_scores_the_box(tmp_path, tiny_data_root):
    paths = []
    for seed in (0, 1):
        paths += ["--ckpt", save_small3d(tmp_path / f"b{seed}.pt", seed)]
    (w, h), _ = run("caam", tmp_path, tiny_data_root, *paths, "--label", "a", "--label", "b", "--videos", "2")
    assert w >= 3 * 120 and h >= 2 * 120
    scores = json.loads((tmp_path / "caam" / "caam_energy.json").read_text())
    assert set(scores) == {"a", "b"} and all(0.0 <= v <= 1.0 for v in scores.values())


def save_small3d(path, seed=0):
    torch.manual_seed(seed)
    torch.save(export_backbone_state(build_backbone("small3d", width=8)), path)
    return str(path)


def test_caam_in_box_runs_on_the_configured_device(tmp_path, tiny_data_root, monkeypatch):
    """The backbone and the clips go to resolve_device(cfg.device) (here the meta device,
    which stands in for a GPU); the score comes from the maps caam returns."""
    meta = torch.device("meta")
    asked, seen = [], {}

    def resolve(setting):
        asked.append(setting)
        return meta

    def uniform_caam(backbone, x):
        seen.update(backbone=next(backbone.parameters()).device, clips=x.device)
        return torch.ones(x.shape[0], *x.shape[-2:])
    monkeypatch.setattr(visualize, "resolve_device", resolve)
    monkeypatch.setattr(visualize, "caam", uniform_caam)
    cfg = load_config(TINY, [f"data.root={tiny_data_root}", "device=gpu"])
    scores = visualize.caam_in_box(save_small3d(tmp_path / "b.pt"), cfg, 2)
    assert asked == ["gpu"] and seen == {"backbone": meta, "clips": meta}
    assert scores["energy_in_box"] == pytest.approx(scores["box_fraction"])   # a map with no preference


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_caam_in_box_on_the_gpu_matches_the_cpu(tmp_path, tiny_data_root):
    path = save_small3d(tmp_path / "b.pt")
    scores = {device: visualize.caam_in_box(path, load_config(TINY, [f"data.root={tiny_data_root}",
                                                                     f"device={device}"]), 2)
              for device in ("cpu", "gpu")}
    assert scores["gpu"]["energy_in_box"] == pytest.approx(scores["cpu"]["energy_in_box"], abs=1e-3)


def test_energy_in_box_is_the_fraction_inside():
    maps = torch.zeros(1, 10, 10)
    maps[0, 2:4, 2:4] = 1.0
    maps[0, 8, 8] = 4.0
    assert metrics.energy_in_box(maps, [(2, 2, 4, 4)]) == [0.5]


def test_centre_clip_maps_the_box_into_crop_pixels():
    frames = np.zeros((20, 48, 64, 3), np.uint8)
    boxes = np.tile([[24, 16, 40, 32]], (20, 1))
    clip, box = visualize.centre_clip(frames, 4, 2, 24, boxes)
    assert clip.shape == (4, 24, 24, 3)
    # scale 0.5 -> frame 32x24, left offset 4: box x 12..20 -> 8..16, y 8..16
    assert box.tolist() == [8, 8, 16, 16]


@pytest.mark.slow
def test_kernels_violin_plot_for_r2plus1d(tmp_path, tiny_data_root):
    torch.manual_seed(0)
    path = tmp_path / "r21d.pt"
    torch.save(export_backbone_state(build_backbone("r2plus1d_18")), path)
    names = [n for n, _ in visualize.temporal_kernels(build_backbone("r2plus1d_18"))]
    assert len(names) >= 8 and all(".0.1" in n or "stem" in n or "conv" in n for n in names)
    (w, h), _ = run("kernels", tmp_path, tiny_data_root, "--ckpt", str(path), "--ckpt", str(path),
                    "model.backbone=r2plus1d_18")
    assert w > 400 and h > 200


def test_overlap_scores_count_pixels_against_the_box():
    inside = metrics.box_masks([(0, 0, 4, 2)], 4, 4)       # top half of a 4x4 frame
    assert inside.sum() == 8 and inside[0, :2].all()
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 1:3] = True                                      # rows 1-2: 4 pixels in the box, 4 below
    scores = metrics.overlap_scores(masks, inside)
    assert scores == {"fraction": 0.5, "recall": 0.5, "precision": 0.5, "own_background": 0.25}


def test_ranking_auc_orders_inside_above_outside():
    inside = metrics.box_masks([(0, 0, 2, 2)], 4, 4)
    ramp = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert metrics.ranking_auc(inside.astype(np.float32), inside) == 1.0
    assert metrics.ranking_auc(-inside.astype(np.float32), inside) == 0.0
    assert metrics.ranking_auc(np.ones((1, 4, 4)), inside) == 0.5       # ties count half
    # ramp: inside values 0,1,4,5 rank below all 12 others but 4,5 beat 2,3
    assert metrics.ranking_auc(ramp, inside) == 4 / 48


def test_mask_quality_scores_every_variant_and_beta(tmp_path, tiny_data_root):
    (w, h), _ = run("mask-quality", tmp_path, tiny_data_root, "--videos", "8")
    assert w >= 300 and h >= 200
    quality = json.loads((tmp_path / "mask-quality" / "mask_quality.json").read_text())
    assert quality["videos"] == 8 and 0 < quality["box_fraction"] < 1
    betas = {v: [r["beta"] for r in quality["rows"] if r["variant"] == v] for v in visualize.VARIANTS}
    assert betas["fame"] == list(visualize.QUALITY_BETAS) and len(betas["grid"]) == 1
    for r in quality["rows"]:
        assert all(0.0 <= r[k] <= 1.0 for k in ("fraction", "recall", "precision", "own_background"))
    fame_rows = [r for r in quality["rows"] if r["variant"] == "fame" and r["beta"] != "auto"]
    recalls = [r["recall"] for r in fame_rows]
    assert recalls == sorted(recalls)                  # a larger beta keeps more of the box
    # frame differences find the moving object: better than chance at ranking its pixels
    assert quality["auc"]["seed region S"] > 0.7
    assert "| fame | 0.30 |" in (tmp_path / "mask-quality" / "mask_quality.md").read_text()


class _Brightness(torch.nn.Module):
    """A backbone whose feature map is the clip's summed RGB, then a global pool."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 1, 1, bias=False)
        torch.nn.init.ones_(self.conv.weight)
        self.pool = torch.nn.AdaptiveAvgPool3d(1)

    def forward(self, x):
        return self.pool(self.conv(x).relu()).flatten(1)


def test_caam_reads_the_map_before_the_global_pool():
    x = torch.zeros(2, 3, 4, 32, 32)               # NCTHW
    x[0, :, :, 0:8, 0:8] = 1.0                     # a bright square, top left
    x[1, :, :, 20:32, 16:32] = 1.0                 # and bottom right
    maps = metrics.caam(_Brightness(), x)
    assert maps.shape == (2, 32, 32)
    energy = metrics.energy_in_box(maps, [(0, 0, 8, 8), (16, 20, 32, 32)])
    assert min(energy) > 0.9                       # the pooled 1 x 1 output would spread it evenly
    assert metrics.last_feature_map(build_backbone("small3d", width=8), torch.zeros(1, 3, 8, 64, 64)).shape[-1] > 1


@pytest.mark.slow
def test_a_trial_scores_its_backbone_without_loading_matplotlib():
    """The study's metrics live apart from the plotting: importing the trial runner loads no matplotlib."""
    import subprocess
    import sys
    code = "import sys, studies.trial; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
