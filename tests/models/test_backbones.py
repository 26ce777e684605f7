import pytest
import torch
import torchvision.models.video as tv_video

from models.backbones import (
    BACKBONES,
    apply_backbone_state,
    backbone_names,
    build_backbone,
    export_backbone_state,
    load_backbone_state,
)

torch.set_num_threads(1)

# The smallest clip that passes every architecture's strides (I3D and S3D downsample time by 8, space by 32).
TINY_CLIP = (2, 3, 8, 32, 32)
FEAT_DIMS = {"r2plus1d_18": 512, "r3d_18": 512, "s3d": 1024, "i3d": 1024, "small3d": 128}


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_backbone(name)
        return cache[name]

    return get


def test_registry_names():
    assert backbone_names() == sorted(FEAT_DIMS)
    assert set(BACKBONES) == set(FEAT_DIMS)


@pytest.mark.parametrize("name", sorted(FEAT_DIMS))
def test_every_backbone_returns_pooled_features(built, name):
    backbone = built(name)
    assert backbone.feat_dim == FEAT_DIMS[name]
    with torch.no_grad():
        features = backbone(torch.randn(*TINY_CLIP))
    assert features.shape == (TINY_CLIP[0], FEAT_DIMS[name])
    assert torch.isfinite(features).all()


@pytest.mark.parametrize("name", sorted(FEAT_DIMS))
def test_layout_errors_are_clear(built, name):
    backbone = built(name)
    with pytest.raises(ValueError, match=rf"{name} expects .*NCTHW.*looks like NTHWC"):
        backbone(torch.randn(2, 8, 32, 32, 3))
    with pytest.raises(ValueError, match="NCTHW"):
        backbone(torch.randn(3, 8, 32, 32))
    with pytest.raises(ValueError, match="floating point"):
        backbone(torch.zeros(*TINY_CLIP, dtype=torch.uint8))


def test_small3d_options():
    backbone = build_backbone("small3d", width=8, depth=2)
    assert backbone.feat_dim == 16
    assert backbone(torch.randn(2, 3, 4, 16, 16)).shape == (2, 16)
    with pytest.raises(ValueError, match="width >= 1"):
        build_backbone("small3d", width=0)
    with pytest.raises(ValueError, match="pool must be one of .*'sum'"):
        build_backbone("small3d", pool="sum")


@pytest.mark.parametrize("pool, reduce", [("avg", torch.mean), ("max", torch.amax)])
def test_small3d_pools_its_last_block_over_time_and_space(pool, reduce):
    """The feature is the last block's mean or max over (T, H, W), per clip and channel."""
    torch.manual_seed(0)
    backbone = build_backbone("small3d", width=4, depth=2, pool=pool).eval()
    x = torch.randn(2, 3, 4, 16, 16)
    with torch.no_grad():
        assert torch.allclose(backbone(x), reduce(backbone.blocks(x), dim=(2, 3, 4)), atol=1e-6)


def test_small3d_max_pool_keeps_a_small_response_that_the_average_dilutes():
    """One active spot in an otherwise silent last block: the max keeps it whole, the mean divides
    it by the map size."""
    feature_map = torch.zeros(1, 8, 2, 4, 4)
    feature_map[0, 3, 1, 2, 2] = 1.0
    for pool, expected in (("avg", 1 / 32), ("max", 1.0)):
        backbone = build_backbone("small3d", width=1, depth=1, pool=pool)
        backbone.blocks = torch.nn.Identity()
        assert backbone.pool(feature_map).flatten(1)[0, 3].item() == pytest.approx(expected)


def test_unknown_name_and_option_raise():
    with pytest.raises(ValueError, match="unknown backbone 'resnet50'.*small3d"):
        build_backbone("resnet50")
    with pytest.raises(ValueError, match=r"'r3d_18' got unknown option\(s\) \['width'\]"):
        build_backbone("r3d_18", width=8)


def test_r2plus1d_export_loads_into_torchvision_with_only_fc_missing(built):
    backbone = built("r2plus1d_18").eval()
    state = export_backbone_state(backbone)
    assert all(value.device.type == "cpu" for value in state.values())
    reference = tv_video.r2plus1d_18()
    result = reference.load_state_dict(state, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert result.unexpected_keys == []
    reference.fc = torch.nn.Identity()
    x = torch.randn(*TINY_CLIP)
    with torch.no_grad():
        torch.testing.assert_close(reference.eval()(x), backbone(x))


def test_export_is_a_copy(built):
    backbone = built("small3d")
    state = export_backbone_state(backbone)
    state["blocks.0.conv.weight"].zero_()
    assert backbone.blocks[0].conv.weight.abs().sum() > 0


def test_round_trip_through_load_backbone_state(built):
    state = export_backbone_state(built("i3d"))
    loaded = load_backbone_state("i3d", state)
    for key, value in export_backbone_state(loaded).items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_option_loads_a_torchvision_state_dict(tmp_path):
    torch.manual_seed(1)
    reference = tv_video.r3d_18()
    path = tmp_path / "r3d_18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("r3d_18", checkpoint=str(path))
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(built, prefix):
    exported = export_backbone_state(built("small3d"))
    backbone = build_backbone("small3d")
    report = apply_backbone_state(backbone, {f"{prefix}{key}": value for key, value in exported.items()})
    assert report.ignored_keys == []
    assert all(torch.equal(backbone.state_dict()[key], value) for key, value in exported.items())


def test_loading_another_architecture_fails_clearly(built):
    state = export_backbone_state(built("r3d_18"))
    with pytest.raises(ValueError, match=r"does not match backbone 'i3d'; it looks like a 'r3d_18' backbone"):
        load_backbone_state("i3d", state)


def test_loading_other_options_fails_on_shape():
    state = export_backbone_state(build_backbone("small3d", width=8))
    with pytest.raises(ValueError, match=r"'blocks.0.conv.weight' has shape \(8, 3, 3, 3, 3\).*\(16, 3, 3, 3, 3\)"):
        load_backbone_state("small3d", state, width=16)
