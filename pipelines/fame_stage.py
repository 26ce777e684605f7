"""The FAME stage of the pretraining pipeline: a thin fn.python_function adapter around fame.augment.

DALI hands the batch as lists of per-sample arrays (NumPy on the CPU, CuPy on the GPU,
already on DALI's CUDA stream); the stage stacks them into NTHWC clips, calls
``fame.augment`` with a generator seeded by the batch's FAME seed (the sampler's, so a
resumed run merges identically) and returns each output as a list of per-sample views.

Inputs, in order: query clips (FHWC uint8 per sample) and the key clips when the key is
needed (intra-video backgrounds or FAME on both branches).
Batch keys: the batch seed and its global training step (which sets the warmed-up beta,
``FameConfig.at_step``) are not graph inputs. Read from a GPU input they would cost a
device-to-host copy and a wait on DALI's stream in every batch, which stops DALI from
queueing work ahead. Each pipeline calls the stage through its own ``PipelineFameStage``
(``FameStage.for_pipeline``), which counts its calls and asks the pipeline's feed, on
the host, for the keys of that iteration. This relies on DALI calling a pipeline's
python function once per iteration, in iteration order (the dynamic executor orders
each operator's task after the one of the previous iteration; DALI's
dali/pipeline/executor/executor2/exec_graph.h, ``ExecNode::prev``), so call k is the
batch the feed served as iteration k. Pipelines taking turns or rebuilt ones each get
their own counter; the shared ``FameStage`` only sums the timing.
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
from collections.abc import Callable, Sequence

import numpy as np

import fame
from pipelines.blas import single_threaded_blas

CLIP_LAYOUT = "FHWC"
MASK_LAYOUT = "HW"


class FameStage:
    """FAME settings and timing shared by every pipeline of a loader; DALI calls it through
    ``for_pipeline`` (a ``fn.python_function(..., batch_processing=True)`` per pipeline)."""

    def __init__(self, cfg: fame.FameConfig, return_masks: bool = False, synchronize_timing: bool = False):
        if not cfg.merges:
            raise ValueError("FameConfig.variant or background 'none' means no FAME stage; build the pipeline "
                             "without one")
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

    def for_pipeline(self, batch_keys: Callable[[int], tuple[int, int]]) -> PipelineFameStage:
        """The python function of one pipeline; ``batch_keys(iteration)`` gives that
        iteration's (seed, global step) on the host (``_Feed.fame_keys`` in pipelines.loader)."""
        return PipelineFameStage(self, batch_keys)

    def __call__(self, *clips):
        raise TypeError("a FameStage is shared by pipelines and has no batch keys of its own: give DALI "
                        "FameStage.for_pipeline(keys) as the python function, or call apply(clips, seed, step)")

    def apply(self, clips: Sequence, seed: int, step: int):
        """FAME on one batch: ``clips`` are the query (and key) sample lists as DALI hands them."""
        started = time.perf_counter()
        query_list = clips[0]
        xp = _array_module(query_list[0])
        query = xp.stack(query_list)
        key = xp.stack(clips[1]) if self.takes_key else None
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


class PipelineFameStage:
    """One pipeline's view of a shared FameStage: DALI's python function for that pipeline.

    Its k-th call is the pipeline's iteration k (see the module docstring), whose keys it
    takes from ``batch_keys(k)`` on the host; nothing is read back from the device.
    """

    def __init__(self, stage: FameStage, batch_keys: Callable[[int], tuple[int, int]]):
        self.stage, self.batch_keys = stage, batch_keys
        self.iteration = 0

    @property
    def takes_key(self) -> bool:
        return self.stage.takes_key

    @property
    def output_layouts(self) -> list[str]:
        return self.stage.output_layouts

    @property
    def branches(self) -> str:
        return self.stage.branches

    @property
    def return_masks(self) -> bool:
        return self.stage.return_masks

    def __call__(self, *clips):
        seed, step = self.batch_keys(self.iteration)
        self.iteration += 1
        return self.stage.apply(clips, int(seed), int(step))


def _array_module(array):
    """NumPy for host arrays, CuPy (imported only then) for device arrays."""
    if isinstance(array, np.ndarray):
        return np
    import cupy  # lazy: the GPU's, absent from a CPU-only install
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
