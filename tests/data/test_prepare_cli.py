"""python -m runners.prepare: the subcommands end to end on tiny inputs."""

import json
import subprocess
import sys
from pathlib import Path

from data.filelist import read_file_list
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
    assert "num_classes=99" in capsys.readouterr().err
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
