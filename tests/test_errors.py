"""Bad input gets a clear error: a user error raises an RsccError naming the file and what was wrong;
on the command line it is one line on stderr, exit status 2, no traceback, and nothing written.

Each test tries one failure. Behaviours already specified elsewhere are not repeated here (see the
list at the end of this file).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from reliability_helpers import REPO, assert_one_line_error, cli, copy_run

from rscc.cli import main
from rscc.config import RunConfig
from rscc.data.check import validate_dataset
from rscc.data.images import open_rgb
from rscc.data.levircc import CAPTIONS_FILE, DatasetError, Vocabulary, load_pair_images, load_pairs, tokenize
from rscc.errors import RsccError

# ============================================================================ helpers


def write_tiff(path: Path, array: np.ndarray) -> Path:
    """A real baseline TIFF (little-endian, uncompressed, one strip) of an (H, W[, bands]) uint8 or
    uint16 array: RGB photometric for 3+ bands, the bands after the third as extra samples."""
    array = np.ascontiguousarray(array if array.ndim == 3 else array[:, :, None])
    h, w, bands = array.shape
    pixels = array.astype(array.dtype.newbyteorder("<")).tobytes()
    extra = bands - (3 if bands >= 3 else 1)
    short, long_ = 3, 4  # TIFF field types
    tags = [(256, long_, [w]), (257, long_, [h]), (258, short, [8 * array.dtype.itemsize] * bands),
            (259, short, [1]), (262, short, [2 if bands >= 3 else 1]), (273, long_, [0]), (277, short, [bands]),
            (278, long_, [h]), (279, long_, [len(pixels)]), (284, short, [1])] + ([(338, short, [0] * extra)] if extra else [])
    directory_end = 8 + 2 + 12 * len(tags) + 4
    entries, blobs = [], b""
    for tag, kind, values in tags:
        data = struct.pack(f"<{len(values)}{'H' if kind == short else 'I'}", *values)
        if len(data) > 4:  # stored after the directory, the entry holds its offset
            data, blobs = struct.pack("<I", directory_end + len(blobs)), blobs + data
        entries.append((tag, kind, len(values), data.ljust(4, b"\0")))
    pixels_at = struct.pack("<I", directory_end + len(blobs))
    directory = b"".join(struct.pack("<HHI", tag, kind, count) + (pixels_at if tag == 273 else value)
                         for tag, kind, count, value in entries)
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(tags)) + directory + b"\0" * 4 + blobs + pixels)
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


def captions_json(root: Path) -> dict:
    return json.loads((root / CAPTIONS_FILE).read_text())


def first_image(root: Path, side: str = "A", n: int = 0) -> Path:
    record = captions_json(root)["images"][n]
    return root / "images" / record["filepath"] / side / record["filename"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, make_tiny_run) -> Path:
    """A run directory holding a random tiny model (64 px, d=32) with its config and vocabulary."""
    words = ["new", "houses", "along", "a", "curved", "road"]
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})
    return make_tiny_run(tmp_path_factory.mktemp("run"), vocab)


def write_pair(folder: Path, name: str, size: tuple[int, int], seed: int = 0) -> tuple[Path, Path]:
    """A before/after pair of smooth colour gradients (quick to write and read even at 1000 px)."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    paths = []
    for k, side in enumerate("AB"):
        (folder / side).mkdir(parents=True, exist_ok=True)
        rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 40 * seed + 90 * k)], -1)
        Image.fromarray((rgb % 256).astype(np.uint8)).save(folder / side / name)
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
    (folder / CAPTIONS_FILE).write_text(json.dumps({"images": images}, ensure_ascii=False), encoding="utf-8")
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


# ============================================================================ command line: paths
MISSING = "/nonexistent/rscc-reliability"


def _missing_path_cases(run: str, pairs: str) -> list[tuple[list[str], str]]:
    """(argv, the path the error must name) for every command that takes a path."""
    return [
        (["data", "stats", MISSING], MISSING),
        (["data", "check", MISSING], MISSING),
        (["convert", f"{MISSING}/model.bin", "--config", f"{MISSING}/config.json", "--vocab", f"{MISSING}/vocab.json",
          "--out", "{tmp}/converted"], MISSING),
        (["caption", f"{MISSING}/a.png", f"{MISSING}/b.png", "--run", run, "--device", "cpu"], f"{MISSING}/a.png"),
        (["caption", f"{pairs}/A/p.png", f"{pairs}/B/p.png", "--run", MISSING, "--device", "cpu"], MISSING),
        (["caption", "--pairs", MISSING, "--run", run, "--device", "cpu"], MISSING),
        (["train", "--preset", "cpu-tiny", "--data", MISSING, "--out", "{tmp}/trained", "--no-progress"], MISSING),
        (["evaluate", MISSING, "--no-progress"], MISSING),
        (["evaluate", run, "--data", MISSING, "--out", "{tmp}/evaluated", "--no-progress", "--device", "cpu"], MISSING),
        (["score", f"{MISSING}/predictions.jsonl"], f"{MISSING}/predictions.jsonl"),
        (["index", MISSING, "--run", run, "--out", "{tmp}/index", "--no-progress"], MISSING),
        (["index", pairs, "--run", MISSING, "--out", "{tmp}/index", "--no-progress"], MISSING),
        (["search", MISSING, "a road"], MISSING),
        (["verify-reference", MISSING], MISSING),
    ]


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    write_pair(folder, "p.png", (40, 40))
    return folder


@pytest.mark.parametrize("case", range(14))
def test_every_command_names_a_nonexistent_path_in_one_line_and_writes_nothing(case, tiny_run, pairs_dir, tmp_path,
                                                                                 capsys):
    cases = _missing_path_cases(str(tiny_run), str(pairs_dir))
    assert len(cases) == 14
    argv, named = cases[case]
    status, err = cli([a.format(tmp=tmp_path) for a in argv], capsys)
    assert_one_line_error(status, err, named)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["synth", "train", "caption", "evaluate", "index"])
def test_an_output_under_a_file_is_one_line_error(command, tiny_run, pairs_dir, clean, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    out = blocker / "out"
    argv = {
        "synth": ["synth", "--out", out, "--pairs", "3", "--quiet"],
        "train": ["train", "--preset", "cpu-tiny", "--data", clean, "--out", out, "--no-progress"],
        "caption": ["caption", "--pairs", pairs_dir, "--run", tiny_run, "--out", out / "captions.jsonl", "--device", "cpu"],
        "evaluate": ["evaluate", tiny_run, "--data", clean, "--out", out, "--no-meteor", "--no-retrieval",
                     "--no-progress", "--device", "cpu"],
        "index": ["index", pairs_dir, "--run", tiny_run, "--out", out, "--no-progress", "--device", "cpu"],
    }[command]
    status, err = cli(argv, capsys)
    assert_one_line_error(status, err, str(blocker))
    assert blocker.read_text() == "in the way"


def test_os_errors_reach_the_terminal_as_one_line_in_a_real_process(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run([sys.executable, "-m", "rscc", "synth", "--out", str(blocker / "x"), "--pairs", "3"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"rscc synth: error: {blocker}: a file is in the way (a folder was expected)"


# ============================================================================ command line: runs and options
@pytest.mark.parametrize("command", ["caption", "evaluate", "index"])
def test_a_run_directory_without_a_checkpoint_is_one_line_error(command, tiny_run, pairs_dir, clean, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    shutil.rmtree(run / "best")
    argv = {"caption": ["caption", f"{pairs_dir}/A/p.png", f"{pairs_dir}/B/p.png", "--run", run, "--device", "cpu"],
            "evaluate": ["evaluate", run, "--data", clean, "--no-progress", "--device", "cpu"],
            "index": ["index", pairs_dir, "--run", run, "--out", tmp_path / "index", "--no-progress"]}[command]
    status, err = cli(argv, capsys)
    assert_one_line_error(status, err, str(run), "no checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("override, listed", [
    ("train.bogus=3", "max_steps"),  # an option that does not exist: the section's options are listed
    ("bogus.option=3", "'train'"),  # a section that does not exist
    ("loss.fn_mode=fnx", "none, fne, fna"),  # a value that is not one of the choices
    ("train.epochs=three", "int"),  # a value of the wrong type
])
def test_an_unknown_option_or_value_lists_what_is_valid_and_writes_nothing(override, listed, tmp_path, capsys):
    status, err = cli(["train", "--preset", "cpu-tiny", "--out", tmp_path / "run", override], capsys)
    assert_one_line_error(status, err, override.split("=")[0], listed)
    assert not (tmp_path / "run").exists()


def test_an_unknown_choice_of_an_argument_lists_the_valid_ones(tiny_run, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(tiny_run), "--checkpoint", "middle"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert "invalid choice: 'middle' (choose from 'best', 'last')" in err.splitlines()[-1]


def test_the_best_checkpoint_has_the_lowest_val_loss_or_the_highest_score():
    # every train.select_best choice has a direction (the lists are read from config.CHOICES)
    from rscc.training.validation import improves

    assert improves(1.0, 2.0, "val_loss") and not improves(2.0, 1.0, "val_loss")
    for score in ("cider", "retrieval"):
        assert improves(2.0, 1.0, score) and not improves(1.0, 2.0, score)
    assert improves(5.0, None, "cider") and not improves(float("nan"), None, "val_loss")


@pytest.mark.parametrize("name", ["config.yaml", "vocab.json"])
def test_a_run_file_that_is_not_utf8_text_is_one_line_error(name, tiny_run, pairs_dir, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    (run / name).write_bytes(b"\xff\xfe\x00binary")
    status, err = cli(["caption", f"{pairs_dir}/A/p.png", f"{pairs_dir}/B/p.png", "--run", run, "--device", "cpu"],
                      capsys)
    assert_one_line_error(status, err, str(run / name), "UTF-8")


def test_a_checkpoint_of_another_configuration_is_one_line_error_naming_the_mismatch(tiny_run, pairs_dir, tmp_path,
                                                                                     capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace("d_model: 32", "d_model: 48"))
    status, err = cli(["caption", f"{pairs_dir}/A/p.png", f"{pairs_dir}/B/p.png", "--run", run, "--device", "cpu"],
                      capsys)
    assert_one_line_error(status, err, str(run / "best" / "weights.safetensors"), "do not fit", "d_model 48")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_a_corrupted_safetensors_file_is_one_line_error(damage, tiny_run, pairs_dir, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path / "run")
    weights = run / "best" / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 3], "garbage": os.urandom(4096), "empty": b""}[damage])
    status, err = cli(["caption", f"{pairs_dir}/A/p.png", f"{pairs_dir}/B/p.png", "--run", run, "--device", "cpu"],
                      capsys)
    assert_one_line_error(status, err, str(weights))


def test_searching_an_index_with_another_model_is_one_line_error(tiny_run, pairs_dir, tmp_path, capsys):
    from rscc.config import RunConfig
    from rscc.model.rsicrc import build_model, save_weights

    other = copy_run(tiny_run, tmp_path / "other")
    torch.manual_seed(1)
    save_weights(build_model(RunConfig.load(other / "config.yaml").model, load_pretrained=False),
                 other / "best" / "weights.safetensors")
    assert cli(["index", pairs_dir, "--run", tiny_run, "--out", tmp_path / "index", "--no-progress",
                "--device", "cpu"], capsys)[0] == 0
    status, err = cli(["search", tmp_path / "index", "a road", "--run", other, "--device", "cpu"], capsys)
    assert_one_line_error(status, err, str(tmp_path / "index"), "not comparable")
    status, err = cli(["index", pairs_dir, "--run", other, "--out", tmp_path / "index", "--no-progress",
                       "--device", "cpu"], capsys)
    assert_one_line_error(status, err, "cannot be mixed")


# ============================================================================ command line: any image, any query
@pytest.mark.parametrize("size", [(100, 37), (1000, 1000)])
def test_caption_accepts_images_of_any_size(size, tiny_run, tmp_path, capsys):
    before, after = write_pair(tmp_path, "odd.png", size)
    status = main(["caption", str(before), str(after), "--run", str(tiny_run), "--device", "cpu"])
    out = capsys.readouterr().out.strip().splitlines()
    assert status == 0 and len(out) == 1 and set(out[0].split()) <= {"new", "houses", "along", "a", "curved", "road", "UNK"}


def test_caption_accepts_a_folder_of_mixed_sizes(tiny_run, tmp_path, capsys):
    write_pair(tmp_path / "pairs", "small.png", (100, 37), seed=1)
    write_pair(tmp_path / "pairs", "large.png", (1000, 1000), seed=2)
    status = main(["caption", "--pairs", str(tmp_path / "pairs"), "--run", str(tiny_run), "--device", "cpu"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0 and [r["id"] for r in rows] == ["large", "small"]


@pytest.fixture(scope="module")
def small_index(tiny_run, tmp_path_factory) -> Path:
    """An index of a 100x37 and a 1000x1000 pair (index accepts images of any size)."""
    folder = tmp_path_factory.mktemp("index")
    write_pair(folder / "pairs", "small.png", (100, 37), seed=1)
    write_pair(folder / "pairs", "large.png", (1000, 1000), seed=2)
    assert main(["index", str(folder / "pairs"), "--run", str(tiny_run), "--out", str(folder / "index"),
                 "--no-progress", "--device", "cpu"]) == 0
    return folder / "index"


def test_search_with_a_10000_character_query_answers_and_warns(small_index, capsys):
    query = ("new houses along a curved road " * 400)[:10_000]
    with pytest.warns(UserWarning, match="only the first 39"):
        status = main(["search", str(small_index), query, "--json", "--device", "cpu"])
    results = json.loads(capsys.readouterr().out)
    assert status == 0 and sorted(r["id"] for r in results) == ["large.png", "small.png"]


@pytest.mark.parametrize("query", ["", "?!"])
def test_search_with_an_empty_query_is_one_line_error(small_index, query, capsys):
    status, err = cli(["search", small_index, query, "--device", "cpu"], capsys)
    assert_one_line_error(status, err, "has no words")


# ============================================================================ specified elsewhere
# Error behaviours that other test files already pin down exactly (not repeated here):
#   invalid JSON ............ test_levircc::test_invalid_json_is_an_error_naming_the_file,
#                             test_check::test_bad_json_is_reported_with_its_line
#   missing 'images' key .... test_levircc::test_missing_images_key_is_an_error, test_check::test_missing_images_key_is_reported
#   6 captions (0 and 6) .... test_levircc::test_a_pair_with_six_captions_is_an_error_naming_the_file,
#                             test_check::test_wrong_caption_count_is_reported_on_its_record
#   empty caption, missing image, truncated PNG (validator) ... test_check::test_empty_caption_is_reported,
#                             test_missing_image_is_reported_with_its_path, test_corrupt_png_is_reported
#   unknown split ........... test_levircc::test_unknown_split_is_an_error, test_check::test_unknown_split_is_reported
#   text file named .png .... test_levircc::test_text_file_named_png_is_an_error, test_check::test_text_file_named_png_is_reported
#   A and B sizes differ .... test_levircc::test_pair_of_different_sizes_is_an_error_naming_both_files,
#                             test_check::test_size_mismatch_is_reported_on_the_b_image
#   16-bit grayscale ........ test_levircc::test_16_bit_image_is_rejected_naming_the_file, test_check::test_sixteen_bit_image_is_reported
#   grey / RGBA / palette ... test_levircc::test_grayscale_rgba_and_palette_images_are_converted_to_rgb,
#                             test_check::test_grayscale_and_palette_images_are_accepted
#   caption over max_len .... test_levircc::test_a_caption_longer_than_max_len_is_truncated_with_one_warning (and strict)
#   unknown word -> UNK ..... test_levircc::test_encoding_is_start_ids_end_padded_to_41_with_pad_mask_and_labels,
#                             test_index::test_a_query_is_encoded_like_a_caption_with_unknown_words_as_unk
#   unknown preset .......... test_train::test_unknown_preset_is_an_error_listing_the_presets, test_config::test_unknown_preset_lists_the_valid_ones
#   weights of another configuration, corrupted safetensors (library level) ... test_model::
#                             test_weights_of_another_width_are_a_checkpoint_error_naming_key_and_shapes,
#                             test_corrupted_safetensors_file_is_a_checkpoint_error
#   index of another model (library level) ... test_index::test_an_index_built_by_another_model_is_refused,
#                             test_search_text_with_another_model_is_refused
#   empty query (CLI), 10,000-character query (library) ... test_index::test_search_command_with_an_empty_query_exits_2_with_one_line,
#                             test_a_query_of_10000_characters_keeps_its_first_max_len_minus_2_words
#   interrupted and resumed training (in process), kill between the renames ... test_train::
#                             test_run_killed_twice_and_resumed_ends_with_bit_identical_weights,
#                             test_checkpoint_swap_killed_between_its_renames_is_recovered
#   NaN loss ................ test_train::test_nan_loss_stops_with_the_step_number_and_keeps_the_last_good_checkpoint
#   unwritable output, full disk before training ... test_train::test_unwritable_output_directory_is_rejected,
#                             test_nearly_full_disk_is_rejected_before_training
#   code-carrying .bin/.pt .. test_convert::test_checkpoint_with_code_in_its_pickle_is_refused_and_never_run,
#                             test_convert_command_reports_a_refused_checkpoint_with_exit_status_2
#   YAML with python tags ... test_config::test_yaml_config_is_parsed_safely_without_running_code


# ============================================================================ every JSON/YAML document the package reads

@pytest.mark.parametrize("reader, fmt", [
    (lambda p: load_pairs(p), "json"),
    (lambda p: Vocabulary.load(p), "json"),
    (lambda p: RunConfig.load(p), "yaml"),
])
@pytest.mark.parametrize("damage, message", [
    (b"\xff\xfe{", "not a UTF-8 text file"),
    (b"{\n  \"images\": [\n    {,\n", "not valid (JSON|YAML) .*line 3"),
])
def test_every_document_reader_fails_in_one_line_naming_the_file_and_the_line(reader, fmt, damage, message, tmp_path):
    path = tmp_path / f"document.{fmt}"
    path.write_bytes(damage)
    with pytest.raises(RsccError) as caught:
        reader(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: ") and re.search(message, text), text
