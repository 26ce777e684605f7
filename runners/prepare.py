"""Prepare datasets: synthetic videos, file lists of real benchmarks, transcoding, the video index.

    python -m runners.prepare synthetic --config configs/synthetic.yaml [key=value ...] [--out DIR]
    python -m runners.prepare synthetic --out DIR [--seed N] [--codec vp9|h264|mjpeg]
                                        [--num-classes K] [--videos-per-class N] [--workers N]
    python -m runners.prepare ucf101|hmdb51 --root DIR --out DIR [--split 1|2|3] [--strict]
    python -m runners.prepare kinetics400|diving48 --root DIR --out DIR [--strict]
    python -m runners.prepare folder --root DIR --out DIR [--val-fraction 0.2] [--seed 0]
                                     [--transcode vp9] [--workers N]
    python -m runners.prepare transcode --list TRAIN_LIST [TEST_LIST ...] --out DIR [--codec vp9] [--gop N]
                                        [--workers N]
    python -m runners.prepare index --list LIST [--min-frames N] [--device cpu|gpu] [--workers N] [--fast]

With --config the spec is the config's data.synthetic section and the directory its
data.root (what pretraining generates on its own when the data is missing).
``--videos-per-class N`` sets N training and max(1, N // 2) test videos per class.
``folder`` reads one folder per class (any container FFmpeg reads), splits each class
(every class with two or more videos lands in both lists), probes the videos and leaves the
unusable ones out, naming them; ``--transcode vp9`` adds CPU-decodable copies beside the lists.
``transcode`` writes the copies of all its lists into DIR in one layout, with a keyframe every
``--gop`` frames (default: the interval measured to suit clip decoding, docs/benchmarks.md), prints
the data.root (and list keys) that read them, and exits 2 naming every video it had to leave out.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from data.filelist import TEST_LIST, TRAIN_LIST
from data.index import DEVICES, build_index
from data.parallel import auto_workers
from data.prepare.benchmarks import PREPARERS, SPLIT_DATASETS
from data.prepare.folder import DEFAULT_VAL_FRACTION, prepare_folder
from data.synthetic import MOTIONS, SyntheticSpec, ensure_dataset
from data.transcode import DEFAULT_GOP, GOP_REASON, require_all_written, transcode_lists
from data.video_io import CODECS
from engine.config import load_config
from engine.errors import run_command

TEST_SHARE = 2  # test videos per class = train videos per class // TEST_SHARE
# The config keys of a run's lists, in the order transcode takes them, with their default file names.
LIST_KEYS = (("data.train_list", TRAIN_LIST), ("data.val_list", TEST_LIST))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runners.prepare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    synthetic = commands.add_parser("synthetic", help="write the synthetic motion dataset")
    synthetic.add_argument("--config", help="experiment config: the spec is its data.synthetic, "
                                            "the directory its data.root")
    synthetic.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (with --config)")
    synthetic.add_argument("--out", help="dataset directory (default with --config: data.root)")
    synthetic.add_argument("--seed", type=int, help=f"default {SyntheticSpec.seed}")
    synthetic.add_argument("--codec", choices=sorted(CODECS), help=f"default {SyntheticSpec.codec}")
    synthetic.add_argument("--num-classes", type=int,
                           help=f"2 to {len(MOTIONS)} ({', '.join(MOTIONS)}); default {SyntheticSpec.num_classes}")
    synthetic.add_argument("--videos-per-class", type=int,
                           help="training videos per class, test: half; "
                                f"default {SyntheticSpec.videos_per_class_train}")
    synthetic.add_argument("--workers", type=int, default=auto_workers(), help="encoding processes")

    for name in PREPARERS:
        dataset = commands.add_parser(name, help=f"file lists for {name} from its annotation files")
        dataset.add_argument("--root", required=True, help="directory with the videos and annotation files")
        dataset.add_argument("--out", required=True, help="where the lists and classInd.txt go")
        if name in SPLIT_DATASETS:
            dataset.add_argument("--split", type=int, default=1, choices=(1, 2, 3))
        dataset.add_argument("--strict", action="store_true", help="fail if any listed video is missing")

    folder = commands.add_parser("folder", help="file lists for a folder with one folder of videos per class")
    folder.add_argument("--root", required=True, help="folder of class folders (or of unlabelled videos)")
    folder.add_argument("--out", required=True, help="where the lists, classInd.txt and any copies go")
    folder.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of each class in testlist.txt")
    folder.add_argument("--seed", type=int, default=0, help="seed of the split")
    folder.add_argument("--transcode", choices=sorted(CODECS),
                        help="also write copies in this codec (vp9: decodable on the CPU), lists pointing at them")
    folder.add_argument("--workers", type=int, default=auto_workers())

    transcode = commands.add_parser("transcode", help="re-encode the videos of lists (default VP9 for CPU decoding)")
    transcode.add_argument("--list", required=True, nargs="+", dest="list_paths", metavar="LIST",
                           help="the lists of one dataset, the training list first, then the test list")
    transcode.add_argument("--out", required=True)
    transcode.add_argument("--codec", choices=sorted(CODECS), default="vp9")
    transcode.add_argument("--gop", type=int, default=DEFAULT_GOP,
                           help=f"frames from one keyframe to the next (default {DEFAULT_GOP}: {GOP_REASON})")
    transcode.add_argument("--workers", type=int, default=auto_workers())

    index = commands.add_parser("index", help="probe a list's videos and report unusable ones")
    index.add_argument("--list", required=True, dest="list_path")
    index.add_argument("--min-frames", type=int, default=1)
    index.add_argument("--device", choices=DEVICES, default="cpu")
    index.add_argument("--workers", type=int, default=auto_workers())
    index.add_argument("--fast", action="store_true",
                       help="demux only, no decoding: frames counted as packets (misses damage inside frames)")
    return parser


SPEC_FLAGS = ("seed", "codec", "num_classes", "videos_per_class")


def _spec_flags(args: argparse.Namespace) -> dict:
    """The spec flags given on the command line (SPEC_FLAGS names), without the unset ones."""
    return {name: getattr(args, name) for name in SPEC_FLAGS if getattr(args, name) is not None}


def _synthetic_target(config: str | None, overrides: list[str], out: str | None,
                      flags: dict) -> tuple[str, SyntheticSpec]:
    """Output directory and spec: from ``config`` (+ key=value ``overrides``) or from the spec ``flags``."""
    if config:
        if flags:
            raise ValueError(f"with --config, set the spec as data.synthetic.* overrides, not "
                             f"{', '.join('--' + name.replace('_', '-') for name in flags)}")
        cfg = load_config(config, overrides)
        if cfg.data.synthetic is None:
            raise ValueError(f"{config}: no data.synthetic section, nothing to generate")
        return out or cfg.data.root, cfg.data.synthetic
    if overrides:
        raise ValueError(f"key=value overrides need --config, got {overrides}")
    if not out:
        raise ValueError("synthetic needs --out DIR or --config FILE")
    per_class = flags.get("videos_per_class", SyntheticSpec.videos_per_class_train)
    spec = SyntheticSpec(num_classes=flags.get("num_classes", SyntheticSpec.num_classes),
                         videos_per_class_train=per_class,
                         videos_per_class_test=max(1, per_class // TEST_SHARE),
                         codec=flags.get("codec", SyntheticSpec.codec), seed=flags.get("seed", SyntheticSpec.seed))
    return out, spec


def _run(args: argparse.Namespace) -> str:
    if args.command == "synthetic":
        out, spec = _synthetic_target(args.config, args.overrides, args.out, _spec_flags(args))
        result = ensure_dataset(out, spec, workers=args.workers)
        state = f"generated in {result['seconds']:.1f} s" if result["generated"] else "already up to date"
        return f"synthetic dataset {out}: {state}; lists {result['train_list']}, {result['test_list']}"
    if args.command in PREPARERS:
        extra = {"split": args.split} if args.command in SPLIT_DATASETS else {}
        return PREPARERS[args.command](args.root, args.out, strict=args.strict, **extra).summary()
    if args.command == "folder":
        return prepare_folder(args.root, args.out, val_fraction=args.val_fraction, seed=args.seed,
                              transcode=args.transcode, workers=args.workers).summary()
    if args.command == "transcode":
        return _transcode(args.list_paths, args.out, args.codec, args.gop, args.workers)
    index = build_index(args.list_path, min_frames=args.min_frames, workers=args.workers, decode=not args.fast,
                        recheck_fast=not args.fast)
    index.require_ok(device=args.device)
    mode = "demuxed, not decoded" if args.fast else "decoded"
    return f"{args.list_path}: all {len(index)} videos usable on {args.device} ({mode})"


def _transcode(list_paths: list[str], out: str, codec: str, gop: int, workers: int) -> str:
    """Transcode the lists into ``out`` and print a summary per list and the keyframe interval;
    returns the config overrides that read the copies. Raises ValueError naming the videos that
    were left out."""
    if gop < 1:
        raise ValueError(f"--gop must be >= 1, got {gop}")
    reports = transcode_lists(list_paths, out, codec=codec, gop=gop, workers=workers)
    print("\n".join(report.summary() for report in reports))
    why = GOP_REASON if gop == DEFAULT_GOP else "--gop"
    print(f"keyframes: one every {gop} frames ({why})")
    require_all_written(reports)
    return f"train on the copies with: {root_overrides(out, [Path(path) for path in list_paths])}"


def root_overrides(out: str, list_paths: list[Path]) -> str:
    """``data.root=OUT``, and the list keys (LIST_KEYS, in list order) whose file names are not the
    defaults: the key=value overrides that point a run at lists transcoded into ``out``."""
    overrides = [f"data.root={shlex.quote(out)}"]
    overrides += [f"{key}={shlex.quote(path.name)}" for (key, default), path in zip(LIST_KEYS, list_paths, strict=True)
                  if path.name != default]
    return " ".join(overrides)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parser().parse_args(argv)
    try:
        print(_run(args))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
