"""MoCo (v2-style, with a symmetric loss) in the paper's symbols.

f_q, f_k: query and momentum key encoders, each backbone + projection head +
L2 normalisation. θ_k ← m θ_k + (1 - m) θ_q (``momentum_update``, parameters
only; the key encoder's BN running statistics come from its own forwards).
The queue holds K normalised keys as columns of a (dim, K) buffer. Its write position is a
Python int, so enqueueing never reads the device (no host sync per step); the ``queue_ptr``
buffer mirrors it for checkpoints, and loading a state dict sets the int from it. Every
process enqueues the same gathered keys, so the ints of a DDP run stay equal. Its initial random keys
come from a generator seeded with ``queue_seed`` (the run's seed), not the global RNG: the
processes of a run seed their global RNGs differently (seed + rank) and
DDP(broadcast_buffers=False) does not broadcast buffers, yet they must share one queue.

InfoNCE for queries q and keys k (both (N, dim), unit norm):
    l_pos = q·k (N, 1), l_neg = q·queue (N, K), logits = [l_pos, l_neg] / T,
    L(q, k) = cross-entropy(logits, label 0).
With ``batch_negatives`` (beyond MoCo v2; MoCo v3 and SimCLR contrast within the
batch) l_neg also holds q·k_j for the other keys j of the step (every process's,
gathered), (N, K + world x N - 1). With FAME these include the key of the clip
whose background the query wears: the negative that a background shortcut
cannot tell from the positive.
With ``drop_own_keys`` (beyond the paper) the queue also remembers which video each key came
from (``forward``'s ``ids``: the videos' indices in the training list), and a query's
negatives leave out the keys of its own video: a queue that holds more keys than the
dataset has videos per pass holds earlier views of the query's own video, which InfoNCE
would push away as if they were other videos (with 96 training videos and K = 1024, about
ten per video). Their logits are set to -inf, so they drop out of the softmax.
Symmetric: loss = (L(q1, k2) + L(q2, k1)) / 2, with q_i = f_q(x_i), k_i = f_k(x_i);
otherwise loss = L(q1, k2).
With a predictor (``predictor_dim`` > 0; MoCo v3) the queries are q_i = normalize(g(h_q(x_i)))
for the query backbone + projection h_q and the prediction head g (query branch only); the
keys stay k_i = f_k(x_i).

``forward(x1, x2, ids=None)`` (x: float NCTHW; ids: (N,) video indices, read with
``drop_own_keys``) returns MoCoOutput(loss, logits, labels);
in symmetric mode logits/labels stack both directions ((2N, 1 + K), (2N,)).
In training mode it then enqueues the keys: in symmetric mode [k1; k2] of
every process (rank-major: rank 0's k1, k2, then rank 1's ...), otherwise k2.
K must be divisible by the number of keys enqueued per step
(world_size x N x (2 if symmetric else 1)); ``check_queue_size`` says so.
The runner calls ``momentum_update()`` after each optimiser step.

Shuffle-BN (training mode only, so BN statistics cannot reveal which key is
the positive):
- under torch.distributed with world > 1: the key batch is gathered from all
  processes, permuted by a permutation drawn on rank 0 and broadcast, each
  process encodes its slice of the permuted batch, the keys are gathered and
  each process takes back its own samples in their original order. Queries
  are encoded on each process's own batch, unshuffled.
- in one process: the same thing on ``shuffle_bn_groups`` (G) virtual
  devices. Queries are encoded in G contiguous sub-batches; keys in G
  sub-batches of a random permutation of the batch, then put back in order.
  So the BN statistics of a query and of its positive key come from
  different subsets of the batch, as with G GPUs.
"""

import copy
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from models.heads import PredictionHead, ProjectionHead

QUEUE_SEED = 0  # the initial queue's default seed (runners pass the run's seed)


class MoCoOutput(NamedTuple):
    loss: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor


class Encoder(nn.Module):
    """backbone -> projection head -> L2 normalisation: (N, 3, T, H, W) -> (N, dim)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def project(self, x):
        """The head's output before normalisation."""
        return self.head(self.backbone(x))

    def forward(self, x):
        return F.normalize(self.project(x), dim=1)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` of every process along dim 0 (rank order, no gradient)."""
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.contiguous())
    return torch.cat(gathered, dim=0)


def check_queue_size(K: int, batch_size: int, world: int = 1, symmetric: bool = True) -> None:
    """Raise a ValueError unless the queue size K is a multiple of the keys enqueued per step."""
    keys_per_step = world * batch_size * (2 if symmetric else 1)
    if keys_per_step < 1 or K % keys_per_step != 0:
        raise ValueError(
            f"MoCo queue size K={K} must be divisible by the keys enqueued per step "
            f"= world size {world} x batch {batch_size} x {2 if symmetric else 1} "
            f"({'symmetric: k1 and k2' if symmetric else 'k2 only'}) = {keys_per_step}"
        )


@torch.no_grad()
def contrastive_accuracy(logits: torch.Tensor, labels: torch.Tensor, topk=(1, 5)) -> tuple[torch.Tensor, ...]:
    """Top-k accuracies in percent (0-dim tensors, no host sync); k is capped at the number of logits."""
    max_k = min(max(topk), logits.shape[1])
    top = logits.topk(max_k, dim=1).indices
    hits = top.eq(labels.view(-1, 1))
    return tuple(hits[:, : min(k, max_k)].any(dim=1).float().mean() * 100.0 for k in topk)


def initial_queue(dim: int, K: int, seed: int = QUEUE_SEED) -> torch.Tensor:
    """(dim, K) random unit-norm keys drawn from their own generator seeded with ``seed``: the
    same whatever the global RNG, so on every process of a run given the run's seed."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(dim, K, generator=generator), dim=0)


class MoCo(nn.Module):
    def __init__(
        self,
        backbone_q: nn.Module,
        backbone_k: nn.Module | Callable[[], nn.Module] | None = None,
        dim: int = 128,
        K: int = 65536,
        m: float = 0.999,
        T: float = 0.1,
        head: str = "mlp",
        symmetric: bool = True,
        shuffle_bn: bool = True,
        shuffle_bn_groups: int = 2,
        batch_negatives: bool = False,
        queue_seed: int = QUEUE_SEED,
        predictor_dim: int = 0,
        drop_own_keys: bool = False,
    ):
        """``backbone_k``: a module of the same architecture, a factory for one, or None (a deep copy).
        ``queue_seed``: seeds the initial queue (the run's seed, the same on every process).
        ``predictor_dim``: the hidden width of the query branch's prediction head; 0: none (published).
        ``drop_own_keys``: leave the queue's keys of a query's own video out of its negatives."""
        super().__init__()
        if not hasattr(backbone_q, "feat_dim"):
            raise ValueError(f"MoCo needs a backbone with a feat_dim attribute, got {type(backbone_q).__name__}")
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"MoCo momentum m must be in [0, 1], got {m}")
        if T <= 0:
            raise ValueError(f"MoCo temperature T must be positive, got {T}")
        if K < 1 or dim < 1:
            raise ValueError(f"MoCo needs K >= 1 and dim >= 1, got K={K}, dim={dim}")
        if shuffle_bn_groups < 1:
            raise ValueError(f"MoCo shuffle_bn_groups must be >= 1, got {shuffle_bn_groups}")
        if predictor_dim < 0:
            raise ValueError(f"MoCo predictor_dim must be >= 0 (0: no predictor), got {predictor_dim}")
        self.K, self.m, self.T = K, m, T
        self.symmetric = symmetric
        self.shuffle_bn = shuffle_bn
        self.shuffle_bn_groups = shuffle_bn_groups
        self.batch_negatives = batch_negatives
        self.drop_own_keys = drop_own_keys

        head_q = ProjectionHead(backbone_q.feat_dim, dim, kind=head)
        if backbone_k is None:
            backbone_k = copy.deepcopy(backbone_q)
        elif not isinstance(backbone_k, nn.Module):
            backbone_k = backbone_k()
        self.f_q = Encoder(backbone_q, head_q)
        self.f_k = Encoder(backbone_k, copy.deepcopy(head_q))
        try:
            self.f_k.load_state_dict(self.f_q.state_dict())
        except RuntimeError as error:
            raise ValueError(f"MoCo key backbone does not match the query backbone: {error}") from error
        for theta_k in self.f_k.parameters():
            theta_k.requires_grad_(False)
        self.predictor = PredictionHead(dim, predictor_dim) if predictor_dim else None

        self.register_buffer("queue", initial_queue(dim, K, queue_seed))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self._queue_ptr = 0   # the write position; queue_ptr mirrors it for the state dict
        if drop_own_keys:     # the video of each queued key; -1: an initial random key
            self.register_buffer("queue_ids", torch.full((K,), -1, dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Load as nn.Module does, then take the write position from the loaded queue_ptr (one host
        read per load, not per step); a position outside the queue is a load error."""
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + "queue_ptr"
        if key in state_dict:
            ptr = int(self.queue_ptr[0])
            if not 0 <= ptr < self.K:
                error_msgs.append(f"{key} is {ptr}: outside the queue of K={self.K} keys")
            else:
                self._queue_ptr = ptr

    @property
    def backbone(self) -> nn.Module:
        """The query backbone: the one to export after pretraining."""
        return self.f_q.backbone

    @torch.no_grad()
    def momentum_update(self) -> None:
        """θ_k ← m θ_k + (1 - m) θ_q for every parameter."""
        for theta_q, theta_k in zip(self.f_q.parameters(), self.f_k.parameters(), strict=True):
            theta_k.mul_(self.m).add_(theta_q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """Write the keys of every process (gathered) into the queue at queue_ptr, replacing the oldest,
        and with drop_own_keys their videos' ``ids`` (None: -1, no video).
        The position is kept as a Python int: nothing here waits for the device."""
        keys = concat_all_gather(keys)
        n = keys.shape[0]
        if self.K % n != 0:
            raise ValueError(
                f"MoCo queue size K={self.K} must be divisible by the {n} keys enqueued per step "
                f"(world size {world_size()} x batch x {2 if self.symmetric else 1} views)"
            )
        ptr = self._queue_ptr
        self.queue[:, ptr : ptr + n] = keys.T.to(self.queue.dtype)
        if self.drop_own_keys:
            self.queue_ids[ptr : ptr + n] = -1 if ids is None else concat_all_gather(ids.to(self.queue_ids))
        self._queue_ptr = (ptr + n) % self.K
        self.queue_ptr.fill_(self._queue_ptr)

    def _query(self, x):
        """f_q(x), or with a predictor normalize(g(h_q(x)))."""
        if self.predictor is None:
            return self.f_q(x)
        return F.normalize(self.predictor(self.f_q.project(x)), dim=1)

    def _encode_q(self, x):
        if self.training and self.shuffle_bn and not is_distributed() and self.shuffle_bn_groups > 1:
            self._check_groups(x)
            return torch.cat([self._query(part) for part in torch.tensor_split(x, self.shuffle_bn_groups)], dim=0)
        return self._query(x)

    @torch.no_grad()
    def _encode_k(self, x):
        if not (self.training and self.shuffle_bn):
            return self.f_k(x)
        if is_distributed():
            return self._encode_k_shuffled_across_processes(x)
        if self.shuffle_bn_groups == 1:
            return self.f_k(x)
        self._check_groups(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        parts = torch.tensor_split(x[perm], self.shuffle_bn_groups)
        k_shuffled = torch.cat([self.f_k(part) for part in parts], dim=0)
        return k_shuffled[torch.argsort(perm)]

    def _encode_k_shuffled_across_processes(self, x):
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = concat_all_gather(torch.tensor([x.shape[0]], device=x.device))
        if not bool((sizes == x.shape[0]).all()):
            raise ValueError(f"MoCo shuffle-BN needs the same batch size on every process, got {sizes.tolist()}")
        x_all = concat_all_gather(x)
        perm = torch.randperm(x_all.shape[0], device=x.device)
        dist.broadcast(perm, src=0)
        k_all = concat_all_gather(self.f_k(x_all[perm.view(world, -1)[rank]]))
        return k_all[torch.argsort(perm).view(world, -1)[rank]]

    def _check_groups(self, x):
        if x.shape[0] < self.shuffle_bn_groups:
            raise ValueError(
                f"MoCo single-process shuffle-BN splits the batch into {self.shuffle_bn_groups} groups; "
                f"batch {x.shape[0]} is too small (use a larger batch or shuffle_bn_groups=1)"
            )

    def infonce(self, q: torch.Tensor, k: torch.Tensor, ids: torch.Tensor | None = None):
        """L(q, k) against the queue (and the step's other keys with batch_negatives):
        returns (loss, logits (N, 1 + negatives), labels (N,) of zeros). With drop_own_keys and
        ``ids`` the queue's keys of each query's own video get the logit -inf."""
        l_pos = (q * k).sum(dim=1, keepdim=True)
        l_neg = q @ self.queue.clone().to(q.dtype)
        if self.drop_own_keys and ids is not None:
            l_neg = l_neg.masked_fill(self.queue_ids.view(1, -1) == ids.view(-1, 1), float("-inf"))
        if self.batch_negatives and self.training:
            l_neg = torch.cat([self._batch_negatives(q, k), l_neg], dim=1)
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels), logits, labels

    def _batch_negatives(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q·k_j for every key j of the step on every process except q's own positive: (N, world x N - 1),
        the keys in gathered order. Picked by index (torch.gather), not by a boolean mask, whose
        size the host would have to read from the device."""
        k_all = concat_all_gather(k)
        n, m = q.shape[0], k_all.shape[0]
        own = torch.arange(n, device=q.device) + (dist.get_rank() * n if is_distributed() else 0)
        columns = torch.arange(m - 1, device=q.device).expand(n, -1)
        others = columns + (columns >= own.view(-1, 1)).long()    # skip column own[i] in row i
        return torch.gather(q @ k_all.T.to(q.dtype), 1, others)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, ids: torch.Tensor | None = None) -> MoCoOutput:
        q1 = self._encode_q(x1)
        k2 = self._encode_k(x2)
        loss, logits, labels = self.infonce(q1, k2, ids)
        keys, key_ids = k2, ids
        if self.symmetric:
            q2 = self._encode_q(x2)
            k1 = self._encode_k(x1)
            loss_21, logits_21, labels_21 = self.infonce(q2, k1, ids)
            loss = (loss + loss_21) / 2
            logits = torch.cat([logits, logits_21], dim=0)
            labels = torch.cat([labels, labels_21], dim=0)
            keys = torch.cat([k1, k2], dim=0)
            key_ids = None if ids is None else torch.cat([ids, ids], dim=0)
        if self.training:
            self.enqueue(keys, key_ids)
        return MoCoOutput(loss, logits, labels)
