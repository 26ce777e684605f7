"""Metrics, per-video averaging, distributed gathering and pretrained-weight loading of engine.evaluation."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from engine import checkpoint as ckpt
from engine import evaluation as E
from engine.config import dump_config, load_config, to_dict
from engine.errors import DataError
from engine.models import make_backbone
from models.backbones import build_backbone, export_backbone_state
from models.moco import MoCo

NUM_VIDEOS, CLIPS, NUM_CLASSES, DIM = 7, 3, 5, 6
WORLD = 2


# ------------------------------------------------------------- helpers ----
class FlatLinear(nn.Module):
    """A deterministic stand-in 'model': (N, 3, T, H, W) -> (N, out) by a fixed linear map of the
    mean pixel per channel."""

    def __init__(self, out: int):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, out)
        self.feat_dim = out

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3, 4)))


def clip_dataset(seed=0):
    """NUM_VIDEOS x CLIPS tiny clips (clip-major order, like a test loader), labels, video indices."""
    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(NUM_VIDEOS * CLIPS, 3, 2, 4, 4, generator=g)
    video_labels = torch.randint(0, NUM_CLASSES, (NUM_VIDEOS,), generator=g)
    video_index = torch.arange(NUM_VIDEOS).repeat_interleave(CLIPS)
    return clips, video_labels[video_index], video_index


def batches_of(clips, labels, video_index, batch_size):
    """Batches of batch_size, the last one partial."""
    return [(clips[i:i + batch_size], labels[i:i + batch_size], video_index[i:i + batch_size])
            for i in range(0, clips.shape[0], batch_size)]


def reference_video_metrics(model, clips, labels, video_index):
    with torch.no_grad():
        logits = model(clips)
    probs = logits.softmax(1)
    mean = torch.stack([probs[video_index == v].mean(0) for v in range(NUM_VIDEOS)])
    vlabels = torch.stack([labels[video_index == v][0] for v in range(NUM_VIDEOS)])
    top1 = (mean.argmax(1) == vlabels).float().mean().item() * 100
    top5 = torch.tensor([vlabels[v] in mean[v].topk(min(5, NUM_CLASSES)).indices for v in range(NUM_VIDEOS)])
    clip_top1 = (logits.argmax(1) == labels).float().mean().item() * 100
    return top1, top5.float().mean().item() * 100, clip_top1


def brute_force_recall(query, qlabels, gallery, glabels, k):
    """Hit@k by explicit sorting of every query's cosine similarities; ties by gallery index."""
    q = F.normalize(query.double(), dim=1)
    g = F.normalize(gallery.double(), dim=1)
    hits = 0
    for i in range(q.shape[0]):
        sims = [(float(q[i] @ g[j]), j) for j in range(g.shape[0])]
        ranked = sorted(sims, key=lambda s: (-s[0], s[1]))[:k]
        hits += any(int(glabels[j]) == int(qlabels[i]) for _, j in ranked)
    return 100.0 * hits / q.shape[0]


# ------------------------------------------------------------- metrics ----
def test_topk_caps_k_at_the_number_of_classes():
    scores = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 1, 0])
    assert E.topk_correct(scores, labels, (1, 2, 5)) == {1: 1, 2: 2, 5: 3}
    assert E.video_topk(scores, labels, (1, 5)) == pytest.approx({"video_top1": 100 / 3, "video_top5": 100.0})


def test_per_video_averaging_in_any_order():
    g = torch.Generator().manual_seed(1)
    values = torch.randn(NUM_VIDEOS * CLIPS, DIM, generator=g)
    video_index = torch.arange(NUM_VIDEOS).repeat(CLIPS)          # interleaved
    labels = video_index % NUM_CLASSES
    perm = torch.randperm(values.shape[0], generator=g)
    acc = E.VideoAccumulator(NUM_VIDEOS, DIM, torch.device("cpu"))
    for chunk in torch.split(perm, 4):                             # last chunk partial
        acc.add(values[chunk], labels[chunk], video_index[chunk])
    acc.check_complete(CLIPS)
    expected = torch.stack([values[video_index == v].mean(0) for v in range(NUM_VIDEOS)])
    assert torch.allclose(acc.means(), expected, atol=1e-6)
    assert acc.labels.tolist() == [v % NUM_CLASSES for v in range(NUM_VIDEOS)]


def test_accumulator_rejects_missing_and_duplicated_clips_and_label_conflicts():
    values = torch.zeros(NUM_VIDEOS * CLIPS, DIM)
    video_index = torch.arange(NUM_VIDEOS).repeat_interleave(CLIPS)
    labels = torch.zeros_like(video_index)
    short = E.VideoAccumulator(NUM_VIDEOS, DIM, torch.device("cpu"))
    short.add(values[:-1], labels[:-1], video_index[:-1])          # last clip dropped
    with pytest.raises(ValueError, match=r"1 of 7 .*video 6 with 2 clips"):
        short.check_complete(CLIPS)
    padded = E.VideoAccumulator(NUM_VIDEOS, DIM, torch.device("cpu"))
    padded.add(values, labels, video_index)
    padded.add(values[-1:], labels[-1:], video_index[-1:])        # last clip repeated (padding)
    with pytest.raises(ValueError, match="video 6 with 4 clips"):
        padded.check_complete(CLIPS)
    with pytest.raises(ValueError, match="different labels"):
        padded.add(values[:1], labels[:1] + 1, video_index[:1])
    fresh = E.VideoAccumulator(NUM_VIDEOS, DIM, torch.device("cpu"))
    with pytest.raises(ValueError, match="different labels"):                  # within one batch
        fresh.add(values[:2], torch.tensor([0, 1]), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="out of range"):
        padded.add(values[:1], labels[:1], torch.tensor([NUM_VIDEOS]))


def test_retrieval_matches_brute_force_on_random_features():
    g = torch.Generator().manual_seed(2)
    gallery, query = torch.randn(40, 8, generator=g), torch.randn(15, 8, generator=g)
    glabels, qlabels = torch.randint(0, 4, (40,), generator=g), torch.randint(0, 4, (15,), generator=g)
    ks = [1, 2, 5, 10]
    got = E.retrieval_recall(query, qlabels, gallery, glabels, ks)
    assert list(got) == ["R@1", "R@2", "R@5", "R@10"]
    for k in ks:
        assert got[f"R@{k}"] == pytest.approx(brute_force_recall(query, qlabels, gallery, glabels, k))


def test_retrieval_ties_go_to_the_lower_gallery_index_and_k_is_capped():
    gallery = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0], [0.0, 3.0]])   # rows 1, 2 tie; rows 0, 3 tie
    glabels = torch.tensor([2, 0, 1, 3])
    query = torch.tensor([[5.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    qlabels = torch.tensor([1, 3, 1])
    order = E.nearest_neighbours(F.normalize(query, dim=1), F.normalize(gallery, dim=1), 4)
    assert order[:2].tolist() == [[1, 2, 0, 3], [0, 3, 1, 2]]
    got = E.retrieval_recall(query, qlabels, gallery, glabels, [1, 2, 50])
    for k in (1, 2, 50):
        assert got[f"R@{k}"] == pytest.approx(brute_force_recall(query, qlabels, gallery, glabels, k))
    assert got == pytest.approx({"R@1": 0.0, "R@2": 200 / 3, "R@50": 100.0})
    assert E.retrieval_recall(query, torch.tensor([1, 3, 9]), gallery, glabels, [50])["R@50"] == pytest.approx(200 / 3)


# --------------------------------------------------------------- loops ----
@pytest.mark.parametrize("batch_size", [4, 5, 21])
def test_test_loop_counts_every_video_once_with_a_partial_last_batch(batch_size):
    clips, labels, video_index = clip_dataset()
    model = FlatLinear(NUM_CLASSES)
    got = E.evaluate_classifier(model, batches_of(clips, labels, video_index, batch_size), NUM_VIDEOS,
                                NUM_CLASSES, CLIPS, torch.device("cpu"))
    top1, top5, clip_top1 = reference_video_metrics(model, clips, labels, video_index)
    assert got["video_top1"] == pytest.approx(top1)
    assert got["video_top5"] == pytest.approx(top5)
    assert got["clip_top1"] == pytest.approx(clip_top1)
    assert (got["videos"], got["clips"]) == (NUM_VIDEOS, NUM_VIDEOS * CLIPS)
    with pytest.raises(ValueError, match="clip count"):
        E.evaluate_classifier(model, batches_of(clips, labels, video_index, batch_size)[:-1], NUM_VIDEOS,
                              NUM_CLASSES, CLIPS, torch.device("cpu"))


def _sharded_worker(rank, init_file, out_dir):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        clips, labels, video_index = clip_dataset()
        # a contiguous shard per rank of uneven size: a video's clips are split across the ranks
        cut = 10
        shard = slice(0, cut) if rank == 0 else slice(cut, None)
        batches = batches_of(clips[shard], labels[shard], video_index[shard], 4)
        model = FlatLinear(NUM_CLASSES)
        metrics = E.evaluate_classifier(model, batches, NUM_VIDEOS, NUM_CLASSES, CLIPS, torch.device("cpu"))
        features, vlabels = E.extract_video_features(model, batches, NUM_VIDEOS, CLIPS, torch.device("cpu"))
        torch.save({"metrics": metrics, "features": features, "labels": vlabels}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_sharding_gathers_every_video_once(tmp_path):
    mp.spawn(_sharded_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    clips, labels, video_index = clip_dataset()
    model = FlatLinear(NUM_CLASSES)
    single = E.evaluate_classifier(model, batches_of(clips, labels, video_index, 4), NUM_VIDEOS, NUM_CLASSES,
                                   CLIPS, torch.device("cpu"))
    features, vlabels = E.extract_video_features(model, batches_of(clips, labels, video_index, 4), NUM_VIDEOS,
                                                 CLIPS, torch.device("cpu"))
    for rank in range(WORLD):
        out = torch.load(tmp_path / f"{rank}.pt")
        assert out["metrics"] == pytest.approx(single)
        assert torch.allclose(out["features"], features, atol=1e-6)
        assert torch.equal(out["labels"], vlabels)
    assert torch.allclose(features.norm(dim=1), torch.ones(NUM_VIDEOS))


# ---------------------------------------------------------- pretrained ----
def tiny_cfg(tmp_path, *overrides):
    return load_config(os.path.join("configs", "synthetic_tiny.yaml"),
                       [f"run.dir={tmp_path}", "run.name=t", *overrides])


def test_backbone_pt_and_moco_checkpoint_load_the_same_weights(tmp_path):
    cfg = tiny_cfg(tmp_path)
    source = make_backbone(cfg)
    backbone_pt = str(tmp_path / "backbone.pt")
    ckpt.save_atomic(export_backbone_state(source), backbone_pt)
    moco = MoCo(source, dim=cfg.model.dim, K=cfg.model.K)
    moco_pt = ckpt.save_checkpoint(str(tmp_path / "pre"), {"model": moco.state_dict(), "config": to_dict(cfg)})
    for path, fmt in ((backbone_pt, "backbone"), (moco_pt, "moco")):
        target = make_backbone(cfg)
        info = E.load_pretrained_backbone(target, tiny_cfg(tmp_path, f"pretrained={path}"))
        assert info["format"] == fmt and info["path"] == path and len(info["sha256"]) == E.SHA_HEX_CHARS
        for key, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[key], value), key
    assert E.load_pretrained_backbone(make_backbone(cfg), cfg) == {"path": None, "sha256": None,
                                                                           "init": "random"}


@pytest.mark.slow
def test_bad_pretrained_inputs_fail_clearly(tmp_path):
    missing = tiny_cfg(tmp_path, f"pretrained={tmp_path}/nope.pt")
    with pytest.raises(FileNotFoundError, match="config key 'pretrained'.*nope.pt' does not exist"):
        E.check_pretrained_path(missing)
    other = str(tmp_path / "other.pt")
    ckpt.save_atomic(export_backbone_state(build_backbone("small3d", width=4, depth=2)), other)
    with pytest.raises(ValueError, match="config key 'pretrained'.*does not match backbone 'small3d'.*missing key"):
        E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)), tiny_cfg(tmp_path, f"pretrained={other}"))
    r21d = str(tmp_path / "r21d.pt")
    ckpt.save_atomic(export_backbone_state(build_backbone("r2plus1d_18")), r21d)
    with pytest.raises(ValueError, match="does not match backbone 'small3d'; it looks like a 'r2plus1d_18'"):
        E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)), tiny_cfg(tmp_path, f"pretrained={r21d}"))
    wider = tiny_cfg(tmp_path, "model.width=16")
    moco_pt = ckpt.save_checkpoint(str(tmp_path / "pre"), {
        "model": MoCo(make_backbone(wider), K=8).state_dict(), "config": to_dict(wider)})
    with pytest.raises(ValueError, match="shape.*pretrained with model.backbone=small3d model.width=16"):
        E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)), tiny_cfg(tmp_path, f"pretrained={moco_pt}"))
    junk = str(tmp_path / "junk.pt")
    torch.save({"epoch": 3}, junk)
    with pytest.raises(ValueError, match="neither a backbone state_dict"):
        E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)), tiny_cfg(tmp_path, f"pretrained={junk}"))


def test_a_backbone_pretrained_with_another_pool_is_refused(tmp_path):
    """A pool has no weights: a max-pooled backbone would load into an averaging one and change its
    features silently."""
    maxed = tiny_cfg(tmp_path, "model.pool=max")
    run_dir = tmp_path / "pre"
    run_dir.mkdir()
    ckpt.save_atomic(export_backbone_state(make_backbone(maxed)), str(run_dir / E.BACKBONE_FILE))
    dump_config(maxed, str(run_dir / "config.yaml"))
    moco_pt = ckpt.save_checkpoint(str(tmp_path / "moco"), {"model": MoCo(make_backbone(maxed), K=8).state_dict(),
                                                             "config": to_dict(maxed)})
    for pretrained in (str(run_dir / E.BACKBONE_FILE), str(run_dir), moco_pt):
        refused = r"'model.pool' \(avg\).*pretrained with model.pool=max; set model.pool=max"
        with pytest.raises(DataError, match=refused):
            E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)),
                                       tiny_cfg(tmp_path, f"pretrained={pretrained}"))
        info = E.load_pretrained_backbone(make_backbone(maxed), tiny_cfg(tmp_path, "model.pool=max",
                                                                         f"pretrained={pretrained}"))
        assert info["init"] == "pretrained"
    bare = str(tmp_path / "bare.pt")          # no run config beside it: nothing to check against
    ckpt.save_atomic(export_backbone_state(make_backbone(maxed)), bare)
    assert E.load_pretrained_backbone(make_backbone(tiny_cfg(tmp_path)), tiny_cfg(tmp_path, f"pretrained={bare}"))


def test_results_json_record(tmp_path):
    cfg = tiny_cfg(tmp_path)
    record = E.results_record(cfg, "linear", {"video_top1": 50.0}, {"path": None, "sha256": None, "init": "random"})
    path = E.write_results(str(tmp_path), record)
    back = json.load(open(path))
    assert back["dataset"] == "synthetic_tiny"
    assert back["split"] == {"train": "trainlist.txt", "test": "testlist.txt"}
    assert back["pretrained"]["init"] == "random" and back["config"]["eval"]["protocol"] == "linear"


def test_results_collector_builds_the_paper_tables(tmp_path, capsys):
    from studies import results as R

    def fabricate(run, protocol, dataset, metrics, pretrained):
        os.makedirs(tmp_path / run)
        (tmp_path / run / E.RESULTS_FILE).write_text(json.dumps({
            "protocol": protocol, "dataset": dataset, "backbone": "r2plus1d_18", "input": "16x112",
            "metrics": metrics, "pretrained": pretrained, "run": run,
            "split": {"train": "trainlist.txt", "test": "testlist.txt"}}))
    fame = {"path": "runs/fame-k400/backbone.pt", "sha256": "0123abcd", "init": "pretrained"}
    fabricate("a", "finetune", "ucf101", {"video_top1": 84.8}, fame)
    fabricate("b", "finetune", "hmdb51", {"video_top1": 53.5}, fame)
    fabricate("c", "linear", "ucf101", {"video_top1": 72.2}, fame)
    fabricate("d", "finetune", "ucf101", {"video_top1": 60.0}, {"path": None, "init": "random"})
    fabricate("e", "retrieval", "ucf101", {"R@1": 64.6, "R@5": 77.7}, fame)
    assert R.main(["--runs", str(tmp_path)]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "| pretrained | backbone | input | protocol | hmdb51 | ucf101 | runs |" in text
    assert "| fame-k400 (0123abcd) | r2plus1d_18 | 16x112 | finetune | 53.5 | 84.8 | a, b |" in text
    assert "| fame-k400 (0123abcd) | r2plus1d_18 | 16x112 | linear | – | 72.2 | c |" in text
    assert "| random init | r2plus1d_18 | 16x112 | finetune | – | 60.0 | d |" in text
    assert "| fame-k400 (0123abcd) | r2plus1d_18 | 16x112 | ucf101 | 64.6 | 77.7 | e |" in text
    assert text in capsys.readouterr().out
    records = R.collect_results(str(tmp_path))
    records[0]["split"]["test"] = "trainlist.txt"
    assert "| ucf101 (testlist.txt) | ucf101 (trainlist.txt) |" in R.classification_table(records)
    os.makedirs(tmp_path / "empty")
    assert R.main(["--runs", str(tmp_path / "empty")]) == 1
