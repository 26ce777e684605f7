"""The vocabulary of the stack's checks (engine.stack, engine.smoke, assembled in engine.doctor):
what a check sees (Context), what it is (Check), what it found (Result: PASS, FAIL or SKIP with
the reason and the fix), and running one."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
NO_DALI_NEEDED = "this run reads no videos: DALI and NVDEC are not needed"


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
    amp: str | None = None         # train.amp; None: not known (the amp check SKIPs)
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
