"""The keyframe interval's trade-off, measured: what ``prepare transcode`` should write.

    python -m measure.keyframes --list LIST [--videos 8] [--gops 8,16,32,64,250] [--out DIR]
                                [--batch-size 4] [--repeats 3]

The first ``--videos`` videos of LIST are transcoded to VP9 WebM (data.transcode, one
process) once per keyframe interval. Per interval: the transcode's time per video (decoding
the source included), the copies' size, and the decode cost of one clip (the profile's
clip geometry: 16 frames at stride 2) early, in the middle and late in a video, decoded by
DALI from the keyframe before it (the loaders' way), by DALI from the file's first frame, and
by PyAV seeking (measure.positions). A short interval costs bytes and keyframes, which are dearer
to decode; a long one costs the frames between the keyframe and the clip.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from data.filelist import read_file_list, write_file_list
from data.index import build_index
from data.transcode import transcode_video
from engine.errors import run_command
from engine.setup import setup_logging
from measure.positions import POSITIONS, clip_costs
from pipelines.params import ClipGeometry, Runtime
from pipelines.videos import videos_from_index

DEFAULT_GOPS = (8, 16, 32, 64, 250)
DEFAULT_VIDEOS, DEFAULT_BATCH, DEFAULT_REPEATS = 8, 4, 3
CLIP = ClipGeometry(frames=16, stride=2, crop=112)    # the published recipe's clips
CODEC = "vp9"
BITS_PER_BYTE, KILO, MS = 8, 1000, 1000.0


def measure_interval(sources: list, gop: int, out: Path, batch_size: int, repeats: int, threads: int) -> dict:
    """Transcode ``sources`` (Entry) with a keyframe every ``gop`` frames into ``out``; time, size, clip costs."""
    lines, seconds = [], 0.0
    for number, source in enumerate(sources):
        relpath = f"{number}{Path(source.path).stem}.webm"
        started = time.perf_counter()
        frames = transcode_video(source.path, out / relpath, codec=CODEC, gop=gop)
        seconds += time.perf_counter() - started
        lines.append((relpath, source.label, frames))
    write_file_list(out / "list.txt", [(relpath, label) for relpath, label, _ in lines])
    index = build_index(out / "list.txt", workers=1)
    videos = videos_from_index(index, min_frames=CLIP.span, device="cpu")
    size = sum(os.path.getsize(video.path) for video in videos)
    duration = sum(record.frames / record.fps for record in index.entries)
    costs = clip_costs(videos, CLIP, Runtime(device="cpu", num_threads=threads), batch_size, repeats)
    return {"gop": gop, "encode_s_per_video": seconds / len(sources), "bytes_per_video": size / len(videos),
            "kbit_per_s": size * BITS_PER_BYTE / KILO / duration,
            "cut_at_keyframes": sum(bool(v.cuts) for v in videos) / len(videos),
            "clip_cpu_ms": {decoder: {p: MS * cost.cpu for p, cost in by_position.items()}
                            for decoder, by_position in costs.items()},
            "clip_wall_ms": {decoder: {p: MS * cost.wall for p, cost in by_position.items()}
                             for decoder, by_position in costs.items()}}


def format_rows(rows: list[dict]) -> str:
    head = (f"{'keyframe every':>14}{'encode s/video':>16}{'kB/video':>10}{'kbit/s':>8}   "
            + "   ".join(f"{name} CPU ms early/middle/late (late/early)" for name in ("DALI from keyframe", "PyAV")))
    lines = [head]
    for row in rows:
        cells = []
        for decoder in ("dali_from_keyframe", "pyav_seek"):
            ms = [row["clip_cpu_ms"][decoder][p] for p in POSITIONS]
            cells.append(" / ".join(f"{m:.1f}" for m in ms) + f" ({ms[-1] / ms[0]:.2f})")
        lines.append(f"{row['gop']:>14}{row['encode_s_per_video']:>16.2f}{row['bytes_per_video'] / KILO:>10.0f}"
                     f"{row['kbit_per_s']:>8.0f}   " + "   ".join(f"{cell:<44}" for cell in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = argparse.ArgumentParser(prog="python -m measure.keyframes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--list", required=True, dest="list_path", help="the source videos' list")
    parser.add_argument("--videos", type=int, default=DEFAULT_VIDEOS)
    parser.add_argument("--gops", default=",".join(map(str, DEFAULT_GOPS)), help="keyframe intervals, comma-separated")
    parser.add_argument("--out", default="runs/keyframes", help="folder of the copies and keyframes.json")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="videos per DALI batch")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    parser.add_argument("--threads", type=int, default=1, help="DALI threads")
    args = parser.parse_args(argv)
    sources = read_file_list(args.list_path)[:args.videos]
    out = Path(args.out)
    rows = [measure_interval(sources, int(gop), out / f"g{gop}", args.batch_size, args.repeats, args.threads)
            for gop in args.gops.split(",")]
    print(format_rows(rows))
    (out / "keyframes.json").write_text(json.dumps(rows, indent=1))
    print(f"written: {out / 'keyframes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
