"""Start-up and host memory of the pretraining loader at Kinetics scale.

    python -m measure.scale links --list LIST --entries 240000 --out DIR
    python -m measure.scale startup --config C [key=value ...] [--out FILE]
    python -m measure.scale epoch --config C [key=value ...] [--every 50] [--out FILE]

``links`` writes DIR/trainlist.txt with ``--entries`` lines whose videos are symbolic links
(DIR/links/<n // 1000>/<n>.<ext>) to LIST's videos in turn, labels kept: a list as long as
Kinetics-400's over a few hundred real files. Every link is a path of its own to the loader
(its own index record, its own entry in the epoch order, its own reads), though the page
cache holds each target once.

``startup`` times what a pretraining run does before its first step, one part after the
other, with the host memory (resident set) after each: reading and checking the list, the
video index (read from its cache: probe it first, ``prepare index``), the usable videos, the
loader (its sampler) and its first batch (which builds the DALI pipelines).

``epoch`` runs one epoch of the pretraining loader and samples the resident set every
``--every`` batches: its level after REFERENCE_BATCHES batches and its largest after that.

Both print a summary and write it as JSON (``--out``; default under the run directory).
Use the config's data keys to point at the list (``data.root=DIR data.synthetic=null``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from data.filelist import TRAIN_LIST, read_file_list, write_file_list
from data.index import build_index
from engine import config as C
from engine.errors import run_command
from engine.loaders import check_labels_of, min_frames, pretrain_settings
from engine.setup import setup_logging
from pipelines.loader import pretrain_loader
from pipelines.videos import videos_from_index

LINKS_DIR = "links"
LINKS_PER_FOLDER = 1000
REFERENCE_BATCHES = 1000     # the epoch's memory is compared with its level after this many batches
DEFAULT_EVERY = 50
KIB = 1024
MIB = KIB * KIB


def resident_mib() -> tuple[float, float]:
    """This process's resident set now and at its peak, in MiB (Linux: /proc/self/status)."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) * KIB / MIB
    return fields["VmRSS"], fields["VmHWM"]


def write_links(list_path: str, entries: int, out: str) -> Path:
    """DIR/trainlist.txt of ``entries`` symbolic links to the list's videos in turn; returns its path."""
    sources = read_file_list(list_path)
    if not sources:
        raise ValueError(f"{list_path}: no videos to link to")
    out = Path(out)
    lines = []
    for number in range(entries):
        source = sources[number % len(sources)]
        relpath = f"{LINKS_DIR}/{number // LINKS_PER_FOLDER}/{number}{Path(source.path).suffix}"
        link = out / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(os.path.abspath(source.path))
        lines.append((relpath, source.label))
    write_file_list(out / TRAIN_LIST, lines)
    return out / TRAIN_LIST


class Steps:
    """Seconds and resident memory after each timed part."""

    def __init__(self):
        self.parts: list[dict] = []

    def time(self, name: str, work):
        started = time.perf_counter()
        result = work()
        rss, peak = resident_mib()
        self.parts.append({"part": name, "seconds": time.perf_counter() - started, "rss_mib": rss, "peak_mib": peak})
        return result


def startup(cfg: C.Config) -> dict:
    """Each part of a pretraining run's start-up, timed, with the resident set after it."""
    device = torch.device("cpu")
    steps = Steps()
    list_path = os.path.join(cfg.data.root, cfg.data.train_list)
    steps.time("read and check the list", lambda: check_labels_of(cfg, cfg.data.train_list))
    index = steps.time("read the video index", lambda: build_index(list_path, min_frames=min_frames(cfg)))
    videos = steps.time("the usable videos", lambda: videos_from_index(index, min_frames=min_frames(cfg),
                                                                       device="cpu"))
    index = None       # the records are not needed past this point: let them go
    loader = steps.time("the loader and its sampler", lambda: pretrain_loader(
        videos, **pretrain_settings(cfg, device, "cpu", steps_per_epoch=0)))
    steps.time("the pipelines and the first batch", lambda: next(iter(loader)))
    loader.close()
    total = sum(part["seconds"] for part in steps.parts)
    return {"list": list_path, "videos": len(videos), "seconds": total, "parts": steps.parts}


def epoch(cfg: C.Config, every: int) -> dict:
    """One epoch of the pretraining loader with the resident set sampled every ``every`` batches."""
    device = torch.device("cpu")
    index = build_index(os.path.join(cfg.data.root, cfg.data.train_list), min_frames=min_frames(cfg))
    videos = videos_from_index(index, min_frames=min_frames(cfg), device="cpu")
    del index
    loader = pretrain_loader(videos, **pretrain_settings(cfg, device, "cpu", steps_per_epoch=0))
    samples, started = [], time.perf_counter()
    for batch, _ in enumerate(loader, start=1):
        if batch % every == 0 or batch == REFERENCE_BATCHES:
            samples.append({"batch": batch, "seconds": time.perf_counter() - started, "rss_mib": resident_mib()[0]})
    loader.close()
    reference = [s["rss_mib"] for s in samples if s["batch"] == REFERENCE_BATCHES]
    after = [s["rss_mib"] for s in samples if s["batch"] > REFERENCE_BATCHES]
    summary = {"videos": len(videos), "batches": len(loader), "batch_size": cfg.train.batch_size,
               "seconds": time.perf_counter() - started, "samples": samples}
    if reference and after:
        summary |= {"rss_at_reference_mib": reference[0], "rss_max_after_mib": max(after),
                    "growth_after_reference": max(after) / reference[0] - 1}
    return summary


def _print_startup(result: dict) -> None:
    print(f"start-up of {result['list']} ({result['videos']} videos): {result['seconds']:.1f} s")
    for part in result["parts"]:
        print(f"  {part['part']:<36}{part['seconds']:>8.2f} s   resident {part['rss_mib']:>8.0f} MiB"
              f"   peak {part['peak_mib']:>8.0f} MiB")


def _print_epoch(result: dict) -> None:
    print(f"epoch: {result['videos']} videos, {result['batches']} batches of {result['batch_size']}, "
          f"{result['seconds']:.0f} s")
    if "growth_after_reference" in result:
        print(f"  resident after {REFERENCE_BATCHES} batches {result['rss_at_reference_mib']:.0f} MiB, largest after "
              f"{result['rss_max_after_mib']:.0f} MiB ({100 * result['growth_after_reference']:+.1f}%)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m measure.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    links = commands.add_parser("links", help="a long list of links to a list's videos")
    links.add_argument("--list", required=True, dest="list_path")
    links.add_argument("--entries", required=True, type=int)
    links.add_argument("--out", required=True)
    for name, what in (("startup", "time a pretraining run's start-up"), ("epoch", "host memory over an epoch")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--config", help="experiment YAML")
        command.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=DIR")
        command.add_argument("--out", help="JSON file of the figures (default: <run.dir>/scale-<command>.json)")
        command.add_argument("--every", type=int, default=DEFAULT_EVERY, help="batches between memory samples")
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = _parser().parse_args(argv)
    if args.command == "links":
        print(f"written: {write_links(args.list_path, args.entries, args.out)}")
        return 0
    cfg = C.load_config(args.config, args.overrides)
    result = startup(cfg) if args.command == "startup" else epoch(cfg, args.every)
    (_print_startup if args.command == "startup" else _print_epoch)(result)
    out = Path(args.out or os.path.join(cfg.run.dir, f"scale-{args.command}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
