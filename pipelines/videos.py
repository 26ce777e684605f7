"""The videos a pipeline reads: usable entries of a probed video index, checked up front.

Bad files (missing, corrupt, truncated, audio-only, too short for a clip, or ones the chosen
decode device cannot decode: a codec DALI's CPU decoder does not take, or for NVDEC a codec,
frame size, chroma format or bit depth it does not take) fail here with an error naming them, or
are left out with a logged warning when ``skip_bad`` is set; the pipelines never meet them.

``choose_decoder`` picks the decode device for data.decode=auto on a GPU run.
"""
from __future__ import annotations

import collections
import logging
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from data.index import VideoRecord
from data.video_io import DALI_CPU_CODECS, NVDEC_CODECS, nvdec_problem

log = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")    # the decode device: DALI's CPU decoder or NVDEC
NAMES_IN_MESSAGES = 5
# data.decode=auto: videos this small (median frame area, UCF101's 320x240) decode fast enough
# on the CPU when the host has at least this many cores, which leaves NVDEC and the GPU free.
SMALL_VIDEO_SIZE = (320, 240)
SMALL_VIDEO_AREA = SMALL_VIDEO_SIZE[0] * SMALL_VIDEO_SIZE[1]
MIN_CPU_DECODE_CORES = 8


@dataclass(frozen=True)
class VideoMeta:
    """One usable video: absolute path, label, decoded frame count, frame size in pixels, and where
    its bytes may be cut at keyframes (``data.matroska.KeyframeCuts.encode``; '' when nowhere)."""

    path: str
    label: int
    frames: int
    width: int
    height: int
    cuts: str = ""


def _names(dropped: Sequence[tuple]) -> str:
    shown = ", ".join(f"{record.relpath} ({why})" for record, why in dropped[:NAMES_IN_MESSAGES])
    more = f" and {len(dropped) - NAMES_IN_MESSAGES} more" if len(dropped) > NAMES_IN_MESSAGES else ""
    return shown + more


def _unusable(record, min_frames: int, device: str) -> str:
    """Why a probed record cannot be read by the pipeline ('' when it can)."""
    if not record.ok:
        return record.reason or "unusable"
    if record.frames < min_frames:
        return f"too short: {record.frames} < {min_frames} frames"
    if device == "cpu" and record.codec not in DALI_CPU_CODECS:
        if record.codec in NVDEC_CODECS:
            return f"codec {record.codec} needs the GPU decoder"
        return f"codec {record.codec} is decoded by neither DALI decoder"
    if device == "gpu":
        return nvdec_problem(record.codec, record.width, record.height, record.pix_fmt)
    return ""


def videos_from_index(index, *, min_frames: int, device: str, skip_bad: bool = False) -> list[VideoMeta]:
    """Usable videos of a ``data.index.VideoIndex``, in list order.

    Without ``skip_bad`` any unusable video raises ValueError (``index.require_ok`` names the
    files and how to transcode CPU-undecodable ones); with it they are left out and named in
    a warning. Raises ValueError when no video is left, naming the unusable ones (then with no
    warning before it: the error says it all).
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if not skip_bad:
        index.require_ok(min_frames, device)
    kept, dropped = [], []
    for record in index.entries:
        why = _unusable(record, min_frames, device)
        if why:
            dropped.append((record, why))
        else:
            kept.append(record)
    if not kept:
        unusable = f": {_names(dropped)}" if dropped else ""
        raise ValueError(f"{index.list_path}: no usable video left (needs >= {min_frames} frames, "
                         f"decodable on {device}){unusable}")
    if dropped:
        log.warning("%s: skipping %d of %d videos: %s", index.list_path, len(dropped),
                    len(index.entries), _names(dropped))
    log_uncut(kept)
    return [VideoMeta(r.path, int(r.label), int(r.frames), int(r.width), int(r.height), r.cuts) for r in kept]


def log_uncut(records: Sequence[VideoRecord]) -> int:
    """Log how many videos cannot be cut at keyframes (by container), which the loader hands to the
    decoder whole: it decodes every frame before a clip; returns how many there are."""
    uncut = [r for r in records if not r.cuts]
    if uncut:
        containers = collections.Counter(r.container or "unknown" for r in uncut)
        listed = ", ".join(f"{name}: {count}" for name, count in containers.most_common())
        log.info("%d of %d videos are read whole, not from the keyframe before a clip (%s): a clip late in "
                 "such a video decodes every frame before it; WebM copies (`prepare transcode`) can be cut",
                 len(uncut), len(records), listed)
    return len(uncut)


def choose_decoder(records: Sequence[VideoRecord], cpu_count: int) -> tuple[str, str]:
    """Where a GPU run with data.decode=auto decodes these (good) index records: ('gpu' | 'cpu',
    a one-line reason).

    'cpu' when DALI's CPU decoder takes every video and either NVDEC cannot decode some of them,
    or the videos are small (median area at most ``SMALL_VIDEO_SIZE``) and the host has at least
    ``MIN_CPU_DECODE_CORES`` cores; 'gpu' otherwise. Videos neither decoder takes are for
    ``VideoIndex.require_ok`` to refuse, not for this choice."""
    if not records:
        return "gpu", "no usable video to judge by: NVDEC by default"
    gpu_only = sorted({r.codec for r in records if r.codec not in DALI_CPU_CODECS})
    if gpu_only:
        verb = "needs" if len(gpu_only) == 1 else "need"
        cpu_codecs = ", ".join(sorted(DALI_CPU_CODECS))
        return "gpu", f"{', '.join(gpu_only)} {verb} NVDEC (DALI's CPU decoder takes {cpu_codecs})"
    refused = [(r, nvdec_problem(r.codec, r.width, r.height, r.pix_fmt)) for r in records]
    refused = [(r, why) for r, why in refused if why]
    if refused:
        record, why = refused[0]
        return "cpu", (f"NVDEC cannot decode {len(refused)} of {len(records)} videos "
                       f"(first: {record.relpath}: {why}); the CPU decoder takes them all")
    return _choose_by_size(records, cpu_count)


def _choose_by_size(records: Sequence[VideoRecord], cpu_count: int) -> tuple[str, str]:
    """CPU for small videos on a host with enough cores, else NVDEC (every video fits both)."""
    area = statistics.median(r.width * r.height for r in records)
    small = area <= SMALL_VIDEO_AREA
    limit = f"{SMALL_VIDEO_SIZE[0]}x{SMALL_VIDEO_SIZE[1]}"
    if small and cpu_count >= MIN_CPU_DECODE_CORES:
        return "cpu", (f"small videos (median area {area:.0f} px <= {limit}) and {cpu_count} CPU cores "
                       f"(>= {MIN_CPU_DECODE_CORES}): the CPU decodes them, leaving the GPU to train")
    if small:
        return "gpu", (f"only {cpu_count} CPU cores (< {MIN_CPU_DECODE_CORES}) to decode "
                       f"small videos (median area {area:.0f} px <= {limit}): NVDEC")
    return "gpu", f"videos larger than {limit} (median area {area:.0f} px): NVDEC"


def _prefix(source: str) -> str:
    return f"{source}: " if source else ""


def require_clip_room(videos: Sequence[VideoMeta], span: int, source: str = "") -> None:
    """Raise ValueError naming every video with fewer frames than one clip spans (path, frames)."""
    short = [v for v in videos if v.frames < span]
    if short:
        listed = ", ".join(f"{v.path} ({v.frames} frames)" for v in short)
        raise ValueError(f"{_prefix(source)}{len(short)} videos are shorter than a clip, which spans {span} "
                         f"frames: {listed}; index them with min_frames >= {span} or leave them out")


def warn_single_clip_videos(videos: Iterable[VideoMeta], span: int, source: str = "") -> int:
    """Log the videos with room for exactly one clip start; returns how many there are.

    Such a video gives both pretraining clips the same start (frame 0), deterministically.
    Videos with no room for a clip at all are ``require_clip_room``'s to refuse.
    """
    single = [v for v in videos if v.frames == span]
    if single:
        shown = ", ".join(v.path for v in single[:NAMES_IN_MESSAGES])
        log.warning("%s%d videos have room for one clip start only (%d frames span a clip); both clips "
                    "of each start at frame 0: %s", _prefix(source), len(single), span, shown)
    return len(single)
