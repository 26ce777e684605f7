"""Background-bias probe of a trained classifier:
`python -m studies.bias_probe --run runs/<classify run> [key=value ...]`.

Reads the classify run's resolved config (config.yaml) and its classifier (checkpoints/last.pt);
``key=value`` overrides apply on top (e.g. data.val_list=..., data.root=..., run.name=...).
Scores the test list under four conditions (original, background only, foreground only,
swapped onto another class's background; studies.probe says how each clip is made),
with FAME's masks and, on synthetic data, the object boxes. Writes bias.json, bias.md and
bias-examples.png into <run.dir>/<run.name>/ (default name bias-<classify run>) and the
scores to W&B.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np

from data.synthetic import load_annotations
from engine.config import ConfigError
from engine.errors import run_command
from engine.loaders import build_test_clips_loader
from engine.setup import open_logger, prepare_run_dir, resolve_device, setup_logging
from studies import bias
from studies import probe as P
from studies.visualize import figure_fame_config, save_grid

RESULTS_FILE, TABLE_FILE, EXAMPLES_FILE = "bias.json", "bias.md", "bias-examples.png"


def probe_data(cfg, loader) -> P.ProbeData:
    """Labels of the test videos and, where the data has annotations.json, their clips' boxes."""
    videos = loader.sampler.videos
    labels = np.array([v.label for v in videos], dtype=np.int64)
    try:
        annotated = load_annotations(cfg.data.root)["videos"]
    except FileNotFoundError:
        return P.ProbeData(labels)
    boxes = []
    for video in videos:
        relpath = os.path.relpath(video.path, cfg.data.root)
        if relpath not in annotated:
            return P.ProbeData(labels)
        frame_boxes = np.asarray(annotated[relpath]["boxes"], dtype=np.int64)
        boxes.append(P.clip_frame_boxes(frame_boxes, video.frames, video.width, video.height, cfg))
    return P.ProbeData(labels, boxes)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="run directory of runners.classify (runs/<name>)")
    p.add_argument("overrides", nargs="*", help="key=value on top of the run's config, e.g. data.val_list=x.txt")
    a = p.parse_args(argv)
    try:
        cfg, model = P.load_classifier(a.run, a.overrides)
    except (P.ProbeError, ConfigError) as error:
        p.error(str(error))
    if cfg.run.name == os.path.basename(os.path.normpath(a.run)):      # the classify run's own name
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, name=f"bias-{cfg.run.name}"))
    setup_logging()
    device = resolve_device(cfg.device, cfg)
    cfg, run_dir = prepare_run_dir(cfg)
    loader = build_test_clips_loader(cfg, cfg.data.val_list, 0, 1, device)
    data = probe_data(cfg, loader)
    sources = [s for s in P.MASK_SOURCES if s != "box" or data.boxes is not None]
    model = model.to(device)
    results, examples = {}, {}
    stills = P.video_stills(loader, len(data.labels), cfg.eval.clips_per_video, cfg.aug.mean, cfg.aug.std)
    for source in sources:
        found = P.probe_classifier(model, loader, data, stills, source, cfg, figure_fame_config(cfg), device)
        results[source], examples[source] = found["scores"], found["examples"]
    with open(os.path.join(run_dir, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump({"run": a.run, "val_list": cfg.data.val_list, "masks": results}, f, indent=1)
    table = P.format_table(results)
    with open(os.path.join(run_dir, TABLE_FILE), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    shown = sources[-1]            # the object boxes where there are any: the exact masks
    save_grid([(f"{c} ({shown} masks)", examples[shown][c]) for c in bias.CONDITIONS],
              os.path.join(run_dir, EXAMPLES_FILE))
    logger = open_logger(cfg, run_dir, "bias-probe")
    logger.summary({f"bias/{source}/{key}": value for source, s in results.items()
                    for key, value in _flat(s).items()})
    logger.close()
    print(table + f"\n\nwritten: {run_dir}/{RESULTS_FILE}, {TABLE_FILE}, {EXAMPLES_FILE}")
    return run_dir


def _flat(scores: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


if __name__ == "__main__":
    run_command(main)
