"""Where a run's data is: ``data.root``, or the synthetic LEVIR-CC set its data section describes."""
from __future__ import annotations

from pathlib import Path

from rscc.config import DataConfig


def configured_root(data: DataConfig, generate: bool = True, progress: bool = True, workers: int = 1) -> Path:
    """``data.root``, or the synthetic dataset of ``data`` (``synth_*`` fields), generated once
    into the cache when ``generate`` (in a DDP run only rank 0 generates; the others wait), by
    ``workers`` processes (the same bytes for any number)."""
    if data.root:
        return Path(data.root).expanduser()
    from rscc.data.synth import default_root, ensure_synthetic

    root = default_root(data.synth_pairs, data.synth_size, data.synth_seed, data.synth_stock_share)
    if generate:
        ensure_synthetic(root, data.synth_pairs, size=data.synth_size, seed=data.synth_seed, progress=progress,
                         workers=workers, stock_share=data.synth_stock_share)
    return root
