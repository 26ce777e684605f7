"""Worker processes for per-video jobs.

Workers come from a fork server: forking the calling process directly could
copy locks held by threads of libraries it has loaded (DALI, torch), so each
worker starts from a clean interpreter instead.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

START_METHOD = "forkserver"


def auto_workers() -> int:
    """Processes used when none are asked for: one per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):        # Linux: the cores this process is allowed
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes started from a fork server."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(START_METHOD))
