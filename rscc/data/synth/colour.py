"""Colouring a label map: palette, texture and noise tiles, shadows, season and illumination."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from rscc.data.synth.scene import (
    ASPHALT,
    CAR,
    CEMENT,
    DIRT,
    DRIVEWAY,
    GROUND,
    GROUND_BASE,
    GROUND_LEVELS,
    KERB,
    LAWN,
    MARKING,
    N_LABELS,
    PARKING,
    POOL,
    ROOF,
    SOIL,
    TREE,
    TREE_DARK,
    TREE_LIGHT,
    VEGETATION,
    WATER,
    Scene,
)

_BASE_COLOURS = {
    SOIL: (176, 160, 136),
    LAWN: (102, 116, 74),
    ASPHALT: (112, 112, 110),
    CEMENT: (178, 176, 168),
    KERB: (196, 194, 186),
    DIRT: (200, 186, 158),
    DRIVEWAY: (206, 203, 194),
    PARKING: (98, 98, 98),
    MARKING: (226, 226, 220),
    WATER: (52, 74, 76),
    POOL: (80, 168, 196),
    TREE_DARK: (32, 44, 28),
    TREE: (52, 68, 40),
    TREE_LIGHT: (76, 94, 56),
    CAR: (190, 190, 192),
    CAR + 1: (40, 40, 44),
    CAR + 2: (150, 40, 36),
    CAR + 3: (70, 90, 130),
}
_ROOF_COLOURS = [  # mid shade
    (88, 88, 92), (116, 116, 118), (150, 150, 148), (122, 102, 88), (142, 96, 76),
    (164, 110, 84), (96, 106, 118), (178, 168, 152), (206, 204, 198), (92, 78, 68),
]
_TEXTURE = {  # relative amplitude of the texture field per label
    GROUND: 0.10, SOIL: 0.07, LAWN: 0.06, ASPHALT: 0.03, CEMENT: 0.03, KERB: 0.02, DIRT: 0.05,
    DRIVEWAY: 0.02, PARKING: 0.03, WATER: 0.02, POOL: 0.02, TREE_DARK: 0.14, TREE: 0.14,
    TREE_LIGHT: 0.12,
}


def _palette() -> tuple[np.ndarray, np.ndarray]:
    colours = np.zeros((N_LABELS, 3), np.float32)
    for label, rgb in _BASE_COLOURS.items():
        colours[label] = rgb
    for c, rgb in enumerate(_ROOF_COLOURS):
        for shade, factor in enumerate((1.22, 1.0, 0.74)):
            colours[ROOF + 3 * c + shade] = np.minimum(np.array(rgb) * factor, 250)
    amplitude = np.full(N_LABELS, 0.025, np.float32)
    for label, a in _TEXTURE.items():
        amplitude[label] = a
    amplitude[GROUND_BASE:] = _TEXTURE[GROUND]
    return colours, amplitude


PALETTE, TEXTURE_AMPLITUDE = _palette()


# ----------------------------------------------------------------------------- colouring
_NOISE_CACHE: dict[str, np.ndarray] = {}


def _upsampled(rng, cells: int, size: int = 1024) -> np.ndarray:
    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    tile = np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC))
    return (tile / tile.std()).astype(np.float32)


def _noise(name: str) -> np.ndarray:
    """Fixed 1024^2 noise tiles (the same in every process, unit variance); pairs crop them at
    random offsets, which is much cheaper than drawing fresh noise for every image."""
    if not _NOISE_CACHE:
        rng = np.random.default_rng(20240613)
        _NOISE_CACHE.update(
            rgb=rng.standard_normal((1024, 1024, 3), dtype=np.float32) * np.float32(2.5),  # sensor noise
            grain=_upsampled(rng, 384),  # ~3 px: bushes
            # where grass and bareland lie: ~73 px blobs with ~23 px ragged edges
            land=_upsampled(rng, 14) + np.float32(0.45) * _upsampled(rng, 44),
            # brightness texture of every surface: ~3 px grain, pixel noise, ~14 px mottles
            texture=np.float32(0.5) * _upsampled(rng, 384)
            + np.float32(0.2) * rng.standard_normal((1024, 1024), dtype=np.float32)
            + _upsampled(rng, 72),
        )
    return _NOISE_CACHE[name]


def _crop_noise(rng, name: str, shape: tuple[int, int]) -> np.ndarray:
    tile = _noise(name)
    y, x = rng.integers(0, 1024 - shape[0]), rng.integers(0, 1024 - shape[1])
    crop = tile[y : y + shape[0], x : x + shape[1]]
    return crop


@dataclass
class _Look:
    """What both dates of a pair share: the open land does not move between acquisitions."""

    ground_labels: np.ndarray  # (canvas, canvas) uint8: GROUND_BASE + bare/grass level (+64 scrub)
    texture: np.ndarray  # (canvas, canvas) float32, zero mean
    bare: np.ndarray  # (3,) colour of bare land
    grass: np.ndarray  # (3,) colour of grass


_SHADOW_GAIN = np.ones(256, np.float32)
_SHADOW_GAIN[1:] = 0.58


def _ground_look(rng, scene: Scene, canvas: int) -> _Look:
    bare = np.array(
        [(196, 184, 160), (190, 176, 150), (200, 194, 178), (186, 170, 146), (178, 172, 154)][rng.integers(0, 5)],
        np.float32,
    ) + rng.normal(0, 5, 3).astype(np.float32)
    grass = np.array(
        [(122, 124, 92), (138, 136, 102), (114, 118, 86), (148, 144, 112)][rng.integers(0, 4)], np.float32
    ) + rng.normal(0, 5, 3).astype(np.float32)
    shape = (canvas, canvas)
    bias = -0.7 if scene.ground == "bare" else 0.7
    # level = clip(((land + bias) * 1.6 + 0.5) * 63, 0, 63): 0 bare .. 63 grass
    field_ = _crop_noise(rng, "land", shape) * np.float32(1.6 * (GROUND_LEVELS - 1))
    field_ += np.float32(((bias * 1.6) + 0.5) * (GROUND_LEVELS - 1) + 0.5)
    np.clip(field_, 0, GROUND_LEVELS - 1, out=field_)
    levels = field_.astype(np.uint8)
    grain = _crop_noise(rng, "grain", shape)
    levels[(grain > 1.2) & (levels > 22)] += GROUND_LEVELS  # dark bushes in grassy areas
    levels += np.uint8(GROUND_BASE)
    return _Look(levels, np.ascontiguousarray(_crop_noise(rng, "texture", shape)), bare, grass)


def _date_palette(rng, look: _Look, season: float) -> np.ndarray:
    """Colours of every label on one date: season (green <-> dry vegetation) and illumination."""
    palette = PALETTE.copy()
    dry, lush = max(season, 0.0), max(-season, 0.0)
    veg = np.array([1.0 + 0.07 * dry - 0.08 * lush, 1.0 + 0.02 * dry + 0.02 * lush, 1.0 - 0.02 * dry - 0.06 * lush],
                   np.float32)
    palette[list(VEGETATION)] *= veg
    ramp = np.linspace(0.0, 1.0, GROUND_LEVELS, dtype=np.float32)[:, None]
    ground = look.bare + (look.grass * veg - look.bare) * ramp
    palette[GROUND_BASE : GROUND_BASE + GROUND_LEVELS] = ground
    palette[GROUND_BASE + GROUND_LEVELS :] = ground * np.float32(0.72)
    # illumination: per-channel gain, offset and a little haze
    light = (rng.uniform(0.9, 1.08) * rng.uniform(0.97, 1.03, 3)).astype(np.float32)
    haze = np.float32(rng.uniform(0.0, 0.1))
    return palette * (light * (1 - haze)) + np.float32(haze * 170.0 + rng.uniform(-5, 5))


def _colourise(rng, labels: np.ndarray, shadows: np.ndarray, look: _Look, offset: tuple[int, int],
               size: int, season: float) -> np.ndarray:
    """Colour a crop of a label map under one date's illumination: uint8 (size, size, 3)."""
    y, x = offset
    window = (slice(y, y + size), slice(x, x + size))
    lab = labels[window]
    lab = np.where(lab == GROUND, look.ground_labels[window], lab)
    img = np.take(_date_palette(rng, look, season), lab, axis=0)  # (size, size, 3) float32
    gain = TEXTURE_AMPLITUDE[lab] * look.texture[window]
    gain += np.float32(1.0)
    gain *= _SHADOW_GAIN[shadows[window]]
    gain *= np.float32(0.25)  # the blur below sums four pixels
    img *= gain[..., None]
    # a gentle optical blur (2 x 2 box) softens the drawn edges; written without overlapping
    # in-place views, which numpy would copy
    rows = np.empty_like(img)
    np.add(img[1:], img[:-1], out=rows[1:])
    np.multiply(img[0], 2, out=rows[0])
    np.add(rows[:, 1:], rows[:, :-1], out=img[:, 1:])
    np.multiply(rows[:, 0], 2, out=img[:, 0])
    img += _crop_noise(rng, "rgb", (size, size))  # sensor noise, sigma 2.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8)
