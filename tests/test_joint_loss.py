"""The joint loss object: one batch's outputs in, caption, contrastive and total terms out (METHOD §3)."""
from types import SimpleNamespace

import pytest
import torch

from rscc.losses import ContrastiveLoss, JointLoss, caption_keys, caption_loss


def batch_and_output(seed=0):
    """Four captions of three pairs (two no-change captions share a string), logits over 7 words."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[1, 4, 5, 2, -100], [1, 3, 2, -100, -100], [1, 6, 6, 5, 2], [1, 3, 2, -100, -100]])
    batch = {"labels": labels, "label": torch.tensor([0, -1, 2, -1]), "caption_index": torch.tensor([0, 5, 10, 6])}
    out = SimpleNamespace(logits=torch.randn(4, 5, 7, generator=g, requires_grad=True),
                          vis_emb=torch.randn(4, 8, generator=g, requires_grad=True),
                          text_emb=torch.randn(4, 8, generator=g, requires_grad=True))
    raws = [f"caption {i}" for i in range(15)]
    raws[5] = raws[6] = "the scene is the same as before"
    return batch, out, caption_keys(raws)


def test_the_terms_are_the_caption_loss_the_contrastive_loss_and_their_weighted_sum():
    batch, out, keys = batch_and_output()
    contrastive = ContrastiveLoss(temperature=0.1, fn_mode="fne", theta=1.0, source="string")
    terms = JointLoss(contrastive, lam=0.5)(out, batch, keys)
    expected_cap = caption_loss(out.logits, batch["labels"])  # (attached to the graph, as the terms are)
    expected_con, _ = contrastive(out.vis_emb, out.text_emb, batch["label"], captions=keys[batch["caption_index"]])
    assert torch.equal(terms.caption, expected_cap) and torch.equal(terms.contrastive, expected_con)
    assert torch.equal(terms.total, expected_cap + 0.5 * expected_con)
    assert terms.total_value == pytest.approx(float(expected_cap.detach()) + 0.5 * float(expected_con.detach()), rel=1e-6)
    assert (terms.caption_value, terms.contrastive_value) == (float(expected_cap.detach()), float(expected_con.detach()))


def test_sentence_embeddings_reach_the_false_negative_mask_by_caption_index():
    batch, out, _ = batch_and_output(1)
    sentences = torch.nn.functional.normalize(torch.randn(15, 6, generator=torch.Generator().manual_seed(2)), dim=1)
    contrastive = ContrastiveLoss(temperature=0.1, fn_mode="fna", theta=0.3, source="sentence")
    terms = JointLoss(contrastive, lam=1.0)(out, batch, sentences)
    expected, _ = contrastive(out.vis_emb, out.text_emb, batch["label"],
                              sentence_embeddings=sentences[batch["caption_index"]])
    assert torch.equal(terms.contrastive, expected)


def test_with_lambda_zero_the_total_is_the_caption_loss_and_the_embeddings_get_no_gradient():
    batch, out, _ = batch_and_output(3)
    terms = JointLoss(ContrastiveLoss(temperature=0.1, fn_mode="none"), lam=0.0)(out, batch)
    assert torch.equal(terms.total, terms.caption)
    terms.total.backward()
    assert out.logits.grad.abs().sum() > 0
    assert out.vis_emb.grad is None or out.vis_emb.grad.abs().sum() == 0


def test_its_parameters_are_the_learnable_temperature():
    contrastive = ContrastiveLoss(temperature=0.07, learnable_temperature=True, fn_mode="none")
    joint = JointLoss(contrastive, lam=0.5)
    assert [p is contrastive.log_temperature for p in joint.parameters()] == [True]
