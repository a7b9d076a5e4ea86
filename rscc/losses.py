"""The joint loss of RSICRC: caption cross-entropy + lambda * InfoNCE with false-negative handling.

METHOD §3. For a batch of B (pair, caption) samples:

* ``S_ij = cos(vis_emb_i, text_emb_j)`` - rows are images, columns texts.
* Positives ``M_ij = [y_i = y_j]`` where ``y`` is -1 for a no-change pair and the pair id otherwise
  (so the 5 captions of a pair, and all no-change pairs, are mutual positives). Negatives
  ``D = 1 - M``.
* False negatives ``F``: caption pairs that say the same thing (sentence-embedding similarity
  ``>= theta``, or identical strings). **FNE** (false-negative elimination) removes them from the
  negatives, ``D[F] = 0``; **FNA** (attraction) also makes them positives, ``M[F] = 1``. The
  authors' code always applies FNE (``fn_mode="fne"``) and applies FNA on a flag
  (``fn_mode="fna"``); ``fn_mode="none"`` is our real off switch for ablations.
* ``D_ii = 0, M_ii = 1``; the loss is the mean over all positive pairs (i, j), not over anchors, of
  ``-log(exp(S_ij/tau) / (exp(S_ij/tau) + sum_k D_ik exp(S_ik/tau)))``. Other positives are not in
  the denominator. Zero when the batch has no positive or no negative pair.

The value is computed as a log-sum-exp (the max-subtraction form). Like the authors' code, it adds
the smallest normal float (``finfo.tiny``) to the probability inside the log, so a single pair
never contributes more than ``-log(tiny)`` (87.3 in float32); this only matters when a positive's
probability underflows, and is kept so that our values equal theirs.

In distributed training, :func:`gather_for_contrastive` all-gathers the batch across ranks so that
negatives and false-negative masks span the global batch (as open_clip's ``ClipLoss`` does).
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rscc.config import CHOICES
from rscc.errors import ConfigError

FN_MODES = CHOICES["loss.fn_mode"]  # ("none", "fne", "fna")
SIMILARITY_SOURCES = CHOICES["loss.similarity_source"]  # ("sentence", "string")
IGNORE_INDEX = -100


# --------------------------------------------------------------------------- false negatives
def caption_keys(captions: Sequence[str]) -> torch.Tensor:
    """One int64 key per caption; equal keys <=> equal captions after ``strip().lower()``.

    Turning strings into a tensor lets the string source travel through the distributed
    all-gather like sentence embeddings do. Keys are the first 8 bytes of a BLAKE2b digest."""
    keys = [
        int.from_bytes(hashlib.blake2b(c.strip().lower().encode(), digest_size=8).digest(), "little", signed=True)
        for c in captions
    ]
    return torch.tensor(keys, dtype=torch.int64)


def false_negative_mask(
    sentence_embeddings: torch.Tensor | None = None,
    captions: Sequence[str] | torch.Tensor | None = None,
    theta: float = 1.0,
    tolerance: float = 0.0,
    source: str = "sentence",
) -> torch.Tensor:
    """The (B, B) boolean matrix F of caption pairs that say the same thing.

    ``source="sentence"``: ``F_ij = e_i . e_j >= theta - tolerance`` with ``e`` the (B, dim)
    unit-norm ``sentence_embeddings``. With ``tolerance=0`` this is the authors' test, which at
    ``theta=1`` misses identical captions whose float32 self-similarity rounds below 1.
    ``source="string"``: ``F_ij = [caption_i == caption_j]`` after ``strip().lower()``; ``captions``
    is a list of strings or the int64 keys of :func:`caption_keys`.
    """
    if source == "sentence":
        if sentence_embeddings is None:
            raise ConfigError("false_negative_mask: source 'sentence' needs sentence_embeddings (B, dim)")
        with torch.autocast(sentence_embeddings.device.type, enabled=False):  # a bf16 product would blur theta
            similarity = sentence_embeddings @ sentence_embeddings.T  # (B, B)
        return similarity >= theta - tolerance
    if source == "string":
        if captions is None:
            raise ConfigError("false_negative_mask: source 'string' needs captions")
        keys = captions if isinstance(captions, torch.Tensor) else caption_keys(captions)
        if sentence_embeddings is not None:
            keys = keys.to(sentence_embeddings.device)
        return keys[:, None] == keys[None, :]
    raise ConfigError(f"loss.similarity_source: unknown source {source!r}; expected one of {SIMILARITY_SOURCES}")


def pair_masks(labels: torch.Tensor, false_negatives: torch.Tensor | None,
               fn_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative (B, B) boolean masks (M, D) of METHOD §3.2–3.3."""
    if fn_mode not in FN_MODES:
        raise ConfigError(f"loss.fn_mode: unknown mode {fn_mode!r}; expected one of {FN_MODES}")
    positives = labels[:, None] == labels[None, :]  # (B, B)
    negatives = ~positives
    if fn_mode != "none" and false_negatives is not None:
        negatives = negatives & ~false_negatives  # FNE
        if fn_mode == "fna":
            positives = positives | false_negatives  # FNA
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return positives | eye, negatives & ~eye


# --------------------------------------------------------------------------- InfoNCE
def _one_direction(logits: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Mean over positive (i, j) of -log(p_ij + tiny), rows of ``logits`` being the anchors."""
    lowest = torch.finfo(logits.dtype).min  # finite "minus infinity": keeps gradients NaN-free
    negative_lse = torch.logsumexp(logits.masked_fill(~negatives, lowest), dim=1, keepdim=True)  # (B, 1)
    # (B, B) log of exp(l_ij) / (exp(l_ij) + sum_k D_ik exp(l_ik))
    log_p = logits - torch.logaddexp(logits, negative_lse)
    log_tiny = math.log(torch.finfo(logits.dtype).tiny)
    per_pair = -torch.logaddexp(log_p, torch.full_like(log_p, log_tiny))  # -log(p + tiny), the authors' numerics
    return per_pair[positives].mean()


def info_nce(
    vis_emb: torch.Tensor,
    text_emb: torch.Tensor,
    labels: torch.Tensor,
    false_negatives: torch.Tensor | None,
    temperature: float | torch.Tensor = 0.01,
    fn_mode: str = "fna",
    symmetric: bool = False,
) -> tuple[torch.Tensor, int]:
    """InfoNCE with FNE/FNA over a batch; returns (loss, number of positive pairs).

    vis_emb, text_emb: (B, d); labels: (B,) int, -1 for no-change pairs; false_negatives: (B, B)
    bool from :func:`false_negative_mask` (ignored when ``fn_mode="none"``); temperature: a float
    or a 0-d tensor (learnable). ``symmetric`` averages image -> text (the authors' only direction)
    and text -> image. The loss is computed in float32 even under autocast. When the batch has no
    positive or no negative pair the loss is a zero that stays attached to the graph.
    """
    with torch.autocast(vis_emb.device.type, enabled=False):
        similarity = F.normalize(vis_emb.float(), dim=1) @ F.normalize(text_emb.float(), dim=1).T  # (B, B)
    positives, negatives = pair_masks(labels, false_negatives, fn_mode)
    num_positive_pairs = int(positives.sum())
    logits = similarity / temperature
    if num_positive_pairs == 0 or not bool(negatives.any()):
        return logits.sum() * 0.0, num_positive_pairs
    loss = _one_direction(logits, positives, negatives)
    if symmetric:
        loss = 0.5 * (loss + _one_direction(logits.T, positives.T, negatives.T))
    return loss, num_positive_pairs


class ContrastiveLoss(nn.Module):
    """L_con of METHOD §3.2–3.3 as a module: builds the false-negative mask, gathers across ranks, InfoNCE.

    ``learnable_temperature`` trains ``log_temperature`` (initialised at ``log(temperature)``);
    otherwise the temperature is the fixed float (the authors' 0.01).
    """

    def __init__(
        self,
        temperature: float = 0.01,
        learnable_temperature: bool = False,
        fn_mode: str = "fna",
        theta: float = 1.0,
        tolerance: float = 0.0,
        symmetric: bool = False,
        source: str = "sentence",
        gather: bool = True,
    ):
        super().__init__()
        if fn_mode not in FN_MODES:
            raise ConfigError(f"loss.fn_mode: unknown mode {fn_mode!r}; expected one of {FN_MODES}")
        if source not in SIMILARITY_SOURCES:
            raise ConfigError(
                f"loss.similarity_source: unknown source {source!r}; expected one of {SIMILARITY_SOURCES}")
        if temperature <= 0:
            raise ConfigError(f"loss.temperature: expected a positive number, got {temperature}")
        self.fn_mode, self.theta, self.tolerance = fn_mode, theta, tolerance
        self.symmetric, self.source, self.gather = symmetric, source, gather
        self.learnable_temperature = learnable_temperature
        if learnable_temperature:
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        else:
            self.fixed_temperature = float(temperature)

    @classmethod
    def from_config(cls, config) -> ContrastiveLoss:
        """Build from a :class:`rscc.config.LossConfig`."""
        return cls(
            temperature=config.temperature,
            learnable_temperature=config.learnable_temperature,
            fn_mode=config.fn_mode,
            theta=config.theta,
            tolerance=config.theta_tolerance,
            symmetric=config.symmetric,
            source=config.similarity_source,
        )

    @property
    def temperature(self) -> float | torch.Tensor:
        return self.log_temperature.exp() if self.learnable_temperature else self.fixed_temperature

    def forward(
        self,
        vis_emb: torch.Tensor,
        text_emb: torch.Tensor,
        labels: torch.Tensor,
        sentence_embeddings: torch.Tensor | None = None,
        captions: Sequence[str] | torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """(loss, positive pairs) for a batch; ``sentence_embeddings`` (B, dim) for the sentence
        source, ``captions`` (strings or :func:`caption_keys`) for the string source. Neither is
        needed with ``fn_mode="none"``."""
        similarity_of: torch.Tensor | None
        if self.fn_mode == "none":
            similarity_of = None
        elif self.source == "sentence":
            similarity_of = sentence_embeddings
        else:
            keyed = isinstance(captions, torch.Tensor) or captions is None
            similarity_of = captions if keyed else caption_keys(captions)
        if self.fn_mode != "none" and similarity_of is None:
            needed = "sentence_embeddings" if self.source == "sentence" else "captions"
            raise ConfigError(f"ContrastiveLoss(fn_mode={self.fn_mode!r}, source={self.source!r}) needs {needed}")
        if similarity_of is not None:
            similarity_of = similarity_of.to(vis_emb.device)
        if self.gather:
            vis_emb, text_emb, labels, similarity_of = gather_for_contrastive(vis_emb, text_emb, labels, similarity_of)
        false_negatives = None
        if similarity_of is not None:
            if self.source == "sentence":
                false_negatives = false_negative_mask(similarity_of, theta=self.theta, tolerance=self.tolerance)
            else:
                false_negatives = false_negative_mask(captions=similarity_of, source="string")
        return info_nce(vis_emb, text_emb, labels, false_negatives, self.temperature, self.fn_mode, self.symmetric)


# --------------------------------------------------------------------------- caption loss
def caption_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cap: token cross-entropy of logits[:, :-1] (B, L-1, V) against labels[:, 1:] (B, L-1).

    ``labels`` are token ids with PAD replaced by -100 (ignored); the mean is over the tokens that
    are not ignored. A batch without any target token gives a zero attached to the graph."""
    predictions = logits[:, :-1].float()  # (B, L-1, V)
    targets = labels[:, 1:]  # (B, L-1)
    if not bool((targets != IGNORE_INDEX).any()):
        return predictions.sum() * 0.0
    return F.cross_entropy(predictions.reshape(-1, predictions.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX)



# --------------------------------------------------------------------------- the joint loss
@dataclass
class LossTerms:
    """One batch's terms of ``L_cap + lam * L_con``: tensors to differentiate, and their values.

    ``caption`` is what to differentiate: under DDP the local token mean reweighted so that DDP's
    gradient average is the gradient of the global token mean, whose value is ``caption_value``."""

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
    """``L_cap + lam * L_con`` of a batch (METHOD §3), every term returned (as open_clip's ``CoCaLoss``).

    The trainer and validation hand it the model's output and the batch; which inputs the
    contrastive loss's false-negative mask takes (caption keys or sentence embeddings) and the
    DDP weighting of the caption loss stay in here. Its parameters are the contrastive loss's (a
    learnable temperature)."""

    def __init__(self, contrastive: ContrastiveLoss, lam: float):
        super().__init__()
        self.contrastive, self.lam = contrastive, float(lam)

    @classmethod
    def from_config(cls, config) -> JointLoss:
        """Build from a :class:`rscc.config.LossConfig`."""
        return cls(ContrastiveLoss.from_config(config), config.lam)

    def forward(self, out, batch: dict, similarity: torch.Tensor | None = None, world: int = 1) -> LossTerms:
        """The terms of ``out`` (the model's output for ``batch``: ``logits`` (B, L, V), ``vis_emb``
        and ``text_emb`` (B, d)); ``similarity`` holds one row per caption of the split, indexed by
        ``batch["caption_index"]``; ``world`` is the number of processes of a DDP run."""
        device = out.logits.device
        labels = batch["labels"].to(device)  # (B, L) token targets, -100 = ignored
        cap = caption_loss(out.logits, labels)
        con = self.contrastive_term(out, batch, similarity)
        if world > 1:
            cap_for_grad, cap_value = _caption_loss_across_ranks(cap, labels, world)
        else:
            cap_for_grad, cap_value = cap, float(cap.detach())
        return LossTerms(caption=cap_for_grad, contrastive=con, total=cap_for_grad + self.lam * con,
                         caption_value=cap_value, contrastive_value=float(con.detach()), lam=self.lam)

    def contrastive_term(self, out, batch: dict, similarity: torch.Tensor | None) -> torch.Tensor:
        device = out.vis_emb.device
        pair_labels = batch["label"].to(device)  # (B,) pair id, -1 = no change
        rows = None if similarity is None else similarity[batch["caption_index"]].to(device)
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
    tokens = (labels[:, 1:] != IGNORE_INDEX).sum().to(cap.dtype)
    stats = torch.stack([cap.detach() * tokens, tokens]).float()
    torch.distributed.all_reduce(stats)
    weight = world * tokens / stats[1].clamp(min=1)
    return cap * weight, float(stats[0] / stats[1].clamp(min=1))

# --------------------------------------------------------------------------- distributed
def _is_distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather(tensor: torch.Tensor, with_grad: bool) -> torch.Tensor:
    """Concatenate ``tensor`` (n_r, ...) from every rank along dim 0; ranks may hold different n_r.

    With ``with_grad`` the gradient of every rank's copy flows back to its owner, summed over
    ranks (as in open_clip's gather with ``torch.distributed.nn.all_gather``): when every rank
    computes the same global loss, DDP's averaging of parameter gradients then gives exactly the
    single-process gradient."""
    dist = torch.distributed
    world = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    if tensor.shape[0] < longest:  # pad to a common length; all_gather needs equal shapes
        padding = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, padding])
    if with_grad:
        gathered = _AllGatherWithGrad.apply(tensor)  # (world * longest, ...)
    else:
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        gathered = torch.cat(parts)
    return torch.cat([gathered[r * longest:r * longest + n] for r, n in enumerate(sizes)])


class _AllGatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 (equal lengths) whose backward sums the gradient of the gathered
    tensor over all ranks and returns each rank its own slice: a reduce-scatter, written as an
    ``all_reduce`` so that every backend (gloo included) supports it."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        dist = torch.distributed
        ctx.rank, ctx.length = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)  # sum over ranks
        return grad[ctx.rank * ctx.length:(ctx.rank + 1) * ctx.length]


def gather_for_contrastive(
    vis_emb: torch.Tensor,
    text_emb: torch.Tensor,
    labels: torch.Tensor,
    sent_emb: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """All-gather the contrastive inputs across ranks (rank order), so that negatives and the
    false-negative mask span the global batch; the identity when not distributed.

    ``vis_emb`` and ``text_emb`` keep their gradients (to the local shard, summed over the ranks
    that computed the same global loss); ``labels`` and ``sent_emb`` (sentence embeddings or
    caption keys, or None) are gathered as constants. Every rank then computes the same global
    loss; under DDP (which averages gradients over ranks) the update equals the single-process one.
    """
    if not _is_distributed():
        return vis_emb, text_emb, labels, sent_emb
    vis_all = _all_gather(vis_emb, with_grad=True)
    text_all = _all_gather(text_emb, with_grad=True)
    labels_all = _all_gather(labels, with_grad=False)
    sent_all = None if sent_emb is None else _all_gather(sent_emb.detach(), with_grad=False)
    return vis_all, text_all, labels_all, sent_all
