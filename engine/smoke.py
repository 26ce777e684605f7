"""The GPU path run once on small inputs: NVRTC compiles and runs a kernel; DALI decodes an H.264
clip with NVDEC as PyAV does; the FAME op on CuPy equals NumPy's; AMP autocast in train.amp's
dtype; NCCL for several processes. Each needs a GPU (engine.doctor skips them without one);
importing this module loads neither CuPy nor DALI."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import torch
import torch.distributed as dist

import fame
from engine.amp import AMP_DTYPES
from engine.checks import Context, Result, failed, passed, skipped
from engine.stack import SETUP_FIX, load_nvrtc
from fame.arrays import to_host

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


def check_nvrtc_kernel(context: Context) -> Result:
    """NVRTC compiles a tiny kernel and it runs: y = x + 1."""
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
    kernel = cupy.RawKernel(ADD_ONE_KERNEL, "add_one")
    x = cupy.arange(KERNEL_VALUES, dtype=cupy.float32)
    y = cupy.empty_like(x)
    kernel((1,), (KERNEL_VALUES,), (x, y, np.int32(KERNEL_VALUES)))
    got = cupy.asnumpy(y)
    if not np.array_equal(got, np.arange(KERNEL_VALUES, dtype=np.float32) + 1):
        return failed(f"the compiled kernel computed {got[:4]}..., expected 1, 2, 3, 4, ...",
                      "the GPU or its driver misbehaves: check `nvidia-smi` and the driver installation")
    return passed(f"cupy.RawKernel compiled (NVRTC {'.'.join(map(str, load_nvrtc()))}) and ran")


# ------------------------------------------------------------ decode and FAME ----
def smooth_clip(frames: int, size: int) -> np.ndarray:
    """A (T, size, size, 3) uint8 clip of moving gradients (no sharp edges)."""
    t, y, x, c = np.ogrid[:frames, :size, :size, :3]
    return (24 + x // 2 + y // 2 + 8 * t + 30 * c).astype(np.uint8)


def decode_with_dali(path: str, device: str) -> np.ndarray:
    """Every frame of the video file ``path`` decoded by fn.decoders.video on ``device`` (cpu|mixed)."""
    from nvidia.dali import fn, pipeline_def  # lazy: DALI, absent on a GPU machine until it is brought
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
    from data.video_io import (  # lazy: PyAV, absent on a GPU machine until it is brought
        codec_setting,
        read_video,
        write_video,
    )
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
    clips, cfg = moving_square_clips(), fame.FameConfig()
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(FAME_SEED))
    got_merged, got_masks = (to_host(array) for array in
                             fame.augment(xp.asarray(clips), cfg, np.random.default_rng(FAME_SEED)))
    ious = [np.logical_and(g, e).sum() / max(np.logical_or(g, e).sum(), 1)
            for g, e in zip(got_masks.astype(bool), masks.astype(bool), strict=True)]
    return float(min(ious)), float((got_merged == merged).mean())


def check_fame_cupy(context: Context) -> Result:
    import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
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
    if not dist.is_nccl_available():
        return failed("torch.distributed has no NCCL backend", SETUP_FIX)
    version = torch.cuda.nccl.version()
    return passed(f"NCCL {'.'.join(map(str, version)) if isinstance(version, tuple) else version} "
                  f"for {context.nproc} processes")
