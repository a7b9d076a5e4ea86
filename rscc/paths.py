"""Where things live: the repository, the read-only `../shared` folder, caches."""
from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path``; on a clean exit flush, fsync and rename it over
    ``path`` (then fsync the folder), so readers see the old file or the new one, never half of
    one. On an error the temporary file is removed and ``path`` is untouched.

    ``mode`` is ``"w"`` (text, UTF-8 unless ``encoding`` is given) or ``"wb"``."""
    path = Path(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync(path.parent)


def atomic_replace(tmp: str | Path, path: str | Path) -> None:
    """Move a finished temporary file or folder ``tmp`` onto ``path`` (fsync, rename, fsync the
    folder): for writers that cannot go through :func:`atomic_write` (a library writing a file)."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_file():
        fsync(tmp)
    os.replace(tmp, path)
    fsync(path.parent)
