"""Caption text shared by the data layer and the metrics: LEVIR-CC's five no-change sentences,
the `tokens` normalisation, and the one rule for "this pair did not change".

Kept free of torch and of the scorers, so that both :mod:`rscc.data` and :mod:`rscc.metrics`
import it without pulling in the other.
"""
from __future__ import annotations

import re
import string
from collections.abc import Iterable

# The five stock sentences of every LEVIR-CC no-change pair, in their order, in `tokens` form.
NO_CHANGE_SENTENCES = (
    "there is no difference",
    "the two scenes seem identical",
    "the scene is the same as before",
    "no change has occurred",
    "almost nothing has changed",
)

# Characters that never belong to a word; other punctuation is stripped only at word ends,
# so that `t-shaped`, `lower-right` and `road's` stay one token as in the LEVIR-CC JSON.
_SEPARATORS = re.compile(r"[,;:!?()\[\]{}\"`]")


def normalise_tokens(sentence: str) -> str:
    """The `tokens` protocol's form of a sentence: lower case, punctuation removed.

    >>> normalise_tokens("A T-shaped road is built, at the lower-right.")
    'a t-shaped road is built at the lower-right'
    """
    words = (word.strip(string.punctuation) for word in _SEPARATORS.sub(" ", sentence.lower()).split())
    return " ".join(word for word in words if word)


def is_no_change(sentences: Iterable[str]) -> bool:
    """A pair is "no change" iff its captions, normalised, are the five stock sentences (in any
    order, each once). Accepts token strings (``"there is no difference"``) or raw ones
    (``" There is no difference ."``)."""
    return sorted(normalise_tokens(s) for s in sentences) == sorted(NO_CHANGE_SENTENCES)
