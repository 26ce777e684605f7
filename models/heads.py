"""Heads that sit on a backbone's pooled features (N, feat_dim).

- ProjectionHead: the contrastive projection of MoCo. ``kind="mlp"`` is the
  MoCo v2 head Linear(in, in) - ReLU - Linear(in, dim) (used with R(2+1)D-18);
  ``kind="linear"`` is a single Linear(in, dim) (used with I3D); ``kind="mlp_bn"``
  (beyond the published recipe) adds batch normalisation to the hidden layer, as the
  projectors of SimCLR, BYOL and MoCo v3 do: Linear(in, in) - BN - ReLU - Linear(in, dim).
  (MoCo v3 also normalises the output; with a queue that makes a batch's embeddings sum to
  zero, so a query is pushed from its own positive, which shares its batch, and not from the
  queue's keys.)
- PredictionHead: MoCo v3's (and BYOL's) predictor on the query branch only:
  Linear(dim, hidden) - BN - ReLU - Linear(hidden, dim). The key branch has none, so
  the query cannot match its key by copying the key encoder's projection: it has to
  predict it, which keeps a slowly moving key encoder from dragging every embedding
  to one point (docs/learning.md).
- Classifier: Dropout - Linear for linear probing and finetuning. Dropout lives
  here, not in the backbones, so that an exported backbone state is the same
  whatever dropout a downstream run uses.
"""

from torch import nn

PROJECTION_KINDS = ("mlp", "linear", "mlp_bn")


def bn_mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Linear(in_dim, hidden) - BN - ReLU - Linear(hidden, out_dim); the BN carries the hidden
    layer's bias."""
    return nn.Sequential(nn.Linear(in_dim, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


class ProjectionHead(nn.Module):
    """Project (N, in_dim) features to (N, dim) embeddings (not normalised)."""

    def __init__(self, in_dim: int, dim: int, kind: str = "mlp"):
        super().__init__()
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"ProjectionHead kind must be one of {PROJECTION_KINDS}, got {kind!r}")
        if in_dim < 1 or dim < 1:
            raise ValueError(f"ProjectionHead needs positive sizes, got in_dim={in_dim}, dim={dim}")
        self.kind = kind
        if kind == "mlp":
            self.layers = nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(inplace=True), nn.Linear(in_dim, dim))
        elif kind == "mlp_bn":
            self.layers = bn_mlp(in_dim, in_dim, dim)
        else:
            self.layers = nn.Sequential(nn.Linear(in_dim, dim))

    def forward(self, features):
        return self.layers(features)


class PredictionHead(nn.Module):
    """Map (N, dim) query projections to (N, dim) predictions of the key's (not normalised)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"PredictionHead needs positive sizes, got dim={dim}, hidden={hidden}")
        self.layers = bn_mlp(dim, hidden, dim)

    def forward(self, projections):
        return self.layers(projections)


class Classifier(nn.Module):
    """Map (N, in_dim) features to (N, num_classes) logits, with dropout before the linear layer."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Classifier dropout must be in [0, 1), got {dropout}")
        if in_dim < 1 or num_classes < 1:
            raise ValueError(f"Classifier needs positive sizes, got in_dim={in_dim}, num_classes={num_classes}")
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, features):
        return self.fc(self.dropout(features))
