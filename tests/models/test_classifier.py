import torch

from models.backbones import build_backbone
from models.classifier import VideoClassifier


def test_a_frozen_classifier_keeps_its_backbone_in_eval_mode_and_trains_only_the_head():
    torch.manual_seed(0)
    model = VideoClassifier(build_backbone("small3d", width=4, depth=2), num_classes=3, dropout=0.0, frozen=True)
    model.train()
    assert not model.backbone.training and model.head.training
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}   # BN running stats included
    logits = model(torch.randn(2, 3, 4, 16, 16))                              # NCTHW
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())


def test_a_finetuned_classifier_trains_its_backbone():
    model = VideoClassifier(build_backbone("small3d", width=4, depth=2), num_classes=3, dropout=0.5, frozen=False)
    model.train()
    assert model.backbone.training
    model(torch.randn(2, 3, 4, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters())
