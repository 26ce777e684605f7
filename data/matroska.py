"""Keyframe cuts of Matroska / WebM files: where a byte slice of the file may start.

A Matroska file is an EBML header and a Segment: its head (SeekHead, Info, Tracks, ...)
then Clusters of blocks, each Cluster carrying its absolute timestamp. FFmpeg's muxer
(PyAV and ``prepare transcode`` write with it) starts a Cluster at a video keyframe once
the running one holds more than 4 KiB, and at the latest every 5 s. So the file's head
(the Segment size made unknown, the SeekHead and Cues voided, as they point into the
whole file) followed by the Clusters from one that opens with a video keyframe is itself a
valid file, whose first frame is that keyframe; Clusters from two such places one after the
other are one too (each run starts at a keyframe, which depends on nothing before it).

``keyframe_cuts`` reads the table once (the index stores it, ``KeyframeCuts.encode``):
the head's length, the end of the last Cluster, and per Cluster that opens with a video
keyframe its byte offset and the number of video frames before it. ``playable_head``
patches a head for such slices. Frames are counted as video blocks in file order, which
is display order for codecs without reordered frames (VP8, VP9, MJPEG); the index checks the
count against the frames it demuxed or decoded.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np

EBML_HEADER, SEGMENT, SEEKHEAD, CUES, CLUSTER = 0x1A45DFA3, 0x18538067, 0x114D9B74, 0x1C53BB6B, 0x1F43B675
TRACKS, TRACK_ENTRY, TRACK_NUMBER, TRACK_TYPE = 0x1654AE6B, 0xAE, 0xD7, 0x83
SIMPLE_BLOCK, BLOCK_GROUP, BLOCK, REFERENCE_BLOCK = 0xA3, 0xA0, 0xA1, 0xFB
VOID = 0xEC
VIDEO_TRACK_TYPE = 1
MAX_ID_BYTES, MAX_SIZE_BYTES = 4, 8
KEYFRAME_FLAG = 0x80         # SimpleBlock flags: the frame is a keyframe
LACING_FLAGS = 0x06          # SimpleBlock / Block flags: several frames in one block
BLOCK_TIMECODE_BYTES = 2     # after the track number, before the flags
VOID_SIZE_BYTES = 8          # the size field of a Void that replaces an element (1 when it is short)
TABLE_DTYPE = np.int64       # cut table: [head, end, offset 0, frame 0, offset 1, frame 1, ...]
TABLE_LEAD = 2               # head and end before the cut pairs


class NotSliceable(ValueError):
    """A file that is not Matroska, or one whose Clusters cannot be cut at keyframes (unknown sizes,
    laced video blocks, no video track, a first Cluster that does not open with a keyframe)."""


def _vint_length(data, at: int, longest: int, what: str) -> int:
    """The length of the EBML variable-length integer at ``at``: one more than the count of
    leading zero bits of its first byte, at most ``longest``."""
    first = data[at]
    length = 1
    while length <= longest and not first & (0x80 >> (length - 1)):
        length += 1
    if length > longest:
        raise NotSliceable(f"invalid element {what} at byte {at}")
    return length


def _read_id(data, at: int) -> tuple[int, int]:
    """An element ID (marker bits kept, as IDs are written) and where its size starts."""
    length = _vint_length(data, at, MAX_ID_BYTES, "ID")
    return int.from_bytes(data[at:at + length], "big"), at + length


def _read_size(data, at: int) -> tuple[int | None, int, int]:
    """An element's data size (None: unknown), where its data starts, and the size field's length."""
    length = _vint_length(data, at, MAX_SIZE_BYTES, "size")
    value = data[at] & ((0x80 >> (length - 1)) - 1)
    for byte in data[at + 1:at + length]:
        value = (value << 8) | byte
    unknown = value == (1 << (7 * length)) - 1
    return (None if unknown else value), at + length, length


def _elements(data, start: int, end: int):
    """(id, data start, data end, element start) of the elements between ``start`` and ``end``."""
    at = start
    while at < end:
        element_id, size_at = _read_id(data, at)
        size, data_at, _ = _read_size(data, size_at)
        if size is None:
            raise NotSliceable(f"element {element_id:#x} at byte {at} has an unknown size")
        yield element_id, data_at, data_at + size, at
        at = data_at + size


def _segment(data) -> tuple[int, int]:
    """Where the Segment's size field starts and where its data starts."""
    header_id, size_at = _read_id(data, 0)
    if header_id != EBML_HEADER:
        raise NotSliceable("not an EBML file")
    size, data_at, _ = _read_size(data, size_at)
    segment_id, segment_size_at = _read_id(data, data_at + size)
    if segment_id != SEGMENT:
        raise NotSliceable("no Segment after the EBML header")
    _, segment_data_at, _ = _read_size(data, segment_size_at)
    return segment_size_at, segment_data_at


def _video_track(data, start: int, end: int) -> int:
    """The track number of the first video track in a Tracks element's data."""
    for entry_id, entry_start, entry_end, _ in _elements(data, start, end):
        if entry_id != TRACK_ENTRY:
            continue
        fields = {field_id: int.from_bytes(data[a:b], "big") for field_id, a, b, _ in
                  _elements(data, entry_start, entry_end) if field_id in (TRACK_NUMBER, TRACK_TYPE)}
        if fields.get(TRACK_TYPE) == VIDEO_TRACK_TYPE and TRACK_NUMBER in fields:
            return fields[TRACK_NUMBER]
    raise NotSliceable("no video track")


def _block_track_and_flags(data, at: int) -> tuple[int, int]:
    """A (Simple)Block's track number and flags byte."""
    _, after, length = _read_size(data, at)     # the track number is written as a size-like number
    track = int.from_bytes(data[at:after], "big") & ((1 << (7 * length)) - 1)
    return track, data[after + BLOCK_TIMECODE_BYTES]


def _video_blocks(data, start: int, end: int, track: int) -> list[bool]:
    """Per video block of a Cluster, in file order, whether it is a keyframe."""
    keys = []
    for element_id, block_start, block_end, _ in _elements(data, start, end):
        if element_id == SIMPLE_BLOCK:
            block_track, flags = _block_track_and_flags(data, block_start)
            key = bool(flags & KEYFRAME_FLAG)
        elif element_id == BLOCK_GROUP:
            children = list(_elements(data, block_start, block_end))
            blocks = [child_start for child_id, child_start, _, _ in children if child_id == BLOCK]
            if not blocks:
                continue
            block_track, flags = _block_track_and_flags(data, blocks[0])
            key = not any(child_id == REFERENCE_BLOCK for child_id, _, _, _ in children)
        else:
            continue
        if block_track != track:
            continue
        if flags & LACING_FLAGS:
            raise NotSliceable("laced video blocks")
        keys.append(key)
    return keys


@dataclass(frozen=True)
class KeyframeCuts:
    """Where a Matroska file may be cut: ``head`` bytes of head before the first Cluster, ``end``
    (the end of the last Cluster), ``frames`` video frames in all, and per Cluster that opens
    with a video keyframe its byte ``offsets`` and the video frames before it (``first_frames``),
    both ascending; the first cut is the first Cluster, at frame 0."""

    head: int
    end: int
    frames: int
    offsets: np.ndarray
    first_frames: np.ndarray

    def encode(self) -> str:
        """The table as text for the index (base64 of little-endian int64: head, end, then
        offset and first frame per cut; the frame count is the index's own)."""
        table = np.concatenate([[self.head, self.end], np.stack([self.offsets, self.first_frames], 1).ravel()])
        return base64.b64encode(table.astype("<i8").tobytes()).decode("ascii")

    @classmethod
    def decode(cls, text: str, frames: int) -> KeyframeCuts:
        """The table ``encode`` wrote, for a video of ``frames`` frames."""
        table = np.frombuffer(base64.b64decode(text), dtype="<i8").astype(TABLE_DTYPE)
        pairs = table[TABLE_LEAD:].reshape(-1, 2)
        return cls(int(table[0]), int(table[1]), frames, pairs[:, 0], pairs[:, 1])


def keyframe_cuts(data) -> KeyframeCuts:
    """The keyframe cuts of a whole Matroska / WebM file's bytes; NotSliceable when it has none usable."""
    _, segment_at = _segment(data)
    track = None
    head = end = None
    offsets, first_frames, frames = [], [], 0
    for element_id, start, stop, element_at in _elements(data, segment_at, len(data)):
        if stop > len(data):
            raise NotSliceable(f"element {element_id:#x} at byte {element_at} runs past the end of the file")
        if element_id == TRACKS:
            track = _video_track(data, start, stop)
        elif element_id == CLUSTER:
            if track is None:
                raise NotSliceable("a Cluster before the Tracks")
            head = element_at if head is None else head
            keys = _video_blocks(data, start, stop, track)
            if keys and keys[0]:
                offsets.append(element_at)
                first_frames.append(frames)
            frames += len(keys)
            end = stop
    if head is None or not offsets or offsets[0] != head:
        raise NotSliceable("the first Cluster does not open with a video keyframe")
    return KeyframeCuts(head, end, frames, np.asarray(offsets, TABLE_DTYPE), np.asarray(first_frames, TABLE_DTYPE))


def _void(length: int) -> bytes:
    """The ID and size field of a Void element that fills ``length`` bytes with its data."""
    size_bytes = VOID_SIZE_BYTES if length > VOID_SIZE_BYTES else 1
    size = length - 1 - size_bytes
    return bytes([VOID]) + (size | (1 << (7 * size_bytes))).to_bytes(size_bytes, "big")


def playable_head(head: bytes) -> bytes:
    """A file's head made the head of a slice: the Segment's size unknown (the slice is shorter),
    the SeekHead and Cues turned into Void elements of the same length (they point into the
    whole file)."""
    patched = bytearray(head)
    size_at, data_at = _segment(patched)
    length = data_at - size_at
    patched[size_at:data_at] = bytes([0xFF >> (length - 1)]) + b"\xff" * (length - 1)
    for element_id, _, stop, element_at in _elements(head, data_at, len(head)):
        if element_id in (SEEKHEAD, CUES):
            void = _void(stop - element_at)
            patched[element_at:element_at + len(void)] = void
    return bytes(patched)
