"""Image files: reading one as 8-bit RGB with a one-line error naming the file, the suffixes
counted as images, and a dataset of (before, after) image pairs given by their paths."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from rscc.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")  # lower case


def image_names(folder: Path) -> set[str]:
    """Names of the files of ``folder`` whose suffix is one of :data:`IMAGE_SUFFIXES` (any case)."""
    return {p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def folder_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(folder/A/<name>, folder/B/<name>)`` for every image name, sorted by name; DatasetError
    naming the folder when ``A/`` or ``B/`` is missing, an image has no partner of the same name
    in the other folder, or there is no image at all."""
    folder = Path(folder)
    dir_a, dir_b = folder / "A", folder / "B"
    for side in (dir_a, dir_b):
        if not side.is_dir():
            raise DatasetError(f"{side}: folder not found (expected {dir_a} and {dir_b} with matching file names)")
    names_a, names_b = image_names(dir_a), image_names(dir_b)
    for here, other, there in ((names_a, names_b, dir_b), (names_b, names_a, dir_a)):
        alone = sorted(here - other)
        if alone:
            more = f" and {len(alone) - 3} more" if len(alone) > 3 else ""
            raise DatasetError(f"{there}: no image named {', '.join(alone[:3])}{more} (every image "
                               "needs a partner of the same file name in the other folder)")
    if not names_a:
        raise DatasetError(f"{dir_a}: no image ({', '.join(IMAGE_SUFFIXES)})")
    return [(dir_a / name, dir_b / name) for name in sorted(names_a)]


def rgb_problem(img: Image.Image) -> str | None:
    """Why an opened (not yet loaded) image cannot be read as 8-bit RGB without losing information,
    or None. Pillow itself keeps only the high byte of a 16-bit RGB PNG or TIFF and silently drops
    the bands of a 4-or-more-band TIFF beyond the third: the file's header gives them away."""
    if img.mode.startswith("I") or img.mode == "F":
        return f"{img.mode} (16-bit, 32-bit or float) image; expected 8-bit RGB"
    tags = getattr(img, "tag_v2", None)  # TIFF header
    if tags is not None:
        bits = tags.get(258) or ()
        bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,)
        if any(b > 8 for b in bits):
            return f"{max(bits)}-bit TIFF ({len(bits)} band(s)); expected 8-bit RGB"
        samples = tags.get(277) or 1
        if samples > len(img.getbands()):
            return f"TIFF with {samples} bands (multispectral?); expected RGB (3 bands, or 4 with alpha)"
    for tile in img.tile:  # raw modes such as RGB;16B (16-bit PNG)
        args = tile[3] if len(tile) > 3 else None
        rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        if isinstance(rawmode, str) and (";16" in rawmode or ";32" in rawmode):
            return f"16-bit {img.format or ''} image ({rawmode}); expected 8-bit RGB".replace("  ", " ")
    if len(img.getbands()) > 4 or img.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return f"{img.mode} image with bands {''.join(img.getbands())}; expected RGB"
    return None


def open_rgb(path: str | Path) -> Image.Image:
    """Open an image as RGB. Grayscale, RGBA and palette images are converted; 16-bit and
    multi-band images are rejected with a DatasetError naming the file (:func:`rgb_problem`)."""
    path = Path(path)
    try:
        img = Image.open(path)
        problem = rgb_problem(img)
        if problem is None:
            img.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: image not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot decode image ({exc})") from None
    if problem is not None:
        raise DatasetError(f"{path}: {problem}")
    return img if img.mode == "RGB" else img.convert("RGB")


def open_pair(path_a: str | Path, path_b: str | Path) -> tuple[Image.Image, Image.Image]:
    """Both images of a pair as RGB; a size mismatch is an error naming both files."""
    img_a, img_b = open_rgb(path_a), open_rgb(path_b)
    if img_a.size != img_b.size:
        raise DatasetError(f"{path_a} is {img_a.size[0]}x{img_a.size[1]} but {path_b} is "
                           f"{img_b.size[0]}x{img_b.size[1]}")
    return img_a, img_b


class PairImages(Dataset):
    """The pairs ``(path_a, path_b)`` as ``(transform(A), transform(B))``, read one pair at a time."""

    def __init__(self, paths: Sequence[tuple[Path, Path]], transform: Callable[[Image.Image], torch.Tensor]):
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_a, img_b = open_pair(*self.paths[i])
        return self.transform(img_a), self.transform(img_b)
