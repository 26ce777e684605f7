"""What the decoder is handed for one sample: the bytes from the keyframe at or before the first
needed frame, not the whole file.

DALI 2.4's ``fn.decoders.video`` (CPU and mixed) builds no frame index and never seeks: it
decodes every frame from the first one of its input up to the last frame asked for. Handed a
whole file, a clip late in a long video costs every frame before it. For a video the index
could cut at keyframes (``VideoMeta.cuts``, data.matroska: Matroska / WebM), the decoder gets
the file's head and, per run of needed frames, the Clusters from the keyframe at or before
the run's first frame to the run's last frame; the frame indices are shifted to count from
the slice's first frame. Two runs (the two clips of a pretraining sample) get one slice when
no keyframe cut lies between them that would skip frames, else two slices one after the
other: each starts at a keyframe, so the decoder runs on from one into the next. The frames
decoded are the same as from the start of the file, bit for bit (tests/pipelines/test_segments.py);
a video that cannot be cut is read whole, as before.

The slices are a function of the video and the frames alone, so resumed runs read the same
bytes. NVDEC ("mixed") takes the same host bytes.
"""
from __future__ import annotations

import os

import numpy as np

from data.matroska import KeyframeCuts, playable_head
from pipelines.videos import VideoMeta


def read_encoded(path: str) -> np.ndarray:
    """A video file's bytes as a 1-D uint8 array (the decoder's input)."""
    try:
        return np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise OSError(f"cannot read video {path}: {error}") from error


def plan_slices(cuts: KeyframeCuts, frames: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The runs of cuts to read for ``frames`` (sorted, distinct) as [first cut, last cut) index
    pairs, and the frames' indices in the slices read one after the other."""
    at = np.searchsorted(cuts.first_frames, frames, side="right") - 1
    runs: list[list[int]] = []
    for cut in at:
        if runs and cut <= runs[-1][1]:     # inside the run, or in the cut right after it: nothing to skip
            runs[-1][1] = max(runs[-1][1], cut + 1)
        else:
            runs.append([int(cut), int(cut) + 1])
    firsts, lasts = np.array(runs).T
    cut_frames = np.append(cuts.first_frames, cuts.frames)      # a cut's first frame; the total after the last
    lengths = cut_frames[lasts] - cut_frames[firsts]
    bases = np.cumsum(lengths) - lengths                          # frames in the runs before each run
    run_of = np.searchsorted(lasts, at, side="right")
    shifted = frames - cut_frames[firsts[run_of]] + bases[run_of]
    return [(int(first), int(last)) for first, last in runs], shifted


def read_slices(path: str, cuts: KeyframeCuts, runs: list[tuple[int, int]]) -> np.ndarray:
    """The head of the file (made a slice's head) and the Clusters of each run, as one uint8 array."""
    ends = np.append(cuts.offsets, cuts.end)
    spans = [(int(cuts.offsets[first]), int(ends[last])) for first, last in runs]
    try:
        with open(path, "rb", buffering=0) as handle:
            head = playable_head(os.pread(handle.fileno(), cuts.head, 0))
            out = np.empty(len(head) + sum(stop - start for start, stop in spans), np.uint8)
            out[:len(head)] = np.frombuffer(head, np.uint8)
            at = len(head)
            for start, stop in spans:
                read = os.preadv(handle.fileno(), [memoryview(out)[at:at + stop - start]], start)
                if read != stop - start:
                    raise OSError(f"read {read} of {stop - start} bytes at {start}: the file is shorter than indexed")
                at += stop - start
    except OSError as error:
        raise OSError(f"cannot read video {path}: {error}") from error
    return out


def decoder_input(video: VideoMeta, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The encoded bytes the decoder gets for ``frames`` (sorted, distinct) of ``video``, and the
    frames' indices in them: keyframe slices where the index has cuts, else the whole file."""
    if not video.cuts:
        return read_encoded(video.path), frames
    cuts = KeyframeCuts.decode(video.cuts, video.frames)
    runs, shifted = plan_slices(cuts, frames)
    return read_slices(video.path, cuts, runs), shifted.astype(frames.dtype)
