"""Convolutions that skip the taps meeting only padding: same values and gradients as ``nn.Conv2d``."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from pgnm_monai.networks.padding_taps import PaddingTrimmedConv2d, trim_padding_taps, used_taps
from pgnm_monai.networks.policy import build_trunk


@pytest.mark.parametrize(
    ("size", "kernel", "padding", "stride", "expected"),
    [
        (1, 3, 1, 1, (1, 1, 0)),  # a 1 x 1 map: the centre tap only
        (2, 3, 1, 2, (1, 2, 0)),  # stride 2 on 2 x 2: the lower-right 2 x 2 taps
        (8, 3, 1, 1, (0, 2, 1)),  # a map larger than the kernel: nothing to trim
        (1, 7, 3, 2, (3, 3, 0)),
        (3, 5, 2, 1, (0, 4, 2)),  # every tap meets the map at some position
    ],
)
def test_used_taps(size, kernel, padding, stride, expected):
    assert used_taps(size, kernel, padding, stride) == expected


@pytest.mark.parametrize(
    ("size", "kernel", "padding", "stride"),
    [(1, 3, 1, 1), (2, 3, 1, 2), (3, 3, 1, 2), (1, 7, 3, 2), (5, 3, 1, 1), (2, 5, 2, 1)],
)
def test_trimmed_conv_equals_conv(size, kernel, padding, stride):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding)
    trimmed = PaddingTrimmedConv2d.from_conv(copy.deepcopy(conv))
    x = torch.randn(3, 4, size, size)
    out, out_t = conv(x), trimmed(x)
    assert out.shape == out_t.shape
    torch.testing.assert_close(out_t, out)
    out.square().sum().backward()
    out_t.square().sum().backward()
    torch.testing.assert_close(trimmed.weight.grad, conv.weight.grad)
    torch.testing.assert_close(trimmed.bias.grad, conv.bias.grad)


def test_trim_shares_parameters_and_keys():
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 3, padding=1, groups=3)
    )
    weight = net[0].weight
    keys = list(net.state_dict())
    trim_padding_taps(net)
    assert type(net[0]) is PaddingTrimmedConv2d and net[0].weight is weight
    assert type(net[2]) is nn.Conv2d and type(net[3]) is nn.Conv2d  # no padding; grouped: left alone
    assert list(net.state_dict()) == keys


def test_policy_trunk_on_a_small_input_matches_timm():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    trunk, _ = build_trunk("resnet10t", 2, 1)
    reference = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    reference.load_state_dict(trunk.state_dict())
    assert any(isinstance(m, PaddingTrimmedConv2d) for m in trunk.modules())
    x = torch.randn(4, 1, 16, 16)  # the fast preset's input: 1 x 1 maps in the last stage
    out, ref = trunk(x), reference(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    out.sum().backward()
    ref.sum().backward()
    for (name, p), q in zip(trunk.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)
