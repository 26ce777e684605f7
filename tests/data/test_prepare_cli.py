"""python -m runners.prepare: the subcommands end to end on tiny inputs."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.filelist import read_class_names, read_file_list
from data.index import build_index
from data.transcode import DEFAULT_GOP
from data.video_io import write_video
from runners.prepare import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_synthetic_then_index_then_up_to_date(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["synthetic", "--out", str(out), "--num-classes", "3", "--videos-per-class", "2",
                 "--seed", "3"]) == 0
    assert "generated in" in capsys.readouterr().out
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert (spec["num_classes"], spec["videos_per_class_train"], spec["videos_per_class_test"]) == (3, 2, 1)
    assert len(read_file_list(out / "trainlist.txt")) == 6 and len(read_file_list(out / "testlist.txt")) == 3
    assert main(["index", "--list", str(out / "trainlist.txt"), "--min-frames", "16"]) == 0
    assert "all 6 videos usable on cpu" in capsys.readouterr().out
    assert main(["synthetic", "--out", str(out), "--num-classes", "3", "--videos-per-class", "2",
                 "--seed", "3"]) == 0
    assert "already up to date" in capsys.readouterr().out


def test_errors_exit_nonzero_with_the_message(tmp_path, capsys):
    assert main(["synthetic", "--out", str(tmp_path), "--num-classes", "99"]) == 2
    assert "SyntheticSpec.num_classes: 99 is outside" in capsys.readouterr().err
    assert main(["ucf101", "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "classInd.txt not found" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("gone.webm 0\n")
    assert main(["index", "--list", str(tmp_path / "list.txt")]) == 2
    assert "gone.webm (missing)" in capsys.readouterr().err


def test_module_entry_point_runs(tmp_path):
    root = tmp_path / "diving"
    (root / "rgb").mkdir(parents=True)
    (root / "Diving48_V2_train.json").write_text(json.dumps([{"vid_name": "a", "label": 0}]))
    (root / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "b", "label": 0}]))
    (root / "rgb" / "a.mp4").write_bytes(b"x")
    result = subprocess.run([sys.executable, "-m", "runners.prepare", "diving48", "--root", str(root),
                             "--out", str(tmp_path / "out")], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "train: 1 videos" in result.stdout and "test: 0 videos" in result.stdout
    assert "1 missing, left out" in result.stdout and "b.mp4" in result.stderr
    strict = subprocess.run([sys.executable, "-m", "runners.prepare", "diving48", "--root", str(root),
                             "--out", str(tmp_path / "out2"), "--strict"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert strict.returncode == 2 and "1 listed videos are missing" in strict.stderr


def test_synthetic_from_a_config_with_overrides(tmp_path, capsys):
    out = tmp_path / "from_config"
    overrides = ["data.num_classes=2", "data.synthetic.num_classes=2", "data.synthetic.videos_per_class_train=1",
                 "data.synthetic.videos_per_class_test=1", "data.synthetic.seed=5"]
    config = str(REPO_ROOT / "configs" / "synthetic_tiny.yaml")
    assert main(["synthetic", "--config", config, "--out", str(out), "--workers", "1", *overrides]) == 0
    spec = json.loads((out / "spec.json").read_text())["spec"]
    assert (spec["num_classes"], spec["videos_per_class_train"], spec["seed"]) == (2, 1, 5)
    assert main(["synthetic", "--config", config, "--out", str(out), "--seed", "1"]) == 2
    assert "data.synthetic.* overrides" in capsys.readouterr().err
    assert main(["synthetic", "--out", str(out), "data.seed=1"]) == 2
    assert "overrides need --config" in capsys.readouterr().err


FOLDER_FRAMES, FOLDER_HEIGHT, FOLDER_WIDTH, FOLDER_FPS, FOLDER_GOP = 6, 32, 48, 25, 4


def _video(path, codec, shade):
    frames = np.full((FOLDER_FRAMES, FOLDER_HEIGHT, FOLDER_WIDTH, 3), shade, np.uint8)
    frames[:, :, : FOLDER_WIDTH // 2] = np.arange(FOLDER_FRAMES, dtype=np.uint8)[:, None, None, None] * 30
    write_video(path, frames, FOLDER_FPS, codec, FOLDER_GOP)


@pytest.fixture
def class_folders(tmp_path):
    """videos/walk: three MJPEG .avi and a broken .mp4; videos/run: two H.264 .mp4; a note."""
    root = tmp_path / "videos"
    for n in range(3):
        _video(root / "walk" / f"walk {n}.avi", "mjpeg", 40 * n)
    for n in range(2):
        _video(root / "run" / f"run{n}.mp4", "h264", 50 + 40 * n)
    (root / "walk" / "broken.mp4").write_bytes(b"\x00" * 100)
    (root / "walk" / "notes.txt").write_text("not a video")
    return root


def _listed(list_path):
    return [(entry.relpath, entry.label) for entry in read_file_list(list_path)]


def test_folder_lists_every_class_in_both_splits_and_names_the_unusable(class_folders, tmp_path, capsys):
    out = tmp_path / "lists"
    assert main(["folder", "--root", str(class_folders), "--out", str(out), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert read_class_names(out / "classInd.txt") == ["run", "walk"]
    assert (out / "classInd.txt").read_text() == "1 run\n2 walk\n"
    train, test = _listed(out / "trainlist.txt"), _listed(out / "testlist.txt")
    assert {label for _, label in train} == {label for _, label in test} == {0, 1}
    assert sorted(train + test) == sorted([(f"../videos/run/run{n}.mp4", 0) for n in range(2)]
                                          + [(f"../videos/walk/walk {n}.avi", 1) for n in range(3)])
    assert "1 unusable, left out: walk/broken.mp4 (" in printed
    assert "walk/notes.txt (not a video by its extension)" in printed
    assert "h264 decode only on a GPU" in printed and "--transcode vp9" in printed
    assert main(["folder", "--root", str(class_folders), "--out", str(tmp_path / "again")]) == 0
    assert _listed(tmp_path / "again" / "testlist.txt") == test    # the same split for the same seed


def test_folder_transcode_writes_cpu_copies_beside_the_lists(class_folders, tmp_path, capsys):
    out = tmp_path / "lists"
    assert main(["folder", "--root", str(class_folders), "--out", str(out), "--transcode", "vp9",
                 "--seed", "3", "--workers", "1"]) == 0
    assert "lists of the copies" in capsys.readouterr().out
    sources = _listed(out / "source" / "trainlist.txt") + _listed(out / "source" / "testlist.txt")
    copies = _listed(out / "trainlist.txt") + _listed(out / "testlist.txt")
    assert [(rel.split("videos/", 1)[1].rsplit(".", 1)[0] + ".webm", label) for rel, label in sources] == copies
    assert read_class_names(out / "classInd.txt") == ["run", "walk"]
    for name in ("trainlist.txt", "testlist.txt"):
        index = build_index(out / name).require_ok(device="cpu", min_frames=FOLDER_FRAMES)
        assert {record.codec for record in index.entries} == {"vp9"}
    assert main(["folder", "--root", str(class_folders), "--out", str(out), "--transcode", "vp9",
                 "--seed", "3", "--workers", "1"]) == 0
    assert "0 transcoded, " in capsys.readouterr().out


def test_folder_without_class_folders_is_for_pretraining_only(tmp_path, capsys):
    root = tmp_path / "clips"
    for n in range(2):
        _video(root / f"clip{n}.avi", "mjpeg", 60 * n)
    out = tmp_path / "lists"
    assert main(["folder", "--root", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert _listed(out / "trainlist.txt") == [("../clips/clip0.avi", 0), ("../clips/clip1.avi", 0)]
    assert not (out / "testlist.txt").exists() and not (out / "classInd.txt").exists()
    assert "label 0, for pretraining only" in printed and "linear probe needs one folder per class" in printed


def test_folder_transcode_into_the_root_is_refused(class_folders, capsys):
    assert main(["folder", "--root", str(class_folders), "--out", str(class_folders / "lists"),
                 "--transcode", "vp9"]) == 2
    assert "lies inside --root" in capsys.readouterr().err
    assert not (class_folders / "lists").exists()


@pytest.fixture
def h264_lists(tmp_path):
    """videos/<class>/*.mp4 (H.264: DALI's CPU decoder refuses it) in lists/trainlist.txt and testlist.txt."""
    videos, lists = tmp_path / "videos", tmp_path / "lists"
    for name, shade in (("walk/a.mp4", 40), ("walk/b.mp4", 80), ("run/c.mp4", 120), ("run/d.mp4", 160)):
        _video(videos / name, "h264", shade)
    (lists).mkdir()
    (lists / "trainlist.txt").write_text("../videos/walk/a.mp4 0\n../videos/run/c.mp4 1\n")
    (lists / "testlist.txt").write_text("../videos/walk/b.mp4 0\n../videos/run/d.mp4 1\n")
    return lists


def _printed_transcode_command(message):
    """The command between backticks that a video index error prints for re-encoding."""
    commands = re.findall(r"`([^`]*runners\.prepare transcode[^`]*)`", message)
    assert len(commands) == 1, message
    return commands[0]


@pytest.mark.skipif(not (REPO_ROOT / ".venv" / "bin" / "python").exists(),
                    reason="the printed command runs the project's .venv")
def test_the_printed_transcode_command_works_as_printed(h264_lists, capsys):
    assert main(["index", "--list", str(h264_lists / "testlist.txt")]) == 2
    command = _printed_transcode_command(capsys.readouterr().err)
    out = h264_lists / "vp9"
    assert command == (f".venv/bin/python -m runners.prepare transcode --list {h264_lists / 'trainlist.txt'} "
                       f"{h264_lists / 'testlist.txt'} --out {out} --codec vp9")
    result = subprocess.run(command, shell=True, cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"train on the copies with: data.root={out}"
    assert f"keyframes: one every {DEFAULT_GOP} frames (measured: docs/benchmarks.md" in result.stdout
    assert _listed(out / "trainlist.txt") == [("walk/a.webm", 0), ("run/c.webm", 1)]
    assert _listed(out / "testlist.txt") == [("walk/b.webm", 0), ("run/d.webm", 1)]
    for name in ("trainlist.txt", "testlist.txt"):
        assert main(["index", "--list", str(out / name), "--min-frames", str(FOLDER_FRAMES)]) == 0
        assert {record.codec for record in build_index(out / name).entries} == {"vp9"}


def test_transcode_exits_2_naming_a_truncated_source(h264_lists, capsys):
    videos = h264_lists.parent / "videos"
    data = (videos / "run" / "c.mp4").read_bytes()
    (videos / "run" / "c.mp4").write_bytes(data[: len(data) // 2])
    out = h264_lists.parent / "copies"
    argv = ["transcode", "--list", str(h264_lists / "trainlist.txt"), str(h264_lists / "testlist.txt"),
            "--out", str(out), "--workers", "1"]
    assert main(argv) == 2
    printed = capsys.readouterr()
    assert "error: 1 videos could not be transcoded and were left out of the new lists: " in printed.err
    assert f"{videos / 'run' / 'c.mp4'}: " in printed.err and "data.root" not in printed.out
    assert _listed(out / "trainlist.txt") == [("walk/a.webm", 0)]


def test_transcode_names_list_keys_that_are_not_the_defaults(h264_lists, capsys):
    (h264_lists / "trainlist.txt").rename(h264_lists / "train.txt")
    (h264_lists / "testlist.txt").rename(h264_lists / "val.txt")
    out = h264_lists.parent / "my copies"
    assert main(["transcode", "--list", str(h264_lists / "train.txt"), str(h264_lists / "val.txt"),
                 "--out", str(out), "--workers", "1"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"train on the copies with: data.root='{out}' data.train_list=train.txt data.val_list=val.txt"


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_help_lists_the_data_targets_and_they_run_the_commands():
    listed = subprocess.run(["make", "help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("prepare", "folder", "transcode", "index", "data-synth"):
        assert f"  make {target} " in listed
    expected = {("transcode", "LISTS=a.txt b.txt", "OUT=o"): "-m runners.prepare transcode --list a.txt b.txt --out o",
                ("index", "LIST=a.txt", "ARGS=--device gpu"): "-m runners.prepare index --list a.txt --device gpu",
                ("prepare", "ARGS=ucf101 --root r --out o", ""): "-m runners.prepare ucf101 --root r --out o"}
    for arguments, command in expected.items():
        dry_run = subprocess.run(["make", "--no-print-directory", "-n", *filter(None, arguments)], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout
        assert dry_run.splitlines()[-1].rstrip().endswith(command)
