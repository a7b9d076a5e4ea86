"""Figures of the study notebooks that show measured uncertainty (notebook 04)."""
from __future__ import annotations

import math
from collections.abc import Sequence


def plot_effects(effects, by: str, metrics: Sequence[tuple[str, str]], baseline: str = "none",
                 title: str | None = None):
    """One panel per metric: each setting's difference from ``baseline`` (a dot) with its 95 %
    intervals over seeds (thick bar) and over test pairs (thin bar, where measured), and the zero
    line. ``effects``: the long table of :func:`rscc.experiments.compare.effects`; ``metrics``:
    (metric, panel title) pairs. Returns the figure."""
    import matplotlib.pyplot as plt

    settings = list(dict.fromkeys(effects[by]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 2.0 + 0.6 * len(settings)), squeeze=False)
    for ax, (metric, panel) in zip(axes[0], metrics):
        rows = {row[by]: row for row in effects[effects.metric == metric].to_dict("records")}
        for k, setting in enumerate(settings):
            row, y = rows[setting], len(settings) - 1 - k
            ax.plot((row["seeds low"], row["seeds high"]), (y + 0.08,) * 2, color="C0", lw=5, solid_capstyle="butt",
                    label="95 % interval over seeds" if k == 0 else None)
            if not math.isnan(row.get("pairs low", math.nan)):
                ax.plot((row["pairs low"], row["pairs high"]), (y - 0.08,) * 2, color="C1", lw=1.5,
                        label="95 % interval over test pairs" if k == 0 else None)
            ax.plot(row["difference"], y, "o", color="black", zorder=3)
        ax.axvline(0, color="grey", ls="--", lw=1)
        ax.set_yticks(range(len(settings)), settings[::-1])
        ax.set_ylim(-0.6, len(settings) - 0.4)
        ax.set(title=panel, xlabel=f"difference from {baseline}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    return fig
