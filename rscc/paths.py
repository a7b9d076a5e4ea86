"""Where things live: the repository, the read-only `../shared` folder, caches."""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_dir() -> Path | None:
    """The read-only `shared/` folder beside the checkout (override: ``RSCC_SHARED``).

    Returns None when it is absent (a user's clone has none)."""
    path = Path(os.environ.get("RSCC_SHARED", REPO_ROOT.parent / "shared"))
    return path if path.is_dir() else None


def cache_dir() -> Path:
    """Disk cache for sentence embeddings and backbone features (override: ``RSCC_CACHE``)."""
    path = Path(os.environ.get("RSCC_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fsync(path: str | Path) -> None:
    """Flush a file or a folder to disk (atomic writes: write, fsync, rename, fsync the folder)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
