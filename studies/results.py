"""Collect every results.json under runs/ into markdown tables: `python -m studies.results [--runs runs] [--out FILE]`.

Like the paper's Table 5 (classification: one row per pretrained weights x
backbone x input x protocol, one column per dataset, video-level top-1) and
Table 6 (retrieval: one row per pretrained weights x backbone x dataset, one
column per R@k). A dataset tested on more than one test list gets a column
per list, "dataset (list)". When a cell was measured more than once, the
newest results.json wins; the runs column names every run behind a row.
Writes FILE (default <runs>/results.md) and prints the same tables.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import defaultdict

from engine.errors import run_command
from engine.evaluation import RESULTS_FILE

CLASSIFY_METRIC = "video_top1"
RETRIEVAL_PROTOCOL = "retrieval"
MISSING = "–"
GENERIC_CHECKPOINT_NAMES = ("backbone.pt",)


def collect_results(runs_dir: str) -> list[dict]:
    """Every results.json below runs_dir (any depth), oldest first, each with its file path under "_path"."""
    paths = glob.glob(os.path.join(runs_dir, "**", RESULTS_FILE), recursive=True)
    records = []
    for path in sorted(paths, key=os.path.getmtime):
        with open(path) as f:
            try:
                record = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from None
        missing = [k for k in ("protocol", "dataset", "metrics", "pretrained") if k not in record]
        if missing:
            raise ValueError(f"{path}: not a results file of runners.classify/retrieve (missing {missing})")
        records.append({**record, "_path": path})
    return records


def pretrained_label(pretrained: dict) -> str:
    """'random init', or the pretraining run's name (plus the file when not backbone.pt) and its hash."""
    if not pretrained.get("path"):
        return f"{pretrained.get('init', 'random')} init"
    path = os.path.normpath(pretrained["path"])
    folder, name = os.path.split(path)
    if os.path.basename(folder) == "checkpoints":
        folder = os.path.dirname(folder)
    run = os.path.basename(folder) or path
    label = run if name in GENERIC_CHECKPOINT_NAMES else f"{run}/{name}"
    return f"{label} ({pretrained.get('sha256') or '?'})"


def _run_name(record: dict) -> str:
    return record.get("run") or os.path.basename(os.path.dirname(record["_path"]))


def _fmt(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else MISSING


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _test_list(record: dict) -> str:
    return (record.get("split") or {}).get("test", "?")


def dataset_columns(records: list[dict]) -> list[str]:
    """Each record's column: its dataset, with the test list added where a dataset was tested on several."""
    lists = defaultdict(set)
    for r in records:
        lists[r["dataset"]].add(_test_list(r))
    return [r["dataset"] if len(lists[r["dataset"]]) == 1 else f"{r['dataset']} ({_test_list(r)})" for r in records]


def classification_table(records: list[dict]) -> str:
    """Rows: pretrained x backbone x input x protocol; columns: datasets (video top-1, %)."""
    records = [r for r in records if r["protocol"] != RETRIEVAL_PROTOCOL]
    columns = dataset_columns(records)
    datasets = sorted(set(columns))
    cells: dict[tuple, dict] = defaultdict(dict)
    runs: dict[tuple, list] = defaultdict(list)
    for r, column in zip(records, columns, strict=True):
        key = (pretrained_label(r["pretrained"]), r.get("backbone", "?"), r.get("input", "?"), r["protocol"])
        cells[key][column] = r["metrics"].get(CLASSIFY_METRIC)
        runs[key].append(_run_name(r))
    rows = [[*key, *(_fmt(cells[key].get(d)) for d in datasets), ", ".join(runs[key])] for key in sorted(cells)]
    return _table(["pretrained", "backbone", "input", "protocol", *datasets, "runs"], rows)


def retrieval_table(records: list[dict]) -> str:
    """Rows: pretrained x backbone x input x dataset; columns: R@k (%)."""
    records = [r for r in records if r["protocol"] == RETRIEVAL_PROTOCOL]
    ks = sorted({int(m[2:]) for r in records for m in r["metrics"] if m.startswith("R@")})
    cells: dict[tuple, dict] = {}
    runs: dict[tuple, list] = defaultdict(list)
    for r, column in zip(records, dataset_columns(records), strict=True):
        key = (pretrained_label(r["pretrained"]), r.get("backbone", "?"), r.get("input", "?"), column)
        cells[key] = r["metrics"]
        runs[key].append(_run_name(r))
    rows = [[*key, *(_fmt(cells[key].get(f"R@{k}")) for k in ks), ", ".join(runs[key])] for key in sorted(cells)]
    return _table(["pretrained", "backbone", "input", "dataset", *(f"R@{k}" for k in ks), "runs"], rows)


def results_markdown(records: list[dict]) -> str:
    parts = ["# Results\n"]
    if any(r["protocol"] != RETRIEVAL_PROTOCOL for r in records):
        parts += ["\n## Action recognition (video top-1, %)\n\n", classification_table(records)]
    if any(r["protocol"] == RETRIEVAL_PROTOCOL for r in records):
        parts += ["\n## Video retrieval (recall@k, %)\n\n", retrieval_table(records)]
    return "".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs", help="folder searched for results.json (default: runs)")
    p.add_argument("--out", help="markdown file to write (default: <runs>/results.md)")
    a = p.parse_args(argv)
    if not os.path.isdir(a.runs):
        p.error(f"--runs '{a.runs}' is not a folder")
    records = collect_results(a.runs)
    if not records:
        print(f"no {RESULTS_FILE} under {a.runs}/: run `make linear`, `make finetune` or `make retrieve` first",
              file=sys.stderr)
        return 1
    text = results_markdown(records)
    out = a.out or os.path.join(a.runs, "results.md")
    with open(out, "w") as f:
        f.write(text)
    print(text + f"\n({len(records)} results; written to {out})")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
