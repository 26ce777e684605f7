"""The video index: every listed video probed once, cached next to its file list.

For each entry of a file list the index records whether the file exists and
decodes, its frame count, fps, size, codec and pixel format. Pipelines read it instead of
opening files blindly, and ``VideoIndex.require_ok`` names unusable videos
before training starts.

Frame counts are decoded-frame counts (``decode=True``, the default) or demuxed
packet counts (``decode=False``: cheaper, misses damaged bitstreams). A video is
"corrupt" when fewer frames come out than its container promises (its frame
count, or its duration times fps for a single-stream file).

The cache ``<list>.index.json`` holds one probe per absolute path with the
file's size and mtime; a changed file is probed again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import av

from data.filelist import TEST_LIST, TRAIN_LIST, Entry, read_file_list
from data.parallel import process_pool
from data.video_io import DALI_CPU_CODECS, NVDEC_CODECS, expected_frames, nvdec_problem, stream_fps

log = logging.getLogger(__name__)

# 2: codec is the stream's codec (av1), not the decoder's name (libdav1d);
# 3: pix_fmt recorded (older caches are probed again once).
INDEX_VERSION = 3
INDEX_SUFFIX = ".index.json"
DEVICES = ("cpu", "gpu")    # the decode device: DALI's CPU decoder or NVDEC
# The re-encoding command named in errors, to run from the project root as printed. The CPU hint names
# the project's virtual environment, as the README's commands do; the NVDEC hint names a plain
# `python`, which a GPU machine may run the project with (docs/gpu.md: NOVENV).
TRANSCODE_COMMAND = "{python} -m runners.prepare transcode --list {lists} --out {out} --codec {codec}"
VENV_PYTHON = ".venv/bin/python"
CPU_TRANSCODE_CODEC = "vp9"     # decoded by DALI's CPU decoder
NVDEC_TRANSCODE_CODEC = "h264"  # 8-bit 4:2:0 H.264: every NVDEC generation decodes it
NAMES_IN_ERRORS = 5
TOO_SHORT = "too short"
MISSING = "missing"
# Videos handed to a probing worker at a time: fewer round trips than one by one, and
# still small enough to keep the workers evenly loaded near the end of a list.
PROBE_CHUNKSIZE = 8


@dataclass
class VideoRecord:
    """What probing one listed video found. ``ok`` is False with a ``reason`` when it is unusable."""

    path: str
    relpath: str
    label: int
    size: int = 0
    mtime_ns: int = 0
    has_video: bool = False
    codec: str = ""
    pix_fmt: str = ""        # FFmpeg's pixel format of the decoded frames, e.g. yuv420p, yuv420p10le
    width: int = 0
    height: int = 0
    fps: float = 0.0
    frames: int = 0
    expected_frames: int = 0
    ok: bool = False
    reason: str = ""


def index_path_for(list_path: str | os.PathLike) -> Path:
    """Where the index of a file list is cached: ``<list>.index.json``."""
    list_path = Path(list_path)
    return list_path.with_name(list_path.name + INDEX_SUFFIX)


def probe_video(entry: Entry, decode: bool = True) -> VideoRecord:
    """Open one video with PyAV and count its frames; never raises for a bad file."""
    record = VideoRecord(path=entry.path, relpath=entry.relpath, label=entry.label)
    try:
        stat = os.stat(entry.path)
    except FileNotFoundError:
        record.reason = MISSING
        return record
    except OSError as error:  # a file where a folder should be, no permission, ...
        record.reason = f"unreadable: {_error_text(error)}"
        return record
    record.size, record.mtime_ns = stat.st_size, stat.st_mtime_ns
    if stat.st_size == 0:
        record.reason = "empty file"
        return record
    try:
        container = av.open(entry.path)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        record.reason = f"cannot open: {_error_text(error)}"
        return record
    with container:
        if not container.streams.video:
            record.reason = "no video stream"
            return record
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        record.has_video = True
        record.codec = stream.codec_context.codec.canonical_name    # the codec, not the decoder (libdav1d)
        record.width, record.height = stream.codec_context.width, stream.codec_context.height
        record.pix_fmt = _pixel_format_name(stream)
        record.fps = stream_fps(stream)
        expected, tolerance = expected_frames(container, stream, record.fps)
        counted, error = _count_frames(container, stream, decode)
    record.frames, record.expected_frames = counted, expected
    if counted == 0 or counted < expected - tolerance:
        detail = f" ({error})" if error else ""
        record.reason = f"corrupt: decoded {counted} of {expected or 'unknown'} frames{detail}"
        return record
    record.ok = True
    return record


def _pixel_format_name(stream) -> str:
    """The pixel format a video stream decodes to ('' when the container does not say)."""
    fmt = stream.codec_context.format
    return fmt.name if fmt is not None else ""


def _error_text(error: Exception) -> str:
    """FFmpeg's message without the errno and file-name decoration."""
    return getattr(error, "strerror", None) or str(error)


def _count_frames(container, stream, decode: bool) -> tuple[int, str]:
    """Count decoded frames (or non-empty packets); returns the count and the first error met, if any."""
    counted, first_error = 0, ""
    try:
        for packet in container.demux(stream):
            if not decode:
                counted += packet.size > 0
                continue
            try:
                counted += len(packet.decode())
            except av.error.FFmpegError as error:
                first_error = first_error or f"decode error: {_error_text(error)}"
    except av.error.FFmpegError as error:
        first_error = first_error or f"demux error: {_error_text(error)}"
    return counted, first_error


class VideoIndex:
    """Probe records for every entry of one file list, in list order."""

    def __init__(self, list_path: str | os.PathLike, entries: list[VideoRecord], min_frames: int = 1):
        self.list_path = Path(list_path)
        self.entries = entries
        self.min_frames = min_frames
        for record in entries:
            _mark_short(record, min_frames)

    def __len__(self) -> int:
        return len(self.entries)

    def bad(self) -> list[VideoRecord]:
        """Records of videos that are missing, unreadable, corrupt or too short."""
        return [record for record in self.entries if not record.ok]

    def good(self) -> list[VideoRecord]:
        return [record for record in self.entries if record.ok]

    def require_ok(self, min_frames: int | None = None, device: str = "cpu") -> "VideoIndex":
        """Raise ValueError naming every unusable video (too short for ``min_frames``, or one the
        decode ``device`` cannot decode: 'cpu' is DALI's CPU decoder, 'gpu' is NVDEC, which
        also has minimum sizes, chroma formats and bit depths); returns self when all are usable."""
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if min_frames is not None:
            self.min_frames = min_frames
            for record in self.entries:
                _mark_short(record, min_frames)
        problems = [problem for problem in (self._bad_problem(), self._decoder_problem(device)) if problem]
        if problems:
            raise ValueError(f"{self.list_path}: " + "; ".join(problems))
        return self

    def _bad_problem(self) -> str:
        """The unusable videos (missing, corrupt, too short, ...) named with reasons, or ''."""
        bad = self.bad()
        if not bad:
            return ""
        listed = _list_names([(r, r.reason) for r in bad])
        return (f"{len(bad)} of {len(self.entries)} videos are unusable: {listed}; "
                f"fix them or leave them out of the list")

    def _decoder_problem(self, device: str) -> str:
        """The good videos the decode ``device`` cannot decode, named with what to do, or ''."""
        if device == "cpu":
            return self._cpu_decoder_problem()
        return self._nvdec_problem()

    def _cpu_decoder_problem(self) -> str:
        """Good videos in codecs DALI's CPU decoder does not take, or ''."""
        gpu_only = [r for r in self.good() if r.codec not in DALI_CPU_CODECS]
        if not gpu_only:
            return ""
        codecs = sorted({r.codec for r in gpu_only})
        listed = ", ".join(r.relpath for r in gpu_only[:NAMES_IN_ERRORS])
        no_decoder = [codec for codec in codecs if codec not in NVDEC_CODECS]
        elsewhere = (f"({', '.join(no_decoder)}: no DALI decoder takes it)" if no_decoder
                     else "or decode them on the GPU (data.decode=gpu)")
        command = transcode_command(self.list_path, CPU_TRANSCODE_CODEC)
        return (f"{len(gpu_only)} videos use codecs DALI cannot decode on the CPU ({', '.join(codecs)}; "
                f"CPU decodes {', '.join(sorted(DALI_CPU_CODECS))}): {listed}; re-encode them with "
                f"`{command}` (it prints the data.root to train with) {elsewhere}")

    def _nvdec_problem(self) -> str:
        """Good videos NVDEC cannot decode (codec, size, chroma format, bit depth), or ''."""
        refused = [(r, nvdec_problem(r.codec, r.width, r.height, r.pix_fmt)) for r in self.good()]
        refused = [(r, why) for r, why in refused if why]
        if not refused:
            return ""
        command = transcode_command(self.list_path, NVDEC_TRANSCODE_CODEC)
        fix = f"re-encode them to 8-bit 4:2:0 (`{command}`, which prints the data.root to train with)"
        if all(r.codec in DALI_CPU_CODECS for r in self.good()):
            fix += (" or decode on the CPU with data.decode=cpu (DALI's CPU decoder takes every "
                    "video of this list, of any size)")
        return f"{len(refused)} videos cannot be decoded by the GPU decoder (NVDEC): {_list_names(refused)}; {fix}"

    def save(self, path: str | os.PathLike, decode: bool) -> None:
        payload = {
            "version": INDEX_VERSION,
            "decode": decode,
            "entries": [_probe_fields(record) for record in self.entries],
        }
        path = Path(path)
        partial = path.with_name(f".partial-{path.name}")
        partial.write_text(json.dumps(payload, indent=1))
        os.replace(partial, path)


def transcode_command(list_path: Path, codec: str) -> str:
    """The shell command that re-encodes ``list_path`` and the dataset lists beside it (trainlist.txt,
    testlist.txt: a run reads both from one data.root) in ``codec`` into ``<list folder>/<codec>``."""
    lists = " ".join(shlex.quote(str(path)) for path in _dataset_lists(list_path))
    out = shlex.quote(str(list_path.parent / codec))
    return TRANSCODE_COMMAND.format(python=VENV_PYTHON, lists=lists, out=out, codec=codec)


def _dataset_lists(list_path: Path) -> list[Path]:
    """The training and test list beside ``list_path`` when it is one of them, training list first;
    else ``list_path`` alone."""
    standard = [list_path.with_name(name) for name in (TRAIN_LIST, TEST_LIST)]
    if list_path not in standard:
        return [list_path]
    return [path for path in standard if path == list_path or path.is_file()]


def _list_names(refused: list[tuple[VideoRecord, str]]) -> str:
    """The first few videos as 'relpath (why)', with how many more there are."""
    listed = ", ".join(f"{r.relpath} ({why})" for r, why in refused[:NAMES_IN_ERRORS])
    more = f" and {len(refused) - NAMES_IN_ERRORS} more" if len(refused) > NAMES_IN_ERRORS else ""
    return listed + more


def _mark_short(record: VideoRecord, min_frames: int) -> None:
    """Apply (or lift) the too-short verdict for a given minimum length."""
    if record.reason.startswith(TOO_SHORT):
        record.ok, record.reason = True, ""
    if record.ok and record.frames < min_frames:
        record.ok, record.reason = False, f"{TOO_SHORT}: {record.frames} < {min_frames}"


def _probe_fields(record: VideoRecord) -> dict:
    """A record as probed, without the length verdict (that depends on min_frames)."""
    fields = dataclasses.asdict(record)
    if record.reason.startswith(TOO_SHORT):
        fields["ok"], fields["reason"] = True, ""
    return fields


def _load_cache(path: Path, decode: bool) -> dict[str, VideoRecord]:
    """Cached probes by absolute path; empty when the cache is absent, unreadable or of another kind."""
    try:
        payload = json.loads(path.read_text())
        if payload.get("version") != INDEX_VERSION or payload.get("decode") != decode:
            return {}
        records = [VideoRecord(**fields) for fields in payload["entries"]]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("ignoring unreadable video index cache %s: %s", path, error)
        return {}
    return {record.path: record for record in records}


def _cached_record(entry: Entry, cached: VideoRecord | None) -> VideoRecord | None:
    """The cached probe for an entry if the file is unchanged since (same size and mtime, or still missing)."""
    if cached is None:
        return None
    try:
        stat = os.stat(entry.path)
    except FileNotFoundError:
        stat = None
    except OSError:
        return None  # unreadable now: probing it again records why
    if stat is None:
        fresh = cached.reason == MISSING
    else:
        fresh = (cached.reason != MISSING and cached.size == stat.st_size
                 and cached.mtime_ns == stat.st_mtime_ns)
    if not fresh:
        return None
    return dataclasses.replace(cached, label=entry.label, relpath=entry.relpath)


def build_index(list_path: str | os.PathLike, root: str | os.PathLike | None = None, *,
                min_frames: int = 1, cache: bool = True, decode: bool = True,
                workers: int = 1) -> VideoIndex:
    """Probe every video of a file list (reusing ``<list>.index.json`` when ``cache``) and return the index.

    Videos with fewer than ``min_frames`` frames are marked "too short". Nothing is raised or
    logged for bad videos here: ``require_ok`` raises naming them (a warning first would only
    say it twice), or inspect ``bad()``.
    """
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    entries = read_file_list(list_path, root)
    cache_path = index_path_for(list_path)
    cached = _load_cache(cache_path, decode) if cache else {}
    records: list[VideoRecord | None] = [_cached_record(e, cached.get(e.path)) for e in entries]
    todo = [i for i, record in enumerate(records) if record is None]
    if todo:
        log.info("probing %d of %d videos listed in %s", len(todo), len(entries), list_path)
        pending = [entries[i] for i in todo]
        if workers > 1 and len(pending) > 1:
            with process_pool(workers) as pool:
                probed = list(pool.map(probe_video, pending, [decode] * len(pending), chunksize=PROBE_CHUNKSIZE))
        else:
            probed = [probe_video(entry, decode) for entry in pending]
        for i, record in zip(todo, probed):
            records[i] = record
    index = VideoIndex(list_path, records, min_frames)
    if cache and todo:
        try:
            index.save(cache_path, decode)
        except OSError as error:
            log.warning("could not write video index cache %s: %s", cache_path, error)
    return index
