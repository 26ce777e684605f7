"""Profile the pretraining input pipeline: `python -m measure.profile --config X [--steps N] [key=value ...]`.

Times the DALI pretraining pipeline without a model, cut after each stage:
decode (both clips of every video), + crop/flip, + FAME (python stage), + colour
augmentation and blur, + normalisation, + handing the batch to torch on the training
device. Each row is clips/s (two clips per video) over --steps batches after --warmup
(at least as many as the loader can have in the making, so none of the timed ones is begun early),
the best of --repeats rounds (rows interleaved, so load from other processes hits them
alike), and the CPU time per batch (median; on a shared machine the steadier figure).
A stage's cost is the growth in ms per batch over the row before (stages overlap in
DALI's executor, so these are marginal costs). The python FAME stage is also timed from
inside. A plain PyAV + NumPy loader (same videos, clips, crops and draws, as many
worker processes as train.pipelines x train.num_threads DALI threads) is timed as the baseline.
Then the decode cost of one clip early, in the middle and late in a video (measure.positions),
and what the videos are (size, length, codec, keyframe interval), so that every figure says
what data it was measured on.

On a GPU the pipeline runs there (decoding as data.decode says: NVDEC, or the CPU with the
frames then copied to the GPU), every timed batch is synchronised,
each stage is an NVTX range ("profile/<stage>", next to DALI's own operator ranges and
"fame.augment") for `nsys profile -t cuda,nvtx`, and device memory in use is reported.

Prints a table, writes profile.json in <run.dir>/<run.name>/ (default name
profile-<config>-<time>) and logs the figures to W&B through engine.logger.
"""
from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import os
import statistics
import time
import warnings

import torch

from data.index import build_index
from engine import config as C
from engine.cli import cli_parser, parse_cli_args
from engine.config import data_path
from engine.dataset import ensure_data
from engine.errors import run_command
from engine.loaders import load_video_set, pretrain_settings
from engine.logger import GIB
from engine.setup import CLIPS_PER_VIDEO, open_logger, prepare_run_dir, resolve_device, setup_logging
from measure.baseline import pyav_pretrain_loader
from measure.machine import cpu_model
from measure.positions import ClipCost, clip_costs, describe_videos, format_costs, format_description
from pipelines.fame_stage import FameStage
from pipelines.graphs import PRETRAIN_STEPS, pretrain_feeds, pretrain_graph
from pipelines.loader import VideoLoader, output_device, pretrain_loader, pretrain_sampler

PROFILE_FILE = "profile.json"
DEFAULT_STEPS, DEFAULT_WARMUP, DEFAULT_REPEATS = 10, 2, 3
POSITION_BATCHES = 2         # batches of videos whose clips are decoded at each position
# (row name, leading steps of the pretraining graph, yield raw DALI outputs)
ROWS = tuple((step.name, PRETRAIN_STEPS[:count], True) for count, step in enumerate(PRETRAIN_STEPS, start=1)) \
    + (("to_torch", PRETRAIN_STEPS, False),)
ROW_LABELS = {"decode": "decode 2 clips", "crop": "+ crop, flip", "fame": "+ FAME", "augment": "+ colour, blur",
              "normalise": "+ normalise", "to_torch": "+ to torch", "baseline": "PyAV + NumPy baseline"}
TARGET_VS_DECODE = 2 / 3     # full pipeline / decode alone
TARGET_VS_BASELINE = 1.0     # full pipeline / PyAV + NumPy baseline
BASELINE_PREFETCH = 2        # batches a worker of torch's DataLoader makes ahead (its default prefetch_factor)


def parse_args(argv=None) -> tuple[C.Config, int, int, int]:
    p = cli_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="timed batches per row")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="untimed batches before each row")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="time every row this often, rows interleaved, and keep the fastest "
                        "(load from other processes only slows a run down)")
    cfg, a = parse_cli_args(p, argv)
    if a.steps < 1 or a.warmup < 0 or a.repeats < 1:
        p.error("--steps and --repeats must be >= 1, --warmup >= 0")
    return cfg, a.steps, a.warmup, a.repeats


def endless(loader):
    """Batches of epoch 0, 1, 2, ... back to back."""
    for epoch in itertools.count():
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader


@dataclasses.dataclass
class Timing:
    """Seconds per batch: wall clock, and CPU time of this process and its finished children."""

    wall: float
    cpu: float


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def time_batches(batches, steps: int, warmup: int, synchronize) -> Timing:
    """Per-batch time over ``steps`` batches after ``warmup`` untimed ones."""
    for _ in range(warmup):
        next(batches)
    synchronize()
    started, cpu = time.perf_counter(), _cpu_seconds()
    for _ in range(steps):
        next(batches)
        synchronize()
    return Timing((time.perf_counter() - started) / steps, (_cpu_seconds() - cpu) / steps)


def baseline_workers(cfg: C.Config) -> int:
    """The baseline loader gets as many worker processes as the DALI pipelines have threads."""
    return cfg.train.pipelines * cfg.train.num_threads


def warmups(cfg: C.Config, warmup: int) -> tuple[int, int]:
    """Untimed batches of the DALI rows and of the baseline: ``warmup``, and at least what the
    loader can have in the making before the timer starts (a prefetch queue per pipeline,
    BASELINE_PREFETCH per baseline worker), which would otherwise count as free batches."""
    return (max(warmup, cfg.train.pipelines * cfg.train.prefetch),
            max(warmup, baseline_workers(cfg) * BASELINE_PREFETCH))


def time_baseline(sampler, fame_cfg, workers: int, steps: int, warmup: int) -> Timing:
    """The PyAV + NumPy loader. Its CPU time per batch is what the worker processes spent making
    the timed batches (each measures its own) plus this process's time while they were timed.
    Its workers may outnumber the cores, as the DALI threads do: torch's warning about that is
    not shown."""
    total = warmup + steps
    epochs = 1 + total // max(1, len(sampler))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        timed = iter(pyav_pretrain_loader(sampler, fame_cfg, epochs=epochs, num_workers=workers, batches=total,
                                          cpu_timed=True))
        worker_cpu = []

        def batches():
            for batch, cpu in timed:
                worker_cpu.append(float(cpu))
                yield batch
        timing = time_batches(batches(), steps, warmup, lambda: None)
        for _ in timed:          # exhausting the loader joins its workers
            pass
    # No workers: the batches were made here, already in this process's time.
    made = sum(worker_cpu[warmup:total]) / steps if workers else 0.0
    return Timing(timing.wall, timing.cpu + made)


def stage_loader(videos, steps, fame_stage, settings: dict) -> VideoLoader:
    """The pretraining graph of ``steps`` only, yielding DALI's outputs as they are; ``fame_stage``
    (None: no FAME) is the python stage as it is, so its timing can be read afterwards."""
    runtime = settings["runtime"]
    sampler = pretrain_sampler(videos, settings["clip"], settings["batch_size"], settings["shard"], settings["aug"])

    def make_graph(feed):
        return pretrain_graph(feed, runtime=runtime, batch_size=sampler.batch_size, crop=sampler.geometry.crop,
                              aug=sampler.aug, fame_stage=feed.bind(fame_stage), steps=steps)

    return VideoLoader(sampler, pretrain_feeds(runtime.device, steps), make_graph, dict,
                       output_device(runtime.device, runtime.device_id), runtime.pipelines)


def _nvtx(device: torch.device, name: str):
    return torch.cuda.nvtx.range(name) if device.type == "cuda" else contextlib.nullcontext()


def _memory_used_gib(device: torch.device):
    """Device memory in use after a row, by every process on the GPU. DALI's and CuPy's pools
    keep what they took, so a row's figure includes what the rows before it held."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return (total - free) / GIB


def profile(cfg: C.Config, device: torch.device, steps: int, warmup: int, repeats: int) -> dict:
    """Every row timed ``repeats`` times, rows interleaved so that outside load hits them alike."""
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    clips_per_batch = CLIPS_PER_VIDEO * cfg.train.batch_size
    dali_warmup, baseline_warmup = warmups(cfg, warmup)
    videos, decode = load_video_set(cfg, cfg.data.train_list, 0, device)
    settings = pretrain_settings(cfg, device, decode)
    fame_cfg = settings.pop("fame_cfg")
    wall = {name: float("inf") for name in ROW_LABELS}
    cpu = {name: [] for name in ROW_LABELS}
    fame_seconds = fame_calls = fame_clips = 0
    memory = {}
    for _ in range(repeats):
        sampler = None
        for name, cut, raw in ROWS:
            # Only the FAME row reads the stage's own timing; its synchronisation would stall the others.
            timer = FameStage(fame_cfg, synchronize_timing=name == "fame") if fame_cfg else None
            loader = stage_loader(videos, cut, timer, settings) if raw else pretrain_loader(
                videos, fame_cfg=fame_cfg, **settings)
            sampler = loader.sampler
            with _nvtx(device, f"profile/{name}"):
                timing = time_batches(endless(loader), steps, dali_warmup, synchronize)
            wall[name] = min(wall[name], timing.wall)
            cpu[name].append(timing.cpu)
            memory[name] = _memory_used_gib(device)
            loader.close()
            if name == "fame" and timer is not None:
                fame_seconds, fame_calls, fame_clips = (fame_seconds + timer.seconds, fame_calls + timer.calls,
                                                        fame_clips + timer.clips)
        with _nvtx(device, "profile/baseline"):
            timing = time_baseline(sampler, fame_cfg, baseline_workers(cfg), steps, baseline_warmup)
        wall["baseline"] = min(wall["baseline"], timing.wall)
        cpu["baseline"].append(timing.cpu)
        gc.collect()

    def row(name):
        return {"stage": name, "seconds_per_batch": wall[name], "clips_per_s": clips_per_batch / wall[name],
                "cpu_seconds_per_batch": statistics.median(cpu[name])}

    rows = [dict(row(name), gpu_memory_gib=memory[name]) for name, _, _ in ROWS]
    baseline_row = row("baseline")
    fame_op = None
    if fame_calls:
        fame_op = {"seconds_per_batch": fame_seconds / fame_calls, "clips_per_s": fame_clips / fame_seconds}
    previous = 0.0
    for row in rows:
        row["stage_seconds_per_batch"] = row["seconds_per_batch"] - previous
        previous = row["seconds_per_batch"]
    decoded, full = rows[0], rows[-1]
    ratios = {"full_vs_decode": full["clips_per_s"] / decoded["clips_per_s"],
              "full_vs_baseline": full["clips_per_s"] / baseline_row["clips_per_s"],
              "full_vs_decode_cpu": _ratio(decoded["cpu_seconds_per_batch"], full["cpu_seconds_per_batch"]),
              "full_vs_baseline_cpu": _ratio(baseline_row["cpu_seconds_per_batch"], full["cpu_seconds_per_batch"])}
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(), "decode": decode,
        "cpu_cores": os.cpu_count(), "num_threads": cfg.train.num_threads, "pipelines": cfg.train.pipelines,
        "baseline_workers": baseline_workers(cfg), "prefetch": cfg.train.prefetch,
        "batch_size": cfg.train.batch_size, "clip": dataclasses.asdict(cfg.clip),
        "fame": C.to_dict(cfg)["fame"], "videos": len(sampler.videos), "steps_per_epoch": len(sampler),
        "steps": steps, "warmup": dali_warmup, "baseline_warmup": baseline_warmup, "repeats": repeats,
        "stages": rows, "fame_op": fame_op, "baseline": baseline_row, "ratios": ratios,
        "data": describe_videos(build_index(data_path(cfg, cfg.data.train_list))),
        "clip_positions": {decoder: {position: dataclasses.asdict(cost) for position, cost in costs.items()}
                           for decoder, costs in clip_costs(videos[:POSITION_BATCHES * cfg.train.batch_size],
                                                            settings["clip"], settings["runtime"],
                                                            cfg.train.batch_size, repeats).items()},
        "targets": {"full_vs_decode": TARGET_VS_DECODE, "full_vs_baseline": TARGET_VS_BASELINE,
                    "met": ratios["full_vs_decode"] >= TARGET_VS_DECODE
                    and ratios["full_vs_baseline"] >= TARGET_VS_BASELINE},
    }


def _ratio(a: float, b: float) -> float:
    """a / b; NaN where b is 0 (a few tiny batches can take less CPU time than the clock's tick)."""
    return a / b if b > 0 else float("nan")


def _table_row(label: str, clips_per_s: float, seconds: float, stage_seconds=None, cpu_seconds=None) -> str:
    stage = f"{1000 * stage_seconds:>10.1f}" if stage_seconds is not None else f"{'':>10}"
    cpu = f"{1000 * cpu_seconds:>11.1f}" if cpu_seconds is not None else ""
    return f"{label:<24}{clips_per_s:>10.1f}{1000 * seconds:>11.1f}{stage}{cpu}"


def format_table(result: dict) -> str:
    rule = "-" * 66
    lines = [f"{'stage':<24}{'clips/s':>10}{'ms/batch':>11}{'stage ms':>10}{'CPU ms':>11}", rule]
    for row in result["stages"]:
        lines.append(_table_row(ROW_LABELS[row["stage"]], row["clips_per_s"], row["seconds_per_batch"],
                                row["stage_seconds_per_batch"], row["cpu_seconds_per_batch"]))
    base = result["baseline"]
    lines.append(_table_row(ROW_LABELS["baseline"], base["clips_per_s"], base["seconds_per_batch"],
                            cpu_seconds=base["cpu_seconds_per_batch"]))
    if result["fame_op"]:
        op = result["fame_op"]
        lines.append(_table_row("FAME python op alone", op["clips_per_s"], op["seconds_per_batch"]))
    r = result["ratios"]
    lines += [rule,
              f"full / decode alone: {r['full_vs_decode']:.2f} by clips/s, {r['full_vs_decode_cpu']:.2f} "
              f"by CPU time (target >= {TARGET_VS_DECODE:.2f})",
              f"full / baseline:     {r['full_vs_baseline']:.2f} by clips/s, {r['full_vs_baseline_cpu']:.2f} "
              f"by CPU time (target >= {TARGET_VS_BASELINE:.2f})",
              f"device {result['device']}, decode on {result['decode']}, "
              f"{result['pipelines']} pipeline(s) x {result['num_threads']} DALI threads"
              f" / {result['baseline_workers']} baseline workers, "
              f"batch {result['batch_size']} videos, best of {result['repeats']} x {result['steps']} batches",
              "", format_costs({decoder: {position: ClipCost(**cost) for position, cost in costs.items()}
                                for decoder, costs in result["clip_positions"].items()}),
              format_description(result["data"])]
    return "\n".join(lines)


def flat_metrics(result: dict) -> dict:
    metrics = {f"profile/{row['stage']}/clips_per_s": row["clips_per_s"] for row in result["stages"]}
    metrics["profile/baseline/clips_per_s"] = result["baseline"]["clips_per_s"]
    if result["fame_op"]:
        metrics["profile/fame_op/clips_per_s"] = result["fame_op"]["clips_per_s"]
    metrics.update({f"profile/ratio/{k}": v for k, v in result["ratios"].items()})
    return metrics


def main(cfg: C.Config, steps: int = DEFAULT_STEPS, warmup: int = DEFAULT_WARMUP,
         repeats: int = DEFAULT_REPEATS) -> str:
    setup_logging()
    device = resolve_device(cfg.device)
    cfg, run_dir = prepare_run_dir(C.with_run_name(cfg, prefix="profile-"))
    ensure_data(cfg)
    result = profile(cfg, device, steps, warmup, repeats)
    path = os.path.join(run_dir, PROFILE_FILE)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(format_table(result))
    print(f"written: {path}")
    logger = open_logger(cfg, run_dir, "profile")
    metrics = flat_metrics(result)
    logger.log(metrics, step=0)
    logger.summary(metrics)
    logger.close()
    return path


if __name__ == "__main__":
    run_command(main, *parse_args())
