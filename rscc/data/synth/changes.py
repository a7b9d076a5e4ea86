"""The change kinds: one registered function per kind, with its weight among changed pairs.

A kind's function takes the pair's random generator, the region where the change happens and
the "before" scene (laid out by :func:`rscc.data.synth.layout.before_scene` for the same kind),
and returns the "after" scene with the :class:`Change` it made, or None when the change could
not be placed there (the pair then draws another kind and region). Registration order is the
order of the draw, so adding a kind at the end leaves the existing ones' draws alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rscc.data.synth.layout import (
    _add_crowns,
    _clear_crowns,
    _clear_crowns_for,
    _houses_along,
    _parking_lot,
    _road_through,
)
from rscc.data.synth.scene import (
    ASPHALT,
    CEMENT,
    DIRT,
    FRAME,
    LAWN,
    REGIONS,
    SOIL,
    Change,
    Road,
    Scene,
    _arc,
    _at,
    _in_box,
    _rect,
    _seg_distance,
)

Made = tuple[Scene, Change] | None
Apply = Callable[[np.random.Generator, str | None, Scene], Made]


@dataclass(frozen=True)
class ChangeKind:
    name: str
    weight: float  # share among changed pairs (the registered weights sum to 1)
    apply: Apply


CHANGE_KINDS: dict[str, ChangeKind] = {}


def change_kind(name: str, weight: float) -> Callable[[Apply], Apply]:
    """Register the decorated function as change kind ``name``, drawn with ``weight``."""
    def register(fn: Apply) -> Apply:
        if name in CHANGE_KINDS:
            raise ValueError(f"change kind {name!r} is registered twice")
        CHANGE_KINDS[name] = ChangeKind(name, weight, fn)
        return fn
    return register


def apply_change(rng, kind: str, region: str | None, before: Scene) -> Made:
    """Apply a change of ``kind`` in ``region``; None when it could not be placed."""
    if kind not in CHANGE_KINDS:
        raise ValueError(f"unknown change kind {kind!r}; expected one of {', '.join(CHANGE_KINDS)}")
    return CHANGE_KINDS[kind].apply(rng, region, before)


def _new_houses(rng, region: str | None, before: Scene, woods: bool) -> Made:
    after, box, ground = before.copy(), REGIONS[region], before.ground
    house_kind = str(rng.choice(["house", "house", "villa", "building"], p=[0.4, 0.25, 0.25, 0.1]))
    limit = int(rng.choice([1, 2, 3, int(rng.integers(4, 7)), int(rng.integers(7, 16))],
                           p=[0.15, 0.15, 0.15, 0.25, 0.3]))
    sides = (1, -1) if rng.random() < 0.5 else (int(rng.choice([1, -1])),)
    if woods:
        after.crowns = np.zeros((0, 3), np.float32)  # place as if the woods were gone ...
    new = []
    for k in rng.permutation(len(after.roads)):
        new += _houses_along(rng, after, int(k), box, house_kind, limit - len(new), sides=sides,
                             lot_label=LAWN if rng.random() < 0.6 else SOIL)
    if not new:
        return None
    if woods:
        after.crowns = before.crowns.copy()  # ... then cut only the trees on the new lots
    cut = _clear_crowns_for(after, houses=new)
    both = len({h.side for h in new}) > len({h.side[0] for h in new})  # some road has houses on both sides
    noun = {"house": "houses", "villa": "villas", "building": "buildings"}[house_kind]
    return after, Change("houses", len(new), noun, ground="woods" if woods else ground,
                         trees_removed=cut, both_sides=both)


@change_kind("houses", 0.28)
def _houses(rng, region: str | None, before: Scene) -> Made:
    """Houses, villas or buildings built along a road."""
    return _new_houses(rng, region, before, woods=False)


@change_kind("residential", 0.22)
def _residential(rng, region: str | None, before: Scene) -> Made:
    """A new road (of any shape) with houses along it."""
    after, box, ground = before.copy(), REGIONS[region], before.ground
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


@change_kind("road", 0.12)
def _road(rng, region: str | None, before: Scene) -> Made:
    """A road (or two crossing) built across open land or woods."""
    after, ground = before.copy(), before.ground
    shape = str(rng.choice(["straight", "curved", "t-shaped", "cross"], p=[0.45, 0.25, 0.2, 0.1]))
    if region == "center":
        return None
    roads = _road_through(rng, region, shape)
    if any(_seg_distance(r.points, old.points).min() < 25
           for r in roads for old in before.roads if old.material != DIRT):
        return None
    after.roads += roads
    cut = _clear_crowns_for(after, roads=roads)
    woods = cut >= 8
    return after, Change("road", len(roads), road_shape=roads[0].shape,
                         ground="woods" if woods else ground, trees_removed=cut)


@change_kind("extend", 0.05)
def _extend(rng, region: str | None, before: Scene) -> Made:
    """A dead-end road extended (the region is not used: the road crosses the scene)."""
    ground = before.ground
    road = _road_through(rng, None, "curved" if rng.random() < 0.3 else "straight")[0]
    arc = _arc(road.points)
    cut_at = rng.uniform(0.35, 0.6) * arc[-1]
    keep = arc < cut_at
    p, _ = _at(road.points, arc, cut_at)
    short = Road(np.vstack([road.points[keep], p]), road.width, road.material, cul_de_sac=rng.random() < 0.3)
    # houses are placed against the whole road (so that none stands in the way of the
    # extension), and only those along the part already built are kept
    before.roads.append(road)
    houses = _houses_along(rng, before, len(before.roads) - 1, FRAME, "house", int(rng.integers(0, 10)))
    before.houses = [h for h in before.houses if h not in houses or
                     _seg_distance(np.array([h.centre]), short.points)[0] < road.width / 2 + h.depth
                     and _seg_distance(np.array([h.centre]), np.array([p, p]))[0] > h.radius + 12]
    before.roads[-1] = short  # the "before" scene gets the dead-end road
    _add_crowns(rng, before, FRAME, int(rng.integers(5, 40)))
    after = before.copy()
    after.roads[-1] = road
    _clear_crowns_for(after, roads=[road])
    return after, Change("extend", 1, road_shape=road.shape, ground=ground)


@change_kind("trees_removed", 0.08)
def _trees_removed(rng, region: str | None, before: Scene) -> Made:
    """The trees in the region cut (three in four of them when the region is the whole scene)."""
    after, box, ground = before.copy(), REGIONS[region], before.ground
    xy = before.crowns[:, :2]
    inside = (xy[:, 0] >= box[0]) & (xy[:, 0] <= box[2]) & (xy[:, 1] >= box[1]) & (xy[:, 1] <= box[3])
    if region is None:
        inside &= rng.random(len(xy)) < 0.75
    cut = _clear_crowns(after, ~inside)
    if cut < 6:
        return None
    return after, Change("trees_removed", cut, ground=ground)


@change_kind("houses_removed", 0.06)
def _houses_removed(rng, region: str | None, before: Scene) -> Made:
    """One to eight houses of the region demolished, each leaving a bare plot."""
    after, box, ground = before.copy(), REGIONS[region], before.ground
    xs = [i for i, h in enumerate(before.houses) if _in_box(h.centre, box)]
    if not xs:
        return None
    n = int(rng.choice([1, 2, 3, min(len(xs), int(rng.integers(4, 9)))], p=[0.3, 0.25, 0.2, 0.25]))
    gone = set(int(i) for i in rng.choice(xs, size=min(n, len(xs)), replace=False))
    after.houses = [h for i, h in enumerate(before.houses) if i not in gone]
    for i in sorted(gone):  # a bare plot where each house stood
        h = before.houses[i]
        after.patches.append((SOIL, _rect(h.centre, h.length + 4, h.depth + 4, h.angle)))
    all_villas = all(before.houses[i].kind == "villa" for i in gone)
    noun = "villas" if all_villas and rng.random() < 0.5 else str(rng.choice(["houses", "buildings"]))
    return after, Change("houses_removed", len(gone), noun, ground=ground)


@change_kind("trees_grow", 0.05)
def _trees_grow(rng, region: str | None, before: Scene) -> Made:
    """Trees planted in the region."""
    after, box, ground = before.copy(), REGIONS[region], before.ground
    grown = _add_crowns(rng, after, box, int(rng.integers(25, 70)), cluster=0.8, rmin=4, rmax=8)
    if grown < 10:
        return None
    return after, Change("trees_grow", grown, ground=ground)


@change_kind("parking", 0.07)
def _parking(rng, region: str | None, before: Scene) -> Made:
    """A large building with a parking lot built beside a road."""
    after, box, ground = before.copy(), REGIONS[region], before.ground
    for k in rng.permutation(len(after.roads)):
        made = _parking_lot(rng, after, int(k), box)
        if made:
            cut = _clear_crowns_for(after, houses=[made[1]], parking=after.parking[-1:])
            return after, Change("parking", 1, "buildings", ground=ground, trees_removed=cut)
    return None


@change_kind("houses_in_woods", 0.07)
def _houses_in_woods(rng, region: str | None, before: Scene) -> Made:
    """Houses built along a road through woods: the trees on their lots are cut."""
    return _new_houses(rng, region, before, woods=True)
