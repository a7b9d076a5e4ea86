"""The RSICRC architecture: backbones, shapes, trainable sets, parameter counts, weights on disk."""
from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from PIL import Image

from rscc.config import ModelConfig, load_preset
from rscc.errors import CheckpointError, ConfigError
from rscc.model.backbones import build_backbone
from rscc.model.rsicrc import (
    TIED_KEY,
    build_model,
    load_weights,
    parameter_table,
    save_weights,
    unused_parameter_count,
)


def tiny_config(**changes) -> ModelConfig:
    config = load_preset("cpu-tiny").model
    values = dict(vocab_size=30, d_model=32, num_heads=4, h_dim=16, a_dim=32, tiny_width=64, tiny_layers=1)
    values.update(changes)
    return dataclasses.replace(config, **values)


def trainable_children(backbone) -> set[str]:
    return {name.split(".")[0] for name, p in backbone.net.named_parameters() if p.requires_grad}


def meta_backbone(name: str, **changes):
    config = ModelConfig(backbone=name, pretrained=None, vocab_size=10, **changes)
    with torch.device("meta"):
        return build_backbone(config, load_pretrained=False)


# ----------------------------------------------------------------------------- backbones
def test_tiny_backbone_maps_128px_images_to_8x8_feature_maps():
    torch.manual_seed(0)
    backbone = build_backbone(tiny_config(), load_pretrained=False)
    feats = backbone(torch.randn(2, 3, 128, 128))
    assert tuple(feats.shape) == (2, 64, 8, 8)
    assert (backbone.out_channels, backbone.feature_size) == (64, 8)


def test_tiny_transform_turns_a_256px_image_into_a_128px_tensor():
    backbone = build_backbone(tiny_config(), load_pretrained=False)
    tensor = backbone.transform(Image.new("RGB", (256, 256), (120, 30, 200)))
    assert tuple(tensor.shape) == (3, 128, 128)


def test_torchvision_transform_keeps_256px_and_resizes_other_sizes_to_256():
    backbone = meta_backbone("resnet50")
    assert tuple(backbone.transform(Image.new("RGB", (256, 256))).shape) == (3, 256, 256)
    assert tuple(backbone.transform(Image.new("RGB", (300, 200))).shape) == (3, 256, 256)


def test_clip_transform_centre_crops_to_224px():
    backbone = meta_backbone("RN50")
    assert tuple(backbone.transform(Image.new("RGB", (256, 256))).shape) == (3, 224, 224)


@pytest.mark.parametrize("name, expected", [
    ("RN50", {"layer2", "layer3", "layer4"}),
    ("ViT-B-32", {"transformer", "ln_post"}),
    ("ViT-L-14", {"transformer", "ln_post"}),
    ("resnet50", {"layer1", "layer2", "layer3", "layer4"}),  # + maxpool, which has no parameters
    ("resnet101", {"layer1", "layer2", "layer3", "layer4"}),
    ("tiny", {"transformer", "ln_post"}),
])
def test_fine_tune_trains_the_authors_last_children_of_each_backbone(name, expected):
    assert trainable_children(meta_backbone(name, fine_tune=True)) == expected


@pytest.mark.parametrize("changes", [{"fine_tune": False}, {"freeze_backbone": True}])
def test_backbone_without_fine_tuning_has_no_trainable_parameter(changes):
    assert trainable_children(meta_backbone("RN50", **changes)) == set()


def test_frozen_backbone_stays_in_eval_mode_when_the_model_trains():
    model = build_model(tiny_config(freeze_backbone=True), load_pretrained=False)
    model.train()
    assert model.backbone.training is False and model.hsa.training is True


def test_fine_tuned_rn50_frozen_batchnorm_still_updates_running_statistics():
    # Faithful: the stem's BatchNorm is frozen (no gradient) but moves its statistics in train mode.
    torch.manual_seed(0)
    backbone = build_backbone(ModelConfig(backbone="RN50", vocab_size=10), load_pretrained=False).train()
    before = backbone.net.bn1.running_mean.clone()
    backbone(torch.randn(1, 3, 64, 64))
    assert backbone.net.bn1.weight.requires_grad is False
    assert not torch.equal(before, backbone.net.bn1.running_mean)


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("RN50", (1, 2048, 7, 7)), ("ViT-B-32", (1, 768, 7, 7))])
def test_clip_backbone_maps_a_224px_image_to_its_feature_map(name, shape):
    torch.manual_seed(0)
    backbone = build_backbone(ModelConfig(backbone=name, vocab_size=10), load_pretrained=False).eval()
    with torch.no_grad():
        assert tuple(backbone(torch.randn(1, 3, 224, 224)).shape) == shape


@pytest.mark.parametrize("name, channels, size", [
    ("RN50", 2048, 7), ("ViT-B-32", 768, 7), ("ViT-L-14", 1024, 16), ("resnet50", 2048, 8), ("resnet101", 2048, 8)])
def test_backbone_reports_its_feature_shape(name, channels, size):
    backbone = meta_backbone(name)
    assert (backbone.out_channels, backbone.feature_size) == (channels, size)


def test_vit_token_reshape_gives_the_meta_feature_shape_of_vit_l_14():
    backbone = meta_backbone("ViT-L-14")
    with torch.device("meta"):
        assert tuple(backbone(torch.empty(2, 3, 224, 224)).shape) == (2, 1024, 16, 16)


def test_remoteclip_weights_unavailable_offline_warns_and_keeps_random_init(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = ModelConfig(backbone="RN50", pretrained="remoteclip", vocab_size=10)
    with pytest.warns(UserWarning, match="huggingface.co/chendelong/RemoteCLIP"):
        with torch.device("meta"):
            build_backbone(config)


def test_imagenet_weights_absent_from_the_hub_cache_warn(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    config = ModelConfig(backbone="resnet50", pretrained="imagenet", vocab_size=10)
    with pytest.warns(UserWarning, match="not in the torch hub cache"):
        with torch.device("meta"):
            build_backbone(config)


def test_no_pretrained_weights_warns_for_a_paper_backbone_but_not_for_tiny():
    with pytest.warns(UserWarning, match="random initialisation"):
        with torch.device("meta"):
            build_backbone(ModelConfig(backbone="ViT-B-32", pretrained=None, vocab_size=10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_backbone(tiny_config())


def test_missing_pretrained_file_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="model.pretrained"):
        build_backbone(tiny_config(pretrained=str(tmp_path / "absent.pt")))


def test_local_clip_checkpoint_loads_its_visual_weights(tmp_path):
    torch.manual_seed(1)
    source = build_backbone(tiny_config(), load_pretrained=False)
    state = {f"visual.{k}": v for k, v in source.net.state_dict().items()}
    state["text_projection"] = torch.zeros(3)  # other towers of a CLIP checkpoint are ignored
    torch.save(state, tmp_path / "clip.pt")
    loaded = build_backbone(tiny_config(pretrained=str(tmp_path / "clip.pt")))
    assert torch.equal(loaded.net.conv1.weight, source.net.conv1.weight)


def test_local_checkpoint_of_another_architecture_is_a_checkpoint_error(tmp_path):
    torch.save({"visual.conv1.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not tiny backbone weights"):
        build_backbone(tiny_config(pretrained=str(tmp_path / "other.pt")))


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="model.backbone 'RN101'"):
        build_model(ModelConfig(backbone="RN101", vocab_size=10))


# ----------------------------------------------------------------------------- the whole model
def test_forward_shapes_on_tiny_images():
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    ids = torch.tensor([[1, 5, 6, 3, 0], [1, 7, 3, 0, 0]])
    labels = ids.masked_fill(ids == 0, -100)
    out = model(ids, ids == 0, labels, img_a=torch.randn(2, 3, 128, 128), img_b=torch.randn(2, 3, 128, 128))
    assert tuple(out.vis_emb.shape) == (2, 32)
    assert tuple(out.text_emb.shape) == (2, 32)
    assert tuple(out.vis_toks.shape) == (64, 2, 32)
    assert tuple(out.logits.shape) == (2, 5, 30)
    assert tuple(out.cross_attention.shape) == (2, 5, 64)
    assert out.cap_loss.ndim == 0


def test_text_embedding_is_the_unimodal_output_at_each_captions_end_token():
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    ids = torch.tensor([[1, 5, 6, 3, 0], [1, 7, 3, 0, 0]])
    with torch.no_grad():
        emb = model.encode_text(ids, ids == 0)
        alone = model.encode_text(ids[1:, :3], None)  # the second caption without its padding
    assert torch.allclose(emb[1], alone[0], atol=1e-6)


def test_encode_text_equals_forward_text_embedding():
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    ids = torch.tensor([[1, 5, 6, 3, 0], [1, 7, 3, 0, 0]])
    feats = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        out = model(ids, ids == 0, feat_a=feats, feat_b=feats.flip(0))
        assert torch.allclose(model.encode_text(ids, ids == 0), out.text_emb)


def test_caption_loss_ignores_padding_labels():
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    ids = torch.tensor([[1, 5, 6, 3, 0, 0]])
    feats = torch.randn(1, 64, 8, 8)
    labels = ids.masked_fill(ids == 0, -100)
    with torch.no_grad():
        out = model(ids, ids == 0, labels, feat_a=feats, feat_b=feats)
    manual = torch.nn.functional.cross_entropy(out.logits[0, :3], ids[0, 1:4])
    assert torch.allclose(out.cap_loss, manual)


def paper_rn50_on_meta(**changes):
    config = dataclasses.replace(load_preset("paper-rn50").model, vocab_size=468, **changes)
    with torch.device("meta"):
        return build_model(config, load_pretrained=False)


def test_paper_rn50_preset_has_350_8_million_parameters_of_which_37_7_million_unused():
    model = paper_rn50_on_meta()
    total = dict((name, count) for name, count, _ in parameter_table(model))["total"]
    assert total == 350_815_072
    assert unused_parameter_count(model) == 3 * (2048 * 2048 + 4096 * 2048) == 37_748_736


def test_learnable_positions_add_a_41_by_2048_table_making_the_reported_350_9_million():
    # METHOD §2 reports "≈350.9 M": that is the count with a 41 x 2048 position table included.
    total = dict((name, count) for name, count, _ in parameter_table(paper_rn50_on_meta(learnable_positions=True)))
    assert total["total"] == 350_815_072 + 41 * 2048 == 350_899_040


def test_parameter_table_counts_tied_embeddings_once_and_trainable_backbone_children():
    model = paper_rn50_on_meta()
    rows = {name: (total, trainable) for name, total, trainable in parameter_table(model)}
    assert rows["decoder"][0] == sum(p.numel() for p in model.decoder.parameters())
    assert 0 < rows["backbone"][1] < rows["backbone"][0]  # layer2..4 only
    assert rows["hsa"][0] == rows["hsa"][1]


# ----------------------------------------------------------------------------- weights on disk
def test_saved_weights_reload_into_a_fresh_model_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config(), load_pretrained=False).eval()
    save_weights(model, tmp_path / "weights.safetensors")
    torch.manual_seed(1)
    fresh = load_weights(build_model(tiny_config(), load_pretrained=False), tmp_path / "weights.safetensors").eval()
    ids = torch.tensor([[1, 5, 6, 3]])
    img = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        a, b = model(ids, None, img_a=img, img_b=img.flip(-1)), fresh(ids, None, img_a=img, img_b=img.flip(-1))
    assert torch.equal(a.logits, b.logits) and torch.equal(a.vis_emb, b.vis_emb)
    assert fresh.decoder.token_embedding.weight is fresh.decoder.lm_head.weight


def test_tied_embedding_is_stored_once(tmp_path):
    from safetensors.torch import load_file

    save_weights(build_model(tiny_config(), load_pretrained=False), tmp_path / "w.safetensors")
    keys = load_file(tmp_path / "w.safetensors").keys()
    assert TIED_KEY not in keys and "decoder.lm_head.weight" in keys


def test_weights_of_another_width_are_a_checkpoint_error_naming_key_and_shapes(tmp_path):
    save_weights(build_model(tiny_config(d_model=64), load_pretrained=False), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match=r"hsa.column_embedding.weight: file \(8, 32\), model \(8, 16\)"):
        load_weights(build_model(tiny_config(), load_pretrained=False), tmp_path / "w.safetensors")


def test_weights_with_fewer_decoder_layers_name_the_missing_keys(tmp_path):
    save_weights(build_model(tiny_config(), load_pretrained=False), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="missing from the file, first: decoder.unimodal_layers.1"):
        load_weights(build_model(tiny_config(decoder_layers=2), load_pretrained=False), tmp_path / "w.safetensors")


def test_corrupted_safetensors_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(build_model(tiny_config(), load_pretrained=False), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(build_model(tiny_config(), load_pretrained=False), path)


def test_model_without_vocabulary_size_is_a_config_error():
    with pytest.raises(ConfigError, match="model.vocab_size"):
        build_model(tiny_config(vocab_size=0), load_pretrained=False)
