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

import functools
import hashlib
import json
import math
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rscc.data.images import PairImages, folder_pairs
from rscc.data.levircc import CAPTIONS_FILE, SPLITS, load_pairs, tokenize
from rscc.errors import CheckpointError, ConfigError, DatasetError, RsccError
from rscc.paths import atomic_replace, atomic_write

INDEX_FILE = "index.json"
FORMAT = "rscc-gallery-index"
VERSION = 1
DTYPES = {"float16": torch.float16, "float32": torch.float32}
BACKENDS = ("torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")
PREFILTERS = ("auto", "int8", "none")  # the exact torch backend's first pass (GalleryIndex.search)
INT8_MIN_ROWS = 16_384  # below this a float scan is as fast as the 8-bit one
MAX_QUERY_CHARS = 100_000  # longer strings are refused before tokenising


# ----------------------------------------------------------------------------- pairs on disk
@dataclass(frozen=True)
class PairFiles:
    """One pair to embed: its id (the file name, e.g. ``test_000001.png``) and both images."""

    id: str
    path_a: Path
    path_b: Path


def discover_pairs(source: str | Path, split: str | None = None) -> list[PairFiles]:
    """The pairs of ``source``: a folder holding ``A/`` and ``B/`` with matching file names, or a
    LEVIR-CC root (holding ``LevirCCcaptions.json``), all splits or only ``split``.

    Ids are file names, so ``ROOT --split test`` and ``ROOT/images/test`` give the same ids."""
    source = Path(source)
    if not source.is_dir():
        raise DatasetError(f"{source}: not a folder (expected A/ and B/ with matching file names, or a LEVIR-CC root)")
    if (source / CAPTIONS_FILE).is_file():
        if split is not None and split not in SPLITS:
            raise ConfigError(f"split '{split}' does not exist; valid: {', '.join(SPLITS)}")
        records = load_pairs(source, splits=[split] if split else None)
        pairs = [PairFiles(p.filename, *(q.resolve() for q in p.image_paths(source))) for p in records]
        if not pairs:
            raise DatasetError(f"{source / CAPTIONS_FILE}: no pair in split '{split}'")
        return pairs
    if split is not None:
        raise ConfigError(f"{source}: --split applies to a LEVIR-CC root (holding {CAPTIONS_FILE}), "
                          "not to a folder of A/ and B/ images")
    dir_a, dir_b = source / "A", source / "B"
    if not (dir_a.is_dir() and dir_b.is_dir()):
        raise DatasetError(f"{source}: expected sub-folders A/ and B/ with matching file names, "
                           f"or a LEVIR-CC root holding {CAPTIONS_FILE}")
    return [PairFiles(a.name, a.resolve(), b.resolve()) for a, b in folder_pairs(source)]


# ----------------------------------------------------------------------------- the model side
def encode_query(query: str, vocab, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A search sentence as (input_ids (1, max_len), pad_mask (1, max_len)).

    Tokenised like the captions (lower case, no punctuation); unknown words become UNK. A query
    without words is an error; one longer than ``max_len - 2`` words keeps its first words, with
    a warning."""
    if not isinstance(query, str):
        raise RsccError(f"search query must be a string, got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise RsccError(f"search query is {len(query):,} characters long; at most {MAX_QUERY_CHARS:,} are accepted "
                        f"(and only the first {max_len - 2} words are used)")
    tokens = tokenize(query)
    if not tokens:
        raise RsccError(f"search query {query!r} has no words; write a sentence such as "
                        "'new houses along a curved road'")
    if len(tokens) > max_len - 2:
        warnings.warn(f"search query has {len(tokens)} words; only the first {max_len - 2} are used", stacklevel=3)
        tokens = tokens[: max_len - 2]
    if not any(t in vocab for t in tokens):
        warnings.warn(f"no word of the search query {query[:80]!r} is in the model's vocabulary: "
                      "the query is all UNK and its results are meaningless", stacklevel=3)
    ids, pad = vocab.encode(tokens, max_len)
    return torch.tensor([ids], dtype=torch.long), torch.tensor([pad], dtype=torch.bool)


class Embedder:
    """A loaded run seen from the index: image pairs and sentences → unit-norm embeddings.

    ``identity`` (a dict whose ``"id"`` is compared) says which model this is. Tests replace this
    class by any object with the same four members (``identity``, ``transform``,
    ``embed_pairs``, ``embed_text``)."""

    def __init__(self, model, config, vocab, identity: dict[str, Any]):
        self.model = model.eval()
        self.config = config
        self.vocab = vocab
        self.identity = identity
        self.transform = model.backbone.transform
        self.device = next(model.parameters()).device

    @classmethod
    def from_run(cls, run_dir: str | Path, which: str = "best", device: str = "auto") -> Embedder:
        """The run's model (``which`` checkpoint) with its identity; the last one loaded is cached."""
        return _load_embedder(Path(run_dir), which, device)

    @torch.inference_mode()
    def embed_pairs(self, img_a: torch.Tensor, img_b: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) × 2 -> (B, d)
        vis_emb, _ = self.model.encode_images(img_a.to(self.device), img_b.to(self.device))
        return F.normalize(vis_emb.float(), dim=-1).cpu()

    def embed_text(self, query: str) -> torch.Tensor:  # -> (d,)
        input_ids, pad_mask = encode_query(query, self.vocab, self.config.model.max_len)
        with torch.inference_mode():
            text_emb = self.model.encode_text(input_ids.to(self.device), pad_mask.to(self.device))
        return F.normalize(text_emb.float(), dim=-1)[0].cpu()


_EMBEDDERS: dict[tuple, Embedder] = {}  # notebooks call search_text repeatedly: load a run once


def _load_embedder(run_dir: Path, which: str, device: str = "auto") -> Embedder:
    from rscc.device import resolve_device
    from rscc.runs import find_weights, load_run

    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    weights = find_weights(run_dir, which)
    stat = weights.stat()
    key = (str(weights.resolve()), stat.st_size, stat.st_mtime_ns, str(resolve_device(device)))
    if key not in _EMBEDDERS:
        model, config, vocab = load_run(run_dir, which=which, device=resolve_device(device))
        identity = model_identity(weights, config, vocab)
        identity.update(run_dir=str(run_dir.resolve()), which=which)
        _EMBEDDERS.clear()  # one model in memory at a time (a paper model is ~1.4 GB)
        _EMBEDDERS[key] = Embedder(model, config, vocab, identity)
    return _EMBEDDERS[key]


def model_identity(weights_file: str | Path, config, vocab) -> dict[str, Any]:
    """``{"id": sha256 of (weights file, model configuration, vocabulary), ...}`` plus what a
    person needs to recognise the model. Moving or renaming the run keeps the id."""
    digest = hashlib.sha256()
    with open(weights_file, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    digest.update(json.dumps(_as_dict(config.model), sort_keys=True).encode())
    digest.update(json.dumps(vocab.word_to_id, sort_keys=True).encode())
    return {"id": digest.hexdigest(), "backbone": config.model.backbone, "d_model": config.model.d_model,
            "weights": str(Path(weights_file).resolve())}


def _as_dict(section) -> dict:
    import dataclasses

    return dataclasses.asdict(section) if dataclasses.is_dataclass(section) else dict(section)


# ----------------------------------------------------------------------------- exact search
def exact_search(gallery: torch.Tensor, queries: torch.Tensor, k: int,
                 chunk_rows: int = 65_536) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` inner products of ``queries`` (Q, d) against ``gallery`` (N, d).

    Returns (scores (Q, k) float32, indices (Q, k) int64), best first. The gallery is read in
    chunks of at most ``chunk_rows`` rows, fewer for many queries, so that the scores of a chunk
    and its float32 copy stay under 128 MB each.

    A float16 gallery is scored in float16 when there are few queries: the product is bound by
    memory, and a CPU multiplies a float16 matrix by a vector about twice as fast as a float32
    one, whereas converting the gallery to float32 costs more than the product. Every row whose
    float16 score lies within the float16 error of the k-th score is then rescored in float32,
    so the result is exact over the stored values. For many queries chunks are converted."""
    queries = queries.float()
    k = min(k, gallery.shape[0])
    chunk_rows = min(chunk_rows, max(1024, 2 ** 25 // queries.shape[0]))  # (Q, chunk) float32 scores
    if gallery.dtype != torch.float32 and queries.shape[0] > 8:
        chunk_rows = min(chunk_rows, max(1024, 2 ** 25 // gallery.shape[1]))  # float32 copy of a chunk
    if gallery.dtype == torch.float32 or queries.shape[0] > 8:
        scores, indices, _ = _chunked_topk(gallery, k, chunk_rows, lambda rows: queries @ rows.float().T)
        return scores, indices
    # |float16 score - exact score| <= (2^-11 query rounding + 2^-12 output rounding) * |q| for
    # unit rows, accumulation being float32; twice that, on both sides of the k-th score.
    margin = 4 * (2.0 ** -11 + 2.0 ** -12) * queries.norm(dim=1, keepdim=True)  # (Q, 1)
    half = queries.to(gallery.dtype)
    _, _, rows = _chunked_topk(gallery, k, chunk_rows, lambda r: (half @ r.T).float(), margin)
    exact = queries @ gallery[rows].float().T  # (Q, candidates)
    scores, order = exact.topk(k, dim=1)
    return scores, rows[order]


@dataclass(frozen=True)
class Int8Codes:
    """A gallery quantised to 8 bits per value, for the exact search's first pass.

    Row i is approximated by ``scales[i] * codes[i]`` (symmetric, one scale per row, |code| ≤ 127);
    ``residuals[i]`` is ‖x_i − scales[i]·codes[i]‖ and ``norms[i]`` is ‖scales[i]·codes[i]‖, both
    measured on the stored rows and rounded up, so that every approximate score comes with a bound
    on its error (see :func:`int8_search`). The codes take a quarter of float32 storage."""

    codes: torch.Tensor      # (N, d) int8
    scales: torch.Tensor     # (N,) float32
    residuals: torch.Tensor  # (N,) float32
    norms: torch.Tensor      # (N,) float32

    @classmethod
    def from_rows(cls, rows: torch.Tensor, chunk_rows: int = 512) -> Int8Codes:
        # small chunks stay in cache: several times faster than 65k-row chunks (benchmarks/RESULTS.md)
        n, d = rows.shape
        codes = torch.empty((n, d), dtype=torch.int8)
        scales, residuals, norms = (torch.empty(n) for _ in range(3))
        for start in range(0, n, chunk_rows):
            x = rows[start:start + chunk_rows].float()
            scale = (x.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
            code = torch.round(x / scale[:, None]).clamp_(-127, 127)
            approx = code * scale[:, None]
            stop = start + len(x)
            codes[start:stop], scales[start:stop] = code.to(torch.int8), scale
            # norms are computed in float32: round them up by more than their relative error
            residuals[start:stop] = (x - approx).norm(dim=1) * (1 + 1e-5)
            norms[start:stop] = approx.norm(dim=1) * (1 + 1e-5)
        return cls(codes, scales, residuals, norms)


def int8_search(codes: Int8Codes, gallery: torch.Tensor, queries: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` inner products of ``queries`` (Q, d) against ``gallery`` (N, d), found in
    two passes: an 8-bit scan of every row, then float32 scores of the few rows it cannot rule out.

    The queries are quantised like the rows (q ≈ t·c_q) and each row's approximate score
    t·s_i·(c_q · c_i) is an exact integer product (``torch._int_mm``, int32 accumulation). Its
    distance to the true q · x_i is at most ‖q‖·‖x_i − x̂_i‖ + ‖q − t·c_q‖·‖x̂_i‖ (Cauchy–Schwarz
    on the two rounding errors), plus d·2⁻²³·‖q‖ for float32 arithmetic. A row whose upper bound
    is below the k-th best lower bound cannot be in the top k; every other row is scored in
    float32 from the stored values, as :func:`exact_search` scores them. On random unit vectors at
    d = 2048 the bound is ≈ 0.018 and a few hundred rows of 100k are rescored."""
    queries = queries.float()
    k = min(k, gallery.shape[0])
    q_norm = queries.norm(dim=1)
    q_scale = (queries.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q_codes = torch.round(queries / q_scale[:, None]).clamp_(-127, 127)
    q_error = (queries - q_codes * q_scale[:, None]).norm(dim=1) * (1 + 1e-5)
    products = torch._int_mm(codes.codes, q_codes.to(torch.int8).T.contiguous())  # (N, Q) int32, exact
    approx = products.float() * codes.scales[:, None] * q_scale[None, :]
    arithmetic = queries.shape[1] * 2.0 ** -23 * (1 + q_norm)
    bound = codes.residuals[:, None] * q_norm[None, :] + codes.norms[:, None] * q_error[None, :] + arithmetic[None, :]
    kth_lower = (approx - bound).topk(k, dim=0).values[-1]  # (Q,)
    rows = (approx + bound >= kth_lower[None, :]).any(dim=1).nonzero().flatten()
    exact = queries @ gallery[rows].float().T  # (Q, candidates)
    scores, order = exact.topk(k, dim=1)
    return scores, rows[order]


@functools.cache
def int8_matmul_available() -> bool:
    """Whether this torch multiplies int8 matrices on the CPU (``torch._int_mm``)."""
    try:
        torch._int_mm(torch.ones((1, 8), dtype=torch.int8), torch.ones((8, 1), dtype=torch.int8))
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def _chunked_topk(gallery, k, chunk_rows, score, margin=None):
    """Running top-k of ``score(rows)`` (Q, c) over gallery chunks; with ``margin`` (Q, 1) also
    the rows scoring within ``margin`` of the final k-th score (a superset: the k-th only rises)."""
    best_s = best_i = None
    candidates = []
    for start in range(0, gallery.shape[0], chunk_rows):
        s = score(gallery[start:start + chunk_rows])  # (Q, c) float32
        top_s, top_i = s.topk(min(k, s.shape[1]), dim=1)
        if best_s is not None:
            top_s, top_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i + start], 1)
            top_s, order = top_s.topk(min(k, top_s.shape[1]), dim=1)
            top_i = top_i.gather(1, order)
        best_s, best_i = top_s, top_i
        if margin is not None:
            candidates.append((s >= best_s[:, -1:] - margin).any(0).nonzero().flatten() + start)
    rows = torch.cat(candidates) if margin is not None else None
    return best_s, best_i, rows


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
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise RsccError(f"{path}: no gallery index here (build one with `rscc index PAIRS_DIR --run RUN --out "
                        f"{directory}`)") from None
    except json.JSONDecodeError as exc:
        raise RsccError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
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
