"""What goes into a gallery index: the image pairs of a folder or a LEVIR-CC split, and the run's
image and text towers that embed them (:class:`Embedder`), with the model identity an index
records so that it refuses embeddings of any other model."""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rscc.data.images import folder_pairs
from rscc.data.levircc import CAPTIONS_FILE, SPLITS, load_pairs, tokenize
from rscc.errors import CheckpointError, ConfigError, DatasetError, RsccError

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
