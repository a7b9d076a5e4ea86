"""Data layer: the LEVIR-CC reader, the synthetic generator and the dataset validator."""
from rscc.data.levircc import (  # noqa: F401
    CAPTIONS_FILE,
    MAX_LEN,
    NO_CHANGE_SENTENCES,
    SPLITS,
    LevirCCDataset,
    Pair,
    Vocabulary,
    collate,
    dataset_stats,
    encode_captions,
    load_pairs,
)
