"""The colour stage (pipelines.graphs.colour_clip) against NumPy references, on the CPU."""
import numpy as np
import nvidia.dali.fn as fn
import nvidia.dali.types as types
import pytest
from nvidia.dali import pipeline_def

import fame
from pipelines.fame_stage import FameStage
from pipelines.feeds import TRAIN_VIEW
from pipelines.graphs import blur_clip, colour_clip, pretrain_graph, train_clip_graph
from pipelines.params import AugParams, Runtime, blur_weights

CROP, FRAMES = 32, 3
AUG = AugParams()
BT601 = np.array([0.299, 0.587, 0.114])
COLOUR_FEEDS = TRAIN_VIEW.colour.reads("cpu")    # brightness, contrast, saturation, hue, blur, blur_weights


def run_colour(clips: list[np.ndarray], **draws) -> list[np.ndarray]:
    """colour_clip over FHWC uint8 clips with per-clip draws (defaults: identity, no blur)."""
    n = len(clips)
    values = {"brightness": 1.0, "contrast": 1.0, "saturation": 1.0, "hue": 0.0, "blur": False, "sigma": 0.01}
    values.update(draws)
    values["blur_weights"] = blur_weights(values.pop("sigma"), AUG.blur_window(CROP))
    feeds = [[feed.array(values[feed.name])] * n for feed in COLOUR_FEEDS]

    @pipeline_def(enable_conditionals=True, batch_size=n, num_threads=1, device_id=None)
    def pipe():
        clip, *rest = fn.external_source(source=lambda: (clips, *feeds), num_outputs=1 + len(COLOUR_FEEDS),
                                         batch=True, layout=["FHWC"] + [""] * len(COLOUR_FEEDS),
                                         dtype=[types.UINT8] + [feed.dtype for feed in COLOUR_FEEDS])
        return colour_clip(clip, dict(zip(COLOUR_FEEDS, rest)), TRAIN_VIEW, CROP, AUG)  # noqa: B905 (autograph)

    p = pipe()
    (out,) = p.run()
    return [np.asarray(out[i]) for i in range(n)]


def random_clip(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (FRAMES, CROP, CROP, 3), dtype=np.uint8)


def gaussian_reference(clip: np.ndarray, sigma: float, window: int) -> np.ndarray:
    """Separable normalised Gaussian over H and W of each frame, mirrored borders (reflect 101)."""
    radius = window // 2
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-x**2 / (2 * sigma**2))
    weights /= weights.sum()
    out = clip.astype(np.float64)
    for axis in (1, 2):
        padding = [(0, 0)] * 4
        padding[axis] = (radius, radius)
        padded = np.pad(out, padding, mode="reflect")
        out = sum(w * np.take(padded, np.arange(k, k + out.shape[axis]), axis=axis) for k, w in enumerate(weights))
    return out


def test_identity_draw_returns_the_pixels_as_float():
    clip = random_clip()
    (out,) = run_colour([clip])
    assert out.dtype == np.float32 and out.shape == clip.shape
    np.testing.assert_allclose(out, clip, atol=1e-3)


def test_brightness_scales_and_clamps_to_the_pixel_range():
    clip = random_clip(1)
    (out,) = run_colour([clip], brightness=1.4)
    np.testing.assert_allclose(out, np.clip(clip * 1.4, 0, 255), atol=1e-2)
    assert out.max() == pytest.approx(255.0)


def test_saturation_zero_is_bt601_grayscale():
    clip = random_clip(2)
    (out,) = run_colour([clip], saturation=0.0)
    luma = clip @ BT601
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], luma, atol=1.0)   # DALI's YIQ matrix: within a level


def test_blur_matches_a_separable_gaussian_per_frame_and_only_where_drawn():
    clip = random_clip(3)
    blurred, = run_colour([clip], blur=True, sigma=1.5)
    reference = gaussian_reference(clip, 1.5, AUG.blur_window(CROP))
    np.testing.assert_allclose(blurred, reference, atol=1.0 + 1e-3)   # each of two 1-D passes rounds to uint8
    # per frame: a clip with one non-zero frame keeps the others at zero (no blur across time)
    spike = np.zeros_like(clip)
    spike[1] = 200
    out, = run_colour([spike], blur=True, sigma=2.0)
    assert not out[0].any() and not out[2].any()


def test_blur_then_brightness_equals_brightness_then_blur_where_nothing_clamps():
    clip = (random_clip(4) // 2).astype(np.uint8)      # 0..127: brightness 1.4 stays below 255
    out, = run_colour([clip], blur=True, sigma=1.0, brightness=1.4)
    reference = gaussian_reference(np.clip(clip * 1.4, 0, 255), 1.0, AUG.blur_window(CROP))
    np.testing.assert_allclose(out, reference, atol=1.4 * 1.0 + 1e-2)


@pytest.mark.parametrize("sigma", [0.1, 0.8, 2.0])
def test_cpu_blur_agrees_with_gaussian_blur_of_the_gpu_path(sigma):
    """blur_clip on the CPU (two fn.filter passes of the sampler's weights) against
    fn.gaussian_blur (what the GPU path runs), run here on the CPU: within a level, per-sample
    sigma honoured."""
    clips = [random_clip(5), random_clip(6)]
    sigmas = [np.float32(sigma), np.float32(0.5)]
    window = AUG.blur_window(CROP)
    weights = [blur_weights(s, window) for s in sigmas]

    @pipeline_def(batch_size=2, num_threads=1, device_id=None)
    def pipe():
        clip = fn.external_source(source=lambda: clips, batch=True, layout="FHWC")
        s = fn.external_source(source=lambda: sigmas, batch=True)
        w = fn.external_source(source=lambda: weights, batch=True)
        return blur_clip(clip, w, window), fn.gaussian_blur(clip, sigma=s, window_size=window)

    ours, theirs = pipe().run()
    for i, s in enumerate(sigmas):
        a, b = np.asarray(ours[i]).astype(int), np.asarray(theirs[i]).astype(int)
        assert np.abs(a - b).max() <= 1
        np.testing.assert_allclose(a, gaussian_reference(clips[i], float(s), window), atol=1.0 + 1e-3)


@pytest.mark.parametrize("device, reads, skips", [("cpu", "blur_weights", "sigma"), ("gpu", "sigma", "blur_weights")])
def test_each_device_reads_one_form_of_the_blur(device, reads, skips):
    """The graphs are defined (not built, so no GPU is needed) with the feeds of their device."""
    stage = FameStage(fame.FameConfig())
    options = dict(runtime=Runtime(device=device), batch_size=2, crop=CROP, aug=AUG)
    graphs = [pretrain_graph(lambda info: None, fame_stage=stage, **options),
              train_clip_graph(lambda info: None, **options)]
    for graph, views in zip(graphs, (("_q", "_k"), ("",)), strict=True):
        names = {feed.name for feed in graph.feeds}
        for view in views:
            assert reads + view in names and skips + view not in names
