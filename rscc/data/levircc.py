"""LEVIR-CC reader: captions JSON, vocabulary, encoding and torch datasets (METHOD §1).

Layout: ``ROOT/LevirCCcaptions.json`` and ``ROOT/images/{train,val,test}/{A,B}/<split>_NNNNNN.png``.
Images are opened lazily, one pair at a time, so memory does not grow with the dataset (the
authors' loader keeps every image tensor in RAM).
"""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from rscc.data.images import open_pair
from rscc.errors import DatasetError
from rscc.paths import read_document
from rscc.text import NO_CHANGE_SENTENCES, is_no_change  # noqa: F401  (re-exported: the data layer's names)

CAPTIONS_FILE = "LevirCCcaptions.json"
SPLITS = ("train", "val", "test")
CAPTIONS_PER_PAIR = 5
MAX_LEN = 41  # START + up to 39 words + END

PAD, START, UNK, END = 0, 1, 2, 3
SPECIALS = {"PAD": PAD, "START": START, "UNK": UNK, "END": END}

_PUNCT = re.compile(r"[^\w\s-]")


def tokenize(sentence: str) -> list[str]:
    """Lower-case words without punctuation; hyphenated words such as ``t-shaped`` stay one token."""
    return _PUNCT.sub(" ", sentence.lower()).split()


def raw_from_tokens(tokens: Sequence[str]) -> str:
    """The LEVIR-CC ``raw`` form: a leading space and a trailing `` .``."""
    return " " + " ".join(tokens) + " ."


# ----------------------------------------------------------------------------- records
@dataclass
class Pair:
    """One bi-temporal pair with its five captions."""

    imgid: int
    split: str
    filepath: str
    filename: str
    changed: bool
    tokens: list[list[str]]  # five token lists
    raws: list[str]  # five raw strings

    @property
    def label(self) -> int:
        """Contrastive label: -1 for every no-change pair (mutual positives), else the imgid."""
        return self.imgid if self.changed else -1

    @property
    def sentences(self) -> list[str]:
        """The captions as plain lower-case sentences (the `tokens` protocol references)."""
        return [" ".join(t) for t in self.tokens]

    def image_paths(self, root: str | Path) -> tuple[Path, Path]:
        base = Path(root) / "images" / self.filepath
        return base / "A" / self.filename, base / "B" / self.filename


def captions_path(path: str | Path) -> Path:
    """The captions JSON of a dataset root, or the path itself when it is the JSON."""
    path = Path(path)
    if path.is_dir():
        path = path / CAPTIONS_FILE
    if not path.is_file():
        raise DatasetError(
            f"{path}: captions file not found (expected a LEVIR-CC root holding {CAPTIONS_FILE}, "
            "or the JSON itself; LEVIR-CC is at https://github.com/Chen-Yang-Liu/LEVIR-CC-Dataset)"
        )
    return path


def load_pairs(path: str | Path, splits: Iterable[str] | None = None) -> list[Pair]:
    """Read the captions JSON (or a dataset root) into :class:`Pair` records, in file order.

    ``changeflag`` is derived from the captions when absent. Raises DatasetError naming the file,
    the record and the field for anything that does not follow the schema."""
    path = captions_path(path)
    data = read_document(path, DatasetError, missing="captions file not found")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: expected a JSON object with an 'images' list")
    wanted = set(splits) if splits is not None else None
    pairs = []
    for n, record in enumerate(data["images"]):
        pair = _parse_record(record, n, path)
        if wanted is None or pair.split in wanted:
            pairs.append(pair)
    return pairs


def _parse_record(record: dict, n: int, path: Path) -> Pair:
    where = f"{path}: images[{n}]"
    if not isinstance(record, dict):
        raise DatasetError(f"{where}: expected an object")
    for key in ("filepath", "filename", "imgid", "split", "sentences"):
        if key not in record:
            raise DatasetError(f"{where}: missing field '{key}'")
    for key in ("filepath", "filename"):
        if not isinstance(record[key], str) or not record[key]:
            raise DatasetError(f"{where}: '{key}' must be a non-empty string, found {record[key]!r}")
    if isinstance(record["imgid"], bool) or not isinstance(record["imgid"], int):
        raise DatasetError(f"{where} ({record['filename']}): 'imgid' must be an integer, found {record['imgid']!r}")
    split = record["split"]
    if split not in SPLITS:
        raise DatasetError(f"{where} ({record['filename']}): unknown split '{split}', expected one of {SPLITS}")
    sentences = record["sentences"]
    if not isinstance(sentences, list) or len(sentences) != CAPTIONS_PER_PAIR:
        count = len(sentences) if isinstance(sentences, list) else "no list of"
        raise DatasetError(f"{where} ({record['filename']}): {count} captions, expected {CAPTIONS_PER_PAIR}")
    tokens, raws = [], []
    for k, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            raise DatasetError(f"{where}.sentences[{k}]: expected an object with 'tokens' and 'raw'")
        toks = sentence.get("tokens")
        raw = sentence.get("raw")
        if toks is None and raw is None:
            raise DatasetError(f"{where}.sentences[{k}]: missing 'tokens' and 'raw'")
        if raw is not None and not isinstance(raw, str):
            raise DatasetError(f"{where}.sentences[{k}]: 'raw' must be a string, found {type(raw).__name__}")
        if toks is None:
            toks = tokenize(raw)
        if not isinstance(toks, list) or not all(isinstance(t, str) for t in toks):
            raise DatasetError(f"{where}.sentences[{k}]: 'tokens' must be a list of strings")
        toks = [t.lower() for t in toks if t.strip()]
        if not toks:
            raise DatasetError(f"{where} ({record['filename']}).sentences[{k}]: empty caption")
        tokens.append(toks)
        raws.append(raw if isinstance(raw, str) else raw_from_tokens(toks))
    if "changeflag" in record:
        changed = bool(record["changeflag"])
    else:
        changed = not is_no_change([" ".join(t) for t in tokens])
    return Pair(
        imgid=int(record["imgid"]),
        split=split,
        filepath=str(record["filepath"]),
        filename=str(record["filename"]),
        changed=changed,
        tokens=tokens,
        raws=raws,
    )


# ----------------------------------------------------------------------------- vocabulary
@dataclass
class Vocabulary:
    """Word ids with the specials PAD 0, START 1, UNK 2, END 3.

    Saved as the authors' flat ``{word: id}`` JSON so that their shipped ``levir_vocab.json``
    loads unchanged."""

    word_to_id: dict[str, int]
    rule: str = "loaded"
    _id_to_word: dict[int, str] = field(init=False, repr=False)

    def __post_init__(self):
        wrong = {name: self.word_to_id.get(name) for name, idx in SPECIALS.items() if self.word_to_id.get(name) != idx}
        if wrong:
            raise DatasetError(f"vocabulary: special tokens must be {SPECIALS}, got {wrong}")
        self._id_to_word = {i: w for w, i in self.word_to_id.items()}
        if len(self._id_to_word) != len(self.word_to_id):
            raise DatasetError("vocabulary: two words share an id")
        if sorted(self._id_to_word) != list(range(len(self.word_to_id))):  # ids index the embedding rows
            raise DatasetError(f"vocabulary: ids must be 0..{len(self.word_to_id) - 1} without gaps")

    def __len__(self) -> int:
        return len(self.word_to_id)

    def __contains__(self, word: str) -> bool:
        return word in self.word_to_id

    @classmethod
    def build(cls, pairs: Sequence[Pair], rule: str = "authors") -> Vocabulary:
        """Build a vocabulary from caption tokens.

        ``authors`` (faithful, needed to load the released checkpoint): tokens of ALL splits,
        words seen more than 5 times. ``train`` (leak-free): train split only, at least 5 times.
        Ids follow descending frequency from 4; ties are broken by first occurrence in the file
        (the authors used pandas' value_counts, whose tie order is not guaranteed — always load
        the vocabulary shipped with a checkpoint)."""
        if rule == "authors":
            source, keep = pairs, (lambda c: c > 5)
        elif rule == "train":
            source, keep = [p for p in pairs if p.split == "train"], (lambda c: c >= 5)
        else:
            raise DatasetError(f"vocabulary rule '{rule}' does not exist; valid: authors, train")
        counts = Counter(t for p in source for toks in p.tokens for t in toks)  # insertion = first seen
        order = sorted(counts, key=lambda w: -counts[w])  # stable: ties keep first occurrence
        words = [w for w in order if keep(counts[w]) and w not in SPECIALS]
        return cls({**SPECIALS, **{w: i + 4 for i, w in enumerate(words)}}, rule=rule)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.word_to_id, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        data = read_document(path, DatasetError, missing="vocabulary file not found", what="vocabulary")
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            raise DatasetError(f"{path}: vocabulary must be a flat {{word: id}} object")
        try:
            return cls(data)
        except DatasetError as exc:
            raise DatasetError(f"{path}: {exc}") from None

    def ids(self, tokens: Sequence[str]) -> list[int]:
        return [self.word_to_id.get(t, UNK) for t in tokens]

    def encode(self, tokens: Sequence[str], max_len: int = MAX_LEN) -> tuple[list[int], list[bool]]:
        """``[START] + ids + [END]`` right-padded with PAD to ``max_len``; pad mask True on PAD.

        Callers truncate (or reject) captions longer than ``max_len - 2`` words first."""
        ids = [START] + self.ids(tokens[: max_len - 2]) + [END]
        pad = max_len - len(ids)
        return ids + [PAD] * pad, [False] * len(ids) + [True] * pad

    def decode(self, ids: Iterable[int]) -> str:
        """Words of a generated sequence: START/PAD skipped, stops at END."""
        words = []
        for i in ids:
            i = int(i)
            if i == END:
                break
            if i in (START, PAD):
                continue
            words.append(self._id_to_word.get(i, "UNK"))
        return " ".join(words)


# ----------------------------------------------------------------------------- encoding
@dataclass
class EncodedCaptions:
    """All captions of a list of pairs, encoded once: index ``5 * pair + k``."""

    input_ids: torch.Tensor  # (5N, max_len) long
    pad_mask: torch.Tensor  # (5N, max_len) bool, True on PAD
    labels: torch.Tensor  # (5N, max_len) long, PAD -> -100
    truncated: int  # how many captions were cut to max_len - 2 words


def encode_captions(
    pairs: Sequence[Pair], vocab: Vocabulary, max_len: int = MAX_LEN, strict: bool = False
) -> EncodedCaptions:
    ids, masks, truncated = [], [], 0
    for p in pairs:
        for k, toks in enumerate(p.tokens):
            if len(toks) > max_len - 2:
                if strict:
                    raise DatasetError(
                        f"{p.filename} caption {k}: {len(toks)} words, longer than max_len - 2 = {max_len - 2}"
                    )
                truncated += 1
            i, m = vocab.encode(toks, max_len)
            ids.append(i)
            masks.append(m)
    if truncated:
        warnings.warn(f"{truncated} caption(s) longer than {max_len - 2} words were truncated", stacklevel=2)
    input_ids = torch.tensor(ids, dtype=torch.long).reshape(-1, max_len)
    pad_mask = torch.tensor(masks, dtype=torch.bool).reshape(-1, max_len)
    labels = input_ids.masked_fill(pad_mask, -100)
    return EncodedCaptions(input_ids, pad_mask, labels, truncated)


# ----------------------------------------------------------------------------- images
def load_pair_images(pair: Pair, root: str | Path) -> tuple[Image.Image, Image.Image]:
    """Both images of a pair as RGB; a size mismatch is an error naming both files."""
    return open_pair(*pair.image_paths(root))


# ----------------------------------------------------------------------------- datasets
Transform = Callable[[Image.Image], torch.Tensor]


class LevirCCDataset(Dataset):
    """Samples of one split (METHOD §1.3).

    ``per_caption=True`` (training): one sample per caption, pair index = sample // 5.
    ``per_caption=False`` (validation/test): one sample per pair with its first caption and all
    five references. With ``transform=None`` no image is read (the feature-cache path): the
    sample carries ``pair_index`` and the caller supplies features."""

    def __init__(
        self,
        pairs: Sequence[Pair],
        vocab: Vocabulary,
        root: str | Path | None = None,
        transform: Transform | None = None,
        per_caption: bool = True,
        max_len: int = MAX_LEN,
        strict_length: bool = False,
    ):
        self.pairs = list(pairs)
        self.vocab = vocab
        self.root = Path(root) if root is not None else None
        self.transform = transform
        self.per_caption = per_caption
        self.captions = encode_captions(self.pairs, vocab, max_len, strict=strict_length)
        if transform is not None and self.root is None:
            raise DatasetError("LevirCCDataset: a transform needs the dataset root to read images")

    def __len__(self) -> int:
        return len(self.pairs) * (CAPTIONS_PER_PAIR if self.per_caption else 1)

    def caption_index(self, idx: int) -> int:
        return idx if self.per_caption else CAPTIONS_PER_PAIR * idx

    def __getitem__(self, idx: int) -> dict:
        pair_index = idx // CAPTIONS_PER_PAIR if self.per_caption else idx
        c = self.caption_index(idx)
        pair = self.pairs[pair_index]
        sample = {
            "pair_index": pair_index,
            "caption_index": c,
            "imgid": pair.imgid,
            "label": pair.label,
            "changed": pair.changed,
            "input_ids": self.captions.input_ids[c],
            "pad_mask": self.captions.pad_mask[c],
            "labels": self.captions.labels[c],
            "raw": pair.raws[c % CAPTIONS_PER_PAIR],
        }
        if not self.per_caption:
            sample["references_tokens"] = pair.sentences
            sample["references_raw"] = list(pair.raws)
        if self.transform is not None:
            img_a, img_b = load_pair_images(pair, self.root)
            sample["img_a"] = self.transform(img_a)
            sample["img_b"] = self.transform(img_b)
        return sample


def collate(samples: list[dict]) -> dict:
    """Stack tensors and numbers; keep strings and reference lists as lists."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(values[0], (bool, int)):
            batch[key] = torch.tensor(values)
        else:
            batch[key] = values
    return batch


# ----------------------------------------------------------------------------- statistics
def dataset_stats(path: str | Path, rule: str = "authors") -> dict:
    """Per split: pairs, changed pairs, mean/max caption length in tokens; vocabulary size."""
    pairs = load_pairs(path)
    vocab = Vocabulary.build(pairs, rule=rule)
    out: dict = {"source": str(captions_path(path)), "vocabulary_rule": rule, "vocabulary_size": len(vocab),
                 "splits": {}}
    for split in SPLITS:
        sp = [p for p in pairs if p.split == split]
        if not sp:
            continue
        lengths = np.array([len(t) for p in sp for t in p.tokens])
        changed_lengths = np.array([len(t) for p in sp if p.changed for t in p.tokens])
        out["splits"][split] = {
            "pairs": len(sp),
            "changed": sum(p.changed for p in sp),
            "captions": int(lengths.size),
            "mean_caption_tokens": round(float(lengths.mean()), 2),
            "mean_changed_caption_tokens": round(float(changed_lengths.mean()), 2) if changed_lengths.size else None,
            "max_caption_tokens": int(lengths.max()),
        }
    all_lengths = [len(t) for p in pairs for t in p.tokens]
    out["all"] = {
        "pairs": len(pairs),
        "changed": sum(p.changed for p in pairs),
        "mean_caption_tokens": round(float(np.mean(all_lengths)), 2),
        "max_caption_tokens": int(max(all_lengths)),
    }
    return out
