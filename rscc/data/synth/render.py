"""Drawing a scene into a label map and a shadow mask (PIL ImageDraw), at any image size."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from rscc.data.synth.scene import (
    DRIVEWAY,
    GROUND,
    KERB,
    MARKING,
    PARKING,
    POOL,
    ROOF,
    TALL,
    TREE,
    TREE_DARK,
    TREE_LIGHT,
    WORLD,
    House,
    Scene,
    _rect,
)


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
    corners = [(x - ux - vx, y - uy - vy), (x + ux - vx, y + uy - vy), (x + ux + vx, y + uy + vy),
               (x - ux + vx, y - uy + vy)]

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
