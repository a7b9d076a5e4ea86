"""Dataset statistics behind notebook 01: caption lengths, word frequencies, recurring captions
and the caption-similarity distribution that motivates false-negative handling (FNE/FNA)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pandas as pd

from rscc.data.levircc import SPLITS, Pair


def caption_table(pairs: Sequence[Pair]) -> pd.DataFrame:
    """One row per caption: split, imgid, changed, caption index, sentence, length in tokens."""
    rows = [
        {"split": p.split, "imgid": p.imgid, "changed": p.changed, "k": k, "sentence": " ".join(t), "tokens": len(t)}
        for p in pairs
        for k, t in enumerate(p.tokens)
    ]
    return pd.DataFrame(rows)


def split_summary(pairs: Sequence[Pair]) -> pd.DataFrame:
    """Pairs, changed pairs and caption lengths per split (rows in train/val/test order)."""
    table = caption_table(pairs)
    rows = []
    for split in SPLITS:
        t = table[table.split == split]
        if t.empty:
            continue
        rows.append({
            "split": split,
            "pairs": t.imgid.nunique(),
            "changed pairs": t[t.changed].imgid.nunique(),
            "changed %": round(100 * t[t.changed].imgid.nunique() / t.imgid.nunique(), 1),
            "mean tokens": round(t.tokens.mean(), 2),
            "mean tokens (changed)": round(t[t.changed].tokens.mean(), 2),
            "max tokens": int(t.tokens.max()),
        })
    return pd.DataFrame(rows).set_index("split")


def word_frequencies(pairs: Sequence[Pair], changed_only: bool = True) -> pd.Series:
    """Word counts over all captions (of changed pairs only by default), most frequent first."""
    counts = Counter(w for p in pairs if p.changed or not changed_only for t in p.tokens for w in t)
    return pd.Series(counts).sort_values(ascending=False, kind="stable")


def caption_recurrence(pairs: Sequence[Pair], split: str | None = None) -> dict:
    """How often identical first captions recur across different changed pairs.

    These repeats are false negatives for a contrastive loss: two pairs described by the same
    sentence are pushed apart although their captions match (METHOD §3.3: 964 changed LEVIR-CC test
    pairs have only 844 distinct first captions)."""
    chosen = [p for p in pairs if p.changed and (split is None or p.split == split)]
    first = Counter(" ".join(p.tokens[0]) for p in chosen)
    every = Counter(" ".join(t) for p in chosen for t in p.tokens)
    return {
        "changed_pairs": len(chosen),
        "distinct_first_captions": len(first),
        "pairs_sharing_their_first_caption": sum(c for c in first.values() if c > 1),
        "most_repeated_first_captions": first.most_common(5),
        "distinct_captions": len(every),
        "captions": sum(every.values()),
    }


def cross_pair_similarities(
    embeddings: np.ndarray, pair_of_caption: np.ndarray, max_pairs: int = 200_000, seed: int = 0
) -> np.ndarray:
    """Cosine similarities between captions of DIFFERENT pairs (a random sample of caption pairs).

    ``embeddings`` (N, dim) are unit-norm caption embeddings; ``pair_of_caption`` (N,) the pair
    each caption belongs to."""
    rng = np.random.default_rng(seed)
    n = len(embeddings)
    i = rng.integers(0, n, size=max_pairs)
    j = rng.integers(0, n, size=max_pairs)
    keep = pair_of_caption[i] != pair_of_caption[j]
    i, j = i[keep], j[keep]
    return np.einsum("nd,nd->n", embeddings[i], embeddings[j])


def false_negative_rates(similarities: np.ndarray, thetas: Sequence[float]) -> pd.DataFrame:
    """Share of cross-pair caption pairs that each threshold θ would mark as false negatives."""
    return pd.DataFrame(
        {"theta": list(thetas), "share of cross-pair caption pairs ≥ θ (%)": [
            round(100 * float((similarities >= t - 1e-4).mean()), 3) for t in thetas]}
    ).set_index("theta")
