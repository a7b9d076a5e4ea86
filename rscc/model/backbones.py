"""Siamese backbones (METHOD §2.1): one image encoder, shared by the images before (A) and after (B).

Every backbone maps a batch of images (B, 3, H, W) to a feature map (B, C, s, s) and exposes
``out_channels`` (C), ``feature_size`` (s) and ``transform`` (its evaluation image transform).

=============  ==========================================  ==========  =============================
name           source                                      (C, s)      trainable with ``fine_tune``
=============  ==========================================  ==========  =============================
``RN50``       open_clip visual tower without attnpool     (2048, 7)   layer2, layer3, layer4
``ViT-B-32``   open_clip visual tower, patch tokens        (768, 7)    transformer, ln_post
``ViT-L-14``   open_clip visual tower, patch tokens        (1024, 16)  transformer, ln_post
``resnet50``   torchvision, without avgpool/fc, 256 px     (2048, 8)   maxpool, layer1..layer4
``resnet101``  torchvision, without avgpool/fc, 256 px     (2048, 8)   maxpool, layer1..layer4
``tiny``       small open_clip ViT (``tiny_*`` fields)     (w, 128/p)  transformer, ln_post
=============  ==========================================  ==========  =============================

The trainable sets are the authors' "last three / last two / last five children".
``freeze_backbone`` freezes everything and keeps the backbone in evaluation mode, so that its
features can be cached. Otherwise frozen BatchNorm layers still update their running statistics
in training mode, as they do in the authors' code.

Weights (``ModelConfig.pretrained``): a local file (a RemoteCLIP/CLIP state dict with ``visual.``
keys, or the tower's own keys), ``remoteclip`` (``RemoteCLIP-<name>.pt`` from the Hugging Face
repository ``chendelong/RemoteCLIP``; only from the local cache when ``HF_HUB_OFFLINE`` is set),
``imagenet`` (torchvision weights, only when already in the torch hub cache) or ``None``. When
the weights cannot be had, the backbone keeps its random initialisation and a warning says where
to get them; nothing is downloaded silently.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from rscc.config import ModelConfig
from rscc.errors import CheckpointError, ConfigError

REMOTECLIP_REPO = "chendelong/RemoteCLIP"
CLIP_BACKBONES = ("RN50", "ViT-B-32", "ViT-L-14")
TORCHVISION_BACKBONES = ("resnet50", "resnet101")
BACKBONES = CLIP_BACKBONES + TORCHVISION_BACKBONES + ("tiny",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_SIZE = 256  # the authors feed 256 px LEVIR-CC images to torchvision ResNets


@dataclass(frozen=True)
class BackboneShape:
    """What a backbone produces for a configuration, known without building it."""

    out_channels: int
    feature_size: int
    image_size: int


def backbone_shape(config: ModelConfig) -> BackboneShape:
    """(C, s, image side) of ``config.backbone``; raises ConfigError for unknown names/sizes."""
    name = config.backbone
    if name == "tiny":
        size = config.image_size or 128
        if size % config.tiny_patch:
            raise ConfigError(f"model.image_size {size} is not a multiple of model.tiny_patch {config.tiny_patch}")
        return BackboneShape(config.tiny_width, size // config.tiny_patch, size)
    if name in TORCHVISION_BACKBONES:
        size = config.image_size or TORCHVISION_SIZE
        return BackboneShape(2048, _resnet_feature_size(size, "model.image_size"), size)
    if name == "RN50":
        size = config.image_size or 224
        return BackboneShape(2048, _resnet_feature_size(size, "model.image_size"), size)
    if name in ("ViT-B-32", "ViT-L-14"):
        patch, width = (32, 768) if name == "ViT-B-32" else (14, 1024)
        if config.image_size not in (None, 224):
            raise ConfigError(f"model.image_size must be 224 (or null) for {name}, got {config.image_size}")
        return BackboneShape(width, 224 // patch, 224)
    raise ConfigError(f"model.backbone '{name}' is not one of {', '.join(BACKBONES)}")


def _resnet_feature_size(size: int, field: str) -> int:
    if size % 32:
        raise ConfigError(f"{field} must be a multiple of 32 for a ResNet backbone, got {size}")
    return size // 32


class Backbone(nn.Module):
    """A vision tower ``net`` returning (B, C, s, s) feature maps."""

    def __init__(self, net: nn.Module, shape: BackboneShape, transform: Callable, tokens: bool,
                 trainable: tuple[str, ...], fine_tune: bool, freeze: bool):
        super().__init__()
        self.net = net
        self.out_channels = shape.out_channels
        self.feature_size = shape.feature_size
        self.image_size = shape.image_size
        self.transform = transform
        self.tokens = tokens  # the tower returns (pooled, patch tokens (B, s*s, C))
        self.trainable_children = trainable
        self.frozen = freeze
        for p in self.net.parameters():
            p.requires_grad = False
        if fine_tune and not freeze:
            for name in trainable:
                for p in getattr(self.net, name).parameters():
                    p.requires_grad = True
        if freeze:
            self.net.eval()

    def train(self, mode: bool = True) -> "Backbone":
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


def build_backbone(config: ModelConfig, load_pretrained: bool = True) -> Backbone:
    """The backbone of ``config``, with its pretrained weights when ``load_pretrained``.

    ``load_pretrained=False`` builds a randomly initialised tower without a warning: for a model
    whose weights come from a checkpoint next."""
    shape = backbone_shape(config)
    name = config.backbone
    if name in CLIP_BACKBONES:
        net = _open_clip_tower(name, shape.image_size)
        tokens = name != "RN50"
        trainable = ("layer2", "layer3", "layer4") if name == "RN50" else ("transformer", "ln_post")
        transform = clip_transform(shape.image_size)
    elif name == "tiny":
        net = _tiny_tower(config, shape.image_size)
        tokens, trainable = True, ("transformer", "ln_post")
        transform = clip_transform(shape.image_size)
    else:
        net = _torchvision_tower(name)
        tokens, trainable = False, ("maxpool", "layer1", "layer2", "layer3", "layer4")
        transform = imagenet_transform(shape.image_size)
    if load_pretrained:
        _load_pretrained(net, config)
    return Backbone(net, shape, transform, tokens, trainable, config.fine_tune, config.freeze_backbone)


# ----------------------------------------------------------------------------- towers
def _open_clip_tower(name: str, image_size: int) -> nn.Module:
    import open_clip
    from open_clip.model import _build_vision_tower

    cfg = open_clip.get_model_config(name)
    vision_cfg = dict(cfg["vision_cfg"], image_size=image_size)
    if name != "RN50":
        vision_cfg["output_tokens"] = True
    net = _build_vision_tower(cfg["embed_dim"], vision_cfg, cfg.get("quick_gelu", False))
    if name == "RN50":
        net.attnpool = nn.Identity()  # features are taken before the attention pool
    return net


def _tiny_tower(config: ModelConfig, image_size: int) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    return VisionTransformer(
        image_size=image_size, patch_size=config.tiny_patch, width=config.tiny_width,
        layers=config.tiny_layers, heads=max(1, config.tiny_width // 64), mlp_ratio=4.0,
        output_dim=config.tiny_width, output_tokens=True)


def _torchvision_tower(name: str) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    children = [(k, m) for k, m in net.named_children() if k not in ("avgpool", "fc")]
    return nn.Sequential(OrderedDict(children))


# ----------------------------------------------------------------------------- transforms
def clip_transform(image_size: int) -> Callable:
    """open_clip's evaluation transform: resize (bicubic), centre crop, CLIP mean/std."""
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return open_clip.image_transform(image_size, is_train=False, mean=OPENAI_DATASET_MEAN,
                                     std=OPENAI_DATASET_STD)


def imagenet_transform(image_size: int = TORCHVISION_SIZE) -> Callable:
    """ImageNet normalisation at ``image_size`` px (a no-op resize for images of that size)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Lambda(_to_rgb),
        T.Resize((image_size, image_size)),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _to_rgb(image):
    return image.convert("RGB") if hasattr(image, "convert") else image


# ----------------------------------------------------------------------------- weights
def _load_pretrained(net: nn.Module, config: ModelConfig) -> None:
    source, name = config.pretrained, config.backbone
    if source is None:
        if name != "tiny":  # tiny is random by design
            warnings.warn(f"model.pretrained is null: the {name} backbone keeps its random initialisation; "
                          f"{_where_to_get(name)}", stacklevel=3)
        return
    if source == "remoteclip":
        if name not in CLIP_BACKBONES:
            raise ConfigError(f"model.pretrained 'remoteclip' needs a backbone in {CLIP_BACKBONES}, got '{name}'")
        path, reason = _remoteclip_file(name)
        if path is None:
            warnings.warn(f"RemoteCLIP weights for {name} unavailable ({reason}): the backbone keeps its random "
                          f"initialisation; {_where_to_get(name)}", stacklevel=3)
            return
        _load_tower_file(net, Path(path), name)
        return
    if source == "imagenet":
        if name not in TORCHVISION_BACKBONES:
            raise ConfigError(f"model.pretrained 'imagenet' needs a backbone in {TORCHVISION_BACKBONES}, got '{name}'")
        path = _torchvision_cached_file(name)
        if path is None:
            warnings.warn(f"ImageNet weights for {name} are not in the torch hub cache: the backbone keeps its random "
                          f"initialisation; {_where_to_get(name)}", stacklevel=3)
            return
        _load_tower_file(net, path, name)
        return
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model.pretrained: '{source}' is neither a file nor one of remoteclip, imagenet, null")
    _load_tower_file(net, path, name)


def _where_to_get(name: str) -> str:
    if name in CLIP_BACKBONES:
        return (f"download RemoteCLIP-{name}.pt from https://huggingface.co/{REMOTECLIP_REPO} and set "
                f"model.pretrained=/path/to/RemoteCLIP-{name}.pt")
    if name in TORCHVISION_BACKBONES:
        return (f"run torchvision.models.{name}(weights='IMAGENET1K_V1') once online (fills the torch hub cache) "
                f"or set model.pretrained=/path/to/{name}.pth")
    return "the tiny backbone has no pretrained weights"


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _remoteclip_file(name: str) -> tuple[str | None, str]:
    """Path of RemoteCLIP-<name>.pt (cache only when offline; short metadata timeout)."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None, "huggingface_hub is not installed"
    offline = _hub_offline()
    try:
        path = hf_hub_download(REMOTECLIP_REPO, f"RemoteCLIP-{name}.pt", local_files_only=offline, etag_timeout=10)
    except Exception as exc:  # noqa: BLE001 - offline, missing or unreachable: all mean "no weights"
        why = "HF_HUB_OFFLINE is set and the file is not in the local cache" if offline else type(exc).__name__
        return None, why
    return path, ""


def _torchvision_cached_file(name: str) -> Path | None:
    import torchvision

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1  # what pretrained=True gave the authors
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return path if path.is_file() else None


def _load_tower_file(net: nn.Module, path: Path, name: str) -> None:
    state = read_state_dict(path)
    if any(k.startswith("visual.") for k in state):  # a whole CLIP model: keep the vision tower
        state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    if name == "RN50":
        state = {k: v for k, v in state.items() if not k.startswith("attnpool.")}
    if name in TORCHVISION_BACKBONES:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: not {name} backbone weights (model.pretrained); missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}, wrong shapes {wrong[:3]}")
    net.load_state_dict(state)


def torch_load_failure(exc: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed: the unpickler's reason
    (e.g. ``Unsupported global: GLOBAL os.system``), without torch's advice to retry unsafely."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    reason = reason.removeprefix("WeightsUnpickler error:").strip()
    return reason.split(" Please use `torch.serialization")[0] or type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch pickle loaded with ``weights_only=True``.

    A pickle that needs code to load is refused (CheckpointError), never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, ...
        raise CheckpointError(f"{path}: refused or unreadable checkpoint (loaded with weights_only=True, so a pickle "
                              f"that runs code is rejected): {torch_load_failure(exc)}") from None
    for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return dict(obj)
