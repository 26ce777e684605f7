"""Bad input ends in one `error: ...` line and exit code 2, not a traceback; the hints it gives are true."""
import logging
import os
import subprocess
import sys

import pytest
import torch

from data.index import VideoIndex, VideoRecord, build_index
from engine import checkpoint as ckpt
from engine import config as C
from engine import evaluation as E
from engine.dataset import ensure_data
from engine.errors import (
    DEBUG_ENV,
    EXIT_RUN_FAILED,
    EXIT_USAGE,
    DataError,
    MissingFileError,
    raise_as_data_errors,
    run_command,
)
from engine.loaders import build_pretrain_loader, require_full_batches
from engine.models import make_backbone
from engine.setup import resolve_device
from models.backbones import export_backbone_state
from pipelines.videos import videos_from_index
from studies import probe as P

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
HINT = f" ({DEBUG_ENV}=1 shows the traceback)"
TINY_CLASSES = 4


def tiny(tmp_path, *overrides):
    return C.load_config(TINY, [f"run.dir={tmp_path}", "run.name=t", *overrides])


def own_data(root, train=(("a.webm", 0), ("b.webm", 1)), test=(("c.webm", 0),)):
    """A data.root of the user's own: the two configured lists, no spec.json (the videos need not exist)."""
    os.makedirs(root, exist_ok=True)
    for name, entries in (("trainlist.txt", train), ("testlist.txt", test)):
        with open(os.path.join(root, name), "w") as f:
            f.writelines(f"{path} {label}\n" for path, label in entries)
    return str(root)


@pytest.fixture
def plain_env(monkeypatch):
    """No debug switch, a process launched alone."""
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    monkeypatch.delenv("RANK", raising=False)


def exit_of(capsys, main, *args):
    """(exit code, stderr) of run_command(main, *args)."""
    with pytest.raises(SystemExit) as stopped:
        run_command(main, *args)
    return stopped.value.code, capsys.readouterr().err


def fail_with(error):
    def main():
        raise error
    return main


# ------------------------------------------------------------ the wrapper ----
@pytest.mark.parametrize("error", [DataError("trainlist.txt: 2 of 3 videos are unusable"),
                                   MissingFileError("config key 'pretrained': 'x.pt' does not exist"),
                                   C.ConfigError("config key 'train.lr': must be > 0")])
def test_bad_input_prints_one_error_line_and_exits_2(plain_env, capsys, error):
    code, err = exit_of(capsys, fail_with(error))
    assert code == EXIT_USAGE == 2
    assert err == f"error: {error}{HINT}\n"


def test_a_non_finite_loss_stops_cleanly_with_exit_1(plain_env, capsys):
    code, err = exit_of(capsys, fail_with(ckpt.NonFiniteLoss("non-finite loss nan at step 2")))
    assert code == EXIT_RUN_FAILED == 1
    assert err == f"error: non-finite loss nan at step 2{HINT}\n"


def test_a_bug_keeps_its_traceback(plain_env):
    with pytest.raises(KeyError, match="bug"):
        run_command(fail_with(KeyError("bug")))
    with pytest.raises(ValueError, match="plain"):          # not bad input: a plain ValueError is a bug
        run_command(fail_with(ValueError("plain")))


def test_the_debug_switch_shows_the_traceback(plain_env, monkeypatch):
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(DataError, match="unusable"):
        run_command(fail_with(DataError("unusable")))


def test_only_rank_0_prints_the_error(plain_env, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "1")
    assert exit_of(capsys, fail_with(DataError("bad list"))) == (EXIT_USAGE, "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_gpu_run_without_a_gpu_is_a_config_error(plain_env, capsys):
    code, err = exit_of(capsys, resolve_device, "gpu")
    assert code == EXIT_USAGE and err.startswith("error: config key 'device' is 'gpu' but no CUDA GPU is visible")


def test_the_result_of_main_is_returned(plain_env):
    assert run_command(lambda a, b: a + b, 2, 3) == 5


def test_data_errors_keep_the_built_in_types_they_refine():
    with pytest.raises(DataError, match="^list.txt: bad$") as caught:
        with raise_as_data_errors("list.txt: "):
            raise ValueError("bad")
    assert isinstance(caught.value, ValueError)
    with pytest.raises(MissingFileError, match="file list not found") as missing:
        with raise_as_data_errors():
            raise FileNotFoundError("file list not found: x.txt")
    assert isinstance(missing.value, FileNotFoundError)


# ------------------------------------------------------- from the command line ----
def run_pretrain(tmp_path, data_root):
    env = {key: value for key, value in os.environ.items() if key not in (DEBUG_ENV, "RANK")}
    return subprocess.run([sys.executable, "-m", "runners.pretrain", "--config", TINY, f"data.root={data_root}",
                           f"run.dir={tmp_path / 'runs'}"], cwd=ROOT, capture_output=True, text=True, env=env)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pretraining_on_bad_data_ends_in_one_error_line(tmp_path):
    """Own data (lists, no spec.json) with a label outside [0, 4), then with missing videos:
    exit 2, `error: ...` naming the list and the entries, no traceback, no WARNING saying it first."""
    labels = run_pretrain(tmp_path, own_data(tmp_path / "labels", train=[("a.webm", 0), ("b.webm", 7)]))
    assert labels.returncode == EXIT_USAGE, labels.stderr
    assert ("error: config key 'data.train_list' / 'data.num_classes': " in labels.stderr
            and "1 entries have labels outside [0, 3] for num_classes=4; first: entry 2 'b.webm' label 7"
            in labels.stderr)
    assert "data.synthetic is ignored" in labels.stderr and "Traceback" not in labels.stderr

    missing = run_pretrain(tmp_path, own_data(tmp_path / "missing"))
    assert missing.returncode == EXIT_USAGE, missing.stderr
    assert "error: " in missing.stderr and "2 of 2 videos are unusable: a.webm (missing), b.webm (missing)" \
        in missing.stderr
    assert "Traceback" not in missing.stderr and "WARNING" not in missing.stderr


# ------------------------------------------------------- the data's checks ----
class NoFullBatch:
    """A training loader of ``num_videos`` videos with no full batch on this rank."""

    def __init__(self, num_videos):
        self.num_videos = num_videos

    def __len__(self):
        return 0


def test_an_epoch_without_a_full_batch_names_the_key():
    with pytest.raises(ValueError, match="config key 'eval.batch_size' \\(64\\) x 2 process\\(es\\).*'list.txt'"):
        require_full_batches(NoFullBatch(5), "eval.batch_size", 64, 2, "list.txt")


def test_no_full_batch_names_the_videos_per_rank_and_the_largest_batch_that_works():
    with pytest.raises(DataError, match="each rank has 2 of the 5 usable videos, so set eval.batch_size "
                                        "to at most 2$"):
        require_full_batches(NoFullBatch(5), "eval.batch_size", 4, 2, "list.txt")
    with pytest.raises(DataError, match="each rank has 0 of the 3 usable videos, so list at least 4 usable "
                                        "videos or run fewer processes$"):
        require_full_batches(NoFullBatch(3), "train.batch_size", 1, 4, "list.txt")


def test_pretraining_refuses_labels_outside_the_classes(tmp_path):
    root = own_data(tmp_path / "own", train=[("a.webm", 0), ("b.webm", 1), ("c.webm", 9)])
    with pytest.raises(DataError, match=f"config key 'data.train_list' / 'data.num_classes': "
                                        f"{root}/trainlist.txt: 1 entries have labels outside \\[0, 3\\] "
                                        f"for num_classes=4; first: entry 3 'c.webm' label 9"):
        build_pretrain_loader(tiny(tmp_path, f"data.root={root}"))


def test_a_missing_list_is_a_missing_file(tmp_path):
    with pytest.raises(MissingFileError, match="config key 'data.train_list': file list '.*nope.txt' does not "
                                               "exist \\(data.root"):
        build_pretrain_loader(tiny(tmp_path, f"data.root={tmp_path}", "data.train_list=nope.txt"))


def test_an_unusable_video_is_named_once_by_the_error_not_first_by_a_warning(tmp_path, caplog):
    root = own_data(tmp_path / "own")
    with caplog.at_level(logging.WARNING):
        index = build_index(os.path.join(root, "trainlist.txt"), cache=False)
        with pytest.raises(ValueError, match="2 of 2 videos are unusable: a.webm \\(missing\\), b.webm"):
            index.require_ok()
        with pytest.raises(ValueError, match="no usable video left .*: a.webm \\(missing\\), b.webm \\(missing\\)"):
            videos_from_index(index, min_frames=1, device="cpu", skip_bad=True)
    assert not caplog.records


def test_skipped_videos_are_still_warned_about_when_some_are_left(tmp_path, caplog):
    good = VideoRecord("/v/good.webm", "good.webm", 0, codec="vp9", frames=8, width=64, height=48, ok=True)
    bad = VideoRecord("/v/bad.webm", "bad.webm", 1, reason="missing")
    with caplog.at_level(logging.WARNING):
        kept = videos_from_index(VideoIndex("list.txt", [good, bad]), min_frames=1, device="cpu", skip_bad=True)
    assert [v.path for v in kept] == ["/v/good.webm"] and "bad.webm (missing)" in caplog.text


# ------------------------------------------------------------ pretrained ----
def test_pretrained_may_be_a_run_directory_with_a_backbone(tmp_path):
    cfg = tiny(tmp_path)
    run_dir = tmp_path / "pretrain-run"
    run_dir.mkdir()
    backbone_pt = str(run_dir / E.BACKBONE_FILE)
    ckpt.save_atomic(export_backbone_state(make_backbone(cfg)), backbone_pt)
    with_dir = tiny(tmp_path, f"pretrained={run_dir}")
    E.check_pretrained_path(with_dir)
    info = E.load_pretrained_backbone(make_backbone(cfg), with_dir)
    assert info["path"] == backbone_pt and info["format"] == "backbone"


def test_a_run_directory_without_a_backbone_says_what_to_pass(tmp_path):
    empty = tmp_path / "unfinished"
    empty.mkdir()
    with pytest.raises(MissingFileError, match=f"config key 'pretrained': '{empty}' is a directory; "
                                               f"pass {empty}/backbone.pt"):
        E.check_pretrained_path(tiny(tmp_path, f"pretrained={empty}"))


@pytest.mark.parametrize("content, message", [(b"not a checkpoint", "cannot be read"),
                                              (None, "neither a backbone state_dict")])
def test_a_bad_pretrained_file_is_a_data_error(plain_env, capsys, tmp_path, content, message):
    path = tmp_path / "weights.pt"
    if content is None:
        torch.save({"epoch": 3}, path)
    else:
        path.write_bytes(content)
    cfg = tiny(tmp_path, f"pretrained={path}")
    code, err = exit_of(capsys, E.load_pretrained_backbone, make_backbone(cfg), cfg)
    assert code == EXIT_USAGE and err.startswith("error: ") and message in err


def test_a_probe_error_is_reported_as_bad_input(plain_env, capsys, tmp_path):
    code, err = exit_of(capsys, P.classifier_files, str(tmp_path / "nope"))
    assert code == EXIT_USAGE and err.startswith(f"error: --run {tmp_path}/nope: not a directory")


# ------------------------------------------------------ synthetic or own data ----
def test_own_data_under_a_synthetic_config_is_used_as_it_is(tmp_path, caplog):
    root = own_data(tmp_path / "own", train=[("a.webm", 4)])
    cfg = tiny(tmp_path, f"data.root={root}", "data.num_classes=5")    # 5 classes; the generator's 4 do not matter
    with caplog.at_level(logging.INFO, logger="fame"):
        ensure_data(cfg)
    assert sorted(os.listdir(root)) == ["testlist.txt", "trainlist.txt"]
    assert f"data.synthetic is ignored: data.root '{root}' holds the configured lists and no spec.json" in caplog.text


def test_synthetic_class_count_must_agree_where_data_is_generated(tmp_path):
    cfg = tiny(tmp_path, f"data.root={tmp_path / 'new'}", "data.num_classes=5")
    with pytest.raises(C.ConfigError, match="data.synthetic.num_classes.*set data.synthetic=null"):
        ensure_data(cfg)
    assert not os.path.exists(tmp_path / "new")


def test_other_data_without_the_configured_lists_is_refused_naming_the_override(tmp_path):
    root = own_data(tmp_path / "other")
    cfg = tiny(tmp_path, f"data.root={root}", "data.train_list=mine.txt")
    with pytest.raises(DataError, match="config key 'data.synthetic': .*no spec.json: not a synthetic dataset, "
                                        "refusing to overwrite; to use the data there, set data.synthetic=null"):
        ensure_data(cfg)
    assert sorted(os.listdir(root)) == ["testlist.txt", "trainlist.txt"]
