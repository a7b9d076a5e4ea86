"""Laying out a scene: roads through a region, houses along a road, tree crowns and woods,
parking lots, dirt tracks (the building blocks of :mod:`.before` and :mod:`.changes`)."""
from __future__ import annotations

import bisect
import math

import numpy as np

from rscc.data.synth.scene import (
    ASPHALT,
    CAR,
    CEMENT,
    DIRT,
    FRAME,
    LAWN,
    N_ROOF_COLOURS,
    REGIONS,
    Box,
    House,
    Road,
    Scene,
    _arc,
    _at,
    _bezier,
    _in_box,
    _rect,
    _seg_distance,
)


# ----------------------------------------------------------------------------- scene building blocks
def _road_through(rng, region: str | None, shape: str, width: float | None = None,
                  material: int | None = None) -> list[Road]:
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
        branch_ends_inside = _in_box(end, FRAME)
        return [Road(main, w, mat, shape="t-shaped"),
                Road(np.stack([start, end]), w * 0.85, mat, cul_de_sac=branch_ends_inside, shape="t-shaped")]
    if shape == "cross":
        return [Road(straight(cx, cy, True, tilt), w, mat, shape="cross"),
                Road(straight(cx, cy, False, -tilt), w, mat, shape="cross")]
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
            driveway = _rect(p + n * (edge + setback / 2) + offset, 6.0 if kind != "building" else 10.0, setback + 1,
                             angle)
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
        if not all(_in_box(q, FRAME, 3) for q in probe):
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
_REGION_KEYS = ["top", "bottom", "left", "right", "top left", "top right", "bottom left", "bottom right", "center",
                None]


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


def _opposite(region: str | None) -> str | None:
    swap = {"top": "bottom", "bottom": "top", "left": "right", "right": "left"}
    return " ".join(swap.get(w, w) for w in region.split()) if region and region != "center" else None
