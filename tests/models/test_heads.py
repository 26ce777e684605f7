import pytest
import torch
from torch import nn

from models.heads import Classifier, PredictionHead, ProjectionHead


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


def test_mlp_bn_head_has_batch_norm_in_its_hidden_layer():
    head = ProjectionHead(16, 8, kind="mlp_bn")
    assert [type(layer) for layer in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head.layers[0].bias is None and head.layers[3].bias is not None
    hidden = head.layers[:2].train()(torch.randn(32, 16) + 5.0)
    torch.testing.assert_close(hidden.mean(dim=0), torch.zeros(16), atol=1e-5, rtol=0)
    assert head(torch.randn(32, 16)).shape == (32, 8)


def test_prediction_head():
    head = PredictionHead(8, 32)
    assert [type(layer) for layer in head.layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert head(torch.randn(4, 8)).shape == (4, 8)
    with pytest.raises(ValueError, match="positive sizes"):
        PredictionHead(8, 0)
