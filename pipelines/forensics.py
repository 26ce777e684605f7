"""The forensics of a failed batch: which of its videos no longer read as indexed, or else that
the pipeline itself failed, worded with the useful head of DALI's own message.

A failing pipeline is told apart from failing videos: the videos of the batch are probed
again (``data.index.probe_video``); those that no longer read as indexed are named as
bad, else the pipeline itself is blamed (a CUDA / NVDEC library or driver, or an
operator), with DALI's own message either way.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from data.filelist import Entry
from data.index import probe_video
from pipelines.videos import VideoMeta

RECHECK_HINT = "a file may have changed since it was indexed, re-check it with data.index"
DOCTOR_HINT = "run `make doctor` to check the CUDA / NVDEC libraries and the driver"
NAMES_IN_ERRORS = 5
INDEXED_FIELDS = ("frames", "width", "height")   # what a re-probe must still find as VideoMeta has it
# DALI's error text: the operator and its message are kept; its boilerplate, the pipeline
# definition's Python traceback and the C++ stack trace are dropped.
DALI_BOILERPLATE = ("Critical error in pipeline:", "Current pipeline object is no longer valid.")
DALI_DEFINITION_START, DALI_DEFINITION_END = "which was used in the pipeline definition", "encountered:"
DALI_TRACE_LINE = re.compile(r"^(Stacktrace \(\d+ entries\):|\[frame \d+\]|C\+\+ context:)")
DALI_MESSAGE_LINES, DALI_MESSAGE_CHARS = 6, 800


def pipeline_failure(error: Exception, videos: Sequence[VideoMeta], where: str) -> RuntimeError:
    """The error for a DALI pipeline that failed on a batch of ``videos``: the videos that
    no longer read as indexed are named as bad; when none did, the pipeline itself failed."""
    changed = [f"{video.path} ({why})" for video in videos if (why := changed_since_indexed(video))]
    said = dali_message(error)
    if changed:
        return RuntimeError(f"the input pipeline failed at {where} on videos that no longer read as indexed: "
                            f"{_listed(changed)}; {RECHECK_HINT}. DALI said: {said}")
    return RuntimeError(f"the input pipeline itself failed at {where}, not its videos: all {len(videos)} videos "
                        f"of the batch still read as indexed ({_listed([v.path for v in videos])}). A CUDA / "
                        f"NVDEC library or driver problem is the usual cause; {DOCTOR_HINT}. DALI said: {said}")


def changed_since_indexed(video: VideoMeta) -> str:
    """Why ``video`` no longer reads as indexed ('' when it does): probed again the way
    data.index does, it must still decode with the frame count and size it was listed with."""
    record = probe_video(Entry(video.path, video.label, video.path))
    if not record.ok:
        return record.reason or "unusable"
    changed = [f"{name} {getattr(record, name)}, indexed {getattr(video, name)}" for name in INDEXED_FIELDS
               if getattr(record, name) != getattr(video, name)]
    return "now " + ", ".join(changed) if changed else ""


def dali_message(error: Exception) -> str:
    """The useful head of a DALI error: the failing operator and its message, without DALI's
    boilerplate, the pipeline definition's traceback or the C++ stack trace."""
    kept, in_definition = [], False
    for line in (raw.strip() for raw in str(error).splitlines()):
        if line.startswith(DALI_DEFINITION_START):
            in_definition = True
        elif in_definition:
            in_definition = line != DALI_DEFINITION_END
        elif line and line not in DALI_BOILERPLATE and not DALI_TRACE_LINE.match(line) and line not in kept:
            kept.append(line)
    text = " ".join(kept[:DALI_MESSAGE_LINES]) or f"{type(error).__name__} without a message"
    return text if len(text) <= DALI_MESSAGE_CHARS else text[:DALI_MESSAGE_CHARS] + " [...]"


def _listed(names: Sequence[str]) -> str:
    more = f" and {len(names) - NAMES_IN_ERRORS} more" if len(names) > NAMES_IN_ERRORS else ""
    return ", ".join(names[:NAMES_IN_ERRORS]) + more
