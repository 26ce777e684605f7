"""Tiny videos whose pixels say what they are, made once per test session.

Coded videos: every frame is one flat colour, red = RED0 + RED_STEP * frame number,
green = GREEN0 + GREEN_STEP * video number, blue constant. Written losslessly (VP9
lossless; the RGB <-> YUV conversion moves values by at most 3), so a frame's number
and its video survive decoding, cropping, flipping and resizing.
Static videos: every frame the same horizontal / vertical gradient (red = 4 x, green =
5 y plus a per-video offset), for crop geometry and temporal consistency.
Textured videos: every frame the same grey sine pattern (a per-video phase), which any
blur changes at every pixel; grey, so the decoders' chroma upsampling does not enter.
"""
from __future__ import annotations

import dataclasses
import os

import av
import numpy as np
import pytest
import torch

import pipelines.loader as loader_module
from data.filelist import write_file_list
from data.index import build_index
from pipelines.params import IDENTITY_AUG
from pipelines.videos import videos_from_index

WIDTH, HEIGHT, FPS, GOP = 64, 48, 15, 8
NVDEC_SIZE = (128, 128)   # (H, W): the GPU decoder's VP9 minimum; the GPU tests' videos
RED0, RED_STEP = 8, 8
GREEN0, GREEN_STEP = 16, 28
BLUE = 128
CODED_FRAMES = (30, 30, 30, 30, 30, 24, 20, 18, 30)   # frames of coded video 0, 1, ...
NUM_CLASSES = 3
RED_PER_X, GREEN_PER_Y = 4, 5
STATIC_FRAMES, NUM_STATIC = 12, 4
NUM_TEXTURED = 4
TEXTURE_MEAN, TEXTURE_AMPLITUDE = 128, 100
TEXTURE_PERIOD_X, TEXTURE_PERIOD_Y = 6, 5     # pixels
LOSSLESS_VP9 = {"lossless": "1", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                "auto-alt-ref": "0", "g": str(GOP), "keyint_min": str(GOP)}
# The GPU tests' videos: high-quality lossy VP9 (profile 0, 4:2:0), which NVIDIA's decoder notes
# list; they say nothing of lossless mode, so a failure there would not be the pipeline's. Frame
# and video numbers still survive (within 3 levels), and a static video decodes to identical frames.
GPU_VP9 = {"crf": "4", "b": "0", "deadline": "good", "cpu-used": "4", "lag-in-frames": "0", "auto-alt-ref": "0",
           "g": str(GOP), "keyint_min": str(GOP)}

# Pixel values straight through: no crop randomness, no colour change, mean 0, std 1/255.
RAW_AUG = dataclasses.replace(IDENTITY_AUG, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)


def write_vp9(path: str, frames: np.ndarray, options: dict = LOSSLESS_VP9) -> str:
    """THWC uint8 RGB frames -> a VP9 .webm file."""
    with av.open(path, "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = dict(options)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def coded_frames(video: int, num_frames: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    frames = np.empty((num_frames, *size, 3), dtype=np.uint8)
    frames[..., 0] = (RED0 + RED_STEP * np.arange(num_frames))[:, None, None]
    frames[..., 1] = GREEN0 + GREEN_STEP * video
    frames[..., 2] = BLUE
    return frames


def static_frames(video: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    frame = np.stack([RED_PER_X * xx, GREEN_PER_Y * yy + 3 * video, np.full_like(xx, 60 * video)], axis=-1)
    return np.repeat(frame[None].astype(np.uint8), STATIC_FRAMES, axis=0)


def textured_frames(video: int) -> np.ndarray:
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pattern = np.sin(2 * np.pi * xx / TEXTURE_PERIOD_X + video) * np.sin(2 * np.pi * yy / TEXTURE_PERIOD_Y)
    grey = np.round(TEXTURE_MEAN + TEXTURE_AMPLITUDE * pattern).astype(np.uint8)
    return np.repeat(np.repeat(grey[None, ..., None], 3, axis=-1), STATIC_FRAMES, axis=0)


def count_graph_builds(monkeypatch, builder: str) -> list:
    """A list that gains an entry each time pipelines.loader builds a graph with ``builder``
    (e.g. "pretrain_graph"): one per pipeline started."""
    builds, build = [], getattr(loader_module, builder)

    def counting(*args, **kwargs):
        builds.append(builder)
        return build(*args, **kwargs)

    monkeypatch.setattr(loader_module, builder, counting)
    return builds


def frame_numbers(clip: torch.Tensor) -> np.ndarray:
    """(3, T, h, w) raw-valued clip of a coded video -> the T frame numbers."""
    red = clip[0].float().mean(dim=(1, 2)).cpu().numpy()
    return np.round((red - RED0) / RED_STEP).astype(int)


def video_number(clip: torch.Tensor) -> int:
    """(3, T, h, w) raw-valued clip of a coded video -> its video number."""
    return int(round((clip[1].float().mean().item() - GREEN0) / GREEN_STEP))


def green_codes(clip: torch.Tensor) -> np.ndarray:
    """Per-pixel video numbers of a (3, T, h, w) raw-valued clip."""
    return np.round((clip[1].float().cpu().numpy() - GREEN0) / GREEN_STEP).astype(int)


def _dataset(root, name: str, clips: list[np.ndarray], labels: list[int], options: dict = LOSSLESS_VP9):
    os.makedirs(root, exist_ok=True)
    relpaths = []
    for number, frames in enumerate(clips):
        relpath = f"{name}{number}.webm"
        write_vp9(os.path.join(root, relpath), frames, options)
        relpaths.append(relpath)
    list_path = os.path.join(root, f"{name}list.txt")
    write_file_list(list_path, zip(relpaths, labels, strict=True))
    return list_path


@pytest.fixture(scope="session")
def coded_list(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("coded"))
    clips = [coded_frames(v, n) for v, n in enumerate(CODED_FRAMES)]
    return _dataset(root, "coded", clips, [v % NUM_CLASSES for v in range(len(clips))])


@pytest.fixture(scope="session")
def coded_videos(coded_list):
    index = build_index(coded_list, cache=False)
    return videos_from_index(index, min_frames=1, device="cpu")


@pytest.fixture(scope="session")
def gpu_coded_videos(tmp_path_factory):
    """The coded videos at a size NVDEC decodes."""
    root = str(tmp_path_factory.mktemp("gpu_coded"))
    clips = [coded_frames(v, n, NVDEC_SIZE) for v, n in enumerate(CODED_FRAMES)]
    list_path = _dataset(root, "coded", clips, [v % NUM_CLASSES for v in range(len(clips))], GPU_VP9)
    return videos_from_index(build_index(list_path, cache=False), min_frames=1, device="gpu")


@pytest.fixture(scope="session")
def gpu_static_videos(tmp_path_factory):
    """The static videos at a size NVDEC decodes (the gradients wrap past 255 there; every
    frame of a video is still the same)."""
    root = str(tmp_path_factory.mktemp("gpu_static"))
    clips = [static_frames(v, NVDEC_SIZE) for v in range(NUM_STATIC)]
    list_path = _dataset(root, "static", clips, list(range(NUM_STATIC)), GPU_VP9)
    return videos_from_index(build_index(list_path, cache=False), min_frames=1, device="gpu")


@pytest.fixture(scope="session")
def static_videos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("static"))
    list_path = _dataset(root, "static", [static_frames(v) for v in range(NUM_STATIC)], list(range(NUM_STATIC)))
    return videos_from_index(build_index(list_path, cache=False), min_frames=1, device="cpu")


@pytest.fixture(scope="session")
def textured_videos(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("textured"))
    list_path = _dataset(root, "textured", [textured_frames(v) for v in range(NUM_TEXTURED)],
                         [v % NUM_CLASSES for v in range(NUM_TEXTURED)])
    return videos_from_index(build_index(list_path, cache=False), min_frames=1, device="cpu")
