"""Classification networks for the bundles: timm's ResNet-10t/18/50 (the paper's), MONAI's DenseNet121 and 3D
ResNet-10/18/50, and a tiny CNN for tests.

Every network maps ``(B, in_channels, *spatial)`` to raw logits ``(B, num_classes)``, is TorchScript-scriptable
(``ckpt_export``) and keeps its classification head under one name, so that a heated checkpoint loads into a
network with another class count by dropping only the head (see :data:`HEAD_PREFIXES`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import DenseNet121, ResNet, resnet18, resnet50
from torch import nn

from pgnm_monai.validation import check_choice

__all__ = [
    "CLASSIFIERS",
    "HEAD_PREFIXES",
    "ChannelsLastMaxPool2d",
    "SmallCNN",
    "build_classifier",
    "check_classifier",
    "monai_resnet3d",
    "small_conv_features",
    "timm_resnet",
]

#: the classifier names: ``resnet10t`` is 2D only (timm's), ``resnet10`` 3D only (:func:`monai_resnet3d`); the others
#: are built in 2D and in 3D (see :func:`build_classifier`).
CLASSIFIERS = ("resnet10t", "resnet10", "resnet18", "resnet50", "densenet121", "small")
#: names that exist in one of 2D / 3D only -> the spatial dims they exist in and the name to use in the other.
_ONE_DIM_ONLY: dict[str, tuple[int, str]] = {"resnet10t": (2, "resnet10"), "resnet10": (3, "resnet10t")}

# parameter-name prefixes of the classification head of each network (what fine-tuning replaces)
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "resnet10t": ("fc.",),
    "resnet10": ("fc.",),
    "resnet18": ("fc.",),
    "resnet50": ("fc.",),
    "densenet121": ("class_layers.out.",),
    "small": ("fc.",),
}


def small_conv_features(in_channels: int, spatial_dims: int = 2, width: int = 16) -> tuple[nn.Sequential, int]:
    """Three strided conv-BN-ReLU blocks (``width``, 2x, 4x channels) + global pooling: ``(B, C, ...) -> (B, F)``.

    Returns:
        the module and its feature size ``F = 4 * width``.
    """
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
    layers: list[nn.Module] = []
    c_in = in_channels
    for i in range(3):
        c_out = width * 2**i
        layers += [conv(c_in, c_out, 3, stride=2, padding=1, bias=False), norm(c_out), nn.ReLU(inplace=True)]
        c_in = c_out
    layers += [pool(1), nn.Flatten()]
    return nn.Sequential(*layers), c_in


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a CPU tensor in channels-last memory format when no gradient is recorded.

    The same values (a maximum is exact), returned in the input's memory format. Without autograd (evaluation,
    inference, probe features) PyTorch's channels-last CPU kernel is an order of magnitude faster than its NCHW
    one; with autograd its backward is slower, so training pools as ``nn.MaxPool2d``, as do other devices.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relayout = (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.dim() == 4
            and not x.is_contiguous(memory_format=torch.channels_last)
        )
        y = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last) if relayout else x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
        )
        return y.contiguous() if relayout else y


class SmallCNN(nn.Module):
    """A tiny CNN (:func:`small_conv_features` and a linear head) for tests and quick demos.

    Args:
        in_channels: image channels.
        num_classes: output logits.
        spatial_dims: 2 or 3.
        width: channels of the first block (doubled in each next block).
    """

    def __init__(self, in_channels: int, num_classes: int, spatial_dims: int = 2, width: int = 16) -> None:
        super().__init__()
        self.features, features = small_conv_features(in_channels, spatial_dims, width)
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def _tiered_stem(in_channels: int, spatial_dims: int) -> nn.Module:
    """The deep "tiered" stem of timm's ResNet-10t: 3x3 convs 24 -> 32 -> 64 (the first with stride 2)."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
    return nn.Sequential(
        conv(in_channels, 24, 3, stride=2, padding=1, bias=False),
        norm(24),
        nn.ReLU(inplace=True),
        conv(24, 32, 3, stride=1, padding=1, bias=False),
        norm(32),
        nn.ReLU(inplace=True),
        conv(32, 64, 3, stride=1, padding=1, bias=False),
    )


def monai_resnet3d(name: str, in_channels: int, num_classes: int | None) -> nn.Module:
    """MONAI's 3D ResNet of depth ``name``, with a stride-2 stem as the 2D networks have.

    Args:
        name: ``resnet10``, ``resnet18`` or ``resnet50``. ``resnet10`` is MONAI's ResNet-10 layout (one basic
            block per stage) with the tiered 3x3 stem of timm's ResNet-10t; it is named by its depth, as MONAI
            names its 3D ResNets (``monai.networks.nets.resnet10``), and not ``resnet10t``, which names timm's 2D
            network (avg-down shortcuts too, and weights that do not fit a 3D network). ``resnet18`` and
            ``resnet50`` are MONAI's, with a 7x7 stride-2 stem instead of MONAI's default stride 1. ``resnet10t``
            is accepted as ``resnet10`` for the policy trunk, whose vocabulary
            (:data:`pgnm_monai.networks.policy.TRUNKS`) names it so in 3D too; :func:`build_classifier` refuses it.
        in_channels: volume channels.
        num_classes: output logits; ``None``: no head, the network maps a volume to its 512-d (resnet10,
            resnet18) or 2048-d (resnet50) pooled features.
    """
    kwargs = {"spatial_dims": 3, "n_input_channels": in_channels, "conv1_t_stride": 2}
    kwargs.update({"num_classes": num_classes} if num_classes is not None else {"feed_forward": False})
    if name == "resnet18":
        return resnet18(**kwargs)
    if name == "resnet50":
        return resnet50(**kwargs)
    if name not in ("resnet10", "resnet10t"):
        raise ValueError(f"3D ResNets are resnet10, resnet18 and resnet50, got {name!r}.")
    net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[64, 128, 256, 512], **kwargs)
    net.conv1 = _tiered_stem(in_channels, 3)
    return net


def check_classifier(name: str, spatial_dims: int = 2) -> str:
    """Return ``name`` when :func:`build_classifier` builds it in ``spatial_dims``, else raise ``ValueError``.

    ``resnet10t`` (timm's 2D ResNet-10-T) is refused in 3D and ``resnet10`` (the 3D ResNet-10) in 2D, each error
    naming the network to use instead.
    """
    check_choice("network", name, CLASSIFIERS)
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}.")
    dims, other = _ONE_DIM_ONLY.get(name, (spatial_dims, name))
    if dims != spatial_dims:
        what = "timm's 2D ResNet-10-T" if name == "resnet10t" else "the 3D ResNet-10 (MONAI's, tiered stem)"
        raise ValueError(
            f"network {name!r} is {what}; there is no {spatial_dims}D {name!r}: did you mean {other!r} "
            f"(spatial_dims {spatial_dims})?"
        )
    return name


def build_classifier(
    name: str, in_channels: int, num_classes: int, spatial_dims: int = 2, init: bool = True
) -> nn.Module:
    """Build a classifier by name.

    Args:
        name: one of :data:`CLASSIFIERS`:

            - ``resnet10t``, ``resnet18``, ``resnet50``: in 2D exactly ``timm.create_model(name, num_classes=...,
              in_chans=...)`` (the paper's networks: the same modules, state-dict keys and shapes; timm's
              ``resnet18`` / ``resnet50`` also have torchvision's keys, so ImageNet weights of either load), with
              the stem's max pool as :class:`ChannelsLastMaxPool2d` (the same values).
            - ``resnet10`` (3D only), ``resnet18``, ``resnet50`` in 3D: MONAI's (:func:`monai_resnet3d`; timm
              has no 3D networks). ``resnet10t`` is 2D only (:func:`check_classifier`).
            - ``densenet121``: MONAI's ``DenseNet121``.
            - ``small``: :class:`SmallCNN` (tests, quick demos).
        in_channels: image channels (1 or 3).
        num_classes: number of output logits (>= 2).
        spatial_dims: 2 or 3.
        init: initialise the weights (seeded, from the global RNG). ``False``: built on PyTorch's meta device and
            given uninitialised CPU memory, without drawing random numbers, for a network whose every weight a
            checkpoint then loads (evaluation, inference: MONAI's ``CheckpointLoader`` loads strictly).
    """
    if not init:
        with torch.device("meta"):
            net = build_classifier(name, in_channels, num_classes, spatial_dims)
        return net.to_empty(device="cpu")
    check_classifier(name, spatial_dims)
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes!r}.")
    in_channels, num_classes = int(in_channels), int(num_classes)
    if name == "small":
        return SmallCNN(in_channels, num_classes, spatial_dims)
    if name == "densenet121":
        return DenseNet121(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=num_classes)
    if spatial_dims == 3:
        return monai_resnet3d(name, in_channels, num_classes)
    return timm_resnet(name, in_channels, num_classes)


def timm_resnet(name: str, in_channels: int, num_classes: int = 0) -> nn.Module:
    """``timm.create_model(name, num_classes=num_classes, in_chans=in_channels)`` with its stem's pool as
    :class:`ChannelsLastMaxPool2d` (the same values and no parameters: the state dict is timm's).

    ``num_classes=0``: no head; the network maps an image to its pooled features (``net.num_features``).
    """
    import timm  # imported when a timm network is built (seconds of start-up saved for the others)

    net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    pool = net.maxpool
    net.maxpool = ChannelsLastMaxPool2d(pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode)
    return net
