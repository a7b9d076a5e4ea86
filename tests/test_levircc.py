"""The LEVIR-CC reader: schema, vocabulary rules, encoding, datasets, images (METHOD §1)."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from rscc.data.images import open_rgb
from rscc.data.levircc import (
    END,
    NO_CHANGE_SENTENCES,
    PAD,
    START,
    UNK,
    LevirCCDataset,
    Vocabulary,
    collate,
    dataset_stats,
    encode_captions,
    load_pair_images,
    load_pairs,
    tokenize,
)
from rscc.errors import DatasetError


def record(imgid, split, sentences, filename=None, changeflag=None):
    rec = {
        "filepath": split,
        "filename": filename or f"{split}_{imgid:06d}.png",
        "imgid": imgid,
        "split": split,
        "sentids": list(range(5 * imgid, 5 * imgid + 5)),
        "sentences": [
            {"tokens": s.split(), "raw": " " + s + " .", "imgid": imgid, "sentid": 5 * imgid + k}
            for k, s in enumerate(sentences)
        ],
    }
    if changeflag is not None:
        rec["changeflag"] = changeflag
    return rec


CHANGED = [
    "many houses are built along the road",
    "a road is built on the bareland",
    "some villas appear at the top",
    "houses are constructed along the road",
    "the bareland becomes a residential area",
]


def write_json(tmp_path, records):
    path = tmp_path / "LevirCCcaptions.json"
    path.write_text(json.dumps({"images": records}))
    return path


# ------------------------------------------------------------------ real captions (../shared)
def test_stats_on_real_levircc_captions_match_the_paper(shared):
    stats = dataset_stats(shared / "data" / "levir-cc-captions" / "LevirCCcaptions.json")
    splits = stats["splits"]
    assert [splits[s]["pairs"] for s in ("train", "val", "test")] == [6815, 1333, 1929]
    assert [splits[s]["changed"] for s in ("train", "val", "test")] == [3407, 667, 964]
    assert stats["vocabulary_size"] == 468
    assert stats["all"]["max_caption_tokens"] == 39


def test_derived_changeflag_agrees_with_the_stored_one_on_every_real_pair(shared, tmp_path):
    data = json.loads((shared / "data" / "levir-cc-captions" / "LevirCCcaptions.json").read_text())
    stored = [bool(r["changeflag"]) for r in data["images"]]
    for r in data["images"]:
        del r["changeflag"]
    path = tmp_path / "LevirCCcaptions.json"
    path.write_text(json.dumps(data))
    pairs = load_pairs(path)
    assert [p.changed for p in pairs] == stored


def test_real_mini_pairs_load_as_256px_rgb(shared):
    root = shared / "data" / "levir-cc-mini"
    pairs = load_pairs(root)
    assert len(pairs) == 3
    a, b = load_pair_images(pairs[0], root)
    assert a.mode == b.mode == "RGB" and a.size == (256, 256)


# ------------------------------------------------------------------ schema
def test_changeflag_is_derived_from_the_stock_sentences_when_absent(tmp_path):
    path = write_json(tmp_path, [record(0, "train", list(NO_CHANGE_SENTENCES)), record(1, "train", CHANGED)])
    pairs = load_pairs(path)
    assert [p.changed for p in pairs] == [False, True]
    assert [p.label for p in pairs] == [-1, 1]


def test_a_pair_with_six_captions_is_an_error_naming_the_file(tmp_path):
    rec = record(0, "train", CHANGED)
    rec["sentences"].append(rec["sentences"][0])
    with pytest.raises(DatasetError, match="train_000000.png.*6 captions"):
        load_pairs(write_json(tmp_path, [rec]))


def test_unknown_split_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        load_pairs(write_json(tmp_path, [record(0, "dev", CHANGED)]))


def test_invalid_json_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "LevirCCcaptions.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="LevirCCcaptions.json: not valid JSON"):
        load_pairs(tmp_path)


def test_missing_images_key_is_an_error(tmp_path):
    path = tmp_path / "LevirCCcaptions.json"
    path.write_text(json.dumps({"pairs": []}))
    with pytest.raises(DatasetError, match="'images' list"):
        load_pairs(path)


def test_tokenize_keeps_hyphenated_words():
    assert tokenize(" A T-shaped road is built .") == ["a", "t-shaped", "road", "is", "built"]


# ------------------------------------------------------------------ vocabulary
def test_authors_vocabulary_counts_all_splits_and_keeps_words_seen_more_than_five_times(tmp_path):
    recs = [record(i, "train", ["road road"] * 5) for i in range(1)]  # "road": 10
    recs += [record(1, "test", ["house"] * 5), record(2, "test", ["house tree"] * 5)]  # house 10, tree 5
    pairs = load_pairs(write_json(tmp_path, recs))
    vocab = Vocabulary.build(pairs, rule="authors")
    assert vocab.word_to_id == {"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 4, "house": 5}


def test_train_only_vocabulary_ignores_other_splits_and_keeps_count_five(tmp_path):
    recs = [record(0, "train", ["tree"] * 5), record(1, "test", ["house house"] * 5)]
    vocab = Vocabulary.build(load_pairs(write_json(tmp_path, recs)), rule="train")
    assert "tree" in vocab and "house" not in vocab and len(vocab) == 5


def test_vocabulary_ties_follow_first_occurrence(tmp_path):
    recs = [record(0, "train", ["bb aa"] * 5), record(1, "train", ["aa bb"] * 5)]
    vocab = Vocabulary.build(load_pairs(write_json(tmp_path, recs)))
    assert vocab.word_to_id["bb"] == 4 and vocab.word_to_id["aa"] == 5


def test_vocabulary_round_trips_through_the_authors_flat_json(tmp_path):
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 4})
    vocab.save(tmp_path / "vocab.json")
    assert json.loads((tmp_path / "vocab.json").read_text())["road"] == 4
    assert Vocabulary.load(tmp_path / "vocab.json").word_to_id == vocab.word_to_id


def test_vocabulary_with_wrong_special_ids_is_rejected():
    with pytest.raises(DatasetError, match=r"special tokens must be .* got \{'PAD': 1, 'START': 0\}"):
        Vocabulary({"PAD": 1, "START": 0, "UNK": 2, "END": 3})


def test_vocabulary_ids_must_index_the_embedding_rows_without_gaps(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 5}))
    with pytest.raises(DatasetError, match=r"vocab.json: vocabulary: ids must be 0..4 without gaps"):
        Vocabulary.load(path)


# ------------------------------------------------------------------ encoding
def test_encoding_is_start_ids_end_padded_to_41_with_pad_mask_and_labels():
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 4})
    ids, mask = vocab.encode(["road", "zebra"])
    assert ids[:5] == [START, 4, UNK, END, PAD] and len(ids) == 41
    assert mask[:4] == [False] * 4 and all(mask[4:])


def test_labels_replace_pad_by_minus_100(tmp_path):
    pairs = load_pairs(write_json(tmp_path, [record(0, "train", CHANGED)]))
    enc = encode_captions(pairs, Vocabulary.build(pairs * 6))
    assert enc.input_ids.shape == (5, 41)
    assert (enc.labels[enc.pad_mask] == -100).all()
    assert torch.equal(enc.labels[~enc.pad_mask], enc.input_ids[~enc.pad_mask])


def test_a_caption_longer_than_max_len_is_truncated_with_one_warning(tmp_path):
    long = " ".join(["road"] * 45)
    pairs = load_pairs(write_json(tmp_path, [record(0, "train", [long] * 5)]))
    vocab = Vocabulary.build(pairs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = encode_captions(pairs, vocab)
    assert enc.truncated == 5 and len(caught) == 1
    assert enc.input_ids[0, -1].item() == END
    with pytest.raises(DatasetError, match="45 words"):
        encode_captions(pairs, vocab, strict=True)


def test_decode_stops_at_end_and_skips_specials():
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, "road": 4, "built": 5})
    assert vocab.decode([START, 4, 5, END, 4]) == "road built"


# ------------------------------------------------------------------ datasets and images
def make_root(tmp_path, n=2, size=(32, 32), mode="RGB"):
    recs = [record(i, "train", CHANGED if i % 2 else list(NO_CHANGE_SENTENCES)) for i in range(n)]
    write_json(tmp_path, recs)
    for r in recs:
        for side in "AB":
            d = tmp_path / "images" / "train" / side
            d.mkdir(parents=True, exist_ok=True)
            arr = np.random.default_rng(r["imgid"]).integers(0, 255, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(arr).convert(mode).save(d / r["filename"])
    return tmp_path


def test_training_samples_one_per_caption_and_evaluation_one_per_pair(tmp_path):
    root = make_root(tmp_path, n=2)
    pairs = load_pairs(root)
    vocab = Vocabulary.build(pairs * 6)
    train = LevirCCDataset(pairs, vocab, per_caption=True)
    test = LevirCCDataset(pairs, vocab, per_caption=False)
    assert len(train) == 10 and len(test) == 2
    assert train[7]["pair_index"] == 1 and train[7]["caption_index"] == 7
    assert test[1]["caption_index"] == 5 and len(test[1]["references_raw"]) == 5
    assert test[1]["references_tokens"][0] == CHANGED[0]


def test_collate_stacks_tensors_and_keeps_strings(tmp_path):
    root = make_root(tmp_path, n=2)
    pairs = load_pairs(root)
    ds = LevirCCDataset(pairs, Vocabulary.build(pairs * 6), root=root, transform=lambda im: torch.zeros(3, 4, 4), per_caption=False)
    batch = collate([ds[0], ds[1]])
    assert batch["img_a"].shape == (2, 3, 4, 4) and batch["label"].tolist() == [-1, 1]
    assert isinstance(batch["raw"][0], str)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_grayscale_rgba_and_palette_images_are_converted_to_rgb(tmp_path, mode):
    path = tmp_path / "x.png"
    Image.new(mode, (8, 8)).save(path)
    assert open_rgb(path).mode == "RGB"


def test_16_bit_image_is_rejected_naming_the_file(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(path)
    with pytest.raises(DatasetError, match="deep.png.*16-bit"):
        open_rgb(path)


def test_text_file_named_png_is_an_error(tmp_path):
    path = tmp_path / "fake.png"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="fake.png: cannot decode"):
        open_rgb(path)


def test_pair_of_different_sizes_is_an_error_naming_both_files(tmp_path):
    root = make_root(tmp_path, n=1)
    pair = load_pairs(root)[0]
    a, b = pair.image_paths(root)
    Image.new("RGB", (16, 16)).save(b)
    with pytest.raises(DatasetError) as err:
        load_pair_images(pair, root)
    assert str(a) in str(err.value) and str(b) in str(err.value)
