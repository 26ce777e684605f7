"""File lists for the real benchmarks, built from their official annotation files.

Every preparer writes into ``out`` (data.prepare.lists): ``trainlist.txt`` and ``testlist.txt``
(``relative/path label``, paths relative to ``out``, 0-based labels) and
``classInd.txt`` (1-based names). Listed videos that are not on disk are left
out of the lists and reported (count and first names); ``strict=True`` raises
instead.

Where each preparer looks under ``root`` (first match wins):

- UCF101: ``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt`` in ``root``
  or ``root/ucfTrainTestlist``; videos ``<Class>/v_*.avi`` under ``root/UCF-101``,
  ``root/videos`` or ``root``. A train line's class number must name its class
  folder in classInd.txt (compared ignoring case).
- HMDB51: ``<class>_test_splitN.txt`` (``video.avi 1|2|0``: 1 train, 2 test,
  0 unused) in ``root/testTrainMulti_7030_splits``, ``root/splits`` or ``root``;
  videos ``<class>/<video>.avi`` under ``root/videos``, ``root/hmdb51_org`` or ``root``.
  Classes are the sorted class names.
- Kinetics-400: ``train.csv`` and ``validate.csv`` (header
  ``label,youtube_id,time_start,time_end,split``) in ``root``, ``root/annotations``
  or ``root/kinetics400``; videos ``<youtube_id>_<start:06d>_<end:06d>.<ext>``
  (ext mp4, webm, mkv or avi) anywhere up to two levels below ``root/train`` for
  train.csv and ``root/val``, ``root/validate`` or ``root/valid`` for validate.csv
  (so both ``<split>/<label>/<file>`` and ``<split>/<file>`` work). Classes are
  the sorted labels of train.csv; validate.csv is the test list.
- Diving48 V2: ``Diving48_V2_train.json`` and ``Diving48_V2_test.json`` (lists of
  ``{"vid_name", "label", ...}``) in ``root`` or ``root/annotations``; videos
  ``<vid_name>.mp4`` in ``root/rgb``, ``root/videos`` or ``root``. Class names come from
  ``Diving48_vocab.json`` (each entry a name or a list of words joined by ``_``)
  when present, else the label numbers.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from data.filelist import READ_ENCODING, read_class_names
from data.prepare.lists import PrepareReport, write_prepared

OFFICIAL_SPLITS = (1, 2, 3)

HMDB_TRAIN, HMDB_TEST, HMDB_UNUSED = 1, 2, 0
KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
KINETICS_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi")
KINETICS_SEARCH_DEPTH = 2
DIVING48_KEYS = ("vid_name", "label")


def _find_file(root: Path, name: str, subdirs: tuple[str, ...]) -> Path:
    candidates = [root / sub / name for sub in subdirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found; looked for: {', '.join(map(str, candidates))}")


def _find_video_dir(root: Path, subdirs: tuple[str, ...], relpaths: list[str]) -> Path:
    """The first candidate directory holding any of the listed videos (``root`` if none does)."""
    for sub in subdirs:
        directory = root / sub
        if directory.is_dir() and any((directory / rel).is_file() for rel in relpaths):
            return directory
    return root


def _check_split(split: int) -> None:
    if split not in OFFICIAL_SPLITS:
        raise ValueError(f"split must be one of {OFFICIAL_SPLITS}, got {split}")


def _numbered_lines(path: Path):
    with open(path, encoding=READ_ENCODING) as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text:
                yield number, text


def _check_ucf_train_class(relpath: str, class_name: str, path: Path, number: int) -> None:
    """A train line's class folder must be the class its number names in classInd.txt."""
    folder, slash, _ = relpath.partition("/")
    if not slash or folder.lower() != class_name.lower():
        raise ValueError(f"{path}:{number}: {relpath!r} is not in the folder of class {class_name!r}, "
                         f"which its class number names in classInd.txt")


def prepare_ucf101(root: str | os.PathLike, out: str | os.PathLike, split: int = 1,
                   strict: bool = False) -> PrepareReport:
    """UCF101 split ``split`` from classInd.txt, trainlist0N.txt and testlist0N.txt."""
    _check_split(split)
    root = Path(root)
    annotation_dirs = ("", "ucfTrainTestlist")
    class_names = read_class_names(_find_file(root, "classInd.txt", annotation_dirs))
    by_lower_name = {name.lower(): label for label, name in enumerate(class_names)}

    train: list[tuple[str, int]] = []
    train_path = _find_file(root, f"trainlist{split:02d}.txt", annotation_dirs)
    for number, text in _numbered_lines(train_path):
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(class_names):
            raise ValueError(f"{train_path}:{number}: expected 'Class/video.avi index' with index in "
                             f"[1, {len(class_names)}], got {text!r}")
        label = int(parts[1]) - 1
        _check_ucf_train_class(parts[0], class_names[label], train_path, number)
        train.append((parts[0], label))

    test: list[tuple[str, int]] = []
    test_path = _find_file(root, f"testlist{split:02d}.txt", annotation_dirs)
    for number, text in _numbered_lines(test_path):
        class_dir = text.split("/", 1)[0].lower()
        if "/" not in text or class_dir not in by_lower_name:
            raise ValueError(f"{test_path}:{number}: expected 'Class/video.avi' with a class from "
                             f"classInd.txt, got {text!r}")
        test.append((text, by_lower_name[class_dir]))

    video_dir = _find_video_dir(root, ("UCF-101", "videos", ""), [rel for rel, _ in train + test])
    splits = {name: [(video_dir / rel, label) for rel, label in items]
              for name, items in (("train", train), ("test", test))}
    return write_prepared("ucf101", out, class_names, splits, strict)


def prepare_hmdb51(root: str | os.PathLike, out: str | os.PathLike, split: int = 1,
                   strict: bool = False) -> PrepareReport:
    """HMDB51 split ``split`` from the per-class ``<class>_test_splitN.txt`` files."""
    _check_split(split)
    root = Path(root)
    suffix = f"_test_split{split}.txt"
    split_files = []
    for sub in ("testTrainMulti_7030_splits", "splits", ""):
        split_files = sorted((root / sub).glob(f"*{suffix}"))
        if split_files:
            break
    if not split_files:
        raise FileNotFoundError(f"no *{suffix} files in {root}/testTrainMulti_7030_splits, {root}/splits or {root}")
    class_names = sorted(path.name[: -len(suffix)] for path in split_files)
    items: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    tags = {HMDB_TRAIN: "train", HMDB_TEST: "test"}
    for path in split_files:
        label = class_names.index(path.name[: -len(suffix)])
        for number, text in _numbered_lines(path):
            parts = text.rsplit(maxsplit=1)
            if len(parts) != 2 or parts[1] not in {str(HMDB_TRAIN), str(HMDB_TEST), str(HMDB_UNUSED)}:
                raise ValueError(f"{path}:{number}: expected 'video.avi 0|1|2', got {text!r}")
            tag = int(parts[1])
            if tag in tags:
                items[tags[tag]].append((f"{class_names[label]}/{parts[0]}", label))
    video_dir = _find_video_dir(root, ("videos", "hmdb51_org", ""),
                                [rel for split_items in items.values() for rel, _ in split_items])
    splits = {name: [(video_dir / rel, label) for rel, label in split_items]
              for name, split_items in items.items()}
    return write_prepared("hmdb51", out, class_names, splits, strict)


def _read_kinetics_csv(path: Path) -> list[dict]:
    with open(path, encoding=READ_ENCODING, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in KINETICS_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}; expected header {','.join(KINETICS_COLUMNS)}")
        rows = []
        for number, row in enumerate(reader, start=2):
            try:
                row["time_start"], row["time_end"] = int(float(row["time_start"])), int(float(row["time_end"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{number}: time_start/time_end must be numbers, got "
                                 f"{row['time_start']!r}, {row['time_end']!r}") from None
            rows.append(row)
    return rows


def _videos_by_stem(directories: list[Path], extensions: tuple[str, ...], depth: int) -> dict[str, Path]:
    """Map file stem -> path for videos up to ``depth`` directory levels below each directory."""
    found: dict[str, Path] = {}
    for directory in directories:
        if not directory.is_dir():
            continue
        level = [directory]
        for _ in range(depth + 1):
            below = []
            for folder in level:
                with os.scandir(folder) as scan:
                    for item in scan:
                        if item.is_dir():
                            below.append(Path(item.path))
                        elif os.path.splitext(item.name)[1].lower() in extensions:
                            found.setdefault(os.path.splitext(item.name)[0], Path(item.path))
            level = below
    return found


def kinetics_file_stem(youtube_id: str, time_start: int, time_end: int) -> str:
    return f"{youtube_id}_{time_start:06d}_{time_end:06d}"


def prepare_kinetics400(root: str | os.PathLike, out: str | os.PathLike,
                        strict: bool = False) -> PrepareReport:
    """Kinetics-400 from train.csv (train list) and validate.csv (test list)."""
    root = Path(root)
    annotation_dirs = ("", "annotations", "kinetics400")
    sources = {"train": ("train.csv", ("train",)), "test": ("validate.csv", ("val", "validate", "valid"))}
    rows = {split: _read_kinetics_csv(_find_file(root, csv_name, annotation_dirs))
            for split, (csv_name, _) in sources.items()}
    class_names = sorted({row["label"] for row in rows["train"]})
    label_of = {name: index for index, name in enumerate(class_names)}
    splits = {}
    for split, (csv_name, dirs) in sources.items():
        videos = _videos_by_stem([root / d for d in dirs], KINETICS_EXTENSIONS, KINETICS_SEARCH_DEPTH)
        items = []
        for number, row in enumerate(rows[split], start=2):
            if row["label"] not in label_of:
                raise ValueError(f"{csv_name}:{number}: label {row['label']!r} does not occur in train.csv")
            stem = kinetics_file_stem(row["youtube_id"], row["time_start"], row["time_end"])
            path = videos.get(stem, root / dirs[0] / row["label"] / f"{stem}{KINETICS_EXTENSIONS[0]}")
            items.append((path, label_of[row["label"]]))
        splits[split] = items
    return write_prepared("kinetics400", out, class_names, splits, strict)


def _read_json(path: Path):
    """Parse a JSON file, naming it when it is malformed."""
    try:
        return json.loads(path.read_text(encoding=READ_ENCODING))
    except ValueError as error:  # malformed JSON or not UTF-8
        raise ValueError(f"{path}: not valid JSON: {error}") from error


def _diving48_names(vocab_path: Path | None, labels: list[int]) -> list[str]:
    if vocab_path is None:
        return [str(label) for label in range(max(labels) + 1)]
    vocab = _read_json(vocab_path)
    if not isinstance(vocab, list) or len(vocab) <= max(labels):
        raise ValueError(f"{vocab_path}: expected a list with at least {max(labels) + 1} class entries")
    return ["_".join(map(str, entry)) if isinstance(entry, list) else str(entry) for entry in vocab]


def prepare_diving48(root: str | os.PathLike, out: str | os.PathLike, strict: bool = False) -> PrepareReport:
    """Diving48 V2 from Diving48_V2_train.json and Diving48_V2_test.json."""
    root = Path(root)
    annotation_dirs = ("", "annotations")
    items: dict[str, list[tuple[str, int]]] = {}
    for split in ("train", "test"):
        path = _find_file(root, f"Diving48_V2_{split}.json", annotation_dirs)
        records = _read_json(path)
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of {{'vid_name', 'label', ...}} records")
        items[split] = []
        for position, record in enumerate(records):
            if not isinstance(record, dict) or any(key not in record for key in DIVING48_KEYS):
                raise ValueError(f"{path}: record {position} lacks {DIVING48_KEYS}: {record!r}")
            label = record["label"]
            if not isinstance(label, int) or label < 0:
                raise ValueError(f"{path}: record {position} has label {label!r}, expected an integer >= 0")
            items[split].append((f"{record['vid_name']}.mp4", label))
    labels = [label for split_items in items.values() for _, label in split_items]
    try:
        vocab_path = _find_file(root, "Diving48_vocab.json", annotation_dirs)
    except FileNotFoundError:
        vocab_path = None
    class_names = _diving48_names(vocab_path, labels)
    video_dir = _find_video_dir(root, ("rgb", "videos", ""),
                                [rel for split_items in items.values() for rel, _ in split_items])
    splits = {name: [(video_dir / rel, label) for rel, label in split_items]
              for name, split_items in items.items()}
    return write_prepared("diving48", out, class_names, splits, strict)


PREPARERS = {
    "ucf101": prepare_ucf101,
    "hmdb51": prepare_hmdb51,
    "kinetics400": prepare_kinetics400,
    "diving48": prepare_diving48,
}
SPLIT_DATASETS = ("ucf101", "hmdb51")

