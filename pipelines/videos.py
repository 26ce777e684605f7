"""The videos a pipeline reads: usable entries of a probed video index, checked up front.

Bad files (missing, corrupt, truncated, audio-only, too short for a clip, in a codec the
chosen device cannot decode, or on the GPU smaller than NVDEC accepts) fail here with an error naming them, or are left out
with a logged warning when ``skip_bad`` is set; the pipelines never meet them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

from data.video_io import DALI_CPU_CODECS, nvdec_size_problem

log = logging.getLogger(__name__)

DEVICES = ("cpu", "gpu")
NAMES_IN_MESSAGES = 5


@dataclass(frozen=True)
class VideoMeta:
    """One usable video: absolute path, label, decoded frame count and frame size in pixels."""

    path: str
    label: int
    frames: int
    width: int
    height: int


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
        return f"codec {record.codec} needs the GPU decoder"
    if device == "gpu":
        return nvdec_size_problem(record.codec, record.width, record.height)
    return ""


def videos_from_index(index, *, min_frames: int, device: str, skip_bad: bool = False) -> list[VideoMeta]:
    """Usable videos of a ``data.index.VideoIndex``, in list order.

    Without ``skip_bad`` any unusable video raises ValueError (``index.require_ok`` names the
    files and how to transcode CPU-undecodable ones); with it they are left out and named in
    a warning. Raises ValueError when no video is left.
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
    if dropped:
        log.warning("%s: skipping %d of %d videos: %s", index.list_path, len(dropped),
                    len(index.entries), _names(dropped))
    if not kept:
        raise ValueError(f"{index.list_path}: no usable video left (needs >= {min_frames} frames, "
                         f"decodable on {device})")
    return [VideoMeta(r.path, int(r.label), int(r.frames), int(r.width), int(r.height)) for r in kept]


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
