"""The decode cost of a clip by where it lies in its video, for the profile and the keyframe study.

Early is a clip starting at frame 0, middle one starting half way, late the last one that fits.
Three decoders decode the same clips: DALI handed the bytes from the keyframe before the clip
(what the loaders do, pipelines.segments), DALI handed the whole file (every frame from the
first is decoded), and PyAV seeking to the keyframe (the profile's baseline,
measure.baseline.decode_frames). The cost is CPU time per clip (every thread of the process:
on a shared machine the steadier figure) and wall time per clip, the best of ``repeats`` passes.

``describe_videos`` says what data a measurement ran on: sizes, lengths, codecs, containers and
the keyframe interval, from the video index.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from data.index import VideoIndex
from measure.baseline import decode_frames
from pipelines.feeds import FRAMES
from pipelines.graphs import PRETRAIN_STEPS, pretrain_graph
from pipelines.params import AugParams, ClipGeometry, Runtime
from pipelines.sampler import clip_frame_indices
from pipelines.segments import decoder_input, read_encoded
from pipelines.videos import VideoMeta

POSITIONS = ("early", "middle", "late")
DECODERS = ("dali_from_keyframe", "dali_whole_file", "pyav_seek")
MS = 1000.0


@dataclass
class ClipCost:
    """Seconds per clip: CPU time of the whole process and wall time."""

    cpu: float
    wall: float


def clip_start(num_frames: int, span: int, position: str) -> int:
    """The first frame of a clip of ``span`` frames at ``position`` in a video of ``num_frames``."""
    last = num_frames - span
    return {"early": 0, "middle": last // 2, "late": last}[position]


def _timed(run: Callable[[], None], clips: int, repeats: int) -> ClipCost:
    """The best of ``repeats`` calls of ``run`` (after one untimed), per clip."""
    run()
    best = ClipCost(float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best = ClipCost(min(best.cpu, (time.process_time() - cpu) / clips),
                        min(best.wall, (time.perf_counter() - wall) / clips))
    return best


def _dali_costs(videos: Sequence[VideoMeta], geometry: ClipGeometry, runtime: Runtime, batch_size: int,
                repeats: int, whole_file: bool) -> dict[str, ClipCost]:
    """DALI's decode of one clip per video at each position, ``batch_size`` videos a batch."""
    batches = len(videos) // batch_size
    order = np.arange(geometry.frames, dtype=np.int32)
    wanted: list = []

    def source(info):
        samples = wanted[info.iteration % batches]
        encoded, frames = zip(*(decoder_input(video, clip) if not whole_file else (read_encoded(video.path), clip)
                                for video, clip in samples), strict=True)
        return list(encoded), [FRAMES.array(f) for f in frames], [order] * len(samples), [order] * len(samples)

    costs = {}
    for position in POSITIONS:
        wanted[:] = [[(video, clip_frame_indices(clip_start(video.frames, geometry.span, position), geometry))
                      for video in videos[b * batch_size:(b + 1) * batch_size]] for b in range(batches)]
        # A graph per position: a pipeline asks its source ahead of the batch it runs.
        graph = pretrain_graph(source, runtime=runtime, batch_size=batch_size, crop=geometry.crop, aug=AugParams(),
                               fame_stage=None, steps=PRETRAIN_STEPS[:1])     # the decode step: query = key = the clip

        def run(graph=graph):
            for _ in range(batches):
                graph.pipe.run()

        costs[position] = _timed(run, batches * batch_size, repeats)
    return costs


def _pyav_costs(videos: Sequence[VideoMeta], geometry: ClipGeometry, repeats: int) -> dict[str, ClipCost]:
    costs = {}
    for position in POSITIONS:
        clips = [(video.path, clip_frame_indices(clip_start(video.frames, geometry.span, position), geometry))
                 for video in videos]

        def run(clips=clips):
            for path, frames in clips:
                decode_frames(path, frames)

        costs[position] = _timed(run, len(clips), repeats)
    return costs


def clip_costs(videos: Sequence[VideoMeta], geometry: ClipGeometry, runtime: Runtime, batch_size: int,
               repeats: int) -> dict[str, dict[str, ClipCost]]:
    """Per decoder (DECODERS) and position (POSITIONS), the cost of a clip. DALI decodes where
    ``runtime`` says, with its threads, in batches of ``batch_size`` videos (at least one batch:
    fewer videos than that is an error)."""
    if len(videos) < batch_size:
        raise ValueError(f"{len(videos)} videos make no batch of {batch_size}")
    runtime = dataclasses.replace(runtime, prefetch=1, pipelines=1)
    return {"dali_from_keyframe": _dali_costs(videos, geometry, runtime, batch_size, repeats, False),
            "dali_whole_file": _dali_costs(videos, geometry, runtime, batch_size, repeats, True),
            "pyav_seek": _pyav_costs(videos[:batch_size * (len(videos) // batch_size)], geometry, repeats)}


def format_costs(costs: dict[str, dict[str, ClipCost]]) -> str:
    """The table of clip costs: CPU ms (wall ms) per clip, and late / early by CPU time."""
    lines = [f"{'decode one clip':<22}" + "".join(f"{p:>16}" for p in POSITIONS) + f"{'late/early':>12}"]
    for decoder, by_position in costs.items():
        cells = "".join(f"{MS * c.cpu:>8.1f} ({MS * c.wall:>5.1f})" for c in by_position.values())
        lines.append(f"{decoder:<22}{cells}{by_position['late'].cpu / by_position['early'].cpu:>12.2f}")
    lines.append("(CPU ms per clip, wall ms in brackets; best of the repeats)")
    return "\n".join(lines)


def describe_videos(index: VideoIndex) -> dict:
    """What a list's usable videos are: count, sizes, frames (min, mean, max), fps, codecs,
    containers, keyframes per video (median), the median interval between keyframes (None when
    no video has two) and the share that can be cut at keyframes."""
    good = index.good()
    keyframes = [r.keyframe_indices() for r in good if r.keyframes]
    intervals = [float(np.median(np.diff(k))) for k in keyframes if len(k) > 1]
    frames = [r.frames for r in good]
    return {"list": str(index.list_path), "videos": len(good),
            "sizes": sorted({f"{r.width}x{r.height}" for r in good}),
            "frames": [min(frames), round(statistics.mean(frames), 1), max(frames)] if frames else [],
            "fps": sorted({round(r.fps, 2) for r in good}), "codecs": sorted({r.codec for r in good}),
            "containers": sorted({r.container for r in good}),
            "keyframes_per_video": statistics.median(len(k) for k in keyframes) if keyframes else None,
            "keyframe_interval": statistics.median(intervals) if intervals else None,
            "cut_at_keyframes": sum(bool(r.cuts) for r in good) / max(1, len(good))}


def format_description(data: dict) -> str:
    frames = "-".join(str(f) for f in data["frames"][::2]) + f" (mean {data['frames'][1]})" if data["frames"] else "?"
    interval, count = data["keyframe_interval"], data["keyframes_per_video"]
    keyframes = f"{count:g} keyframes a video (median)" if count else "keyframes not indexed"
    if interval:
        keyframes += f", one every {interval:g} frames"
    return (f"data: {data['list']}: {data['videos']} videos, {', '.join(data['sizes'])}, {frames} frames, "
            f"{'/'.join(map(str, data['fps']))} fps, {', '.join(data['codecs'])} in {', '.join(data['containers'])}, "
            f"{keyframes}, {100 * data['cut_at_keyframes']:.0f}% cut at keyframes")
