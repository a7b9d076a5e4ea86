"""Retrieval metrics on small galleries whose rankings are worked out by hand.

The gallery embeddings are the unit vectors e_0 … e_{N-1}, so a query's scores are its own
components (divided by its norm) and its ranking can be read off the vector.
"""
import pytest
import torch

from rscc.metrics.retrieval import authors_retrieval, caption_duplicates, cross_modal_retrieval, first_caption_index

# --- authors' protocol --------------------------------------------------------------------
# pairs 0, 1: no change (label -1); pairs 2, 3: changed (label = own id)
LABELS = torch.tensor([-1, -1, 2, 3])
PAIRS = torch.eye(4)
QUERIES = torch.tensor([
    [1.0, 0, 3, 2],   # q0: ranks 2, 3, 0, 1; relevant {0, 1}
    [0.0, 4, 3, 1],   # q1: ranks 1, 2, 3, 0; relevant {0, 1}
    [3.0, 0, 2, 1],   # q2: ranks 0, 2, 3, 1; relevant {2}
    [0.0, 0, 1, 4],   # q3: ranks 3, 2, 1, 0; relevant {3}
])
# first captions of pairs 2 and 3 identical (inner product exactly 1.0)
CAPTIONS = torch.tensor([[1.0, 0], [1.0, 0], [0.0, 1], [0.0, 1]])


def test_authors_protocol_precision_recall_mrr_by_label():
    result = authors_retrieval(PAIRS, QUERIES, LABELS, ks=(1, 2))
    # per query @1: P (0, 1, 0, 1), R (0, 1/2, 0, 1), RR (0, 1, 0, 1)
    # per query @2: P (0, 1/2, 1/2, 1/2), R (0, 1/2, 1, 1), RR (0, 1, 1/2, 1)
    assert result["P@1"] == pytest.approx(50.0)
    assert result["R@1"] == pytest.approx(37.5)
    assert result["MRR@1"] == pytest.approx(50.0)
    assert result["P@2"] == pytest.approx(37.5)
    assert result["R@2"] == pytest.approx(62.5)
    assert result["MRR@2"] == pytest.approx(62.5)


def test_authors_protocol_counts_caption_duplicates_as_relevant():
    result = authors_retrieval(PAIRS, QUERIES, LABELS, caption_emb=CAPTIONS, theta=1.0, ks=(1, 2))
    # q2 and q3 now both have relevant {2, 3}
    # @1: R (0, 1/2, 0, 1/2); @2: P (0, 1/2, 1/2, 1), R (0, 1/2, 1/2, 1), RR (0, 1, 1/2, 1)
    assert result["R@1"] == pytest.approx(25.0)
    assert result["P@2"] == pytest.approx(50.0)
    assert result["R@2"] == pytest.approx(50.0)
    assert result["MRR@2"] == pytest.approx(62.5)


def test_authors_protocol_duplicates_need_similarity_at_least_theta():
    below = authors_retrieval(PAIRS, QUERIES, LABELS, caption_emb=CAPTIONS, theta=1.0001, ks=(1, 2))
    assert below["R@2"] == pytest.approx(62.5)  # as with labels only


def test_authors_protocol_changed_only_drops_no_change_pairs_from_queries_and_gallery():
    result = authors_retrieval(PAIRS, QUERIES, LABELS, ks=(1, 2), changed_only=True)
    # gallery {2, 3}: q2 scores (2, 1) ranks 2 first; q3 scores (1, 4) ranks 3 first
    assert result["n_queries"] == 2
    assert result["P@1"] == pytest.approx(100.0)
    assert result["P@2"] == pytest.approx(50.0)
    assert result["R@2"] == pytest.approx(100.0)


def test_authors_protocol_precision_divides_by_k_even_beyond_the_gallery_size():
    result = authors_retrieval(PAIRS, QUERIES, LABELS, ks=(10,))
    # every relevant pair is found (hits 2, 2, 1, 1) but P@10 = hits / 10
    assert result["P@10"] == pytest.approx(15.0)
    assert result["R@10"] == pytest.approx(100.0)


def test_authors_protocol_ranks_by_cosine_not_by_raw_inner_product():
    pairs = torch.tensor([[0.06, 0.08], [10.0, 0.0]])  # q0 has the larger inner product with pair 1
    query = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    result = authors_retrieval(pairs, query, torch.tensor([0, 1]), ks=(1,))
    assert result["P@1"] == pytest.approx(100.0)


def test_authors_protocol_ties_go_to_the_lower_gallery_index():
    pairs = torch.eye(3)
    query = torch.tensor([[1.0, 1, 1], [1.0, 1, 1], [1.0, 1, 1]])
    result = authors_retrieval(pairs, query, torch.tensor([0, 1, 2]), ks=(1,))
    assert result["P@1"] == pytest.approx(100 / 3)  # only query 0 finds its pair first


# --- standard cross-modal protocol --------------------------------------------------------
# 3 pairs, 2 captions each; every caption vector is a permutation of (1, 2, 3) (same norm)
TEXT_TO_PAIR = torch.tensor([0, 0, 1, 1, 2, 2])
TEXTS = torch.tensor([
    [3.0, 2, 1],  # t0 (pair 0): pair 0 at rank 1
    [1.0, 3, 2],  # t1 (pair 0): rank 3
    [2.0, 3, 1],  # t2 (pair 1): rank 1
    [3.0, 2, 1],  # t3 (pair 1): rank 2
    [1.0, 2, 3],  # t4 (pair 2): rank 1
    [3.0, 1, 2],  # t5 (pair 2): rank 2
])
PAIRS3 = torch.eye(3)


def test_text_to_pair_hit_rate_ranks_and_map():
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, ks=(1, 2))["text_to_pair"]
    # first ranks 1, 3, 1, 2, 1, 2
    assert result["R@1"] == pytest.approx(50.0)
    assert result["R@2"] == pytest.approx(500 / 6)
    assert result["median_rank"] == pytest.approx(1.5)
    assert result["mean_rank"] == pytest.approx(10 / 6)
    assert result["mAP"] == pytest.approx(100 * (1 + 1 / 3 + 1 + 1 / 2 + 1 + 1 / 2) / 6)
    assert (result["n_queries"], result["n_gallery"]) == (6, 3)


def test_text_to_pair_chance_level_is_k_over_n_with_one_correct_pair():
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, ks=(1, 2))["text_to_pair"]
    assert result["chance_R@1"] == pytest.approx(100 / 3)
    assert result["chance_R@2"] == pytest.approx(200 / 3)


def test_pair_to_text_ranks_all_captions_with_pessimistic_ties():
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, ks=(1, 2))["pair_to_text"]
    # pair 0 scores (3, 1, 2, 3, 1, 3): its t0 ties with t3, t5 and comes third; t1 sixth
    # pair 1 scores (2, 3, 3, 2, 2, 1): t2 second, t3 fifth
    # pair 2 scores (1, 2, 1, 1, 3, 2): t4 first, t5 third
    assert result["R@1"] == pytest.approx(100 / 3)
    assert result["R@2"] == pytest.approx(200 / 3)
    assert result["median_rank"] == pytest.approx(2.0)
    assert result["mAP"] == pytest.approx(100 * ((1 / 3 + 2 / 6) / 2 + (1 / 2 + 2 / 5) / 2 + (1 + 2 / 3) / 2) / 3)


def test_pair_to_text_chance_level_counts_every_correct_caption():
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, ks=(1, 2))["pair_to_text"]
    # 2 correct among 6: 1 - C(4, k) / C(6, k)
    assert result["chance_R@1"] == pytest.approx(100 * (1 - 4 / 6))
    assert result["chance_R@2"] == pytest.approx(100 * (1 - 6 / 15))


def test_duplicates_make_other_pairs_correct():
    duplicates = torch.zeros(6, 3, dtype=torch.bool)
    duplicates[1, 1] = True  # t1 also describes pair 1, which it ranks first
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, duplicates=duplicates, ks=(1,))
    assert result["text_to_pair"]["R@1"] == pytest.approx(400 / 6)


def test_first_caption_queries_use_one_caption_per_pair():
    first = first_caption_index(TEXT_TO_PAIR)
    result = cross_modal_retrieval(PAIRS3, TEXTS, TEXT_TO_PAIR, ks=(1,), text_queries=first)
    assert first.tolist() == [0, 2, 4]
    assert result["text_to_pair"]["R@1"] == pytest.approx(100.0)
    assert result["pair_to_text"]["n_gallery"] == 6


def test_caption_duplicates_match_identical_captions_up_to_case_and_punctuation():
    captions = ["A road is built.", "trees", "houses", "a road is built", "fields", "x"]
    duplicates = caption_duplicates(captions, TEXT_TO_PAIR)
    assert duplicates[0].tolist() == [True, True, False]
    assert duplicates[1].tolist() == [True, False, False]


def test_caption_duplicates_match_embeddings_at_theta():
    captions = ["a", "b", "c", "d", "e", "f"]
    emb = torch.tensor([[1.0, 0], [0.0, 1], [0.0, 1], [0.6, 0.8], [0.8, 0.6], [-1.0, 0]])
    duplicates = caption_duplicates(captions, TEXT_TO_PAIR, caption_emb=emb, theta=0.95)
    # caption 1 equals caption 2 (pair 1); caption 3 is at 0.96 from caption 4 (pair 2)
    assert duplicates[1].tolist() == [True, True, False]
    assert duplicates[3].tolist() == [False, True, True]
    assert duplicates[5].tolist() == [False, False, True]


def _ranking_by_loops(scores, correct, ks):
    """Hit rate, first rank and AP written as plain loops over each query's sorted gallery."""
    firsts, average_precisions = [], []
    for row, is_correct in zip(scores.tolist(), correct.tolist()):
        order = sorted(range(len(row)), key=lambda j: (-row[j], is_correct[j]))
        ranked = [is_correct[j] for j in order]
        firsts.append(ranked.index(True) + 1)
        precisions = [sum(ranked[:i]) / i for i in range(1, len(ranked) + 1) if ranked[i - 1]]
        average_precisions.append(sum(precisions) / len(precisions))
    result = {f"R@{k}": 100 * sum(f <= k for f in firsts) / len(firsts) for k in ks}
    result["mean_rank"] = sum(firsts) / len(firsts)
    result["mAP"] = 100 * sum(average_precisions) / len(average_precisions)
    return result


def test_cross_modal_metrics_agree_with_a_loop_implementation_on_a_random_gallery():
    generator = torch.Generator().manual_seed(0)
    pairs, texts = torch.randn(7, 4, generator=generator), torch.randn(21, 4, generator=generator)
    text_to_pair = torch.arange(7).repeat_interleave(3)
    duplicates = torch.rand(21, 7, generator=generator) < 0.15
    result = cross_modal_retrieval(pairs, texts, text_to_pair, duplicates=duplicates, ks=(1, 3))
    scores = torch.nn.functional.normalize(texts, dim=1) @ torch.nn.functional.normalize(pairs, dim=1).T
    correct = torch.nn.functional.one_hot(text_to_pair, 7).bool() | duplicates
    for direction, (s, c) in {"text_to_pair": (scores, correct), "pair_to_text": (scores.T, correct.T)}.items():
        expected = _ranking_by_loops(s, c, (1, 3))
        assert {k: result[direction][k] for k in expected} == pytest.approx(expected)
