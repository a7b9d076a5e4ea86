"""Checks before training: the configuration, the run directory, the disk, the dataset, a resume's configuration.

Every check raises an :class:`~rscc.errors.RsccError` naming the field or file, before any step
is taken (so a failed start costs seconds, not an epoch).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from torch import nn

from rscc import paths
from rscc.config import RESULT_NEUTRAL, RunConfig
from rscc.data.levircc import Pair, load_pairs
from rscc.errors import CheckpointError, ConfigError, DatasetError, RsccError
from rscc.runs import checkpoint_dir
from rscc.training.distributed import Processes
from rscc.training.validation import SELECT_BEST

# train.epochs may grow on resume: the run is extended (check_resumed_config; the schedule in rscc.training.schedule)
FULL_IMAGE_CHECK_PAIRS = 300  # datasets up to this size get their images decoded by the data check


def check_config(config: RunConfig, procs: Processes) -> None:
    t = config.train
    if t.select_best not in SELECT_BEST:
        raise ConfigError(f"train.select_best '{t.select_best}' is not one of {', '.join(SELECT_BEST)}")
    if t.batch_size < 2 and config.loss.lam != 0:
        raise ConfigError(f"train.batch_size {t.batch_size} leaves the contrastive loss without negatives; "
                          "use a batch of at least 2 (the authors use 4)")
    if t.epochs < 1 or (t.max_steps is not None and t.max_steps < 1):
        raise ConfigError(f"train.epochs ({t.epochs}) and train.max_steps ({t.max_steps}) must be at least 1")
    if t.checkpoint_every is not None and t.checkpoint_every < 1:
        raise ConfigError(f"train.checkpoint_every must be a number of steps >= 1 or null, got {t.checkpoint_every}")
    if t.batch_size % procs.world:
        raise ConfigError(f"train.batch_size {t.batch_size} (the global batch) must be a multiple of the "
                          f"number of processes {procs.world}")


def prepare_run_dir(out_dir: Path, resume: bool) -> Path | None:
    """Create the run directory (checking that it is writable); the ``last`` checkpoint to resume
    from, or None. A directory holding a run is never overwritten without ``resume``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RsccError(f"{out_dir}: the output directory is not writable ({exc.strerror or exc})") from None
    last = checkpoint_dir(out_dir, "last")
    if not resume and (last is not None or checkpoint_dir(out_dir, "best") is not None):
        raise CheckpointError(f"{out_dir}: already holds a training run; pass --resume (resume=True) to continue "
                              "it, or choose another output directory")
    return last


def check_free_space(out_dir: Path, model: nn.Module, trainable: list[nn.Parameter],
                     cache_bytes: int = 0) -> int:
    """Raise before training when the disk cannot hold the checkpoints (and the feature cache)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    optimiser = sum(2 * p.numel() * 4 for p in trainable)
    checkpoint = weights + optimiser + 2**20
    need = 3 * checkpoint  # last, best and the copy being written
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise RsccError(f"{out_dir}: only {free / 1e9:.2f} GB free on this disk; a run needs about "
                        f"{need / 1e9:.2f} GB (checkpoints of {checkpoint / 1e9:.2f} GB: last, best and one being "
                        "written); free some space or choose another --out")
    if cache_bytes:
        cache = paths.cache_dir()
        free = shutil.disk_usage(cache).free
        if free < cache_bytes * 1.1:
            raise RsccError(f"{cache}: only {free / 1e9:.2f} GB free; the backbone feature cache needs about "
                            f"{cache_bytes / 1e9:.2f} GB (set RSCC_CACHE elsewhere, or train.cache_features=false)")
    return checkpoint


def check_resumed_config(config: RunConfig, saved: RunConfig, where: Path) -> None:
    """Refuse a resume that would compute something else; ``train.epochs`` may only grow (an extended run)."""
    new, old = config.to_dict(), saved.to_dict()
    changed = [f"{s}.{k}: {old[s].get(k)!r} -> {v!r}" for s in ("model", "data", "loss", "train")
               for k, v in new[s].items() if old[s].get(k) != v and f"{s}.{k}" not in RESULT_NEUTRAL
               and not (f"{s}.{k}" == "train.epochs" and v > old[s][k])]
    if changed:
        raise CheckpointError(f"{where}: the configuration differs from the run being resumed ({'; '.join(changed)}); "
                              "a resumed run must compute the same thing")


def check_dataset(root: Path) -> list[Pair]:
    """Run the data check (images decoded too for small datasets) and read the pairs; a
    DatasetError names the first problems."""
    from rscc.data.check import validate_dataset

    problems, _ = validate_dataset(root, images=False, with_summary=True)
    pairs = load_pairs(root) if not problems else []
    if pairs and len(pairs) <= FULL_IMAGE_CHECK_PAIRS:
        problems, _ = validate_dataset(root, images=True, with_summary=True)
    if problems:
        shown = "; ".join(f"{p.path}: {p.reason}" for p in problems[:3])
        raise DatasetError(f"{root}: the dataset check found {len(problems)} problem(s) "
                           f"(`rscc data check {root}` lists them all), first: {shown}")
    return pairs
