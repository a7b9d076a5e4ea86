"""The backbone registry: one registration per backbone, found by name (like timm's ``@register_model``).

Adding a backbone is one registration plus its weight file::

    from rscc.model.registry import WeightSource, register_backbone, strided_shape
    from rscc.model.transforms import imagenet_transform
    from rscc.model.weights import load_tower_file

    IMAGENET = WeightSource("ImageNet", locate=lambda name: (my_weight_file(), ""), load=load_tower_file,
                            where="pip install my-weights==1.0")

    @register_backbone("my-net", shape=strided_shape(1280, default_size=224), trainable=("features",),
                       transform=imagenet_transform, weights={"imagenet": IMAGENET},
                       description="my package's ImageNet MobileNet, without its classifier")
    def _build(config, shape):                   # -> nn.Module: (B, 3, H, W) -> (B, C, s, s)
        return MyNet()

and ``model.backbone: my-net`` (with ``model.pretrained: imagenet``) in a preset, once the module
holding the registration is imported (the built-in ones are imported by :mod:`rscc.model.backbones`;
the packaged ones live in :mod:`rscc.model.pretrained`). A registration says:

* ``shape(config) -> BackboneShape``: (C, s, image side) for a configuration, known without
  building the tower; a :class:`rscc.errors.ConfigError` for an impossible ``image_size``.
  :func:`strided_shape` (CNNs: side a multiple of the stride) and :func:`fixed_shape` (one side
  only, e.g. a ViT) cover the usual cases.
* ``build(config, shape) -> nn.Module``: the randomly initialised tower. It returns (B, C, s, s)
  maps, or, with ``tokens=True``, a pair whose second item is the (B, s*s, C) patch tokens.
* ``trainable``: names of the tower's children trained when ``model.fine_tune`` is set.
* ``transform(image_size) -> callable``: the evaluation transform, PIL image -> (3, H, W) tensor.
* ``weights``: the named weights ``model.pretrained`` may ask for (``remoteclip``, ``imagenet``,
  ``aerial``), each a :class:`WeightSource`; any other value is a local file, read by ``load_file``.
* ``random_by_design``: no warning when ``model.pretrained`` is null (the tiny CPU backbone).

:mod:`rscc.model.backbones` registers the built-in backbones and holds the lookups
(``build_backbone``, ``backbone_shape``) and re-exports :func:`backbone_spec` and
:func:`registered_names`: ask it, not this module, for the backbones, so that every built-in one
is registered (this module imports none of them: registrations import the registry, never the
other way round).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from rscc.errors import ConfigError

if TYPE_CHECKING:  # a type only: rscc.config imports the registry to check backbone names
    from rscc.config import ModelConfig


@dataclass(frozen=True)
class BackboneShape:
    """What a backbone produces for a configuration, known without building it."""

    out_channels: int
    feature_size: int
    image_size: int


@dataclass(frozen=True)
class WeightSource:
    """Named pretrained weights of a backbone (a value of ``model.pretrained``).

    ``locate(backbone name) -> (file or None, why not)``: None keeps the random initialisation
    with a warning (weights that may be fetched later: the hub, the torch cache); weights that
    must be installed raise a one-line ConfigError naming the pip command instead.
    ``load(net, file, backbone name)`` fills the tower; ``where`` says how to get the file."""

    label: str  # what the weights are, in tables: "RemoteCLIP", "ImageNet", "aerial (geoembed)"
    locate: Callable[[str], tuple[Path | None, str]]
    load: Callable[[nn.Module, Path, str], None]
    where: str


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the model needs to know about one backbone (see the module docstring)."""

    name: str
    build: Callable[[ModelConfig, BackboneShape], nn.Module]
    shape: Callable[[ModelConfig], BackboneShape]
    trainable: tuple[str, ...]
    transform: Callable[[int], Callable]
    weights: dict[str, WeightSource] = field(default_factory=dict)
    load_file: Callable[[nn.Module, Path, str], None] | None = None  # a local model.pretrained file
    file_label: str = "local file"  # what a local weight file holds, in tables
    tokens: bool = False
    random_by_design: bool = False
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, build: Callable | None = None, *, shape: Callable[[ModelConfig], BackboneShape],
                      trainable: tuple[str, ...], transform: Callable[[int], Callable],
                      weights: dict[str, WeightSource] | None = None,
                      load_file: Callable[[nn.Module, Path, str], None] | None = None, file_label: str = "local file",
                      tokens: bool = False, random_by_design: bool = False, description: str = ""):
    """Register backbone ``name``; with ``build`` left out, a decorator for the build function.

    Returns ``build`` unchanged. A name registered twice is a programming error (ValueError)."""
    def register(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"backbone '{name}' is registered twice")
        _REGISTRY[name] = BackboneSpec(
            name=name, build=fn, shape=shape, trainable=tuple(trainable), transform=transform,
            weights=dict(weights or {}), load_file=load_file, file_label=file_label, tokens=tokens,
            random_by_design=random_by_design, description=description)
        return fn

    return register if build is None else register(build)


def unregister_backbone(name: str) -> None:
    """Remove ``name`` from the registry (tests that register a toy backbone)."""
    _REGISTRY.pop(name)


def backbone_spec(name: str) -> BackboneSpec:
    """The registration of backbone ``name``; ConfigError naming the valid choices otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"model.backbone '{name}' is not one of {', '.join(_REGISTRY)}") from None


def registered_names() -> list[str]:
    """Every registered backbone name, in registration order."""
    return list(_REGISTRY)


# ----------------------------------------------------------------------------- shapes
def strided_shape(out_channels: int, stride: int = 32,
                  default_size: int = 224) -> Callable[[ModelConfig], BackboneShape]:
    """Shape rule of a CNN with output stride ``stride``: any ``model.image_size`` that is a
    multiple of it (``default_size`` when null) gives (out_channels, side // stride)."""
    def shape(config: ModelConfig) -> BackboneShape:
        size = config.image_size or default_size
        if size % stride:
            raise ConfigError(f"model.image_size must be a multiple of {stride} for the {config.backbone} backbone, "
                              f"got {size}")
        return BackboneShape(out_channels, size // stride, size)

    return shape


def fixed_shape(out_channels: int, feature_size: int, image_size: int) -> Callable[[ModelConfig], BackboneShape]:
    """Shape rule of a tower that takes one image side only (``model.image_size`` that side or null)."""
    def shape(config: ModelConfig) -> BackboneShape:
        if config.image_size not in (None, image_size):
            raise ConfigError(f"model.image_size must be {image_size} (or null) for {config.backbone}, "
                              f"got {config.image_size}")
        return BackboneShape(out_channels, feature_size, image_size)

    return shape
