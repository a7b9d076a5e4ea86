"""Evaluation: captioning metrics (:mod:`.captioning`), retrieval metrics (:mod:`.retrieval`) and
the zero-shot CLIP baseline (:mod:`.zero_shot`).

Only the captioning API is imported here; the retrieval modules need torch and are imported
from their own modules.
"""
from rscc.metrics.captioning import (
    NO_CHANGE_CAPTIONS,
    PROTOCOLS,
    floor_predictions,
    is_no_change,
    normalise_tokens,
    score_captions,
)

__all__ = ["NO_CHANGE_CAPTIONS", "PROTOCOLS", "floor_predictions", "is_no_change", "normalise_tokens",
           "score_captions"]
