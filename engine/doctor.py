"""The checks of the GPU stack in order (``CHECKS``: engine.stack's, then engine.smoke's) and the
preflight: the quick subset (* below) that every GPU run passes before any work.

Python version; torch, CuPy and DALI with the CUDA major of each, and that the majors agree*;
every CUDA library the GPU path loads*; the GPU (name, driver, memory)*; NVRTC compiles and runs
a kernel; libnvcuvid (NVDEC's driver library)*; DALI decodes an H.264 clip on the GPU like PyAV
does; the FAME op on CuPy equals NumPy's; AMP autocast (train.amp)*; NCCL when NPROC > 1*.
Without a GPU the GPU-only checks SKIP with the reason. `make doctor` (runners.doctor) prints
them all.
"""
from __future__ import annotations

import os
import sys

from engine import config as C
from engine.checks import EXIT_USAGE, FAIL, Check, Context, Result, format_result, run_checks
from engine.smoke import check_amp, check_fame_cupy, check_gpu_decode, check_nccl, check_nvrtc_kernel
from engine.stack import (
    SETUP_FIX,
    STALE_WHEELS_FIX,
    check_cupy,
    check_dali,
    check_gpu,
    check_majors,
    check_nvcuvid,
    check_python,
    check_torch,
    find_no_gpu_reason,
    library_checks,
)

PREFLIGHT_ENV = "FAME_PREFLIGHT"     # "0" skips the preflight of GPU runs


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


def make_context(cfg: C.Config | None, nproc: int, dali: bool = True) -> Context:
    """The checks' context from a config (None: the defaults, train.amp unknown); ``dali``: the
    run reads videos through DALI."""
    reason = find_no_gpu_reason()
    if cfg is None:
        return Context(nproc=nproc, gpu=not reason, no_gpu_reason=reason, dali=dali)
    return Context(device=cfg.device, amp=cfg.train.amp, decode=cfg.data.decode, nproc=nproc,
                   gpu=not reason, no_gpu_reason=reason, dali=dali)


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


def preflight(cfg: C.Config | None = None, dali: bool = True) -> None:
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
