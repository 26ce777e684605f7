"""End to end on the tiny synthetic set: linear probe, finetune, resume, the real test-clips loader, bad inputs."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from data.filelist import read_file_list
from engine import config as C
from engine import evaluation as E
from engine.loaders import build_test_clips_loader
from engine.logger import read_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
CHANCE = 100.0 / 4
WELL_ABOVE_CHANCE = 60.0
PRETRAIN_EPOCHS = 3
LINEAR_EPOCHS = 30
LINEAR_LR = 1.0
WORLD = 2


def tiny(tmp_path, data_root, *overrides, config=TINY):
    return C.load_config(config, [f"data.root={data_root}", f"run.dir={tmp_path}", *overrides])


def pretrained_run(tmp_path_factory, data_root) -> str:
    """A tiny MoCo pretraining run (made once per session, shared by the runner tests); its directory.

    FAME itself is off (fame.variant=none): these tests are about the downstream runners.
    """
    run_dir = os.path.join(str(tmp_path_factory.getbasetemp()), "eval_pretrain", "pre")
    if not os.path.isfile(os.path.join(run_dir, "backbone.pt")):
        from runners.pretrain import main
        main(tiny(os.path.dirname(run_dir), data_root, "run.name=pre", f"train.epochs={PRETRAIN_EPOCHS}",
                  "fame.variant=none"))
    return run_dir


@pytest.fixture
def pretrained(tmp_path_factory, tiny_data_root):
    return pretrained_run(tmp_path_factory, tiny_data_root)


def test_linear_probe_beats_chance_and_leaves_the_backbone_untouched(tmp_path, tiny_data_root, pretrained):
    from runners.classify import main
    backbone_pt = os.path.join(pretrained, "backbone.pt")
    # tested on the training videos (10-clip protocol): the tiny test split is small and background-debiased
    record = main(tiny(tmp_path, tiny_data_root, "run.name=lin", f"pretrained={backbone_pt}", "eval.protocol=linear",
                       f"eval.epochs={LINEAR_EPOCHS}", f"eval.lr={LINEAR_LR}", "data.val_list=trainlist.txt"))
    assert record["metrics"]["video_top1"] >= WELL_ABOVE_CHANCE > CHANCE
    run_dir = tmp_path / "lin"
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["protocol"] == "linear" and saved["dataset"] == os.path.basename(tiny_data_root)
    assert saved["pretrained"] == {"path": backbone_pt, "sha256": E.file_sha256(backbone_pt), "init": "pretrained",
                                   "format": "backbone"}
    assert {"video_top1", "video_top5", "clip_top1"} <= set(saved["metrics"])
    assert saved["metrics"]["videos"] == 16 and saved["metrics"]["clips"] == 16 * 2
    losses = [r["train/loss"] for r in read_metrics(str(run_dir)) if "train/loss" in r]
    assert len(losses) == LINEAR_EPOCHS * 4 and sum(losses[-4:]) < sum(losses[:4])
    after = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    before = torch.load(backbone_pt)
    for key, value in before.items():                 # weights and BN running statistics
        assert torch.equal(after[f"backbone.{key}"], value), key


@pytest.mark.parametrize("recipe", [[], ["eval.optimizer=adamw", "eval.lr=0.001", "model.pool=max"]],
                         ids=["sgd-avg", "adamw-max"])
def test_finetune_from_random_init_resumes_exactly(tmp_path, tiny_data_root, recipe):
    from runners.classify import main
    common = ["eval.protocol=finetune", "eval.epochs=2", "eval.dropout=0.5", *recipe]
    record = main(tiny(tmp_path, tiny_data_root, "run.name=ref", *common))
    assert record["pretrained"] == {"path": None, "sha256": None, "init": "random"}
    ref = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=False)
    first = torch.load(tmp_path / "ref" / "checkpoints" / "epoch_0001.pt", weights_only=False)
    first_conv = "backbone.blocks.0.conv.weight"
    assert not torch.equal(ref["model"][first_conv], first["model"][first_conv])
    resumed = main(tiny(tmp_path, tiny_data_root, "run.name=resumed", *common,
                        f"train.resume={tmp_path / 'ref' / 'checkpoints' / 'epoch_0001.pt'}"))
    again = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert again["step"] == ref["step"] == 8
    for key, value in ref["model"].items():
        assert torch.equal(again["model"][key], value), key
    assert resumed["metrics"] == record["metrics"]
    with pytest.raises(ValueError, match="cannot resume .*config key 'eval.protocol' was 'finetune', now 'linear'"):
        main(tiny(tmp_path, tiny_data_root, "run.name=ref", "eval.protocol=linear", "eval.epochs=2"))
    assert C.load_config(str(tmp_path / "ref" / "config.yaml")).eval.protocol == "finetune"   # left as it was


def test_test_clips_take_their_centre_crop_from_the_config(tiny_data_root):
    from pipelines.sampler import DEFAULT_CENTRE_FRACTION
    default = build_test_clips_loader(tiny("unused", tiny_data_root), "testlist.txt", 0, 1, torch.device("cpu"))
    assert default.sampler.centre_fraction == DEFAULT_CENTRE_FRACTION == C.ClipConfig.test_centre_fraction
    whole = tiny("unused", tiny_data_root, "clip.test_centre_fraction=1.0")
    assert build_test_clips_loader(whole, "testlist.txt", 0, 1, torch.device("cpu")).sampler.centre_fraction == 1.0


def test_test_clips_loader_covers_every_video_once_across_shards(tiny_data_root):
    cfg = tiny("unused", tiny_data_root, "eval.clips_per_video=3", "eval.batch_size=9")   # 3 videos a batch
    seen = []
    for rank in range(WORLD):
        loader = build_test_clips_loader(cfg, cfg.data.val_list, rank, WORLD, torch.device("cpu"))
        batches = list(loader)
        assert [b.clips.shape[0] for b in batches] == [9, 3]        # 4 videos per rank: the last batch partial
        assert batches[0].clips.shape[1:] == (3, cfg.clip.frames, cfg.clip.crop, cfg.clip.crop)
        seen += [(int(v), int(label)) for b in batches for v, label in zip(b.video_index, b.label, strict=True)]
    assert loader.num_videos == 8
    listed = read_file_list(os.path.join(tiny_data_root, cfg.data.val_list))
    assert sorted(seen) == sorted((i, e.label) for i, e in enumerate(listed) for _ in range(3))


class MeanColour(torch.nn.Module):
    """A fixed 'backbone' on real clips: per-channel mean and std over time and space."""
    feat_dim = 6

    def forward(self, x):
        return torch.cat([x.mean(dim=(2, 3, 4)), x.std(dim=(2, 3, 4))], dim=1)


def _sharded_features(rank, init_file, cfg, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        loader = build_test_clips_loader(cfg, cfg.data.val_list, rank, WORLD, torch.device("cpu"))
        features, labels = E.extract_video_features(MeanColour(), loader, loader.num_videos,
                                                    cfg.eval.clips_per_video, torch.device("cpu"))
        if rank == 0:
            torch.save({"features": features, "labels": labels}, out)
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_test_clips_match_one_process(tmp_path, tiny_data_root):
    cfg = tiny(tmp_path, tiny_data_root, "eval.clips_per_video=3", "eval.batch_size=9")
    out = str(tmp_path / "sharded.pt")
    mp.spawn(_sharded_features, args=(str(tmp_path / "init"), cfg, out), nprocs=WORLD, join=True)
    loader = build_test_clips_loader(cfg, cfg.data.val_list, 0, 1, torch.device("cpu"))
    features, labels = E.extract_video_features(MeanColour(), loader, 8, 3, torch.device("cpu"))
    sharded = torch.load(out)
    assert torch.allclose(sharded["features"], features, atol=1e-6)
    assert torch.equal(sharded["labels"], labels)


def _distributed_classify(rank, port, cfg):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    from runners.classify import main
    main(cfg)


@pytest.mark.slow
def test_two_process_finetune_evaluates_like_one_process(tmp_path, tiny_data_root, pretrained):
    from runners.classify import build_classifier
    cfg = tiny(tmp_path, tiny_data_root, "run.name=ddp", "eval.protocol=finetune", "eval.epochs=1",
               "eval.clips_per_video=3", f"pretrained={pretrained}/backbone.pt")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distributed_classify, args=(port, cfg), nprocs=WORLD, join=True)
    metrics = json.loads((tmp_path / "ddp" / "results.json").read_text())["metrics"]
    assert (metrics["videos"], metrics["clips"]) == (8, 8 * 3)
    model, _ = build_classifier(cfg, torch.device("cpu"))
    model.load_state_dict(torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=False)["model"])
    loader = build_test_clips_loader(cfg, cfg.data.val_list, 0, 1, torch.device("cpu"))
    single = E.evaluate_classifier(model, loader, 8, cfg.data.num_classes, 3, torch.device("cpu"))
    assert metrics == pytest.approx(single)


def test_bad_inputs_fail_before_training(tmp_path, tiny_data_root, pretrained):
    from runners.classify import main
    with pytest.raises(FileNotFoundError, match="config key 'pretrained'.*does not exist"):
        main(tiny(tmp_path, tiny_data_root, "run.name=missing", f"pretrained={tmp_path}/no/backbone.pt"))
    assert not (tmp_path / "missing").exists()
    with pytest.raises(ValueError, match="config key 'pretrained'.*does not match backbone 'small3d'.*shape"):
        main(tiny(tmp_path, tiny_data_root, "run.name=wider", "model.width=16",
                  f"pretrained={os.path.join(pretrained, 'checkpoints', 'last.pt')}"))
    bad_list = tmp_path / "bad_testlist.txt"
    entries = [line.split() for line in open(os.path.join(tiny_data_root, "testlist.txt")) if line.strip()]
    bad_list.write_text("".join(f"{os.path.join(tiny_data_root, p)} {7 if i == 2 else label}\n"
                                for i, (p, label) in enumerate(entries)))
    with pytest.raises(ValueError, match=r"data.val_list.*bad_testlist.txt.*outside \[0, 3\].*entry 3"):
        main(tiny(tmp_path, tiny_data_root, "run.name=labels", f"data.val_list={bad_list}"))


@pytest.mark.parametrize("name", ["ucf101_r21d_linear_tiny", "ucf101_r21d_finetune_tiny", "hmdb51_r21d_finetune_tiny",
                                  "diving48_i3d_finetune_tiny"])
def test_tiny_paper_configs_run(tmp_path, tiny_data_root, pretrained, name):
    from runners.classify import main
    config = os.path.join(ROOT, "configs", f"{name}.yaml")
    paper = C.load_config(config.replace("_tiny", ""))
    record = main(tiny(tmp_path, tiny_data_root, "run.name=t", f"pretrained={pretrained}/backbone.pt", config=config))
    assert record["protocol"] == paper.eval.protocol
    assert record["metrics"]["videos"] == 8
