"""L_cap and L_con (METHOD §3): conformance with the authors' values, hand-computed cases, DDP gather."""
import json
import math
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from rscc.config import LossConfig
from rscc.losses import (
    ContrastiveLoss,
    caption_keys,
    caption_loss,
    false_negative_mask,
    gather_for_contrastive,
    info_nce,
)
from rscc.model.verify import verify_contrastive

E1, E2, E3 = torch.eye(3)
LOG_TINY_F32 = math.log(torch.finfo(torch.float32).tiny)  # -87.3365...


def _identity_batch():
    """S = identity (each image matches only its own text), three distinct pairs, tau = 1;
    captions 0 and 1 are false negatives of each other."""
    vis = torch.stack([E1, E2, E3])
    text = torch.stack([E1, E2, E3])
    labels = torch.tensor([0, 1, 2])
    false_negatives = torch.zeros(3, 3, dtype=torch.bool)
    false_negatives[0, 1] = false_negatives[1, 0] = True
    return vis, text, labels, false_negatives


def _close(got, want, tol=1e-6):
    return abs(float(got.detach() if torch.is_tensor(got) else got) - want) <= tol + tol * abs(want)


# ----------------------------------------------------------------------- conformance
def test_every_contrastive_case_of_the_authors_fixture_is_reproduced(shared):
    fixture = shared / "fixtures" / "rsicrc-reference"
    cases = json.loads((fixture / "expected.json").read_text())["contrastive"]
    expected, inputs = load_file(str(fixture / "expected.safetensors")), load_file(str(fixture / "inputs.safetensors"))
    mismatches = []
    for case in cases:
        mask = false_negative_mask(inputs["sentence_embeddings"], theta=case["threshold"], tolerance=0.0)
        loss, pairs = info_nce(expected["vis_emb"], expected["text_emb"], inputs["flags"], mask,
                               temperature=case["temperature"], fn_mode="fna" if case["fna"] else "fne")
        if abs(float(loss) - case["loss"]) > 1e-5 + 1e-5 * abs(case["loss"]) or pairs != case["num_positive_pairs"]:
            mismatches.append((case, float(loss), pairs))
    assert len(cases) == 16
    assert mismatches == []


def test_verify_contrastive_reports_every_case_ok(shared):
    results = verify_contrastive(shared / "fixtures" / "rsicrc-reference")
    assert len(results) == 16
    assert all(r["ok"] for r in results), [r for r in results if not r["ok"]]
    assert max(r["abs_error"] for r in results) <= 1e-5


def test_caption_loss_matches_the_authors_fixture(shared):
    fixture = shared / "fixtures" / "rsicrc-reference"
    expected, inputs = load_file(str(fixture / "expected.safetensors")), load_file(str(fixture / "inputs.safetensors"))
    got = caption_loss(expected["logits"], inputs["labels"])
    assert _close(got, float(expected["cap_loss"][0]), 1e-5)


# ----------------------------------------------------------------------- hand-computed InfoNCE
def test_without_false_negative_handling_every_anchor_sees_both_other_texts():
    vis, text, labels, fn = _identity_batch()
    loss, pairs = info_nce(vis, text, labels, fn, temperature=1.0, fn_mode="none")
    assert pairs == 3
    assert _close(loss, math.log(1 + 2 / math.e))


def test_fne_removes_false_negatives_from_the_denominator():
    vis, text, labels, fn = _identity_batch()
    loss, pairs = info_nce(vis, text, labels, fn, temperature=1.0, fn_mode="fne")
    # anchors 0 and 1 keep one negative (text 2), anchor 2 keeps two
    assert pairs == 3
    assert _close(loss, (2 * math.log(1 + 1 / math.e) + math.log(1 + 2 / math.e)) / 3)


def test_fna_also_makes_false_negatives_positive_pairs():
    vis, text, labels, fn = _identity_batch()
    loss, pairs = info_nce(vis, text, labels, fn, temperature=1.0, fn_mode="fna")
    # the two attracted pairs (0, 1) and (1, 0) have S = 0 against one negative at S = 0: log 2 each
    assert pairs == 5
    assert _close(loss, (2 * math.log(1 + 1 / math.e) + math.log(1 + 2 / math.e) + 2 * math.log(2)) / 5)


def test_other_positives_are_not_in_the_denominator_and_the_mean_is_over_pairs():
    vis, text, _, _ = _identity_batch()
    labels = torch.tensor([7, 7, 9])  # two captions of pair 7, one of pair 9
    loss, pairs = info_nce(vis, text, labels, None, temperature=1.0, fn_mode="none")
    assert pairs == 5
    assert _close(loss, (2 * math.log(1 + 1 / math.e) + 2 * math.log(2) + math.log(1 + 2 / math.e)) / 5)


def test_no_change_pairs_are_positives_of_each_other():
    vis, text, _, _ = _identity_batch()
    labels = torch.tensor([-1, -1, 4])
    _, pairs = info_nce(vis, text, labels, None, temperature=1.0, fn_mode="none")
    assert pairs == 5


def test_matches_the_formula_written_out_pair_by_pair():
    generator = torch.Generator().manual_seed(3)
    vis, text = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    labels = torch.tensor([-1, -1, 2, 2, 3, 4, 5, 6])
    fn = torch.zeros(8, 8, dtype=torch.bool)
    fn[4, 5] = fn[5, 4] = fn[2, 6] = fn[6, 2] = True
    tau = 0.1
    s = F.normalize(vis.double(), dim=1) @ F.normalize(text.double(), dim=1).T
    terms = []
    for i in range(8):
        for j in range(8):
            positive = i == j or labels[i] == labels[j] or fn[i, j]
            if positive:
                negatives = [k for k in range(8) if k != i and labels[i] != labels[k] and not fn[i, k]]
                denominator = math.exp(s[i, j] / tau) + sum(math.exp(s[i, k] / tau) for k in negatives)
                terms.append(-math.log(math.exp(s[i, j] / tau) / denominator))
    loss, pairs = info_nce(vis, text, labels, fn, temperature=tau, fn_mode="fna")
    assert pairs == len(terms) == 16
    assert _close(loss, sum(terms) / len(terms), 1e-5)


def test_a_positive_whose_probability_underflows_costs_minus_log_tiny_like_the_authors():
    # anchor 0: positive at cosine -1, negative at cosine +1, tau 0.01 -> p = exp(-200) underflows
    vis = torch.stack([E1, E1])
    text = torch.stack([-E1, E1])
    loss, pairs = info_nce(vis, text, torch.tensor([0, 1]), None, temperature=0.01, fn_mode="none")
    assert pairs == 2
    assert _close(loss, -LOG_TINY_F32 / 2, 1e-5)  # (87.34 + 0) / 2, not (200 + 0) / 2


def test_a_batch_without_negatives_gives_a_zero_that_keeps_the_graph():
    vis = torch.randn(4, 8, requires_grad=True)
    text = torch.randn(4, 8, requires_grad=True)
    loss, pairs = info_nce(vis, text, torch.full((4,), -1), None, fn_mode="fna")
    assert pairs == 16
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(vis.grad) == 0


def test_false_negative_elimination_can_remove_every_negative():
    vis, text, labels, _ = _identity_batch()
    everything = torch.ones(3, 3, dtype=torch.bool)
    loss, pairs = info_nce(vis, text, labels, everything, fn_mode="fne")
    assert pairs == 3 and float(loss) == 0.0


def test_symmetric_loss_averages_both_directions():
    r = 1 / math.sqrt(2)
    vis = torch.stack([E1, E2])
    text = torch.stack([E1, (E1 + E2) * r])  # S = [[1, r], [0, r]]
    loss, _ = info_nce(vis, text, torch.tensor([0, 1]), None, temperature=1.0, fn_mode="none", symmetric=True)
    image_to_text = (math.log(1 + math.exp(r - 1)) + math.log(1 + math.exp(-r))) / 2
    text_to_image = (math.log(1 + math.exp(-1)) + math.log(2)) / 2
    assert _close(loss, (image_to_text + text_to_image) / 2)


def test_loss_is_finite_and_differentiable_under_the_authors_temperature():
    vis = torch.randn(6, 16, requires_grad=True)
    text = torch.randn(6, 16, requires_grad=True)
    labels = torch.tensor([-1, 1, -1, 1, 2, 3])
    loss, _ = info_nce(vis, text, labels, torch.eye(6, dtype=torch.bool), temperature=0.01, fn_mode="fna")
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(vis.grad).all() and torch.isfinite(text.grad).all()


def test_bf16_autocast_does_not_change_the_loss_or_the_mask():
    generator = torch.Generator().manual_seed(5)
    vis, text = torch.randn(6, 16, generator=generator), torch.randn(6, 16, generator=generator)
    sentences = F.normalize(torch.randn(6, 384, generator=generator), dim=1)
    sentences[1] = sentences[0]
    labels = torch.arange(6)
    want = info_nce(vis, text, labels, false_negative_mask(sentences, tolerance=1e-4), 0.01, "fna")[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mask = false_negative_mask(sentences, tolerance=1e-4)
        got = info_nce(vis, text, labels, mask, 0.01, "fna")[0]
    assert got.dtype == torch.float32 and float(got) == float(want)
    assert torch.equal(mask, false_negative_mask(sentences, tolerance=1e-4))


# ----------------------------------------------------------------------- false-negative masks
def test_tolerance_catches_identical_unit_vectors_that_float32_places_below_one():
    embeddings = F.normalize(torch.randn(200, 384, generator=torch.Generator().manual_seed(0)), dim=1)
    doubled = torch.cat([embeddings, embeddings])  # caption i and i + 200 are identical
    identical = torch.arange(200)
    strict = false_negative_mask(doubled, theta=1.0, tolerance=0.0)[identical, identical + 200]
    tolerant = false_negative_mask(doubled, theta=1.0, tolerance=1e-4)[identical, identical + 200]
    missed = int((~strict).sum())
    assert missed > 0  # the authors' test drops some identical captions (about a third on LEVIR-CC)
    assert bool(tolerant.all())


def test_threshold_above_one_marks_no_pair():
    embeddings = F.normalize(torch.randn(5, 8), dim=1)
    assert not false_negative_mask(embeddings, theta=2.0).any()


def test_string_source_matches_captions_after_strip_and_lower():
    captions = [" a road is built .", "a road is built .", "A Road is built . ", " a house is built ."]
    mask = false_negative_mask(captions=captions, source="string")
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)
    assert torch.equal(false_negative_mask(captions=caption_keys(captions), source="string"), expected)


def test_contrastive_loss_with_the_string_source_equals_info_nce_on_the_string_mask():
    vis, text = torch.randn(4, 8), torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3])
    captions = ["x .", "y .", "x .", "z ."]
    module = ContrastiveLoss(temperature=0.1, fn_mode="fna", source="string")
    want, want_pairs = info_nce(vis, text, labels, false_negative_mask(captions=captions, source="string"), 0.1, "fna")
    got, got_pairs = module(vis, text, labels, captions=captions)
    assert got_pairs == want_pairs == 6
    assert _close(got, float(want))


# ----------------------------------------------------------------------- module and temperature
def test_learnable_temperature_gets_a_gradient():
    module = ContrastiveLoss(temperature=0.07, learnable_temperature=True, fn_mode="none")
    assert _close(module.temperature, 0.07)
    loss, _ = module(torch.randn(4, 8), torch.randn(4, 8), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert module.log_temperature.grad is not None and float(module.log_temperature.grad) != 0.0


def test_fixed_temperature_has_no_parameters():
    assert list(ContrastiveLoss(temperature=0.01).parameters()) == []


def test_contrastive_loss_is_built_from_the_run_config():
    config = LossConfig(temperature=0.05, fn_mode="fne", theta=0.9, theta_tolerance=1e-3, symmetric=True)
    module = ContrastiveLoss.from_config(config)
    assert (module.temperature, module.fn_mode, module.theta, module.tolerance, module.symmetric) == (
        0.05, "fne", 0.9, 1e-3, True)


# ----------------------------------------------------------------------- caption loss
def test_caption_loss_predicts_the_next_token_and_ignores_padding():
    logits = torch.zeros(1, 3, 2)
    logits[0, 0] = torch.tensor([0.0, math.log(3.0)])  # P(token 1) = 3/4 at position 0
    labels = torch.tensor([[1, 1, -100]])  # position 0 predicts labels[1] = 1; labels[2] is ignored
    assert _close(caption_loss(logits, labels), -math.log(0.75))


def test_caption_loss_averages_over_tokens_not_sequences():
    logits = torch.zeros(2, 4, 2)  # uniform: log 2 per token
    logits[0, 0] = torch.tensor([0.0, math.log(3.0)])  # -log(3/4) for the first target of sequence 0
    labels = torch.tensor([[1, 1, 0, 1], [1, 0, -100, -100]])  # 3 targets, then 1 target
    want = (-math.log(0.75) + 3 * math.log(2)) / 4
    assert _close(caption_loss(logits, labels), want)


# ----------------------------------------------------------------------- distributed gather
def test_gather_is_the_identity_when_not_distributed():
    vis, text, labels, sent = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.randn(3, 5)
    out = gather_for_contrastive(vis, text, labels, sent)
    assert all(a is b for a, b in zip(out, (vis, text, labels, sent)))


class _Towers(nn.Module):
    """Two linear towers standing in for the image and text encoders."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(6, 8)
        self.text = nn.Linear(6, 8)

    def forward(self, image_inputs, text_inputs):
        return self.image(image_inputs), self.text(text_inputs)


def _global_batch():
    generator = torch.Generator().manual_seed(1)
    image_inputs, text_inputs = torch.randn(7, 6, generator=generator), torch.randn(7, 6, generator=generator)
    labels = torch.tensor([-1, 3, 3, -1, 5, 6, 7])
    sentences = F.normalize(torch.randn(7, 4, generator=generator), dim=1)
    sentences[6] = sentences[4]  # a false negative across the two ranks' shards
    return image_inputs, text_inputs, labels, sentences


SHARDS = [slice(0, 4), slice(4, 7)]  # unequal shards exercise the padding path
LOSS_OPTIONS = dict(temperature=0.05, fn_mode="fna", theta=1.0, tolerance=1e-4)


def _ddp_worker(rank, world_size, port, out_dir):
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        image_inputs, text_inputs, labels, sentences = _global_batch()
        shard = SHARDS[rank]
        model = DistributedDataParallel(_Towers())
        vis, text = model(image_inputs[shard], text_inputs[shard])
        loss, pairs = ContrastiveLoss(**LOSS_OPTIONS)(vis, text, labels[shard], sentences[shard])
        loss.backward()  # DDP averages parameter gradients over the ranks
        grads = {name: p.grad.clone() for name, p in model.module.named_parameters()}
        torch.save({"loss": loss.detach(), "pairs": pairs, "grads": grads}, f"{out_dir}/rank{rank}.pt")
        # Rank 0 hosts the rendezvous store: leaving before rank 1 is done aborts gloo
        # ("terminate called without an active exception"), so both ranks meet here first.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks_with_gathering_match_one_process_on_the_whole_batch(tmp_path):
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    image_inputs, text_inputs, labels, sentences = _global_batch()
    model = _Towers()
    loss, pairs = ContrastiveLoss(**LOSS_OPTIONS)(*model(image_inputs, text_inputs), labels, sentences)
    loss.backward()
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["pairs"] == pairs == 13  # 7 diagonal, 4 same-label, 2 attracted
        assert _close(result["loss"], float(loss.detach()), 1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-5, atol=1e-6)
