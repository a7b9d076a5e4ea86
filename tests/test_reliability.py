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
def tiny_run(tmp_path_factory, make_tiny_run) -> Path:
    """A run directory holding a random tiny model (64 px, d=32) with its config and vocabulary."""
    words = ["new", "houses", "along", "a", "curved", "road"]
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})
    return make_tiny_run(tmp_path_factory.mktemp("run"), vocab)


def copy_run(run_dir: Path, to: Path) -> Path:
    return Path(shutil.copytree(run_dir, to))


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


def test_config_choices_agree_with_the_modules_that_use_them():
    from rscc.config import CHOICES
    from rscc.losses import FN_MODES, SIMILARITY_SOURCES
    from rscc.train import SELECT_BEST

    assert set(CHOICES["loss.fn_mode"]) == set(FN_MODES)
    assert set(CHOICES["loss.similarity_source"]) == set(SIMILARITY_SOURCES)
    assert set(CHOICES["train.select_best"]) == set(SELECT_BEST)


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
    from rscc.model.rsicrc import build_model, save_weights
    from rscc.config import RunConfig

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


# ============================================================================ faults: a training killed with SIGKILL
# The test_train model: 40 synthetic pairs of 64 px, 9 steps an epoch, last/ every 3 steps, 12 steps.
SMALL = [
    "model.tiny_width=64", "model.tiny_layers=1", "model.image_size=64", "model.d_model=32",
    "model.h_dim=32", "model.a_dim=32", "model.num_heads=2", "train.batch_size=16",
    "train.max_steps=12", "train.checkpoint_every=3", "loss.similarity_source=string", "train.log_every=1",
    "train.num_threads=1",
]

# Runs `rscc train` and SIGKILLs its own process at the moment named by RSCC_KILL_AT:
#   step:N      inside the N-th optimiser step (parameters updated in memory, nothing written)
#   swap:N      during the N-th write of last/: the new copy is complete in its temporary folder,
#               nothing has been renamed yet
#   between:N   during the N-th write of last/, between `last -> .last.old` and `tmp -> last`
DRIVER = '''
import os, signal, sys
from pathlib import Path
import torch

kind, n = os.environ["RSCC_KILL_AT"].split(":")
n, calls = int(n), {"step": 0, "write": 0}

def die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    real_step = torch.optim.AdamW.step
    def step(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["step"] += 1
        if calls["step"] == n:
            die()
        return result
    torch.optim.AdamW.step = step
else:
    real_replace = os.replace
    def replace(src, dst, *args, **kwargs):
        names, writing = (Path(src).name, Path(dst).name), calls["write"] + 1
        if kind == "swap" and names == ("last", ".last.old") and writing == n:
            die()  # the new copy is complete in .last.tmp-PID; nothing renamed yet
        if names[0].startswith(".last.tmp-") and names[1] == "last":
            if kind == "between" and writing == n:
                die()  # last/ is now .last.old; the new copy is not in place yet
            calls["write"] += 1
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace

from rscc.cli import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """(40 synthetic pairs of 64 px, a private RSCC_CACHE, a 3-step run trained on them)."""
    from rscc.config import load_preset
    from rscc.train import train

    base = tmp_path_factory.mktemp("small")
    data = make_synthetic(base / "data", 40, size=64, seed=0, progress=False)
    cache = base / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCC_CACHE", str(cache))
        train(load_preset("cpu-tiny", SMALL + [f"data.root={data}", "train.max_steps=3"]), base / "run", progress=False)
    return data, cache, base / "run"


@pytest.fixture(scope="module")
def kill_setup(small_data, tmp_path_factory):
    """(environment, dataset, driver, the uninterrupted run's final weights)."""
    from safetensors.torch import load_file

    from rscc.config import load_preset
    from rscc.train import train

    data, cache, _ = small_data
    base = tmp_path_factory.mktemp("sigkill")
    env = {**os.environ, "RSCC_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    driver = base / "driver.py"
    driver.write_text(DRIVER)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCC_CACHE", str(cache))
        train(load_preset("cpu-tiny", SMALL + [f"data.root={data}"]), base / "reference", progress=False)
    return env, data, driver, load_file(str(base / "reference" / "last" / "weights.safetensors"))


def train_argv(data: Path, out: Path, *flags: str, overrides: tuple[str, ...] = ()) -> list[str]:
    return ["train", "--preset", "cpu-tiny", "--data", str(data), "--out", str(out), "--no-progress", *flags,
            *SMALL, *overrides]


@pytest.mark.slow
@pytest.mark.parametrize("kill_at, left_behind", [
    ("step:5", ["last"]),  # mid-step, mid-epoch: last/ of step 3 stays
    ("swap:2", [".last.tmp-*", "last"]),  # writing last/ of step 6: the new copy complete, not yet in place
    ("between:2", [".last.old", ".last.tmp-*"]),  # the old copy moved aside, the new one not yet in place
])
def test_a_training_killed_by_sigkill_keeps_its_last_checkpoint_and_resumes_to_identical_weights(
        kill_setup, tmp_path, monkeypatch, kill_at, left_behind):
    from safetensors.torch import load_file

    from rscc.model.run import checkpoint_dir
    from rscc.train import read_state

    env, data, driver, expected = kill_setup
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(driver), *train_argv(data, out)], env={**env, "RSCC_KILL_AT": kill_at},
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    found = sorted(p.name for p in out.glob("*last*"))
    assert [re.sub(r"-\d+$", "-*", name) for name in found] == left_behind  # killed at the moment named
    last = checkpoint_dir(out, "last")
    assert last is not None and read_state(last)["step"] == 3
    load_file(str(last / "weights.safetensors"))  # loadable

    monkeypatch.setenv("RSCC_CACHE", env["RSCC_CACHE"])
    assert main(train_argv(data, out, "--resume")) == 0
    got = load_file(str(out / "last" / "weights.safetensors"))
    assert read_state(out / "last")["step"] == 12
    assert sorted(got) == sorted(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert not list(out.glob(".last.*")) and not list(out.glob(".best.*"))  # no temporary copy left behind


# ============================================================================ faults: a loss that is not finite
def test_an_infinite_loss_stops_with_the_step_number_and_keeps_the_last_good_checkpoint(small_data, tmp_path,
                                                                                         monkeypatch):
    import rscc.train as trainer
    from rscc.config import load_preset

    data, cache, _ = small_data
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    real, calls = trainer.caption_loss, {"n": 0}

    def overflowing(logits, labels):
        calls["n"] += 1
        loss = real(logits, labels)
        return loss * float("inf") if calls["n"] == 4 else loss

    monkeypatch.setattr(trainer, "caption_loss", overflowing)
    with pytest.raises(RsccError, match=r"step 4: the loss is not finite \(loss inf") as error:
        trainer.train(load_preset("cpu-tiny", SMALL + [f"data.root={data}"]), tmp_path / "run", progress=False)
    assert f"the last good checkpoint is {tmp_path / 'run' / 'last'} (step 3)" in str(error.value)
    assert trainer.read_state(tmp_path / "run" / "last")["step"] == 3


# ============================================================================ untrusted files
class WritesMarker:
    """Unpickling this would create a file: code hidden in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_training_state_with_code_in_its_pickle_is_refused_on_resume_and_never_run(small_data, tmp_path, monkeypatch,
                                                                                     capsys):
    data, cache, trained = small_data
    run = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "marker"
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    state["rng"][0]["python"] = WritesMarker(marker)
    torch.save(state, run / "last" / "state.pt")
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    status, err = cli(train_argv(data, run, "--resume", overrides=("train.max_steps=3",)), capsys)
    assert_one_line_error(status, err, str(run / "last" / "state.pt"), "unreadable training state")
    assert not marker.exists()


def test_training_states_round_trip_through_torch_load_with_weights_only(small_data):
    from rscc.train import read_state, set_rng_state

    state = read_state(small_data[2] / "last")  # python, numpy and torch RNG states included
    set_rng_state(state["rng"][0])
    assert state["step"] == 3 and {"python", "numpy", "torch"} <= set(state["rng"][0])


def test_pretrained_backbone_weights_with_code_in_their_pickle_are_refused(tmp_path):
    from rscc.config import ModelConfig
    from rscc.errors import CheckpointError
    from rscc.model.rsicrc import build_model

    marker = tmp_path / "marker"
    torch.save({"visual.proj": WritesMarker(marker)}, tmp_path / "weights.pt")
    config = ModelConfig(backbone="tiny", pretrained=str(tmp_path / "weights.pt"), tiny_width=32, tiny_layers=1,
                         image_size=64, d_model=32, a_dim=32, h_dim=16, vocab_size=8)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_model(config)
    assert not marker.exists()


def _package_calls() -> list[tuple[str, int, str, object]]:
    """(file, line, dotted callee, call node) of every call in the rscc package."""
    import ast

    found = []
    for path in sorted((REPO / "rscc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.append((str(path.relative_to(REPO)), node.lineno, ast.unparse(node.func), node))
    return found


def test_the_package_never_evaluates_or_unpickles_untrusted_text():
    import ast

    unsafe, calls = [], _package_calls()
    for where, line, callee, node in calls:
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if callee in ("eval", "exec", "builtins.eval", "builtins.exec", "pickle.load", "pickle.loads",
                      "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "dill.load"):
            unsafe.append(f"{where}:{line}: {callee}")
        if callee == "torch.load" and keywords.get("weights_only") != "True":
            unsafe.append(f"{where}:{line}: torch.load without weights_only=True")
        if callee.endswith("np.load") and keywords.get("allow_pickle") not in (None, "False"):
            unsafe.append(f"{where}:{line}: np.load with allow_pickle")
    assert unsafe == []
    assert any(callee == "torch.load" for _, _, callee, _ in calls)  # the scan sees the calls it checks


# ============================================================================ faults: `make reproduce` restarted
@pytest.fixture
def study(tmp_path, monkeypatch):
    """The smoke profile in a private runs folder, with a trainer and an evaluator that only write
    the files they would write, counting their calls."""
    import rscc.evaluate
    import rscc.train
    from rscc.experiments.profiles import get_profile

    calls = {"train": [], "evaluate": 0}

    def fake_train(config, out_dir, resume=False, progress=True, **kwargs):
        out_dir = Path(out_dir)
        calls["train"].append(resume)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved = type(config).from_dict(config.to_dict())
        saved.model.vocab_size = 50  # filled in by the real trainer
        saved.save(out_dir / "config.yaml")
        for name in ("last", "best"):
            (out_dir / name).mkdir(exist_ok=True)
            (out_dir / name / "weights.safetensors").write_bytes(b"weights")
            (out_dir / name / "state.pt").write_bytes(b"state")
        return {"steps": 1}

    def fake_evaluate(run_dir, out_dir=None, **kwargs):
        calls["evaluate"] += 1
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        metrics = {"split": "test", "captioning": {}}
        (Path(out_dir) / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    monkeypatch.setattr(rscc.train, "train", fake_train)
    monkeypatch.setattr(rscc.evaluate, "evaluate_run", fake_evaluate)
    return get_profile("smoke", runs_dir=tmp_path / "runs"), calls


def _age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_a_complete_run_of_the_same_configuration_is_reused_without_training(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    first = train_and_evaluate(profile, "run", meteor=False)
    again = train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False], "evaluate": 1}
    assert again == first and "config_sha256" in again


def test_a_change_of_threads_or_device_alone_does_not_make_a_run_stale(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    train_and_evaluate(profile, "run", ["train.num_threads=2", "train.device=cpu", "data.num_workers=1"], meteor=False)
    assert calls == {"train": [False], "evaluate": 1}


def test_a_run_saved_with_another_configuration_is_trained_again_from_scratch(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    train_and_evaluate(profile, "run", ["loss.theta=0.5"], meteor=False)
    assert calls == {"train": [False, False], "evaluate": 2}
    assert "loss.theta=0.5" in (profile.run_dir("run") / "config.yaml").read_text()


@pytest.mark.parametrize("damage", ["missing", "truncated", "not an object", "no digest", "another digest"])
def test_a_run_whose_metrics_are_missing_or_corrupt_is_resumed_and_evaluated_again(study, damage):
    from rscc.experiments.study import metrics_path, train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    path = metrics_path(profile.run_dir("run"))
    text = path.read_text()
    metrics = json.loads(text)
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "not an object":
        path.write_text("[]")
    elif damage == "no digest":
        path.write_text(json.dumps({k: v for k, v in metrics.items() if k != "config_sha256"}))
    else:
        path.write_text(json.dumps({**metrics, "config_sha256": "0" * 64}))
    train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False, True], "evaluate": 2}  # resumed (a finished run: no step left), re-evaluated
    assert json.loads(path.read_text())["config_sha256"] == metrics["config_sha256"]


def test_metrics_older_than_the_weights_they_evaluated_are_redone(study):
    from rscc.experiments.study import is_complete, metrics_path, run_config, train_and_evaluate

    profile, calls = study
    train_and_evaluate(profile, "run", meteor=False)
    run_dir = profile.run_dir("run")
    assert is_complete(run_dir, run_config(profile))
    _age(metrics_path(run_dir), 60)  # weights rewritten after the evaluation
    assert not is_complete(run_dir, run_config(profile))
    train_and_evaluate(profile, "run", meteor=False)
    assert calls == {"train": [False, True], "evaluate": 2}


def test_a_run_killed_before_its_first_checkpoint_is_trained_from_scratch(study):
    from rscc.experiments.study import train_and_evaluate

    profile, calls = study
    run_dir = profile.run_dir("run")
    train_and_evaluate(profile, "run", meteor=False)
    for name in ("last", "best"):
        shutil.rmtree(run_dir / name)
    (run_dir / "eval" / "metrics.json").unlink()
    train_and_evaluate(profile, "run", meteor=False)
    assert calls["train"] == [False, False]


def test_a_disk_that_fills_up_while_writing_a_checkpoint_keeps_the_previous_one(small_data, tmp_path, monkeypatch,
                                                                                capsys):
    import errno

    import rscc.train as trainer

    data, cache, _ = small_data
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    real_save, calls = torch.save, {"n": 0}

    def filling_save(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the state of the second last/ (step 6)
            Path(path).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    status, err = cli(train_argv(data, tmp_path / "run"), capsys)
    assert_one_line_error(status, err, "No space left on device", str(tmp_path / "run" / ".last.tmp-"))
    assert trainer.read_state(tmp_path / "run" / "last")["step"] == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if "last" in p.name) == ["last"]  # no partial copy


# ============================================================================ specified elsewhere
# Behaviours of issue 8 that other test files already pin down exactly (not repeated here):
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
