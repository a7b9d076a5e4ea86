"""Validation for model selection: the loss (the authors' criterion), CIDEr-D of greedy captions, or R@10."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader

from rscc.config import CHOICES
from rscc.data.levircc import LevirCCDataset, Vocabulary, collate
from rscc.training.data import model_inputs

# direction of each criterion of train.select_best: the loss is minimised, the scores maximised
SELECT_BEST = {name: "min" if name == "val_loss" else "max" for name in CHOICES["train.select_best"]}


def improves(score: float, best: float | None, select_best: str) -> bool:
    """Whether ``score`` beats ``best`` (None: nothing yet) for the criterion; a non-finite score never does."""
    if not math.isfinite(score):
        return False
    if best is None:
        return True
    return score < best if SELECT_BEST[select_best] == "min" else score > best


@torch.no_grad()
def validate(model, loader, features, similarity, objective, device, autocast, select_best: str,
             vocab: Vocabulary) -> dict:
    """Validation loss (the authors': mean over batches of L_cap + lam * L_con on first captions)
    and the model-selection score of ``select_best``; ``objective`` is the run's
    :class:`~rscc.losses.JointLoss`."""
    model.eval()
    contrastive = objective.contrastive
    gather, contrastive.gather = contrastive.gather, False  # rank 0 validates alone
    totals, caps, cons = [], [], []
    vis, txt, labels = [], [], []
    try:
        for batch in loader:
            inputs = model_inputs(batch, "val", features, device)
            with autocast():
                out = model(**inputs)
            terms = objective(out, batch, similarity)
            totals.append(float(terms.total))
            caps.append(terms.caption_value)
            cons.append(terms.contrastive_value)
            if select_best == "retrieval":
                vis.append(out.vis_emb.float().cpu())
                txt.append(out.text_emb.float().cpu())
                labels.append(batch["label"])
        result = {"loss": float(np.mean(totals)), "cap_loss": float(np.mean(caps)), "con_loss": float(np.mean(cons))}
        if select_best == "val_loss":
            result["score"] = result["loss"]
        elif select_best == "retrieval":
            result["score"] = text_to_pair_hit_rate(torch.cat(vis), torch.cat(txt), torch.cat(labels), k=10)
        else:
            result["score"] = validation_cider(model, loader.dataset, features, device, autocast, vocab)
    finally:
        contrastive.gather = gather
        model.train()
    return result


def text_to_pair_hit_rate(vis_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """R@k (hit rate, ×100) of text -> pair retrieval with one caption per pair: a query's correct
    pairs are its own pair and, for a no-change caption, every no-change pair."""
    from rscc.metrics.retrieval import cross_modal_retrieval

    no_change = labels == -1
    result = cross_modal_retrieval(vis_emb, text_emb, torch.arange(len(labels)),
                                   duplicates=no_change[:, None] & no_change[None, :], ks=(k,))
    return float(result["text_to_pair"][f"R@{k}"])


def validation_cider(model, dataset: LevirCCDataset, features, device, autocast, vocab: Vocabulary) -> float:
    """CIDEr-D (tokens protocol, ×100) of greedy captions of the validation pairs."""
    from rscc.generate import caption_pairs
    from rscc.metrics.captioning import score_captions

    loader = DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=collate)
    predictions, references = {}, {}
    for batch in loader:
        inputs = model_inputs(batch, "val", features, device)
        images = {k: v for k, v in inputs.items() if k in ("img_a", "img_b", "feat_a", "feat_b")}
        with autocast():
            captions = caption_pairs(model, vocab, **images)
        for i, caption, refs in zip(batch["pair_index"].tolist(), captions, batch["references_tokens"]):
            predictions[i], references[i] = caption, refs
    scores = score_captions(predictions, references, protocol="tokens", meteor=False, spice=False)
    return float(scores["all"]["CIDEr-D"])
