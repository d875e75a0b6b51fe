import pytest
import torch
import torchvision

from citylens.errors import UnsafeFileError
from citylens.models import ARCHITECTURES, GeometryError, build_model, load_state_dict

# Thesis Table 1: descriptor dimensions 196 / 49 / 324 / 1764 at 224 px.
PAPER_CAM_SIZES = {"vgg11": (14, 14), "resnet18": (7, 7), "simple": (18, 18), "simpler": (42, 42)}


def test_registry_has_the_papers_four_models():
    assert set(ARCHITECTURES) == set(PAPER_CAM_SIZES)


@pytest.mark.parametrize("arch", sorted(PAPER_CAM_SIZES))
def test_target_layer_geometry_at_224(arch):
    model = build_model(arch, num_classes=2, input_size=224).eval()
    assert model.cam_size == PAPER_CAM_SIZES[arch]
    with torch.no_grad():
        acts = model.features(torch.zeros(2, 3, 224, 224))
        logits = model.head(acts)
    assert tuple(acts.shape[2:]) == PAPER_CAM_SIZES[arch]
    assert acts.shape[1] == model.target_channels
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("arch", sorted(PAPER_CAM_SIZES))
def test_forward_is_head_of_features(arch):
    model = build_model(arch, num_classes=3, input_size=128).eval()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), model.head(model.features(x)))
    assert model(x).shape == (2, 3)


def test_shallow_nets_match_table_2():
    simple = build_model("simple", 2, 224)
    convs = [m for m in simple.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.padding[0]) for c in convs] == [
        (20, 5, 0),
        (64, 7, 0),
        (96, 5, 0),
        (128, 7, 0),
    ]
    fcs = [m for m in simple.head if isinstance(m, torch.nn.Linear)]
    assert [f.out_features for f in fcs] == [4096, 100, 2]
    simpler = build_model("simpler", 2, 224)
    convs = [m for m in simpler.features if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0]) for c in convs] == [(20, 9), (64, 9), (96, 9)]
    # Every convolution is followed by a ReLU; the target layer is a ReLU output.
    assert isinstance(simpler.features[-1], torch.nn.ReLU)
    assert isinstance(simple.features[-1], torch.nn.ReLU)


def test_too_small_input_is_a_clear_error():
    with pytest.raises(GeometryError, match="simple: input size 48 px"):
        build_model("simple", 2, 48)
    with pytest.raises(GeometryError, match="vgg11"):
        build_model("vgg11", 2, 16)


def test_unknown_architecture_and_classes():
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'.*vgg11"):
        build_model("alexnet", 2)
    with pytest.raises(ValueError, match="at least 2"):
        build_model("resnet18", 1)


def test_vgg_feature_keys_match_torchvision():
    model = build_model("vgg11", 2, 64)
    tv = torchvision.models.vgg11(weights=None, num_classes=2)
    ours = {k for k in model.state_dict() if k.startswith("features.")}
    theirs = {k for k in tv.state_dict() if k.startswith("features.")}
    assert ours == theirs


def test_init_weights_from_a_torchvision_checkpoint(tmp_path):
    tv = torchvision.models.resnet18(weights=None)  # 1000 ImageNet classes
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(tv.state_dict(), path)
    model = build_model("resnet18", 2, 64, init_weights=str(path))
    assert torch.equal(model.features[0].weight, tv.conv1.weight)
    assert torch.equal(model.features[7][1].conv2.weight, tv.layer4[1].conv2.weight)
    assert model.head[-1].out_features == 2  # the 1000-class layer is not loaded

    bad = dict(tv.state_dict())
    bad["layer9.weight"] = torch.zeros(1)
    del bad["conv1.weight"]
    torch.save(bad, path)
    expected = r"missing=\['conv1.weight'\].*unexpected=\['layer9.weight'\]"
    with pytest.raises(ValueError, match=expected):
        build_model("resnet18", 2, 64, init_weights=str(path))


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_weights_loading_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Exploit()}, path)
    with pytest.raises(UnsafeFileError) as err:
        load_state_dict(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}: not a plain state_dict") and "refused it for safety" in text
    assert "weights_only" not in text  # never the advice to turn the check off
