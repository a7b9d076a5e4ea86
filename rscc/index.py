"""Gallery index: pair embeddings on disk and text → pair search (the retrieval half of RSICRC).

A gallery is a set of image pairs embedded once with a run's image tower (``vis_emb``, made unit
norm); a query sentence is embedded with the unimodal text tower and compared by inner product
(= cosine). An index directory holds::

    index.json                       ids, image paths, the model's identity, the list of shards
    embeddings-<token>.safetensors   unit-norm rows (float16 or float32), one shard per commit
    faiss/                           approximate FAISS indexes built on demand (a cache)

Rows are only ever appended: building again over the same folder embeds only pairs whose id is
not in the index yet, and an interrupted build keeps what it committed (every
``commit_every_s`` seconds). ``index.json`` is replaced atomically after the shard it names is on
disk, so a reader never sees a half-written index. An index remembers which model made it (a
hash of the weights file, the ``model`` section of the configuration and the vocabulary) and
refuses rows or queries from any other model: embeddings of two models live in different spaces.

Search backends: ``torch`` (exact; matrix multiply + top-k, chunked over the gallery; for
repeated single queries on a large gallery a first pass over 8-bit codes with a proven error
bound, then float32 scores of the rows it cannot rule out, so still exact),
``faiss-flat`` (exact, FAISS), ``faiss-ivf`` (inverted lists, approximate: ``nlist`` cells trained
on a sample, ``nprobe`` cells visited) and ``faiss-hnsw`` (graph, approximate, ``ef_search``). For
a float16 gallery the exact backends are exact over the stored float16 values.
"""
from __future__ import annotations

import json
import math
import time
import uuid
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rscc.data.images import PairImages
from rscc.embedder import (  # noqa: F401 - PairFiles, Embedder, ... are imported from here too
    MAX_QUERY_CHARS,
    Embedder,
    PairFiles,
    _as_dict,
    _load_embedder,
    discover_pairs,
    encode_query,
    model_identity,
)
from rscc.errors import ConfigError, DatasetError, RsccError
from rscc.exact_search import (  # noqa: F401 - int8_search and Int8Codes are imported from here too
    Int8Codes,
    exact_search,
    int8_matmul_available,
    int8_search,
)
from rscc.paths import atomic_replace, atomic_write, read_document

INDEX_FILE = "index.json"
FORMAT = "rscc-gallery-index"
VERSION = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}
BACKENDS = ("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")
PREFILTERS = ("auto", "int8", "none")  # the exact torch backend's first pass (GalleryIndex.search)
INT8_MIN_ROWS = 16_384  # below this a float scan is as fast as the 8-bit one


# ----------------------------------------------------------------------------- the index
class GalleryIndex:
    """Unit-norm pair embeddings with their ids and image paths, and search over them.

    Attributes: ``dir``, ``embeddings`` (N, d) in the stored dtype, ``ids``, ``paths_a``,
    ``paths_b`` (lists of str), ``model`` (the identity dict of the model that made them),
    ``dtype`` ("float16" | "float32"), ``dim``."""

    def __init__(self, directory: Path | None, meta: dict[str, Any], embeddings: torch.Tensor):
        self.dir = Path(directory) if directory is not None else None
        self.meta = meta
        self.embeddings = embeddings
        self._faiss: dict[tuple, Any] = {}
        self._int8: Int8Codes | None = None
        self._exact_calls = 0

    # ------------------------------------------------------------------ reading
    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        directory = Path(directory)
        meta = _read_meta(directory)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        rows = torch.empty((meta["count"], meta["dim"]), dtype=DTYPES[meta["dtype"]])
        start = 0
        for shard in meta["shards"]:  # one shard in memory at a time beside the result
            path = directory / shard["file"]
            try:
                part = load_file(str(path))["embeddings"]
            except (FileNotFoundError, SafetensorError, OSError, KeyError) as exc:
                raise RsccError(
                    f"{path}: embeddings shard listed in {INDEX_FILE} is missing or unreadable ({exc})") from None
            if part.shape != (shard["rows"], meta["dim"]):
                raise RsccError(
                    f"{path}: shape {tuple(part.shape)}, {INDEX_FILE} says ({shard['rows']}, {meta['dim']})")
            rows[start:start + shard["rows"]] = part
            start += shard["rows"]
        return cls(directory, meta, rows)

    @classmethod
    def from_embeddings(cls, embeddings: torch.Tensor, ids: Sequence[str] | None = None,
                        paths_a: Sequence[str] | None = None, paths_b: Sequence[str] | None = None,
                        model: dict[str, Any] | None = None, normalize: bool = True) -> GalleryIndex:
        """An in-memory index (nothing on disk) of rows (N, d) in their dtype (float16 or
        float32), for embeddings computed elsewhere (e.g. a test split). ``normalize`` makes the
        rows unit norm (a copy, made chunk by chunk); pass False for rows that already are."""
        n, d = embeddings.shape
        dtype = {v: k for k, v in DTYPES.items()}.get(embeddings.dtype)
        if dtype is None:
            raise ConfigError(f"embeddings must be float16 or float32, got {embeddings.dtype}")
        rows = embeddings
        if normalize:
            rows = torch.empty_like(embeddings)
            for start in range(0, n, 65_536):
                rows[start:start + 65_536] = F.normalize(embeddings[start:start + 65_536].float(), dim=1)
        meta = {"format": FORMAT, "version": VERSION, "uuid": uuid.uuid4().hex, "model": model or {"id": "in-memory"},
                "dim": d, "dtype": dtype, "count": n, "shards": [],
                "ids": list(ids) if ids is not None else [str(i) for i in range(n)],
                "paths_a": list(paths_a) if paths_a is not None else [""] * n,
                "paths_b": list(paths_b) if paths_b is not None else [""] * n}
        return cls(None, meta, rows)

    def __len__(self) -> int:
        return self.meta["count"]

    def __repr__(self) -> str:
        return (f"GalleryIndex({self.where!r}, {len(self)} pairs, d={self.dim}, {self.dtype}, "
                f"model {self.model['id'][:12]} {self.model.get('backbone', '')})")

    @property
    def where(self) -> str:
        """How messages name this index: its index.json, or "the in-memory index"."""
        return str(self.dir / INDEX_FILE) if self.dir is not None else "the in-memory index"

    ids = property(lambda self: self.meta["ids"])
    paths_a = property(lambda self: self.meta["paths_a"])
    paths_b = property(lambda self: self.meta["paths_b"])
    model = property(lambda self: self.meta["model"])
    dtype = property(lambda self: self.meta["dtype"])
    dim = property(lambda self: self.meta["dim"])

    # ------------------------------------------------------------------ searching
    def search(self, queries, k: int = 10, backend: str = "torch", *, normalize: bool = True,
               nlist: int | None = None, nprobe: int = 16, hnsw_m: int = 32,
               ef_search: int | None = None, chunk_rows: int = 65_536,
               prefilter: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``k`` gallery rows for each query (Q, d) (or one query (d,)).

        Returns (scores (Q, k) float32, indices (Q, k) int64), best first; scores are cosines
        when ``normalize`` (the default) unit-normalises the queries. ``k`` larger than the
        gallery is cut to its size. Approximate backends may return fewer than ``k`` rows: the
        missing ones have index -1 and score -inf. Options: ``nlist`` (faiss-ivf cells, default
        √N), ``nprobe`` (cells visited), ``hnsw_m`` and ``ef_search`` (faiss-hnsw).

        ``prefilter`` (backend ``torch``): ``"int8"`` runs the exact search in two passes over
        8-bit codes of the gallery (:func:`int8_search`; same result, half the bytes of float16
        read per query; the codes are made once, on first use, and kept);
        ``"none"`` scores the stored rows directly (:func:`exact_search`); ``"auto"`` uses int8
        from the second search of a gallery of at least 16,384 rows with at most 8 queries, so
        that a one-off search (``rscc search``) does not pay for the codes."""
        queries = torch.as_tensor(queries).float()
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise RsccError(f"queries of shape {tuple(queries.shape)} do not fit {self.where}: its embeddings are "
                            f"{self.dim}-dimensional (expected (Q, {self.dim}))")
        if not isinstance(k, int) or k < 1:
            raise RsccError(f"k must be a positive integer, got {k!r}")
        if backend not in BACKENDS:
            raise ConfigError(f"search backend '{backend}' does not exist; valid: {', '.join(BACKENDS)}")
        if normalize:
            queries = F.normalize(queries, dim=1)
        k = min(k, len(self))
        if backend == "torch":
            if prefilter not in PREFILTERS:
                raise ConfigError(f"prefilter '{prefilter}' does not exist; valid: {', '.join(PREFILTERS)}")
            self._exact_calls += 1
            if prefilter == "auto":
                prefilter = "int8" if (len(self) >= INT8_MIN_ROWS and queries.shape[0] <= 8 and int8_matmul_available()
                                       and (self._int8 is not None or self._exact_calls > 1)) else "none"
            if prefilter == "int8":
                return int8_search(self.int8_codes(), self.embeddings, queries, k)
            return exact_search(self.embeddings, queries, k, chunk_rows)
        index = self.faiss_index(backend, nlist=nlist, hnsw_m=hnsw_m)
        if backend == "faiss-ivf":
            index.nprobe = nprobe
        elif backend == "faiss-hnsw":
            index.hnsw.efSearch = max(ef_search or 64, k)
        scores, indices = index.search(queries.numpy(), k)
        return torch.from_numpy(scores).float(), torch.from_numpy(indices).long()

    def int8_codes(self) -> Int8Codes:
        """The 8-bit codes of the gallery for :func:`int8_search`, made on first use and kept."""
        if self._int8 is None:
            if not int8_matmul_available():
                raise ConfigError("this torch build has no CPU int8 matrix multiply (torch._int_mm): "
                                  "use prefilter='none'")
            self._int8 = Int8Codes.from_rows(self.embeddings)
        return self._int8

    def results(self, scores: torch.Tensor, indices: torch.Tensor) -> list[list[dict[str, Any]]]:
        """Search output as, per query, ``[{rank, id, score, path_a, path_b}, ...]`` (rank from 1)."""
        return [[{"rank": r + 1, "id": self.ids[i], "score": float(s), "path_a": self.paths_a[i],
                  "path_b": self.paths_b[i]} for r, (s, i) in enumerate(zip(row_s.tolist(), row_i.tolist())) if i >= 0]
                for row_s, row_i in zip(scores, indices)]

    # ------------------------------------------------------------------ FAISS
    def faiss_index(self, backend: str, nlist: int | None = None, hnsw_m: int = 32):
        """The FAISS index of ``backend`` over this gallery, built once per object. Trained
        indexes (ivf, hnsw) of an index on disk are also cached under ``faiss/`` for the next
        process."""
        try:
            import faiss
        except ImportError:
            raise ConfigError(
                f"backend '{backend}' needs FAISS: pip install faiss-cpu (or use --backend torch)") from None
        n = len(self)
        if backend == "faiss-ivf":
            nlist = nlist or max(1, min(round(math.sqrt(n)), n // 39))  # faiss wants >= 39 points a cell
            param = f"nlist{nlist}"
        else:
            param = f"m{hnsw_m}" if backend == "faiss-hnsw" else "flat"
        key = (backend, param)
        if key in self._faiss:
            return self._faiss[key]
        path = None
        if self.dir is not None and backend != "faiss-flat":
            path = self.dir / "faiss" / f"{backend}-{param}-{self.meta['uuid'][:8]}-{n}.faiss"
        if path is not None and path.is_file():
            index = faiss.read_index(str(path))
        else:
            index = self._build_faiss(faiss, backend, nlist, hnsw_m)
            if path is not None:
                try:
                    path.parent.mkdir(exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    faiss.write_index(index, str(tmp))
                    atomic_replace(tmp, path)
                except OSError as exc:
                    warnings.warn(f"could not cache the FAISS index in {path.parent} ({exc})", stacklevel=2)
        self._faiss[key] = index
        return index

    def _build_faiss(self, faiss, backend: str, nlist: int | None, hnsw_m: int):
        d, ip = self.dim, faiss.METRIC_INNER_PRODUCT
        half = self.dtype == "float16"  # keep float16 storage: exact over the stored values
        fp16 = faiss.ScalarQuantizer.QT_fp16
        if backend == "faiss-flat":
            index = faiss.IndexScalarQuantizer(d, fp16, ip) if half else faiss.IndexFlatIP(d)
        elif backend == "faiss-hnsw":
            index = faiss.IndexHNSWSQ(d, fp16, hnsw_m, ip) if half else faiss.IndexHNSWFlat(d, hnsw_m, ip)
        else:
            quantizer = faiss.IndexFlatIP(d)
            index = (faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, fp16, ip) if half
                     else faiss.IndexIVFFlat(quantizer, d, nlist, ip))
            index.cp.min_points_per_centroid = 1  # a small gallery gets few cells, without a warning
            sample = min(len(self), 64 * nlist)
            pick = torch.randperm(len(self), generator=torch.Generator().manual_seed(0))[:sample].sort().values
            index.train(self.embeddings[pick].float().numpy())
        for start in range(0, len(self), 65_536):
            index.add(self.embeddings[start:start + 65_536].float().numpy())
        return index


# ----------------------------------------------------------------------------- writing
def index_info(directory: str | Path) -> dict[str, Any]:
    """The contents of an index's ``index.json`` (count, dtype, dim, model, ids, paths, shards),
    without reading the embeddings."""
    return _read_meta(Path(directory))


def _read_meta(directory: Path) -> dict[str, Any]:
    path = directory / INDEX_FILE
    build = f"rscc index PAIRS_DIR --run RUN --out {directory}"
    meta = read_document(path, RsccError, missing=f"no gallery index here (build one with `{build}`)")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RsccError(f"{path}: not an rscc gallery index (field 'format' should be '{FORMAT}')")
    if meta.get("version") != VERSION:
        raise RsccError(f"{path}: index format version {meta.get('version')}, this rscc reads version {VERSION}")
    if meta.get("dtype") not in DTYPES:
        raise RsccError(f"{path}: field 'dtype' is {meta.get('dtype')!r}, expected one of {', '.join(DTYPES)}")
    return meta


class _Writer:
    """Appends shards to an index directory; each :meth:`commit` is atomic."""

    def __init__(self, directory: Path, meta: dict[str, Any]):
        self.dir, self.meta = directory, meta

    def commit(self, rows: torch.Tensor, pairs: Sequence[PairFiles]) -> None:
        from safetensors.torch import save_file

        if not pairs:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"embeddings-{uuid.uuid4().hex[:12]}.safetensors"
        tmp = self.dir / (name + ".tmp")
        save_file({"embeddings": rows.contiguous()}, str(tmp))
        atomic_replace(tmp, self.dir / name)
        meta = dict(self.meta)
        meta["shards"] = meta["shards"] + [{"file": name, "rows": len(pairs)}]
        meta["count"] += len(pairs)
        for field, values in (("ids", [p.id for p in pairs]), ("paths_a", [str(p.path_a) for p in pairs]),
                              ("paths_b", [str(p.path_b) for p in pairs])):
            meta[field] = meta[field] + values
        with atomic_write(self.dir / INDEX_FILE) as f:  # the commit point
            f.write(json.dumps(meta, indent=1))
        self.meta = meta


def build_index(source: str | Path, run_dir, out_dir: str | Path, split: str | None = None,
                batch_size: int = 32, dtype: str | None = None, progress: bool = True, which: str = "best",
                device: str = "auto", commit_every_s: float = 300.0) -> GalleryIndex:
    """Embed every pair of ``source`` not yet in the index at ``out_dir`` and append it.

    ``source``: a folder with ``A/`` and ``B/`` (matching file names) or a LEVIR-CC root (with
    ``split``, or all splits). ``run_dir``: the run whose image tower embeds the pairs (its
    ``which`` checkpoint), or an already loaded :class:`Embedder`. ``dtype``: storage precision,
    "float32" or "float16" (half the disk and memory); default: the existing index's, else
    float32. An index made by another model is refused with an RsccError. Work is committed
    every ``commit_every_s`` seconds, so an interrupted build resumes where it stopped."""
    out_dir = Path(out_dir)
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}")
    pairs = discover_pairs(source, split)
    embedder = Embedder.from_run(run_dir, which, device) if isinstance(run_dir, (str, Path)) else run_dir
    if (out_dir / INDEX_FILE).exists():
        meta = _read_meta(out_dir)
        if meta["model"]["id"] != embedder.identity["id"]:
            raise RsccError(
                f"{out_dir / INDEX_FILE}: this index holds embeddings of model {meta['model']['id'][:12]} "
                f"({meta['model'].get('run_dir', '?')}), not of model {embedder.identity['id'][:12]} "
                f"({embedder.identity.get('run_dir', '?')}); embeddings of different models cannot be mixed, "
                "write to another --out folder")
        if dtype is not None and dtype != meta["dtype"]:
            raise RsccError(f"{out_dir / INDEX_FILE}: this index stores {meta['dtype']}, not {dtype}; "
                            f"leave dtype unset or write to another --out folder")
    else:
        meta = {"format": FORMAT, "version": VERSION, "uuid": uuid.uuid4().hex, "model": embedder.identity,
                "dim": None, "dtype": dtype or "float32", "count": 0, "shards": [], "ids": [],
                "paths_a": [], "paths_b": [], "created": datetime.now(UTC).isoformat(timespec="seconds")}
    known = set(meta["ids"])
    new = [p for p in {p.id: p for p in pairs}.values() if p.id not in known]
    writer = _Writer(out_dir, meta)
    if new:
        _embed_into(writer, new, embedder, batch_size, DTYPES[meta["dtype"]], progress, commit_every_s)
    elif not (out_dir / INDEX_FILE).exists():  # cannot happen: discover_pairs never returns nothing
        raise DatasetError(f"{source}: no pair to index")
    return GalleryIndex.load(out_dir)


def _embed_into(writer: _Writer, pairs: list[PairFiles], embedder, batch_size: int, dtype: torch.dtype,
                progress: bool, commit_every_s: float) -> None:
    from tqdm.auto import tqdm

    images = PairImages([(p.path_a, p.path_b) for p in pairs], embedder.transform)
    loader = torch.utils.data.DataLoader(images, batch_size=batch_size)
    pending, done, last_commit = [], 0, time.monotonic()
    with tqdm(total=len(pairs), unit="pair", desc="embedding pairs", disable=not progress) as bar:
        for img_a, img_b in loader:
            rows = embedder.embed_pairs(img_a, img_b)  # (B, d) unit norm
            if writer.meta["dim"] is None:
                writer.meta["dim"] = rows.shape[1]
            elif rows.shape[1] != writer.meta["dim"]:
                raise RsccError(f"{writer.dir}: the model gives {rows.shape[1]}-d embeddings, the index holds "
                                f"{writer.meta['dim']}-d ones")
            pending.append(rows.to(dtype))
            bar.update(len(rows))
            if time.monotonic() - last_commit > commit_every_s:
                count = sum(len(r) for r in pending)
                writer.commit(torch.cat(pending), pairs[done:done + count])
                pending, done, last_commit = [], done + count, time.monotonic()
    if pending:
        writer.commit(torch.cat(pending), pairs[done:])


# ----------------------------------------------------------------------------- text search
def search_text(index_dir, query: str, run_dir=None, k: int = 10, backend: str = "torch",
                which: str | None = None, device: str = "auto", **options) -> list[dict[str, Any]]:
    """The ``k`` gallery pairs closest to a sentence, as ``[{rank, id, score, path_a, path_b}]``.

    ``index_dir``: an index folder or a loaded :class:`GalleryIndex`. ``run_dir``: the run whose
    text tower embeds the query (default: the run recorded in the index), or a loaded
    :class:`Embedder`; it must be the model that built the index. ``options`` go to
    :meth:`GalleryIndex.search` (``nprobe``, ...)."""
    index = index_dir if isinstance(index_dir, GalleryIndex) else GalleryIndex.load(index_dir)
    embedder = run_dir if run_dir is not None and not isinstance(run_dir, (str, Path)) else None
    if embedder is None:
        run = run_dir or index.model.get("run_dir")
        if run is None:
            raise RsccError(f"{index.where}: no run recorded; give the run directory (--run)")
        if not Path(run).is_dir():
            raise RsccError(f"{run}: run directory not found (recorded in {index.where}); give the "
                            "run that built the index with --run")
        embedder = Embedder.from_run(run, which or index.model.get("which", "best"), device)
    if embedder.identity["id"] != index.model["id"]:
        raise RsccError(f"{index.where}: the index was built by model {index.model['id'][:12]} "
                        f"({index.model.get('run_dir', '?')}), the query would be embedded by model "
                        f"{embedder.identity['id'][:12]} ({embedder.identity.get('run_dir', '?')}); "
                        "their embeddings are not comparable")
    query_emb = embedder.embed_text(query)
    scores, indices = index.search(query_emb[None], k, backend=backend, **options)
    return index.results(scores, indices)[0]
