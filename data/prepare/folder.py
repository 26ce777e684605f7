"""File lists for a folder of your own videos, one folder per class (torchvision's DatasetFolder
layout): ``root/<class>/**/<video>`` with any container FFmpeg reads (by extension,
``VIDEO_EXTENSIONS``); classes are the sorted names of the folders holding videos, and
each class is split on its own (``--val-fraction``, ``--seed``). Videos directly in
``root`` with no class folders make an unlabelled trainlist (label 0) for pretraining.
The videos are probed (data.index) and the unusable ones left out, named; with ``transcode``
copies in another codec are written beside the lists (data.transcode).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from data.index import build_index
from data.prepare.lists import PrepareReport, first_names, write_prepared
from data.transcode import TranscodeReport, transcode_list
from data.video_io import DALI_CPU_CODECS

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".ts",
                              ".mts", ".m2ts", ".wmv", ".flv", ".ogv", ".3gp"})
DEFAULT_VAL_FRACTION = 0.2
MIN_VIDEOS_TO_SPLIT = 2      # a class with fewer videos goes to the training list only
UNLABELLED = 0               # the label of every video of a folder without class folders
SOURCE_LISTS_DIR = "source"  # with transcode: the lists of the original files, below ``out``


@dataclass
class FolderScan:
    """The videos under a folder: per class in sorted class-name order (one class named '' when
    unlabelled), and the files and folders left out, each as 'relative/path (why)'."""

    classes: dict[str, list[Path]]
    unlabelled: bool
    skipped: list[str]

    def without(self, paths: set[str]) -> FolderScan:
        """The same scan less the videos at these absolute paths (every class kept, so labels stay)."""
        kept = {name: [video for video in videos if os.path.abspath(video) not in paths]
                for name, videos in self.classes.items()}
        return FolderScan(kept, self.unlabelled, self.skipped)

    def splits(self, val_fraction: float, seed: int) -> dict[str, list[tuple[Path, int]]]:
        """The (video, label) pairs per list: stratified train/test, or every video in train with
        label UNLABELLED."""
        if self.unlabelled:
            return {"train": [(path, UNLABELLED) for videos in self.classes.values() for path in videos]}
        return split_by_class(self.classes, val_fraction, seed)

    def train_only(self) -> list[str]:
        """Classes with too few videos to appear in the test list."""
        if self.unlabelled:
            return []
        return [name for name, videos in self.classes.items() if len(videos) < MIN_VIDEOS_TO_SPLIT]


@dataclass
class FolderReport:
    """What prepare_folder wrote: the lists of the originals, the unusable videos it left out,
    the files it skipped, and the transcoded copies' reports (when asked for)."""

    prepared: PrepareReport
    scan: FolderScan
    unusable: list[str] = field(default_factory=list)
    codecs: set[str] = field(default_factory=set)
    transcoded: list[TranscodeReport] = field(default_factory=list)

    def summary(self) -> str:
        lines = [self.prepared.summary()]
        if self.scan.unlabelled:
            lines.append("  no class folders: every video is listed with label 0, for pretraining only; "
                         "a linear probe needs one folder per class")
        if self.scan.train_only():
            lines.append(f"  in the train list only (fewer than {MIN_VIDEOS_TO_SPLIT} usable videos): "
                         f"{first_names(self.scan.train_only())}")
        if self.unusable:
            lines.append(f"  {len(self.unusable)} unusable, left out: {first_names(self.unusable)}")
        if self.scan.skipped:
            lines.append(f"  {len(self.scan.skipped)} skipped: {first_names(self.scan.skipped)}")
        lines += [f"  {report.summary()}" for report in self.transcoded]
        if self.transcoded:
            lines.append(f"  lists of the copies: {', '.join(str(r.list_path) for r in self.transcoded)}")
        elif self.codecs - DALI_CPU_CODECS:
            lines.append(f"  {', '.join(sorted(self.codecs - DALI_CPU_CODECS))} decode only on a GPU (NVDEC); "
                         f"add --transcode vp9 for copies a CPU run decodes")
        return "\n".join(lines)


def _videos_below(folder: Path, root: Path) -> tuple[list[Path], list[str]]:
    """Videos (by extension) anywhere below ``folder``, sorted, and the other files as skipped
    entries; hidden files and folders are passed over."""
    videos, skipped = [], []
    for here, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            path = Path(here) / name
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                videos.append(path)
            elif not name.startswith("."):
                skipped.append(f"{path.relative_to(root)} (not a video by its extension)")
    return videos, skipped


def scan_video_folder(root: str | os.PathLike) -> FolderScan:
    """The class folders of ``root`` and their videos, or ``root``'s own videos when it has no
    class folders (unlabelled)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of videos")
    classes: dict[str, list[Path]] = {}
    loose: list[Path] = []
    skipped: list[str] = []
    for item in sorted(root.iterdir()):
        if item.name.startswith("."):
            continue
        if item.is_dir():
            videos, others = _videos_below(item, root)
            skipped += others
            if videos:
                classes[item.name] = videos
            else:
                skipped.append(f"{item.name}/ (no videos)")
        elif item.suffix.lower() in VIDEO_EXTENSIONS:
            loose.append(item)
        else:
            skipped.append(f"{item.name} (not a video by its extension)")
    if classes:
        skipped += [f"{path.name} (not in a class folder)" for path in loose]
        return FolderScan(classes, False, skipped)
    if not loose:
        raise ValueError(f"no videos in {root} or its class folders (by extension: "
                         f"{', '.join(sorted(VIDEO_EXTENSIONS))})")
    return FolderScan({"": loose}, True, skipped)


def split_class(videos: list[Path], val_fraction: float, rng: random.Random) -> tuple[list[Path], list[Path]]:
    """(train, test) of one class: ``round(val_fraction * n)`` videos drawn by ``rng`` for test,
    at least one in each split when the class has MIN_VIDEOS_TO_SPLIT or more, else all for train."""
    if len(videos) < MIN_VIDEOS_TO_SPLIT:
        return list(videos), []
    order = sorted(videos)
    rng.shuffle(order)
    test_count = min(max(round(val_fraction * len(order)), 1), len(order) - 1)
    return sorted(order[test_count:]), sorted(order[:test_count])


def split_by_class(classes: dict[str, list[Path]], val_fraction: float,
                   seed: int) -> dict[str, list[tuple[Path, int]]]:
    """Stratified train/test split: each class (label = its position in ``classes``) split on its
    own, with a generator seeded by ``seed`` and the class name, so a class's split does not
    change when other classes come or go."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val-fraction must lie in (0, 1), got {val_fraction}")
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "test": []}
    for label, (name, videos) in enumerate(classes.items()):
        train, test = split_class(videos, val_fraction, random.Random(f"{seed}/{name}"))
        splits["train"] += [(path, label) for path in train]
        splits["test"] += [(path, label) for path in test]
    return splits


def _probe_lists(lists: list[Path], workers: int) -> tuple[dict[str, str], set[str]]:
    """Probe the videos of the lists (data.index, cached beside each list): the unusable ones as
    {absolute path: reason} and the codecs of the usable ones."""
    unusable: dict[str, str] = {}
    codecs: set[str] = set()
    for list_path in lists:
        index = build_index(list_path, workers=workers)
        unusable |= {record.path: record.reason for record in index.bad()}
        codecs |= {record.codec for record in index.good()}
    return unusable, codecs


def _check_out_outside_root(root: Path, out: Path) -> None:
    """Transcoded copies inside ``root`` would be listed as videos of their own on the next run."""
    if out.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"--out {out} lies inside --root {root}: the transcoded copies would be read as "
                         f"more videos on the next run; choose an --out folder outside {root}")


def prepare_folder(root: str | os.PathLike, out: str | os.PathLike, val_fraction: float = DEFAULT_VAL_FRACTION,
                   seed: int = 0, transcode: str | None = None, workers: int = 1) -> FolderReport:
    """Lists for a folder of class folders (or of unlabelled videos), unusable videos left out.

    The videos are probed first and the split is made of the usable ones. With ``transcode``
    (a codec of data.video_io.CODECS) the lists of the originals go to ``out/source`` and ``out``
    gets copies in that codec, mirroring ``root``'s layout, with lists of the same names."""
    root, out = Path(root), Path(out)
    if transcode:
        _check_out_outside_root(root, out)
    scan = scan_video_folder(root)
    list_dir = out / SOURCE_LISTS_DIR if transcode else out
    class_names = [] if scan.unlabelled else list(scan.classes)
    prepared = write_prepared("folder", list_dir, class_names, scan.splits(val_fraction, seed))
    unusable, codecs = _probe_lists(list(prepared.lists.values()), workers)
    if unusable:
        scan = scan.without(set(unusable))
        prepared = write_prepared("folder", list_dir, class_names, scan.splits(val_fraction, seed))
    named = sorted(f"{os.path.relpath(path, root)} ({reason})" for path, reason in unusable.items())
    report = FolderReport(prepared, scan, named, codecs)
    if transcode:
        report.transcoded = [transcode_list(list_path, out, codec=transcode, workers=workers, source_base=root)
                             for list_path in prepared.lists.values()]
    return report

