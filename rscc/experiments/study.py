"""Shared steps of the study notebooks: the dataset of a profile, trainings that are reused when
complete, and the collection of every run's metrics."""
from __future__ import annotations

from pathlib import Path

from rscc.experiments.profiles import Profile
from rscc.paths import cache_dir


def synthetic_root(pairs: int, size: int, seed: int = 0) -> Path:
    """Where the synthetic dataset of these parameters lives (shared with the trainer)."""
    return cache_dir() / f"synthetic-{pairs}-{size}-{seed}"


def dataset_root(profile: Profile, progress: bool = True) -> Path:
    """The profile's dataset: LEVIR-CC when given, else the synthetic set (generated if missing)."""
    if profile.data:
        return Path(profile.data)
    from rscc.data.synth import ensure_synthetic

    return ensure_synthetic(synthetic_root(profile.synth_pairs, profile.synth_size), profile.synth_pairs,
                            size=profile.synth_size, seed=0)
