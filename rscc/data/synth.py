"""Synthetic LEVIR-CC: bi-temporal aerial-looking scenes whose captions tell the truth.

A stand-in for the real dataset where it is absent (a user's clone, CI, quick experiments). It
writes the exact LEVIR-CC layout (METHOD §1.1)::

    ROOT/LevirCCcaptions.json
    ROOT/images/{train,val,test}/{A,B}/<split>_NNNNNN.png
    ROOT/synth.json            # generator parameters (marks a complete synthetic dataset)

How a pair is made
    1. A *scene* is a list of objects in a 256 x 256 world: roads (polylines with kerbs),
       houses (rotated rectangles with hip, gable or flat roofs, lawns, driveways, pools),
       tree crowns, parking lots, ponds, dirt tracks; the ground is a bareland/grass mix.
    2. The "after" scene is a copy of the "before" scene with one change applied (houses built
       or demolished, a road built or extended, trees cut or planted, a parking lot, a whole
       residential area). The change records what it did: how many houses, which road shape.
    3. Both scenes are drawn into label maps (PIL ImageDraw), coloured with numpy (palette,
       texture, shadows) under two different illuminations, with 1-2 px registration jitter
       and sensor noise, so that unchanged pairs are never pixel-identical.
    4. The location of the change (top, bottom left corner, centre ...) is *measured* on the
       difference of the two label maps, and the five captions are drawn from a grammar that
       uses LEVIR-CC's vocabulary, so a caption states only what the pixels show.
    5. A share of the captions of changed pairs (``stock_share``) are instead stock sentences,
       a few per change kind with a Zipf-like head, true of the change but without its location
       ("some roads and houses are built on bareland"): how often captions recur across pairs,
       and so how many false negatives a batch holds. The default, STOCK_SHARE, matches LEVIR-CC
       train's recurrence (:mod:`rscc.data.stats`); STOCK_SHARE_HIGH has most changed pairs
       share a handful of stock sentences. Captions are the last use of a pair's random numbers,
       so ``stock_share`` never changes an image.

Every pair uses its own ``numpy.random.Generator`` seeded with ``(seed, 1, index)``: the output
is the same bytes for the same seed, whatever the order or the number of workers.
"""
from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import struct
import uuid
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rscc.data.levircc import CAPTIONS_FILE, NO_CHANGE_SENTENCES, SPLITS, raw_from_tokens
from rscc.errors import DatasetError

MARKER_FILE = "synth.json"
GENERATOR_VERSION = 2  # 2: stock sentences and synonyms in the captions (images unchanged)
LEVIR_SPLIT_SIZES = {"train": 6815, "val": 1333, "test": 1929}  # of 10,077 (METHOD §1.1)
WORLD = 256.0  # scenes are laid out in a 256 x 256 world and scaled to the image size
MIN_CHANGED_FRACTION = 0.006  # a change covers at least this share of the image (a small house)
JITTER = 2  # registration jitter between A and B, pixels (either axis, either sign)

# ----------------------------------------------------------------------------- labels, colours
GROUND, SOIL, LAWN, ASPHALT, CEMENT, KERB, DIRT, DRIVEWAY, PARKING, MARKING, WATER, POOL = range(12)
TREE_DARK, TREE, TREE_LIGHT = 12, 13, 14
CAR = 15  # 15..18
ROOF = 20  # ROOF + 3 * colour + shade (0 lit, 1 mid, 2 dark)
N_ROOF_COLOURS = 10
N_OBJECT_LABELS = ROOF + 3 * N_ROOF_COLOURS  # 50
GROUND_LEVELS = 64  # open land: GROUND_BASE + level (bare 0 .. grass 63), + 64 with scrub
GROUND_BASE = 128
N_LABELS = 256
VEGETATION = (LAWN, TREE_DARK, TREE, TREE_LIGHT)
TALL = np.zeros(N_LABELS, bool)
TALL[[TREE_DARK, TREE, TREE_LIGHT]] = True
TALL[ROOF:N_OBJECT_LABELS] = True

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

# ----------------------------------------------------------------------------- scene objects
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in world units
REGIONS: dict[str | None, Box] = {
    "top": (0, 0, 256, 108),
    "bottom": (0, 148, 256, 256),
    "left": (0, 0, 108, 256),
    "right": (148, 0, 256, 256),
    "top left": (0, 0, 118, 118),
    "top right": (138, 0, 256, 118),
    "bottom left": (0, 138, 118, 256),
    "bottom right": (138, 138, 256, 256),
    "center": (70, 70, 186, 186),
    None: (0, 0, 256, 256),
}


@dataclass
class Road:
    points: np.ndarray  # (k, 2) centreline, world units; may run past the frame
    width: float
    material: int = ASPHALT  # ASPHALT, CEMENT or DIRT
    kerb: bool = True
    cul_de_sac: bool = False  # a turning circle at the last point
    shape: str = "straight"  # what the captions call it: straight, curved, t-shaped, cross


@dataclass
class House:
    centre: tuple[float, float]
    length: float  # along the road
    depth: float
    angle: float  # radians, direction of the length
    roof_colour: int
    roof: str = "hip"  # hip, gable, flat
    kind: str = "house"  # house, villa, building
    lot: np.ndarray | None = None  # (4, 2) polygon drawn as lot_label under the house
    lot_label: int = LAWN
    driveway: np.ndarray | None = None
    pool: np.ndarray | None = None
    side: tuple[int, int] = (0, 0)  # (road index, +1 or -1): which road it faces, on which side

    @property
    def corners(self) -> np.ndarray:
        return _rect(self.centre, self.length, self.depth, self.angle)

    @property
    def radius(self) -> float:
        return 0.5 * math.hypot(self.length, self.depth)


@dataclass
class Scene:
    ground: str  # "bare" or "grass": what the open land mostly is
    patches: list = field(default_factory=list)  # (label, polygon (k, 2)) drawn first
    ellipses: list = field(default_factory=list)  # (label, (x0, y0, x1, y1)) drawn with patches
    roads: list = field(default_factory=list)
    houses: list = field(default_factory=list)
    parking: list = field(default_factory=list)  # (lot polygon, stripe segments, cars)
    crowns: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # x, y, r

    def copy(self) -> "Scene":
        return replace(
            self,
            patches=list(self.patches),
            ellipses=list(self.ellipses),
            roads=list(self.roads),
            houses=list(self.houses),
            parking=list(self.parking),
            crowns=self.crowns.copy(),
        )


@dataclass
class Change:
    """What the "after" scene adds or removes: the captions are written from this."""

    kind: str  # houses, residential, road, extend, trees_removed, houses_removed, trees_grow, parking
    count: int = 0  # houses built/removed, crowns cut/planted
    noun: str = "houses"  # houses, villas, buildings
    road_shape: str | None = None  # straight, curved, t-shaped, cross
    ground: str = "bare"  # bare, grass, woods: where it happened
    trees_removed: int = 0
    both_sides: bool = False
    location: str | None = None  # measured on the label maps


# ----------------------------------------------------------------------------- geometry
def _rect(centre, length, depth, angle) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    ux, uy = c * length / 2, s * length / 2
    vx, vy = -s * depth / 2, c * depth / 2
    x, y = float(centre[0]), float(centre[1])
    return np.array([
        (x - ux - vx, y - uy - vy), (x + ux - vx, y + uy - vy), (x + ux + vx, y + uy + vy), (x - ux + vx, y - uy + vy),
    ])


def _bezier(p0, p1, p2, n: int = 14) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.asarray(p0, float) + 2 * (1 - t) * t * np.asarray(p1, float) + t**2 * np.asarray(p2, float)


def _seg_distance(q: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance from each point of ``q`` (n, 2) to the polyline ``points`` (k, 2)."""
    ax, ay = points[:-1, 0], points[:-1, 1]  # (m,)
    dx, dy = points[1:, 0] - ax, points[1:, 1] - ay
    qx, qy = q[:, :1] - ax, q[:, 1:2] - ay  # (n, m)
    t = (qx * dx + qy * dy) / np.maximum(dx * dx + dy * dy, 1e-9)
    t = np.minimum(np.maximum(t, 0.0), 1.0)
    ex, ey = qx - t * dx, qy - t * dy
    return np.sqrt((ex * ex + ey * ey).min(1))


def _arc(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(points, axis=0).T))])


def _at(points: np.ndarray, arc: np.ndarray, s: float) -> tuple[np.ndarray, np.ndarray]:
    """Point and unit tangent at arc length ``s``."""
    i = int(np.clip(np.searchsorted(arc, s) - 1, 0, len(points) - 2))
    seg = points[i + 1] - points[i]
    length = max(arc[i + 1] - arc[i], 1e-9)
    return points[i] + seg * ((s - arc[i]) / length), seg / length


def _in_box(p, box: Box, margin: float = 0.0) -> bool:
    return box[0] + margin <= p[0] <= box[2] - margin and box[1] + margin <= p[1] <= box[3] - margin


# ----------------------------------------------------------------------------- scene building blocks
def _road_through(rng, region: str | None, shape: str, width: float | None = None, material: int | None = None) -> list[Road]:
    """A new road (or two) of ``shape`` lying in ``region``; the points run past the frame."""
    w = width or float(rng.uniform(11, 16))
    mat = material if material is not None else (ASPHALT if rng.random() < 0.6 else CEMENT)
    x0, y0, x1, y1 = REGIONS[region]
    if region is None:
        x0, y0, x1, y1 = 50, 50, 206, 206
    cx, cy = rng.uniform(x0 + 20, x1 - 20), rng.uniform(y0 + 20, y1 - 20)
    if region in ("top", "bottom"):
        horizontal = True
    elif region in ("left", "right"):
        horizontal = False
    else:
        horizontal = rng.random() < 0.5
    tilt = rng.uniform(-0.12, 0.12)

    def straight(cx, cy, horizontal, tilt, reach=(-30.0, 286.0)):
        if horizontal:
            xs = np.array(reach)
            return np.stack([xs, cy + (xs - cx) * tilt], 1)
        ys = np.array(reach)
        return np.stack([cx + (ys - cy) * tilt, ys], 1)

    if region in ("top left", "top right", "bottom left", "bottom right"):
        # a curved road cutting the corner from one edge to the other
        fx = 0.0 if "left" in region else 256.0
        fy = 0.0 if "top" in region else 256.0
        a, b = rng.uniform(55, 95), rng.uniform(55, 95)
        sx = 1 if fx == 0 else -1
        sy = 1 if fy == 0 else -1
        p0 = (fx - 12 * sx, fy + sy * a)
        p2 = (fx + sx * b, fy - 12 * sy)
        p1 = (fx + sx * b * rng.uniform(0.6, 1.0), fy + sy * a * rng.uniform(0.6, 1.0))
        return [Road(_bezier(p0, p1, p2), w, mat, shape="curved")]
    if shape == "curved":
        lo, hi = (y0, y1) if horizontal else (x0, x1)
        lo, hi = (lo + 14, hi - 14) if region in ("top", "bottom", "left", "right") else (20, 236)
        across = [float(np.clip(cy if horizontal else cx, lo, hi) + rng.uniform(-30, 30)) for _ in range(3)]
        across = np.clip(across, lo, hi)
        along = np.array([-30.0, rng.uniform(90, 166), 286.0])
        pts = np.stack([along, across], 1) if horizontal else np.stack([across, along], 1)
        return [Road(_bezier(pts[0], pts[1], pts[2], 18), w, mat, shape="curved")]
    if shape == "t-shaped":
        main = straight(cx, cy, horizontal, tilt)
        # the branch leaves the main road towards the far side of the region
        if region in ("top", "left"):
            direction = 1.0
        elif region in ("bottom", "right"):
            direction = -1.0
        else:
            direction = rng.choice([-1.0, 1.0])
        s = rng.uniform(70, 186)
        if horizontal:
            start = np.array([s, cy + (s - cx) * tilt])
            end = start + np.array([0.0, direction * 300.0])
            if region in ("top", "bottom"):  # stop the branch inside the band
                end = np.array([s, y0 + 6 if direction < 0 else y1 - 6])
        else:
            start = np.array([cx + (s - cy) * tilt, s])
            end = start + np.array([direction * 300.0, 0.0])
            if region in ("left", "right"):
                end = np.array([x0 + 6 if direction < 0 else x1 - 6, s])
        branch_ends_inside = _in_box(end, (0, 0, 256, 256))
        return [Road(main, w, mat, shape="t-shaped"),
                Road(np.stack([start, end]), w * 0.85, mat, cul_de_sac=branch_ends_inside, shape="t-shaped")]
    if shape == "cross":
        return [Road(straight(cx, cy, True, tilt), w, mat, shape="cross"), Road(straight(cx, cy, False, -tilt), w, mat, shape="cross")]
    return [Road(straight(cx, cy, horizontal, tilt), w, mat)]


def _house_size(rng, kind: str) -> tuple[float, float]:
    if kind == "villa":
        return float(rng.uniform(34, 44)), float(rng.uniform(26, 32))
    if kind == "building":
        return float(rng.uniform(42, 62)), float(rng.uniform(28, 40))
    return float(rng.uniform(27, 36)), float(rng.uniform(21, 27))


def _fits(scene: Scene, corners: np.ndarray, centre, radius: float) -> bool:
    """A new footprint stays in the frame and clear of houses, parking lots and roads."""
    if corners.min() < 3 or corners.max() > 253:
        return False
    cx, cy = float(centre[0]), float(centre[1])
    for h in scene.houses:
        hx, hy = h.centre
        if abs(hx - cx) < 80 and abs(hy - cy) < 80 and math.hypot(hx - cx, hy - cy) < 0.82 * (h.radius + radius) + 3:
            return False
    probe = np.vstack([corners, [centre]])
    lo, hi = probe.min(0), probe.max(0)
    for lot, _, _ in scene.parking:
        if (lot.max(0) + 4 >= lo).all() and (lot.min(0) - 4 <= hi).all():
            return False
    for road in scene.roads:
        reach = road.width / 2 + 3
        if ((road.points.min(0) - reach) > hi).any() or ((road.points.max(0) + reach) < lo).any():
            continue  # the road's bounding box is too far away
        if _seg_distance(probe, road.points).min() < reach:
            return False
    return True


def _houses_along(rng, scene: Scene, road_index: int, box: Box, kind: str, limit: int,
                  sides=(1, -1), lot_label: int = LAWN, inside=True) -> list[House]:
    """Place up to ``limit`` houses facing road ``road_index``, their centres in ``box``
    (``inside`` False: outside it). Returns the new houses (also appended to the scene)."""
    road = scene.roads[road_index]
    pts = road.points.tolist()
    arc = _arc(road.points).tolist()
    edge = road.width / 2 + (2.5 if road.kerb else 0.5)
    # only the stretch of road near the frame can carry houses
    near = [s for s, (x, y) in zip(arc, pts) if -40 <= x <= 296 and -40 <= y <= 296]
    if not near:
        return []
    placed: list[House] = []
    roof_colours = rng.choice(N_ROOF_COLOURS, size=2, replace=False)  # a development has few roof colours
    for side in sides:
        s = max(arc[0], min(near) - 40) + float(rng.uniform(0, 12))
        s_end = min(arc[-1], max(near) + 40)
        setback = float(rng.uniform(5, 11))
        while s < s_end and len(placed) < limit:
            length, depth = _house_size(rng, kind)
            # point and tangent at the middle of the plot (pure python: this loop is hot)
            sm = s + length / 2
            i = min(max(bisect.bisect_left(arc, sm) - 1, 0), len(pts) - 2)
            seg = max(arc[i + 1] - arc[i], 1e-9)
            tx, ty = (pts[i + 1][0] - pts[i][0]) / seg, (pts[i + 1][1] - pts[i][1]) / seg
            px, py = pts[i][0] + tx * (sm - arc[i]), pts[i][1] + ty * (sm - arc[i])
            nx, ny = -ty * side, tx * side
            reach = edge + setback + depth / 2
            cx, cy = px + nx * reach, py + ny * reach
            if not (3 <= cx <= 253 and 3 <= cy <= 253) or _in_box((cx, cy), box) != inside:
                s += 8.0
                continue
            centre = np.array([cx, cy])
            angle = math.atan2(ty, tx)
            corners = _rect(centre, length, depth, angle)
            if not _fits(scene, corners, centre, 0.5 * math.hypot(length, depth)):
                s += float(rng.uniform(5, 10))
                continue
            t, n, p = np.array([tx, ty]), np.array([nx, ny]), np.array([px, py])
            roof = "flat" if kind == "building" else ("hip" if rng.random() < 0.65 else "gable")
            lot = _rect(p + n * (edge + (setback + depth + 9) / 2), length + 7, setback + depth + 9, angle)
            offset = t * (length * (0.3 if rng.random() < 0.5 else -0.3))
            driveway = _rect(p + n * (edge + setback / 2) + offset, 6.0 if kind != "building" else 10.0, setback + 1, angle)
            pool = None
            if kind == "villa" and rng.random() < 0.5:
                pool = _rect(centre + n * (depth / 2 + 6) + t * rng.uniform(-6, 6), 10, 6, angle)
            house = House(
                centre=(cx, cy), length=length, depth=depth, angle=angle,
                roof_colour=int(roof_colours[int(rng.integers(2))]), roof=roof, kind=kind, lot=lot,
                lot_label=lot_label, driveway=driveway, pool=pool, side=(road_index, side),
            )
            scene.houses.append(house)
            placed.append(house)
            s += length + float(rng.uniform(5, 10))
    return placed


def _add_crowns(rng, scene: Scene, box: Box, n: int, cluster: float = 0.7, rmin=3.5, rmax=8.5) -> int:
    """Scatter ``n`` tree crowns in ``box`` (in clusters), avoiding roads, houses and lots."""
    x0, y0, x1, y1 = box
    k = max(1, int(n * (1 - cluster) / 3) + 1)
    seeds = np.stack([rng.uniform(x0, x1, k), rng.uniform(y0, y1, k)], 1)
    which = rng.integers(0, k, n)
    spread = rng.uniform(6, 22, k)[which]
    xy = seeds[which] + rng.normal(0, 1, (n, 2)) * spread[:, None]
    r = rng.uniform(rmin, rmax, n)
    keep = (xy[:, 0] > x0 - 4) & (xy[:, 0] < x1 + 4) & (xy[:, 1] > y0 - 4) & (xy[:, 1] < y1 + 4)
    for road in scene.roads:
        keep &= _seg_distance(xy, road.points) > road.width / 2 + r + 1
    for h in scene.houses:
        keep &= np.hypot(xy[:, 0] - h.centre[0], xy[:, 1] - h.centre[1]) > h.radius + r + 5
    for lot, _, _ in scene.parking:
        lo, hi = lot.min(0) - 3, lot.max(0) + 3
        keep &= ~((xy >= lo).all(1) & (xy <= hi).all(1))
    new = np.concatenate([xy[keep], r[keep, None]], 1).astype(np.float32)
    scene.crowns = np.concatenate([scene.crowns, new])
    return int(keep.sum())


def _clear_crowns(scene: Scene, keep_mask: np.ndarray) -> int:
    removed = int((~keep_mask).sum())
    scene.crowns = scene.crowns[keep_mask]
    return removed


def _clear_crowns_for(scene: Scene, houses=(), roads=(), parking=()) -> int:
    """Remove the crowns under new houses, roads or parking lots; returns how many went."""
    if not len(scene.crowns):
        return 0
    xy, r = scene.crowns[:, :2].astype(float), scene.crowns[:, 2]
    keep = np.ones(len(xy), bool)
    for road in roads:
        keep &= _seg_distance(xy, road.points) > road.width / 2 + r * 0.6
    for h in houses:
        keep &= np.hypot(xy[:, 0] - h.centre[0], xy[:, 1] - h.centre[1]) > h.radius + 6
    for lot, _, _ in parking:
        lo, hi = lot.min(0) - 2, lot.max(0) + 2
        keep &= ~((xy >= lo).all(1) & (xy <= hi).all(1))
    return _clear_crowns(scene, keep)


def _woods(rng, scene: Scene, box: Box, density: float = 1.0) -> int:
    x0, y0, x1, y1 = box
    n = int(density * (x1 - x0) * (y1 - y0) / 190)
    return _add_crowns(rng, scene, box, n, cluster=0.9, rmin=4.5, rmax=9.5)


def _parking_lot(rng, scene: Scene, road_index: int, box: Box) -> tuple | None:
    """A large flat-roofed building with a striped parking lot in front, beside a road."""
    road = scene.roads[road_index]
    arc = _arc(road.points)
    side = rng.choice([1, -1])
    for _ in range(30):
        s = rng.uniform(0, arc[-1])
        p, t = _at(road.points, arc, s)
        n = np.array([-t[1], t[0]]) * side
        angle = float(np.arctan2(t[1], t[0]))
        lot_len, lot_depth = rng.uniform(60, 90), rng.uniform(30, 40)
        b_len, b_depth = lot_len * rng.uniform(0.7, 0.95), rng.uniform(26, 36)
        edge = road.width / 2 + 3
        lot_centre = p + n * (edge + 3 + lot_depth / 2)
        b_centre = p + n * (edge + 3 + lot_depth + 3 + b_depth / 2)
        lot = _rect(lot_centre, lot_len, lot_depth, angle)
        building_corners = _rect(b_centre, b_len, b_depth, angle)
        probe = np.vstack([lot, building_corners])
        if not (_in_box(b_centre, box) and _in_box(lot_centre, box)):
            continue
        if not all(_in_box(q, (0, 0, 256, 256), 3) for q in probe):
            continue
        radius = 0.5 * np.hypot(lot_len, lot_depth + b_depth + 3)
        centre = (lot_centre + b_centre) / 2
        if not _fits(scene, probe, centre, radius):
            continue
        # stripes: stalls across the lot, two rows
        stripes, cars = [], []
        stall = 6.0
        for row in (-1, 1):
            row_mid = lot_centre + n * row * lot_depth / 4
            k = int((lot_len - 6) // stall)
            for j in range(k + 1):
                q = row_mid + t * (-lot_len / 2 + 3 + j * stall)
                stripes.append(np.array([q - n * lot_depth / 5, q + n * lot_depth / 5]))
                if j < k and rng.random() < 0.35:
                    cars.append((_rect(q + t * stall / 2, 3.8, 7.2, angle), CAR + int(rng.integers(0, 4))))
        building = House(
            centre=(float(b_centre[0]), float(b_centre[1])), length=b_len, depth=b_depth, angle=angle,
            roof_colour=int(rng.choice([2, 7, 8])), roof="flat", kind="building",
            driveway=None, lot=None,
        )
        scene.parking.append((lot, stripes, cars))
        scene.houses.append(building)
        return lot, building
    return None


# ----------------------------------------------------------------------------- scenes
_REGION_KEYS = ["top", "bottom", "left", "right", "top left", "top right", "bottom left", "bottom right", "center", None]


def _complement_box(region: str | None) -> Box:
    """A box that does not overlap ``region`` (for the objects of the "before" scene)."""
    return {
        "top": (0, 140, 256, 256), "bottom": (0, 0, 256, 116), "left": (140, 0, 256, 256),
        "right": (0, 0, 116, 256), "top left": (130, 130, 256, 256), "top right": (0, 130, 126, 256),
        "bottom left": (130, 0, 256, 126), "bottom right": (0, 0, 126, 126),
    }.get(region, (0, 0, 0, 0))


def _dirt_tracks(rng, scene: Scene, n: int) -> None:
    for _ in range(n):
        p0 = rng.uniform(-20, 276, 2)
        p2 = rng.uniform(-20, 276, 2)
        p1 = rng.uniform(0, 256, 2)
        scene.roads.append(Road(_bezier(p0, p1, p2), float(rng.uniform(2.5, 4.5)), DIRT, kerb=False))


def _ground(rng) -> str:
    return "bare" if rng.random() < 0.65 else "grass"


def _before(rng, kind: str, region: str | None) -> Scene:
    """The "before" scene for a change of ``kind`` happening in ``region`` (or, for unchanged
    pairs, any scene: kind names the look)."""
    scene = Scene(ground=_ground(rng))
    outside = _complement_box(region)
    shape = str(rng.choice(["straight", "straight", "curved", "t-shaped", "cross"]))
    if kind in ("houses", "parking", "houses_in_woods"):
        scene.roads += _road_through(rng, region, "curved" if rng.random() < 0.3 else "straight")
        if kind == "houses_in_woods":
            _woods(rng, scene, (0, 0, 256, 256), 1.1)
        elif region is not None and rng.random() < 0.6:
            for k in range(len(scene.roads)):
                _houses_along(rng, scene, k, REGIONS[region], str(rng.choice(["house", "villa"])), 8, inside=False)
        if kind != "houses_in_woods":
            _add_crowns(rng, scene, outside if region else (0, 0, 256, 256), int(rng.integers(5, 30)))
    elif kind == "residential":
        if region is not None and region != "center" and rng.random() < 0.5:
            scene.roads += _road_through(rng, _opposite(region), "straight")
            _houses_along(rng, scene, 0, outside, str(rng.choice(["house", "villa"])), 10)
        if rng.random() < 0.3:
            _dirt_tracks(rng, scene, 1)
        _add_crowns(rng, scene, outside if region else (0, 0, 256, 256), int(rng.integers(0, 25)))
    elif kind == "road":
        if rng.random() < 0.35:
            _woods(rng, scene, (0, 0, 256, 256), float(rng.uniform(0.6, 1.1)))
        else:
            _add_crowns(rng, scene, (0, 0, 256, 256), int(rng.integers(0, 30)))
            if rng.random() < 0.3:
                _dirt_tracks(rng, scene, 1)
    elif kind == "extend":
        pass  # built by the change itself (it needs the whole road)
    elif kind in ("trees_removed", "trees_grow"):
        if rng.random() < 0.4:
            scene.roads += _road_through(rng, _opposite(region) if region else None, "straight")
            if rng.random() < 0.5:
                _houses_along(rng, scene, 0, (0, 0, 256, 256), "house", 8)
        if kind == "trees_removed":
            _woods(rng, scene, REGIONS[region] if region else (0, 0, 256, 256), float(rng.uniform(0.8, 1.2)))
            _add_crowns(rng, scene, outside, int(rng.integers(5, 30)))
        else:
            _add_crowns(rng, scene, outside if region else (0, 0, 256, 256), int(rng.integers(0, 15)))
    elif kind == "houses_removed":
        scene.roads += _road_through(rng, region, "straight" if rng.random() < 0.7 else "curved")
        for k in range(len(scene.roads)):
            _houses_along(rng, scene, k, (0, 0, 256, 256), str(rng.choice(["house", "house", "villa"])), 14)
        _add_crowns(rng, scene, (0, 0, 256, 256), int(rng.integers(5, 30)))
    elif kind == "residential_area":  # unchanged look: a built-up neighbourhood
        scene.ground = "grass"
        scene.roads += _road_through(rng, None, shape)
        for k in range(len(scene.roads)):
            _houses_along(rng, scene, k, (0, 0, 256, 256), str(rng.choice(["house", "house", "villa"])), 16)
        _add_crowns(rng, scene, (0, 0, 256, 256), int(rng.integers(10, 50)))
    elif kind == "woods":
        _woods(rng, scene, (0, 0, 256, 256), float(rng.uniform(0.5, 1.2)))
        if rng.random() < 0.5:
            _dirt_tracks(rng, scene, 1)
    else:  # "open": bareland or grass with scattered trees, maybe a track or a pond
        _add_crowns(rng, scene, (0, 0, 256, 256), int(rng.integers(5, 60)))
        _dirt_tracks(rng, scene, int(rng.integers(0, 3)))
        if rng.random() < 0.15:
            c = rng.uniform(40, 216, 2)
            a, b = rng.uniform(15, 35, 2)
            scene.ellipses.append((WATER, (c[0] - a, c[1] - b, c[0] + a, c[1] + b)))
    return scene


def _opposite(region: str | None) -> str | None:
    swap = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
    return " ".join(swap.get(w, w) for w in region.split()) if region and region != "center" else None


def _change(rng, kind: str, region: str | None, before: Scene) -> tuple[Scene, Change] | None:
    """Apply a change of ``kind`` in ``region``; None when it could not be placed."""
    after = before.copy()
    box = REGIONS[region]
    ground = before.ground
    if kind in ("houses", "houses_in_woods"):
        house_kind = str(rng.choice(["house", "house", "villa", "building"], p=[0.4, 0.25, 0.25, 0.1]))
        limit = int(rng.choice([1, 2, 3, int(rng.integers(4, 7)), int(rng.integers(7, 16))], p=[0.15, 0.15, 0.15, 0.25, 0.3]))
        sides = (1, -1) if rng.random() < 0.5 else (int(rng.choice([1, -1])),)
        if kind == "houses_in_woods":
            after.crowns = np.zeros((0, 3), np.float32)  # place as if the woods were gone ...
        new = []
        for k in rng.permutation(len(after.roads)):
            new += _houses_along(rng, after, int(k), box, house_kind, limit - len(new), sides=sides,
                                 lot_label=LAWN if rng.random() < 0.6 else SOIL)
        if not new:
            return None
        if kind == "houses_in_woods":
            after.crowns = before.crowns.copy()  # ... then cut only the trees on the new lots
        cut = _clear_crowns_for(after, houses=new)
        both = len({h.side for h in new}) > len({h.side[0] for h in new})  # some road has houses on both sides
        noun = {"house": "houses", "villa": "villas", "building": "buildings"}[house_kind]
        woods = kind == "houses_in_woods"
        return after, Change("houses", len(new), noun, ground="woods" if woods else ground,
                             trees_removed=cut, both_sides=both)
    if kind == "residential":
        shape = str(rng.choice(["straight", "curved", "t-shaped", "cross"], p=[0.35, 0.2, 0.3, 0.15]))
        roads = _road_through(rng, region, shape, width=float(rng.uniform(10, 13)),
                              material=CEMENT if rng.random() < 0.5 else ASPHALT)
        if any(_seg_distance(r.points, old.points).min() < 30 for r in roads for old in before.roads):
            return None
        first = len(after.roads)
        after.roads += roads
        house_kind = str(rng.choice(["house", "villa"], p=[0.7, 0.3]))
        lot_label = LAWN if rng.random() < 0.5 else SOIL
        new = []
        for k in range(first, len(after.roads)):
            new += _houses_along(rng, after, k, box, house_kind, 24, lot_label=lot_label)
        if len(new) < 4:
            return None
        cut = _clear_crowns_for(after, houses=new, roads=roads)
        noun = "houses" if house_kind == "house" else "villas"
        return after, Change("residential", len(new), noun, road_shape=roads[0].shape,
                             ground=ground, trees_removed=cut, both_sides=True)
    if kind == "road":
        shape = str(rng.choice(["straight", "curved", "t-shaped", "cross"], p=[0.45, 0.25, 0.2, 0.1]))
        if region == "center":
            return None
        roads = _road_through(rng, region, shape)
        if any(_seg_distance(r.points, old.points).min() < 25 for r in roads for old in before.roads if old.material != DIRT):
            return None
        after.roads += roads
        cut = _clear_crowns_for(after, roads=roads)
        woods = cut >= 8
        return after, Change("road", len(roads), road_shape=roads[0].shape,
                             ground="woods" if woods else ground, trees_removed=cut)
    if kind == "extend":
        road = _road_through(rng, None, "curved" if rng.random() < 0.3 else "straight")[0]
        arc = _arc(road.points)
        cut_at = rng.uniform(0.35, 0.6) * arc[-1]
        keep = arc < cut_at
        p, _ = _at(road.points, arc, cut_at)
        short = Road(np.vstack([road.points[keep], p]), road.width, road.material, cul_de_sac=rng.random() < 0.3)
        # houses are placed against the whole road (so that none stands in the way of the
        # extension), and only those along the part already built are kept
        before.roads.append(road)
        houses = _houses_along(rng, before, len(before.roads) - 1, (0, 0, 256, 256), "house", int(rng.integers(0, 10)))
        before.houses = [h for h in before.houses if h not in houses or
                         _seg_distance(np.array([h.centre]), short.points)[0] < road.width / 2 + h.depth
                         and _seg_distance(np.array([h.centre]), np.array([p, p]))[0] > h.radius + 12]
        before.roads[-1] = short  # the "before" scene gets the dead-end road
        _add_crowns(rng, before, (0, 0, 256, 256), int(rng.integers(5, 40)))
        after = before.copy()
        after.roads[-1] = road
        _clear_crowns_for(after, roads=[road])
        return after, Change("extend", 1, road_shape=road.shape, ground=ground)
    if kind == "trees_removed":
        xy = before.crowns[:, :2]
        inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] <= box[3])
        if region is None:
            inside &= rng.random(len(xy)) < 0.75
        cut = _clear_crowns(after, ~inside)
        if cut < 6:
            return None
        return after, Change("trees_removed", cut, ground=ground)
    if kind == "trees_grow":
        grown = _add_crowns(rng, after, box, int(rng.integers(25, 70)), cluster=0.8, rmin=4, rmax=8)
        if grown < 10:
            return None
        return after, Change("trees_grow", grown, ground=ground)
    if kind == "houses_removed":
        xs = [i for i, h in enumerate(before.houses) if _in_box(h.centre, box)]
        if not xs:
            return None
        n = int(rng.choice([1, 2, 3, min(len(xs), int(rng.integers(4, 9)))], p=[0.3, 0.25, 0.2, 0.25]))
        gone = set(int(i) for i in rng.choice(xs, size=min(n, len(xs)), replace=False))
        after.houses = [h for i, h in enumerate(before.houses) if i not in gone]
        for i in sorted(gone):  # a bare plot where each house stood
            h = before.houses[i]
            after.patches.append((SOIL, _rect(h.centre, h.length + 4, h.depth + 4, h.angle)))
        noun = "villas" if all(before.houses[i].kind == "villa" for i in gone) and rng.random() < 0.5 else str(rng.choice(["houses", "buildings"]))
        return after, Change("houses_removed", len(gone), noun, ground=ground)
    if kind == "parking":
        for k in rng.permutation(len(after.roads)):
            made = _parking_lot(rng, after, int(k), box)
            if made:
                cut = _clear_crowns_for(after, houses=[made[1]], parking=after.parking[-1:])
                return after, Change("parking", 1, "buildings", ground=ground, trees_removed=cut)
        return None
    raise ValueError(f"unknown change kind {kind!r}")


# ----------------------------------------------------------------------------- rendering
def _render(scene: Scene, size: int, pad: int, sun: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label map and shadow mask (uint8, (size + 2 pad)^2) of a scene."""
    canvas = size + 2 * pad
    k = size / WORLD
    labels = Image.new("L", (canvas, canvas), GROUND)
    shadows = Image.new("L", (canvas, canvas), 0)
    draw, shade = ImageDraw.Draw(labels), ImageDraw.Draw(shadows)

    def cv(points: np.ndarray) -> list[float]:  # world -> flat canvas coordinates for PIL
        return (points * k + pad).ravel().tolist()

    for label, poly in scene.patches:
        draw.polygon(cv(poly), fill=label)
    for label, box in scene.ellipses:
        draw.ellipse(cv(np.asarray(box, float)), fill=label)
    for h in scene.houses:
        if h.lot is not None:
            draw.polygon(cv(h.lot), fill=h.lot_label)
    for road in scene.roads:
        pts = cv(road.points)
        w = road.width * k
        if road.kerb:
            draw.line(pts, fill=KERB, width=max(1, round(w + 3 * k)))
        draw.line(pts, fill=road.material, width=max(1, round(w)))
        if road.cul_de_sac:
            x, y = pts[-2:]
            r = w * 1.15
            if road.kerb:
                draw.ellipse([x - r - 1.5 * k, y - r - 1.5 * k, x + r + 1.5 * k, y + r + 1.5 * k], fill=KERB)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=road.material)
    for lot, stripes, cars in scene.parking:
        draw.polygon(cv(lot), fill=PARKING)
        for seg in stripes:
            draw.line(cv(seg), fill=MARKING, width=max(1, round(0.8 * k)))
        for car, colour in cars:
            draw.polygon(cv(car), fill=colour)
    sx, sy = (sun / np.linalg.norm(sun)).tolist()
    for h in scene.houses:
        if h.driveway is not None:
            draw.polygon(cv(h.driveway), fill=DRIVEWAY)
        if h.pool is not None:
            draw.polygon(cv(h.pool), fill=POOL)
        _draw_house(draw, shade, h, (sx, sy), k, pad)
    if len(scene.crowns):
        # each crown: a shadow away from the sun, a dark disc, a lit disc towards the sun
        for x, y, r in (scene.crowns * k + (pad, pad, 0)).tolist():
            dx, dy = sx * r, sy * r
            shade.ellipse([x - 0.8 * dx - r, y - 0.8 * dy - r, x - 0.8 * dx + r, y - 0.8 * dy + r], fill=255)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=TREE_DARK)
            cx, cy, rr = x + 0.25 * dx, y + 0.25 * dy, 0.68 * r
            draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=TREE)
            if r > 5 * k:
                cx, cy, rr = x + 0.42 * dx, y + 0.42 * dy, 0.3 * r
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=TREE_LIGHT)
    lab = np.asarray(labels)
    sh = np.asarray(shadows).copy()
    sh[TALL[lab]] = 0  # a roof or a crown is never in its own shadow
    return lab, sh


def _draw_house(draw, shade, h: House, sun: tuple[float, float], k: float, pad: int) -> None:
    """Shadow (the footprint swept away from the sun) and roof facets shaded by the sun."""
    c, s = math.cos(h.angle), math.sin(h.angle)
    ux, uy = c * h.length / 2, s * h.length / 2  # half length, along the road
    vx, vy = -s * h.depth / 2, c * h.depth / 2  # half depth, away from the road
    x, y = h.centre
    corners = [(x - ux - vx, y - uy - vy), (x + ux - vx, y + uy - vy), (x + ux + vx, y + uy + vy), (x - ux + vx, y - uy + vy)]

    def cv(points) -> list[float]:
        return [v * k + pad for p in points for v in p]

    height = 5.0 if h.kind != "building" else 7.0
    ox, oy = -sun[0] * height, -sun[1] * height
    moved = [(px + ox, py + oy) for px, py in corners]
    shade.polygon(cv(moved), fill=255)
    for i in range(4):  # sweep each wall: footprint + its shadow = their convex hull
        j = (i + 1) % 4
        shade.polygon(cv([corners[i], corners[j], moved[j], moved[i]]), fill=255)

    base = ROOF + 3 * h.roof_colour

    def lit(nx: float, ny: float) -> int:  # 0 lit, 1 mid, 2 dark: facet normal against the sun
        d = (nx * sun[0] + ny * sun[1]) / max(math.hypot(nx, ny), 1e-9)
        return 0 if d > 0.35 else 2 if d < -0.35 else 1

    if h.roof == "flat":
        draw.polygon(cv(corners), fill=base)
        inner = _rect(h.centre, h.length - 3, h.depth - 3, h.angle)
        draw.polygon(cv(inner.tolist()), fill=base + 1)
        return
    p0, p1, p2, p3 = corners  # p0-p1 front (road side), p3-p2 back
    inset = min(h.depth / 2, h.length / 2 - 1) if h.roof == "hip" else 0.0
    ix, iy = c * inset, s * inset
    ra, rb = (x - ux + ix, y - uy + iy), (x + ux - ix, y + uy - iy)  # ridge ends
    draw.polygon(cv([p0, p1, rb, ra]), fill=base + lit(-vx, -vy))
    draw.polygon(cv([p3, p2, rb, ra]), fill=base + lit(vx, vy))
    if h.roof == "hip":
        draw.polygon(cv([p0, ra, p3]), fill=base + lit(-ux, -uy))
        draw.polygon(cv([p1, rb, p2]), fill=base + lit(ux, uy))


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
            texture=np.float32(0.5) * _upsampled(rng, 384) + np.float32(0.2) * rng.standard_normal((1024, 1024), dtype=np.float32)
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
    veg = np.array([1.0 + 0.07 * dry - 0.08 * lush, 1.0 + 0.02 * dry + 0.02 * lush, 1.0 - 0.02 * dry - 0.06 * lush], np.float32)
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


# ----------------------------------------------------------------------------- captions
_LOCATION = {  # the longer "... of the scene" forms are the commonest in LEVIR-CC
    "top": ["at the top", "on the top side of the scene", "at the top of the scene", "in the upper part of the scene"],
    "bottom": ["at the bottom", "on the bottom side of the scene", "at the bottom of the scene", "in the lower part of the scene"],
    "left": ["on the left", "on the left side of the scene", "on the left side of the scene", "on the left side"],
    "right": ["on the right", "on the right side of the scene", "on the right side of the scene", "on the right side"],
    "top left": ["at the top left corner", "at the top left corner of the scene", "at the top left corner of the scene", "in the upper left corner"],
    "top right": ["at the top right corner", "at the top right corner of the scene", "at the top right corner of the scene", "in the upper right corner"],
    "bottom left": ["at the bottom left corner", "at the bottom left corner of the scene", "at the bottom left corner of the scene", "in the lower-left corner"],
    "bottom right": ["at the bottom right corner", "at the bottom right corner of the scene", "at the bottom right corner of the scene", "in the lower-right corner"],
    "center": ["in the center", "in the middle of the scene", "in the center of the scene"],
}
for _where, _forms in _LOCATION.items():
    if _where == "center":
        _forms += ["in the middle", "at the center of the image", "in the middle of the image"]
    elif " " in _where:
        _forms += [f"in the {_where} corner", f"at the {_where} of the scene", f"in the {_where} of the image"]
    else:
        _forms += [f"in the {_where} part of the image", f"on the {_where} of the image",
                   f"at the {_where} of the image"]
_GROUND_ON = {
    "bare": ["on the bareland", "on bareland", "in the desert", "in the open space"],
    "grass": ["on the grass", "on the meadow", "on the grassland"],
    "woods": ["in the woods", "in the forest"],
}
_GROUND_NOUN = {"bare": ["bareland", "desert", "open space", "bare land"], "grass": ["grass", "meadow", "grassland"],
                "woods": ["woods", "forest"]}
_ROAD_PHRASE = {
    "straight": ["a road", "a new road", "a straight road"],
    "curved": ["a curved road", "a winding road", "a road"],
    "t-shaped": ["a t-shaped road"],
    "cross": ["a crossroad", "two crossing roads", "two roads"],
}

# Templates. {q} quantity, {N} noun (agrees with q), {are}/{appear}/{have}/{is} verbs that agree,
# {loc} location phrase, {on} "on the bareland" ..., {g} ground noun, {road} road phrase,
# {qt} "some"/"many" trees. Templates with {loc} are used only when the location was measured.
_TEMPLATES = {
    "houses": [
        "{q} {N} {are} built along the road {on}", "{q} {N} {appear} along the road {on}",
        "{q} new {N} {are} built beside the road", "{q} {N} {have} been built by the road {on}",
        "{q} {N} {are} constructed on the {g} near the road", "{q} {N} {are} built {on}",
        "{q} {N} {appear} {on} beside the road", "{q} {N} {are} built next to the road",
        "{q} {N} {are} built {loc}", "{q} {N} {appear} {loc}", "{q} {N} {are} constructed {on} {loc}",
        "{q} new {N} {appear} {loc}", "{q} {N} {are} built beside the road {loc}",
        "the {g} {loc} is replaced by {q} {N}", "{q} {N} {have} been constructed along the road {on}",
        "{q} new {N} {are} built along the road {loc}",
    ],
    "houses+both": ["{q} {N} {are} built on both sides of the road", "{q} {N} {appear} on both sides of the road {on}"],
    "houses+row": [
        "a row of {N} is built along the road {on}", "a row of {N} appears beside the road",
        "a row of {N} is built {loc}", "a row of neatly arranged {N} is built along the road",
        "{q} {N} {are} built on one side of the road {on}",
    ],
    "houses+trees": [
        "some trees are removed and {q} {N} {are} built", "{q} {N} {are} built {on}",
        "{q} {N} replace the trees {loc}", "some trees are cut down and {q} {N} {appear} beside the road",
    ],
    "residential": [
        "some roads and houses are built {on}", "a residential area with many houses and roads appears",
        "many houses and roads appear {on}", "the {g} is replaced by a residential area",
        "{road} with {q} {N} appears {on}", "{q} {N} are built along the new road",
        "{road} is built and {q} {N} are built along it", "some roads and houses are built {loc}",
        "{road} with {q} {N} appears {loc}", "a residential area appears {on} {loc}",
        "{q} {N} and a road are built {loc}", "some roads and houses replace the {g}",
        "a residential area with many houses and roads appears {on}", "{q} neatly arranged {N} appear along a new road",
    ],
    "road": [
        "{road} {is} built {on}", "{road} {appear} {on}", "a new road appears {on}",
        "a road is built across the {g}", "{road} {appear} {loc}", "{road} {is} built {loc}",
        "a new road is built {on} {loc}", "{road} {is} built {on} {loc}", "a road is built across the {g} {loc}",
    ],
    "road+trees": ["some trees are removed and {road} {is} built", "{road} {is} built through the {g}"],
    "extend": [
        "the road is extended {on}", "the original road extends {on}", "the road is extended {loc}",
        "the original road is extended {loc}", "the road extends {on} {loc}", "the road becomes longer",
        "the road {on} is extended", "the original road is extended across the {g}",
        "the end of the road is extended {on}",
    ],
    "trees_removed": [
        "{qt} trees are removed from the woods", "{qt} trees in the woods have been cut down", "{qt} trees disappear {on}",
        "some plants are removed and the {g} appears", "the vegetation is removed and the {g} appears", "{qt} trees are removed {loc}",
        "the trees {loc} are cut down", "{qt} trees disappear {loc}", "the vegetation {loc} is removed",
        "part of the woods is cleared and the {g} appears", "{qt} trees {on} are removed", "{qt} trees have been cut down {loc}",
    ],
    "houses_removed": [
        "{q} {N} {are} removed", "{q} {N} beside the road {are} demolished", "{q} {N} {disappear} beside the road",
        "{q} {N} {have} been removed", "{q} {N} beside the road {are} removed", "{q} {N} {are} removed {loc}",
        "{q} {N} {disappear} {loc}", "{q} {N} {have} been demolished {loc}",
        "{q} {N} along the road {are} removed and the {g} appears",
    ],
    "trees_grow": [
        "{qt} trees are planted {on}", "{qt} trees are planted along the edge of the {g}", "{qt} trees appear {on}", "{qt} trees are planted {on}", "more trees grow {on}",
        "the vegetation {on} becomes lusher", "{qt} trees are planted {loc}", "{qt} trees appear {loc}",
        "the vegetation {loc} becomes lusher", "more trees grow {on} {loc}",
    ],
    "parking": [
        "a large building with a parking lot is built {on}", "a large building with a parking lot appears {on}",
        "a building and a parking lot appear {on}", "a parking lot is built beside the road",
        "a parking lot and a large building are constructed", "the {g} is replaced by a building and a parking lot",
        "a parking lot is built {loc}", "a large building with a parking lot appears {loc}",
        "a building with a parking lot is built beside the road {loc}",
    ],
}
LOCATION_SHARE = 0.7  # of the captions of a pair whose change has a location (LEVIR-CC: about 0.27 of all)
_SINGULAR = {"houses": "house", "villas": "villa", "buildings": "building", "trees": "tree"}


def _quantity(rng, n: int) -> str:
    if n == 1:
        return "a"
    if n == 2:
        return "two"
    if n == 3:
        return "three"
    if n <= 6:
        return str(rng.choice(["several", "some"] + (["four"] if n == 4 else [])))
    return str(rng.choice(["many", "some"]))


# Words that LEVIR-CC's annotators use interchangeably: a grammar sentence has each of these
# phrases replaced by a random member of its group, so that two pairs seldom get the same
# sentence by chance (recurrence should come from the stock sentences below, at a set rate).
_TREES = [
    ["many trees", "lots of trees", "a lot of trees", "a large number of trees", "plenty of trees"],
    ["some trees", "several trees", "a number of trees", "some of the trees"],
    ["the vegetation", "the plants", "the greenery", "the green vegetation"],
]
_SYNONYMS = {  # by change kind; "all" applies to every kind, first
    "all": [
        ["along the road", "beside the road", "by the road", "next to the road", "near the road",
         "alongside the road", "along the side of the road", "on the side of the road"],
        ["are built", "are constructed", "have been built", "have been constructed", "are erected", "are newly built"],
        ["is built", "is constructed", "has been built", "has been constructed", "is newly built"],
        ["a residential area", "a new residential area", "a large residential area", "a residential district",
         "a residential community"],
        ["is replaced by", "is covered by", "is turned into", "gives way to", "becomes"],
        ["appear", "emerge", "can be seen", "show up"],
        ["appears", "emerges", "can be seen", "shows up"],
        ["replace the", "take the place of the", "cover the", "are built on the"],
        ["neatly arranged", "well arranged", "orderly", "regularly arranged"],
    ],
    "trees_removed": _TREES + [["are removed", "are cut down", "have been removed", "have been cut down",
                                "are cleared", "are felled"]],
    "trees_grow": _TREES + [["are planted", "have been planted", "are newly planted", "grow up", "have grown"],
                            ["becomes lusher", "becomes denser", "grows thicker", "becomes greener"]],
    "extend": [["the road", "the original road", "the existing road", "the old road"],
               ["becomes longer", "gets longer", "is lengthened", "grows longer"]],
    "houses_removed": [["are removed", "are demolished", "have been removed", "have been demolished",
                        "are torn down", "are pulled down"]],
}
_ADJECTIVES = {"houses": ["", "", "small", "detached", "new"], "villas": ["", "", "small", "detached", "new"],
               "buildings": ["", "", "small", "large", "new"]}


def _vary(text: str, kind: str, rng) -> str:
    for group in _SYNONYMS["all"] + _SYNONYMS.get(kind, []):
        for phrase in group:
            if f" {phrase} " in f" {text} ":
                text = f" {text} ".replace(f" {phrase} ", f" {group[int(rng.integers(len(group)))]} ", 1).strip()
                break
    return text


# Stock sentences: the handful of sentences annotators write again and again ("some roads and
# houses are built on bareland" is the first caption of 112 of LEVIR-CC's 3,407 changed train
# pairs). Each is true of every change it is allowed for: (sentence, conditions) with conditions
# on the ground, the noun, the count (lo, hi) and the road shape. Listed by rank: a caption drawn
# from the stock takes the r-th applicable sentence with weight 1 / r ** STOCK_ZIPF.
_MANY, _SOME = (7, None), (4, None)
_STOCK: dict[str, list[tuple[str, dict]]] = {
    "residential": [
        ("some roads and houses are built on bareland", {"ground": "bare"}),
        ("a residential area with many houses and roads appears", {"count": _MANY}),
        ("some roads and houses are built on the grass", {"ground": "grass"}),
        ("many houses and roads are built", {"count": _MANY}),
        ("a residential area appears", {}),
        ("some houses and roads appear", {}),
        ("a new residential area is built on the bareland", {"ground": "bare"}),
        ("some villas and roads are built", {"noun": "villas"}),
    ],
    "houses": [
        ("some houses are built along the road", {"noun": "houses", "count": _SOME}),
        ("many houses are built along the road", {"noun": "houses", "count": _MANY}),
        ("two houses are built beside the road", {"noun": "houses", "count": (2, 2)}),
        ("a house is built beside the road", {"noun": "houses", "count": (1, 1)}),
        ("some new houses are built along the road", {"noun": "houses", "count": _SOME}),
        ("three houses are built along the road", {"noun": "houses", "count": (3, 3)}),
        ("some villas are built along the road", {"noun": "villas", "count": _SOME}),
        ("two villas are built beside the road", {"noun": "villas", "count": (2, 2)}),
        ("a villa is built beside the road", {"noun": "villas", "count": (1, 1)}),
        ("some buildings are built along the road", {"noun": "buildings", "count": _SOME}),
        ("a building is built beside the road", {"noun": "buildings", "count": (1, 1)}),
        ("two buildings are built beside the road", {"noun": "buildings", "count": (2, 2)}),
        ("several houses are built on the bareland", {"noun": "houses", "count": _SOME, "ground": "bare"}),
        ("some trees are cut down and houses are built", {"ground": "woods", "count": (2, None)}),
        ("houses are built beside the road", {"count": (2, None), "noun": "houses"}),
        ("new houses appear beside the road", {"count": (2, None), "noun": "houses"}),
    ],
    "road": [
        ("a road is built", {"shape": ("straight", "curved", "t-shaped")}),
        ("a new road appears", {"shape": ("straight", "curved", "t-shaped")}),
        ("a road is built on the bareland", {"ground": "bare", "shape": ("straight", "curved", "t-shaped")}),
        ("two roads are built", {"shape": ("cross",)}),
        ("a curved road is built", {"shape": ("curved",)}),
        ("a road is built across the grass", {"ground": "grass", "shape": ("straight", "curved", "t-shaped")}),
        ("a new road is built", {"shape": ("straight", "curved", "t-shaped")}),
    ],
    "extend": [
        ("the road is extended", {}), ("the original road is extended", {}), ("the road becomes longer", {}),
        ("the road extends", {}), ("the original road extends", {}),
    ],
    "trees_removed": [
        ("some trees are removed", {}), ("many trees are removed", {"count": (15, None)}),
        ("some trees are cut down", {}), ("the vegetation is removed", {}), ("some trees disappear", {}),
        ("trees are removed", {}),
    ],
    "trees_grow": [
        ("more trees appear", {}), ("some trees are planted", {}), ("the vegetation becomes lusher", {}),
        ("many trees are planted", {"count": (15, None)}), ("more trees grow", {}), ("trees are planted", {}),
    ],
    "houses_removed": [
        ("some houses are removed", {"noun": "houses", "count": _SOME}),
        ("a house is removed", {"noun": "houses", "count": (1, 1)}),
        ("two houses are removed", {"noun": "houses", "count": (2, 2)}),
        ("some buildings are removed", {"noun": "buildings", "count": _SOME}),
        ("a building is demolished", {"noun": "buildings", "count": (1, 1)}),
        ("the houses are removed", {"noun": "houses", "count": (2, None)}),
        ("some villas are removed", {"noun": "villas", "count": _SOME}),
        ("the buildings are demolished", {"noun": "buildings", "count": (2, None)}),
        ("houses disappear", {"noun": "houses", "count": (2, None)}),
        ("buildings disappear", {"noun": "buildings", "count": (2, None)}),
        ("a villa is removed", {"noun": "villas", "count": (1, 1)}),
        ("villas disappear", {"noun": "villas", "count": (2, None)}),
    ],
    "parking": [
        ("a parking lot is built", {}), ("a large building with a parking lot is built", {}),
        ("a building and a parking lot appear", {"count": (1, 1)}), ("a parking lot appears", {}),
        ("a parking lot and a building are built", {}),
    ],
}
# How readily each kind's pairs get stock sentences, relative to STOCK_SHARE: residential areas
# and houses along a road are LEVIR-CC's stock descriptions.
_STOCK_AFFINITY = {"residential": 2.0, "houses": 1.0, "road": 0.8, "extend": 0.8, "trees_removed": 0.6,
                   "trees_grow": 0.6, "houses_removed": 0.6, "parking": 0.8}
STOCK_ZIPF = 1.5
STOCK_SHARE = 0.23  # the default: LEVIR-CC train's caption recurrence (see rscc.data.stats)
STOCK_SHARE_HIGH = 0.9  # most changed pairs share a handful of stock sentences


def _applies(change: Change, conditions: dict) -> bool:
    lo, hi = conditions.get("count", (0, None))
    return (conditions.get("ground", change.ground) == change.ground
            and conditions.get("noun", change.noun) == change.noun
            and change.count >= lo and (hi is None or change.count <= hi)
            and (change.road_shape or "straight") in conditions.get("shape", (change.road_shape or "straight",)))


def stock_sentences(change: Change) -> list[str]:
    """The stock sentences that are true of ``change``, by rank."""
    return [sentence for sentence, conditions in _STOCK[change.kind] if _applies(change, conditions)]


def captions_for(change: Change, rng, stock_share: float = STOCK_SHARE) -> list[list[str]]:
    """Five different captions (token lists) that state ``change`` truthfully.

    Each caption is, with probability ``stock_share`` times the kind's affinity (at most 1), one
    of the kind's stock sentences (Zipf-weighted by rank), else a sentence of the grammar."""
    if not 0.0 <= stock_share <= 1.0:
        raise DatasetError(f"synthetic captions: stock_share must lie in [0, 1] (got {stock_share})")
    kind = change.kind
    stock = stock_sentences(change)
    p_stock = min(1.0, stock_share * _STOCK_AFFINITY[kind])
    templates = list(_TEMPLATES[kind])
    if kind == "houses":
        if change.both_sides and change.count >= 2:
            templates += _TEMPLATES["houses+both"]
        if not change.both_sides and change.count >= 3:
            templates += _TEMPLATES["houses+row"]
        if change.trees_removed >= 3:
            templates += _TEMPLATES["houses+trees"]
    if kind == "road" and change.ground == "woods":
        templates += _TEMPLATES["road+trees"]
    if change.count < 7:  # "many houses" only when there are many
        templates = [t for t in templates if "many" not in t.split()]
    plain = [t for t in templates if "{loc}" not in t]
    located = [t for t in templates if "{loc}" in t] if change.location else []
    sentences: list[str] = []
    for _ in range(200):
        if len(sentences) == 5:
            break
        unused = [s for s in stock if s not in sentences]
        if unused and rng.random() < p_stock:
            weights = np.array([1.0 / (stock.index(s) + 1) ** STOCK_ZIPF for s in unused])
            sentences.append(unused[int(rng.choice(len(unused), p=weights / weights.sum()))])
            continue
        pool = located if located and rng.random() < LOCATION_SHARE else plain
        template = pool[int(rng.integers(len(pool)))]
        n = change.count
        road_phrases = _ROAD_PHRASE.get(change.road_shape or "straight", ["a road"])
        if kind != "road":  # "{road} with many houses appears": keep the road singular
            road_phrases = [r for r in road_phrases if not r.startswith("two")] or ["a road"]
        road = str(rng.choice(road_phrases))
        if kind == "road":
            singular = not road.startswith("two")
        else:
            singular = n == 1 and "a row of" not in template
        noun = _SINGULAR[change.noun] if singular else change.noun
        if "new {N}" not in template and "neatly arranged {N}" not in template:
            adjective = _ADJECTIVES.get(change.noun, [""])[int(rng.integers(5))]
            noun = f"{adjective} {noun}".strip()
        text = template.format(
            q="a" if "a row of" in template else _quantity(rng, n),
            N=noun,
            are="is" if singular else "are",
            **{"is": "is" if singular else "are"},
            appear="appears" if singular else "appear",
            disappear="disappears" if singular else "disappear",
            have="has" if singular else "have",
            loc=str(rng.choice(_LOCATION[change.location])) if change.location else "",
            on=str(rng.choice(_GROUND_ON[change.ground])),
            g=str(rng.choice(_GROUND_NOUN[change.ground])),
            road=road,
            qt="many" if n >= 15 else "some",
        )
        text = _vary(" ".join(text.split()), kind, rng)
        if text not in sentences:
            sentences.append(text)
    return [s.split() for s in sentences]


def _measure_location(changed: np.ndarray) -> str | None:
    """Where the changed pixels lie: a corner, a side, the centre, or None (spread out)."""
    total = int(changed.sum())
    if total == 0:
        return None
    h, w = changed.shape
    top, left = changed[: h // 2], changed[:, : w // 2]
    f_top, f_left = top.sum() / total, left.sum() / total
    quads = {
        "top left": changed[: h // 2, : w // 2].sum() / total,
        "top right": changed[: h // 2, w // 2 :].sum() / total,
        "bottom left": changed[h // 2 :, : w // 2].sum() / total,
        "bottom right": changed[h // 2 :, w // 2 :].sum() / total,
    }
    corner = max(quads, key=quads.get)
    if quads[corner] >= 0.85:
        return corner
    for name, f in (("top", f_top), ("bottom", 1 - f_top), ("left", f_left), ("right", 1 - f_left)):
        if f >= 0.85:
            return name
    if changed[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].sum() / total >= 0.85:
        return "center"
    return None


# ----------------------------------------------------------------------------- one pair
_CHANGE_KINDS = ["houses", "residential", "road", "extend", "trees_removed", "houses_removed", "trees_grow", "parking", "houses_in_woods"]
_CHANGE_WEIGHTS = [0.28, 0.22, 0.12, 0.05, 0.08, 0.06, 0.05, 0.07, 0.07]
_STILL_KINDS = ["open", "woods", "residential_area", "houses", "parking", "road"]
_STILL_WEIGHTS = [0.3, 0.12, 0.25, 0.18, 0.05, 0.1]


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
        kind = str(rng.choice(_STILL_KINDS, p=_STILL_WEIGHTS))
        region = _REGION_KEYS[int(rng.integers(len(_REGION_KEYS)))]
        before = _before(rng, kind, region)
        if kind == "parking" and before.roads:
            _parking_lot(rng, before, 0, (0, 0, 256, 256))
        after, change = before, None
        labels_a, shadows_a = _render(before, size, pad, sun)
        labels_b, shadows_b = labels_a, shadows_a
    else:
        for _ in range(40):
            kind = str(rng.choice(_CHANGE_KINDS, p=_CHANGE_WEIGHTS))
            region = _REGION_KEYS[int(rng.integers(len(_REGION_KEYS)))]
            before = _before(rng, kind, region)
            made = _change(rng, kind, region, before)
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


# ----------------------------------------------------------------------------- PNG writing
def encode_png(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG, written with the 'Up' filter and Huffman-only deflate: about 3x faster
    than PIL's adaptive filtering on these noisy images, at a similar size."""
    h, w, c = rgb.shape
    rows = rgb.reshape(h, w * c)
    filtered = np.empty((h, w * c + 1), np.uint8)
    filtered[:, 0] = 2  # Up
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:], dtype=np.uint8)
    comp = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_HUFFMAN_ONLY)
    data = comp.compress(filtered) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


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
    replaced only when it is empty or a synthetic dataset (it holds ``synth.json``)."""
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
        if out.exists():
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
