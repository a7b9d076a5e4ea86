"""`rscc convert`: an authors' checkpoint becomes an rscc run directory (METHOD §8)."""
from __future__ import annotations

import json
import pathlib
import pickle

import pytest
import torch
import yaml

from rscc.cli import main
from rscc.config import RunConfig
from rscc.errors import CheckpointError
from rscc.model.backbones import read_state_dict
from rscc.model.convert import model_config_from_authors, rscc_to_authors, run_config_from_authors
from rscc.model.rsicrc import build_model, load_weights

AUTHORS_CONFIG = {
    "backbone": "RN50", "d_model": 32, "max_len": 41, "encoder_layers": 1, "decoder_layers": 1, "num_heads": 4,
    "h_dim": 16, "a_dim": 32, "dropout": 0.1, "learnable": False, "fine_tune": True, "tie_embeddings": True,
    "prenorm": False, "s-transformers": "sentence-transformers/msmarco-distilbert-cos-v5", "s-threshold": 1.0,
    "fna": True,
}
VOCAB = {"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{f"w{i}": 4 + i for i in range(8)}}


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    """config.json, vocab and pytorch_model.bin as the authors release them (RN50 backbone included)."""
    directory = tmp_path_factory.mktemp("authors")
    torch.manual_seed(0)
    config = model_config_from_authors(AUTHORS_CONFIG, vocab_size=len(VOCAB))
    model = build_model(config, load_pretrained=False)
    state = rscc_to_authors(model.state_dict(), config)
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(AUTHORS_CONFIG))
    (directory / "levir_vocab.json").write_text(json.dumps(VOCAB))
    return directory, model.eval()


def convert(directory, out, checkpoint="pytorch_model.bin"):
    return main(["convert", str(directory / checkpoint), "--config", str(directory / "config.json"),
                 "--vocab", str(directory / "levir_vocab.json"), "--out", str(out)])


def test_convert_writes_weights_config_and_vocabulary(authors_files, tmp_path):
    directory, _ = authors_files
    assert convert(directory, tmp_path / "run") == 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.yaml", "vocab.json", "weights.safetensors"]
    assert json.loads((tmp_path / "run" / "vocab.json").read_text()) == VOCAB


def test_converted_run_reproduces_the_authors_model_outputs(authors_files, tmp_path):
    directory, original = authors_files
    convert(directory, tmp_path / "run")
    config = RunConfig.load(tmp_path / "run" / "config.yaml")
    model = load_weights(build_model(config.model, load_pretrained=False),
                         tmp_path / "run" / "weights.safetensors").eval()
    ids = torch.tensor([[1, 5, 6, 3], [1, 7, 3, 0]])
    img = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got = model(ids, ids == 0, img_a=img, img_b=img.flip(-1))
        want = original(ids, ids == 0, img_a=img, img_b=img.flip(-1))
    assert torch.equal(got.logits, want.logits) and torch.equal(got.vis_emb, want.vis_emb)


def test_converted_config_maps_the_authors_options_and_turns_every_quirk_on(authors_files, tmp_path):
    directory, _ = authors_files
    convert(directory, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["vocab_size"] == 12 and saved["model"]["d_model"] == 32
    assert saved["model"]["learnable_positions"] is False
    assert all(saved["model"][q] for q in ("value_from_key", "transpose_hsa_output", "double_residual"))
    assert saved["loss"]["sentence_model"] == "sentence-transformers/msmarco-distilbert-cos-v5"
    assert (saved["loss"]["theta"], saved["loss"]["theta_tolerance"], saved["loss"]["fn_mode"]) == (1.0, 0.0, "fna")


def test_authors_fna_false_becomes_fne():
    run = run_config_from_authors(dict(AUTHORS_CONFIG, fna=False, learnable=True), vocab_size=12)
    assert run.loss.fn_mode == "fne" and run.model.learnable_positions is True


def test_checkpoint_of_another_width_is_refused_naming_the_mismatch(authors_files, tmp_path):
    directory, _ = authors_files
    (tmp_path / "config.json").write_text(json.dumps(dict(AUTHORS_CONFIG, d_model=64)))
    (tmp_path / "levir_vocab.json").write_text(json.dumps(VOCAB))
    (tmp_path / "pytorch_model.bin").symlink_to(directory / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"shape mismatch for .*: file \(1, 41, 32\), model \(1, 41, 64\)"):
        from rscc.model.convert import convert_checkpoint

        convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "config.json", tmp_path / "levir_vocab.json",
                           tmp_path / "run")


def test_learnable_checkpoint_of_another_width_names_the_first_mismatching_key(authors_files, tmp_path):
    directory, _ = authors_files
    config = model_config_from_authors(dict(AUTHORS_CONFIG, learnable=True), vocab_size=12)
    state = rscc_to_authors(build_model(config, load_pretrained=False).state_dict(), config)
    torch.save(state, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(dict(AUTHORS_CONFIG, learnable=True, d_model=64)))
    (tmp_path / "levir_vocab.json").write_text(json.dumps(VOCAB))
    with pytest.raises(CheckpointError, match=r"proj.weight: file \(32, 2048, 1, 1\), model \(64, 2048, 1, 1\)"):
        from rscc.model.convert import convert_checkpoint

        convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "config.json", tmp_path / "levir_vocab.json",
                           tmp_path / "run")


def test_unknown_authors_key_is_refused(tmp_path):
    from rscc.model.convert import authors_to_rscc

    config = model_config_from_authors(AUTHORS_CONFIG, vocab_size=12)
    with pytest.raises(CheckpointError, match="unexpected key 'encoder.extra.weight'"):
        authors_to_rscc({"encoder.extra.weight": torch.zeros(1)}, config)


class WritesMarker:
    """Unpickling this would create a file: code execution hidden in a checkpoint."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_checkpoint_with_code_in_its_pickle_is_refused_and_never_run(tmp_path, writer):
    marker = tmp_path / "marker"
    path = tmp_path / "pytorch_model.bin"
    payload = {"encoder.img_queries": WritesMarker(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(path)
    assert not marker.exists()


def test_convert_command_reports_a_refused_checkpoint_with_exit_status_2(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps(AUTHORS_CONFIG))
    (tmp_path / "levir_vocab.json").write_text(json.dumps(VOCAB))
    torch.save({"x": WritesMarker(tmp_path / "marker")}, tmp_path / "pytorch_model.bin")
    assert convert(tmp_path, tmp_path / "run") == 2
    assert "refused or unreadable checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "marker").exists()


def test_vocabulary_with_wrong_special_ids_is_refused(authors_files, tmp_path, capsys):
    directory, _ = authors_files
    (tmp_path / "config.json").write_text(json.dumps(AUTHORS_CONFIG))
    (tmp_path / "levir_vocab.json").write_text(json.dumps(dict(VOCAB, END=4, w0=3)))
    (tmp_path / "pytorch_model.bin").symlink_to(directory / "pytorch_model.bin")
    assert convert(tmp_path, tmp_path / "run") == 2
    assert "special tokens" in capsys.readouterr().err
