"""Run configuration: presets, overrides, saving and reloading."""
import pytest

from rscc.config import RunConfig, available_presets, load_preset
from rscc.errors import ConfigError


def test_all_five_presets_exist():
    assert set(available_presets()) >= {"paper-rn50", "paper-vit-b-32", "paper-vit-l-14", "resnet50-imagenet", "cpu-tiny"}


def test_paper_preset_is_the_released_configuration():
    m = load_preset("paper-rn50").model
    assert (m.backbone, m.d_model, m.encoder_layers, m.decoder_layers, m.num_heads, m.h_dim, m.a_dim) == (
        "RN50", 2048, 3, 1, 8, 512, 2048)
    assert m.value_from_key and m.transpose_hsa_output and m.double_residual and not m.prenorm


def test_overrides_accept_dotted_and_bare_keys_and_parse_yaml_scalars():
    c = load_preset("cpu-tiny", ["train.epochs=3", "theta=0.9", "model.prenorm=true", "grad_clip=null"])
    assert c.train.epochs == 3 and c.loss.theta == 0.9 and c.model.prenorm is True and c.train.grad_clip is None
    assert c.overrides == ["train.epochs=3", "loss.theta=0.9", "model.prenorm=true", "train.grad_clip=null"]


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="available: .*cpu-tiny"):
        load_preset("gpt-5")


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown option 'train.epoch'.*epochs"):
        load_preset("cpu-tiny", ["train.epoch=3"])


def test_ambiguous_bare_key_asks_for_a_section():
    with pytest.raises(ConfigError, match="ambiguous.*model.max_len"):
        load_preset("cpu-tiny", ["max_len=30"])


def test_saved_config_reloads_to_the_same_object(tmp_path):
    c = load_preset("cpu-tiny", ["train.epochs=2"])
    c.save(tmp_path / "config.yaml")
    assert RunConfig.load(tmp_path / "config.yaml") == c


def test_config_file_with_an_unknown_field_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model:\n  widht: 3\n")
    with pytest.raises(ConfigError, match="config.yaml: unknown option.*widht"):
        RunConfig.load(path)


def test_yaml_config_is_parsed_safely_without_running_code(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("model: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        RunConfig.load(path)
    assert not (tmp_path / "pwned").exists()
