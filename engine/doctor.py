"""The checks of the GPU stack behind `make doctor` (`python -m runners.doctor --config X [--nproc N] [--quick]`).

Prints one line per check, ``PASS|FAIL|SKIP  name  detail``; a FAIL or SKIP line says why and,
after ``fix:``, what to do. Exit code 0 when nothing FAILs, 1 when a check FAILs, 2 for a usage
or config error.

Checks (``CHECKS``, in order; * = the quick subset the runners run before a GPU run starts,
``preflight``): Python version; torch, CuPy and DALI with the CUDA major of each, and that the
majors agree*; every CUDA library the GPU path loads (``CUDA_LIBRARIES``, shared with
tests/test_install.py)*; the GPU (name, driver, memory)*; NVRTC compiles and runs a kernel;
libnvcuvid (NVDEC's driver library)*; DALI decodes an H.264 clip on the GPU like PyAV does;
the FAME op on CuPy equals NumPy's; AMP autocast (train.amp)*; NCCL when NPROC > 1*.

Without a GPU the GPU-only checks SKIP with the reason, and the library checks still run: the
CUDA libraries load without a GPU. Importing this module loads neither CuPy nor DALI.
"""
from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.metadata
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from engine import config as C
from engine.setup import AMP_DTYPES, GIB, cli_parser, parse_cli_args

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MIN_PYTHON = (3, 10)                 # pyproject.toml's requires-python
WANTED_CUDA_MAJOR = "13"             # requirements.txt: torch 2.14.1 (CUDA 13), nvidia-dali-cuda130, cupy-cuda13x
DRIVER_BRANCH = "R580"               # the first driver branch that supports CUDA 13.0
LIBCUDA = "libcuda.so.1"             # the driver API, installed with the NVIDIA driver
LIBNVCUVID = "libnvcuvid.so.1"       # NVDEC's driver library, DALI's GPU video decoder needs it
DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"
PREFLIGHT_ENV = "FAME_PREFLIGHT"     # "0" skips the preflight of GPU runs
NO_DALI_NEEDED = "this run reads no videos: DALI and NVDEC are not needed"
CUDA_VERSION_UNIT = 1000             # CUDA versions as integers: 13020 is 13.2
CUDA_MINOR_UNIT = 10
# Wheels whose name carries their CUDA major.
DALI_WHEEL = re.compile(r"nvidia-dali-cuda(\d+)0")
CUPY_WHEEL = re.compile(r"cupy-cuda(\d+)x")
STALE_WHEELS_FIX = ("remove the other CUDA major's wheels (`pip uninstall -y nvidia-dali-cuda120 cupy-cuda12x`), "
                    "then `make setup` installs requirements.txt (all CUDA 13)")
SETUP_FIX = "run `make setup` (reinstalls requirements.txt: torch, nvidia-dali-cuda130, cupy-cuda13x)"
# NVRTC smoke test: y = x + 1 on a few values.
ADD_ONE_KERNEL = r'''extern "C" __global__ void add_one(const float* x, float* y, int n) {
    int i = blockDim.x * blockIdx.x + threadIdx.x;
    if (i < n) y[i] = x[i] + 1.0f;
}'''
KERNEL_VALUES = 32
# DALI's NVDEC decode against PyAV: a smooth generated H.264 clip (the decoders' colour conversions
# differ only by rounding and chroma upsampling there).
DECODE_CODEC, DECODE_FRAMES, DECODE_SIZE, DECODE_FPS, DECODE_GOP = "h264", 8, 64, 25.0, 4
MAX_DECODE_MEAN_ABS_DIFF = 4.0       # levels of 255, mean over every pixel and channel
# FAME on CuPy against NumPy: a square moving over a static noise background, same seed.
FAME_SEED, FAME_BATCH, FAME_FRAMES, FAME_SIZE, FAME_SQUARE = 0, 4, 8, 112, 32
MIN_FAME_MASK_IOU = 0.99             # as tests/fame/test_fame_gpu.py
MIN_FAME_EQUAL_SHARE = 0.99          # share of merged values that are identical
AMP_SHAPE = (1, 3, 4, 16, 16)        # N, C, T, H, W of the autocast conv3d


@dataclass(frozen=True)
class Result:
    """What one check found: status PASS|FAIL|SKIP, what it saw, what to do (FAIL/SKIP)."""
    status: str
    detail: str
    fix: str = ""
    name: str = ""


def passed(detail: str) -> Result:
    return Result(PASS, detail)


def failed(detail: str, fix: str) -> Result:
    return Result(FAIL, detail, fix)


def skipped(reason: str, fix: str = "") -> Result:
    return Result(SKIP, reason, fix)


@dataclass(frozen=True)
class Context:
    """What the checks depend on: the run's settings and whether a GPU is visible."""
    device: str = "auto"              # config key device
    amp: Optional[str] = None         # train.amp; None: not known (the amp check SKIPs)
    decode: str = "auto"              # data.decode
    nproc: int = 1
    gpu: bool = False
    no_gpu_reason: str = ""
    dali: bool = True                 # the run reads videos through DALI (bench-trainer does not)


@dataclass(frozen=True)
class Check:
    """One named check: ``run(context) -> Result``; ``fix`` is said when it raises."""
    name: str
    run: Callable[[Context], Result]
    fix: str
    needs_gpu: bool = False
    quick: bool = False


# ------------------------------------------------------------ CUDA libraries ----
def load_cupy_library(name: str) -> object:
    """CuPy's binding of the CUDA library ``name`` (cublas, cufft, ...), loading the library the way
    CuPy does on first use (its lazy ``cupy.cuda.<name>``, which finds the nvidia-* wheels' copy)."""
    import cupy
    return getattr(cupy.cuda, name)


def load_nvrtc() -> object:
    """NVRTC's version: CuPy links NVRTC at run time, so only a call loads it."""
    import cupy
    return cupy.cuda.nvrtc.getVersion()


def load_cuda_runtime() -> object:
    """The CUDA runtime version CuPy is linked to (works without a GPU)."""
    import cupy
    return cupy.cuda.runtime.runtimeGetVersion()


def load_dali_backend() -> object:
    """DALI's native backend (libdali and the CUDA libraries it links)."""
    return importlib.import_module("nvidia.dali.backend_impl")


def load_torch_cuda() -> object:
    """torch's CUDA build (libtorch_cuda loads with ``import torch``); fails for a CPU-only build."""
    if torch.version.cuda is None:
        raise ImportError(f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)")
    return torch.version.cuda


def load_cudnn() -> object:
    """cuDNN through torch (the 3D convolutions of the backbones)."""
    version = torch.backends.cudnn.version()
    if version is None:
        raise ImportError("torch.backends.cudnn.version() is None: cuDNN did not load")
    return version


@dataclass(frozen=True)
class CudaLibrary:
    """A CUDA library of the install, what loads it and who needs it; ``quick``: the training
    path loads it, so GPU runs check it before they start."""
    name: str
    used_by: str
    load: Callable[[], object]
    quick: bool = True
    dali: bool = False                # only a run that reads videos through DALI needs it


CUDA_LIBRARIES: tuple[CudaLibrary, ...] = (
    CudaLibrary("CUDA runtime (CuPy)", "every CuPy call", load_cuda_runtime),
    CudaLibrary("cuBLAS", "fame.mask: xp.matmul", lambda: load_cupy_library("cublas")),
    CudaLibrary("cuFFT", "fame.motion: xp.fft (camera compensation)", lambda: load_cupy_library("cufft")),
    CudaLibrary("cuRAND", "cupy.random (not on the training path: a stack check)", lambda: load_cupy_library("curand"),
                quick=False),
    CudaLibrary("NVRTC", "every CuPy kernel is compiled at run time", load_nvrtc),
    CudaLibrary("DALI backend", "the DALI pipelines", load_dali_backend, dali=True),
    CudaLibrary("torch CUDA", "training on the GPU", load_torch_cuda),
    CudaLibrary("cuDNN", "torch's 3D convolutions", load_cudnn),
)


def library_load_error(library: CudaLibrary) -> str:
    """Why ``library`` does not load ('' when it does)."""
    try:
        library.load()
    except Exception as error:  # a missing library shows as ImportError, OSError or a CUDA error
        return f"{type(error).__name__}: {error}"
    return ""


def check_library(library: CudaLibrary, context: Context) -> Result:
    if library.dali and not context.dali:
        return skipped(NO_DALI_NEEDED)
    error = library_load_error(library)
    if error:
        return failed(f"{library.name} (needed by {library.used_by}) does not load: {error}",
                      f"{SETUP_FIX}; a CUDA 12 library name in the error (e.g. libcublas.so.12) means a "
                      f"CUDA 12 wheel is left: {STALE_WHEELS_FIX}")
    return passed(f"{library.name} loads ({library.used_by})")


def library_checks() -> tuple[Check, ...]:
    return tuple(Check(f"load {library.name}", lambda context, library=library: check_library(library, context),
                       SETUP_FIX, quick=library.quick) for library in CUDA_LIBRARIES)


# ------------------------------------------------------------ CUDA majors ----
def installed_wheels() -> list[str]:
    """Lower-case names of the installed distributions."""
    return sorted({(dist.metadata["Name"] or "").lower() for dist in importlib.metadata.distributions()})


def wheel_majors(pattern: re.Pattern) -> list[str]:
    """The CUDA majors of the installed wheels whose name matches ``pattern`` (one per wheel)."""
    return [match.group(1) for match in map(pattern.fullmatch, installed_wheels()) if match]


def major_of_version(version: int) -> str:
    """13020 -> '13' (CUDA's integer versions)."""
    return str(version // CUDA_VERSION_UNIT)


def torch_cuda_major() -> str:
    if torch.version.cuda is None:
        raise ImportError(f"torch {torch.__version__} is a CPU-only build")
    return torch.version.cuda.split(".")[0]


def cupy_cuda_major() -> str:
    """The major of the CUDA runtime CuPy is built on (no GPU needed)."""
    return major_of_version(load_cuda_runtime())


def dali_cuda_major() -> str:
    """The major of the installed DALI wheel (nvidia-dali-cuda130 -> '13'); DALI's build version otherwise."""
    majors = wheel_majors(DALI_WHEEL)
    if len(majors) > 1:
        raise ImportError(f"two DALI wheels are installed (CUDA {', '.join(majors)}); they overwrite each other")
    if majors:
        return majors[0]
    import nvidia.dali.backend as backend
    return major_of_version(int(backend.__cuda_version__))


def cuda_majors(dali: bool = True) -> dict[str, str]:
    """{'torch': major, 'CuPy': major, 'DALI': major} of the installed stack (DALI's only with ``dali``)."""
    majors = {"torch": torch_cuda_major(), "CuPy": cupy_cuda_major()}
    return {**majors, "DALI": dali_cuda_major()} if dali else majors


def majors_problem(majors: dict[str, str]) -> str:
    """Why the CUDA majors do not fit together ('' when they all agree)."""
    if len(set(majors.values())) > 1:
        listed = ", ".join(f"{package} {major}" for package, major in majors.items())
        return (f"the CUDA majors disagree ({listed}): each loads its own major's libraries "
                f"(libcublas.so.<major>, ...), which the other stack does not install")
    return ""


def describe_version(package: str, version: str, major: str) -> str:
    return f"{package} {version}, CUDA {major}"


def check_torch(context: Context) -> Result:
    if torch.version.cuda is None:
        return failed(f"torch {torch.__version__} is a CPU-only build", SETUP_FIX)
    return passed(describe_version("torch", torch.__version__, torch.version.cuda))


def check_cupy(context: Context) -> Result:
    import cupy
    wheels = [f"cupy-cuda{major}x" for major in wheel_majors(CUPY_WHEEL)]
    runtime = load_cuda_runtime()
    major, minor = runtime // CUDA_VERSION_UNIT, runtime % CUDA_VERSION_UNIT // CUDA_MINOR_UNIT
    return passed(describe_version("CuPy", cupy.__version__, f"{major}.{minor}") + f" ({', '.join(wheels) or 'no wheel'})")


def check_dali(context: Context) -> Result:
    if not context.dali:
        return skipped(NO_DALI_NEEDED)
    import nvidia.dali
    return passed(describe_version("DALI", nvidia.dali.__version__, dali_cuda_major()))


def check_majors(context: Context) -> Result:
    majors = cuda_majors(context.dali)
    problem = majors_problem(majors)
    if problem:
        return failed(problem, STALE_WHEELS_FIX)
    return passed(", ".join(f"{package} {major}" for package, major in majors.items()))


# ------------------------------------------------------------ the GPU ----
def driver_cuda_version() -> int:
    """The CUDA version the NVIDIA driver supports (13000 is 13.0); 0 without a driver."""
    try:
        libcuda = ctypes.CDLL(LIBCUDA)
    except OSError:
        return 0
    version = ctypes.c_int(0)
    return version.value if libcuda.cuDriverGetVersion(ctypes.byref(version)) == 0 else 0


def driver_release() -> str:
    """The driver's release (e.g. 580.65.06) from the kernel module, '' when unknown."""
    try:
        with open(DRIVER_VERSION_FILE) as file:
            match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+(?:\.\d+)+)", file.read())
    except OSError:
        return ""
    return match.group(1) if match else ""


def find_no_gpu_reason() -> str:
    """Why torch sees no CUDA GPU ('' when it sees one)."""
    if torch.cuda.is_available():
        return ""
    driver = driver_cuda_version()
    if driver == 0:
        return f"no CUDA GPU is visible (no NVIDIA driver: {LIBCUDA} does not load)"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return (f"no CUDA GPU is visible (the driver supports CUDA {format_cuda(driver)}, "
            f"torch.cuda.is_available() is False{where})")


def format_cuda(version: int) -> str:
    return f"{version // CUDA_VERSION_UNIT}.{version % CUDA_VERSION_UNIT // CUDA_MINOR_UNIT}"


def check_gpu(context: Context) -> Result:
    """The GPU: name, driver, memory; FAIL when the driver is too old or the config demands a GPU."""
    driver = driver_cuda_version()
    if driver and driver // CUDA_VERSION_UNIT < int(WANTED_CUDA_MAJOR):
        return failed(f"the NVIDIA driver supports CUDA {format_cuda(driver)}, the wheels need CUDA {WANTED_CUDA_MAJOR}",
                      f"install an NVIDIA driver of the {DRIVER_BRANCH} branch or newer")
    if not context.gpu:
        if context.device == "gpu":
            return failed(f"config key 'device' is 'gpu' but {context.no_gpu_reason}",
                          "run on a machine with a CUDA GPU (check CUDA_VISIBLE_DEVICES), or set device=auto or cpu")
        return skipped(context.no_gpu_reason, "GPU-only checks need a CUDA GPU")
    release = driver_release()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(f"{props.name} {props.total_memory / GIB:.1f} GiB")
    driver_text = f"driver {release + ' ' if release else ''}(CUDA {format_cuda(driver)})"
    return passed(f"{len(gpus)} GPU(s): {'; '.join(gpus)}; {driver_text}")


def check_nvrtc_kernel(context: Context) -> Result:
    """NVRTC compiles a tiny kernel and it runs: y = x + 1."""
    import cupy
    kernel = cupy.RawKernel(ADD_ONE_KERNEL, "add_one")
    x = cupy.arange(KERNEL_VALUES, dtype=cupy.float32)
    y = cupy.empty_like(x)
    kernel((1,), (KERNEL_VALUES,), (x, y, np.int32(KERNEL_VALUES)))
    got = cupy.asnumpy(y)
    if not np.array_equal(got, np.arange(KERNEL_VALUES, dtype=np.float32) + 1):
        return failed(f"the compiled kernel computed {got[:4]}..., expected 1, 2, 3, 4, ...",
                      "the GPU or its driver misbehaves: check `nvidia-smi` and the driver installation")
    return passed(f"cupy.RawKernel compiled (NVRTC {'.'.join(map(str, load_nvrtc()))}) and ran")


def load_nvcuvid() -> object:
    return ctypes.CDLL(LIBNVCUVID)


def check_nvcuvid(context: Context) -> Result:
    if not context.dali:
        return skipped(NO_DALI_NEEDED)
    if context.decode == "cpu":
        return skipped("data.decode is cpu: DALI decodes on the CPU, NVDEC is not used")
    try:
        load_nvcuvid()
    except OSError as error:
        return failed(f"{LIBNVCUVID} (NVDEC, DALI's GPU video decoder) does not load: {error}",
                      "install the driver's decode library (package libnvidia-decode-<branch>); in a container "
                      "set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video; or set data.decode=cpu (VP8/VP9/MJPEG only)")
    return passed(f"{LIBNVCUVID} loads")


# ------------------------------------------------------------ decode and FAME ----
def smooth_clip(frames: int, size: int) -> np.ndarray:
    """A (T, size, size, 3) uint8 clip of moving gradients (no sharp edges)."""
    t, y, x, c = np.ogrid[:frames, :size, :size, :3]
    return (24 + x // 2 + y // 2 + 8 * t + 30 * c).astype(np.uint8)


def decode_with_dali(path: str, device: str) -> np.ndarray:
    """Every frame of the video file ``path`` decoded by fn.decoders.video on ``device`` (cpu|mixed)."""
    from nvidia.dali import fn, pipeline_def
    encoded = np.fromfile(path, dtype=np.uint8)
    options = {"affine": False} if device == "mixed" else {}

    @pipeline_def(batch_size=1, num_threads=1, device_id=0 if device == "mixed" else None, prefetch_queue_depth=1)
    def graph():
        return fn.decoders.video(fn.external_source(name="encoded", no_copy=False), device=device, **options)

    pipe = graph()
    pipe.build()
    pipe.feed_input("encoded", [encoded])
    (video,) = pipe.run()
    if device == "mixed":
        video = video.as_cpu()
    return np.array(video.at(0))


def decode_difference(codec: str, device: str) -> tuple[tuple, tuple, float]:
    """(DALI's shape, PyAV's shape, mean |DALI - PyAV|) of a generated ``codec`` clip."""
    from data.video_io import codec_setting, read_video, write_video
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip" + codec_setting(codec).extension)
        write_video(path, smooth_clip(DECODE_FRAMES, DECODE_SIZE), DECODE_FPS, codec, DECODE_GOP)
        dali, pyav = decode_with_dali(path, device), read_video(path)
    if dali.shape != pyav.shape:
        return dali.shape, pyav.shape, float("inf")
    return dali.shape, pyav.shape, float(np.abs(dali.astype(np.int16) - pyav.astype(np.int16)).mean())


def check_gpu_decode(context: Context) -> Result:
    """DALI decodes a generated H.264 clip with NVDEC like PyAV does."""
    if context.decode == "cpu":
        return skipped("data.decode is cpu: DALI decodes on the CPU, NVDEC is not used")
    dali_shape, pyav_shape, difference = decode_difference(DECODE_CODEC, "mixed")
    if dali_shape != pyav_shape:
        return failed(f"DALI decoded frames of shape {dali_shape}, PyAV {pyav_shape}",
                      "report it with the DALI version; meanwhile set data.decode=cpu with VP9 videos")
    if difference > MAX_DECODE_MEAN_ABS_DIFF:
        return failed(f"DALI's frames differ from PyAV's by {difference:.2f} levels on average "
                      f"(allowed {MAX_DECODE_MEAN_ABS_DIFF})",
                      "report it with the DALI version; meanwhile set data.decode=cpu with VP9 videos")
    return passed(f"{DECODE_CODEC} {dali_shape}: mean |DALI - PyAV| {difference:.2f} <= {MAX_DECODE_MEAN_ABS_DIFF}")


def moving_square_clips(seed: int = FAME_SEED) -> np.ndarray:
    """(B, T, S, S, 3) uint8: a flat square moving over a static noise background, one per clip."""
    rng = np.random.default_rng(seed)
    clips = np.repeat(rng.integers(0, 256, (FAME_BATCH, 1, FAME_SIZE, FAME_SIZE, 3), dtype=np.uint8), FAME_FRAMES, 1)
    for b in range(FAME_BATCH):
        colour = rng.integers(0, 256, 3, dtype=np.uint8)
        top, left = rng.integers(0, FAME_SIZE - FAME_SQUARE - FAME_FRAMES * 2, 2)
        for t in range(FAME_FRAMES):
            clips[b, t, top + 2 * t:top + 2 * t + FAME_SQUARE, left + 2 * t:left + 2 * t + FAME_SQUARE] = colour
    return clips


def fame_agreement(xp) -> tuple[float, float]:
    """(smallest per-clip mask IoU, share of equal merged values) of fame.augment on ``xp`` against
    NumPy: the same clips, config and seed."""
    import fame
    from fame.arrays import to_host
    clips, cfg = moving_square_clips(), fame.FameConfig()
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(FAME_SEED))
    got_merged, got_masks = (to_host(array) for array in
                             fame.augment(xp.asarray(clips), cfg, np.random.default_rng(FAME_SEED)))
    ious = [np.logical_and(g, e).sum() / max(np.logical_or(g, e).sum(), 1)
            for g, e in zip(got_masks.astype(bool), masks.astype(bool))]
    return float(min(ious)), float((got_merged == merged).mean())


def check_fame_cupy(context: Context) -> Result:
    import cupy
    iou, equal = fame_agreement(cupy)
    detail = (f"CuPy vs NumPy on {FAME_BATCH} clips {FAME_FRAMES}x{FAME_SIZE}x{FAME_SIZE}: smallest mask IoU {iou:.3f} "
              f"(>= {MIN_FAME_MASK_IOU}), equal merged values {equal:.3f} (>= {MIN_FAME_EQUAL_SHARE})")
    if iou < MIN_FAME_MASK_IOU or equal < MIN_FAME_EQUAL_SHARE:
        return failed(detail, "run `pytest -m gpu tests/fame` to find the step that differs; meanwhile FAME can run "
                              "on the CPU (device=cpu)")
    return passed(detail)


def check_amp(context: Context) -> Result:
    """Autocast of train.amp on the GPU: a tiny conv3d gives finite values of the AMP dtype."""
    if context.amp is None:
        return skipped("train.amp is not known here")
    if context.amp not in AMP_DTYPES:
        return skipped(f"train.amp is {context.amp}: no autocast")
    dtype = AMP_DTYPES[context.amp]
    if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        return failed(f"train.amp is bf16 but {torch.cuda.get_device_name()} does not support bfloat16",
                      "set train.amp=fp16 (or none)")
    conv = torch.nn.Conv3d(AMP_SHAPE[1], 4, 3, padding=1).cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
        out = conv(torch.randn(AMP_SHAPE, device="cuda"))
    if out.dtype != dtype or not bool(torch.isfinite(out).all()):
        return failed(f"a conv3d under {context.amp} autocast gave {out.dtype} with non-finite values",
                      "set train.amp=none and report the GPU and torch version")
    return passed(f"conv3d under {context.amp} autocast gives {out.dtype}")


def check_nccl(context: Context) -> Result:
    if context.nproc <= 1:
        return skipped("one process (NPROC=1): NCCL is not used")
    import torch.distributed as dist
    if not dist.is_nccl_available():
        return failed("torch.distributed has no NCCL backend", SETUP_FIX)
    version = torch.cuda.nccl.version()
    return passed(f"NCCL {'.'.join(map(str, version)) if isinstance(version, tuple) else version} "
                  f"for {context.nproc} processes")


def check_python(context: Context) -> Result:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return failed(f"Python {version} is older than {'.'.join(map(str, MIN_PYTHON))}",
                      "make the venv with a newer Python: `make clean setup PYTHON=python3.11`")
    return passed(f"Python {version}")


CHECKS: tuple[Check, ...] = (
    Check("python", check_python, "use Python >= 3.10"),
    Check("torch", check_torch, SETUP_FIX, quick=True),
    Check("cupy", check_cupy, SETUP_FIX, quick=True),
    Check("dali", check_dali, SETUP_FIX, quick=True),
    Check("CUDA majors agree", check_majors, STALE_WHEELS_FIX, quick=True),
    *library_checks(),
    Check("gpu", check_gpu, "check `nvidia-smi` and CUDA_VISIBLE_DEVICES", quick=True),
    Check("NVRTC kernel", check_nvrtc_kernel, SETUP_FIX, needs_gpu=True),
    Check("libnvcuvid", check_nvcuvid, "install the driver's decode library or set data.decode=cpu",
          needs_gpu=True, quick=True),
    Check("DALI GPU decode", check_gpu_decode, "set data.decode=cpu with VP9 videos", needs_gpu=True),
    Check("FAME CuPy = NumPy", check_fame_cupy, "run with device=cpu", needs_gpu=True),
    Check("AMP autocast", check_amp, "set train.amp=none", needs_gpu=True, quick=True),
    Check("NCCL", check_nccl, SETUP_FIX, needs_gpu=True, quick=True),
)


# ------------------------------------------------------------ running ----
def make_context(cfg: Optional[C.Config], nproc: int, dali: bool = True) -> Context:
    """The checks' context from a config (None: the defaults, train.amp unknown); ``dali``: the
    run reads videos through DALI."""
    reason = find_no_gpu_reason()
    if cfg is None:
        return Context(nproc=nproc, gpu=not reason, no_gpu_reason=reason, dali=dali)
    return Context(device=cfg.device, amp=cfg.train.amp, decode=cfg.data.decode, nproc=nproc,
                   gpu=not reason, no_gpu_reason=reason, dali=dali)


def run_check(check: Check, context: Context) -> Result:
    """One check's result, named; GPU-only checks SKIP without a GPU; a raising check FAILs."""
    if check.needs_gpu and not context.gpu:
        result = skipped(context.no_gpu_reason)
    else:
        try:
            result = check.run(context)
        except Exception as error:
            result = failed(f"{type(error).__name__}: {error}", check.fix)
    return dataclasses.replace(result, name=check.name)


def run_checks(checks: tuple[Check, ...], context: Context) -> list[Result]:
    return [run_check(check, context) for check in checks]


def format_result(result: Result) -> str:
    line = f"{result.status}  {result.name:<24}  {result.detail}"
    return f"{line} -- fix: {result.fix}" if result.fix and result.status != PASS else line


def exit_code(results: list[Result]) -> int:
    return EXIT_FAILED if any(result.status == FAIL for result in results) else EXIT_OK


def env_nproc() -> int:
    """Processes of this run: torchrun's WORLD_SIZE, 1 without it."""
    return int(os.environ.get("WORLD_SIZE", 1))


class PreflightFailed(SystemExit):
    """A GPU run cannot start: the quick checks FAILed (exit code 2, message on stderr)."""

    def __init__(self, message: str):
        super().__init__(EXIT_USAGE)
        self.message = message


def preflight_message(failures: list[Result]) -> str:
    lines = "\n".join(f"  {format_result(result)}" for result in failures)
    return (f"the GPU stack is not ready, the run did not start ({len(failures)} check(s) failed):\n{lines}\n"
            f"`make doctor` runs every check; {PREFLIGHT_ENV}=0 skips this one")


_PREFLIGHT_PASSED: set[Context] = set()   # contexts whose preflight passed in this process


def preflight(cfg: Optional[C.Config] = None, dali: bool = True) -> None:
    """Run the quick checks before a GPU run (once per process and setting); on a FAIL print the
    failures and their fixes to stderr and raise PreflightFailed (SystemExit code 2). ``dali``:
    the run reads videos through DALI (without it DALI and NVDEC are not checked)."""
    context = make_context(cfg, env_nproc(), dali)
    if os.environ.get(PREFLIGHT_ENV) == "0" or context in _PREFLIGHT_PASSED:
        return
    failures = [result for result in run_checks(tuple(c for c in CHECKS if c.quick), context) if result.status == FAIL]
    if failures:
        message = preflight_message(failures)
        print(message, file=sys.stderr)
        raise PreflightFailed(message)
    _PREFLIGHT_PASSED.add(context)


def main(argv: Optional[list[str]] = None) -> int:
    p = cli_parser("check the GPU stack: libraries, CUDA majors, GPU, NVDEC, FAME on CuPy, AMP, NCCL")
    p.add_argument("--nproc", type=int, default=None, help="processes of the run (default: WORLD_SIZE or 1)")
    p.add_argument("--quick", action="store_true", help="only the quick checks the runners run before a GPU run")
    cfg, a = parse_cli_args(p, argv)
    nproc = a.nproc if a.nproc is not None else env_nproc()
    if nproc < 1:
        p.error(f"--nproc must be at least 1, got {nproc}")
    context = make_context(cfg, nproc)
    if not context.gpu:
        print(f"{context.no_gpu_reason}: the GPU-only checks SKIP, the library checks still run", flush=True)
    checks = tuple(c for c in CHECKS if c.quick or not a.quick)
    results = []
    for check in checks:
        results.append(run_check(check, context))
        print(format_result(results[-1]), flush=True)
    failures = sum(result.status == FAIL for result in results)
    print(f"{len(results)} checks: {failures} failed" if failures else f"{len(results)} checks: none failed")
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
