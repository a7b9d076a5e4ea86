"""Where things live: the repository, the read-only `../shared` folder, caches."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import yaml

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


def read_document(path: str | Path, error: type[Exception], fmt: str = "json", missing: str = "file not found",
                  what: str = ""):
    """The parsed contents of the JSON (``fmt="json"``) or YAML (``"yaml"``) file at ``path``.

    Every way reading it can fail raises ``error`` with one line naming the file: ``missing`` when it
    does not exist, not UTF-8, or not valid JSON/YAML (with the line). ``what`` names the document
    in those messages (``"vocabulary"``: "vocabulary is not valid JSON"). The caller checks the
    shape of what it gets."""
    path = Path(path)
    subject = f"{what} is " if what else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: {subject}not a UTF-8 text file") from None
    if fmt == "yaml":
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise error(f"{path}: {subject}not valid YAML ({getattr(exc, 'problem', None) or exc}{where})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {subject}not valid JSON ({exc.msg} at line {exc.lineno})") from None
