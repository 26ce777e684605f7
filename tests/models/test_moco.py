import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from moco_test_nets import TinyBackbone, TinyBNBackbone
from torch import nn

from models.moco import MoCo, check_queue_size, contrastive_accuracy

torch.set_num_threads(1)

DIM = 3
CLIP = (3, 2, 4, 4)  # C, T, H, W of the tiny clips


def make_moco(backbone=TinyBackbone, **kwargs):
    torch.manual_seed(0)
    options = dict(dim=DIM, K=8, m=0.9, T=0.2, head="linear", symmetric=False, shuffle_bn=True)
    options.update(kwargs)
    return MoCo(backbone(), **options)


def clips(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, *CLIP, generator=generator)


def hand_infonce(q, k, queue, T):
    """Mean over samples of -log softmax at the positive, written out with numpy loops."""
    q, k, queue = (t.detach().double().numpy() for t in (q, k, queue))
    losses = []
    for i in range(q.shape[0]):
        logits = [sum(q[i, d] * k[i, d] for d in range(q.shape[1])) / T]
        for j in range(queue.shape[1]):
            logits.append(sum(q[i, d] * queue[d, j] for d in range(q.shape[1])) / T)
        logits = np.array(logits)
        losses.append(-(logits[0] - math.log(np.exp(logits).sum())))
    return float(np.mean(losses))


def test_queue_starts_normalised_with_pointer_zero():
    moco = make_moco(K=16)
    assert moco.queue.shape == (DIM, 16)
    torch.testing.assert_close(moco.queue.norm(dim=0), torch.ones(16))
    assert int(moco.queue_ptr) == 0


def test_initial_queue_does_not_depend_on_the_global_rng():
    """Processes seed their global RNGs differently (seed + rank) but must start from one queue."""
    queues = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        queues.append(MoCo(TinyBackbone(), dim=DIM, K=16, head="linear").queue)
    assert torch.equal(queues[0], queues[1])
    assert not torch.equal(queues[0][:, 0], queues[0][:, 1])
    other_run = MoCo(TinyBackbone(), dim=DIM, K=16, head="linear", queue_seed=1).queue
    assert not torch.equal(other_run, queues[0])       # a run's seed still picks its queue


def test_enqueue_writes_at_pointer_and_wraps():
    moco = make_moco(K=8)
    first, second, third = torch.randn(4, DIM), torch.randn(4, DIM), torch.randn(4, DIM)
    moco.enqueue(first)
    assert int(moco.queue_ptr) == 4
    torch.testing.assert_close(moco.queue[:, :4], first.T)
    moco.enqueue(second)
    assert int(moco.queue_ptr) == 0
    torch.testing.assert_close(moco.queue[:, 4:], second.T)
    moco.enqueue(third)
    assert int(moco.queue_ptr) == 4
    torch.testing.assert_close(moco.queue[:, :4], third.T)
    torch.testing.assert_close(moco.queue[:, 4:], second.T)


def test_a_loaded_state_dict_sets_the_write_position():
    """The position is a Python int; the queue_ptr buffer carries it through checkpoints (old ones too)."""
    saved = make_moco(K=8)
    saved.enqueue(torch.randn(4, DIM))
    state = saved.state_dict()
    assert state["queue_ptr"].tolist() == [4]
    loaded = make_moco(K=8)
    loaded.load_state_dict(state)
    keys = torch.randn(4, DIM)
    loaded.enqueue(keys)
    torch.testing.assert_close(loaded.queue[:, 4:], keys.T)        # written where the saved run stopped
    assert int(loaded.queue_ptr) == 0


def test_a_queue_pointer_outside_the_queue_does_not_load():
    moco = make_moco(K=8)
    state = moco.state_dict()
    state["queue_ptr"] = torch.tensor([8])
    with pytest.raises(RuntimeError, match="queue_ptr is 8: outside the queue of K=8"):
        moco.load_state_dict(state)


def refuse_host_reads(monkeypatch):
    """Make every Python-level read of a tensor's value raise: on a GPU each is a host sync
    (tests/runners/test_gpu_sync.py has the same for the training steps)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")
    for name in ("item", "tolist", "__int__", "__index__", "__bool__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)


@pytest.mark.parametrize("options", [dict(symmetric=False), dict(symmetric=True, batch_negatives=True)])
def test_a_training_forward_reads_nothing_back_from_the_device(monkeypatch, options):
    moco = make_moco(backbone=TinyBNBackbone, K=16, **options).train()
    x1, x2 = clips(4, 20), clips(4, 21)
    with monkeypatch.context() as patch:
        refuse_host_reads(patch)
        moco(x1, x2)
        moco(x1, x2)
    assert int(moco.queue_ptr) == (16 if options["symmetric"] else 8) % 16


def test_enqueue_rejects_queue_size_not_divisible():
    moco = make_moco(K=10)
    with pytest.raises(ValueError, match="K=10 must be divisible"):
        moco.enqueue(torch.randn(4, DIM))


def test_check_queue_size():
    check_queue_size(65536, 8, world=8, symmetric=True)
    check_queue_size(2048, 64, world=1, symmetric=False)
    with pytest.raises(ValueError, match="world size 1 x batch 48 x 2"):
        check_queue_size(2048, 48, world=1, symmetric=True)


def test_key_encoder_starts_as_frozen_copy():
    moco = make_moco(backbone_k=TinyBackbone)
    for theta_q, theta_k in zip(moco.f_q.parameters(), moco.f_k.parameters(), strict=True):
        assert torch.equal(theta_q, theta_k)
        assert theta_q.requires_grad and not theta_k.requires_grad


def test_mismatched_key_backbone_raises():
    with pytest.raises(ValueError, match="key backbone does not match"):
        make_moco(backbone_k=TinyBNBackbone)


def test_momentum_update_arithmetic():
    moco = make_moco(backbone=TinyBNBackbone, m=0.9)
    with torch.no_grad():
        for theta_q in moco.f_q.parameters():
            theta_q.fill_(2.0)
        for theta_k in moco.f_k.parameters():
            theta_k.fill_(-1.0)
        moco.f_k.backbone.bn.running_mean.fill_(5.0)
    moco.momentum_update()
    # 0.9 * -1 + 0.1 * 2 = -0.7
    for theta_k in moco.f_k.parameters():
        torch.testing.assert_close(theta_k, torch.full_like(theta_k, -0.7))
    moco.momentum_update()
    # 0.9 * -0.7 + 0.1 * 2 = -0.43
    for theta_k in moco.f_k.parameters():
        torch.testing.assert_close(theta_k, torch.full_like(theta_k, -0.43))
    for theta_q in moco.f_q.parameters():
        assert torch.all(theta_q == 2.0)
    assert torch.all(moco.f_k.backbone.bn.running_mean == 5.0)


def encode_by_hand(moco, x1, x2):
    """Training mode; q = f_q(x1), k = f_k(x2) computed outside forward(), and the queue before the step."""
    moco.train()
    with torch.no_grad():
        q = F.normalize(moco.f_q.head(moco.f_q.backbone(x1)), dim=1)
        k = F.normalize(moco.f_k.head(moco.f_k.backbone(x2)), dim=1)
    return q, k, moco.queue.clone()


def test_loss_equals_hand_computed_infonce():
    moco = make_moco(K=8, T=0.2)
    x1, x2 = clips(4, 1), clips(4, 2)
    q, k, queue_before = encode_by_hand(moco, x1, x2)
    out = moco(x1, x2)
    assert out.logits.shape == (4, 1 + 8)
    assert torch.equal(out.labels, torch.zeros(4, dtype=torch.long))
    assert out.loss.item() == pytest.approx(hand_infonce(q, k, queue_before, 0.2), rel=1e-5)
    torch.testing.assert_close(out.logits[:, 0], (q * k).sum(dim=1) / 0.2)
    # the keys are enqueued after the loss
    torch.testing.assert_close(moco.queue[:, :4], k.T)
    torch.testing.assert_close(moco.queue[:, 4:], queue_before[:, 4:])


def test_batch_negatives_add_the_other_keys_of_the_step():
    moco = make_moco(K=8, T=0.2, batch_negatives=True)
    x1, x2 = clips(4, 1), clips(4, 2)
    q, k, queue_before = encode_by_hand(moco, x1, x2)
    out = moco(x1, x2)
    assert out.logits.shape == (4, 1 + 3 + 8)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        torch.testing.assert_close(out.logits[i, 1:4], (k[others] @ q[i]) / 0.2)
        torch.testing.assert_close(out.logits[i, 4:], (q[i] @ queue_before) / 0.2)
        per_sample = hand_infonce(q[i:i + 1], k[i:i + 1], torch.cat([k[others].T, queue_before], dim=1), 0.2)
        assert F.cross_entropy(out.logits[i:i + 1], out.labels[i:i + 1]).item() == pytest.approx(per_sample, rel=1e-5)
    moco.eval()
    assert moco(x1, x2).logits.shape == (4, 1 + 8)   # evaluation contrasts with the queue only


def test_symmetric_loss_averages_both_directions_and_enqueues_both_keys():
    moco = make_moco(K=16, T=0.1, symmetric=True, head="mlp")
    moco.train()
    x1, x2 = clips(4, 3), clips(4, 4)
    queue_before = moco.queue.clone()
    with torch.no_grad():
        q1, q2 = moco.f_q(x1), moco.f_q(x2)
        k1, k2 = moco.f_k(x1), moco.f_k(x2)
    out = moco(x1, x2)
    expected = (hand_infonce(q1, k2, queue_before, 0.1) + hand_infonce(q2, k1, queue_before, 0.1)) / 2
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert out.logits.shape == (8, 1 + 16)
    assert out.labels.shape == (8,)
    torch.testing.assert_close(moco.queue[:, :8], torch.cat([k1, k2]).T)
    assert int(moco.queue_ptr) == 8


def test_eval_mode_leaves_queue_alone():
    moco = make_moco(K=8)
    moco.eval()
    queue_before = moco.queue.clone()
    moco(clips(4, 5), clips(4, 6))
    assert torch.equal(moco.queue, queue_before)
    assert int(moco.queue_ptr) == 0


def test_gradients_reach_query_encoder_only():
    moco = make_moco(K=8, symmetric=True)
    moco.train()
    moco(clips(2, 7), clips(2, 8)).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in moco.f_q.parameters())
    assert all(p.grad is None for p in moco.f_k.parameters())


def test_shuffle_bn_restores_key_order():
    """Without BN a key does not depend on its sub-batch, so shuffled keys come back as f_k(x) in order."""
    moco = make_moco(backbone=TinyBackbone, K=12, shuffle_bn_groups=3)
    moco.train()
    x2 = clips(6, 9)
    with torch.no_grad():
        expected = moco.f_k(x2)
        keys = moco._encode_k(x2)
    torch.testing.assert_close(keys, expected)


def test_eval_mode_encodes_keys_without_shuffling():
    """Shuffle-BN is for training only: in eval mode no permutation is drawn from the global RNG."""
    moco = make_moco(backbone=TinyBNBackbone, K=12, shuffle_bn_groups=3)
    moco.eval()
    x2 = clips(6, 9)
    rng_state = torch.get_rng_state()
    with torch.no_grad():
        keys = moco._encode_k(x2)
    assert torch.equal(torch.get_rng_state(), rng_state)
    with torch.no_grad():
        torch.testing.assert_close(keys, moco.f_k(x2))


def test_single_process_shuffle_bn_encodes_keys_in_random_sub_batches():
    moco = make_moco(backbone=TinyBNBackbone, K=8, shuffle_bn_groups=2)
    moco.train()
    x = clips(4, 10)
    partners_of_first = set()
    with torch.no_grad():
        whole_batch = moco.f_k(x)
        for _ in range(10):
            keys = moco._encode_k(x)
            assert not torch.allclose(keys, whole_batch)
            for i in range(4):
                partners = [
                    j for j in range(4)
                    if j != i and torch.allclose(keys[i], moco.f_k(x[[i, j]])[0], atol=1e-6)
                ]
                assert len(partners) == 1, f"key {i} was not encoded in a pair with one other sample"
                if i == 0:
                    partners_of_first.add(partners[0])
    assert len(partners_of_first) > 1, "the key sub-batches are not drawn at random"


def test_single_process_shuffle_bn_encodes_queries_in_contiguous_sub_batches():
    moco = make_moco(backbone=TinyBNBackbone, K=8, shuffle_bn_groups=2)
    moco.train()
    x = clips(4, 11)
    with torch.no_grad():
        expected = torch.cat([moco.f_q(x[:2]), moco.f_q(x[2:])])
        torch.testing.assert_close(moco._encode_q(x), expected)


def test_batch_smaller_than_shuffle_groups_raises():
    moco = make_moco(K=8, shuffle_bn_groups=4)
    moco.train()
    with pytest.raises(ValueError, match="too small"):
        moco(clips(2, 12), clips(2, 13))


RANKED_LOGITS = [
    [5.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0],  # positive ranked 1st
    [1.0, 5.0, 2.0, 3.0, 4.0, 0.0, 0.0],  # positive ranked 5th
    [0.0, 5.0, 2.0, 3.0, 4.0, 1.0, 6.0],  # positive ranked 7th
    [1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # positive ranked 2nd
]
RANKED_TOP1, RANKED_TOP5 = 25.0, 75.0


def test_contrastive_accuracy():
    logits = torch.tensor(RANKED_LOGITS)
    labels = torch.zeros(4, dtype=torch.long)
    top1, top5 = contrastive_accuracy(logits, labels, topk=(1, 5))
    assert top1.item() == pytest.approx(RANKED_TOP1)
    assert top5.item() == pytest.approx(RANKED_TOP5)
    (top10,) = contrastive_accuracy(logits, labels, topk=(10,))
    assert top10.item() == pytest.approx(100.0)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="temperature"):
        make_moco(T=0.0)
    with pytest.raises(ValueError, match="momentum"):
        make_moco(m=1.5)
    with pytest.raises(ValueError, match="kind"):
        make_moco(head="transformer")
    with pytest.raises(ValueError, match="feat_dim"):
        MoCo(torch.nn.Linear(3, 3))


def run_mixed_precision_step(device):
    moco = make_moco(backbone=TinyBNBackbone, K=16, symmetric=True).to(device).train()
    x1, x2 = clips(4, 14).to(device), clips(4, 15).to(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        out = moco(x1, x2)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert moco.queue.dtype == torch.float32 and moco.queue.device.type == device.type
    torch.testing.assert_close(moco.queue[:, :8].norm(dim=0), torch.ones(8, device=device), atol=1e-2, rtol=0)
    assert int(moco.queue_ptr) == 8
    ranked = torch.tensor(RANKED_LOGITS, dtype=out.logits.dtype, device=device)
    top1, top5 = contrastive_accuracy(ranked, torch.zeros(4, dtype=torch.long, device=device))
    assert top1.device.type == device.type
    assert (top1.item(), top5.item()) == (RANKED_TOP1, RANKED_TOP5)


def test_bfloat16_autocast_step_on_cpu():
    run_mixed_precision_step(torch.device("cpu"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bfloat16_autocast_step_on_gpu():
    run_mixed_precision_step(torch.device("cuda"))


# ------------------------------------------------ beyond the paper: predictor, own keys ----
def test_the_published_model_has_no_predictor_and_no_video_ids():
    moco = make_moco()
    assert moco.predictor is None and not moco.drop_own_keys
    assert "queue_ids" not in moco.state_dict()
    assert not any(key.startswith("predictor.") for key in moco.state_dict())


def test_a_predictor_maps_the_queries_only():
    """q = normalize(g(h_q(x))) on the query branch; the keys stay f_k(x); the predictor is
    trained by the loss and is not part of the momentum update."""
    moco = make_moco(K=8, T=0.2, predictor_dim=5, shuffle_bn_groups=1)
    assert [type(layer) for layer in moco.predictor.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert moco.predictor.layers[0].weight.shape == (5, DIM)
    moco.train()
    x1, x2 = clips(4, 1), clips(4, 2)
    queue_before = moco.queue.clone()
    with torch.no_grad():
        q = F.normalize(moco.predictor(moco.f_q.head(moco.f_q.backbone(x1))), dim=1)
        k = moco.f_k(x2)
    out = moco(x1, x2)
    assert out.loss.item() == pytest.approx(hand_infonce(q, k, queue_before, 0.2), rel=1e-5)
    torch.testing.assert_close(moco.queue[:, :4], k.T)
    out.loss.backward()
    assert all(p.grad is not None for p in moco.predictor.parameters())
    assert len(list(moco.f_q.parameters())) == len(list(moco.f_k.parameters()))   # momentum pairs unchanged
    with pytest.raises(ValueError, match="predictor_dim"):
        make_moco(predictor_dim=-1)


def test_drop_own_keys_leaves_the_queues_keys_of_the_querys_video_out():
    moco = make_moco(K=8, T=0.2, drop_own_keys=True)
    assert moco.queue_ids.tolist() == [-1] * 8
    ids = torch.tensor([10, 11, 12, 13])
    moco.enqueue(torch.randn(4, DIM), torch.tensor([11, 20, 10, 11]))
    x1, x2 = clips(4, 1), clips(4, 2)
    q, k, queue_before = encode_by_hand(moco, x1, x2)
    out = moco(x1, x2, ids)
    own = {0: [2], 1: [0, 3], 2: [], 3: []}        # queue columns holding each query's video
    for i in range(4):
        assert all(out.logits[i, 1 + j] == float("-inf") for j in own[i])
        kept = [j for j in range(8) if j not in own[i]]
        torch.testing.assert_close(out.logits[i, 1 + torch.tensor(kept)], (q[i] @ queue_before[:, kept]) / 0.2)
    expected = sum(hand_infonce(q[i:i + 1], k[i:i + 1], queue_before[:, [j for j in range(8) if j not in own[i]]], 0.2)
                   for i in range(4)) / 4
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)
    assert moco.queue_ids.tolist() == [11, 20, 10, 11, 10, 11, 12, 13]     # the step's keys and their videos
    assert torch.isfinite(out.loss)


def test_drop_own_keys_enqueues_both_views_videos_in_symmetric_mode():
    moco = make_moco(K=16, symmetric=True, drop_own_keys=True)
    moco.train()
    moco(clips(4, 3), clips(4, 4), torch.tensor([5, 6, 7, 8]))
    assert moco.queue_ids.tolist()[:8] == [5, 6, 7, 8, 5, 6, 7, 8]
    moco(clips(4, 3), clips(4, 4))        # no ids given: nothing is left out, the keys have no video
    assert moco.queue_ids.tolist()[8:] == [-1] * 8
    state = moco.state_dict()
    loaded = make_moco(K=16, symmetric=True, drop_own_keys=True)
    loaded.load_state_dict(state)
    assert torch.equal(loaded.queue_ids, moco.queue_ids)
