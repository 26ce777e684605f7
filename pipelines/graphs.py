"""DALI graphs for the three roles: pretraining (two clips + FAME), training clips, test clips.

Every graph starts at one ``fn.external_source`` fed per batch by the loader (encoded
file bytes plus the sampler's per-sample draws, all on the CPU) and decodes each video
once with ``fn.decoders.video(frames=...)`` (sorted distinct frames; the clips are then
picked out with ``fn.sequence_rearrange``). Per-sample draws enter as argument inputs,
so one draw applies to every frame of a clip (temporally consistent):

    decode -> crop (fn.resize of a ROI; a flip is a reversed ROI) -> [FAME, python_function]
           -> Gaussian blur (uint8) -> colour (fn.color_twist to float: jitter, grayscale
              as saturation 0; clamped to 0..255) -> fn.crop_mirror_normalize
           -> CFHW float32 per clip (NCTHW batches)

The colour twist runs on every clip (an undrawn jitter is the identity): on the CPU a
float twist over the whole batch costs less than splitting the batch with a DALI
conditional and twisting in uint8. The blur runs only on the clips that drew it (a
conditional on the per-sample flag), before the twist, on uint8 pixels (``colour_clip``
says why the order does not matter).

``device="cpu"`` runs every operator on the CPU with no GPU (device_id None);
``device="gpu"`` runs everything after the decoder on the GPU, the python stage
included (CuPy arrays on DALI's stream). Where the videos are decoded is ``decode``:
"gpu" decodes with NVDEC ("mixed"); "cpu" with DALI's CPU decoder, whose frames are
then copied to the GPU (hybrid decoding: small videos often decode faster on many CPU
cores than on NVDEC, and some hosts have none). A CPU graph decodes on the CPU.

The pretraining graph can be cut after a stage (``stage`` in STAGES) to time what each
stage costs.
"""
from __future__ import annotations

from dataclasses import dataclass

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import Pipeline, pipeline_def

from pipelines.fame_stage import FameStage
from pipelines.params import RGB_CHANNELS, AugParams
from pipelines.sampler import FEEDS

STAGES = ("decode", "crop", "fame", "augment", "full")
DEVICES = ("cpu", "gpu")
DECODERS = ("cpu", "gpu")     # where the videos are decoded (``decode``)
PIXEL_MAX = 255.0
ENCODED = "encoded"
INT_FEEDS = {"frames", "order", "order_q", "order_k"}
LONG_FEEDS = {"label", "index", "fame_seed", "fame_step"}
BOOL_FEEDS = {"blur", "blur_q", "blur_k"}
COLOUR_FEEDS = ("brightness", "contrast", "saturation", "hue", "blur")
# The blur reads sigma on the GPU (fn.gaussian_blur) and the sampler's weights on the CPU (fn.filter).
BLUR_FEED = {"gpu": "sigma", "cpu": "blur_weights"}
CLIP_LAYOUT = "CFHW"


@dataclass(frozen=True)
class Graph:
    """A DALI pipeline, the names of its outputs in order, and the feed names its source returns."""

    pipe: Pipeline
    outputs: tuple[str, ...]
    feeds: tuple[str, ...]


def feed_names(role: str, device: str = "cpu") -> tuple[str, ...]:
    """What the external source returns per batch, in order: encoded bytes then the sampler's plan
    (of the two forms of the blur, the one the ``device`` reads)."""
    unused = {name for d, name in BLUR_FEED.items() if d != device}
    return (ENCODED, *(name for name in FEEDS[role] if name.removesuffix("_q").removesuffix("_k") not in unused))


def _dtype(name: str):
    if name == ENCODED:
        return types.UINT8
    if name in INT_FEEDS:
        return types.INT32
    if name in LONG_FEEDS:
        return types.INT64
    if name in BOOL_FEEDS:
        return types.BOOL
    return types.FLOAT


def decode_device(device: str, decode: str | None) -> str:
    """Where a graph on ``device`` decodes: ``decode``, or ``device`` itself when None.
    Raises ValueError for an unknown device and for GPU decoding in a CPU graph."""
    if device not in DEVICES:
        raise ValueError(f"pipeline device must be one of {DEVICES}, got {device!r}")
    decode = device if decode is None else decode
    if decode not in DECODERS:
        raise ValueError(f"decode device must be one of {DECODERS}, got {decode!r}")
    if device == "cpu" and decode == "gpu":
        raise ValueError("decode 'gpu' (NVDEC, config key 'data.decode') needs pipeline device 'gpu'; "
                         "a CPU pipeline decodes on the CPU: use decode 'cpu'")
    return decode


def _check(device: str, stage: str = "full") -> None:
    if device not in DEVICES:
        raise ValueError(f"pipeline device must be one of {DEVICES}, got {device!r}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")


def _pipeline_options(device: str, device_id: int, batch_size: int, num_threads: int, prefetch: int) -> dict:
    return {"batch_size": batch_size, "num_threads": num_threads, "prefetch_queue_depth": prefetch,
            "device_id": device_id if device == "gpu" else None, "exec_dynamic": True}


def _inputs(source, names: tuple[str, ...]) -> dict:
    nodes = fn.external_source(source=source, num_outputs=len(names), batch=True, batch_info=True,
                               dtype=[_dtype(n) for n in names])
    return dict(zip(names, nodes))


def _decode(feeds: dict, device: str, decode: str):
    """All needed frames of each video, in ascending order (FHWC uint8), on ``device``; a frame
    past the end of a video is an error (the index and the file disagree), never silent padding.

    NVDEC ("mixed") runs with ``affine=False``: by default it pins its threads to cores, and
    where that is not allowed (containers) the failure surfaces in the decode. The CPU
    decoder's frames go to the GPU when the graph runs there (before the clips are picked
    out, so each needed frame crosses once).
    """
    if decode == "gpu":
        return fn.decoders.video(feeds[ENCODED], frames=feeds["frames"], pad_mode="none",
                                 device="mixed", affine=False, name="decode")
    video = fn.decoders.video(feeds[ENCODED], frames=feeds["frames"], pad_mode="none", device="cpu", name="decode")
    return video.gpu() if device == "gpu" else video


def _crop(clip, feeds: dict, suffix: str, crop: int, aug: AugParams):
    return fn.resize(clip, size=[crop, crop], roi_start=feeds["roi_start" + suffix],
                     roi_end=feeds["roi_end" + suffix], roi_relative=False, antialias=aug.antialias)


def colour_clip(clip, feeds: dict, suffix: str, crop: int, aug: AugParams):
    """FHWC uint8 -> FHWC float32 in 0..255: the blur on the clips whose flag is set (a DALI
    conditional, on uint8 pixels), then the colour twist (identity where not drawn), clamped.

    The published order is jitter, grayscale, then blur. The twist and the blur are both
    linear in the pixels (a per-pixel affine colour map; a normalised convolution per
    channel), so they commute. Blurring first changes only the pixels the clamp cuts, plus
    the blur's rounding to uint8 (under a level). On the CPU a uint8 blur costs a
    fraction of a float one.
    """
    if feeds["blur" + suffix]:
        blur = feeds[BLUR_FEED[clip.device] + suffix]
        clip = blur_clip(clip, blur, aug.blur_window(crop))
    clip = fn.color_twist(clip, brightness=feeds["brightness" + suffix], contrast=feeds["contrast" + suffix],
                          saturation=feeds["saturation" + suffix], hue=feeds["hue" + suffix], dtype=types.FLOAT)
    # max then min: on the CPU, DALI's clamp costs about 3x the pair (README, pipeline profile).
    return dmath.min(dmath.max(clip, 0.0), PIXEL_MAX)


def blur_clip(clip, blur, window: int):
    """FHWC uint8 -> FHWC uint8: a normalised Gaussian over a ``window`` of pixels along H and
    W of each frame (mirrored borders, reflect 101).

    On the GPU ``fn.gaussian_blur`` of per-sample sigma ``blur``. On the CPU two 1-D
    ``fn.filter`` passes with ``blur`` the per-sample weights (``params.blur_weights``, from
    the sampler): about 3x faster there than ``fn.gaussian_blur`` (README, pipeline
    profile), within a level of it (each pass rounds to uint8).
    """
    if clip.device == "gpu":
        return fn.gaussian_blur(clip, sigma=blur, window_size=window)
    clip = fn.filter(clip, fn.reshape(blur, shape=[1, window]), border="reflect_101")
    return fn.filter(clip, fn.reshape(blur, shape=[window, 1]), border="reflect_101")


def _normalise(clip, aug: AugParams):
    return fn.crop_mirror_normalize(clip, dtype=types.FLOAT, output_layout=CLIP_LAYOUT,
                                    mean=[m * PIXEL_MAX for m in aug.mean],
                                    std=[s * PIXEL_MAX for s in aug.std])


# ------------------------------------------------------------- pretrain ----
def pretrain_outputs(stage: str, fame_stage: FameStage | None) -> tuple[str, ...]:
    """Output names of the pretraining graph cut at ``stage``."""
    names = ("query", "key")
    if stage not in ("decode", "crop") and fame_stage is not None and fame_stage.return_masks:
        names += ("original", "masks", "merged")
    return names + (("label", "index") if stage == "full" else ())


def pretrain_feeds(stage: str, fame_stage: FameStage | None, device: str = "cpu") -> tuple[str, ...]:
    """The feeds the pretraining graph cut at ``stage`` on ``device`` reads, in feed order."""
    used = {ENCODED, "frames", "order_q", "order_k"}
    if stage != "decode":
        used |= {f"roi_{end}_{view}" for end in ("start", "end") for view in "qk"}
    if stage in ("augment", "full"):
        used |= {f"{name}_{view}" for name in (*COLOUR_FEEDS, BLUR_FEED[device]) for view in "qk"}
    if stage == "full":
        used |= {"label", "index"}
    return tuple(name for name in feed_names("pretrain", device) if name in used)


@pipeline_def(enable_conditionals=True)
def _pretrain_def(source, device, decode, crop, aug, fame_stage, stage):
    feeds = _inputs(source, pretrain_feeds(stage, fame_stage, device))
    video = _decode(feeds, device, decode)
    query = fn.sequence_rearrange(video, new_order=feeds["order_q"])
    key = fn.sequence_rearrange(video, new_order=feeds["order_k"])
    if stage == "decode":
        return query, key
    query, key = _crop(query, feeds, "_q", crop, aug), _crop(key, feeds, "_k", crop, aug)
    extra = ()
    if stage != "crop" and fame_stage is not None:
        inputs = (query, key) if fame_stage.takes_key else (query,)     # batch keys: on the host (fame_stage)
        results = fn.python_function(*inputs, function=fame_stage, batch_processing=True,
                                     num_outputs=len(fame_stage.output_layouts),
                                     output_layouts=fame_stage.output_layouts, device=device, name="fame")
        results = list(results) if isinstance(results, (list, tuple)) else [results]
        original, query = query, results.pop(0)
        if fame_stage.branches == "both":
            key = results.pop(0)
        if fame_stage.return_masks:
            extra = (original, results.pop(0), query)
    if stage in ("crop", "fame"):
        return (query, key) + extra
    query, key = colour_clip(query, feeds, "_q", crop, aug), colour_clip(key, feeds, "_k", crop, aug)
    if stage == "augment":
        return (query, key) + extra
    return (_normalise(query, aug), _normalise(key, aug)) + extra + (feeds["label"], feeds["index"])


def pretrain_graph(source, *, device: str, batch_size: int, crop: int, aug: AugParams,
                   fame_stage: FameStage | None, num_threads: int = 2, prefetch: int = 2,
                   device_id: int = 0, stage: str = "full", decode: str | None = None) -> Graph:
    """Two clips per video -> (query, key) CFHW float32, label, index.

    With a FAME stage that returns masks, also the query before FAME (``original``, FHWC
    uint8), its mask (``masks``, HW uint8) and after FAME (``merged``, FHWC uint8).
    Cut at ``stage``, the outputs are the two clips as they are after that stage.
    ``decode`` ("cpu" | "gpu", default ``device``) is where the videos are decoded.
    """
    _check(device, stage)
    decode = decode_device(device, decode)
    pipe = _pretrain_def(source, device, decode, crop, aug, fame_stage, stage,
                         **_pipeline_options(device, device_id, batch_size, num_threads, prefetch))
    return Graph(pipe, pretrain_outputs(stage, fame_stage), pretrain_feeds(stage, fame_stage, device))


# --------------------------------------------------------- evaluation ----
@pipeline_def(enable_conditionals=True)
def _train_clip_def(source, device, decode, crop, aug):
    feeds = _inputs(source, feed_names("train", device))
    clip = colour_clip(_crop(_decode(feeds, device, decode), feeds, "", crop, aug), feeds, "", crop, aug)
    return _normalise(clip, aug), feeds["label"], feeds["index"]


def train_clip_graph(source, *, device: str, batch_size: int, crop: int, aug: AugParams,
                     num_threads: int = 2, prefetch: int = 2, device_id: int = 0,
                     decode: str | None = None) -> Graph:
    """One random clip per video -> clip CFHW float32, label, index; decoded on ``decode``
    ("cpu" | "gpu", default ``device``)."""
    _check(device)
    decode = decode_device(device, decode)
    pipe = _train_clip_def(source, device, decode, crop, aug,
                           **_pipeline_options(device, device_id, batch_size, num_threads, prefetch))
    return Graph(pipe, ("clip", "label", "index"), feed_names("train", device))


@pipeline_def
def _eval_clip_def(source, device, decode, crop, clips_per_video, frames, aug):
    feeds = _inputs(source, feed_names("test"))
    clips = fn.sequence_rearrange(_decode(feeds, device, decode), new_order=feeds["order"])
    clips = _normalise(_crop(clips, feeds, "", crop, aug), aug)
    clips = fn.reshape(clips, shape=[RGB_CHANNELS, clips_per_video, frames, crop, crop], layout="")
    return fn.transpose(clips, perm=[1, 0, 2, 3, 4]), feeds["label"], feeds["index"]


def eval_clip_graph(source, *, device: str, batch_size: int, crop: int, clips_per_video: int, frames: int,
                    aug: AugParams, num_threads: int = 2, prefetch: int = 2, device_id: int = 0,
                    decode: str | None = None) -> Graph:
    """All clips of a video, centre crop -> (clips_per_video, 3, frames, crop, crop) float32, label,
    index; decoded on ``decode`` ("cpu" | "gpu", default ``device``)."""
    _check(device)
    decode = decode_device(device, decode)
    pipe = _eval_clip_def(source, device, decode, crop, clips_per_video, frames, aug,
                          **_pipeline_options(device, device_id, batch_size, num_threads, prefetch))
    return Graph(pipe, ("clips", "label", "index"), feed_names("test"))
