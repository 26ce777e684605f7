"""End to end retrieval on the tiny synthetic set: R@k, k beyond the gallery, the feature cache, MoCo checkpoints."""
import json
import os

import pytest
import torch

from data.filelist import read_file_list
from engine import evaluation as E
from tests.runners.test_classify import ROOT, pretrained_run, tiny

TRAIN_VIDEOS, TEST_VIDEOS = 16, 8


@pytest.fixture
def pretrained(tmp_path_factory, tiny_data_root):
    return pretrained_run(tmp_path_factory, tiny_data_root)


def test_retrieval_reports_recall_and_reuses_cached_features(tmp_path, tiny_data_root, pretrained, monkeypatch):
    import runners.retrieve as R
    backbone_pt = os.path.join(pretrained, "backbone.pt")
    record = R.main(tiny(tmp_path, tiny_data_root, "run.name=ret", f"pretrained={backbone_pt}", "eval.ks=[1,5,100]"))
    metrics = record["metrics"]
    assert (metrics["queries"], metrics["gallery"]) == (TEST_VIDEOS, TRAIN_VIDEOS)
    assert metrics["R@1"] <= metrics["R@5"] <= metrics["R@100"] == 100.0       # k=100 capped at 16
    run_dir = tmp_path / "ret"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["protocol"] == "retrieval" and saved["pretrained"]["sha256"] == E.file_sha256(backbone_pt)

    cached = {split: torch.load(run_dir / f"features_{split}.pt", weights_only=False) for split in ("train", "test")}
    assert cached["train"]["features"].shape[0] == TRAIN_VIDEOS
    assert torch.allclose(cached["test"]["features"].norm(dim=1), torch.ones(TEST_VIDEOS))
    expected = E.retrieval_recall(cached["test"]["features"], cached["test"]["labels"], cached["train"]["features"],
                                  cached["train"]["labels"], [1, 2, 3])

    def no_loader(*args, **kwargs):
        raise AssertionError("features should have come from the cache")
    monkeypatch.setattr(R, "build_test_clips_loader", no_loader)
    again = R.main(tiny(tmp_path, tiny_data_root, "run.name=ret", f"pretrained={backbone_pt}", "eval.ks=[1,2,3]"))
    assert {k: again["metrics"][k] for k in expected} == pytest.approx(expected)
    assert again["metrics"]["R@1"] == metrics["R@1"]
    monkeypatch.undo()

    # the MoCo checkpoint of the same run holds the same backbone: other hash, so extracted again, same recall
    last_pt = os.path.join(pretrained, "checkpoints", "last.pt")
    moco = R.main(tiny(tmp_path, tiny_data_root, "run.name=ret", f"pretrained={last_pt}", "eval.ks=[1,2,3]"))
    assert moco["pretrained"]["format"] == "moco" and moco["pretrained"]["sha256"] != saved["pretrained"]["sha256"]
    assert moco["metrics"] == pytest.approx(again["metrics"])
    refreshed = torch.load(run_dir / "features_test.pt", weights_only=False)
    assert refreshed["key"]["pretrained_sha256"] == E.file_sha256(last_pt)
    assert torch.allclose(refreshed["features"], cached["test"]["features"], atol=1e-5)


def test_feature_cache_key_follows_the_videos_device_and_autocast(tmp_path, tiny_data_root):
    """The same list over a replaced video, another device or another autocast dtype needs new features."""
    import shutil

    import runners.retrieve as R
    data = tmp_path / "data"
    shutil.copytree(tiny_data_root, data)
    cfg = tiny(tmp_path, str(data))
    pretrained = {"sha256": None, "init": "random"}
    cpu = torch.device("cpu")
    key = R.feature_cache_key(cfg, pretrained, cfg.data.val_list, cpu, None)
    assert R.feature_cache_key(cfg, pretrained, cfg.data.val_list, cpu, None) == key
    assert R.feature_cache_key(cfg, pretrained, cfg.data.val_list, torch.device("meta"), None) != key
    assert R.feature_cache_key(cfg, pretrained, cfg.data.val_list, cpu, torch.bfloat16) != key
    video = read_file_list(os.path.join(data, cfg.data.val_list))[0].path
    with open(video, "ab") as f:                         # the file changes, the list does not
        f.write(b"\0")
    assert R.feature_cache_key(cfg, pretrained, cfg.data.val_list, cpu, None) != key


def test_retrieval_rejects_a_missing_checkpoint(tmp_path, tiny_data_root):
    import runners.retrieve as R
    with pytest.raises(FileNotFoundError, match="config key 'pretrained'"):
        R.main(tiny(tmp_path, tiny_data_root, "run.name=r", f"pretrained={tmp_path}/none.pt"))


def test_tiny_retrieval_config_runs(tmp_path, tiny_data_root, pretrained):
    import runners.retrieve as R
    config = os.path.join(ROOT, "configs", "ucf101_r21d_retrieval_tiny.yaml")
    record = R.main(tiny(tmp_path, tiny_data_root, "run.name=t", f"pretrained={pretrained}/backbone.pt", config=config))
    assert set(record["metrics"]) == {"R@1", "R@5", "R@10", "queries", "gallery"}
