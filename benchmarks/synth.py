"""Synthetic pairs per second, on one core, and where the time goes.

Three timings in the same process: drawing pairs (:func:`rscc.data.synth.make_pair`), encoding
their two PNGs with our encoder (:func:`rscc.data.synth.encode_png`), and, as the baseline, the
same images saved by PIL's default PNG writer. Then the end-to-end :func:`make_synthetic`
(drawing, encoding, writing files, JSON) with one worker. CPU time (``time.process_time``) is
reported beside wall time because the machine may be shared: the target is 100 pairs per
CPU-second at 256 px.

    python benchmarks/synth.py                 # 300 pairs at 256 px
    python benchmarks/synth.py --pairs 1000 --size 128
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
import time
from pathlib import Path

from rscc.data.synth import encode_png, make_pair, make_synthetic


def clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    n, size = args.pairs, args.size
    make_pair(0, 0, size)  # warm-up: noise tiles, imports

    w, c = clocks()
    pairs = [make_pair(11, i, size, changed=i % 2 == 0) for i in range(n)]
    draw = [a - b for a, b in zip(clocks(), (w, c))]

    w, c = clocks()
    for p in pairs:
        encode_png(p.image_a), encode_png(p.image_b)
    ours = [a - b for a, b in zip(clocks(), (w, c))]

    from PIL import Image

    w, c = clocks()
    for p in pairs:
        for img in (p.image_a, p.image_b):
            Image.fromarray(img).save(io.BytesIO(), "PNG")
    pil = [a - b for a, b in zip(clocks(), (w, c))]

    with tempfile.TemporaryDirectory() as tmp:
        w, c = clocks()
        make_synthetic(Path(tmp) / "synthetic", n, size=size, seed=11, progress=False, workers=1)
        total = [a - b for a, b in zip(clocks(), (w, c))]

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{n} pairs at {size} px")
    print(f"{'stage':<34} {'ms/pair wall':>13} {'ms/pair CPU':>12}")
    for name, (wall, cpu) in [("draw (make_pair)", draw), ("encode 2 PNG (ours)", ours),
                              ("encode 2 PNG (PIL default, baseline)", pil), ("make_synthetic, 1 worker", total)]:
        print(f"{name:<34} {1000 * wall / n:>13.2f} {1000 * cpu / n:>12.2f}")
    print(f"ours / PIL encoding time: {ours[1] / pil[1]:.2f}")
    print(f"make_synthetic: {n / total[0]:.0f} pairs/s wall, {n / total[1]:.0f} pairs per CPU-second")


if __name__ == "__main__":
    main()
