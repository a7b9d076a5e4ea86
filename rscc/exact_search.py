"""Exact top-k search over a gallery of unit-norm rows (the ``torch`` backend of rscc.index).

:func:`exact_search` is a chunked matrix multiply + top-k. :func:`int8_search` is exact too: a
first pass over 8-bit codes of the rows (:class:`Int8Codes`, scanned with ``torch._int_mm``) whose
error is bounded (Cauchy-Schwarz on each row's quantisation residual), then float32 scores of the
rows that bound cannot rule out; it pays off for repeated single queries on large galleries.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


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
