"""Torch-facing loaders over the DALI graphs: batches of tensors on the training device.

    loader = pretrain_loader(videos, clip=ClipGeometry(frames=8, stride=2, crop=64), batch_size=8,
                             runtime=Runtime(device="cpu"), shard=Sharding(seed=0, rank=0, world=1),
                             aug=AugParams(), fame_cfg=fame.FameConfig())
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        for batch in loader:              # PretrainBatch(query, key, label, index, ...)
            ...                           # query, key: NCTHW float32 on the device
        state = loader.state_dict()       # {epoch, step, seed, ...}: save with the checkpoint

``len(loader)`` is the number of steps per epoch, known up front and equal on every
rank. Iterating yields the batches of the current epoch from the current step on; a
state restored with ``load_state_dict`` (mid-epoch included) continues with exactly the
batches an uninterrupted run would have seen, because every draw is keyed by (seed,
epoch, position) (see pipelines.sampler). A state saved with another batch size
continues at the same share of the epoch, with other batches; one saved with another
seed, number of processes or number of videos is refused. Iterating a finished epoch
again without ``set_epoch`` replays it, like a torch DataLoader whose sampler epoch is
unchanged.

CPU outputs for a CPU run reach torch through DLPack without a copy (DALI's dynamic
executor keeps each output alive while a tensor refers to it). On the GPU no step waits
on the host: DALI returns each batch on torch's current stream (``Pipeline.run(cuda_stream)``
orders the outputs on that stream), the outputs are cloned on that stream, and the
loader keeps DALI's outputs referenced until an event recorded after the clones has
passed (``DeviceHandOver``), so DALI cannot reuse a buffer under a pending copy. Host
outputs bound for a GPU are staged through pinned memory, which torch keeps until its
asynchronous copy is done.

The settings come grouped (pipelines.params): the clip geometry, the ``Runtime`` (device,
decoder, threads, prefetch, pipelines) and the ``Sharding`` (seed, rank, world). A loader is
a ``VideoLoader`` over a sampler and a graph builder: a profile composes its own (the
pretraining graph of its leading steps, pipelines.graphs.PRETRAIN_STEPS).

A failing batch is explained by pipelines.forensics: the videos that no longer read as
indexed, or else the pipeline itself.
"""
from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import NamedTuple

import torch

import fame
from pipelines.fame_stage import FameStage, PipelineFameStage
from pipelines.feeds import ENCODED, FRAMES, INDEX, Feed
from pipelines.forensics import RECHECK_HINT, pipeline_failure
from pipelines.graphs import (
    Graph,
    eval_clip_graph,
    eval_feeds,
    pretrain_feeds,
    pretrain_graph,
    train_clip_graph,
    train_feeds,
)
from pipelines.params import AugParams, ClipGeometry, Runtime, Sharding
from pipelines.sampler import EvalClipSampler, PretrainSampler, TrainClipSampler
from pipelines.segments import decoder_input
from pipelines.videos import VideoMeta, require_clip_room, warn_single_clip_videos

log = logging.getLogger(__name__)

SHARD_KEYS = ("world", "num_videos")    # what fixes the epoch order and each rank's slice of it
STATE_KEYS = ("seed", "epoch", "step", "batch_size", *SHARD_KEYS)


class PretrainBatch(NamedTuple):
    """query, key: (N, 3, T, crop, crop) float32; label, index: (N,) int64.

    With ``return_masks``: original / merged (N, T, crop, crop, 3) uint8 query before / after
    FAME (before the colour augmentation) and masks (N, crop, crop) uint8 in {0, 1}.
    """

    query: torch.Tensor
    key: torch.Tensor
    label: torch.Tensor
    index: torch.Tensor
    masks: torch.Tensor | None = None
    original: torch.Tensor | None = None
    merged: torch.Tensor | None = None


class ClipBatch(NamedTuple):
    """clip: (N, 3, T, crop, crop) float32; label, index: (N,) int64 (index: position in the video list)."""

    clip: torch.Tensor
    label: torch.Tensor
    index: torch.Tensor


class EvalBatch(NamedTuple):
    """clips: (V * clips_per_video, 3, T, crop, crop) float32, grouped by video; label, video_index: per clip."""

    clips: torch.Tensor
    label: torch.Tensor
    video_index: torch.Tensor


def _pairs(values: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def output_device(device: str, device_id: int = 0) -> torch.device:
    return torch.device("cuda", device_id) if device == "gpu" else torch.device("cpu")


def _to_torch(tensor_list, device: torch.device) -> torch.Tensor:
    """A dense DALI batch as one torch tensor, shared through DLPack, then on ``device``."""
    tensor = tensor_list.as_tensor()
    if device.type == "cuda" and type(tensor).__name__ == "TensorGPU":
        with torch.cuda.device(device):
            # A copy on torch's current stream, which DALI's outputs are ordered on (the
            # loader runs DALI with that stream); DALI's buffer stays referenced until the
            # copy has run (VideoLoader's DeviceHandOver), the copy for as long as torch needs.
            return torch.from_dlpack(tensor).clone()
    host = torch.from_dlpack(tensor)
    if device.type == "cuda":
        # Staged through torch's pinned memory: the copy runs asynchronously, and torch keeps
        # that buffer until it is done, where DALI could reuse its own meanwhile.
        return host.pin_memory().to(device, non_blocking=True)
    return host


class BatchInputError(RuntimeError):
    """Drawing the plan or reading the files of one batch failed; the message names that batch.

    DALI calls the feed ahead of the batch being run (prefetch), so this error can surface
    while an earlier batch runs: only the batch in the message is the one that failed.
    """


def batch_paths(sampler, epoch: int, step: int) -> str:
    """The video paths of one batch of ``sampler``, comma-separated."""
    _, video_ids = sampler.batch_positions(epoch, step)
    return ", ".join(sampler.videos[int(v)].path for v in video_ids)


class _Feed:
    """The external source of one pipeline: per iteration the plan of a step plus the encoded
    bytes (from the keyframe before each sample's frames where the video can be cut there, its
    frames shifted to match: pipelines.segments), as the tuple of ``feeds`` (what the pipeline's
    graph reads, in its order).

    Steps are counted across epochs (position = epoch * steps_per_epoch + step); iteration i
    of the pipeline serves position ``first + i * every``, so ``every`` pipelines started at
    consecutive positions take turns. A pipeline is never reset: at the end of an epoch it
    goes on with the next one, or with the same one again where ``epoch`` pins it. A failure
    to draw a plan or read a file is raised as a BatchInputError naming that batch.

    The FAME stage of the pipeline (``bind``) asks the feed for the keys of each iteration
    on the host (``fame_keys``), by the same iteration -> batch rule.
    """

    def __init__(self, sampler, feeds: tuple[Feed, ...], first: int, every: int = 1, epoch: int | None = None):
        self.sampler, self.feeds = sampler, feeds
        self.first, self.every, self.epoch = first, every, epoch

    def batch(self, iteration: int) -> tuple[int, int]:
        """(epoch, step) of the batch this pipeline serves as ``iteration``."""
        epoch, step = divmod(self.first + iteration * self.every, self.sampler.steps_per_epoch)
        return (epoch if self.epoch is None else self.epoch), step

    def fame_keys(self, iteration: int) -> tuple[int, int]:
        """The FAME seed and global step of the batch served as ``iteration``, on the host."""
        return self.sampler.fame_keys(*self.batch(iteration))

    def bind(self, stage: FameStage | None) -> PipelineFameStage | None:
        """``stage`` as this pipeline's python function, taking its batch keys from this feed."""
        return None if stage is None else stage.for_pipeline(self.fame_keys)

    def __call__(self, info):
        epoch, step = self.batch(info.iteration)
        try:
            return self._inputs(epoch, step)
        except Exception as error:
            raise BatchInputError(f"cannot prepare the batch of epoch {epoch} step {step} (videos: "
                                  f"{batch_paths(self.sampler, epoch, step)}): {error}; {RECHECK_HINT}") from error

    def _inputs(self, epoch: int, step: int) -> tuple:
        plan = self.sampler.plan(epoch, step)
        inputs = [decoder_input(self.sampler.videos[int(i)], frames)
                  for i, frames in zip(plan[INDEX.name], plan[FRAMES.name], strict=True)]
        plan[ENCODED.name] = [encoded for encoded, _ in inputs]
        plan[FRAMES.name] = [frames for _, frames in inputs]
        return tuple(plan[feed.name] for feed in self.feeds)


class DeviceHandOver:
    """Keeps DALI's GPU outputs referenced until torch's stream has run the copies made of them.

    DALI's dynamic executor does not reuse an output buffer while something refers to it
    (DALI docs, ``Pipeline.release_outputs`` and ``TensorGPU.__dlpack__``), but the clones
    in ``_to_torch`` are only queued when the loader moves on. Each batch's outputs are held
    with an event recorded on torch's stream after its copies and let go once the event has
    passed, checked without waiting; events on one stream pass in order.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._pending: collections.deque = collections.deque()

    def hold(self, outputs) -> None:
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self._pending.append((event, outputs))
        while self._pending and self._pending[0][0].query():
            self._pending.popleft()

    def wait_all(self) -> None:
        """Let every held output go, after waiting for the last copy (on close only)."""
        if self._pending:
            self._pending[-1][0].synchronize()
        self._pending.clear()


class VideoLoader:
    """Steps through one role's sampler with DALI graphs; yields role batches of torch tensors.

    ``feeds`` are what the graphs ``make_graph`` builds read from their source, in order.

    ``pipelines`` copies of the graph take turns by step, each with its own threads. DALI
    runs the CPU operators of one pipeline one at a time, the python stage on a single
    thread, so a second pipeline keeps the cores busy meanwhile (README, pipeline profile).
    At the end of an epoch the pipelines read on into the pass expected next (short epochs
    do not drain them): the next epoch, or with ``replay`` (test clips, iterated again
    without ``set_epoch``) the same one again. Iterating from anywhere else (a replay of
    a training epoch, a restored state) rebuilds them there. The batches are the same
    either way: each is a function of (epoch, step) alone.
    """

    def __init__(self, sampler, feeds: tuple[Feed, ...], make_graph: Callable[[_Feed], Graph],
                 assemble: Callable[[dict], tuple], device: torch.device, pipelines: int = 1, replay: bool = False):
        if pipelines < 1:
            raise ValueError(f"pipelines must be >= 1, got {pipelines}")
        self.sampler, self.device, self.pipelines, self.replay = sampler, torch.device(device), pipelines, replay
        self.feeds = feeds
        self._make_graph, self._assemble = make_graph, assemble
        self.epoch, self.step = 0, 0
        self._graphs: list[Graph] = []
        self._next = (0, 0)      # (epoch, step) of the pipelines' next batch
        self._served = 0         # batches taken from them so far
        self._handover = DeviceHandOver(self.device) if self.device.type == "cuda" else None

    def __len__(self) -> int:
        return self.sampler.steps_per_epoch

    @property
    def num_videos(self) -> int:
        return len(self.sampler.videos)

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch`` from its first step; the current epoch keeps its position."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        if epoch != self.epoch:
            self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict:
        """Everything needed to continue exactly here: epoch, step and what keys the draws."""
        return {"epoch": self.epoch, "step": self.step, "seed": self.sampler.seed,
                "batch_size": self.sampler.batch_size, "world": self.sampler.world,
                "num_videos": self.num_videos}

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` (from ``state_dict``) left off.

        A state saved with another batch size continues at the same share of the epoch (the
        epoch order and this rank's slice of it do not depend on the batch size). Another
        seed, number of processes or number of videos is refused: the epoch order or the
        rank's slice would differ, so the remaining batches would not be the ones left.
        """
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"loader state lacks {', '.join(missing)} (it has {', '.join(sorted(state))}); "
                             f"it needs {', '.join(STATE_KEYS)}")
        if state["seed"] != self.sampler.seed:
            raise ValueError(f"loader state has seed {state['seed']} but this loader uses seed "
                             f"{self.sampler.seed}: the resumed batches would differ; use the same seed")
        self._check_shards(state)
        step = int(state["step"])
        if state["batch_size"] != self.sampler.batch_size:
            step = min(len(self), step * state["batch_size"] // self.sampler.batch_size)
            log.warning("loader state was saved with batch_size %d, now %d: continuing epoch %d at step %d of %d "
                        "(same epoch order, batches not identical)", state["batch_size"], self.sampler.batch_size,
                        state["epoch"], step, len(self))
        self.epoch, self.step = int(state["epoch"]), step

    def _check_shards(self, state: dict) -> None:
        """Refuse a state whose epoch order or rank slices differ from this loader's."""
        saved = {key: state[key] for key in SHARD_KEYS}
        current = {key: value for key, value in self.state_dict().items() if key in SHARD_KEYS}
        if saved != current:
            raise ValueError(f"loader state was saved with {_pairs(saved)} but this run has {_pairs(current)}: "
                             "each process would read other videos than the ones left; resume with the same "
                             "number of processes and videos, or start anew with train.resume=none")

    def close(self) -> None:
        self._graphs = []
        if self._handover is not None:
            self._handover.wait_all()

    def _pipelines(self) -> list[Graph]:
        """The graphs whose next batch is the current one: the running ones if they are
        there, else new ones started at it."""
        if not self._graphs or self._next != (self.epoch, self.step):
            first = self.epoch * len(self) + self.step
            feeds = [_Feed(self.sampler, self.feeds, first + turn, self.pipelines,
                           self.epoch if self.replay else None) for turn in range(self.pipelines)]
            self._graphs = [self._make_graph(feed) for feed in feeds]
            self._next, self._served = (self.epoch, self.step), 0
        return self._graphs

    def _run(self, pipe):
        """One batch from the pipeline, on torch's current stream for a GPU (no host wait).

        A failure re-probes the videos of the batch it happened in and blames those that
        changed since indexing, else the pipeline itself (``pipeline_failure``); a feed's
        BatchInputError already names its own batch, possibly a later one.
        """
        stream = (torch.cuda.current_stream(self.device),) if self.device.type == "cuda" else ()
        try:
            return pipe.run(*stream)
        except BatchInputError:
            self.close()
            raise
        except Exception as error:
            self.close()
            _, video_ids = self.sampler.batch_positions(self.epoch, self.step)
            videos = [self.sampler.videos[int(v)] for v in video_ids]
            raise pipeline_failure(error, videos, f"epoch {self.epoch} step {self.step}") from error

    def __iter__(self):
        if self.step >= len(self):
            self.step = 0
        if len(self) == 0:
            return
        while self.step < len(self):
            graph = self._pipelines()[self._served % self.pipelines]
            outputs = self._run(graph.pipe)
            self._served += 1
            try:
                batch = self._assemble(dict(zip(graph.outputs, outputs, strict=True)))
            except Exception:
                self.close()      # the pipelines are a batch ahead of the loader's position now
                raise
            if self._handover is not None:
                self._handover.hold(outputs)
            self.step += 1
            if self.step < len(self):
                self._next = (self.epoch, self.step)
            else:
                self._next = (self.epoch if self.replay else self.epoch + 1, 0)
            yield batch


# ------------------------------------------------------------- builders ----
def pretrain_loader(videos: list[VideoMeta], *, clip: ClipGeometry, batch_size: int, runtime: Runtime = Runtime(),
                    shard: Sharding = Sharding(), aug: AugParams = AugParams(),
                    fame_cfg: fame.FameConfig | None = None, return_masks: bool = False) -> VideoLoader:
    """Pretraining: two clips per video (query, key), crop + flip each, FAME on the query
    (or both, ``fame_cfg.branches``; none when ``fame_cfg`` is None or merges nothing),
    then colour augmentation and normalisation; ``batch_size`` videos per batch. Yields
    PretrainBatch, with FAME's masks when ``return_masks``.

    ``runtime.decode`` is where the videos are decoded; "cpu" with device "gpu" decodes on
    the CPU and runs the rest on the GPU.
    """
    fame_stage = None
    if fame_cfg is not None and fame_cfg.merges:
        fame_stage = FameStage(fame_cfg, return_masks=return_masks)
    sampler = pretrain_sampler(videos, clip, batch_size, shard, aug)
    out_device = output_device(runtime.device, runtime.device_id)

    def make_graph(feed):
        return pretrain_graph(feed, runtime=runtime, batch_size=sampler.batch_size, crop=sampler.geometry.crop,
                              aug=sampler.aug, fame_stage=feed.bind(fame_stage))

    def assemble(outputs: dict):
        return PretrainBatch(**{name: _to_torch(value, out_device) for name, value in outputs.items()})

    return VideoLoader(sampler, pretrain_feeds(runtime.device), make_graph, assemble, out_device, runtime.pipelines)


def pretrain_sampler(videos: list[VideoMeta], clip: ClipGeometry, batch_size: int, shard: Sharding,
                     aug: AugParams) -> PretrainSampler:
    """The draws of the pretraining loader (videos checked for room for a clip first)."""
    require_clip_room(videos, clip.span, "pretraining")
    warn_single_clip_videos(videos, clip.span, "pretraining")
    return PretrainSampler(videos, clip, aug, batch_size=batch_size, seed=shard.seed, rank=shard.rank,
                           world=shard.world)


def train_clips_loader(videos: list[VideoMeta], *, clip: ClipGeometry, batch_size: int,
                       runtime: Runtime = Runtime(), shard: Sharding = Sharding(),
                       aug: AugParams = AugParams()) -> VideoLoader:
    """Linear probe / finetuning: one random clip per video with a random view, ``batch_size``
    clips per batch. Yields ClipBatch."""
    require_clip_room(videos, clip.span, "training clips")
    sampler = TrainClipSampler(videos, clip, aug, batch_size=batch_size, seed=shard.seed, rank=shard.rank,
                               world=shard.world)
    out_device = output_device(runtime.device, runtime.device_id)

    def make_graph(feed):
        return train_clip_graph(feed, runtime=runtime, batch_size=batch_size, crop=clip.crop, aug=aug)

    def assemble(outputs: dict):
        return ClipBatch(*(_to_torch(value, out_device) for value in outputs.values()))

    return VideoLoader(sampler, train_feeds(runtime.device), make_graph, assemble, out_device, runtime.pipelines)


def eval_clips_loader(videos: list[VideoMeta], *, clip: ClipGeometry, batch_size: int, runtime: Runtime = Runtime(),
                      shard: Sharding = Sharding(), clips_per_video: int = 10, aug: AugParams = AugParams(),
                      centre_fraction: float | None = None) -> VideoLoader:
    """Testing / feature extraction: ``clips_per_video`` uniformly spaced clips of every video,
    centre crop, list order, each video exactly once per pass (the last batch may be smaller;
    nothing is padded). ``batch_size`` counts clips: a batch holds batch_size //
    clips_per_video videos (at least one). Of ``aug`` only ``mean``, ``std`` and ``antialias`` are used,
    of ``shard`` only rank and world (nothing is drawn). Yields EvalBatch. Ranks read near-equal
    disjoint slices, so their lengths may differ by one.
    """
    require_clip_room(videos, clip.span, "test clips")
    videos_per_batch = max(1, batch_size // clips_per_video)
    options = {} if centre_fraction is None else {"centre_fraction": centre_fraction}
    sampler = EvalClipSampler(videos, clip, clips_per_video=clips_per_video,
                              videos_per_batch=videos_per_batch, rank=shard.rank, world=shard.world, **options)
    out_device = output_device(runtime.device, runtime.device_id)

    def make_graph(feed):
        return eval_clip_graph(feed, runtime=runtime, batch_size=videos_per_batch, geometry=clip,
                               clips_per_video=clips_per_video, aug=aug)

    def assemble(outputs: dict):
        clips = _to_torch(outputs["clips"], out_device)
        per_video = clips.shape[1]
        clips = clips.reshape(-1, *clips.shape[2:])
        label = _to_torch(outputs["label"], out_device).repeat_interleave(per_video)
        index = _to_torch(outputs["index"], out_device).repeat_interleave(per_video)
        return EvalBatch(clips, label, index)

    return VideoLoader(sampler, eval_feeds(), make_graph, assemble, out_device, runtime.pipelines, replay=True)
