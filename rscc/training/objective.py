"""The joint loss of one batch, ``L_cap + lam * L_con`` (METHOD §3), as one object.

:class:`JointLoss` takes the model's outputs for a batch and returns every term
(:class:`LossTerms`), so the training loop and validation never reach into the contrastive
loss's inputs (captions or sentence embeddings) or the DDP weighting of the caption loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from rscc import losses
from rscc.losses import ContrastiveLoss


@dataclass
class LossTerms:
    """One batch's loss terms: tensors to differentiate, and their values as floats.

    ``caption`` is what to differentiate (under DDP the local token mean reweighted so that the
    gradient average is that of the global mean); ``caption_value`` is the global token mean."""

    caption: torch.Tensor
    contrastive: torch.Tensor
    total: torch.Tensor
    caption_value: float
    contrastive_value: float
    lam: float

    @property
    def total_value(self) -> float:
        return self.caption_value + self.lam * self.contrastive_value


class JointLoss(nn.Module):
    """``L_cap + lam * L_con`` of a batch; its parameters are the contrastive loss's (a learnable temperature)."""

    def __init__(self, contrastive: ContrastiveLoss, lam: float):
        super().__init__()
        self.contrastive, self.lam = contrastive, float(lam)

    @classmethod
    def from_config(cls, config) -> JointLoss:
        """Build from a :class:`rscc.config.LossConfig`."""
        return cls(ContrastiveLoss.from_config(config), config.lam)

    def forward(self, out, batch: dict, similarity: torch.Tensor | None = None, world: int = 1) -> LossTerms:
        """The terms of ``out`` (the model's output for ``batch``); ``similarity`` holds one row
        per caption of the split (what the false-negative mask compares), ``world`` the number of
        processes of a DDP run."""
        device = out.logits.device
        labels = batch["labels"].to(device)  # (B, L) token targets
        cap = losses.caption_loss(out.logits, labels)
        con = self.contrastive_term(out, batch, similarity)
        if world > 1:
            cap_for_grad, cap_value = _caption_loss_across_ranks(cap, labels, world)
        else:
            cap_for_grad, cap_value = cap, float(cap.detach())
        return LossTerms(caption=cap_for_grad, contrastive=con, total=cap_for_grad + self.lam * con,
                         caption_value=cap_value, contrastive_value=float(con.detach()), lam=self.lam)

    def contrastive_term(self, out, batch: dict, similarity: torch.Tensor | None) -> torch.Tensor:
        pair_labels = batch["label"].to(out.vis_emb.device)  # (B,) change labels, -1 = no change
        rows = None if similarity is None else similarity[batch["caption_index"]].to(out.vis_emb.device)
        if self.contrastive.source == "string":
            loss, _ = self.contrastive(out.vis_emb, out.text_emb, pair_labels, captions=rows)
        else:
            loss, _ = self.contrastive(out.vis_emb, out.text_emb, pair_labels, sentence_embeddings=rows)
        return loss


def _caption_loss_across_ranks(cap: torch.Tensor, labels: torch.Tensor, world: int) -> tuple[torch.Tensor, float]:
    """(the caption loss to differentiate, the global token-mean value).

    DDP averages gradients over ranks: the local mean is reweighted by
    ``world * local_tokens / global_tokens`` so that the average is the gradient of the mean over
    all tokens of the global batch."""
    tokens = (labels[:, 1:] != losses.IGNORE_INDEX).sum().to(cap.dtype)
    stats = torch.stack([cap.detach() * tokens, tokens]).float()
    torch.distributed.all_reduce(stats)
    weight = world * tokens / stats[1].clamp(min=1)
    return cap * weight, float(stats[0] / stats[1].clamp(min=1))
