"""A plain PyAV + NumPy pretraining loader: the yardstick the DALI pipeline is measured against.

It does the same work as the DALI pretraining pipeline on the same draws (the same
PretrainSampler plans: videos, clip frames, crop windows, flips, colour, blur, FAME
seed): PyAV decodes (seeking to the keyframe before each run of needed frames), NumPy
crops and resizes (bilinear, no antialiasing), fame.augment merges, NumPy applies the
colour twist, SciPy the Gaussian blur, then normalisation to NCTHW float32. One batch
per torch DataLoader item, ``num_workers`` worker processes (the same cores the DALI
pipeline gets as threads), each with one BLAS thread.
"""
from __future__ import annotations

import math
import time

import av
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

import fame
from data.parallel import START_METHOD
from pipelines.blas import limit_blas_threads
from pipelines.feeds import FAME_SEED, FAME_STEP, FRAMES, INDEX, KEY, LABEL, QUERY, ViewFeeds
from pipelines.sampler import NO_BLUR_SIGMA, PretrainSampler

SEEK_GAP = 16             # frames: a longer jump between needed frames seeks instead of decoding through
HALF_RANGE = 128.0        # contrast pivots around mid-grey, as in DALI's colour twist
PIXEL_MAX = 255.0
MIRRORED_BORDER = "mirror"    # SciPy's name for DALI's reflect 101 border
# RGB <-> YIQ: hue rotates and saturation scales the chroma (I, Q) plane.
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ)


def decode_frames(path: str, wanted: np.ndarray) -> np.ndarray:
    """Frames ``wanted`` (sorted, distinct indices) of a constant-frame-rate video as THWC uint8 RGB."""
    out: dict[int, np.ndarray] = {}
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rate = float(stream.average_rate or stream.guessed_rate)
        base = float(stream.time_base)
        first_pts = stream.start_time or 0
        runs = np.split(wanted, np.flatnonzero(np.diff(wanted) > SEEK_GAP) + 1)
        for run in runs:
            container.seek(int(first_pts + run[0] / rate / base), stream=stream, backward=True)
            needed = set(int(i) for i in run)
            for frame in container.decode(stream):
                index = int(round((frame.pts - first_pts) * base * rate))
                if index in needed:
                    out[index] = frame.to_ndarray(format="rgb24")
                if index >= run[-1]:
                    break
    missing = [int(i) for i in wanted if int(i) not in out]
    if missing:
        raise ValueError(f"{path}: frames {missing[:5]} could not be decoded")
    return np.stack([out[int(i)] for i in wanted])


def _resize_axis(clip: np.ndarray, axis: int, start: float, end: float, size: int) -> np.ndarray:
    """Linear resampling of [start, end) (end < start flips) onto ``size`` samples along ``axis``."""
    length = clip.shape[axis]
    position = start + (np.arange(size) + 0.5) * (end - start) / size - 0.5
    position = np.clip(position, 0, length - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, length - 1)
    shape = [1] * clip.ndim
    shape[axis] = size
    weight = (position - low).reshape(shape).astype(np.float32)
    a, b = np.take(clip, low, axis=axis), np.take(clip, high, axis=axis)
    return a + (b - a) * weight


def crop_resize(clip: np.ndarray, roi_start: np.ndarray, roi_end: np.ndarray, crop: int) -> np.ndarray:
    """THWC uint8 clip, ROI (y, x) start / end in pixels -> (T, crop, crop, 3) uint8."""
    out = _resize_axis(clip.astype(np.float32), 1, roi_start[0], roi_end[0], crop)
    out = _resize_axis(out, 2, roi_start[1], roi_end[1], crop)
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint8)


def colour_twist(clip: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float) -> np.ndarray:
    """Hue rotation (degrees) and saturation in YIQ, then contrast about mid-grey and brightness."""
    angle = math.radians(hue)
    rotate = np.array([[1, 0, 0], [0, math.cos(angle), math.sin(angle)], [0, -math.sin(angle), math.cos(angle)]])
    matrix = YIQ_TO_RGB @ np.diag([1.0, saturation, saturation]) @ rotate @ RGB_TO_YIQ
    gain = brightness * contrast
    offset = brightness * HALF_RANGE * (1 - contrast)
    out = clip.astype(np.float32) @ (gain * matrix.T).astype(np.float32) + np.float32(offset)
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint8)


def blur(clip: np.ndarray, sigma: float, window: int) -> np.ndarray:
    """Separable Gaussian over H and W of a THWC clip, ``window`` pixels wide, mirrored borders
    (SciPy's "mirror" is DALI's reflect 101: the edge pixel is not repeated)."""
    if sigma <= NO_BLUR_SIGMA:
        return clip
    out = gaussian_filter1d(clip.astype(np.float32), sigma, axis=1, mode=MIRRORED_BORDER, radius=window // 2)
    out = gaussian_filter1d(out, sigma, axis=2, mode=MIRRORED_BORDER, radius=window // 2)
    return np.clip(np.rint(out), 0, PIXEL_MAX).astype(np.uint8)


class PyAVPretrainBatches(torch.utils.data.Dataset):
    """Item i is the pretraining batch (query, key, label, index) of step i % steps of epoch
    first_epoch + i // steps, for ``epochs`` epochs."""

    def __init__(self, sampler: PretrainSampler, fame_cfg: fame.FameConfig | None, first_epoch: int = 0,
                 epochs: int = 1):
        self.sampler, self.fame_cfg, self.first_epoch, self.epochs = sampler, fame_cfg, first_epoch, epochs
        aug = sampler.aug
        self.blur_window = aug.blur_window(sampler.geometry.crop)
        self.mean = np.asarray(aug.mean, np.float32) * PIXEL_MAX
        self.scale = 1.0 / (np.asarray(aug.std, np.float32) * PIXEL_MAX)

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch * self.epochs

    def _views(self, plan: dict, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample i's query and key clips, cropped: (T, crop, crop, 3) uint8 each."""
        video = self.sampler.videos[int(plan[INDEX.name][i])]
        frames = decode_frames(video.path, plan[FRAMES.name][i])
        crop = self.sampler.geometry.crop
        return tuple(crop_resize(frames[plan[v.order.name][i]], plan[v.roi_start.name][i], plan[v.roi_end.name][i],
                                 crop) for v in (QUERY, KEY))

    def _finish(self, clips: np.ndarray, plan: dict, view: ViewFeeds) -> torch.Tensor:
        """NTHWC uint8 clips of ``view`` -> NCTHW float32: colour twist, blur, normalisation."""
        out = []
        colour = view.colour
        for i, clip in enumerate(clips):
            factors = (colour.brightness, colour.contrast, colour.saturation, colour.hue)
            clip = colour_twist(clip, *(float(plan[feed.name][i]) for feed in factors))
            clip = blur(clip, float(plan[colour.sigma.name][i]), self.blur_window)
            out.append(((clip.astype(np.float32) - self.mean) * self.scale).transpose(3, 0, 1, 2))
        return torch.from_numpy(np.stack(out))

    def __getitem__(self, item: int):
        epoch, step = divmod(item, self.sampler.steps_per_epoch)
        plan = self.sampler.plan(self.first_epoch + epoch, step)
        views = [self._views(plan, i) for i in range(len(plan[INDEX.name]))]
        query, key = np.stack([v[0] for v in views]), np.stack([v[1] for v in views])
        if self.fame_cfg is not None:
            rng = np.random.default_rng(int(plan[FAME_SEED.name][0]))
            fame_cfg = self.fame_cfg.at_step(int(plan[FAME_STEP.name][0]))
            background = key if fame_cfg.background == "intra" else None
            merged, _ = fame.augment(query, fame_cfg, rng, background_clips=background)
            if fame_cfg.branches == "both":
                key, _ = fame.augment(key, fame_cfg, rng, background_clips=query)
            query = merged
        label = torch.from_numpy(np.stack(plan[LABEL.name]))
        index = torch.from_numpy(np.stack(plan[INDEX.name]))
        return self._finish(query, plan, QUERY), self._finish(key, plan, KEY), label, index


class CpuTimed(torch.utils.data.Dataset):
    """Item i of ``dataset`` with the CPU time the process that made it spent on it: (item, seconds).
    The workers run under a fork server, not as this process's children, so their CPU time is
    counted where it is spent."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int):
        started = time.process_time()
        made = self.dataset[item]
        return made, time.process_time() - started


def pyav_pretrain_loader(sampler: PretrainSampler, fame_cfg: fame.FameConfig | None, *, first_epoch: int = 0,
                         epochs: int = 1, num_workers: int = 2, batches: int | None = None,
                         cpu_timed: bool = False) -> torch.utils.data.DataLoader:
    """Batches of the PyAV + NumPy pipeline in step order over ``epochs`` epochs (only the
    first ``batches`` of them when given), made by ``num_workers`` processes (0: here), started
    from a fork server: the profile runs it beside DALI's threads and CUDA, which a fork would copy
    mid-flight (data.parallel). With ``cpu_timed`` each item is (batch, CPU seconds it took)."""
    dataset = PyAVPretrainBatches(sampler, fame_cfg, first_epoch, epochs)
    if cpu_timed:
        dataset = CpuTimed(dataset)
    if batches is not None:
        dataset = torch.utils.data.Subset(dataset, range(min(batches, len(dataset))))
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=False, num_workers=num_workers,
                                       worker_init_fn=_init_worker,
                                       multiprocessing_context=START_METHOD if num_workers else None)


def _init_worker(_worker_id: int) -> None:
    """One BLAS thread per worker process: the workers already occupy the cores."""
    limit_blas_threads(1)
