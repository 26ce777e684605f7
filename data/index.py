"""The video index: every listed video probed once, cached next to its file list.

For each entry of a file list the index records whether the file exists and
decodes, its frame count, fps, size, codec, pixel format and container, its keyframes, and
for Matroska / WebM where its bytes may be cut at keyframes (data.matroska; the loader then
hands the decoder only the bytes a clip needs). Pipelines read it instead of opening files
blindly, and ``VideoIndex.require_ok`` names unusable videos before training starts.

Two modes. The full mode (``decode=True``, the default) decodes every frame and counts the
frames that come out. The fast mode (``decode=False``) reads the container and its packets
without decoding: its frame count is the demuxed packets, its keyframes the packets' flags.
A video is "corrupt" when fewer frames come out than its container promises (its frame
count, or its duration times fps for a single-stream file), so both modes name a truncated
file. The fast mode misses damage inside frames that still demux: a broken frame header or
payload (only decoding raises on a broken header; a damaged payload decodes silently in both
modes, and in DALI too). A record says which mode made it (``decoded``); the full mode uses
records of the fast one unless asked to check them again (``recheck_fast``).

The cache ``<list>.index.json`` holds one probe per absolute path with the file's size and
mtime; a changed file is probed again. Probes run on every core (``workers``) with a
progress bar, and each is appended to ``<list>.index.json.journal`` as it comes in: an
interrupted index resumes where it stopped, and the journal is folded into the cache at the end.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from data.filelist import TEST_LIST, TRAIN_LIST, Entry, read_file_list
from data.matroska import NotSliceable, keyframe_cuts
from data.parallel import auto_workers, process_pool
from data.video_io import DALI_CPU_CODECS, NVDEC_CODECS, expected_frames, nvdec_problem, stream_fps

log = logging.getLogger(__name__)

# 2: codec is the stream's codec (av1), not the decoder's name (libdav1d);
# 3: pix_fmt recorded (older caches are probed again once);
# 4: container, keyframes, keyframe cuts and the probing mode recorded per video.
INDEX_VERSION = 4
INDEX_SUFFIX = ".index.json"
JOURNAL_SUFFIX = ".journal"
CACHE_TAIL = "]}"           # the cache's last line, after one record a line
MATROSKA = "matroska"       # in FFmpeg's name of the Matroska / WebM demuxer ("matroska,webm")
KEYFRAME_DTYPE = "<i4"      # the keyframe list's encoding in the cache (base64)
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
# still small enough to keep the workers evenly loaded near the end of a list. A list of at
# most this many videos to probe is probed in this process (a worker pool costs more to start).
PROBE_CHUNKSIZE = 8
PROGRESS_INTERVAL_S = 1.0   # the progress bar's fastest refresh


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
    container: str = ""      # FFmpeg's demuxer name, e.g. "matroska,webm", "avi", "mov,mp4,m4a,3gp,3g2,mj2"
    keyframes: str = ""      # frame indices (display order) of the keyframes: base64 of int32
    cuts: str = ""           # where the file may be cut at keyframes (data.matroska.KeyframeCuts.encode); '' none
    decoded: bool = False    # probed by decoding every frame (the full mode), not by demuxing only

    def keyframe_indices(self) -> np.ndarray:
        """The frame indices of the keyframes, ascending."""
        return np.frombuffer(base64.b64decode(self.keyframes), KEYFRAME_DTYPE).astype(np.int64)


def index_path_for(list_path: str | os.PathLike) -> Path:
    """Where the index of a file list is cached: ``<list>.index.json``."""
    list_path = Path(list_path)
    return list_path.with_name(list_path.name + INDEX_SUFFIX)


def probe_video(entry: Entry, decode: bool = True) -> VideoRecord:
    """Open one video with PyAV, count its frames (decoding them, or demuxing only) and find its
    keyframes and keyframe cuts; never raises for a bad file."""
    record = VideoRecord(path=entry.path, relpath=entry.relpath, label=entry.label, decoded=decode)
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
        record.container = container.format.name
        expected, tolerance = expected_frames(container, stream, record.fps)
        counted, keyframes, reordered, error = _count_frames(container, stream, decode)
    record.frames, record.expected_frames = counted, expected
    if counted == 0 or counted < expected - tolerance:
        detail = f" ({error})" if error else ""
        record.reason = f"corrupt: decoded {counted} of {expected or 'unknown'} frames{detail}"
        return record
    record.keyframes = base64.b64encode(keyframes.astype(KEYFRAME_DTYPE).tobytes()).decode("ascii")
    if MATROSKA in record.container.split(",") and not reordered:
        record.cuts = _matroska_cuts(entry.path, counted, keyframes)
    record.ok = True
    return record


def _matroska_cuts(path: str, frames: int, keyframes: np.ndarray) -> str:
    """The keyframe cuts of a Matroska / WebM file, when its Clusters hold the ``frames`` counted
    and every cut falls on a keyframe; '' when it cannot be cut (the loader then reads it whole)."""
    try:
        with open(path, "rb") as handle:
            cuts = keyframe_cuts(handle.read())
    except (OSError, NotSliceable, IndexError):
        return ""
    if cuts.frames != frames or not np.isin(cuts.first_frames, keyframes).all():
        return ""
    return cuts.encode()


def _pixel_format_name(stream) -> str:
    """The pixel format a video stream decodes to ('' when the container does not say)."""
    fmt = stream.codec_context.format
    return fmt.name if fmt is not None else ""


def _error_text(error: Exception) -> str:
    """FFmpeg's message without the errno and file-name decoration."""
    return getattr(error, "strerror", None) or str(error)


def _count_frames(container, stream, decode: bool) -> tuple[int, np.ndarray, bool, str]:
    """Count decoded frames (or non-empty packets) and find the keyframes among the packets.

    Returns the count, the keyframes' indices in display order (the packets sorted by their
    timestamps), whether packets come out of display order (reordered frames) and the first
    error met, if any."""
    counted, first_error = 0, ""
    stamps, keys = [], []
    try:
        for packet in container.demux(stream):
            if packet.size > 0:     # the last, empty packet flushes the decoder
                stamps.append(packet.pts if packet.pts is not None else packet.dts)
                keys.append(packet.is_keyframe)
            if not decode:
                counted += packet.size > 0
                continue
            try:
                counted += len(packet.decode())
            except av.error.FFmpegError as error:
                first_error = first_error or f"decode error: {_error_text(error)}"
    except av.error.FFmpegError as error:
        first_error = first_error or f"demux error: {_error_text(error)}"
    keyframes, reordered = _display_keyframes(stamps, keys)
    return counted, keyframes, reordered, first_error


def _display_keyframes(stamps: list, keys: list[bool]) -> tuple[np.ndarray, bool]:
    """Display indices of the keyframe packets (decode order when a timestamp is missing) and
    whether the timestamps say the packets are out of display order."""
    if not stamps or any(stamp is None for stamp in stamps):
        return np.flatnonzero(keys), False
    order = np.argsort(np.asarray(stamps), kind="stable")
    display = np.empty(len(order), np.int64)
    display[order] = np.arange(len(order))
    return np.sort(display[np.asarray(keys, bool)]), bool((order != np.arange(len(order))).any())


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

    def require_ok(self, min_frames: int | None = None, device: str = "cpu") -> VideoIndex:
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

    def save(self, path: str | os.PathLike) -> None:
        """Write the records as the cache (atomically: a reader sees the old cache or the new one)."""
        path = Path(path)
        partial = path.with_name(f".partial-{path.name}")
        with open(partial, "w") as handle:
            handle.write(f'{{"version": {INDEX_VERSION}, "entries": [\n')
            handle.write(",\n".join(_record_line(record) for record in self.entries))
            handle.write(f"\n{CACHE_TAIL}\n")
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


def _record_line(record: VideoRecord) -> str:
    """A record as probed, on one line of JSON."""
    return json.dumps(_probe_fields(record), separators=(",", ":"))


def _load_cache(path: Path) -> dict[str, VideoRecord]:
    """Cached probes by absolute path; empty when the cache is absent, unreadable or of another version.

    ``VideoIndex.save`` writes one record a line between a first and a last line of its own, and
    the records are read a line at a time: the whole file's text and its parsed form are never
    held at once (at 240,000 videos the cache is about 100 MB)."""
    try:
        with open(path) as handle:
            head = handle.readline()
            try:
                version = json.loads(head + CACHE_TAIL).get("version")
            except ValueError:
                version = None       # the first line of a cache written before version 4 is "{"
            if version != INDEX_VERSION:
                log.info("the video index cache %s is of another version (%s, not %s): probing again",
                         path, version, INDEX_VERSION)
                return {}
            records = [VideoRecord(**json.loads(line.rstrip().rstrip(","))) for line in handle
                       if line.strip() not in ("", CACHE_TAIL)]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        log.warning("ignoring unreadable video index cache %s: %s", path, error)
        return {}
    return {record.path: record for record in records}


def _load_journal(path: Path) -> dict[str, VideoRecord]:
    """The probes an interrupted index appended to its journal, by absolute path; a line cut short
    by the interruption, or a journal of another version, is passed over."""
    records: dict[str, VideoRecord] = {}
    try:
        with open(path) as handle:
            if json.loads(handle.readline() or "{}").get("version") != INDEX_VERSION:
                return {}
            for line in handle:
                try:
                    record = VideoRecord(**json.loads(line))
                except (ValueError, TypeError):
                    continue
                records[record.path] = record
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, AttributeError) as error:
        log.warning("ignoring unreadable video index journal %s: %s", path, error)
        return {}
    return records


class _Journal:
    """The probes of a running index, appended one line each as they come in."""

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        self._handle = open(path, "w" if fresh else "a", buffering=1)
        if fresh:
            self._handle.write(json.dumps({"version": INDEX_VERSION}) + "\n")

    def append(self, record: VideoRecord) -> None:
        self._handle.write(_record_line(record) + "\n")

    def close(self) -> None:
        self._handle.close()


def _cached_record(entry: Entry, cached: VideoRecord | None, recheck_fast: bool) -> VideoRecord | None:
    """The cached probe for an entry if the file is unchanged since (same size and mtime, or still
    missing), and, with ``recheck_fast``, it was probed in the full mode."""
    if cached is None or (recheck_fast and not cached.decoded and cached.reason != MISSING):
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
                min_frames: int = 1, cache: bool = True, decode: bool = True, recheck_fast: bool = False,
                workers: int | None = None) -> VideoIndex:
    """Probe every video of a file list (reusing ``<list>.index.json`` when ``cache``) and return the index.

    ``decode``: the full mode (True) or the fast one (False) for the videos to probe; the cache's
    records of either mode are used as they are, except that ``recheck_fast`` probes the fast
    mode's again in the full mode. ``workers`` processes probe (default: one per core); a
    progress bar shows how far they are, and with ``cache`` every probe goes to the journal at once.
    Videos with fewer than ``min_frames`` frames are marked "too short". Nothing is raised or
    logged for bad videos here: ``require_ok`` raises naming them (a warning first would only
    say it twice), or inspect ``bad()``.
    """
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    entries = read_file_list(list_path, root)
    cache_path = index_path_for(list_path)
    journal_path = cache_path.with_name(cache_path.name + JOURNAL_SUFFIX)
    journaled = _load_journal(journal_path) if cache else {}
    cached = {**_load_cache(cache_path), **journaled} if cache else {}
    records: list[VideoRecord | None] = [_cached_record(e, cached.get(e.path), recheck_fast) for e in entries]
    todo = [i for i, record in enumerate(records) if record is None]
    if todo:
        journal = _Journal(journal_path, fresh=not journaled) if cache else None
        try:
            for record, i in zip(_probe_all([entries[i] for i in todo], decode, workers, list_path), todo, strict=True):
                records[i] = record
                if journal is not None:
                    journal.append(record)
        finally:
            if journal is not None:
                journal.close()
    index = VideoIndex(list_path, records, min_frames)
    if cache and (todo or journal_path.is_file()):
        try:
            index.save(cache_path)
            journal_path.unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not write video index cache %s: %s", cache_path, error)
    return index


def _probe_all(pending: list[Entry], decode: bool, workers: int | None, list_path) -> Iterator[VideoRecord]:
    """Probe ``pending`` in list order, in ``workers`` processes (default: one per core) when there
    are more than PROBE_CHUNKSIZE, with a progress bar and a closing rate in the log."""
    workers = min(auto_workers() if workers is None else workers, math.ceil(len(pending) / PROBE_CHUNKSIZE))
    mode = "decoding every frame" if decode else "demuxing only"
    log.info("probing %d videos listed in %s (%s; processes: %d)", len(pending), list_path, mode, workers)
    started = time.perf_counter()
    bar = tqdm(total=len(pending), unit="video", desc=f"index {Path(list_path).name}", mininterval=PROGRESS_INTERVAL_S,
               disable=None)
    pool = process_pool(workers) if workers > 1 else None
    try:
        probed = (pool.map(probe_video, pending, [decode] * len(pending), chunksize=PROBE_CHUNKSIZE) if pool
                  else (probe_video(entry, decode) for entry in pending))
        for record in probed:
            bar.update()
            yield record
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    seconds = time.perf_counter() - started
    log.info("probed %d videos in %.1f s (%.1f videos/s)", len(pending), seconds, len(pending) / max(seconds, 1e-9))
