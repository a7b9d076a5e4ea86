"""The change explorer (rscc.widgets): search, a pair's details, and the ipywidgets UI, headless.

One smoke-profile training (a few seconds) in a temporary runs folder serves every test."""
import json

import pytest

from rscc.errors import RsccError
from rscc.index import INDEX_FILE, Embedder, GalleryIndex
from rscc.widgets import ChangeExplorer, gallery_index

QUERY = "many houses are built along the road"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(run directory, dataset root, index folder) of the smoke profile's main run."""
    from rscc.experiments.profiles import get_profile
    from rscc.experiments.study import dataset_root, train_and_evaluate

    settings = get_profile("smoke", runs_dir=tmp_path_factory.mktemp("runs"))
    train_and_evaluate(settings, "03_joint_training", overrides=settings.main_overrides, meteor=False, progress=False)
    run_dir, root = settings.run_dir("03_joint_training"), dataset_root(settings, progress=False)
    return run_dir, root, gallery_index(run_dir, root, split="test")


@pytest.fixture(scope="module")
def explorer(smoke_run):
    run_dir, root, index_dir = smoke_run
    return ChangeExplorer(run_dir, index_dir, root)


@pytest.fixture(scope="module")
def test_pairs(smoke_run):
    from rscc.data.levircc import load_pairs

    return {p.filename: p for p in load_pairs(smoke_run[1], ["test"])}


def test_the_gallery_is_the_test_split_of_the_dataset(explorer, test_pairs):
    assert sorted(explorer.index.ids) == sorted(test_pairs)


def test_search_returns_k_pairs_ranked_by_decreasing_score(explorer):
    results = explorer.search(QUERY, k=5)
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["id"] for r in results}) == 5


def test_search_scores_are_cosines_of_the_query_and_the_pair_embeddings(explorer):
    query = explorer.embedder.embed_text(QUERY)
    for result in explorer.search(QUERY, k=3):
        row = explorer.index.ids.index(result["id"])
        assert result["score"] == pytest.approx(float(query @ explorer.index.embeddings[row]), abs=1e-5)


def test_search_results_carry_the_pairs_first_reference_and_change_flag(explorer, test_pairs):
    for result in explorer.search(QUERY, k=4):
        pair = test_pairs[result["id"]]
        assert result["reference"] == pair.sentences[0]
        assert result["changed"] == pair.changed


def test_show_pair_gives_the_greedy_and_beam_captions_of_rscc_caption(explorer, test_pairs):
    from rscc.data.images import open_rgb
    from rscc.generate import caption_pairs

    pair_id = explorer.search(QUERY, k=1)[0]["id"]
    detail = explorer.show_pair(pair_id, figure=False)
    transform, model, vocab = explorer.embedder.transform, explorer.embedder.model, explorer.embedder.vocab
    img_a, img_b = (transform(open_rgb(p))[None] for p in (detail.path_a, detail.path_b))
    assert detail.greedy == caption_pairs(model, vocab, img_a, img_b)[0]
    assert detail.beam == caption_pairs(model, vocab, img_a, img_b, beam=explorer.beam)[0]
    assert detail.references == test_pairs[pair_id].sentences
    assert len(detail.references) == 5


def test_show_pair_attention_has_one_normalised_map_per_generated_word(explorer):
    detail = explorer.show_pair(explorer.index.ids[0], figure=False)
    side = explorer.embedder.config.model.image_size // explorer.embedder.config.model.tiny_patch
    assert detail.attention.shape == (len(detail.words), side, side)
    assert detail.attention.sum(dim=(1, 2)).tolist() == pytest.approx([1.0] * len(detail.words), abs=1e-5)


def test_show_pair_of_an_id_outside_the_gallery_is_an_rscc_error(explorer):
    with pytest.raises(RsccError, match="no pair with id 'train_000001.png'"):
        explorer.show_pair("train_000001.png")


def test_widget_is_an_ipywidget_whose_query_fills_the_grid_with_k_cards(explorer):
    import ipywidgets

    ui = explorer.widget(QUERY, k=4)
    assert isinstance(ui, ipywidgets.Widget)
    assert len(explorer.controls.grid.children) == 4
    assert explorer.controls.status.value.startswith("4 pairs for")


def test_clicking_a_card_shows_that_pairs_captions_and_attention(explorer):
    explorer.widget(QUERY, k=3)
    second = explorer.search(QUERY, k=3)[1]["id"]
    explorer.controls.grid.children[1].children[-1].click()
    detail = explorer.show_pair(second, figure=False)
    assert f"<b>{second}</b>" in explorer.controls.detail_text.value
    assert detail.references[0] in explorer.controls.detail_text.value
    assert bytes(explorer.controls.detail_figure.value).startswith(b"\x89PNG")  # the attention figure


def test_a_query_without_words_shows_the_error_and_empties_the_grid(explorer):
    explorer.widget(QUERY, k=3)
    explorer.controls.query.value = "?!"
    assert "has no words" in explorer.controls.status.value
    assert explorer.controls.grid.children == ()


def _index_of_another_model(run_dir, root, out):
    """A gallery index of the run's test split whose recorded model id is another model's."""
    index_dir = gallery_index(run_dir, root, out=out)
    meta = json.loads((index_dir / INDEX_FILE).read_text())
    meta["model"]["id"] = "0" * 64
    (index_dir / INDEX_FILE).write_text(json.dumps(meta))
    return index_dir


def test_an_index_of_another_model_is_refused_by_the_explorer(smoke_run, tmp_path):
    run_dir, root, _ = smoke_run
    index_dir = _index_of_another_model(run_dir, root, tmp_path / "index")
    with pytest.raises(RsccError, match="built by model 000000000000"):
        ChangeExplorer(run_dir, index_dir, root)


def test_gallery_index_rebuilds_an_index_left_by_an_earlier_model(smoke_run, tmp_path):
    run_dir, root, _ = smoke_run
    index_dir = _index_of_another_model(run_dir, root, tmp_path / "index")
    stale_ids = json.loads((index_dir / INDEX_FILE).read_text())["ids"]
    rebuilt = GalleryIndex.load(gallery_index(run_dir, root, out=index_dir))
    assert rebuilt.model["id"] == Embedder.from_run(run_dir).identity["id"]
    assert len(rebuilt) == len(stale_ids)
