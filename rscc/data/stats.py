"""How often captions recur in a LEVIR-CC dataset, and the false negatives that puts in a batch.

The paper's false-negative handling (FNE/FNA) exists because different pairs are described by
the same sentence. Two groups of figures measure how much that happens.

Recurrence, over the *changed* pairs of a split (captions compared as their ``tokens`` joined by
spaces, i.e. lower case without punctuation):

``first_caption_recurs``
    share of changed pairs whose first caption is also the first caption of another changed pair.
``top3_first_share``
    share of changed pairs whose first caption is one of the three most frequent first captions.
``caption_recurs``
    share of all changed-pair captions (5 per pair) whose text occurs at least twice among them,
    a repeat inside the same pair included.

On LEVIR-CC train (3,407 changed pairs, 17,035 captions) these are 19.52 %, 7.22 % (the first
caption of 112 pairs is "some roads and houses are built on bareland") and 29.69 %.

False negatives per batch: training draws batches of B (pair, caption) samples uniformly without
replacement from the 5 captions of every pair of the split (changed or not). A sample's false
negatives are the other samples the loss would treat as negatives (another pair; two no-change
pairs are positives of each other) whose caption similarity is >= theta. With the ``string``
source the similarity is exact equality of ``raw.strip().lower()``, the loss's own key
(:func:`rscc.losses.caption_keys`); with ``sentence`` it is the dot product of unit-norm sentence
embeddings, compared with ``theta - tolerance`` as the loss does. For a pool of M samples where
sample i has m_i false negatives, the expected number per batch of

- samples with at least one false negative is ``B/M * sum_i (1 - C(M-1-m_i, B-1) / C(M-1, B-1))``,
- unordered false-negative pairs is ``B(B-1) / (M(M-1)) * sum_i m_i / 2``.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rscc.config import CHOICES
from rscc.data.levircc import SPLITS, Pair

SIMILARITY_SOURCES = CHOICES["loss.similarity_source"]
TOP = 3  # the head of the first-caption distribution that top3_first_share sums


@dataclass(frozen=True)
class Recurrence:
    """Caption recurrence among the changed pairs of one split (see the module docstring)."""

    changed_pairs: int
    captions: int
    first_caption_recurs: float
    top3_first_share: float
    caption_recurs: float
    top_first_captions: list[tuple[str, int]]  # the TOP most frequent first captions and their counts

    def as_dict(self) -> dict:
        """JSON-ready: the head as [sentence, count] lists."""
        return {**asdict(self), "top_first_captions": [[s, n] for s, n in self.top_first_captions]}


def recurrence(captions: Sequence[Sequence[str]]) -> Recurrence:
    """Recurrence figures of changed pairs given as their caption texts (the first is the first
    caption). Empty input gives zeros."""
    firsts = Counter(c[0] for c in captions if c)
    every = Counter(s for c in captions for s in c)
    n_pairs, n_captions = len(captions), sum(every.values())
    head = firsts.most_common(TOP)
    return Recurrence(
        changed_pairs=n_pairs,
        captions=n_captions,
        first_caption_recurs=sum(n for n in firsts.values() if n >= 2) / n_pairs if n_pairs else 0.0,
        top3_first_share=sum(n for _, n in head) / n_pairs if n_pairs else 0.0,
        caption_recurs=sum(n for n in every.values() if n >= 2) / n_captions if n_captions else 0.0,
        top_first_captions=head,
    )


def pair_recurrence(pairs: Sequence[Pair]) -> Recurrence:
    """:func:`recurrence` of the changed pairs among ``pairs`` (captions as ``Pair.sentences``)."""
    return recurrence([p.sentences for p in pairs if p.changed])


# ----------------------------------------------------------------------------- false negatives
def _string_relation(raws: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each sample's distinct-caption id under the loss's string key, and the number of ids."""
    from rscc.losses import caption_keys

    _, ids = np.unique(caption_keys(raws).numpy(), return_inverse=True)
    return ids.reshape(-1), int(ids.max()) + 1 if len(ids) else 0


def false_negative_counts(raws: Sequence[str], labels: Sequence[int], theta: float = 1.0,
                          source: str = "string", embeddings: np.ndarray | None = None,
                          tolerance: float = 0.0, chunk: int = 2048) -> np.ndarray:
    """m_i: how many other samples of the pool are false negatives of sample i.

    ``raws`` and ``labels`` have one entry per sample (label -1 for a no-change pair, else the
    pair's id, as :attr:`rscc.data.levircc.Pair.label`). ``source="sentence"`` needs the (N, dim)
    unit-norm ``embeddings`` of ``raws``; identical captions must have identical rows."""
    labels = np.asarray(labels, dtype=np.int64)
    if source not in SIMILARITY_SOURCES:
        raise ValueError(f"similarity source {source!r}: expected one of {', '.join(SIMILARITY_SOURCES)}")
    ids, n_ids = _string_relation(raws)
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    # a sample's positives are the samples of its label (its own pair; every no-change pair)
    _, group = np.unique(labels, return_inverse=True)
    group = group.reshape(-1)
    everyone = np.bincount(ids, minlength=n_ids).astype(np.float64)  # samples per distinct caption
    if source == "string":  # similarity 1 for equal captions, else 0
        if theta > 1.0:
            return np.zeros(len(ids), np.int64)
        key = ids if theta > 0.0 else np.zeros_like(ids)
        _, in_group = np.unique(group * (n_ids + 1) + key, return_inverse=True)
        in_group = in_group.reshape(-1)
        return np.bincount(key)[key] - np.bincount(in_group)[in_group]
    if embeddings is None or len(embeddings) != len(ids):
        raise ValueError("source 'sentence' needs one embedding row per caption")
    first = np.zeros(n_ids, np.int64)
    first[ids[::-1]] = np.arange(len(ids))[::-1]  # one sample per distinct caption
    vectors = np.asarray(embeddings, np.float32)[first]  # (D, dim)
    threshold = theta - tolerance
    similar_total = np.empty(n_ids)
    for start in range(0, n_ids, chunk):
        block = vectors[start : start + chunk] @ vectors.T >= threshold  # (chunk, D)
        similar_total[start : start + chunk] = block @ everyone
    # positives that are similar: per group, the similarity among that group's captions
    similar_positive = np.zeros(len(ids))
    members: dict[int, list[int]] = {}
    for i, g in enumerate(group.tolist()):
        members.setdefault(g, []).append(i)
    for rows in members.values():
        distinct, counts = np.unique(ids[rows], return_counts=True)
        block = vectors[distinct] @ vectors[distinct].T >= threshold  # (d, d)
        per_distinct = dict(zip(distinct.tolist(), (block @ counts).tolist()))
        similar_positive[rows] = [per_distinct[d] for d in ids[rows].tolist()]
    return np.rint(similar_total[ids] - similar_positive).astype(np.int64)


def expected_per_batch(counts: np.ndarray, batch_size: int) -> dict:
    """Expected false negatives in a batch of ``batch_size`` samples drawn without replacement
    from a pool whose sample i has ``counts[i]`` false negatives (formulas in the module docstring)."""
    m_pool = len(counts)
    b = min(batch_size, m_pool)
    if b < 2:
        return {"batch_size": batch_size, "samples_with_false_negative": 0.0, "false_negative_pairs": 0.0}
    counts = np.asarray(counts, np.int64)
    # log C(M-1-m, B-1) - log C(M-1, B-1): the chance that none of m given samples is among B-1 draws
    rest = m_pool - 1 - counts
    log_none = np.full(len(counts), -np.inf)
    possible = rest >= b - 1
    lg = np.vectorize(math.lgamma)
    r = rest[possible].astype(np.float64)
    log_none[possible] = (lg(r + 1) - lg(r - b + 2)) - (math.lgamma(m_pool) - math.lgamma(m_pool - b + 1))
    with_fn = b / m_pool * float(np.sum(1.0 - np.exp(log_none)))
    pairs = b * (b - 1) / (m_pool * (m_pool - 1)) * float(counts.sum()) / 2
    return {"batch_size": batch_size, "samples_with_false_negative": with_fn, "false_negative_pairs": pairs}


def false_negatives_per_batch(pairs: Sequence[Pair], thetas: Sequence[float] = (1.0,),
                              batch_sizes: Sequence[int] = (32,), source: str = "string",
                              sentence_model: str | None = None, tolerance: float = 0.0,
                              progress: bool = False) -> list[dict]:
    """One row per (theta, batch size): the expected false negatives in a training batch drawn
    from the 5 captions of every pair in ``pairs`` (one split)."""
    raws = [raw for p in pairs for raw in p.raws]
    labels = [p.label for p in pairs for _ in p.raws]
    embeddings = None
    if source == "sentence":
        from rscc.false_negatives import DEFAULT_MODEL, caption_embeddings

        embeddings = caption_embeddings(raws, sentence_model or DEFAULT_MODEL, progress=progress)
    rows = []
    for theta in thetas:
        counts = false_negative_counts(raws, labels, theta, source, embeddings, tolerance)
        for b in batch_sizes:
            row = {"theta": theta, "source": source, "pool": len(raws), **expected_per_batch(counts, b)}
            row["share_of_batch"] = row["samples_with_false_negative"] / min(b, len(raws)) if raws else 0.0
            rows.append(row)
    return rows


def caption_stats(pairs: Sequence[Pair], thetas: Sequence[float] = (1.0,), batch_sizes: Sequence[int] = (32,),
                  split: str = "train", source: str = "string", sentence_model: str | None = None,
                  tolerance: float = 0.0, progress: bool = False) -> dict:
    """Recurrence per split (and over all splits) and false negatives per batch in ``split``."""
    out: dict = {"recurrence": {}, "false_negatives": {"split": split, "rows": []}}
    for name in SPLITS:
        sp = [p for p in pairs if p.split == name]
        if sp:
            out["recurrence"][name] = pair_recurrence(sp).as_dict()
    out["recurrence"]["all"] = pair_recurrence(pairs).as_dict()
    pool = [p for p in pairs if p.split == split]
    out["false_negatives"]["rows"] = false_negatives_per_batch(pool, thetas, batch_sizes, source, sentence_model,
                                                               tolerance, progress)
    return out
