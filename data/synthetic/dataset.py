"""Writing a synthetic dataset: every planned video rendered and encoded (in worker
processes), the file lists, classInd.txt, annotations.json and spec.json (the layout of the
package docstring); and reading its annotations back."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from data.filelist import (
    CLASS_NAMES_FILE,
    LIST_FOR_SPLIT,
    TEST_LIST,
    TRAIN_LIST,
    Entry,
    read_file_list,
    write_class_names,
    write_file_list,
)
from data.parallel import auto_workers, process_pool
from data.spec import SyntheticSpec
from data.synthetic.plan import SPLITS, VIDEOS_DIR, VideoPlan, background_pools, plan_videos
from data.synthetic.render import render_video
from data.video_io import write_video

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
ANNOTATIONS_FILE = "annotations.json"
SPEC_FILE = "spec.json"
VIDEOS_PER_TASK = 4     # videos handed to a worker process at a time


def _write_planned_video(root: str, spec: SyntheticSpec, plan: VideoPlan) -> tuple[str, dict]:
    frames, boxes = render_video(spec, plan)
    relpath = plan.relpath(spec)
    path = Path(root) / relpath
    partial = path.with_name(f".partial-{path.name}")
    write_video(partial, frames, spec.fps, spec.codec, spec.gop)
    os.replace(partial, path)
    record = {
        "split": plan.split, "label": plan.label, "motion": spec.motions[plan.label],
        "pool": plan.pool, "background": plan.background, "boxes": boxes.tolist(),
    }
    return relpath, record


def _spec_record(spec: SyntheticSpec, complete: bool) -> dict:
    return {"generator_version": GENERATOR_VERSION, "complete": complete, "spec": spec.to_dict()}


class NotSyntheticError(ValueError):
    """A directory to generate into that holds files of the dataset's layout but no spec.json:
    data of another origin, which generating would overwrite."""


def _clear_previous(root: Path) -> None:
    """Remove a previous synthetic dataset's outputs; refuse to touch a directory that is not one."""
    ours = [VIDEOS_DIR, TRAIN_LIST, TEST_LIST, CLASS_NAMES_FILE, ANNOTATIONS_FILE]
    present = [name for name in ours if (root / name).exists()]
    if present and not (root / SPEC_FILE).exists():
        raise NotSyntheticError(
            f"{root} holds {present} but no {SPEC_FILE}: not a synthetic dataset, refusing to overwrite"
        )
    if (root / VIDEOS_DIR).exists():
        shutil.rmtree(root / VIDEOS_DIR)
    for name in ours[1:] + [SPEC_FILE]:
        (root / name).unlink(missing_ok=True)
    for cache in root.glob("*.index.json"):
        cache.unlink()


def generate_dataset(root: str | os.PathLike, spec: SyntheticSpec, workers: int | None = None) -> dict:
    """Write the dataset described by ``spec`` under ``root`` (layout in the module docstring).

    ``workers`` processes render and encode (default ``auto_workers()``); the output does not depend on it.

    Returns a summary: paths of the lists, class names, video counts, background pools, seconds taken.
    """
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    (root / SPEC_FILE).write_text(json.dumps(_spec_record(spec, complete=False), indent=2))

    plans = plan_videos(spec)
    workers = auto_workers() if workers is None else workers
    if workers > 1:
        with process_pool(workers) as pool:
            results = list(pool.map(_write_planned_video, [str(root)] * len(plans),
                                    [spec] * len(plans), plans, chunksize=VIDEOS_PER_TASK))
    else:
        results = [_write_planned_video(str(root), spec, plan) for plan in plans]

    for split in SPLITS:
        write_file_list(root / LIST_FOR_SPLIT[split],
                        [(relpath, record["label"]) for relpath, record in results
                         if record["split"] == split])
    write_class_names(root / CLASS_NAMES_FILE, spec.motions)
    annotations = {
        "box_format": "x0 y0 x1 y1 in pixels, x1 and y1 exclusive, one box per frame",
        "pools": background_pools(spec),
        "videos": dict(results),
    }
    (root / ANNOTATIONS_FILE).write_text(json.dumps(annotations, separators=(",", ":")))
    (root / SPEC_FILE).write_text(json.dumps(_spec_record(spec, complete=True), indent=2))
    seconds = time.perf_counter() - started
    log.info("wrote %d synthetic videos to %s in %.1f s", len(plans), root, seconds)
    return _summary(root, spec, seconds, generated=True)


def _summary(root: Path, spec: SyntheticSpec, seconds: float, generated: bool) -> dict:
    return {
        "root": str(root),
        "train_list": str(root / TRAIN_LIST),
        "test_list": str(root / TEST_LIST),
        "class_names": list(spec.motions),
        "videos": {split: spec.videos_per_class(split) * spec.num_classes for split in SPLITS},
        "pools": background_pools(spec),
        "seconds": seconds,
        "generated": generated,
    }


def dataset_is_current(root: str | os.PathLike, spec: SyntheticSpec) -> bool:
    """True if ``root`` holds a complete dataset made from ``spec`` with every listed video present."""
    root = Path(root)
    try:
        record = json.loads((root / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return False
    if record != _spec_record(spec, complete=True):
        return False
    try:
        entries: list[Entry] = [e for split in SPLITS for e in read_file_list(root / LIST_FOR_SPLIT[split])]
    except (OSError, ValueError):
        return False
    expected = sum(spec.videos_per_class(split) for split in SPLITS) * spec.num_classes
    return len(entries) == expected and all(os.path.isfile(e.path) for e in entries)


def ensure_dataset(root: str | os.PathLike, spec: SyntheticSpec, workers: int | None = None) -> dict:
    """Generate the dataset unless ``root`` already holds a complete one made from the same spec.

    Call it from one process only (rank 0) when several share the directory. A ``root`` holding
    files of the layout but no spec.json is refused (NotSyntheticError), never overwritten.
    """
    root = Path(root)
    if dataset_is_current(root, spec):
        return _summary(root, spec, seconds=0.0, generated=False)
    return generate_dataset(root, spec, workers=workers)


def load_annotations(root: str | os.PathLike) -> dict:
    """The annotations.json of a synthetic dataset (see module docstring)."""
    path = Path(root) / ANNOTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic annotations at {path}")
    return json.loads(path.read_text())


def load_boxes(root: str | os.PathLike, relpath: str) -> np.ndarray:
    """Per-frame object boxes (T x 4 int64, [x0, y0, x1, y1]) of one video, by its path relative to root."""
    videos = load_annotations(root)["videos"]
    if relpath not in videos:
        raise KeyError(f"{relpath!r} is not in {Path(root) / ANNOTATIONS_FILE}")
    return np.asarray(videos[relpath]["boxes"], dtype=np.int64)

