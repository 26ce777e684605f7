"""One BLAS thread for NumPy work that runs beside other busy threads.

NumPy's bundled OpenBLAS starts one thread per core for every matrix product. Inside
the pipeline's python stage the cores are already busy with DALI's own threads, and
the spinning BLAS threads then slow FAME's mask blur down by an order of magnitude
(measured: 0.6 s instead of 35 ms for 8 clips of 112x112 on 2 cores). The OpenBLAS
libraries loaded in this process are found in /proc/self/maps and driven through
their ``*_set_num_threads`` entry points; where none is found (another platform or
BLAS) nothing changes.
"""
from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

PROCESS_MAPS = "/proc/self/maps"
# Entry-point pairs (get, set) of the OpenBLAS builds NumPy and SciPy wheels ship.
ENTRY_POINTS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                ("openblas_get_num_threads", "openblas_set_num_threads"))


@functools.lru_cache(maxsize=1)
def openblas_thread_controls() -> tuple:
    """(get, set) function pairs of every OpenBLAS library mapped into this process."""
    try:
        with open(PROCESS_MAPS) as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return ()
    controls = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError as error:
            log.debug("cannot open %s: %s", path, error)
            continue
        for get_name, set_name in ENTRY_POINTS:
            if hasattr(library, get_name) and hasattr(library, set_name):
                controls.append((getattr(library, get_name), getattr(library, set_name)))
                break
    return tuple(controls)


class single_threaded_blas:
    """Context manager: OpenBLAS runs on one thread inside, as many as before after."""

    def __enter__(self):
        self.previous = [(get(), setter) for get, setter in openblas_thread_controls()]
        for _, setter in self.previous:
            setter(1)
        return self

    def __exit__(self, *exc):
        for threads, setter in self.previous:
            setter(threads)


def limit_blas_threads(threads: int = 1) -> None:
    """Set every loaded OpenBLAS to ``threads`` threads for good (e.g. in a loader worker process)."""
    for _, setter in openblas_thread_controls():
        setter(threads)
