"""Moved: run directories are :mod:`rscc.runs`, device resolution is :mod:`rscc.device`.

Kept only while ``rscc/train.py`` and ``rscc/experiments/study.py`` still import from here."""
from rscc.device import resolve_device  # noqa: F401
from rscc.runs import CHECKPOINTS, WEIGHTS_FILE, checkpoint_dir, find_weights, load_run  # noqa: F401
