"""File lists in DALI's ``file_list`` format and classInd-style class names.

A file list has one video per line: ``relative/path label``. The path is
relative to a root directory (by default the directory holding the list) and
may contain spaces: a line is split on its LAST run of whitespace. Labels are
0-based class indices. Relative paths are joined to the root as written: symlinks
in the list's folder are not resolved first, so ``../`` climbs out of the folder
the list was reached through (the way writers compute relative paths). A UTF-8
byte-order mark at the start of a file is ignored.

A class-name file (``classInd.txt``, as in UCF101) has one class per line:
``index name`` with a 1-based index, so line ``i name`` names label ``i - 1``.
Names may contain spaces: a line is split on its FIRST run of whitespace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

# The file names of a prepared dataset's lists and class names, inside its root.
TRAIN_LIST = "trainlist.txt"
TEST_LIST = "testlist.txt"
CLASS_NAMES_FILE = "classInd.txt"
LIST_FOR_SPLIT = {"train": TRAIN_LIST, "test": TEST_LIST}

COMMENT_PREFIX = "#"
READ_ENCODING = "utf-8-sig"  # UTF-8 that drops a leading byte-order mark (editors on Windows add one)
CLASS_INDEX_BASE = 1


class Entry(NamedTuple):
    """One listed video: absolute path, 0-based label, path as written in the list."""

    path: str
    label: int
    relpath: str


def _meaningful_lines(path: Path) -> Iterable[tuple[int, str]]:
    """Yield (1-based line number, stripped text), skipping blanks and comments."""
    with open(path, encoding=READ_ENCODING) as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text and not text.startswith(COMMENT_PREFIX):
                yield number, text


def _parse_entry_line(text: str, list_path: Path, number: int) -> tuple[str, int]:
    parts = text.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise ValueError(
            f"{list_path}:{number}: expected 'relative/path label', got {text!r}"
        )
    relpath, label_text = parts
    try:
        label = int(label_text)
    except ValueError:
        raise ValueError(
            f"{list_path}:{number}: label {label_text!r} is not an integer in line {text!r}"
        ) from None
    if label < 0:
        raise ValueError(f"{list_path}:{number}: negative label {label} in line {text!r}")
    return relpath, label


def _file_itself(path: Path) -> Path:
    """Where a symlinked file lies (links followed one by one, relative ones from their own folder)."""
    while path.is_symlink():
        target = Path(os.readlink(path))
        path = target if target.is_absolute() else path.parent / target
    return path


def read_file_list(list_path: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Entry]:
    """Read a ``relative/path label`` list; paths resolve against ``root`` (default: the folder
    of the list file itself, through a symlink to the file but along folder paths as written,
    as runners.prepare writes them)."""
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"file list not found: {list_path}")
    base = os.path.abspath(root if root is not None else _file_itself(list_path).parent)
    entries = []
    for number, text in _meaningful_lines(list_path):
        relpath, label = _parse_entry_line(text, list_path, number)
        absolute = os.path.normpath(os.path.join(base, relpath))
        entries.append(Entry(absolute, label, relpath))
    return entries


def write_file_list(list_path: str | os.PathLike, entries: Iterable[tuple[str, int]]) -> int:
    """Write ``(relpath, label)`` pairs as a file list; returns the number of lines written."""
    list_path = Path(list_path)
    lines = []
    for relpath, label in entries:
        relpath = str(relpath)
        if not relpath or relpath != relpath.strip() or "\n" in relpath:
            raise ValueError(f"{list_path}: cannot write path {relpath!r} (empty, padded or multi-line)")
        if int(label) < 0:
            raise ValueError(f"{list_path}: negative label {label} for {relpath!r}")
        lines.append(f"{relpath} {int(label)}\n")
    list_path.parent.mkdir(parents=True, exist_ok=True)
    list_path.write_text("".join(lines), encoding="utf-8")
    return len(lines)


def read_class_names(classind_path: str | os.PathLike) -> list[str]:
    """Read ``index name`` lines (1-based, consecutive) into a list where item i names label i."""
    classind_path = Path(classind_path)
    if not classind_path.is_file():
        raise FileNotFoundError(f"class-name file not found: {classind_path}")
    names = []
    for number, text in _meaningful_lines(classind_path):
        parts = text.split(maxsplit=1)
        expected = len(names) + CLASS_INDEX_BASE
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{classind_path}:{number}: expected 'index name', got {text!r}")
        if int(parts[0]) != expected:
            raise ValueError(
                f"{classind_path}:{number}: class index {parts[0]} out of order, expected {expected}"
            )
        names.append(parts[1].strip())
    return names


def write_class_names(path: str | os.PathLike, names: Iterable[str]) -> None:
    """Write class names as 1-based ``index name`` lines (UCF101 classInd style)."""
    path = Path(path)
    lines = []
    for index, name in enumerate(names, start=CLASS_INDEX_BASE):
        name = str(name).strip()
        if not name or "\n" in name:
            raise ValueError(f"{path}: class {index} has an empty or multi-line name {name!r}")
        lines.append(f"{index} {name}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")


def check_labels(entries: Iterable[Entry | tuple], num_classes: int, list_path: str | os.PathLike) -> None:
    """Fail if any label lies outside ``[0, num_classes)``, naming the list, the first bad entry and num_classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes} (for {list_path})")
    bad = [(number, entry) for number, entry in enumerate(entries, start=1)
           if not 0 <= int(entry[1]) < num_classes]
    if bad:
        number, entry = bad[0]
        relpath = entry.relpath if isinstance(entry, Entry) else entry[0]
        raise ValueError(
            f"{list_path}: {len(bad)} entries have labels outside [0, {num_classes - 1}] "
            f"for num_classes={num_classes}; first: entry {number} {relpath!r} label {entry[1]}"
        )
