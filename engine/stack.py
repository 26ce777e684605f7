"""The install and the machine, checked without running anything on the GPU: Python; torch, CuPy and
DALI with the CUDA major of each, and that the majors agree; every CUDA library the GPU path loads
(``CUDA_LIBRARIES``, shared with tests/test_install.py); the GPU and its driver; libnvcuvid (NVDEC's
driver library). The CUDA libraries load without a GPU. Importing this module loads neither CuPy
nor DALI."""
from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.checks import NO_DALI_NEEDED, Check, Context, Result, failed, passed, skipped
from engine.logger import GIB

MIN_PYTHON = (3, 10)                 # pyproject.toml's requires-python
WANTED_CUDA_MAJOR = "13"             # requirements.txt: torch 2.14.1 (CUDA 13), nvidia-dali-cuda130, cupy-cuda13x
DRIVER_BRANCH = "R580"               # the first driver branch that supports CUDA 13.0
LIBCUDA = "libcuda.so.1"             # the driver API, installed with the NVIDIA driver
LIBNVCUVID = "libnvcuvid.so.1"       # NVDEC's driver library, DALI's GPU video decoder needs it
DRIVER_VERSION_FILE = "/proc/driver/nvidia/version"
CUDA_VERSION_UNIT = 1000             # CUDA versions as integers: 13020 is 13.2
CUDA_MINOR_UNIT = 10
# Wheels whose name carries their CUDA major.
DALI_WHEEL = re.compile(r"nvidia-dali-cuda(\d+)0")
CUPY_WHEEL = re.compile(r"cupy-cuda(\d+)x")
STALE_WHEELS_FIX = ("remove the other CUDA major's wheels (`pip uninstall -y nvidia-dali-cuda120 cupy-cuda12x`), "
                    "then `make setup` installs requirements.txt (all CUDA 13)")
SETUP_FIX = "run `make setup` (reinstalls requirements.txt: torch, nvidia-dali-cuda130, cupy-cuda13x)"


# ------------------------------------------------------------ CUDA libraries ----
def load_cupy_library(name: str) -> object:
    """CuPy's binding of the CUDA library ``name`` (cublas, cufft, ...), loading the library the way
    CuPy does on first use (its lazy ``cupy.cuda.<name>``, which finds the nvidia-* wheels' copy)."""
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
    return getattr(cupy.cuda, name)


def load_nvrtc() -> object:
    """NVRTC's version: CuPy links NVRTC at run time, so only a call loads it."""
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
    return cupy.cuda.nvrtc.getVersion()


def load_cuda_runtime() -> object:
    """The CUDA runtime version CuPy is linked to (works without a GPU)."""
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
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
    import nvidia.dali.backend as backend  # lazy: DALI may be absent: this check says so
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
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
    wheels = [f"cupy-cuda{major}x" for major in wheel_majors(CUPY_WHEEL)]
    runtime = load_cuda_runtime()
    major, minor = runtime // CUDA_VERSION_UNIT, runtime % CUDA_VERSION_UNIT // CUDA_MINOR_UNIT
    wheel_names = ", ".join(wheels) or "no wheel"
    return passed(describe_version("CuPy", cupy.__version__, f"{major}.{minor}") + f" ({wheel_names})")


def check_dali(context: Context) -> Result:
    if not context.dali:
        return skipped(NO_DALI_NEEDED)
    import nvidia.dali  # lazy: DALI may be absent: this check says so
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
        return failed(f"the NVIDIA driver supports CUDA {format_cuda(driver)}, "
                      f"the wheels need CUDA {WANTED_CUDA_MAJOR}",
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
                      "set NVIDIA_DRIVER_CAPABILITIES=compute,utility,video; "
                      "or set data.decode=cpu (VP8/VP9/MJPEG only)")
    return passed(f"{LIBNVCUVID} loads")


def check_python(context: Context) -> Result:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return failed(f"Python {version} is older than {'.'.join(map(str, MIN_PYTHON))}",
                      "make the venv with a newer Python: `make clean setup PYTHON=python3.11`")
    return passed(f"Python {version}")
