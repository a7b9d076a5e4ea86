"""geoembed v3 in torch: its ResNet-18 variant (3x3 stride-1 stem, no max-pool), self-supervised on
aerial tiles, with the arrays of ``geoembed/weights/v3.npz``.

The package runs on OpenCL (netcl). This port follows ``geoembed.arch.TileEncoderV3`` and
``NetCLResNet18``: inputs in [-1, 1] (``(x/255 - 0.5) / 0.5``) at 128 px, feature map (512, s/8);
``GeoEmbedV3.embed`` adds the package's 4x4 average pool, linear layer and L2 norm (256-d).

Registered as the backbone ``geoembed-aerial`` (the backbone ``bb`` alone, (512, 16) at 128 px,
``model.pretrained: aerial``); ``fine_tune`` trains layer2..layer4.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rscc.model.registry import register_backbone, strided_shape
from rscc.model.transforms import symmetric_transform
from rscc.model.weights import PackagedWeights

NAME = "geoembed-aerial"
WEIGHTS = PackagedWeights("geoembed", "weights/v3.npz", "pip install --no-deps geoembed==1.1.2")
OUT_CHANNELS = 512
IMAGE_SIZE = 128  # feature map side IMAGE_SIZE / 8
BN_EPS = 1e-5


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus a (1x1 conv, BN) shortcut when the shape changes, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, 0, bias=False), _bn(cout))
                      if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class GeoEmbedResNet18(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 8*base, H/8, W/8); child names match the npz keys (``bb.``)."""

    def __init__(self, base: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, base, 3, 1, 1, bias=False), _bn(base), nn.ReLU())
        widths = (base, base * 2, base * 4, base * 8)
        cin = base
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, stride), BasicBlock(w, w, 1)))
            cin = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class GeoEmbedV3(nn.Module):
    """The whole v3 tile encoder: backbone ``bb``, 4x4 average pool, ``fc`` (weights stored (in, out))."""

    def __init__(self, base: int = 64, embed_dim: int = 256, pool_size: int = 4):
        super().__init__()
        self.bb = GeoEmbedResNet18(base)
        self.pool_size = pool_size
        self.fc = nn.Linear(base * 8 * pool_size * pool_size, embed_dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 256), unit norm
        feat = self.bb(x)
        p = F.avg_pool2d(feat, feat.shape[2] // self.pool_size, feat.shape[3] // self.pool_size)
        out = self.fc(p.flatten(1))
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def load_arrays(path=None) -> dict[str, np.ndarray]:
    """The arrays of v3.npz (the packaged one when ``path`` is None)."""
    with np.load(path or WEIGHTS.file(), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _state(arrays: dict[str, np.ndarray], prefix: str, own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The arrays under ``prefix`` as a state dict of a module whose own state is ``own``."""
    state = {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in arrays.items() if k.startswith(prefix)}
    state.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked")})  # not in the npz
    return state


def geoembed_v3(pretrained: bool = True) -> GeoEmbedV3:
    """The v3 encoder, with the packaged weights when ``pretrained`` (strict: every array used)."""
    if not pretrained:
        return GeoEmbedV3()
    arrays = load_arrays()
    model = GeoEmbedV3(int(arrays["base_channels"][0]), int(arrays["embed_dim"][0]), int(arrays["pool_size"][0]))
    state = _state(arrays, "", model.state_dict())
    state = {k: v for k, v in state.items() if k.startswith(("bb.", "fc."))}
    state["fc.weight"] = state["fc.weight"].T.contiguous()  # netcl Linear stores (in, out)
    model.load_state_dict(state, strict=True)
    return model.eval()


def geoembed_features(pretrained: bool = True) -> nn.Module:
    """(B, 3, H, W) in [-1, 1] -> (B, 512, H/8, W/8); layer2..layer4 are the fine-tuning set."""
    return geoembed_v3(pretrained).bb


def _load_backbone(net: GeoEmbedResNet18, path, name: str) -> None:
    """The ``bb.`` arrays of a v3.npz into the backbone (strict)."""
    net.load_state_dict(_state(load_arrays(path), "bb.", net.state_dict()), strict=True)


AERIAL = WEIGHTS.source("aerial (geoembed)", load=_load_backbone)


@register_backbone(NAME, shape=strided_shape(OUT_CHANNELS, 8, default_size=IMAGE_SIZE),
                   trainable=("layer2", "layer3", "layer4"), transform=symmetric_transform,
                   weights={"aerial": AERIAL},
                   description="geoembed v3 ResNet-18 (stride 8), self-supervised on aerial tiles, from a pip package")
def _build(config, shape) -> nn.Module:
    return GeoEmbedResNet18()
