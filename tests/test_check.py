"""The dataset validator: each kind of damage is reported with its file and reason."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscc.cli import main
from rscc.data.check import Problem, validate_dataset


@pytest.fixture
def root(dataset) -> Path:
    """A private copy of the clean dataset (conftest), to break."""
    return dataset


def _json(root: Path) -> dict:
    return json.loads((root / "LevirCCcaptions.json").read_text())


def _write_json(root: Path, data) -> None:
    (root / "LevirCCcaptions.json").write_text(json.dumps(data))


def _image(root: Path, side: str = "A", n: int = 0) -> Path:
    r = _json(root)["images"][n]
    return root / "images" / r["filepath"] / side / r["filename"]


def _only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, problems
    return problems[0]


def test_clean_synthetic_dataset_has_no_problems(clean):
    assert validate_dataset(clean) == []


def test_real_levir_cc_pairs_have_no_problems(shared):
    assert validate_dataset(shared / "data" / "levir-cc-mini") == []


def test_summary_counts_pairs_and_images(clean):
    problems, summary = validate_dataset(clean, with_summary=True)
    assert "6 pairs" in summary and "12 images decoded" in summary and summary.endswith("no problems")


def test_missing_image_is_reported_with_its_path(root):
    path = _image(root, "B")
    path.unlink()
    p = _only(validate_dataset(root))
    assert (p.path, p.reason) == (str(path), "image not found")


def test_corrupt_png_is_reported(root):
    path = _image(root, "A")
    path.write_bytes(path.read_bytes()[:300])  # truncated
    p = _only(validate_dataset(root))
    assert p.path == str(path) and p.reason.startswith("cannot decode image")


def test_text_file_named_png_is_reported(root):
    path = _image(root, "B", 2)
    path.write_text("this is not an image\n")
    p = _only(validate_dataset(root))
    assert p.path == str(path) and p.reason.startswith("cannot decode image")


def test_bad_json_is_reported_with_its_line(root):
    (root / "LevirCCcaptions.json").write_text('{"images": [\n{"filename": }')
    p = _only(validate_dataset(root))
    assert p.path == str(root / "LevirCCcaptions.json") and "not valid JSON" in p.reason and "line 2" in p.reason


def test_missing_captions_file_is_reported(root):
    (root / "LevirCCcaptions.json").unlink()
    assert "captions file not found" in _only(validate_dataset(root)).reason


def test_missing_images_key_is_reported(root):
    _write_json(root, {"pairs": _json(root)["images"]})
    p = _only(validate_dataset(root))
    assert p.path == str(root / "LevirCCcaptions.json") and "missing 'images' key" in p.reason


@pytest.mark.parametrize("count", [0, 6])
def test_wrong_caption_count_is_reported_on_its_record(root, count):
    data = _json(root)
    first = data["images"][1]["sentences"][0]
    data["images"][1]["sentences"] = [dict(first) for _ in range(count)]
    _write_json(root, data)
    p = _only(validate_dataset(root))
    assert f"images[1] ({data['images'][1]['filename']})" in p.path
    assert p.reason == f"{count} captions, expected 5"


def test_empty_caption_is_reported(root):
    data = _json(root)
    data["images"][3]["sentences"][2]["tokens"] = []
    data["images"][3]["sentences"][2]["raw"] = " ."
    _write_json(root, data)
    p = _only(validate_dataset(root))
    assert p.path.endswith(f"images[3] ({data['images'][3]['filename']}).sentences[2]") and p.reason == "empty caption"


def test_unknown_split_is_reported(root):
    data = _json(root)
    data["images"][0]["split"] = "training"
    _write_json(root, data)
    p = _only(validate_dataset(root))
    assert "images[0]" in p.path and p.reason.startswith("unknown split 'training'")


def test_missing_field_is_reported(root):
    data = _json(root)
    del data["images"][4]["imgid"]
    _write_json(root, data)
    assert _only(validate_dataset(root)).reason == "missing field(s) 'imgid'"


def test_size_mismatch_is_reported_on_the_b_image(root):
    path = _image(root, "B", 1)
    Image.new("RGB", (32, 64)).save(path)
    p = _only(validate_dataset(root))
    assert p.path == str(path) and p.reason.startswith("32x64 but its A image") and "64x64" in p.reason


def test_sixteen_bit_image_is_reported(root):
    path = _image(root, "A", 2)
    Image.fromarray(np.full((64, 64), 1000, np.uint16)).save(path)
    p = _only(validate_dataset(root))
    assert p.path == str(path) and "16-bit" in p.reason


def test_grayscale_and_palette_images_are_accepted(root):
    Image.open(_image(root, "A", 0)).convert("L").save(_image(root, "A", 0))
    Image.open(_image(root, "B", 0)).convert("P").save(_image(root, "B", 0))
    assert validate_dataset(root) == []


def test_changeflag_that_contradicts_the_captions_is_reported(root):
    data = _json(root)
    n = next(i for i, r in enumerate(data["images"]) if r["changeflag"] == 0)
    data["images"][n]["changeflag"] = 1
    _write_json(root, data)
    assert "disagrees with the captions" in _only(validate_dataset(root)).reason


def test_every_problem_is_listed_not_only_the_first(root):
    _image(root, "A", 0).unlink()
    _image(root, "B", 5).unlink()
    assert len(validate_dataset(root)) == 2


def test_cli_check_exits_1_listing_problems(root, capsys):
    path = _image(root, "B")
    path.unlink()
    assert main(["data", "check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: image not found" in out and "1 problem(s) found" in out


def test_cli_check_exits_0_with_one_line_when_clean(clean, capsys):
    assert main(["data", "check", str(clean)]) == 0
    assert capsys.readouterr().out.strip().count("\n") == 0
