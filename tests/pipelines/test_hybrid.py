"""Hybrid decoding (data.decode): videos decoded on the CPU, everything after on the GPU.

The graphs are defined, not built, so no GPU is needed: the tests read which device each
operator of the definition runs on. Running them needs a GPU (tests/pipelines/test_gpu.py).
"""
import dataclasses
import logging

import pytest
import torch
from nvidia.dali import Pipeline

import fame
import pipelines.loader as loader_module
import pipelines.videos as videos_module
from engine import loaders
from engine.config import ConfigError, load_config
from measure import profile
from pipelines import graphs
from pipelines.fame_stage import FameStage
from pipelines.loader import eval_clips_loader, pretrain_loader, train_clips_loader
from pipelines.params import AugParams, ClipGeometry, Runtime
from pipelines.videos import VideoMeta
from tests.conftest import ROOT

CROP, FRAMES = 32, 4
GEOMETRY = ClipGeometry(frames=FRAMES, stride=2, crop=CROP)
AUG = AugParams()
SOURCE = "ExternalSource"       # schema names, as an OpSpec prints them
PYTHON_FUNCTION = "DLTensorPythonFunctionImpl"  # fn.python_function's
DECODER = "decode"          # the decoder's operator name in every graph
GPU_RUN = torch.device("cuda", 0)   # only named here: nothing below touches a GPU
CPU_RUN = torch.device("cpu")
TINY = f"{ROOT}/configs/synthetic_tiny.yaml"
VIDEO = VideoMeta("/no/such/video.webm", 0, 30, 320, 240)


@dataclasses.dataclass(frozen=True)
class Defined:
    """A graph as defined (not built) and the output nodes its definition handed to DALI."""

    graph: graphs.Graph
    outputs: tuple


@pytest.fixture
def define(monkeypatch):
    """define(role, device, decode=None): the graph of ``role`` (pretraining with a FAME stage, train
    clips, test clips), defined only, with its output nodes as the definition gives them to
    ``Pipeline.set_outputs``."""
    given = []
    set_outputs = Pipeline.set_outputs

    def recording(pipe, *outputs):
        given.append(outputs)
        return set_outputs(pipe, *outputs)

    monkeypatch.setattr(Pipeline, "set_outputs", recording)

    def make(role: str, device: str, decode=None) -> Defined:
        options = dict(runtime=Runtime(device=device, decode=decode), batch_size=2, aug=AUG)
        if role == "pretrain":
            stage = FameStage(fame.FameConfig(branches="both"), return_masks=True)
            graph = graphs.pretrain_graph(lambda info: None, crop=CROP, fame_stage=stage, **options)
        elif role == "train":
            graph = graphs.train_clip_graph(lambda info: None, crop=CROP, **options)
        else:
            graph = graphs.eval_clip_graph(lambda info: None, geometry=GEOMETRY, clips_per_video=2, **options)
        return Defined(graph, given.pop())

    return make


def operators(defined: Defined) -> list:
    """Every operator instance the graph's outputs depend on (each DataNode's ``source``)."""
    seen, stack = {}, list(defined.outputs)
    while stack:
        operator = stack.pop().source
        if id(operator) not in seen:
            seen[id(operator)] = operator
            stack.extend(operator.inputs)
    return list(seen.values())


def described(operator) -> tuple[str, dict[str, str]]:
    """An operator's schema name and arguments, as its OpSpec prints them ('OpSpec for NAME:' and
    'key: value' lines under 'Arguments:')."""
    head, _, arguments = str(operator.spec).partition("Arguments:")
    name = head.split("OpSpec for ", 1)[1].split(":", 1)[0]
    pairs = (line.strip().partition(":") for line in arguments.splitlines() if ":" in line)
    return name, {key: value.strip() for key, _, value in pairs}


def kind(operator) -> str:
    return described(operator)[0]


def device_of(operator) -> str:
    return described(operator)[1]["device"]


def decoder(defined: Defined):
    (found,) = [op for op in operators(defined) if op.name == DECODER]
    return found


def consumers(defined: Defined, producer) -> list[tuple]:
    """(operator, input node) for every input of an operator that ``producer`` makes."""
    return [(op, node) for op in operators(defined) for node in op.inputs if node.source is producer]


def placement(defined: Defined) -> list[tuple[str, str]]:
    """(operator kind, device) of every operator but the sources and the decoder, sorted."""
    return sorted((kind(op), device_of(op)) for op in operators(defined) if kind(op) != SOURCE and op.name != DECODER)


ROLES = ("pretrain", "train", "test")


@pytest.mark.parametrize("role", ROLES)
def test_hybrid_graph_decodes_on_the_cpu_and_hands_the_frames_to_the_gpu(define, role):
    graph = define(role, "gpu", decode="cpu")
    video = decoder(graph)
    assert device_of(video) == "cpu"
    users = consumers(graph, video)
    assert users and all(node.device == "gpu" and device_of(op) == "gpu" for op, node in users)


@pytest.mark.parametrize("role", ROLES)
def test_hybrid_graph_runs_every_later_operator_as_the_gpu_graph_does(define, role):
    hybrid, gpu = define(role, "gpu", decode="cpu"), define(role, "gpu")
    assert placement(hybrid) == placement(gpu)
    assert hybrid.graph.feeds == gpu.graph.feeds
    assert "mixed" not in {device_of(op) for op in operators(hybrid)}


def test_hybrid_pretraining_runs_the_fame_stage_on_the_gpu(define):
    (stage,) = [op for op in operators(define("pretrain", "gpu", decode="cpu")) if op.name == "fame"]
    assert kind(stage) == PYTHON_FUNCTION and device_of(stage) == "gpu"


@pytest.mark.parametrize("role", ROLES)
def test_gpu_decoder_is_nvdec_without_thread_pinning(define, role):
    graph = define(role, "gpu")     # decode defaults to the graph's device
    name, arguments = described(decoder(graph))
    assert (name, arguments["device"], arguments["affine"]) == ("decoders__Video", "mixed", "False")
    assert "affine" not in described(decoder(define(role, "gpu", decode="cpu")))[1]   # a mixed-only argument


@pytest.mark.parametrize("role", ROLES)
def test_cpu_graph_stays_on_the_cpu(define, role):
    graph = define(role, "cpu")
    assert {device_of(op) for op in operators(graph)} == {"cpu"}
    assert placement(graph) == placement(define(role, "cpu", decode="cpu"))


@pytest.mark.parametrize("role", ROLES)
def test_gpu_decoding_in_a_cpu_graph_is_refused(define, role):
    with pytest.raises(ValueError, match="decode 'gpu'.*'data.decode'.*pipeline device 'gpu'"):
        define(role, "cpu", decode="gpu")
    with pytest.raises(ValueError, match="decode device must be one of"):
        define(role, "gpu", decode="nvdec")


@pytest.mark.parametrize("make", (pretrain_loader, train_clips_loader, eval_clips_loader))
def test_loaders_refuse_gpu_decoding_on_the_cpu_up_front(make):
    with pytest.raises(ValueError, match="decode 'gpu'"):
        make([VIDEO], clip=GEOMETRY, batch_size=1, runtime=Runtime(device="cpu", decode="gpu"))


class GraphAsked(Exception):
    """Stops a loader at its first graph."""


@pytest.mark.parametrize("make, builder", [(pretrain_loader, "pretrain_graph"),
                                           (train_clips_loader, "train_clip_graph"),
                                           (eval_clips_loader, "eval_clip_graph")])
def test_loaders_hand_the_decoder_to_their_graphs(coded_videos, monkeypatch, make, builder):
    seen = {}

    def first_graph(source, **kwargs):
        seen.update(kwargs)
        raise GraphAsked

    monkeypatch.setattr(loader_module, builder, first_graph)
    loader = make(coded_videos, clip=GEOMETRY, batch_size=2, runtime=Runtime(device="gpu", decode="cpu"))
    with pytest.raises(GraphAsked):
        next(iter(loader))
    assert (seen["runtime"].device, seen["runtime"].decoder) == ("gpu", "cpu")


# ------------------------------------------------------------ runners ----
def tiny_config(root, *overrides):
    return load_config(TINY, [f"data.root={root}", "wandb.mode=disabled", *overrides])


@pytest.fixture
def picks(monkeypatch) -> list:
    """choose_decoder replaced: records each call and picks the CPU."""
    calls = []

    def choose(records, cpu_count):
        calls.append((list(records), cpu_count))
        return "cpu", "picked by the test"

    monkeypatch.setattr(videos_module, "choose_decoder", choose, raising=False)
    return calls


class FakeIndex:
    def good(self):
        return ["a usable record"]


def test_cpu_run_decodes_on_the_cpu_whatever_auto_would_pick(picks):
    cfg = load_config(None)
    assert loaders.decode_for(cfg, FakeIndex(), CPU_RUN)[0] == "cpu"
    assert picks == []


def test_cpu_run_refuses_gpu_decoding():
    cfg = load_config(None, ["device=auto", "data.decode=gpu"])
    with pytest.raises(ConfigError, match="'data.decode' is 'gpu'.*on the CPU.*auto or cpu"):
        loaders.decode_for(cfg, FakeIndex(), CPU_RUN)


@pytest.mark.parametrize("setting", ("gpu", "cpu"))
def test_gpu_run_decodes_where_the_config_says(setting, picks):
    cfg = load_config(None, [f"data.decode={setting}"])
    assert loaders.decode_for(cfg, FakeIndex(), GPU_RUN)[0] == setting
    assert picks == []


def test_gpu_run_on_auto_asks_choose_decoder(picks, monkeypatch):
    monkeypatch.setattr(loaders.os, "cpu_count", lambda: 48)
    cfg = load_config(None)
    assert loaders.decode_for(cfg, FakeIndex(), GPU_RUN) == ("cpu", "picked by the test")
    assert picks == [(["a usable record"], 48)]


def test_load_video_set_logs_the_choice_and_checks_videos_for_that_decoder(tiny_data_root, picks, caplog):
    cfg = tiny_config(tiny_data_root)
    with caplog.at_level(logging.INFO, logger=loaders.__name__):
        videos, decode = loaders.load_video_set(cfg, cfg.data.train_list, 0, GPU_RUN)
    assert decode == "cpu" and videos and len(picks) == 1
    assert "decode: cpu (picked by the test)" in caplog.messages
    # The tiny videos (64x48) are below NVDEC's minimum: checked for the GPU decoder, they are refused.
    with pytest.raises(ValueError, match="NVDEC"):
        loaders.load_video_set(tiny_config(tiny_data_root, "device=gpu", "data.decode=gpu"), cfg.data.train_list,
                                 0, GPU_RUN)


def test_auto_on_a_gpu_run_picks_the_cpu_for_videos_nvdec_refuses(tiny_data_root, caplog):
    """The real choose_decoder: the tiny 64x48 videos are below NVDEC's minimum size."""
    cfg = tiny_config(tiny_data_root, "device=gpu")
    with caplog.at_level(logging.INFO, logger=loaders.__name__):
        videos, decode = loaders.load_video_set(cfg, cfg.data.train_list, 0, GPU_RUN)
    assert decode == "cpu" and videos
    assert any(message.startswith("decode: cpu (") for message in caplog.messages)


def record_kwargs(monkeypatch, module, name: str) -> dict:
    """Replace ``module.name`` (a loader builder) by one that keeps its keyword arguments."""
    seen = {}

    def keep(videos, **kwargs):
        seen.update(kwargs)
        return "loader"

    monkeypatch.setattr(module, name, keep)
    return seen


@pytest.mark.parametrize("module, name, build_loader", [
    (loaders, "pretrain_loader", lambda cfg: loaders.build_pretrain_loader(cfg, 0, 1, GPU_RUN)),
    (loaders, "train_clips_loader", lambda cfg: loaders.build_train_clips_loader(cfg, cfg.data.train_list,
                                                                                     0, 1, GPU_RUN)),
    (loaders, "eval_clips_loader", lambda cfg: loaders.build_test_clips_loader(cfg, cfg.data.val_list,
                                                                                   0, 1, GPU_RUN)),
])
def test_runner_loaders_get_the_resolved_decoder(tiny_data_root, picks, monkeypatch, module, name, build_loader):
    seen = record_kwargs(monkeypatch, module, name)
    assert build_loader(tiny_config(tiny_data_root, "device=gpu")) == "loader"
    assert (seen["runtime"].device, seen["runtime"].decode) == ("gpu", "cpu")


def test_cpu_runner_loaders_decode_on_the_cpu(tiny_data_root, picks, monkeypatch):
    seen = record_kwargs(monkeypatch, loaders, "pretrain_loader")
    loaders.build_pretrain_loader(tiny_config(tiny_data_root), 0, 1, CPU_RUN)
    assert (seen["runtime"].device, seen["runtime"].decode) == ("cpu", "cpu") and picks == []


class LoaderMade(Exception):
    """Stops the profile once its first loader is asked for."""


@pytest.mark.parametrize("setting", ("gpu", "cpu"))
def test_profile_follows_data_decode_on_a_gpu_run(tiny_data_root, monkeypatch, setting):
    monkeypatch.setattr(loaders, "videos_from_index", lambda index, **kwargs: [VIDEO])   # NVDEC's size check
    seen = {}

    def first_loader(videos, steps, fame_stage, settings):
        seen.update(settings)
        raise LoaderMade

    monkeypatch.setattr(profile, "stage_loader", first_loader)
    with pytest.raises(LoaderMade):
        profile.profile(tiny_config(tiny_data_root, "device=gpu", f"data.decode={setting}"), GPU_RUN,
                        steps=1, warmup=0, repeats=1)
    assert (seen["runtime"].device, seen["runtime"].decode) == ("gpu", setting)
