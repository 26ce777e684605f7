"""Throughput of the FAME augmentation (mask + merge) in clips/s: python -m measure.bench_fame [--json PATH].

Sizes 16x112x112 and 16x224x224, batch 8 and 32 (and 64 on the GPU), uint8 and float32 input,
NumPy and (when a GPU is present) CuPy; each figure is the median over --repeats timed calls
after one warm-up. --parts instead times the op's parts (uint8, batch 32 on NumPy, 64 on CuPy):
host time, and on CuPy the GPU time too (cupyx.profiler.benchmark), which tells launch-bound
parts (host time = GPU time) from compute-bound ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import fame
from engine.errors import run_command
from fame.mask import masks_from_config, smoothed_statistics, soft_mask_from
from fame.motion import UINT8_MAX, frame_statistics
from fame.select import top_k_mask
from measure.machine import cpu_model

FRAMES = 16
SIZES = (112, 224)
BATCHES = (8, 32)
GPU_BATCHES = (8, 32, 64)  # batch 64 at 16x224x224 is the GPU target
DTYPES = ("float32", "uint8")
DEFAULT_REPEATS = 5
PART_BATCH = {"numpy": 32, "cupy": 64}
SEED = 0
ALL_BACKENDS = "all"
MS_PER_S = 1000.0


def cupy_device():
    """(cupy, device name) when a CUDA device is usable, else (None, None)."""
    try:
        import cupy  # lazy: CuPy needs a GPU; importing this module must not load it

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, None
        properties = cupy.cuda.runtime.getDeviceProperties(0)
        return cupy, properties["name"].decode()
    except Exception:  # no cupy wheel, no driver or no device: NumPy only
        return None, None


def make_clips(batch: int, size: int, dtype: str, rng: np.random.Generator) -> np.ndarray:
    clips = rng.integers(0, 256, size=(batch, FRAMES, size, size, 3), dtype=np.uint8)
    return clips if dtype == "uint8" else clips.astype(np.float32) / np.float32(UINT8_MAX)


def timed_calls(call, repeats: int, synchronize=lambda: None) -> list[float]:
    """Seconds of each of ``repeats`` timed calls, after one untimed warm-up call."""
    call()
    synchronize()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_augment(clips, cfg: fame.FameConfig, repeats: int, synchronize) -> list[float]:
    """Seconds of each timed call, after one untimed warm-up call."""
    rng = np.random.default_rng(SEED)
    return timed_calls(lambda: fame.augment(clips, cfg, rng), repeats, synchronize)


def run_benchmarks(repeats: int, only: str = ALL_BACKENDS, sizes: tuple[int, ...] = SIZES,
                   batches: tuple[int, ...] = ()) -> dict:
    """Every size, batch and dtype on NumPy and (with a GPU) CuPy, or on ``only`` one of them;
    ``batches``: these instead of each backend's own."""
    cupy, gpu_name = cupy_device()
    backends = [("numpy", lambda a: a, lambda: None, BATCHES)]
    if cupy is not None:
        backends.append(("cupy", cupy.asarray, cupy.cuda.Device().synchronize, GPU_BATCHES))
    backends = [b for b in backends if only in (ALL_BACKENDS, b[0])]
    cfg = fame.FameConfig()
    rng = np.random.default_rng(SEED)
    rows = []
    for backend, to_device, synchronize, backend_batches in backends:
        for size in sizes:
            for batch in batches or backend_batches:
                for dtype in DTYPES:
                    clips = to_device(make_clips(batch, size, dtype, rng))
                    seconds = time_augment(clips, cfg, repeats, synchronize)
                    median = statistics.median(seconds)
                    rows.append({"backend": backend, "frames": FRAMES, "size": size, "batch": batch, "dtype": dtype,
                                 "median_s": median, "clips_per_s": batch / median,
                                 "best_clips_per_s": batch / min(seconds)})
                    del clips
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name,
               "load_average_1min": os.getloadavg()[0], "python": platform.python_version(), "numpy": np.__version__}
    return {"machine": machine, "repeats": repeats, "config": "FameConfig() defaults", "results": rows}


def fame_parts(clips, cfg: fame.FameConfig, rng: np.random.Generator) -> list[tuple[str, object, tuple]]:
    """(name, function, arguments) for fame.augment and its parts, each fed its real inputs."""
    batch, _, height, width, _ = clips.shape
    seed, mean = smoothed_statistics(clips, cfg)
    scores = soft_mask_from(seed, mean, cfg).reshape(batch, height * width)
    masks = masks_from_config(clips, cfg)
    index = fame.pick_backgrounds(batch, rng, cfg.pick)
    return [("whole op", fame.augment, (clips, cfg, rng)),
            ("seed region and mean frame", frame_statistics, (clips,)),
            ("soft mask", soft_mask_from, (seed, mean, cfg)),
            ("top-k selection", top_k_mask, (scores, int(cfg.beta * height * width))),
            ("merge", fame.merge, (clips, masks, index))]


def time_part(function, args, repeats: int, cupy=None) -> tuple[float, float | None]:
    """(median host seconds, median GPU seconds or None) per call, after one warm-up call."""
    if cupy is not None:
        from cupyx.profiler import benchmark  # lazy: CuPy needs a GPU; importing this module must not load it
        result = benchmark(function, args, n_repeat=repeats, n_warmup=1)
        return float(np.median(result.cpu_times)), float(np.median(result.gpu_times[0]))
    return statistics.median(timed_calls(lambda: function(*args), repeats)), None


def run_parts(repeats: int) -> dict:
    cupy, gpu_name = cupy_device()
    backends = [("numpy", lambda a: a, None)] + ([("cupy", cupy.asarray, cupy)] if cupy is not None else [])
    cfg = fame.FameConfig()
    rng = np.random.default_rng(SEED)
    rows = []
    for backend, to_device, module in backends:
        for size in SIZES:
            clips = to_device(make_clips(PART_BATCH[backend], size, "uint8", rng))
            for name, function, args in fame_parts(clips, cfg, np.random.default_rng(SEED)):
                host, gpu = time_part(function, args, repeats, module)
                rows.append({"backend": backend, "frames": FRAMES, "size": size, "batch": PART_BATCH[backend],
                             "part": name, "host_ms": MS_PER_S * host,
                             "gpu_ms": None if gpu is None else MS_PER_S * gpu})
            del clips
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "gpu": gpu_name, "numpy": np.__version__}
    return {"machine": machine, "repeats": repeats, "config": "FameConfig() defaults, uint8", "parts": rows}


def print_parts(report: dict) -> None:
    print(f"FAME parts, ms per call (median of {report['repeats']}); GPU: {report['machine']['gpu'] or 'none'}")
    print(f"{'backend':8} {'clip':>12} {'batch':>6} {'part':<28} {'host ms':>9} {'GPU ms':>9}")
    for row in report["parts"]:
        clip = f"{row['frames']}x{row['size']}x{row['size']}"
        gpu = "" if row["gpu_ms"] is None else f"{row['gpu_ms']:>9.2f}"
        print(f"{row['backend']:8} {clip:>12} {row['batch']:>6} {row['part']:<28} {row['host_ms']:>9.2f} {gpu}")


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, GPU: {machine['gpu'] or 'none'}, "
          f"load average at start {machine['load_average_1min']:.2f}")
    print(f"FAME augment (mask + merge), clips/s: median of {report['repeats']} calls (and the best call)")
    print(f"{'backend':8} {'clip':>12} {'batch':>6} {'dtype':>8} {'clips/s':>10} {'best':>10} {'ms/batch':>10}")
    for row in report["results"]:
        clip = f"{row['frames']}x{row['size']}x{row['size']}"
        print(f"{row['backend']:8} {clip:>12} {row['batch']:>6} {row['dtype']:>8} {row['clips_per_s']:>10.1f} "
              f"{row['best_clips_per_s']:>10.1f} {row['median_s'] * MS_PER_S:>10.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="timed calls per figure (median)")
    parser.add_argument("--parts", action="store_true", help="time the op's parts instead of whole batches")
    parser.add_argument("--backend", choices=(ALL_BACKENDS, "numpy", "cupy"), default=ALL_BACKENDS,
                        help="time only this array library (default: NumPy, and CuPy where a GPU exists)")
    parser.add_argument("--sizes", type=int, nargs="+", default=SIZES, metavar="S",
                        help="clip sides, S x S (default: %(default)s)")
    parser.add_argument("--batches", type=int, nargs="+", default=(), metavar="B",
                        help=f"batch sizes (default: {BATCHES} on NumPy, {GPU_BATCHES} on CuPy)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or min(args.sizes) < 1 or (args.batches and min(args.batches) < 1):
        parser.error("--repeats, --sizes and --batches must be >= 1")
    if args.backend == "cupy" and cupy_device()[0] is None:
        parser.error("--backend cupy needs CuPy and a usable CUDA GPU, and none was found; "
                     "`make doctor` says why")
    report = (run_parts(args.repeats) if args.parts else
              run_benchmarks(args.repeats, args.backend, tuple(args.sizes), tuple(args.batches)))
    (print_parts if args.parts else print_table)(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    run_command(main)
