"""Reliability (issue 8): bad input gets a clear error, faults lose nothing, untrusted files stay inert.

Each test tries one failure. A user error raises an RsccError naming the file and what was wrong;
on the command line it is one line on stderr, exit status 2, no traceback, and nothing written.
Behaviours already specified elsewhere are not repeated here (see the list at the end of this file).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rscc.cli import main
from rscc.data.check import validate_dataset
from rscc.data.levircc import CAPTIONS_FILE, DatasetError, Vocabulary, load_pair_images, load_pairs, open_rgb, tokenize
from rscc.data.synth import make_synthetic
from rscc.errors import RsccError

REPO = Path(__file__).resolve().parents[1]


# ============================================================================ helpers
def write_tiff(path: Path, array: np.ndarray) -> Path:
    """A real baseline TIFF (little-endian, uncompressed, one strip) of an (H, W[, bands]) uint8 or
    uint16 array: RGB photometric for 3+ bands, the bands after the third as extra samples."""
    array = np.ascontiguousarray(array if array.ndim == 3 else array[:, :, None])
    h, w, bands = array.shape
    bits = array.dtype.itemsize * 8
    photometric = 2 if bands >= 3 else 1
    pixels = array.astype(array.dtype.newbyteorder("<")).tobytes()
    extra = bands - (3 if photometric == 2 else 1)
    entries = [(256, 4, 1, w), (257, 4, 1, h),
               (258, 3, bands, struct.pack(f"<{bands}H", *[bits] * bands) if bands > 2 else bits),
               (259, 3, 1, 1), (262, 3, 1, photometric), (273, 4, 1, "pixels"), (277, 3, 1, bands),
               (278, 4, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    if extra > 0:
        entries.append((338, 3, extra, struct.pack(f"<{extra}H", *[0] * extra) if extra > 2 else 0))
    blob_at = 8 + 2 + 12 * len(entries) + 4
    blobs, ifd = b"", b""
    for tag, kind, count, value in entries:
        if isinstance(value, bytes):
            ifd += struct.pack("<HHII", tag, kind, count, blob_at + len(blobs))
            blobs += value
            continue
        if value == "pixels":
            value = None  # filled in below, once the blobs are known
        ifd += struct.pack("<HHIHH" if kind == 3 else "<HHII", tag, kind, count, *((value or 0, 0) if kind == 3 else (value or 0,)))
    pixels_at = blob_at + len(blobs)
    ifd = ifd.replace(struct.pack("<HHII", 273, 4, 1, 0), struct.pack("<HHII", 273, 4, 1, pixels_at))
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(entries)) + ifd + b"\0\0\0\0" + blobs + pixels)
    return path


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    h, w, _ = array.shape
    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of ``rscc ARGV`` run in this process."""
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_one_line_error(status: int, err: str, *fragments: str) -> None:
    """Exit status 2 and one ``rscc CMD: error: ...`` line naming every fragment, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and re.match(r"rscc [\w-]+: error: ", lines[0]), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, err)


def captions_json(root: Path) -> dict:
    return json.loads((root / CAPTIONS_FILE).read_text())


def first_image(root: Path, side: str = "A", n: int = 0) -> Path:
    record = captions_json(root)["images"][n]
    return root / "images" / record["filepath"] / side / record["filename"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """Six synthetic LEVIR-CC pairs of 64 px."""
    return make_synthetic(tmp_path_factory.mktemp("clean") / "levir", 6, size=64, seed=0, progress=False)


@pytest.fixture
def dataset(clean, tmp_path) -> Path:
    """A private copy of the clean dataset, to break."""
    return Path(shutil.copytree(clean, tmp_path / "levir"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory holding a random tiny model (64 px, d=32) with its config and vocabulary."""
    from rscc.config import load_preset
    from rscc.model.rsicrc import build_model, save_weights

    run_dir = tmp_path_factory.mktemp("run")
    words = ["new", "houses", "along", "a", "curved", "road"]
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})
    config = load_preset("cpu-tiny", ["model.d_model=32", "model.a_dim=32", "model.h_dim=16", "model.tiny_width=32",
                                      "model.tiny_layers=1", "model.image_size=64", f"model.vocab_size={len(vocab)}"])
    torch.manual_seed(0)
    (run_dir / "best").mkdir()
    save_weights(build_model(config.model, load_pretrained=False), run_dir / "best" / "weights.safetensors")
    config.save(run_dir / "config.yaml")
    vocab.save(run_dir / "vocab.json")
    return run_dir


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))


def write_pair(folder: Path, name: str, size: tuple[int, int], seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for side in ("A", "B"):
        (folder / side).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / side / name)
        paths.append(folder / side / name)
    return paths[0], paths[1]


# ============================================================================ dataset: the reader
def test_reader_names_the_missing_captions_file(tmp_path):
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path / CAPTIONS_FILE)) + ": captions file not found"):
        load_pairs(tmp_path)


def test_reader_rejects_a_pair_with_no_captions_naming_its_file(dataset):
    data = captions_json(dataset)
    data["images"][2]["sentences"] = []
    (dataset / CAPTIONS_FILE).write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"images\[2\] \({data['images'][2]['filename']}\): 0 captions, expected 5"):
        load_pairs(dataset)


def test_reader_rejects_an_empty_caption_naming_its_record(dataset):
    data = captions_json(dataset)
    data["images"][1]["sentences"][3] = {"tokens": [" "], "raw": " ."}
    (dataset / CAPTIONS_FILE).write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=rf"images\[1\] \({data['images'][1]['filename']}\)\.sentences\[3\]: empty caption"):
        load_pairs(dataset)


def test_reader_rejects_an_imgid_that_is_not_an_integer(dataset):
    data = captions_json(dataset)
    data["images"][0]["imgid"] = "seven"
    (dataset / CAPTIONS_FILE).write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"images\[0\].*'imgid' must be an integer"):
        load_pairs(dataset)


@pytest.mark.parametrize("side", ["A", "B"])
def test_reader_names_a_missing_image(dataset, side):
    pair = load_pairs(dataset)[0]
    path = pair.image_paths(dataset)["AB".index(side)]
    path.unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{path}: image not found")):
        load_pair_images(pair, dataset)


def test_reader_names_a_truncated_png(dataset):
    path = first_image(dataset, "B")
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetError, match=re.escape(f"{path}: cannot decode image")):
        open_rgb(path)


@pytest.mark.parametrize("bands", [4, 5])
def test_multiband_tiff_is_rejected_by_reader_and_check_instead_of_silently_dropping_bands(dataset, bands):
    path = write_tiff(first_image(dataset, "A", 1), np.full((64, 64, bands), 90, np.uint8))
    assert Image.open(path).mode == "RGB"  # what Pillow would silently make of it
    with pytest.raises(DatasetError, match=re.escape(f"{path}: TIFF with {bands} bands")):
        open_rgb(path)
    (problem,) = validate_dataset(dataset)
    assert problem.path == str(path) and f"{bands} bands" in problem.reason


@pytest.mark.parametrize("writer", [write_tiff, write_png16], ids=["tiff", "png"])
def test_sixteen_bit_rgb_image_is_rejected_instead_of_silently_losing_its_low_byte(dataset, writer):
    path = writer(first_image(dataset, "B", 2), np.full((64, 64, 3), 1000, np.uint16))
    assert Image.open(path).mode == "RGB"  # Pillow would keep 1000 >> 8 = 3
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": 16-bit"):
        open_rgb(path)
    (problem,) = validate_dataset(dataset)
    assert problem.path == str(path) and "16-bit" in problem.reason


def test_an_ordinary_8_bit_rgb_tiff_is_read(tmp_path):
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    image = open_rgb(write_tiff(tmp_path / "x.tif", array))
    assert image.mode == "RGB" and np.array_equal(np.asarray(image), array)


def test_training_on_a_broken_dataset_exits_2_naming_the_image_and_writes_no_run(dataset, tmp_path, capsys):
    victim = first_image(dataset, "A", 3)
    victim.write_text("not a png\n")
    out = tmp_path / "runs" / "broken"
    status, err = cli(["train", "--preset", "cpu-tiny", "--data", dataset, "--out", out, "--no-progress"], capsys)
    assert_one_line_error(status, err, str(victim), "cannot decode image")
    assert not (tmp_path / "runs").exists()


# ============================================================================ dataset: fuzzing the reader
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
sentence_records = st.fixed_dictionaries(
    {}, optional={"tokens": st.lists(st.text(max_size=8), max_size=6) | json_values, "raw": st.text(max_size=40) | json_values})
records = st.fixed_dictionaries(
    {},
    optional={
        "filepath": st.sampled_from(["train", "val", "test"]) | json_values,
        "filename": st.text(max_size=12) | json_values,
        "imgid": st.integers(0, 99) | json_values,
        "split": st.sampled_from(["train", "val", "test", "dev"]) | json_values,
        "sentences": st.lists(sentence_records, min_size=4, max_size=6) | json_values,
        "changeflag": st.integers(0, 1) | json_values,
    },
)


@FUZZ
@given(st.lists(records, max_size=4) | json_values)
def test_reader_fails_only_with_a_dataset_error_whatever_the_json_records(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / CAPTIONS_FILE).write_text(json.dumps({"images": images}))
    try:
        pairs = load_pairs(folder)
    except DatasetError as exc:
        assert str(folder / CAPTIONS_FILE) in str(exc)
        return
    for pair in pairs:  # what was accepted is usable
        assert len(pair.tokens) == 5 and all(pair.tokens) and pair.split in ("train", "val", "test")
        assert isinstance(pair.imgid, int)


@FUZZ
@given(st.text(max_size=200), st.integers(2, 60))
def test_any_caption_string_tokenizes_and_encodes_to_max_len_ids(sentence, max_len):
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 4})
    tokens = tokenize(sentence)
    ids, pad = vocab.encode(tokens, max_len)
    assert all(t.strip() and t == t.lower() for t in tokens)
    assert len(ids) == len(pad) == max_len and ids[0] == 1 and 3 in ids
    assert set(ids) <= {0, 1, 2, 3, 4}


@FUZZ
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_scorer_accepts_any_unicode_prediction(tmp_path_factory, predictions):
    from rscc.commands.score import read_predictions, score_rows

    path = tmp_path_factory.mktemp("scores") / "predictions.jsonl"
    rows = [{"id": n, "prediction": p, "references": ["a road is built", "houses appear"]} for n, p in enumerate(predictions)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = score_rows(read_predictions(path), meteor=False, spice=False)
    assert 0.0 <= result["all"]["BLEU-4"] <= 100.0 and result["all"]["n"] == len(predictions)
