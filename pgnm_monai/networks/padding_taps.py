"""Convolutions that skip the kernel taps which only ever meet zero padding.

On a small feature map a padded convolution has taps that touch padding at every output position: a 3 x 3 kernel
with padding 1 on a 1 x 1 map uses only its centre tap. Those taps add zeros in the forward pass and receive zero
gradient, yet the convolution (and its weight gradient, the costly part) still computes them.
:class:`PaddingTrimmedConv2d` slices the weight to the taps that meet the map and lowers the padding to match: the
same output and the same gradients (zeros for the skipped taps), up to float rounding, at the cost of the taps
used. A timm ResNet-10t on the ``fast`` preset's 16 x 16 policy input has 1 x 1 and 2 x 2 maps in its last stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PaddingTrimmedConv2d", "trim_padding_taps", "used_taps"]


def used_taps(size: int, kernel: int, padding: int, stride: int) -> tuple[int, int, int]:
    """The taps ``[first, last]`` of a ``kernel``-wide convolution along one dim of length ``size`` that meet the map
    at some output position, and the padding that keeps the output the same with only those taps.

    Returns ``(0, kernel - 1, padding)`` when nothing can be trimmed (or trimming would change the output size).
    """
    outputs = (size + 2 * padding - kernel) // stride + 1
    first = max(0, padding - (outputs - 1) * stride)
    last = min(kernel - 1, size - 1 + padding)
    new_padding = padding - first
    if outputs < 1 or last < first or (size + 2 * new_padding - (last - first + 1)) // stride + 1 != outputs:
        return 0, kernel - 1, padding
    return first, last, new_padding


class PaddingTrimmedConv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding, no dilation, one group) that convolves with only the taps meeting the input.

    Same parameters, state-dict keys and results as ``nn.Conv2d``; made from one by :meth:`from_conv`.
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> PaddingTrimmedConv2d:
        """A trimmed convolution sharing ``conv``'s parameters (no copy)."""
        trimmed = cls.__new__(cls)
        trimmed.__dict__.update(conv.__dict__)
        return trimmed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (ph, pw), (sh, sw) = self.kernel_size, self.padding, self.stride
        h0, h1, new_ph = used_taps(x.shape[-2], kh, ph, sh)
        w0, w1, new_pw = used_taps(x.shape[-1], kw, pw, sw)
        if (h0, h1, w0, w1) == (0, kh - 1, 0, kw - 1):
            return super().forward(x)
        weight = self.weight[:, :, h0 : h1 + 1, w0 : w1 + 1]
        return F.conv2d(x, weight, self.bias, self.stride, (new_ph, new_pw))


def _trimmable(conv: nn.Module) -> bool:
    return (
        type(conv) is nn.Conv2d
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding != (0, 0)
    )


def trim_padding_taps(module: nn.Module) -> nn.Module:
    """Replace, in place, every padded plain ``nn.Conv2d`` of ``module`` by a :class:`PaddingTrimmedConv2d` sharing
    its parameters; returns ``module`` (state-dict keys unchanged)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if _trimmable(child):
                setattr(parent, name, PaddingTrimmedConv2d.from_conv(child))
    return module
