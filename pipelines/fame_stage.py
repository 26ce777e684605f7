"""The FAME stage of the pretraining pipeline: a thin fn.python_function adapter around fame.augment.

DALI hands the batch as lists of per-sample arrays (NumPy on the CPU, CuPy on the GPU,
already on DALI's CUDA stream); the stage stacks them into NTHWC clips, calls
``fame.augment`` with a generator seeded by the batch's FAME seed (an input fed by the
sampler, so a resumed run merges identically) and returns each output as a list of per-sample views.

Inputs, in order: query clips (FHWC uint8 per sample), the key clips when the key is
needed (intra-video backgrounds or FAME on both branches), the batch seed and the batch's
global training step (int64 scalars per sample, identical within a batch; the step sets
the warmed-up beta, ``FameConfig.at_step``).
Outputs, in order: merged query (FHWC), merged key when ``cfg.branches == "both"``, the
query masks (HW uint8 in {0, 1}) when ``return_masks``.

On the CPU, NumPy's BLAS runs single-threaded inside the stage (pipelines.blas). DALI
runs the stage between its other operators, not beside them (a stage that sleeps 10 ms
adds 10 ms to every batch), so its time adds to the pipeline's; splitting the batch over
threads did not help (FAME's many small NumPy calls hold the GIL). A second pipeline
taking turns (``VideoLoader``'s ``pipelines``) runs its operators meanwhile.

Backgrounds: "inter" takes another query clip of the batch (pick per ``cfg.pick``);
"intra" takes the other clip of the same video: the key for the query, and the
un-merged query for the key.
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

import fame
from pipelines.blas import single_threaded_blas

CLIP_LAYOUT = "FHWC"
MASK_LAYOUT = "HW"


class FameStage:
    """Callable for ``fn.python_function(..., batch_processing=True)``; also keeps its own timing."""

    def __init__(self, cfg: fame.FameConfig, return_masks: bool = False, synchronize_timing: bool = False):
        if cfg.variant == "none":
            raise ValueError("FameConfig.variant 'none' means no FAME stage; build the pipeline without one")
        self.cfg, self.branches, self.return_masks = cfg, cfg.branches, return_masks
        self.synchronize_timing = synchronize_timing
        self.seconds, self.calls, self.clips = 0.0, 0, 0

    @property
    def takes_key(self) -> bool:
        return self.cfg.background == "intra" or self.branches == "both"

    @property
    def output_layouts(self) -> list[str]:
        layouts = [CLIP_LAYOUT] * (2 if self.branches == "both" else 1)
        return layouts + ([MASK_LAYOUT] if self.return_masks else [])

    def __call__(self, *inputs):
        started = time.perf_counter()
        query_list, seeds, steps = inputs[0], inputs[-2], inputs[-1]
        xp = _array_module(query_list[0])
        query = xp.stack(query_list)
        key = xp.stack(inputs[1]) if self.takes_key else None
        seed, step = _host_scalars(xp, seeds[0], steps[0])
        rng = np.random.default_rng(seed)
        cfg = self.cfg.at_step(step)
        blas = single_threaded_blas() if xp is np else contextlib.nullcontext()
        with _nvtx_range(xp, "fame.augment"), blas:
            merged_q, masks = fame.augment(query, cfg, rng, background_clips=key)
            outputs = [merged_q]
            if self.branches == "both":
                merged_k, _ = fame.augment(key, cfg, rng, background_clips=query)
                outputs.append(merged_k)
        if self.return_masks:
            outputs.append(masks)
        if self.synchronize_timing and xp is not np:
            xp.cuda.get_current_stream().synchronize()
        self.seconds += time.perf_counter() - started
        self.calls += 1
        self.clips += len(query_list) * (2 if self.branches == "both" else 1)
        batches = tuple(list(output) for output in outputs)   # DALI takes a list of samples per output
        return batches if len(batches) > 1 else batches[0]


def _host_scalars(xp, *scalars) -> list[int]:
    """0-d integer arrays as Python ints, read from the GPU in one copy (one wait on the stream)."""
    if xp is np:
        return [int(value) for value in scalars]
    return [int(value) for value in xp.stack([xp.asarray(v, dtype=xp.int64) for v in scalars]).get()]


def _array_module(array):
    """NumPy for host arrays, CuPy (imported only then) for device arrays."""
    if isinstance(array, np.ndarray):
        return np
    import cupy
    return cupy


class _nvtx_range:
    """An NVTX range (visible in nsys) around GPU work; nothing on the CPU."""

    def __init__(self, xp, name: str):
        self.nvtx = None if xp is np else xp.cuda.nvtx
        self.name = name

    def __enter__(self):
        if self.nvtx is not None:
            self.nvtx.RangePush(self.name)

    def __exit__(self, *exc):
        if self.nvtx is not None:
            self.nvtx.RangePop()
