"""The zero-shot |B − A| CLIP baseline, on a tiny randomly initialised open_clip model (no download)."""
import json
import warnings

import pytest
import torch

from rscc.metrics.retrieval import cross_modal_retrieval
from rscc.metrics.zero_shot import zero_shot_embeddings

TINY = {"embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("open_clip") / "rscc-tiny-clip.json"
    path.write_text(json.dumps(TINY))
    open_clip.add_model_config(path)
    return "rscc-tiny-clip"


def test_zero_shot_gives_one_embedding_per_pair_and_per_caption(tiny_clip):
    torch.manual_seed(0)
    before, after = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    captions = ["a road is built", "the scene is the same as before", "houses appear", "trees are removed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair_emb, text_emb = zero_shot_embeddings(tiny_clip, None, before, after, captions, batch_size=2)
    assert pair_emb.shape == (3, 16)
    assert text_emb.shape == (4, 16)
    scores = cross_modal_retrieval(pair_emb, text_emb, torch.tensor([0, 1, 2, 2]))
    assert scores["text_to_pair"]["n_gallery"] == 3


def test_zero_shot_without_weights_warns_that_it_is_randomly_initialised(tiny_clip):
    image = torch.zeros(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        zero_shot_embeddings(tiny_clip, None, image, image, ["a road"])


def test_zero_shot_with_unloadable_weights_falls_back_to_random_init_with_a_warning(tiny_clip, tmp_path):
    image = torch.zeros(1, 3, 32, 32)
    with pytest.warns(UserWarning, match="could not load weights"):
        pair_emb, _ = zero_shot_embeddings(tiny_clip, str(tmp_path / "missing.pt"), image, image, ["a road"])
    assert pair_emb.shape == (1, 16)


def test_zero_shot_preprocesses_pil_images(tiny_clip):
    from PIL import Image

    image = Image.new("RGB", (64, 64), (120, 30, 200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pair_emb, _ = zero_shot_embeddings(tiny_clip, None, [image, image], [image, image], ["a road"])
    assert pair_emb.shape == (2, 16)
