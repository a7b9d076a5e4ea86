"""Gallery index and text search (rscc.index, `rscc index`, `rscc search`)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rscc.errors import ConfigError, RsccError
from rscc.index import (
    GalleryIndex,
    Int8Codes,
    build_index,
    encode_query,
    exact_search,
    int8_matmul_available,
    int8_search,
    search_text,
)


# ---------------------------------------------------------------------------- helpers
class StubEmbedder:
    """Stands for a run: a pair embeds as the unit vector of (mean colour of A, mean colour of B)."""

    def __init__(self, name="model-a", fail_after=None):
        self.identity = {"id": name, "run_dir": f"/runs/{name}"}
        self.pairs_embedded = 0
        self.calls = 0
        self.fail_after = fail_after  # raise on this call (an interrupted build)
        self.query_vector = F.normalize(torch.tensor([1.0, 0, 0, 0, 0, 0]), dim=0)

    @staticmethod
    def transform(img):
        return torch.tensor(np.asarray(img), dtype=torch.float32).mean((0, 1)) / 255  # (3,)

    def embed_pairs(self, img_a, img_b):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        self.pairs_embedded += len(img_a)
        return F.normalize(torch.cat([img_a, img_b], 1), dim=1)  # (B, 6)

    def embed_text(self, query):
        return self.query_vector


def write_pairs(folder, colours, size=(8, 8)):
    """One pair per (name, colour of A, colour of B); returns the folder."""
    for name, col_a, col_b in colours:
        for side, col in (("A", col_a), ("B", col_b)):
            (folder / side).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, col).save(folder / side / name)
    return folder


COLOURS = [(f"p{i}.png", (40 * i, 200 - 30 * i, 90), (250 - 20 * i, 20 * i, 10 * i)) for i in range(6)]


def expected_embedding(col_a, col_b):
    return F.normalize(torch.tensor([*col_a, *col_b], dtype=torch.float32) / 255, dim=0)


# ---------------------------------------------------------------------------- exact search
def test_exact_search_returns_the_known_top_k_of_hand_made_embeddings():
    gallery = F.normalize(torch.tensor([[1.0, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]]), dim=1)
    query = torch.tensor([[1.0, 0, 0]])
    scores, indices = exact_search(gallery, query, k=3)
    assert indices.tolist() == [[0, 2, 4]]
    assert scores[0].tolist() == pytest.approx([1.0, 2 ** -0.5, 3 ** -0.5], abs=1e-6)


def test_exact_search_in_chunks_equals_a_single_matrix_multiply():
    torch.manual_seed(0)
    gallery = F.normalize(torch.randn(1000, 16), dim=1)
    queries = F.normalize(torch.randn(5, 16), dim=1)
    scores, indices = exact_search(gallery, queries, k=7, chunk_rows=64)
    expected_scores, expected_indices = (queries @ gallery.T).topk(7, dim=1)
    assert torch.equal(indices, expected_indices)
    assert torch.allclose(scores, expected_scores, atol=1e-6)


@pytest.mark.parametrize("queries", [1, 20])  # float16 scoring + float32 rescoring; converted chunks
def test_float16_gallery_search_is_exact_over_the_stored_values(queries):
    torch.manual_seed(1)
    gallery = F.normalize(torch.randn(3000, 32), dim=1)
    gallery[100:140] = gallery[7] + 1e-2 * torch.randn(40, 32)  # near duplicates around one row
    gallery = F.normalize(gallery, dim=1).half()
    q = F.normalize(torch.randn(queries, 32), dim=1)
    q[0] = gallery[7].float()
    scores, indices = exact_search(gallery, q, k=10, chunk_rows=500)
    exact = q.double() @ gallery.double().T
    expected_scores, expected_indices = exact.topk(10, dim=1)
    # the top 10 up to float32 resolution: rows whose exact scores differ by less than the float32
    # rescoring's rounding (~1e-7 at 1.0) may come in either order, as float32 exact search gives them
    assert all(len(set(row.tolist())) == 10 for row in indices)
    assert torch.allclose(exact.gather(1, indices), expected_scores, rtol=0, atol=1e-6)
    assert torch.allclose(scores.double(), expected_scores, atol=1e-6)
    assert (indices != expected_indices).sum() <= 2 * queries  # at most a swapped pair per query


needs_int8 = pytest.mark.skipif(not int8_matmul_available(), reason="this torch has no CPU torch._int_mm")


def test_int8_codes_bound_the_distance_of_every_row_to_its_code():
    torch.manual_seed(2)
    rows = F.normalize(torch.randn(700, 48), dim=1)
    rows[5] = 0  # a zero row has a zero code
    codes = Int8Codes.from_rows(rows, chunk_rows=128)
    approx = codes.codes.float() * codes.scales[:, None]
    assert codes.codes.dtype == torch.int8 and codes.codes.abs().max() <= 127
    assert torch.all((rows - approx).norm(dim=1) <= codes.residuals)
    assert torch.all(approx.norm(dim=1) <= codes.norms)
    assert codes.residuals.max() < 0.05 and codes.residuals[5] == 0  # 8 bits: ~1/127 of each value


@needs_int8
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("queries", [1, 3])
def test_int8_search_finds_the_exact_top_k_even_among_near_ties(dtype, queries):
    torch.manual_seed(3)
    gallery = F.normalize(torch.randn(5000, 64), dim=1)
    # 60 rows within a fraction of the 8-bit error of one row: the first pass cannot order them
    gallery[1000:1060] = gallery[11] + 1e-3 * torch.randn(60, 64)
    gallery = F.normalize(gallery, dim=1).to(dtype)
    q = F.normalize(torch.randn(queries, 64), dim=1)
    q[0] = gallery[11].float() + 1e-3 * torch.randn(64)
    scores, indices = int8_search(Int8Codes.from_rows(gallery), gallery, q, k=10)
    exact = q.double() @ gallery.double().T
    expected_scores, expected_indices = exact.topk(10, dim=1)
    # the top 10 up to float32 resolution: rows whose exact scores differ by less than the float32
    # rescoring's rounding (~1e-7 at 1.0) may come in either order, as float32 exact search gives them
    assert all(len(set(row.tolist())) == 10 for row in indices)
    assert torch.allclose(exact.gather(1, indices), expected_scores, rtol=0, atol=1e-6)
    assert torch.allclose(scores.double(), expected_scores, atol=1e-6)
    assert (indices != expected_indices).sum() <= 2 * queries  # at most a swapped pair per query


@needs_int8
def test_gallery_search_switches_to_int8_codes_from_the_second_query_of_a_large_gallery():
    torch.manual_seed(4)
    index = GalleryIndex.from_embeddings(torch.randn(20_000, 32).half())
    q = F.normalize(torch.randn(32), dim=0)
    first = index.search(q, k=5)
    assert index._int8 is None  # a one-off search does not make the codes
    second = index.search(q, k=5)
    assert index._int8 is not None
    assert torch.equal(first[1], second[1]) and torch.allclose(first[0], second[0], atol=1e-6)
    assert torch.equal(index.search(q, k=5, prefilter="none")[1], first[1])
    small = GalleryIndex.from_embeddings(torch.randn(100, 32))
    small.search(q, k=5), small.search(q, k=5)
    assert small._int8 is None  # a small gallery is scanned in float
    assert torch.equal(small.search(q, k=5, prefilter="int8")[1], small.search(q, k=5, prefilter="none")[1])
    with pytest.raises(ConfigError, match="prefilter 'fast' does not exist"):
        index.search(q, prefilter="fast")


# ---------------------------------------------------------------------------- building
def test_index_stores_one_unit_embedding_id_and_paths_per_pair(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:3])
    index = build_index(pairs, StubEmbedder(), tmp_path / "index", progress=False)
    assert index.ids == ["p0.png", "p1.png", "p2.png"]
    assert index.paths_b[1] == str((pairs / "B" / "p1.png").resolve())
    assert torch.allclose(index.embeddings[2], expected_embedding(*COLOURS[2][1:]), atol=1e-6)
    assert index.dtype == "float32"


def test_rebuilding_embeds_only_the_new_pairs(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:4])
    build_index(pairs, StubEmbedder(), tmp_path / "index", batch_size=2, progress=False)
    write_pairs(pairs, COLOURS[4:])
    again = StubEmbedder()
    index = build_index(pairs, again, tmp_path / "index", batch_size=2, progress=False)
    assert again.pairs_embedded == 2
    assert len(index) == 6
    assert torch.allclose(index.embeddings[5], expected_embedding(*COLOURS[5][1:]), atol=1e-6)


def test_an_interrupted_build_keeps_its_commits_and_resumes(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS)
    with pytest.raises(KeyboardInterrupt):  # commit after every batch, fail on the third batch
        build_index(pairs, StubEmbedder(fail_after=2), tmp_path / "index", batch_size=2, progress=False,
                    commit_every_s=0)
    assert len(GalleryIndex.load(tmp_path / "index")) == 4
    resumed = StubEmbedder()
    index = build_index(pairs, resumed, tmp_path / "index", batch_size=2, progress=False)
    assert resumed.pairs_embedded == 2
    assert index.ids == [c[0] for c in COLOURS]


def test_an_index_built_by_another_model_is_refused(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:2])
    build_index(pairs, StubEmbedder("model-a"), tmp_path / "index", progress=False)
    with pytest.raises(RsccError, match="different models cannot be mixed"):
        build_index(pairs, StubEmbedder("model-b"), tmp_path / "index", progress=False)


def test_float16_storage_round_trips(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS)
    build_index(pairs, StubEmbedder(), tmp_path / "index", dtype="float16", progress=False)
    index = GalleryIndex.load(tmp_path / "index")
    expected = torch.stack([expected_embedding(a, b) for _, a, b in COLOURS]).half()
    assert index.embeddings.dtype == torch.float16
    assert torch.equal(index.embeddings, expected)


def test_a_dtype_other_than_the_index_is_refused(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:2])
    build_index(pairs, StubEmbedder(), tmp_path / "index", dtype="float16", progress=False)
    with pytest.raises(RsccError, match="stores float16, not float32"):
        build_index(pairs, StubEmbedder(), tmp_path / "index", dtype="float32", progress=False)


def test_an_image_without_a_partner_is_named(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:2])
    (pairs / "B" / "p1.png").unlink()
    with pytest.raises(RsccError, match="no image named p1.png"):
        build_index(pairs, StubEmbedder(), tmp_path / "index", progress=False)


def test_a_levircc_split_is_indexed_under_its_file_names(tmp_path):
    root = tmp_path / "levir"
    records = []
    for n, split in enumerate(["train", "test", "test"]):
        name = f"{split}_{n:06d}.png"
        write_pairs(root / "images" / split, [(name, (10 * n, 0, 0), (0, 10 * n, 0))])
        records.append({"filepath": split, "filename": name, "imgid": n, "split": split,
                        "sentences": [{"tokens": ["a", "house"], "raw": " a house ."}] * 5})
    (root / "LevirCCcaptions.json").write_text(json.dumps({"images": records}))
    index = build_index(root, StubEmbedder(), tmp_path / "index", split="test", progress=False)
    assert index.ids == ["test_000001.png", "test_000002.png"]


# ---------------------------------------------------------------------------- searching
def test_faiss_flat_agrees_with_torch(tmp_path):
    pytest.importorskip("faiss")
    torch.manual_seed(2)
    for dtype in ("float32", "float16"):
        index = synthetic_index(tmp_path / dtype, torch.randn(500, 24), dtype)
        queries = torch.randn(4, 24)
        exact_scores, exact_indices = index.search(queries, k=5)
        scores, indices = index.search(queries, k=5, backend="faiss-flat")
        assert torch.equal(indices, exact_indices)
        assert torch.allclose(scores, exact_scores, atol=1e-5)


def test_faiss_ivf_visiting_every_cell_is_exact(tmp_path):
    pytest.importorskip("faiss")
    torch.manual_seed(3)
    index = synthetic_index(tmp_path, torch.randn(2000, 16), "float32")
    queries = torch.randn(3, 16)
    _, exact_indices = index.search(queries, k=5)
    _, indices = index.search(queries, k=5, backend="faiss-ivf", nlist=8, nprobe=8)
    assert torch.equal(indices, exact_indices)
    assert len(list((tmp_path / "faiss").glob("faiss-ivf-nlist8-*.faiss"))) == 1  # cached for the next process
    _, reloaded = GalleryIndex.load(tmp_path).search(queries, k=5, backend="faiss-ivf", nlist=8, nprobe=8)
    assert torch.equal(reloaded, exact_indices)


def test_k_larger_than_the_gallery_returns_the_whole_gallery(tmp_path):
    index = synthetic_index(tmp_path, torch.randn(3, 4), "float32")
    scores, indices = index.search(torch.randn(4), k=10)
    assert sorted(indices[0].tolist()) == [0, 1, 2]


def test_a_query_of_the_wrong_dimension_is_an_rscc_error(tmp_path):
    index = synthetic_index(tmp_path, torch.randn(3, 4), "float32")
    with pytest.raises(RsccError, match="4-dimensional"):
        index.search(torch.randn(1, 5), k=1)


def synthetic_index(directory, rows, dtype):
    """An index of the given rows (normalised), written as a build would write it."""
    from rscc.index import FORMAT, VERSION, PairFiles, _Writer

    n = len(rows)
    meta = {"format": FORMAT, "version": VERSION, "uuid": "0" * 32, "model": {"id": "synthetic"}, "dim": rows.shape[1],
            "dtype": dtype, "count": 0, "shards": [], "ids": [], "paths_a": [], "paths_b": []}
    pairs = [PairFiles(f"r{i}", f"/a/{i}.png", f"/b/{i}.png") for i in range(n)]
    _Writer(directory, meta).commit(F.normalize(rows.float(), dim=1).to(getattr(torch, dtype)), pairs)
    return GalleryIndex.load(directory)


# ---------------------------------------------------------------------------- queries
@pytest.fixture
def vocab():
    from rscc.data.levircc import Vocabulary

    words = ["new", "houses", "along", "a", "road"]
    return Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})


def test_a_query_is_encoded_like_a_caption_with_unknown_words_as_unk(vocab):
    ids, pad = encode_query("New houses, along a CURVED road!", vocab, max_len=10)
    assert ids.tolist() == [[1, 4, 5, 6, 7, 2, 8, 3, 0, 0]]
    assert pad.tolist() == [[False] * 8 + [True] * 2]


def test_a_query_of_10000_characters_keeps_its_first_max_len_minus_2_words(vocab):
    query = ("new houses along a road " * 2000)[:10_000]
    with pytest.warns(UserWarning, match="only the first 39 are used"):
        ids, pad = encode_query(query, vocab, max_len=41)
    assert ids.shape == (1, 41)
    assert ids[0, -1].item() == 3 and not pad.any()


@pytest.mark.parametrize("query", ["", "   ", "?!.,"])
def test_a_query_without_words_is_an_rscc_error(vocab, query):
    with pytest.raises(RsccError, match="has no words"):
        encode_query(query, vocab, max_len=41)


def test_search_text_returns_ranked_pairs_with_scores_and_paths(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS)
    embedder = StubEmbedder()
    build_index(pairs, embedder, tmp_path / "index", progress=False)
    results = search_text(tmp_path / "index", "red before", run_dir=embedder, k=2)
    cosines = [float(expected_embedding(a, b)[0]) for _, a, b in COLOURS]  # the query is the first axis
    best = np.argsort(cosines)[::-1][:2]
    assert [r["rank"] for r in results] == [1, 2]
    assert [r["id"] for r in results] == [COLOURS[i][0] for i in best]
    assert results[0]["score"] == pytest.approx(cosines[best[0]], abs=1e-6)
    assert results[0]["path_a"] == str((pairs / "A" / COLOURS[best[0]][0]).resolve())


def test_search_text_with_another_model_is_refused(tmp_path):
    pairs = write_pairs(tmp_path / "pairs", COLOURS[:2])
    build_index(pairs, StubEmbedder("model-a"), tmp_path / "index", progress=False)
    with pytest.raises(RsccError, match="not comparable"):
        search_text(tmp_path / "index", "a road", run_dir=StubEmbedder("model-b"))


# ---------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, make_tiny_run):
    """A run directory with a random-init tiny model (backbone included) and a small vocabulary."""
    from rscc.data.levircc import Vocabulary

    words = ["new", "houses", "along", "a", "curved", "road"]
    vocab = Vocabulary({"PAD": 0, "START": 1, "UNK": 2, "END": 3, **{w: i + 4 for i, w in enumerate(words)}})
    return make_tiny_run(tmp_path_factory.mktemp("run"), vocab)


def test_index_and_search_commands_find_pairs_with_the_models_cosine(tiny_run, tmp_path, capsys):
    from rscc.cli import main
    from rscc.runs import load_run

    pairs = write_pairs(tmp_path / "pairs", COLOURS[:5], size=(40, 40))
    out = tmp_path / "index"
    assert main(["index", str(pairs), "--run", str(tiny_run), "--out", str(out), "--no-progress"]) == 0
    assert main(["index", str(pairs), "--run", str(tiny_run), "--out", str(out), "--no-progress"]) == 0
    assert "0 pair(s) added, 5 in" in capsys.readouterr().out
    assert main(["search", str(out), "new houses along a curved road", "--k", "3", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in results] == [1, 2, 3]

    model, config, vocab = load_run(tiny_run)
    ids, pad = encode_query("new houses along a curved road", vocab, config.model.max_len)
    top = pairs / "A" / results[0]["id"]
    with torch.no_grad():
        text = F.normalize(model.encode_text(ids, pad), dim=1)
        t = model.backbone.transform
        img_a = t(Image.open(top).convert("RGB"))[None]
        img_b = t(Image.open(pairs / "B" / results[0]["id"]).convert("RGB"))[None]
        vis = F.normalize(model.encode_images(img_a, img_b)[0], dim=1)
    assert results[0]["score"] == pytest.approx(float(text @ vis.T), abs=1e-5)


def test_search_command_with_an_empty_query_exits_2_with_one_line(tiny_run, tmp_path, capsys):
    from rscc.cli import main

    pairs = write_pairs(tmp_path / "pairs", COLOURS[:2], size=(40, 40))
    main(["index", str(pairs), "--run", str(tiny_run), "--out", str(tmp_path / "index"), "--no-progress"])
    capsys.readouterr()
    assert main(["search", str(tmp_path / "index"), "  "]) == 2
    assert "has no words" in capsys.readouterr().err


def test_an_in_memory_index_normalises_its_rows_and_searches_them():
    index = GalleryIndex.from_embeddings(torch.tensor([[3.0, 4.0], [0.0, 2.0]]), ids=["x", "y"])
    scores, indices = index.search(torch.tensor([0.0, 1.0]), k=2)
    assert indices.tolist() == [[1, 0]]
    assert scores[0].tolist() == pytest.approx([1.0, 0.8])
