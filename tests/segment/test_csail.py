"""citylens's CSAIL networks against CSAIL's own model code (PyPI ``mit-semseg``).

Both are built without pretrained weights (nothing is downloaded); one set of random
weights, saved as the published encoder/decoder files would be, is loaded into both
(CSAIL's side with its own ``torch.load``; ours strictly), and the outputs compared.
"""

from __future__ import annotations

import pytest
import torch
from mit_semseg.models import resnet as csail_resnet
from mit_semseg.models.models import PPMDeepsup, Resnet, ResnetDilated
from mit_semseg.models.models import UPerNet as CsailUPerNet

from citylens.segment.csail import WeightsMismatch, build_csail, load_csail_state


def _randomise(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights *and* BatchNorm statistics, so eval-mode BN is not an identity."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in module.state_dict().items():
        if k.endswith(
            ("num_batches_tracked", "_running_iter", "_tmp_running_mean", "_tmp_running_var")
        ):
            state[k] = v
        elif k.endswith("running_var"):
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            state[k] = torch.randn(v.shape, generator=g) * 0.1
        elif k.endswith("weight") and v.dim() == 1:  # BN gamma
            state[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            fan_in = v[0].numel()
            state[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5
    return state


def _theirs(name: str):
    trunk = csail_resnet.resnet50(pretrained=False)
    if name == "ade20k-ppm":
        return ResnetDilated(trunk, dilate_scale=8), PPMDeepsup(150, 2048, use_softmax=True)
    return Resnet(trunk), CsailUPerNet(150, 2048, use_softmax=True, fpn_dim=512)


@pytest.mark.parametrize("name", ["ade20k-ppm", "ade20k-upernet"])
def test_state_dict_keys_and_shapes_equal_csail(name):
    enc, dec = _theirs(name)
    ours = build_csail(name)
    for theirs, mine in ((enc, ours.encoder), (dec, ours.decoder)):
        a = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
        b = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
        assert a == b


@pytest.mark.parametrize("name", ["ade20k-ppm", "ade20k-upernet"])
def test_outputs_equal_csail_with_same_random_weights(name, tmp_path):
    enc, dec = _theirs(name)
    enc_state, dec_state = _randomise(enc, 1), _randomise(dec, 2)
    torch.save(enc_state, tmp_path / "encoder_epoch_20.pth")
    torch.save(dec_state, tmp_path / "decoder_epoch_20.pth")
    # CSAIL's loader (load_state_dict after torch.load) on their side
    enc.load_state_dict(torch.load(tmp_path / "encoder_epoch_20.pth", weights_only=True))
    dec.load_state_dict(torch.load(tmp_path / "decoder_epoch_20.pth", weights_only=True))
    enc.eval(), dec.eval()
    ours = build_csail(name)
    load_csail_state(ours.encoder, torch.load(tmp_path / "encoder_epoch_20.pth"), "enc")
    load_csail_state(ours.decoder, torch.load(tmp_path / "decoder_epoch_20.pth"), "dec")
    ours.eval()

    x = torch.randn(2, 3, 72, 96, generator=torch.Generator().manual_seed(3))
    seg_size = (90, 120)
    with torch.no_grad():
        expected = dec(enc(x, return_feature_maps=True), segSize=seg_size)
        got = ours(x, seg_size)
    assert got.shape == (2, 150, 90, 120)
    assert expected.std() > 1e-3  # not a degenerate (uniform) output
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_dilated_encoder_has_output_stride_8():
    net = build_csail("ade20k-ppm").eval()
    with torch.no_grad():
        feats = net.encoder(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (256, 16, 24),
        (512, 8, 12),
        (1024, 8, 12),
        (2048, 8, 12),
    ]


def test_strict_loading_lists_missing_unexpected_and_shape_keys():
    net = build_csail("ade20k-ppm")
    state = dict(net.decoder.state_dict())
    del state["conv_last.4.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["conv_last.4.weight"] = torch.zeros(151, 512, 1, 1)
    with pytest.raises(WeightsMismatch) as err:
        load_csail_state(net.decoder, state, "decoder_epoch_20.pth")
    msg = str(err.value)
    assert "decoder_epoch_20.pth" in msg
    assert "missing keys: conv_last.4.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "conv_last.4.weight: checkpoint (151, 512, 1, 1)" in msg


def test_old_checkpoints_without_bn_counters_and_with_module_prefix_load():
    net = build_csail("ade20k-ppm")
    src = _randomise(net.decoder, 5)
    optional = ("num_batches_tracked", "_tmp_running_mean", "_tmp_running_var", "_running_iter")
    state = {f"module.{k}": v for k, v in src.items() if not k.endswith(optional)}
    load_csail_state(net.decoder, state, "dec")
    torch.testing.assert_close(net.decoder.conv_last[4].weight, src["conv_last.4.weight"])
