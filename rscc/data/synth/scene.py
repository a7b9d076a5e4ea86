"""The scene model: a label vocabulary, the objects of a 256 x 256 world (roads, houses, tree
crowns, parking lots), what a change did (:class:`Change`), and the geometry they share."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

WORLD = 256.0  # scenes are laid out in a 256 x 256 world and scaled to the image size

# ----------------------------------------------------------------------------- labels
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

# ----------------------------------------------------------------------------- scene objects
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in world units
FRAME: Box = (0, 0, 256, 256)  # the whole world
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
    None: FRAME,
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

    def copy(self) -> Scene:
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
