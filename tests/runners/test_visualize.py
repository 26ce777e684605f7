import json
import os

import numpy as np
import torch
from PIL import Image

from models.backbones import build_backbone, export_backbone_state
from runners import visualize

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
        torch.manual_seed(seed)
        path = tmp_path / f"b{seed}.pt"
        torch.save(export_backbone_state(build_backbone("small3d", width=8)), path)
        paths += ["--ckpt", str(path)]
    (w, h), _ = run("caam", tmp_path, tiny_data_root, *paths, "--label", "a", "--label", "b", "--videos", "2")
    assert w >= 3 * 120 and h >= 2 * 120
    scores = json.loads((tmp_path / "caam" / "caam_energy.json").read_text())
    assert set(scores) == {"a", "b"} and all(0.0 <= v <= 1.0 for v in scores.values())


def test_energy_in_box_is_the_fraction_inside():
    maps = torch.zeros(1, 10, 10)
    maps[0, 2:4, 2:4] = 1.0
    maps[0, 8, 8] = 4.0
    assert visualize.energy_in_box(maps, [(2, 2, 4, 4)]) == [0.5]


def test_centre_clip_maps_the_box_into_crop_pixels():
    frames = np.zeros((20, 48, 64, 3), np.uint8)
    boxes = np.tile([[24, 16, 40, 32]], (20, 1))
    clip, box = visualize.centre_clip(frames, 4, 2, 24, boxes)
    assert clip.shape == (4, 24, 24, 3)
    # scale 0.5 -> frame 32x24, left offset 4: box x 12..20 -> 8..16, y 8..16
    assert box.tolist() == [8, 8, 16, 16]


def test_kernels_violin_plot_for_r2plus1d(tmp_path, tiny_data_root):
    torch.manual_seed(0)
    path = tmp_path / "r21d.pt"
    torch.save(export_backbone_state(build_backbone("r2plus1d_18")), path)
    names = [n for n, _ in visualize.temporal_kernels(build_backbone("r2plus1d_18"))]
    assert len(names) >= 8 and all(".0.1" in n or "stem" in n or "conv" in n for n in names)
    (w, h), _ = run("kernels", tmp_path, tiny_data_root, "--ckpt", str(path), "--ckpt", str(path),
                    "model.backbone=r2plus1d_18")
    assert w > 400 and h > 200
