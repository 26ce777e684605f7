"""Re-encode the videos of a file list (default VP9 .webm, which DALI decodes on the CPU).

Output files mirror the inputs' paths below their common directory (or a given
source base, so that the lists of one tree share a layout); the new
list (same file name as the input list) and a copy of classInd.txt, when one
sits next to the input list, go to ``out``. Frames are re-stamped at a constant
rate (the source's average fps). Files already transcoded are kept, so an
interrupted run resumes. Videos that fail to decode, or decode to fewer frames
than their container promises (truncated files), are reported and left out;
``require_all_written`` turns such a report into an error that names them.
``transcode_lists`` transcodes the lists of one dataset (train and test) into one
folder in one layout: that folder is then the run's data.root.

Nothing listed is ever overwritten: a run is refused before any work when the new
list would replace the input list, when two videos would be written to one file
(``a/x.avi`` and ``a/x.mp4`` both become ``a/x.webm``), or when an output file
would be one of the listed sources.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import av

from data.filelist import CLASS_NAMES_FILE, Entry, read_file_list, write_file_list
from data.parallel import process_pool
from data.video_io import VideoWriter, codec_setting, expected_frames, stream_fps

log = logging.getLogger(__name__)

# The keyframe interval of the copies, chosen by measurement (measure.keyframes; docs/benchmarks.md,
# "Keyframe interval"): the loaders decode a clip from the keyframe before it.
DEFAULT_GOP = 16
GOP_REASON = "measured: docs/benchmarks.md, Keyframe interval"
FALLBACK_FPS = 30.0
NAMES_IN_REPORT = 5


@dataclass
class TranscodeReport:
    list_path: Path
    written: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = f"{self.list_path}: {self.written} transcoded, {self.reused} already done"
        if self.failed:
            shown = "; ".join(self.failed[:NAMES_IN_REPORT])
            text += f", {len(self.failed)} failed and left out: {shown}"
        return text


def transcode_video(source: str | os.PathLike, target: str | os.PathLike, codec: str = "vp9",
                    gop: int = DEFAULT_GOP) -> int:
    """Decode ``source`` and encode every frame into ``target``; returns the number of frames written.

    Raises ValueError when fewer frames decode than the source's container promises (as the
    index judges corruption), so a truncated source never becomes a shorter, valid-looking file."""
    setting = codec_setting(codec)
    target = Path(target)
    partial = target.with_name(f".partial-{target.name}")
    with av.open(str(source)) as container:
        if not container.streams.video:
            raise ValueError(f"{source}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        source_fps = stream_fps(stream)
        promised, tolerance = expected_frames(container, stream, source_fps)
        fps = source_fps or FALLBACK_FPS
        width, height = stream.codec_context.width, stream.codec_context.height
        if setting.even_size:
            width, height = width - width % 2, height - height % 2
        count = 0
        with VideoWriter(partial, codec, width, height, fps, gop) as writer:
            for frame in container.decode(stream):
                writer.write(frame.to_ndarray(format="rgb24")[:height, :width])
                count += 1
    if count == 0:
        partial.unlink(missing_ok=True)
        raise ValueError(f"{source}: no frames decoded")
    if count < promised - tolerance:
        partial.unlink(missing_ok=True)
        raise ValueError(f"{source}: decoded {count} of the {promised} frames its container promises "
                         f"(truncated or corrupt)")
    os.replace(partial, target)
    return count


def _transcode_job(source: str, target: str, codec: str, gop: int) -> str:
    """Run one transcode in a worker; returns '' on success or the error text."""
    try:
        transcode_video(source, target, codec, gop)
    except (av.error.FFmpegError, OSError, ValueError) as error:
        Path(target).with_name(f".partial-{Path(target).name}").unlink(missing_ok=True)
        return f"{source}: {error}"
    return ""


def _is_done(source: Path, target: Path) -> bool:
    """A non-empty target at least as new as its (existing) source."""
    try:
        return target.stat().st_size > 0 and target.stat().st_mtime >= source.stat().st_mtime
    except FileNotFoundError:
        return False


def output_relpaths(entries: list[Entry], extension: str, base: str | os.PathLike | None = None) -> list[str]:
    """Output paths: each input path relative to ``base`` (default: the inputs' common directory),
    with the new extension. A fixed ``base`` gives several lists of one tree the same layout."""
    if not entries:
        return []
    common = os.path.abspath(base) if base is not None else _source_dir(entries)
    return [str(Path(os.path.relpath(e.path, common)).with_suffix(extension)) for e in entries]


def _source_dir(entries: list[Entry]) -> str:
    """The deepest folder holding every listed video (entries must not be empty)."""
    return os.path.commonpath([os.path.dirname(e.path) for e in entries])


def _check_list_kept(list_path: Path, new_list: Path) -> None:
    """Refuse (ValueError) a run whose new list would replace the input list."""
    if new_list.resolve() == list_path.resolve():
        raise ValueError(f"{list_path}: the transcoded list would replace this list; "
                         f"choose an --out folder other than {list_path.parent}")


def _check_targets(where: str, sources: list[str], targets: list[Path]) -> None:
    """Refuse (ValueError, prefixed with ``where``) a run that would write two sources to one target
    or write over a listed source. Paths are compared with symlinks and ``..`` resolved."""
    listed = {Path(source).resolve(): source for source in sources}
    first_source_of: dict[Path, str] = {}
    for source, target in zip(sources, targets, strict=True):
        resolved = target.resolve()
        if resolved in listed:
            raise ValueError(f"{where}: the output for {source} would be written to {target}, which is "
                             f"the listed source {listed[resolved]}; choose an --out folder outside the "
                             f"videos' folders")
        earlier = first_source_of.setdefault(resolved, source)
        if earlier != source:
            raise ValueError(f"{where}: {earlier} and {source} would both be written to {target}; "
                             f"rename one of them")


def _check_list_names(list_paths: list[Path]) -> None:
    """Refuse (ValueError) lists that share a file name: their new lists would replace each other in ``out``."""
    first_list_named: dict[str, Path] = {}
    for list_path in list_paths:
        earlier = first_list_named.setdefault(list_path.name, list_path)
        if earlier != list_path:
            raise ValueError(f"{earlier} and {list_path} would both be written as {list_path.name} in the "
                             f"--out folder; transcode them into separate folders")


def transcode_list(list_path: str | os.PathLike, out: str | os.PathLike, codec: str = "vp9",
                   root: str | os.PathLike | None = None, gop: int = DEFAULT_GOP,
                   workers: int = 1, source_base: str | os.PathLike | None = None) -> TranscodeReport:
    """Transcode every video of a file list into ``out`` and write the matching list there.

    Outputs mirror the sources' paths below ``source_base`` (default: their common directory)."""
    list_path, out = Path(list_path), Path(out)
    extension = codec_setting(codec).extension
    entries = read_file_list(list_path, root)
    relpaths = output_relpaths(entries, extension, source_base)
    report = TranscodeReport(out / list_path.name)
    targets = [out / relpath for relpath in relpaths]
    _check_list_kept(list_path, report.list_path)
    _check_targets(str(list_path), [entry.path for entry in entries], targets)
    jobs = []
    planned = set()
    for entry, target in zip(entries, targets, strict=True):
        if entry.path in planned:
            continue  # listed twice: one transcode serves both lines
        planned.add(entry.path)
        if _is_done(Path(entry.path), target):
            report.reused += 1
        else:
            jobs.append((entry.path, str(target)))
    if workers > 1 and len(jobs) > 1:
        with process_pool(workers) as pool:
            errors = list(pool.map(_transcode_job, [s for s, _ in jobs], [t for _, t in jobs],
                                   [codec] * len(jobs), [gop] * len(jobs)))
    else:
        errors = [_transcode_job(source, target, codec, gop) for source, target in jobs]
    report.failed = [error for error in errors if error]
    report.written = len(jobs) - len(report.failed)
    failed_sources = {source for (source, _), error in zip(jobs, errors, strict=True) if error}
    kept = [(relpath, entry.label) for entry, relpath in zip(entries, relpaths, strict=True)
            if entry.path not in failed_sources]
    write_file_list(report.list_path, kept)
    class_names = list_path.parent / CLASS_NAMES_FILE
    if class_names.is_file() and class_names.resolve() != (out / CLASS_NAMES_FILE).resolve():
        shutil.copyfile(class_names, out / CLASS_NAMES_FILE)
    if report.failed:
        log.warning(report.summary())
    return report


def transcode_lists(list_paths: list[str | os.PathLike], out: str | os.PathLike, codec: str = "vp9",
                    gop: int = DEFAULT_GOP, workers: int = 1) -> list[TranscodeReport]:
    """Transcode the lists of one dataset (its train and test list) into one ``out``, one report each.

    The copies of every list mirror their sources below the common folder of all the lists' videos,
    so the new lists sit side by side in ``out``, which becomes the run's data.root. All lists are
    checked before any work: no two may share a file name, and no two videos of any of them may be
    written to one file or over a listed video."""
    list_paths, out = [Path(path) for path in list_paths], Path(out)
    _check_list_names(list_paths)
    for list_path in list_paths:
        _check_list_kept(list_path, out / list_path.name)
    entries = [entry for list_path in list_paths for entry in read_file_list(list_path)]
    base = _source_dir(entries) if entries else None
    targets = [out / relpath for relpath in output_relpaths(entries, codec_setting(codec).extension, base)]
    _check_targets(", ".join(map(str, list_paths)), [entry.path for entry in entries], targets)
    return [transcode_list(list_path, out, codec=codec, gop=gop, workers=workers, source_base=base)
            for list_path in list_paths]


def require_all_written(reports: list[TranscodeReport]) -> None:
    """Raise ValueError naming the videos the transcodes left out (sources that failed to decode or
    encode, truncated ones among them), so a run that dropped videos does not pass for a complete one."""
    failed = [error for report in reports for error in report.failed]
    if not failed:
        return
    shown = "; ".join(failed[:NAMES_IN_REPORT])
    more = f"; and {len(failed) - NAMES_IN_REPORT} more" if len(failed) > NAMES_IN_REPORT else ""
    raise ValueError(f"{len(failed)} videos could not be transcoded and were left out of the new lists: "
                     f"{shown}{more}; repair or remove them from the source lists and run the command again "
                     f"(the finished copies are kept)")
