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

``Runtime.device`` "cpu" runs every operator on the CPU with no GPU (device_id None);
"gpu" runs everything after the decoder on the GPU, the python stage included (CuPy
arrays on DALI's stream). Where the videos are decoded is ``Runtime.decoder``: "gpu"
decodes with NVDEC ("mixed"); "cpu" with DALI's CPU decoder, whose frames are then
copied to the GPU (hybrid decoding: small videos often decode faster on many CPU cores
than on NVDEC, and some hosts have none). A CPU graph decodes on the CPU.

What a graph reads is declared in pipelines.feeds and chosen here before the graph is
built (``pretrain_feeds``, ``train_feeds``, ``eval_feeds``): the loader hands the same
tuple to the external source. Each builder takes the ``Runtime`` (params) it runs under.

The pretraining graph is a chain of steps (PRETRAIN_STEPS: decode, crop, fame, augment,
normalise), each declaring the feeds it reads; a graph of the leading steps only is what a
profile times step by step.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import nvidia.dali.fn as fn
import nvidia.dali.math as dmath
import nvidia.dali.types as types
from nvidia.dali import Pipeline, pipeline_def

from pipelines.fame_stage import FameStage
from pipelines.feeds import ENCODED, FRAMES, INDEX, KEY, LABEL, QUERY, TEST_VIEW, TRAIN_VIEW, Feed, ViewFeeds
from pipelines.params import RGB_CHANNELS, AugParams, ClipGeometry, Runtime

PIXEL_MAX = 255.0
CLIP_LAYOUT = "CFHW"


@dataclass(frozen=True)
class Graph:
    """A DALI pipeline, the names of its outputs in order, and the feeds its source returns."""

    pipe: Pipeline
    outputs: tuple[str, ...]
    feeds: tuple[Feed, ...]


def train_feeds(device: str) -> tuple[Feed, ...]:
    """What the training-clip graph on ``device`` reads, in source order."""
    return (ENCODED, FRAMES, *TRAIN_VIEW.crop, *TRAIN_VIEW.colour.reads(device), LABEL, INDEX)


def eval_feeds() -> tuple[Feed, ...]:
    """What the test-clip graph reads, in source order."""
    return (ENCODED, FRAMES, TEST_VIEW.order, *TEST_VIEW.crop, LABEL, INDEX)


def _pipeline_options(runtime: Runtime, batch_size: int) -> dict:
    return {"batch_size": batch_size, "num_threads": runtime.num_threads, "prefetch_queue_depth": runtime.prefetch,
            "device_id": runtime.device_id if runtime.device == "gpu" else None, "exec_dynamic": True}


def _inputs(source, feeds: tuple[Feed, ...]) -> dict[Feed, object]:
    """One external source returning ``feeds`` per batch: its output node per feed."""
    nodes = fn.external_source(source=source, num_outputs=len(feeds), batch=True, batch_info=True,
                               dtype=[feed.dtype for feed in feeds])
    return dict(zip(feeds, nodes))  # noqa: B905 (DALI's autograph zip takes no strict)


def _decode(feeds: dict, runtime: Runtime):
    """All needed frames of each video, in ascending order (FHWC uint8), on the runtime's device; a frame
    past the end of a video is an error (the index and the file disagree), never silent padding.

    NVDEC ("mixed") runs with ``affine=False``: by default it pins its threads to cores, and
    where that is not allowed (containers) the failure surfaces in the decode. The CPU
    decoder's frames go to the GPU when the graph runs there (before the clips are picked
    out, so each needed frame crosses once).
    """
    if runtime.decoder == "gpu":
        return fn.decoders.video(feeds[ENCODED], frames=feeds[FRAMES], pad_mode="none",
                                 device="mixed", affine=False, name="decode")
    video = fn.decoders.video(feeds[ENCODED], frames=feeds[FRAMES], pad_mode="none", device="cpu", name="decode")
    return video.gpu() if runtime.device == "gpu" else video


def _crop(clip, feeds: dict, view: ViewFeeds, crop: int, aug: AugParams):
    return fn.resize(clip, size=[crop, crop], roi_start=feeds[view.roi_start], roi_end=feeds[view.roi_end],
                     roi_relative=False, antialias=aug.antialias)


def colour_clip(clip, feeds: dict, view: ViewFeeds, crop: int, aug: AugParams):
    """FHWC uint8 -> FHWC float32 in 0..255: the blur on the clips whose flag is set (a DALI
    conditional, on uint8 pixels), then the colour twist (identity where not drawn), clamped.
    ``feeds`` maps the colour feeds of ``view`` to their nodes.

    The published order is jitter, grayscale, then blur. The twist and the blur are both
    linear in the pixels (a per-pixel affine colour map; a normalised convolution per
    channel), so they commute. Blurring first changes only the pixels the clamp cuts, plus
    the blur's rounding to uint8 (under a level). On the CPU a uint8 blur costs a
    fraction of a float one.
    """
    colour = view.colour
    if feeds[colour.blur]:
        clip = blur_clip(clip, feeds[colour.blur_input(clip.device)], aug.blur_window(crop))
    clip = fn.color_twist(clip, brightness=feeds[colour.brightness], contrast=feeds[colour.contrast],
                          saturation=feeds[colour.saturation], hue=feeds[colour.hue], dtype=types.FLOAT)
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
@dataclass(frozen=True)
class PretrainSettings:
    """What the pretraining steps need besides their feeds."""

    runtime: Runtime
    crop: int
    aug: AugParams
    fame_stage: FameStage | None


@dataclass(frozen=True)
class PretrainStep:
    """One step of the pretraining graph: the feeds it reads on a pipeline device, and what it
    makes of the outputs so far (an ordered dict of output name -> node) given its feeds' nodes."""

    name: str
    reads: Callable[[str], tuple[Feed, ...]]
    apply: Callable[[dict, dict, PretrainSettings], dict]


def _decode_views(outputs: dict, feeds: dict, settings: PretrainSettings) -> dict:
    """Both clips of every video, picked out of one decode (FHWC uint8)."""
    video = _decode(feeds, settings.runtime)
    return {"query": fn.sequence_rearrange(video, new_order=feeds[QUERY.order]),
            "key": fn.sequence_rearrange(video, new_order=feeds[KEY.order])}


def _crop_views(outputs: dict, feeds: dict, settings: PretrainSettings) -> dict:
    """Each clip's random resized crop and flip (FHWC uint8, crop x crop)."""
    return {**outputs, "query": _crop(outputs["query"], feeds, QUERY, settings.crop, settings.aug),
            "key": _crop(outputs["key"], feeds, KEY, settings.crop, settings.aug)}


def _merge_views(outputs: dict, feeds: dict, settings: PretrainSettings) -> dict:
    """FAME (the python stage, batch keys on the host) on the query, or both clips; with masks
    asked for, also the query before FAME (``original``), its mask (``masks``, HW uint8) and
    after FAME (``merged``). No stage: the clips as they are."""
    stage = settings.fame_stage
    if stage is None:
        return outputs
    query, key = outputs["query"], outputs["key"]
    inputs = (query, key) if stage.takes_key else (query,)
    results = fn.python_function(*inputs, function=stage, batch_processing=True,
                                 num_outputs=len(stage.output_layouts), output_layouts=stage.output_layouts,
                                 device=settings.runtime.device, name="fame")
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    merged = {**outputs, "query": results.pop(0)}
    if stage.branches == "both":
        merged["key"] = results.pop(0)
    if stage.return_masks:
        merged.update(original=query, masks=results.pop(0), merged=merged["query"])
    return merged


def _colour_views(outputs: dict, feeds: dict, settings: PretrainSettings) -> dict:
    """Each clip's blur and colour twist (FHWC float32 in 0..255)."""
    return {**outputs, "query": colour_clip(outputs["query"], feeds, QUERY, settings.crop, settings.aug),
            "key": colour_clip(outputs["key"], feeds, KEY, settings.crop, settings.aug)}


def _normalise_views(outputs: dict, feeds: dict, settings: PretrainSettings) -> dict:
    """Each clip normalised to CFHW float32, then label and index."""
    return {**outputs, "query": _normalise(outputs["query"], settings.aug),
            "key": _normalise(outputs["key"], settings.aug), "label": feeds[LABEL], "index": feeds[INDEX]}


PRETRAIN_STEPS = (
    PretrainStep("decode", lambda device: (ENCODED, FRAMES, QUERY.order, KEY.order), _decode_views),
    PretrainStep("crop", lambda device: (*QUERY.crop, *KEY.crop), _crop_views),
    PretrainStep("fame", lambda device: (), _merge_views),
    PretrainStep("augment", lambda device: (*QUERY.colour.reads(device), *KEY.colour.reads(device)), _colour_views),
    PretrainStep("normalise", lambda device: (LABEL, INDEX), _normalise_views),
)


def pretrain_feeds(device: str, steps: tuple[PretrainStep, ...] = PRETRAIN_STEPS) -> tuple[Feed, ...]:
    """What the pretraining graph of ``steps`` on ``device`` reads, in source order: the file bytes
    and frames, both views' orders, their crops, their colour draws (of the blur, the form
    ``device`` reads), label and index, as far as the steps go."""
    return tuple(feed for step in steps for feed in step.reads(device))


@pipeline_def(enable_conditionals=True)
def _pretrain_def(source, steps, settings, output_names):
    feeds = _inputs(source, pretrain_feeds(settings.runtime.device, steps))
    outputs: dict = {}
    for step in steps:
        outputs = step.apply(outputs, feeds, settings)
    output_names.extend(outputs)      # DALI runs this definition when the pipeline is made
    return tuple(outputs.values())


def pretrain_graph(source, *, runtime: Runtime, batch_size: int, crop: int, aug: AugParams,
                   fame_stage: FameStage | None, steps: tuple[PretrainStep, ...] = PRETRAIN_STEPS) -> Graph:
    """Two clips per video -> (query, key) CFHW float32, label, index; reads ``pretrain_feeds``.

    With a FAME stage that returns masks, also the query before FAME (``original``, FHWC
    uint8), its mask (``masks``, HW uint8) and after FAME (``merged``, FHWC uint8).
    ``steps`` (a leading part of PRETRAIN_STEPS) give the graph that stops after the last of
    them, whose outputs are the clips as that step leaves them (a profile times each step so).
    """
    output_names: list[str] = []
    pipe = _pretrain_def(source, steps, PretrainSettings(runtime, crop, aug, fame_stage), output_names,
                         **_pipeline_options(runtime, batch_size))
    return Graph(pipe, tuple(output_names), pretrain_feeds(runtime.device, steps))


# --------------------------------------------------------- evaluation ----
@pipeline_def(enable_conditionals=True)
def _train_clip_def(source, runtime, crop, aug):
    feeds = _inputs(source, train_feeds(runtime.device))
    clip = _crop(_decode(feeds, runtime), feeds, TRAIN_VIEW, crop, aug)
    clip = colour_clip(clip, feeds, TRAIN_VIEW, crop, aug)
    return _normalise(clip, aug), feeds[LABEL], feeds[INDEX]


def train_clip_graph(source, *, runtime: Runtime, batch_size: int, crop: int, aug: AugParams) -> Graph:
    """One random clip per video -> clip CFHW float32, label, index; reads ``train_feeds``."""
    pipe = _train_clip_def(source, runtime, crop, aug, **_pipeline_options(runtime, batch_size))
    return Graph(pipe, ("clip", "label", "index"), train_feeds(runtime.device))


@pipeline_def
def _eval_clip_def(source, runtime, crop, clips_per_video, frames, aug):
    feeds = _inputs(source, eval_feeds())
    clips = fn.sequence_rearrange(_decode(feeds, runtime), new_order=feeds[TEST_VIEW.order])
    clips = _normalise(_crop(clips, feeds, TEST_VIEW, crop, aug), aug)
    clips = fn.reshape(clips, shape=[RGB_CHANNELS, clips_per_video, frames, crop, crop], layout="")
    return fn.transpose(clips, perm=[1, 0, 2, 3, 4]), feeds[LABEL], feeds[INDEX]


def eval_clip_graph(source, *, runtime: Runtime, batch_size: int, geometry: ClipGeometry, clips_per_video: int,
                    aug: AugParams) -> Graph:
    """All clips of a video, centre crop -> (clips_per_video, 3, frames, crop, crop) float32, label,
    index; reads ``eval_feeds``."""
    pipe = _eval_clip_def(source, runtime, geometry.crop, clips_per_video, geometry.frames, aug,
                          **_pipeline_options(runtime, batch_size))
    return Graph(pipe, ("clips", "label", "index"), eval_feeds())
