"""MoCo under torch.distributed: 2 CPU processes on gloo, cross-process shuffle-BN and all-gathered keys."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from moco_test_nets import TinyBackbone, TinyBNBackbone

from models.moco import MoCo

WORLD = 2
BATCH = 2
CLIP = (3, 2, 4, 4)
DIM = 3
K = 16  # WORLD x BATCH x 2 views = 8 keys per step
STEPS = 4
SEED = 0  # each process seeds its global RNG with SEED + rank, as the runners do


def gather(tensor):
    parts = [torch.empty_like(tensor) for _ in range(WORLD)]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def build_moco(rank, backbone, **options):
    """MoCo built from a rank-seeded global RNG, as the runners seed each process.

    runners/pretrain.py wraps it in DDP(broadcast_buffers=False), which broadcasts rank 0's
    parameters but no buffers, so the queue must already be the same on every process when
    MoCo builds it. Parameters are broadcast here as DDP does.
    """
    torch.manual_seed(SEED + rank)
    moco = MoCo(backbone(), dim=DIM, K=K, T=0.2, head="linear", **options)
    queues = gather(moco.queue)
    assert torch.equal(queues[0], queues[1]), "initial queues differ across differently seeded processes"
    for parameter in moco.parameters():
        dist.broadcast(parameter.data, src=0)
    for name, tensor in moco.state_dict().items():
        copies = gather(tensor)
        assert torch.equal(copies[0], copies[1]), f"{name} differs across processes once parameters are shared"
    return moco.train()


def check_without_bn(rank):
    """Without BN a key does not depend on its batch, so shuffled keys must equal local keys in order."""
    moco = build_moco(rank, TinyBackbone, symmetric=True)
    torch.manual_seed(100 + rank)
    x1, x2 = torch.randn(BATCH, *CLIP), torch.randn(BATCH, *CLIP)
    with torch.no_grad():
        local_keys = torch.cat([moco.f_k(x1), moco.f_k(x2)])
    moco(x1, x2)
    queues = gather(moco.queue)
    assert torch.equal(queues[0], queues[1]), "queues differ across processes"
    assert int(moco.queue_ptr) == WORLD * BATCH * 2
    own_columns = moco.queue[:, rank * 2 * BATCH : (rank + 1) * 2 * BATCH]
    torch.testing.assert_close(own_columns, local_keys.T)


def check_batch_negatives(rank):
    """Each query's in-batch negatives are every process's keys but its own positive."""
    moco = build_moco(rank, TinyBackbone, symmetric=False, batch_negatives=True)
    torch.manual_seed(300 + rank)
    x1, x2 = torch.randn(BATCH, *CLIP), torch.randn(BATCH, *CLIP)
    with torch.no_grad():
        q = moco.f_q(x1)
        k_all = torch.cat(gather(moco.f_k(x2)))
    out = moco(x1, x2)
    assert out.logits.shape == (BATCH, 1 + WORLD * BATCH - 1 + K)
    for i in range(BATCH):
        others = [j for j in range(WORLD * BATCH) if j != rank * BATCH + i]
        torch.testing.assert_close(out.logits[i, 1 : WORLD * BATCH], (k_all[others] @ q[i]) / 0.2)


def check_with_bn(rank):
    """With BN each key must come from a per-process sub-batch of a freshly shuffled global batch."""
    moco = build_moco(rank, TinyBNBackbone, symmetric=False)
    torch.manual_seed(200 + rank)
    x1, x2 = torch.randn(BATCH, *CLIP), torch.randn(BATCH, *CLIP)
    x2_all = torch.cat(gather(x2))
    partners_of_first = set()
    for _ in range(STEPS):
        ptr = int(moco.queue_ptr)
        out = moco(x1, x2)
        assert torch.isfinite(out.loss)
        queues = gather(moco.queue)
        assert torch.equal(queues[0], queues[1]), "queues differ across processes"
        keys_all = moco.queue[:, ptr : ptr + WORLD * BATCH].T
        with torch.no_grad():
            for i in range(WORLD * BATCH):
                partners = [
                    j for j in range(WORLD * BATCH)
                    if j != i and torch.allclose(keys_all[i], moco.f_k(x2_all[[i, j]])[0], atol=1e-6)
                ]
                assert len(partners) == 1, f"key {i} was not encoded in a per-process sub-batch of {BATCH}"
                if i == 0:
                    partners_of_first.add(partners[0])
    assert len(partners_of_first) > 1, "the global key batch is not shuffled across processes"


def worker(rank, init_file):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        check_without_bn(rank)
        check_batch_negatives(rank)
        check_with_bn(rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_moco_two_processes_share_one_queue(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD, join=True)
