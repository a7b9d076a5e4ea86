"""One pair: the scenes before and after, rendered, coloured under two illuminations, captioned."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rscc.data.levircc import NO_CHANGE_SENTENCES
from rscc.data.synth.before import STILL_LOOKS, before_scene
from rscc.data.synth.captions import STOCK_SHARE, _measure_location, captions_for
from rscc.data.synth.changes import CHANGE_KINDS, apply_change
from rscc.data.synth.colour import _colourise, _ground_look
from rscc.data.synth.layout import _REGION_KEYS, _parking_lot
from rscc.data.synth.render import _render
from rscc.data.synth.scene import FRAME, Change

MIN_CHANGED_FRACTION = 0.006  # a change covers at least this share of the image (a small house)
JITTER = 2  # registration jitter between A and B, pixels (either axis, either sign)



@dataclass
class SynthPair:
    image_a: np.ndarray  # (size, size, 3) uint8
    image_b: np.ndarray
    captions: list[list[str]]  # five token lists
    change: Change | None  # None for an unchanged pair
    changed_mask: np.ndarray  # (size, size) bool: labels differ between the dates


def make_pair(seed: int, index: int, size: int = 256, changed: bool = True,
              stock_share: float = STOCK_SHARE) -> SynthPair:
    """Pair ``index`` of the dataset made with ``seed`` (independent of every other pair);
    ``stock_share`` sets how often captions recur (:func:`captions_for`)."""
    rng = np.random.default_rng([seed, 1, index])
    pad = JITTER + 1
    sun = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1)]) + 1e-3
    if not changed:
        kind = str(rng.choice(list(STILL_LOOKS), p=list(STILL_LOOKS.values())))
        region = _REGION_KEYS[int(rng.integers(len(_REGION_KEYS)))]
        before = before_scene(rng, kind, region)
        if kind == "parking" and before.roads:
            _parking_lot(rng, before, 0, FRAME)
        after, change = before, None
        labels_a, shadows_a = _render(before, size, pad, sun)
        labels_b, shadows_b = labels_a, shadows_a
    else:
        for _ in range(40):
            kind = str(rng.choice(list(CHANGE_KINDS), p=[k.weight for k in CHANGE_KINDS.values()]))
            region = _REGION_KEYS[int(rng.integers(len(_REGION_KEYS)))]
            before = before_scene(rng, kind, region)
            made = apply_change(rng, kind, region, before)
            if made is None:
                continue
            after, change = made
            labels_a, shadows_a = _render(before, size, pad, sun)
            labels_b, shadows_b = _render(after, size, pad, sun)
            inner = (slice(pad, pad + size), slice(pad, pad + size))
            if np.count_nonzero(labels_a[inner] != labels_b[inner]) >= MIN_CHANGED_FRACTION * size * size:
                break  # a change a model can see
        else:  # pragma: no cover - 40 failures in a row do not happen in practice
            raise RuntimeError(f"synthetic pair {index}: no visible change could be placed")
    canvas = size + 2 * pad
    look = _ground_look(rng, before, canvas)
    season = float(rng.uniform(-1, 1))
    offset_b = (pad + int(rng.integers(-JITTER, JITTER + 1)), pad + int(rng.integers(-JITTER, JITTER + 1)))
    if offset_b == (pad, pad):
        offset_b = (pad + 1, pad)  # always some misregistration, as between two acquisitions
    img_a = _colourise(rng, labels_a, shadows_a, look, (pad, pad), size, season)
    img_b = _colourise(rng, labels_b, shadows_b, look, offset_b, size, season + float(rng.uniform(-0.8, 0.8)))
    mask = labels_a[pad : pad + size, pad : pad + size] != labels_b[pad : pad + size, pad : pad + size]
    if change is None:
        captions = [s.split() for s in NO_CHANGE_SENTENCES]
    else:
        change.location = _measure_location(mask)
        captions = captions_for(change, rng, stock_share)
    return SynthPair(img_a, img_b, captions, change, mask)
