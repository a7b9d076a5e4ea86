"""Retrieval metrics: the authors' text → pair protocol and the standard cross-modal one.

Both rank by cosine similarity (inner product of L2-normalised embeddings, as the authors'
``faiss.IndexFlatIP`` on normalised vectors). All rates are percentages (×100).

**Authors' protocol** (:func:`authors_retrieval`, METHOD §6.3). One query per pair, its first
caption; the gallery is the pairs. The relevant set of query i is every pair with the same
label (label −1 = no change, so a no-change query has every no-change pair relevant; a changed
pair's label is its own id) together with every pair whose first-caption sentence embedding has
inner product ≥ θ with the query's. P@k = hits/k, R@k = hits/|relevant| (not a hit rate, so it
stays small when a query has hundreds of relevant pairs), MRR@k = 1/rank of the first hit in the
top k (0 when none). Ties in the ranking go to the lower gallery index, like faiss.

**Standard cross-modal protocol** (:func:`cross_modal_retrieval`), as image–text retrieval is
usually reported: hit rate R@k (a correct item in the top k), median and mean rank of the first
correct item, and mAP over all correct items, in both directions. A text query's correct pairs are
its own pair plus, optionally, ``duplicates`` (false negatives: pairs with an identical or
near-identical caption, see :func:`caption_duplicates`); a pair query's correct texts are its own
captions plus the texts that name it as a duplicate. Text → pair uses every caption as a query by
default (``text_queries`` picks a subset, e.g. first captions only with :func:`first_caption_index`);
pair → text ranks all captions. Ties are ranked pessimistically: an incorrect item with the same
score as a correct one is placed first. Chance level is reported beside the hit rates: the
expected R@k of a random ranking, 1 − C(G−r, k)/C(G, k) for r correct items in a gallery of G,
averaged over queries — k/N for text → pair when every caption has one correct pair.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rscc.metrics.captioning import normalise_tokens

AUTHORS_KS = (1, 3, 5, 10)
CROSS_MODAL_KS = (1, 5, 10)

_CHUNK = 1024  # queries ranked at once


def _cosine(queries: torch.Tensor, gallery: torch.Tensor) -> torch.Tensor:
    """(Q, G) cosine similarities of (Q, d) queries and (G, d) gallery items."""
    return F.normalize(queries.float(), dim=1) @ F.normalize(gallery.float(), dim=1).T


def authors_retrieval(pair_emb: torch.Tensor, query_emb: torch.Tensor, labels: torch.Tensor,
                      caption_emb: torch.Tensor | None = None, theta: float = 1.0,
                      ks: Sequence[int] = AUTHORS_KS, changed_only: bool = False) -> dict:
    """Text → pair retrieval under the authors' protocol (METHOD §6.3); P@k, R@k, MRR@k in percent.

    pair_emb (N, d): one embedding per pair (the gallery). query_emb (N, d): the embedding of
    each pair's first caption (query i belongs to pair i). labels (N,): −1 for a no-change pair,
    else the pair's own id. caption_emb (N, e): unit-norm sentence embeddings of the first
    captions (the false-negative test e_i · e_j ≥ θ, computed as given, without renormalising);
    None uses labels only. ``changed_only`` keeps the pairs with label ≠ −1, as queries and
    gallery.
    """
    labels = torch.as_tensor(labels)
    n = len(labels)
    if pair_emb.shape[0] != n or query_emb.shape[0] != n or (caption_emb is not None and caption_emb.shape[0] != n):
        raise ValueError(f"authors_retrieval needs one pair, query and caption embedding per label ({n}); got "
                         f"{pair_emb.shape[0]}, {query_emb.shape[0]}, "
                         f"{None if caption_emb is None else caption_emb.shape[0]}")
    if changed_only:
        keep = labels != -1
        pair_emb, query_emb, labels = pair_emb[keep], query_emb[keep], labels[keep]
        caption_emb = caption_emb[keep] if caption_emb is not None else None
        n = len(labels)
    ks = sorted(ks)
    top = min(max(ks), n)
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("P", "R", "MRR")}
    for start in range(0, n, _CHUNK):
        rows = slice(start, min(start + _CHUNK, n))
        scores = _cosine(query_emb[rows], pair_emb)                              # (q, N)
        relevant = labels[rows, None] == labels[None, :]                         # (q, N)
        if caption_emb is not None:
            relevant |= (caption_emb[rows].float() @ caption_emb.float().T) >= theta
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :top]
        hits = relevant.gather(1, order).float()                                 # (q, top) by rank
        n_relevant = relevant.sum(1).float()
        for k in ks:
            in_k = hits[:, :k]
            first = torch.where(in_k.any(1), 1.0 / (in_k.argmax(1) + 1).float(), torch.zeros(()))
            sums[f"P@{k}"] += (in_k.sum(1) / k).sum().item()
            sums[f"R@{k}"] += (in_k.sum(1) / n_relevant).sum().item()
            sums[f"MRR@{k}"] += first.sum().item()
    result = {name: 100 * total / n for name, total in sums.items()}
    result.update(n_queries=n, theta=theta, changed_only=changed_only)
    return result


def _ranking_metrics(scores: torch.Tensor, correct: torch.Tensor, ks: Sequence[int]) -> dict:
    """Hit rate, ranks and mAP of queries (Q, G) scored against a gallery; `correct` (Q, G) bool."""
    n_queries, n_gallery = scores.shape
    if (correct.sum(1) == 0).any():
        raise ValueError("every query needs at least one correct gallery item")
    first_ranks, average_precisions, chance = [], [], {k: 0.0 for k in ks}
    for start in range(0, n_queries, _CHUNK):
        s, c = scores[start:start + _CHUNK], correct[start:start + _CHUNK]
        # pessimistic ties: incorrect items first among equal scores (two stable sorts)
        by_correct = torch.sort(c.to(torch.uint8), dim=1, stable=True).indices
        by_score = torch.sort(s.gather(1, by_correct), dim=1, descending=True, stable=True).indices
        ranked = c.gather(1, by_correct.gather(1, by_score)).float()              # (q, G) 1 = correct
        positions = torch.arange(1, n_gallery + 1, dtype=torch.float32)
        first_ranks.append(ranked.argmax(1) + 1)
        precision_at_hits = ranked.cumsum(1) / positions * ranked
        average_precisions.append(precision_at_hits.sum(1) / ranked.sum(1))
        n_correct = c.sum(1).tolist()
        for k in ks:
            chance[k] += sum(_chance_hit(n_gallery, r, k) for r in n_correct)
    first = torch.cat(first_ranks).float()
    result = {f"R@{k}": 100 * (first <= k).float().mean().item() for k in ks}
    result["median_rank"] = first.quantile(0.5).item()  # the mid-point of an even count
    result["mean_rank"] = first.mean().item()
    result["mAP"] = 100 * torch.cat(average_precisions).mean().item()
    result.update({f"chance_R@{k}": 100 * chance[k] / n_queries for k in ks})
    result.update(n_queries=n_queries, n_gallery=n_gallery)
    return result


def _chance_hit(gallery: int, correct: int, k: int) -> float:
    """P(at least one of `correct` items in the top k of a random ranking of `gallery` items)."""
    if k >= gallery or correct > gallery - k:
        return 1.0
    miss = math.lgamma(gallery - correct + 1) - math.lgamma(gallery - correct - k + 1) \
        - math.lgamma(gallery + 1) + math.lgamma(gallery - k + 1)
    return 1.0 - math.exp(miss)


def cross_modal_retrieval(pair_emb: torch.Tensor, text_emb: torch.Tensor, text_to_pair: torch.Tensor,
                          duplicates: torch.Tensor | None = None, ks: Sequence[int] = CROSS_MODAL_KS,
                          text_queries: torch.Tensor | None = None) -> dict:
    """Standard retrieval metrics in both directions (percent; ranks are 1-based).

    pair_emb (N, d), text_emb (M, d), text_to_pair (M,) long: the pair each caption describes.
    duplicates (M, N) bool or None: extra correct pairs of each caption (false negatives).
    text_queries (Q,) long or None: the captions used as text → pair queries (default: all;
    :func:`first_caption_index` gives one per pair). Pair → text always ranks all M captions.

    Returns ``{"text_to_pair": {"R@1", "R@5", "R@10", "median_rank", "mean_rank", "mAP",
    "chance_R@k", "n_queries", "n_gallery"}, "pair_to_text": {…}}``.
    """
    n_pairs, n_texts = pair_emb.shape[0], text_emb.shape[0]
    text_to_pair = torch.as_tensor(text_to_pair, dtype=torch.long)
    if text_to_pair.shape != (n_texts,):
        raise ValueError(f"text_to_pair must have one entry per caption ({n_texts}), got {tuple(text_to_pair.shape)}")
    correct = F.one_hot(text_to_pair, n_pairs).bool()                             # (M, N)
    if duplicates is not None:
        if duplicates.shape != (n_texts, n_pairs):
            raise ValueError(f"duplicates must be (M, N) = {(n_texts, n_pairs)}, got {tuple(duplicates.shape)}")
        correct |= duplicates.bool()
    scores = _cosine(text_emb, pair_emb)                                          # (M, N)
    queries = torch.arange(n_texts) if text_queries is None else torch.as_tensor(text_queries, dtype=torch.long)
    return {"text_to_pair": _ranking_metrics(scores[queries], correct[queries], ks),
            "pair_to_text": _ranking_metrics(scores.T, correct.T, ks)}


def first_caption_index(text_to_pair: torch.Tensor) -> torch.Tensor:
    """(N,) index of each pair's first caption in a caption list ordered as `text_to_pair`."""
    text_to_pair = torch.as_tensor(text_to_pair, dtype=torch.long)
    first = torch.full((int(text_to_pair.max()) + 1,), -1, dtype=torch.long)
    first.scatter_reduce_(0, text_to_pair, torch.arange(len(text_to_pair)), reduce="amin", include_self=False)
    return first


def caption_duplicates(captions: Sequence[str], text_to_pair: torch.Tensor,
                       caption_emb: torch.Tensor | None = None, theta: float | None = None) -> torch.Tensor:
    """(M, N) bool: caption m also describes pair n (a false negative for retrieval).

    True when caption m equals one of pair n's captions in `tokens` form (lower case, no
    punctuation), or — with `caption_emb` (M, e) and `theta` — when its embedding's inner product
    with one of pair n's caption embeddings is ≥ θ. Every caption is a duplicate of its own pair.
    """
    text_to_pair = torch.as_tensor(text_to_pair, dtype=torch.long)
    n_pairs = int(text_to_pair.max()) + 1
    owners: dict[str, set[int]] = {}
    normalised = [normalise_tokens(c) for c in captions]
    for caption, pair in zip(normalised, text_to_pair.tolist()):
        owners.setdefault(caption, set()).add(pair)
    result = torch.zeros(len(captions), n_pairs, dtype=torch.bool)
    for m, caption in enumerate(normalised):
        result[m, list(owners[caption])] = True
    if caption_emb is not None:
        if theta is None:
            raise ValueError("caption_duplicates needs theta with caption_emb")
        membership = F.one_hot(text_to_pair, n_pairs).float()                    # (M, N)
        emb = caption_emb.float()
        for start in range(0, len(captions), _CHUNK):
            close = (emb[start:start + _CHUNK] @ emb.T >= theta).float()         # (c, M)
            result[start:start + _CHUNK] |= (close @ membership) > 0
    return result


__all__ = ["authors_retrieval", "cross_modal_retrieval", "first_caption_index", "caption_duplicates",
           "AUTHORS_KS", "CROSS_MODAL_KS"]
