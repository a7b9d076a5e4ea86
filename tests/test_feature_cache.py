"""The frozen-backbone feature cache reads exactly the rows that were written."""
import json

import numpy as np
import pytest
import torch

from rscc.feature_cache import FeatureCache


@pytest.fixture
def cache(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"train": rng.standard_normal((5, 2, 3, 2, 2)).astype(np.float16),
              "test": rng.standard_normal((2, 2, 3, 2, 2)).astype(np.float16)}
    for split, array in arrays.items():
        np.save(tmp_path / f"{split}.npy", array)
    (tmp_path / "meta.json").write_text(json.dumps({"splits": list(arrays)}))
    return FeatureCache(tmp_path), arrays


def test_get_returns_the_stored_rows_of_both_images_as_float32_in_the_order_asked(cache):
    features, arrays = cache
    feat_a, feat_b = features.get("train", torch.tensor([4, 0, 2]))
    expected = arrays["train"][[4, 0, 2]].astype(np.float32)
    assert feat_a.dtype == torch.float32 and feat_a.shape == (3, 3, 2, 2)
    assert torch.equal(feat_a, torch.from_numpy(expected[:, 0])) and torch.equal(feat_b, torch.from_numpy(expected[:, 1]))


def test_each_split_has_its_own_rows(cache):
    features, arrays = cache
    assert features.num_pairs("train") == 5 and features.num_pairs("test") == 2
    assert torch.equal(features.get("test", [1])[0], torch.from_numpy(arrays["test"][[1], 0].astype(np.float32)))


def test_an_index_past_the_end_is_an_error_naming_the_file(cache):
    features, _ = cache
    with pytest.raises(IndexError, match="train.npy"):
        features.get("train", [5])


def test_a_folder_without_meta_json_is_not_a_cache(tmp_path):
    from rscc.errors import RsccError

    with pytest.raises(RsccError, match="not a feature cache"):
        FeatureCache(tmp_path)


def test_rows_written_in_batches_read_back_as_the_same_npy_array(tmp_path):
    from rscc.feature_cache import _RowWriter

    rows = np.random.default_rng(1).standard_normal((7, 2, 3, 2, 2)).astype(np.float32)
    with _RowWriter(tmp_path / "train.npy", rows.shape, np.float16) as writer:
        writer[0:4] = rows[:4]
        writer[4:7] = rows[4:]
    assert np.array_equal(np.load(tmp_path / "train.npy"), rows.astype(np.float16))


def test_the_writer_counts_the_features_that_the_storage_dtype_turns_into_zero(tmp_path):
    """Random-init MobileNetV2 features (~1e-9) are below float16's range: the writer counts them."""
    from rscc.feature_cache import _RowWriter

    rows = np.random.default_rng(2).standard_normal((4, 2, 3, 2, 2)).astype(np.float32)
    rows[2:] *= 1e-9  # half the rows underflow
    with _RowWriter(tmp_path / "train.npy", rows.shape, np.float16) as writer:
        writer[0:4] = rows
    assert writer.nonzero == rows.size and writer.zeroed == rows[2:].size
    with _RowWriter(tmp_path / "exact.npy", rows.shape, np.float32) as writer:
        writer[0:4] = rows
    assert writer.zeroed == 0


def test_a_cache_that_lost_its_features_to_the_storage_dtype_is_named_in_a_warning():
    from rscc.feature_cache import underflow_message

    assert underflow_message("m (random-seed-42)", "float16", nonzero=1000, zeroed=5) == ""
    lost = underflow_message("m (random-seed-42)", "float16", nonzero=1000, zeroed=1000)
    assert lost.startswith("m (random-seed-42): 100 % of the non-zero") and "float16" in lost
    assert "sees no image" in underflow_message("m (random-seed-42)", "float16", nonzero=0, zeroed=0)
