"""Siamese backbones (METHOD §2.1): one image encoder, shared by the images before (A) and after (B).

Every backbone maps a batch of images (B, 3, H, W) to a feature map (B, C, s, s) and exposes
``out_channels`` (C), ``feature_size`` (s) and ``transform`` (its evaluation image transform).
Each is one registration (:mod:`rscc.model.registry`); :func:`registered_names` lists them:

==============================  =======================================  ===========  ====================
name                            source                                   (C, s)       ``model.pretrained``
==============================  =======================================  ===========  ====================
``RN50``                        open_clip visual tower without attnpool  (2048, 7)    ``remoteclip``
``ViT-B-32``                    open_clip visual tower, patch tokens     (768, 7)     ``remoteclip``
``ViT-L-14``                    open_clip visual tower, patch tokens     (1024, 16)   ``remoteclip``
``resnet50``, ``resnet101``     torchvision, without avgpool/fc, 256 px  (2048, 8)    ``imagenet``
``tiny``                        small open_clip ViT (``tiny_*`` fields)  (w, 128/p)   (random by design)
``mobilenet-v2-imagenet``       torchvision MobileNetV2 features         (1280, 7)    ``imagenet`` (package)
``efficientnet-lite0-imagenet`` EfficientNet-Lite0 up to its head conv   (1280, 7)    ``imagenet`` (package)
``geoembed-aerial``             geoembed v3 ResNet-18, 128 px            (512, 16)    ``aerial`` (package)
==============================  =======================================  ===========  ====================

The trainable sets with ``fine_tune`` are the authors' "last three / last two / last five
children" for the paper's backbones (RN50: layer2..4; ViTs: transformer, ln_post; torchvision
ResNets: maxpool, layer1..4); for the packaged ones, see :mod:`rscc.model.pretrained`.
``freeze_backbone`` freezes everything and keeps the backbone in evaluation mode, so that its
features can be cached. Otherwise frozen BatchNorm layers still update their running statistics
in training mode, as they do in the authors' code.

Weights (``ModelConfig.pretrained``): null (random initialisation, with a warning), one of the
names the backbone offers, or a local file (a RemoteCLIP/CLIP state dict with ``visual.`` keys,
or the tower's own keys). ``remoteclip`` is ``RemoteCLIP-<name>.pt`` from the Hugging Face
repository ``chendelong/RemoteCLIP`` (only from the local cache when offline, see :mod:`rscc.offline`);
``imagenet`` for torchvision is used only when already in the torch hub cache. When those cannot
be had, the backbone keeps its random initialisation and a warning says where to get them. The
packaged weights come from installed pip packages; a missing one is a ConfigError naming the pip
command. Nothing is downloaded silently.
"""
from __future__ import annotations

import logging
import warnings
from collections import OrderedDict
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from rscc.errors import CheckpointError, ConfigError
from rscc.model.registry import (
    BackboneShape,
    BackboneSpec,
    WeightSource,
    backbone_spec,
    fixed_shape,
    register_backbone,
    registered_names,
    strided_shape,
)
from rscc.model.transforms import clip_transform, imagenet_transform
from rscc.model.weights import (
    REMOTECLIP_REPO,
    load_tower_file,
    read_state_dict,
    remoteclip_file,
    torch_load_failure,
    torchvision_cached_file,
)

if TYPE_CHECKING:  # a type only: rscc.config imports this module to check backbone names
    from rscc.config import ModelConfig

__all__ = ["Backbone", "BackboneShape", "CLIP_BACKBONES", "TORCHVISION_BACKBONES", "backbone_shape",
           "backbone_spec", "build_backbone", "read_state_dict", "registered_names", "torch_load_failure",
           "weights_label"]

CLIP_BACKBONES = ("RN50", "ViT-B-32", "ViT-L-14")  # the authors' backbones, with RemoteCLIP weights
TORCHVISION_BACKBONES = ("resnet50", "resnet101")  # the authors' ImageNet alternatives
TORCHVISION_SIZE = 256  # the authors feed 256 px LEVIR-CC images to torchvision ResNets


class Backbone(nn.Module):
    """A vision tower ``net`` returning (B, C, s, s) feature maps."""

    def __init__(self, net: nn.Module, *, shape: BackboneShape, transform: Callable, tokens: bool = False,
                 trainable: tuple[str, ...] = (), fine_tune: bool = False, freeze: bool = False):
        super().__init__()
        self.net = net
        self.out_channels = shape.out_channels
        self.feature_size = shape.feature_size
        self.image_size = shape.image_size
        self.transform = transform
        self.tokens = tokens  # the tower returns (pooled, patch tokens (B, s*s, C))
        self.trainable_children = trainable  # names (dotted paths) of submodules of ``net``
        self.frozen = freeze
        for p in self.net.parameters():
            p.requires_grad = False
        if fine_tune and not freeze:
            for name in trainable:
                for p in self.net.get_submodule(name).parameters():
                    p.requires_grad = True
        if freeze:
            self.net.eval()

    def train(self, mode: bool = True) -> Backbone:
        # A frozen backbone stays in evaluation mode: its BatchNorm statistics never move, so
        # cached features equal live ones.
        super().train(mode and not self.frozen)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, s, s)
        out = self.net(images)
        if self.tokens:
            tokens = out[1]  # (B, s*s, C), row-major patches
            s = self.feature_size
            out = tokens.reshape(tokens.shape[0], s, s, self.out_channels).permute(0, 3, 1, 2)
        return out


def backbone_shape(config: ModelConfig) -> BackboneShape:
    """(C, s, image side) of ``config.backbone``; ConfigError for unknown names or impossible sizes."""
    return backbone_spec(config.backbone).shape(config)


def build_backbone(config: ModelConfig, load_pretrained: bool = True) -> Backbone:
    """The backbone of ``config``, with its pretrained weights when ``load_pretrained``.

    ``load_pretrained=False`` builds a randomly initialised tower without a warning: for a model
    whose weights come from a checkpoint next."""
    spec = backbone_spec(config.backbone)
    shape = spec.shape(config)
    net = spec.build(config, shape)
    if load_pretrained:
        _load_pretrained(net, spec, config)
    return Backbone(net, shape=shape, transform=spec.transform(shape.image_size), tokens=spec.tokens,
                    trainable=spec.trainable, fine_tune=config.fine_tune, freeze=config.freeze_backbone)


# ----------------------------------------------------------------------------- weights
def _weight_names() -> set[str]:
    return {tag for name in registered_names() for tag in backbone_spec(name).weights}


def _load_pretrained(net: nn.Module, spec: BackboneSpec, config: ModelConfig) -> None:
    source, name = config.pretrained, spec.name
    if source is None:
        if not spec.random_by_design:
            offers = "; ".join(f"model.pretrained={tag} ({weights.where.format(name=name)})"
                               for tag, weights in spec.weights.items())
            warnings.warn(f"model.pretrained is null: the {name} backbone keeps its random initialisation; "
                          f"pretrained weights: {offers or 'model.pretrained=/path/to/a/weight/file'}", stacklevel=3)
        return
    if source in spec.weights:
        weights = spec.weights[source]
        path, reason = weights.locate(name)
        if path is None:
            warnings.warn(f"{weights.label} weights for {name} unavailable ({reason}): the backbone keeps its "
                          f"random initialisation; {weights.where.format(name=name)}", stacklevel=3)
            return
        weights.load(net, path, name)
        return
    offered = ", ".join(spec.weights) or "no named weights"
    if source in _weight_names():
        raise ConfigError(f"model.pretrained '{source}' is not offered by the {name} backbone "
                          f"({offered}; or a local file, or null)")
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model.pretrained: '{source}' is neither a file nor one of the {name} "
                              f"backbone's weights ({offered}) or null")
    (spec.load_file or load_tower_file)(net, path, name)


def weights_label(config: ModelConfig) -> str:
    """Which weights ``config``'s backbone would load, without building it: the weights' label
    ("RemoteCLIP", "ImageNet", "aerial (geoembed)") or "random init", with the reason in brackets
    when weights were asked for but are not available."""
    spec, source = backbone_spec(config.backbone), config.pretrained
    if source is None:
        return "random init" if spec.random_by_design else "random init (model.pretrained is null)"
    if source in spec.weights:
        weights = spec.weights[source]
        try:
            path, reason = weights.locate(spec.name)
        except ConfigError as exc:  # a package that is not installed
            path, reason = None, str(exc)
        return weights.label if path else f"random init ({weights.label} weights unavailable: {reason})"
    if source in _weight_names():
        return f"none ({spec.name} offers no '{source}' weights)"
    if not Path(source).expanduser().is_file():
        return f"missing file {source}"
    return spec.file_label


# ----------------------------------------------------------------------------- open_clip towers
@contextmanager
def _quiet_open_clip():
    """open_clip logs "No pretrained weights loaded ... initialized randomly" for every tower it
    builds without weights; our own warning says that once, with where to get them."""
    root, handler = logging.getLogger(), logging.NullHandler()  # a handler: logging.warning() skips basicConfig()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(previous)
        root.removeHandler(handler)


def _open_clip_tower(config: ModelConfig, shape: BackboneShape) -> nn.Module:
    import open_clip

    with _quiet_open_clip():
        clip = open_clip.create_model(config.backbone, pretrained=None, force_image_size=shape.image_size,
                                      device=torch.get_default_device())
    net = clip.visual  # the text tower is dropped
    if config.backbone == "RN50":
        net.attnpool = nn.Identity()  # features are taken before the attention pool
    else:
        net.output_tokens = True  # forward returns (pooled, patch tokens)
    return net


REMOTECLIP = WeightSource(
    "RemoteCLIP", locate=remoteclip_file, load=partial(load_tower_file, drop=("attnpool.",)),
    where=(f"download RemoteCLIP-{{name}}.pt from https://huggingface.co/{REMOTECLIP_REPO} and set "
           f"model.pretrained=/path/to/RemoteCLIP-{{name}}.pt"))

_CLIP = dict(transform=clip_transform, weights={"remoteclip": REMOTECLIP},
             load_file=partial(load_tower_file, drop=("attnpool.",)), file_label="RemoteCLIP")
register_backbone("RN50", _open_clip_tower, shape=strided_shape(2048, 32, default_size=224),
                  trainable=("layer2", "layer3", "layer4"), **_CLIP,
                  description="open_clip ModifiedResNet-50, features before the attention pool")
register_backbone("ViT-B-32", _open_clip_tower, shape=fixed_shape(768, 7, 224), trainable=("transformer", "ln_post"),
                  tokens=True, **_CLIP, description="open_clip ViT-B/32, patch tokens")
register_backbone("ViT-L-14", _open_clip_tower, shape=fixed_shape(1024, 16, 224),
                  trainable=("transformer", "ln_post"), tokens=True, **_CLIP,
                  description="open_clip ViT-L/14, patch tokens")


def _tiny_shape(config: ModelConfig) -> BackboneShape:
    size = config.image_size or 128
    if size % config.tiny_patch:
        raise ConfigError(f"model.image_size {size} is not a multiple of model.tiny_patch {config.tiny_patch}")
    return BackboneShape(config.tiny_width, size // config.tiny_patch, size)


@register_backbone("tiny", shape=_tiny_shape, trainable=("transformer", "ln_post"), transform=clip_transform,
                   tokens=True, random_by_design=True,
                   description="a small randomly initialised open_clip ViT (tiny_width, tiny_layers, tiny_patch)")
def _tiny_tower(config: ModelConfig, shape: BackboneShape) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(
        image_size=shape.image_size, patch_size=config.tiny_patch, width=config.tiny_width,
        layers=config.tiny_layers, heads=max(1, config.tiny_width // 64), mlp_ratio=4.0,
        output_dim=config.tiny_width, output_tokens=True)


# ----------------------------------------------------------------------------- torchvision towers
def _torchvision_tower(config: ModelConfig, shape: BackboneShape) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, config.backbone)(weights=None)
    children = [(k, m) for k, m in net.named_children() if k not in ("avgpool", "fc")]
    return nn.Sequential(OrderedDict(children))


TORCHVISION_IMAGENET = WeightSource(
    "ImageNet", locate=torchvision_cached_file, load=partial(load_tower_file, drop=("fc.",)),
    where=("run torchvision.models.{name}(weights='IMAGENET1K_V1') once online (fills the torch hub cache) "
           "or set model.pretrained=/path/to/{name}.pth"))

for _name in TORCHVISION_BACKBONES:
    register_backbone(_name, _torchvision_tower, shape=strided_shape(2048, 32, default_size=TORCHVISION_SIZE),
                      trainable=("maxpool", "layer1", "layer2", "layer3", "layer4"), transform=imagenet_transform,
                      weights={"imagenet": TORCHVISION_IMAGENET}, load_file=partial(load_tower_file, drop=("fc.",)),
                      file_label="ImageNet", description=f"torchvision {_name} without avgpool and fc")

# ----------------------------------------------------------------------------- packaged pretrained towers
import rscc.model.pretrained.efficientnet_lite0  # noqa: E402, F401 - each module registers its backbone
import rscc.model.pretrained.geoembed  # noqa: E402, F401
import rscc.model.pretrained.mobilenet_v2  # noqa: E402, F401

