"""rscc.data.images: the image suffixes, folders of A/ and B/ pairs, and the pair dataset."""
import pytest
import torch
from PIL import Image

from rscc.data.images import IMAGE_SUFFIXES, PairImages, folder_pairs, image_names
from rscc.errors import DatasetError


def write(path, size=(8, 8), colour=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def test_image_names_keep_the_image_suffixes_in_any_case_and_skip_other_files(tmp_path):
    write(tmp_path / "a.png")
    write(tmp_path / "b.PNG")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    assert image_names(tmp_path) == {"a.png", "b.PNG"}
    assert all(s == s.lower() for s in IMAGE_SUFFIXES)


def test_folder_pairs_match_the_names_of_a_and_b_sorted(tmp_path):
    for name in ("p2.png", "p1.png"):
        write(tmp_path / "A" / name)
        write(tmp_path / "B" / name)
    assert folder_pairs(tmp_path) == [(tmp_path / "A" / "p1.png", tmp_path / "B" / "p1.png"),
                                      (tmp_path / "A" / "p2.png", tmp_path / "B" / "p2.png")]


def test_an_image_without_a_partner_is_an_error_naming_the_other_folder(tmp_path):
    write(tmp_path / "A" / "p1.png")
    write(tmp_path / "A" / "p2.png")
    write(tmp_path / "B" / "p1.png")
    with pytest.raises(DatasetError, match=r"B: no image named p2.png \(every image needs a partner"):
        folder_pairs(tmp_path)


def test_a_missing_subfolder_or_no_image_is_an_error(tmp_path):
    write(tmp_path / "A" / "p1.png")
    with pytest.raises(DatasetError, match="B: folder not found"):
        folder_pairs(tmp_path)
    empty = tmp_path / "empty"
    (empty / "A").mkdir(parents=True)
    (empty / "B").mkdir()
    with pytest.raises(DatasetError, match=r"A: no image \(.png"):
        folder_pairs(empty)


def test_pair_images_transform_both_images_and_refuse_different_sizes(tmp_path):
    a, b = write(tmp_path / "A" / "p.png", colour=(255, 0, 0)), write(tmp_path / "B" / "p.png", colour=(0, 0, 255))
    big = write(tmp_path / "B" / "big.png", size=(16, 8))
    def first_pixel(img):
        return torch.tensor(img.getpixel((0, 0)))

    images = PairImages([(a, b), (a, big)], first_pixel)
    assert len(images) == 2
    before, after = images[0]
    assert before.tolist() == [255, 0, 0] and after.tolist() == [0, 0, 255]
    with pytest.raises(DatasetError, match=r"p.png is 8x8 but .*big.png is 16x8"):
        images[1]
