"""Writing a dataset: the split plan, the captions JSON, the images (in worker processes), and the
marker that makes a complete synthetic dataset recognisable."""
from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rscc.data.levircc import CAPTIONS_FILE, SPLITS, raw_from_tokens
from rscc.data.synth.captions import STOCK_SHARE
from rscc.data.synth.pair import make_pair
from rscc.data.synth.png import encode_png
from rscc.errors import DatasetError

MARKER_FILE = "synth.json"
# 2: stock sentences and synonyms in the captions; 3: the stock share weighted by caption position (images unchanged)
GENERATOR_VERSION = 3
LEVIR_SPLIT_SIZES = {"train": 6815, "val": 1333, "test": 1929}  # of 10,077 (METHOD §1.1)

# ----------------------------------------------------------------------------- the dataset
@dataclass(frozen=True)
class PlannedPair:
    index: int  # = imgid
    split: str
    filename: str
    changed: bool


def split_sizes(pairs: int) -> dict[str, int]:
    """Pairs per split in LEVIR-CC's proportions (6815 / 1333 / 1929 of 10,077)."""
    total = sum(LEVIR_SPLIT_SIZES.values())
    val = round(pairs * LEVIR_SPLIT_SIZES["val"] / total)
    test = round(pairs * LEVIR_SPLIT_SIZES["test"] / total)
    if pairs >= 3:
        val, test = max(val, 1), max(test, 1)
    return {"train": pairs - val - test, "val": val, "test": test}


def plan(pairs: int, seed: int = 0) -> list[PlannedPair]:
    """Split, file name and change flag of every pair, in imgid order (train, val, test).

    File numbers start at 1 and have gaps, like LEVIR-CC's; half of each split changes."""
    rng = np.random.default_rng([seed, 0, 0])
    out: list[PlannedPair] = []
    for split in SPLITS:
        n = split_sizes(pairs)[split]
        if n == 0:
            continue
        steps = 1 + (rng.random(n) < 0.1) * rng.integers(1, 4, n)
        steps[0] = 1
        numbers = np.cumsum(steps)
        flags = np.zeros(n, bool)
        flags[: n // 2] = True
        if n % 2:
            flags[n // 2] = rng.random() < 0.5
        flags = rng.permutation(flags)
        for number, flag in zip(numbers.tolist(), flags.tolist()):
            out.append(PlannedPair(len(out), split, f"{split}_{number:06d}.png", bool(flag)))
    return out


def _record(p: PlannedPair, captions: list[list[str]]) -> dict:
    return {
        "filepath": p.split,
        "filename": p.filename,
        "imgid": p.index,
        "split": p.split,
        "changeflag": int(p.changed),
        "sentids": [5 * p.index + k for k in range(5)],
        "sentences": [
            {"tokens": tokens, "raw": raw_from_tokens(tokens), "imgid": p.index, "sentid": 5 * p.index + k}
            for k, tokens in enumerate(captions)
        ],
    }


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.write_bytes(encode_png(rgb))


def _make_one(job: tuple[Path, int, int, PlannedPair, float]) -> list[list[str]]:
    tmp, seed, size, p, stock_share = job
    pair = make_pair(seed, p.index, size, p.changed, stock_share)
    _write_png(tmp / "images" / p.split / "A" / p.filename, pair.image_a)
    _write_png(tmp / "images" / p.split / "B" / p.filename, pair.image_b)
    return pair.captions


def _parameters(pairs: int, size: int, seed: int, stock_share: float = STOCK_SHARE) -> dict:
    return {"generator": "rscc.data.synth", "version": GENERATOR_VERSION, "pairs": pairs, "size": size, "seed": seed,
            "stock_share": stock_share}


def make_synthetic(out: str | Path, pairs: int, size: int = 256, seed: int = 0, progress: bool = True,
                   workers: int = 1, stock_share: float = STOCK_SHARE) -> Path:
    """Write a synthetic LEVIR-CC dataset of ``pairs`` pairs at ``out`` and return its path.

    ``stock_share`` sets how often changed pairs' captions recur: the default STOCK_SHARE gives
    LEVIR-CC train's recurrence, STOCK_SHARE_HIGH has most changed pairs share a handful of stock
    sentences, 0 leaves only the grammar's chance repeats. Images do not depend on it.

    Written into a temporary sibling directory and renamed into place at the end, so an
    interrupted run never leaves something that looks like a dataset. An existing ``out`` is
    replaced only when it is empty or a synthetic dataset (it holds ``synth.json``) of other
    parameters, or of these when it was there at the start: one with these parameters that another
    process wrote meanwhile is kept as it is, so a training already reading it never sees a file vanish."""
    from tqdm import tqdm

    if pairs < 1:
        raise DatasetError(f"synthetic dataset: --pairs must be at least 1 (got {pairs})")
    if size < 32:
        raise DatasetError(f"synthetic dataset: --size must be at least 32 pixels (got {size})")
    if not 0.0 <= stock_share <= 1.0:
        raise DatasetError(f"synthetic dataset: --stock-share must lie in [0, 1] (got {stock_share})")
    out = Path(out).absolute()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER_FILE).is_file())):
        raise DatasetError(f"{out}: exists and is not a synthetic dataset (no {MARKER_FILE}); refusing to overwrite it")
    was_there = is_synthetic(out, pairs, size, seed, stock_share)  # asked to write it again: replace it
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for split in SPLITS:
            for side in "AB":
                (tmp / "images" / split / side).mkdir(parents=True)
        planned = plan(pairs, seed)
        jobs = [(tmp, seed, size, p, stock_share) for p in planned]
        bar = tqdm(total=len(jobs), desc=f"synth {out.name}", unit="pair", disable=not progress)
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
                captions = []
                for c in pool.imap(_make_one, jobs, chunksize=16):
                    captions.append(c)
                    bar.update()
        else:
            captions = []
            for job in jobs:
                captions.append(_make_one(job))
                bar.update()
        bar.close()
        records = [_record(p, c) for p, c in zip(planned, captions)]
        (tmp / CAPTIONS_FILE).write_text(json.dumps({"images": records}))
        (tmp / MARKER_FILE).write_text(json.dumps(_parameters(pairs, size, seed, stock_share), indent=2) + "\n")
        if not was_there and is_synthetic(out, pairs, size, seed, stock_share):
            pass  # another process finished the same set meanwhile: keep it (the same bytes), never swap it
        elif out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def is_synthetic(root: str | Path, pairs: int, size: int = 256, seed: int = 0,
                 stock_share: float = STOCK_SHARE) -> bool:
    """True when ``root`` holds a complete synthetic dataset made with these parameters."""
    root = Path(root)
    try:
        marker = json.loads((root / MARKER_FILE).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return False
    return marker == _parameters(pairs, size, seed, stock_share) and (root / CAPTIONS_FILE).is_file()


def default_root(pairs: int, size: int = 256, seed: int = 0, stock_share: float = STOCK_SHARE) -> Path:
    """Where the trainer, the evaluator and the notebooks keep the synthetic set of these
    parameters when no dataset is given: ``<cache>/synthetic-<pairs>-<size>-<seed>``, with
    ``-stock<share>`` appended when ``stock_share`` is not the default."""
    from rscc.paths import cache_dir

    suffix = "" if stock_share == STOCK_SHARE else f"-stock{stock_share:g}"
    return cache_dir() / f"synthetic-{pairs}-{size}-{seed}{suffix}"


def ensure_synthetic(out: str | Path, pairs: int, size: int = 256, seed: int = 0, progress: bool = True,
                     workers: int = 1, stock_share: float = STOCK_SHARE) -> Path:
    """The synthetic dataset at ``out``, generated only if it is missing or was made with
    other parameters."""
    if is_synthetic(out, pairs, size, seed, stock_share):
        return Path(out).absolute()
    return make_synthetic(out, pairs, size, seed, progress=progress, workers=workers, stock_share=stock_share)
