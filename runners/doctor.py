"""Is the GPU stack usable? `python -m runners.doctor --config X [--nproc N] [--quick]` (`make doctor`).

One line per check, ``PASS|FAIL|SKIP  name  detail``; a FAIL or SKIP line says why and, after
``fix:``, what to do (the checks: engine.doctor; GPU runs run their quick part before any work).
Without a GPU the GPU-only checks SKIP and the library checks still run. Exit code 0 when
nothing FAILs, 1 when a check FAILs, 2 for a usage or config error.
"""
from __future__ import annotations

import sys

from engine import doctor
from engine.checks import FAIL, exit_code, format_result, run_check
from engine.cli import cli_parser, parse_cli_args
from engine.errors import run_command


def main(argv: list[str] | None = None) -> int:
    p = cli_parser("check the GPU stack: libraries, CUDA majors, GPU, NVDEC, FAME on CuPy, AMP, NCCL")
    p.add_argument("--nproc", type=int, default=None, help="processes of the run (default: WORLD_SIZE or 1)")
    p.add_argument("--quick", action="store_true", help="only the quick checks the runners run before a GPU run")
    cfg, a = parse_cli_args(p, argv)
    nproc = a.nproc if a.nproc is not None else doctor.env_nproc()
    if nproc < 1:
        p.error(f"--nproc must be at least 1, got {nproc}")
    context = doctor.make_context(cfg, nproc)
    if not context.gpu:
        print(f"{context.no_gpu_reason}: the GPU-only checks SKIP, the library checks still run", flush=True)
    checks = tuple(c for c in doctor.CHECKS if c.quick or not a.quick)
    results = []
    for check in checks:
        results.append(run_check(check, context))
        print(format_result(results[-1]), flush=True)
    failures = sum(result.status == FAIL for result in results)
    print(f"{len(results)} checks: {failures} failed" if failures else f"{len(results)} checks: none failed")
    return exit_code(results)


if __name__ == "__main__":
    sys.exit(run_command(main))
