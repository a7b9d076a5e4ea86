"""data.synth_stock_share: the synthetic generator's caption-recurrence knob, through the config."""
import hashlib
import json

import pytest
import yaml

import rscc.training.loop as trainer
from rscc.config import DataConfig, RunConfig, load_preset
from rscc.data.synth import MARKER_FILE, STOCK_SHARE, STOCK_SHARE_HIGH
from rscc.errors import ConfigError
from rscc.evaluate import data_root
from rscc.experiments.profiles import SMOKE_MODEL, get_profile
from rscc.experiments.study import config_digest, dataset_root
from rscc.training.data import resolve_data_root
from rscc.training.distributed import Processes

# 1 optimiser step on 24 synthetic pairs of 64 px, exact-string false negatives (no sentence encoder)
TINY = [
    *SMOKE_MODEL, "train.batch_size=8", "train.epochs=1",
    "data.synth_pairs=24", "data.synth_size=64", "train.max_steps=1", "loss.fn_mode=fne",
    "loss.similarity_source=string", "train.num_threads=1",
]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("RSCC_CACHE", str(path))
    return path


def test_the_config_default_is_the_generators_levir_like_share():
    assert DataConfig().synth_stock_share == STOCK_SHARE == 0.25


def test_a_share_outside_0_1_is_a_config_error_naming_the_field():
    with pytest.raises(ConfigError, match=r"data.synth_stock_share must lie in \[0, 1\], got 1.5"):
        load_preset("cpu-tiny", ["data.synth_stock_share=1.5"])


def test_a_config_saved_before_the_field_keeps_its_digest(tmp_path):
    config = load_preset("cpu-tiny", TINY)
    old = config.to_dict()
    del old["data"]["synth_stock_share"]  # a config.yaml written before the field existed
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old, sort_keys=False))
    assert config_digest(RunConfig.load(path)) == config_digest(config)
    # the digest is computed without the field at its default: the same sha256 as before it existed
    sections = {k: v for k, v in old.items() if k not in ("preset", "overrides")}
    sections["model"].pop("vocab_size")
    for section, names in {"train": ("num_threads", "log_every", "device"), "data": ("num_workers",)}.items():
        for name in names:
            sections[section].pop(name)
    assert config_digest(config) == hashlib.sha256(json.dumps(sections, sort_keys=True).encode()).hexdigest()


def test_another_share_is_another_configuration():
    default = load_preset("cpu-tiny", TINY)
    assert config_digest(load_preset("cpu-tiny", TINY + [f"data.synth_stock_share={STOCK_SHARE}"])) == config_digest(default)
    assert config_digest(load_preset("cpu-tiny", TINY + ["data.synth_stock_share=1.0"])) != config_digest(default)
    assert config_digest(load_preset("cpu-tiny", TINY + ["data.synth_stock_share=0"])) != config_digest(default)


def test_a_run_with_share_1_trains_on_the_high_recurrence_set(cache, tmp_path):
    config = load_preset("cpu-tiny", TINY + ["data.synth_stock_share=1.0"])
    trainer.train(config, tmp_path / "run", progress=False)
    root = cache / "synthetic-24-64-0-stock1"
    assert json.loads((root / MARKER_FILE).read_text())["stock_share"] == STOCK_SHARE_HIGH
    assert not (cache / "synthetic-24-64-0").exists()  # the default set was never made
    saved = RunConfig.load(tmp_path / "run" / "config.yaml")
    assert saved.data.synth_stock_share == 1.0
    assert data_root(saved, progress=False) == root  # the evaluator reads the same set


def test_the_default_share_keeps_the_default_dataset_folder(cache):
    root = resolve_data_root(load_preset("cpu-tiny", TINY), Processes(), progress=False)
    assert root == cache / "synthetic-24-64-0"
    assert json.loads((root / MARKER_FILE).read_text())["stock_share"] == STOCK_SHARE


def test_high_share_captions_recur_more_on_the_same_images(cache):
    from rscc.data.levircc import load_pairs

    low = resolve_data_root(load_preset("cpu-tiny", TINY + ["data.synth_stock_share=0"]), Processes(),
                                    progress=False)
    high = resolve_data_root(load_preset("cpu-tiny", TINY + ["data.synth_stock_share=1"]), Processes(),
                                     progress=False)
    assert (low.name, high.name) == ("synthetic-24-64-0-stock0", "synthetic-24-64-0-stock1")
    image = sorted((low / "images" / "train" / "A").iterdir())[0]
    assert (high / "images" / "train" / "A" / image.name).read_bytes() == image.read_bytes()  # only captions differ

    def distinct_changed_captions(root):
        return len({c for p in load_pairs(root) if p.changed for c in p.raws})

    assert distinct_changed_captions(high) < distinct_changed_captions(low)


def test_the_study_dataset_takes_a_share(cache):
    smoke = get_profile("smoke")
    assert dataset_root(smoke, progress=False).name == "synthetic-60-64-0"
    assert dataset_root(smoke, progress=False, stock_share=STOCK_SHARE_HIGH).name == "synthetic-60-64-0-stock1"
