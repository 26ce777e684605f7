import pytest
import torch
from torch import nn

from models.heads import Classifier, ProjectionHead


def test_mlp_head_is_linear_relu_linear():
    head = ProjectionHead(512, 128, kind="mlp")
    kinds = [type(layer) for layer in head.layers]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear]
    assert head.layers[0].weight.shape == (512, 512)
    assert head.layers[2].weight.shape == (128, 512)
    assert head(torch.randn(3, 512)).shape == (3, 128)


def test_linear_head():
    head = ProjectionHead(1024, 128, kind="linear")
    assert [type(layer) for layer in head.layers] == [nn.Linear]
    assert head(torch.randn(3, 1024)).shape == (3, 128)


def test_bad_head_kind_raises():
    with pytest.raises(ValueError, match="kind must be one of"):
        ProjectionHead(8, 4, kind="conv")


def test_classifier_dropout_acts_in_training_only():
    torch.manual_seed(0)
    classifier = Classifier(64, 10, dropout=0.7)
    features = torch.randn(4, 64)
    classifier.eval()
    expected = classifier.fc(features)
    torch.testing.assert_close(classifier(features), expected)
    classifier.train()
    assert not torch.allclose(classifier(features), expected)
    with pytest.raises(ValueError, match="dropout"):
        Classifier(64, 10, dropout=1.0)
