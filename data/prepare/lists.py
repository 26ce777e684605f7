"""The lists a preparer writes: ``trainlist.txt`` / ``testlist.txt`` of the listed videos found on
disk (``relative/path label``, paths relative to the output folder, 0-based labels) and
``classInd.txt`` (1-based names), with a report of the listed videos that were missing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from data.filelist import CLASS_NAMES_FILE, LIST_FOR_SPLIT, write_class_names, write_file_list

log = logging.getLogger(__name__)

NAMES_IN_REPORT = 5


@dataclass
class PrepareReport:
    """What a preparer wrote: list paths, videos per split, and the listed videos it did not find."""

    dataset: str
    out: Path
    class_names: list[str]
    lists: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.dataset}: {len(self.class_names)} classes -> {self.out}"]
        for split, path in self.lists.items():
            missing = self.missing.get(split, [])
            line = f"  {split}: {self.counts[split]} videos in {path}"
            if missing:
                line += f"; {len(missing)} missing, left out: {first_names(missing)}"
            lines.append(line)
        return "\n".join(lines)


def first_names(names: list[str]) -> str:
    """The first NAMES_IN_REPORT names, with how many more there are."""
    shown = ", ".join(names[:NAMES_IN_REPORT])
    return shown + (f" ... (+{len(names) - NAMES_IN_REPORT} more)" if len(names) > NAMES_IN_REPORT else "")


def write_prepared(dataset: str, out: str | os.PathLike, class_names: list[str],
                   splits: dict[str, list[tuple[Path, int]]], strict: bool = False) -> PrepareReport:
    """Write the lists of existing videos and classInd.txt (when there are class names); report
    (or, if ``strict``, raise on) missing ones."""
    out = Path(out)
    report = PrepareReport(dataset, out, list(class_names))
    missing_by_split = {
        split: [str(path) for path, _ in items if not path.is_file()] for split, items in splits.items()
    }
    if strict and any(missing_by_split.values()):
        missing = [name for names in missing_by_split.values() for name in names]
        raise FileNotFoundError(f"{dataset}: {len(missing)} listed videos are missing: {first_names(missing)}")
    out.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        present = [(path, label) for path, label in items if path.is_file()]
        list_path = out / LIST_FOR_SPLIT[split]
        write_file_list(list_path, [(os.path.relpath(path, out), label) for path, label in present])
        report.lists[split] = list_path
        report.counts[split] = len(present)
        report.missing[split] = missing_by_split[split]
        if missing_by_split[split]:
            log.warning("%s %s: %d listed videos missing, left out: %s", dataset, split,
                        len(missing_by_split[split]), first_names(missing_by_split[split]))
    if class_names:
        write_class_names(out / CLASS_NAMES_FILE, class_names)
    return report

