"""Figures of the project (matplotlib)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence


def plot_pairs(root: str | Path, ids: Sequence[int | str], columns: int = 2, caption: int | None = 0,
               out: str | Path | None = None, panel: float = 2.2):
    """A grid of bi-temporal pairs of the dataset at ``root``: A | B side by side, with a caption.

    ``ids`` are imgids (int) or file names (``"train_000016.png"``); ``caption`` is which of the
    five captions to print (None: none); ``columns`` pairs per row. Returns the matplotlib
    figure, also saved to ``out`` when given."""
    import matplotlib.pyplot as plt
    import numpy as np

    from rscc.data.levircc import load_pair_images, load_pairs

    pairs = load_pairs(root)
    by_id = {p.imgid: p for p in pairs} | {p.filename: p for p in pairs}
    missing = [i for i in ids if i not in by_id]
    if missing:
        from rscc.errors import DatasetError

        raise DatasetError(f"{root}: no pair with id {missing[0]!r} (ids are imgids or file names)")
    chosen = [by_id[i] for i in ids]
    rows = (len(chosen) + columns - 1) // columns
    text_height = 0.45 if caption is not None else 0.1
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 2.1 * panel, rows * (panel + text_height + 0.25)), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, pair in enumerate(chosen):
        img_a, img_b = (np.asarray(img) for img in load_pair_images(pair, root))
        gap = np.full((img_a.shape[0], max(2, img_a.shape[1] // 32), 3), 255, np.uint8)
        ax = axes.ravel()[k]
        ax.imshow(np.concatenate([img_a, gap, img_b], 1))
        ax.set_title(f"{pair.filename}   A | B", fontsize=7)
        if caption is not None:
            text = "\n".join(textwrap.wrap(" ".join(pair.tokens[caption]), width=int(22 * panel)))
            ax.text(0.5, -0.03, text, transform=ax.transAxes, ha="center", va="top", fontsize=7.5)
    fig.tight_layout()
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig


def synthetic_examples(out: str | Path | None = None, seed: int = 0, changed: int = 5, unchanged: int = 1):
    """The figure of synthetic pairs (``figures/synthetic_examples.png``): the first ``changed``
    changed and ``unchanged`` unchanged pairs of a small 256 px synthetic set, first captions."""
    import tempfile

    from rscc.data.levircc import load_pairs
    from rscc.data.synth import make_synthetic
    from rscc.paths import REPO_ROOT

    out = REPO_ROOT / "figures" / "synthetic_examples.png" if out is None else out
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "synthetic", 40, size=256, seed=seed, progress=False)
        pairs = load_pairs(root)
        ids = [p.imgid for p in pairs if p.changed][:changed] + [p.imgid for p in pairs if not p.changed][:unchanged]
        return plot_pairs(root, ids, out=out)
