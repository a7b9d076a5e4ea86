"""Dataset validator: everything wrong with a LEVIR-CC root, each problem with its file.

:func:`validate_dataset` does not stop at the first problem (the reader in
:mod:`rscc.data.levircc` does): it lists them all, so that a broken download can be fixed in one
go. ``rscc data check ROOT`` prints the list and exits 1, or prints a one-line summary.

What is checked (METHOD §1.1): the captions JSON exists, is UTF-8 JSON with an ``images`` list;
every record has ``filepath``, ``filename``, ``imgid``, ``split`` and five non-empty
``sentences``; splits are train/val/test; imgids and file names are unique; a ``changeflag``
agrees with the captions; both images exist, decode and have the same size. Grayscale, RGBA and
palette images are accepted (the reader converts them to RGB); 16-bit, float and multi-band
images are not.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from rscc.data.images import rgb_problem
from rscc.data.levircc import CAPTIONS_FILE, CAPTIONS_PER_PAIR, SPLITS, is_no_change, tokenize

REQUIRED_FIELDS = ("filepath", "filename", "imgid", "split", "sentences")
# modes the reader converts to RGB without losing information
ACCEPTED_MODES = {"RGB", "RGBA", "L", "LA", "P", "PA", "1", "RGBX"}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: the file (or JSON record) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def validate_dataset(root: str | Path, images: bool = True, with_summary: bool = False,
                     progress: bool = False):
    """Every problem of the LEVIR-CC dataset at ``root`` (empty list: clean).

    ``images`` False checks the captions only. ``with_summary`` True returns
    ``(problems, summary)`` where summary is a one-line description of what was checked."""
    root = Path(root)
    problems: list[Problem] = []
    records = _load_records(root, problems)
    if records is None:
        return (problems, f"{root}: not checked") if with_summary else problems
    json_path = root / CAPTIONS_FILE
    pairs = []  # (record index, filepath, filename) of records good enough to look for images
    imgids, names = Counter(), Counter()
    splits, changed = Counter(), 0
    for n, record in enumerate(records):
        where = f"{json_path}: images[{n}]"
        if not isinstance(record, dict):
            problems.append(Problem(where, f"expected an object, found {type(record).__name__}"))
            continue
        name = record.get("filename")
        if isinstance(name, str):
            where += f" ({name})"
        missing = [key for key in REQUIRED_FIELDS if key not in record]
        if missing:
            problems.append(Problem(where, f"missing field(s) {', '.join(repr(m) for m in missing)}"))
        split = record.get("split")
        if "split" in record and split not in SPLITS:
            problems.append(Problem(where, f"unknown split {split!r}, expected one of {', '.join(SPLITS)}"))
        for key in ("filepath", "filename"):
            if key in record and not (isinstance(record[key], str) and record[key]):
                problems.append(Problem(where, f"'{key}' must be a non-empty string, found {record[key]!r}"))
        if "imgid" in record:
            if isinstance(record["imgid"], bool) or not isinstance(record["imgid"], int):
                problems.append(Problem(where, f"'imgid' must be an integer, found {record['imgid']!r}"))
            else:
                imgids[record["imgid"]] += 1
        sentences = _check_sentences(record.get("sentences"), where, problems) if "sentences" in record else None
        if "sentids" in record and not (
            isinstance(record["sentids"], list) and len(record["sentids"]) == CAPTIONS_PER_PAIR
        ):
            problems.append(Problem(
                where, f"'sentids' must be a list of {CAPTIONS_PER_PAIR} ids, found {record['sentids']!r}"))
        if sentences is not None and "changeflag" in record:
            stock = is_no_change(sentences)
            if record["changeflag"] not in (0, 1):
                problems.append(Problem(where, f"'changeflag' must be 0 or 1, found {record['changeflag']!r}"))
            elif bool(record["changeflag"]) == stock:
                problems.append(Problem(
                    where,
                    f"changeflag {record['changeflag']} disagrees with the captions (a pair is unchanged "
                    "iff its captions are the five stock no-change sentences)",
                ))
        if split in SPLITS:
            splits[split] += 1
            if sentences is not None:
                changed += not is_no_change(sentences)
        filepath = record.get("filepath")
        if isinstance(filepath, str) and filepath and isinstance(name, str) and name:
            names[(filepath, name)] += 1
            pairs.append((n, filepath, name))
    for imgid, count in imgids.items():
        if count > 1:
            problems.append(Problem(str(json_path), f"imgid {imgid} is used by {count} records"))
    for (filepath, name), count in names.items():
        if count > 1:
            problems.append(Problem(str(json_path), f"{filepath}/{name} is listed {count} times"))
    if images:
        _check_images(root, pairs, problems, progress)
    summary = (
        f"{root}: {len(records)} pairs ("
        + ", ".join(f"{splits[s]} {s}" for s in SPLITS)
        + f"; {changed} changed), {CAPTIONS_PER_PAIR * len(records)} captions"
        + (f", {2 * len(pairs)} images decoded" if images else ", images not checked")
        + (": no problems" if not problems else f": {len(problems)} problem(s)")
    )
    return (problems, summary) if with_summary else problems


def _load_records(root: Path, problems: list[Problem]) -> list | None:
    if not root.is_dir():
        problems.append(Problem(str(root), "not a directory (expected a LEVIR-CC root)"))
        return None
    path = root / CAPTIONS_FILE
    if not path.is_file():
        problems.append(Problem(str(path), f"captions file not found (expected {CAPTIONS_FILE} in the root)"))
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        problems.append(Problem(str(path), "not a UTF-8 text file"))
        return None
    except json.JSONDecodeError as exc:
        problems.append(Problem(str(path), f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(
            str(path), f"expected a JSON object with an 'images' list, found {type(data).__name__}"))
        return None
    if "images" not in data:
        problems.append(Problem(str(path), "missing 'images' key (expected {\"images\": [...]})"))
        return None
    if not isinstance(data["images"], list):
        problems.append(Problem(str(path), f"'images' must be a list, found {type(data['images']).__name__}"))
        return None
    return data["images"]


def _check_sentences(sentences, where: str, problems: list[Problem]) -> list[str] | None:
    """The captions as plain sentences, or None when they are unusable (problems recorded)."""
    if not isinstance(sentences, list):
        problems.append(Problem(where, f"'sentences' must be a list, found {type(sentences).__name__}"))
        return None
    if len(sentences) != CAPTIONS_PER_PAIR:
        problems.append(Problem(where, f"{len(sentences)} captions, expected {CAPTIONS_PER_PAIR}"))
    out = []
    for k, sentence in enumerate(sentences):
        at = f"{where}.sentences[{k}]"
        if not isinstance(sentence, dict):
            problems.append(Problem(at, "expected an object with 'tokens' and 'raw'"))
            return None
        tokens, raw = sentence.get("tokens"), sentence.get("raw")
        if tokens is None and raw is None:
            problems.append(Problem(at, "missing 'tokens' and 'raw'"))
            return None
        if tokens is not None and not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
            problems.append(Problem(at, "'tokens' must be a list of strings"))
            return None
        if raw is not None and not isinstance(raw, str):
            problems.append(Problem(at, "'raw' must be a string"))
            return None
        words = [t.strip().lower() for t in tokens if t.strip()] if tokens is not None else tokenize(raw)
        if not words:
            problems.append(Problem(at, "empty caption"))
            return None
        out.append(" ".join(words))
    return out if len(out) == CAPTIONS_PER_PAIR else None


def _check_images(root: Path, pairs: list[tuple[int, str, str]], problems: list[Problem], progress: bool) -> None:
    from tqdm import tqdm

    for _, filepath, name in tqdm(pairs, desc="checking images", unit="pair", disable=not progress):
        sizes = []
        for side in "AB":
            path = root / "images" / filepath / side / name
            size = _check_image(path, problems)
            sizes.append((path, size))
        (path_a, size_a), (path_b, size_b) = sizes
        if size_a and size_b and size_a != size_b:
            problems.append(Problem(
                str(path_b), f"{size_b[0]}x{size_b[1]} but its A image {path_a} is {size_a[0]}x{size_a[1]}; "
                "both must have the same size",
            ))


def _check_image(path: Path, problems: list[Problem]) -> tuple[int, int] | None:
    """Decode one image fully; its size, or None after recording a problem."""
    if not path.is_file():
        problems.append(Problem(str(path), "image not found"))
        return None
    try:
        with Image.open(path) as img:
            img.verify()  # checksums and structure, without decoding pixels
        with Image.open(path) as img:
            lossy = rgb_problem(img)  # 16-bit or extra bands that Pillow would silently drop
            img.load()  # the pixels themselves (catches truncated data)
            mode, bands, size = img.mode, img.getbands(), img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.append(Problem(str(path), f"cannot decode image ({type(exc).__name__}: {exc})"))
        return None
    if lossy is not None and mode in ACCEPTED_MODES:
        problems.append(Problem(str(path), lossy))
        return None
    if mode not in ACCEPTED_MODES:
        if mode.startswith("I") or mode == "F":
            why = f"{mode} (16-bit, 32-bit or float) image; expected 8-bit RGB"
        else:
            why = (f"{mode} image with bands {''.join(bands)}; "
                   "expected 8-bit RGB (grayscale, RGBA and palette are converted)")
        problems.append(Problem(str(path), why))
        return None
    return size
