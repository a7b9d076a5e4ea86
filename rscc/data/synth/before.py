"""The "before" scene: one registered layout per change kind, and the looks of unchanged pairs.

A layout fills a fresh :class:`Scene` (its ground already drawn) for a change of its kind that
will happen in ``region``: it keeps the region free for the change and puts the scene's other
objects ``outside`` it. Unchanged pairs draw a look from STILL_LOOKS and use its layout.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rscc.data.synth.layout import (
    _add_crowns,
    _complement_box,
    _dirt_tracks,
    _ground,
    _houses_along,
    _opposite,
    _road_through,
    _woods,
)
from rscc.data.synth.scene import FRAME, REGIONS, WATER, Box, Scene

# rng, scene, kind, region, outside (a box clear of the region), shape (a road shape drawn for every scene)
Layout = Callable[[np.random.Generator, Scene, str, "str | None", Box, str], None]
BEFORE: dict[str, Layout] = {}
# The looks of unchanged pairs and their weights (each is also a registered layout).
STILL_LOOKS = {"open": 0.3, "woods": 0.12, "residential_area": 0.25, "houses": 0.18, "parking": 0.05, "road": 0.1}


def layout(*kinds: str) -> Callable[[Layout], Layout]:
    """Register the decorated function as the "before" layout of ``kinds``."""
    def register(fn: Layout) -> Layout:
        for kind in kinds:
            BEFORE[kind] = fn
        return fn
    return register


def before_scene(rng, kind: str, region: str | None) -> Scene:
    """The "before" scene for a change of ``kind`` happening in ``region`` (or, for unchanged
    pairs, any scene: kind names the look)."""
    scene = Scene(ground=_ground(rng))
    outside = _complement_box(region)
    shape = str(rng.choice(["straight", "straight", "curved", "t-shaped", "cross"]))
    if kind not in BEFORE:
        raise ValueError(f"no 'before' layout for {kind!r}; expected one of {', '.join(BEFORE)}")
    BEFORE[kind](rng, scene, kind, region, outside, shape)
    return scene


@layout("houses", "parking", "houses_in_woods")
def _roadside(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """A road through the region; houses outside the region or woods all over; some trees."""
    scene.roads += _road_through(rng, region, "curved" if rng.random() < 0.3 else "straight")
    if kind == "houses_in_woods":
        _woods(rng, scene, FRAME, 1.1)
    elif region is not None and rng.random() < 0.6:
        for k in range(len(scene.roads)):
            _houses_along(rng, scene, k, REGIONS[region], str(rng.choice(["house", "villa"])), 8, inside=False)
    if kind != "houses_in_woods":
        _add_crowns(rng, scene, outside if region else FRAME, int(rng.integers(5, 30)))


@layout("residential")
def _open_for_a_neighbourhood(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Open land, maybe a road with houses on the far side of the scene."""
    if region is not None and region != "center" and rng.random() < 0.5:
        scene.roads += _road_through(rng, _opposite(region), "straight")
        _houses_along(rng, scene, 0, outside, str(rng.choice(["house", "villa"])), 10)
    if rng.random() < 0.3:
        _dirt_tracks(rng, scene, 1)
    _add_crowns(rng, scene, outside if region else FRAME, int(rng.integers(0, 25)))


@layout("road")
def _open_or_woods(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Woods, or open land with scattered trees and maybe a track."""
    if rng.random() < 0.35:
        _woods(rng, scene, FRAME, float(rng.uniform(0.6, 1.1)))
    else:
        _add_crowns(rng, scene, FRAME, int(rng.integers(0, 30)))
        if rng.random() < 0.3:
            _dirt_tracks(rng, scene, 1)


@layout("extend")
def _empty(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Nothing yet: the change builds the scene itself (it needs the whole road)."""


@layout("trees_removed", "trees_grow")
def _trees(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Maybe a road with houses; woods in the region (to cut) or few trees (to plant more)."""
    if rng.random() < 0.4:
        scene.roads += _road_through(rng, _opposite(region) if region else None, "straight")
        if rng.random() < 0.5:
            _houses_along(rng, scene, 0, FRAME, "house", 8)
    if kind == "trees_removed":
        _woods(rng, scene, REGIONS[region] if region else FRAME, float(rng.uniform(0.8, 1.2)))
        _add_crowns(rng, scene, outside, int(rng.integers(5, 30)))
    else:
        _add_crowns(rng, scene, outside if region else FRAME, int(rng.integers(0, 15)))


@layout("houses_removed")
def _street(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """A road through the region lined with houses (some will go)."""
    scene.roads += _road_through(rng, region, "straight" if rng.random() < 0.7 else "curved")
    for k in range(len(scene.roads)):
        _houses_along(rng, scene, k, FRAME, str(rng.choice(["house", "house", "villa"])), 14)
    _add_crowns(rng, scene, FRAME, int(rng.integers(5, 30)))


@layout("residential_area")
def _neighbourhood(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Unchanged look: a built-up neighbourhood on grass."""
    scene.ground = "grass"
    scene.roads += _road_through(rng, None, shape)
    for k in range(len(scene.roads)):
        _houses_along(rng, scene, k, FRAME, str(rng.choice(["house", "house", "villa"])), 16)
    _add_crowns(rng, scene, FRAME, int(rng.integers(10, 50)))


@layout("woods")
def _forest(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Unchanged look: woods, maybe a track."""
    _woods(rng, scene, FRAME, float(rng.uniform(0.5, 1.2)))
    if rng.random() < 0.5:
        _dirt_tracks(rng, scene, 1)


@layout("open")
def _open(rng, scene: Scene, kind: str, region: str | None, outside: Box, shape: str) -> None:
    """Unchanged look: bareland or grass with scattered trees, maybe tracks or a pond."""
    _add_crowns(rng, scene, FRAME, int(rng.integers(5, 60)))
    _dirt_tracks(rng, scene, int(rng.integers(0, 3)))
    if rng.random() < 0.15:
        c = rng.uniform(40, 216, 2)
        a, b = rng.uniform(15, 35, 2)
        scene.ellipses.append((WATER, (c[0] - a, c[1] - b, c[0] + a, c[1] + b)))
