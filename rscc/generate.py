"""Caption generation.

:func:`greedy_reference` is the authors' greedy loop, kept as the reference that faster decoders
(key/value cache, beam search) are checked against: one pair at a time, each step re-runs the
decoder on the whole prefix (no pad mask) and appends the arg-max token, stopping after END.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from rscc.data.levircc import END as END_ID  # the special token ids of every vocabulary
from rscc.data.levircc import PAD as PAD_ID
from rscc.data.levircc import START as START_ID
from rscc.data.levircc import Vocabulary
from rscc.model.rsicrc import RSICRC


@torch.no_grad()
def greedy_reference(model: RSICRC, *, img_a: torch.Tensor | None = None, img_b: torch.Tensor | None = None,
                     feat_a: torch.Tensor | None = None, feat_b: torch.Tensor | None = None,
                     vis_toks: torch.Tensor | None = None, max_len: int | None = None, start_id: int = START_ID,
                     end_id: int = END_ID) -> list[list[int]]:
    """Token ids (START first, END last when reached) for each pair of a batch, decoded alone.

    Give images (B, 3, H, W), backbone features (B, C, s, s) or visual tokens (s*s, B, d). Up to
    ``max_len`` steps (default ``model.config.max_len``), so at most max_len + 1 ids. Call
    ``model.eval()`` first for deterministic output."""
    max_len = model.config.max_len if max_len is None else max_len
    if vis_toks is None and (feat_a is None or feat_b is None):
        feat_a, feat_b = model.backbone_features(img_a), model.backbone_features(img_b)
    pairs = vis_toks.shape[1] if vis_toks is not None else feat_a.shape[0]
    captions = []
    for i in range(pairs):
        if vis_toks is not None:
            pair_toks = vis_toks[:, i:i + 1]  # (s*s, 1, d)
        else:
            _, pair_toks = model.encode_features(feat_a[i:i + 1], feat_b[i:i + 1])
        ids = torch.tensor([[start_id]], device=pair_toks.device)
        for _ in range(max_len):
            logits, _ = model.decode(ids, None, pair_toks)
            next_id = logits[0, -1].argmax().view(1, 1)
            ids = torch.cat([ids, next_id], dim=1)
            if next_id.item() == end_id:
                break
        captions.append(ids[0].tolist())
    return captions


# ---------------------------------------------------------------------------- cached decoding
@dataclass
class Generation:
    """Token ids generated for a batch of pairs, with what the figures need.

    ``ids`` (B, T) holds START first; row i is meaningful up to ``lengths[i]`` ids (the ids
    after that are PAD filler). A generated PAD inside a caption is a real token: the authors'
    loop has no pad mask at inference, so the model may emit PAD and go on (METHOD §2.6).
    ``cross_attention`` (B, T - 1, s*s): row j is the head-averaged attention of the last
    multimodal layer for the query at position j, the one that produced id j + 1; it equals row
    j of the authors' full-prefix pass (causal attention)."""

    ids: torch.Tensor  # (B, T) long
    lengths: torch.Tensor  # (B,) ids per caption, START and END included
    log_probs: torch.Tensor  # (B,) sum of the log-probabilities of the generated ids
    cross_attention: torch.Tensor  # (B, T - 1, s*s)
    scores: torch.Tensor | None = None  # (B,) beam-search ranking score (log-prob / length ** penalty)

    def sequences(self) -> list[list[int]]:
        """One id list per pair, START first, END last when it was reached."""
        return [row[:n].tolist() for row, n in zip(self.ids.cpu(), self.lengths.tolist())]

    def attention_mean(self) -> torch.Tensor:
        """(B, s*s): cross-attention averaged over the steps that produced the caption's ids
        (what the authors' plot shows)."""
        steps = self.lengths - 1  # (B,)
        valid = torch.arange(self.cross_attention.shape[1], device=steps.device)[None, :] < steps[:, None]
        total = (self.cross_attention * valid[..., None]).sum(dim=1)
        return total / steps.clamp(min=1)[:, None].to(total.dtype)

    def attention_last(self) -> torch.Tensor:
        """(B, s*s): cross-attention of the step that produced the last id (END when reached)."""
        rows = (self.lengths - 2).clamp(min=0)
        return self.cross_attention[torch.arange(rows.shape[0]), rows]


class _IncrementalDecoder:
    """Feeds one new token per sequence to the decoder, keeping every layer's keys and values.

    Caching is exact because self-attention is causal: the hidden states of positions 0..t-1
    in every layer (post-norm included) do not depend on later tokens, so recomputing them each
    step, as the authors' loop does, gives the same numbers. Cross-attention keys/values of the
    visual tokens are projected once."""

    def __init__(self, model: RSICRC, vis_toks: torch.Tensor):
        self.decoder = model.decoder
        self.memory = vis_toks.transpose(0, 1)  # (B, s*s, d)
        self.caches = self.decoder.new_caches()
        self.position = 0

    def step(self, last_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """last_ids (B,) at the current position → (logits (B, V), cross-attention (B, s*s))."""
        x = self.decoder.embed(last_ids[:, None], offset=self.position)  # (B, 1, d)
        x = self.decoder.unimodal(x, None, self.caches)
        x, weights = self.decoder.multimodal(x, self.memory, None, self.caches)
        self.position += 1
        return self.decoder.logits(x)[:, -1], weights[:, -1]

    def reorder(self, index: torch.Tensor) -> None:
        for cache in self.caches:
            cache.reorder(index)
        self.memory = self.memory.index_select(0, index)


def _check_steps(model: RSICRC, max_len: int | None) -> int:
    max_len = model.config.max_len if max_len is None else max_len
    if max_len > model.config.max_len:
        raise ValueError(f"max_len {max_len} exceeds the model's position table ({model.config.max_len})")
    return max_len


@torch.no_grad()
def greedy(model: RSICRC, vis_toks: torch.Tensor, max_len: int | None = None, start_id: int = START_ID,
           end_id: int = END_ID) -> Generation:
    """The authors' greedy decoding for a whole batch at once, with a key/value cache.

    ``vis_toks`` (s*s, B, d) from ``model.encode_images``/``encode_features``. Gives the same ids
    as :func:`greedy_reference`: up to ``max_len`` steps (default ``model.config.max_len``),
    arg-max each step, a sequence stops after END; no pad mask, so generated PAD ids are kept
    and attended to. A sequence that has stopped leaves the batch (its rows of the cache are
    dropped), so a batch costs the sum of its captions' lengths rather than B times the longest.
    Call ``model.eval()`` first."""
    max_len = _check_steps(model, max_len)
    batch, device = vis_toks.shape[1], vis_toks.device
    state = _IncrementalDecoder(model, vis_toks)
    ids = torch.full((batch, max_len + 1), PAD_ID, dtype=torch.long, device=device)
    ids[:, 0] = start_id
    lengths = torch.ones(batch, dtype=torch.long, device=device)
    log_probs = torch.zeros(batch, device=device)
    attention = torch.zeros(batch, max_len, vis_toks.shape[0], device=device)
    active = torch.arange(batch, device=device)  # the rows still running
    last_ids, steps = ids[:, 0], 0
    for t in range(max_len):
        logits, weights = state.step(last_ids)  # (A, V), (A, s*s)
        next_ids = logits.argmax(dim=-1)
        ids[active, t + 1] = next_ids
        attention[active, t] = weights.to(attention.dtype)
        log_probs[active] += logits.float().log_softmax(dim=-1).gather(1, next_ids[:, None])[:, 0]
        lengths[active] += 1
        steps = t + 1
        going = next_ids != end_id
        if not bool(going.all()):
            if not bool(going.any()):
                break
            keep = going.nonzero()[:, 0]
            state.reorder(keep)
            active, next_ids = active[keep], next_ids[keep]
        last_ids = next_ids
    return Generation(ids[:, :steps + 1], lengths, log_probs, attention[:, :steps])


@torch.no_grad()
def beam_search(model: RSICRC, vis_toks: torch.Tensor, beam: int = 3, length_penalty: float = 0.0,
                max_len: int | None = None, start_id: int = START_ID, end_id: int = END_ID) -> Generation:
    """Beam search over a batch of pairs (``vis_toks`` (s*s, B, d)), with a key/value cache.

    Keeps ``beam`` hypotheses per pair ranked by their summed log-probability; a hypothesis that
    emitted END is kept as it is (it competes with the live ones at its final score). Stops when
    every hypothesis has ended or after ``max_len`` steps. The best hypothesis of each pair is
    the one with the highest ``log_prob / generated_length ** length_penalty`` (generated length
    counts END; 0.0, the default, ranks by log-probability alone). ``beam=1`` is :func:`greedy`.
    Like the greedy loop, PAD is an ordinary token here. Call ``model.eval()`` first."""
    if beam < 1:
        raise ValueError(f"beam must be at least 1, got {beam}")
    max_len = _check_steps(model, max_len)
    batch, device = vis_toks.shape[1], vis_toks.device
    rows = batch * beam
    state = _IncrementalDecoder(model, vis_toks.repeat_interleave(beam, dim=1))  # (s*s, B*beam, d)
    ids = torch.full((rows, max_len + 1), PAD_ID, dtype=torch.long, device=device)
    ids[:, 0] = start_id
    lengths = torch.ones(rows, dtype=torch.long, device=device)
    # only the first hypothesis of a pair is alive at the start (the others are copies of it)
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    attention = None  # (rows, t, s*s)
    offsets = (torch.arange(batch, device=device) * beam)[:, None]  # (B, 1)
    for t in range(max_len):
        logits, weights = state.step(ids[:, t])
        step = logits.float().log_softmax(dim=-1)  # (rows, V)
        vocab = step.shape[1]
        # an ended hypothesis has one continuation, at no cost, that stands for "stay as you are"
        step = torch.where(finished[:, None], float("-inf"), step)
        step[:, PAD_ID] = torch.where(finished, 0.0, step[:, PAD_ID])
        candidates = (scores.reshape(rows, 1) + step).reshape(batch, beam * vocab)
        scores, best = candidates.topk(beam, dim=1)  # (B, beam), sorted
        parent = (offsets + torch.div(best, vocab, rounding_mode="floor")).reshape(rows)
        token = (best % vocab).reshape(rows)
        state.reorder(parent)
        ids, lengths, was_finished = ids[parent], lengths[parent], finished[parent]
        ids[:, t + 1] = torch.where(was_finished, PAD_ID, token)
        lengths += (~was_finished).long()
        finished = was_finished | (token == end_id)
        step_attention = weights[parent][:, None]
        attention = step_attention if attention is None else torch.cat([attention[parent], step_attention], dim=1)
        if finished.all():
            break
    generated = (lengths - 1).clamp(min=1).reshape(batch, beam).float()
    ranking = scores / generated ** length_penalty if length_penalty else scores
    choice = (offsets[:, 0] + ranking.argmax(dim=1))  # (B,) rows of the best hypotheses
    steps = attention.shape[1]
    return Generation(ids[choice, :steps + 1], lengths[choice], scores.reshape(rows)[choice], attention[choice],
                      scores=ranking.reshape(rows)[choice])


def generate(model: RSICRC, vis_toks: torch.Tensor, beam: int = 1, length_penalty: float = 0.0,
             max_len: int | None = None) -> Generation:
    """:func:`greedy` when ``beam`` is 1, else :func:`beam_search`."""
    if beam == 1:
        return greedy(model, vis_toks, max_len=max_len)
    return beam_search(model, vis_toks, beam=beam, length_penalty=length_penalty, max_len=max_len)


# ---------------------------------------------------------------------------- ids to text
def caption_text(ids: Sequence[int], vocab: Vocabulary | Mapping[int, str]) -> str:
    """The authors' rule (METHOD §2.6): the words between START and the last id, joined by spaces.

    The last id is dropped whether or not it is END (a caption that ran out of steps loses its
    last word), and a generated PAD becomes the word "PAD", exactly as in the authors' code."""
    words = id_to_word(vocab) if isinstance(vocab, Vocabulary) else vocab
    return " ".join(words.get(int(i), "UNK") for i in list(ids)[1:-1]).strip()


def id_to_word(vocab: Vocabulary) -> dict[int, str]:
    """{id: word}, specials included (PAD, START, UNK, END)."""
    return {i: w for w, i in vocab.word_to_id.items()}


@dataclass
class PairCaption:
    """A caption of one pair, with its cross-attention maps laid out as the image (row, column)."""

    text: str
    ids: list[int]
    log_prob: float
    attention: torch.Tensor  # (s, s) averaged over the generated ids
    attention_last: torch.Tensor  # (s, s) of the step that produced the last id


def attention_grid(weights: torch.Tensor, transposed: bool) -> torch.Tensor:
    """(..., s*s) attention over the visual tokens → (..., s, s) indexed [row, column] of the image.

    With the authors' transposed HSA maps (``transpose_hsa_output``) visual token n sits at
    column n // s, row n % s; the authors' plot reshapes without undoing that."""
    s = math.isqrt(weights.shape[-1])
    grid = weights.unflatten(-1, (s, s))
    return grid.transpose(-2, -1) if transposed else grid


@torch.no_grad()
def caption_pairs(model: RSICRC, vocab: Vocabulary, img_a: torch.Tensor | None = None,
                  img_b: torch.Tensor | None = None, *, feat_a: torch.Tensor | None = None,
                  feat_b: torch.Tensor | None = None, beam: int = 1, length_penalty: float = 0.0,
                  batch_size: int = 64, with_attention: bool = False) -> list[str] | list[PairCaption]:
    """Captions of image pairs (img_a/img_b (N, 3, H, W), already transformed) or of backbone
    features (feat_a/feat_b (N, C, s, s)), ``batch_size`` pairs at a time, on the model's device.

    Returns the caption strings, or :class:`PairCaption` records with ``with_attention``."""
    if (img_a is None) == (feat_a is None):
        raise ValueError("give img_a and img_b, or feat_a and feat_b")
    model.eval()
    device = next(model.parameters()).device
    first, second = (img_a, img_b) if img_a is not None else (feat_a, feat_b)
    words = id_to_word(vocab)
    out: list = []
    for start in range(0, first.shape[0], batch_size):
        a = first[start:start + batch_size].to(device)
        b = second[start:start + batch_size].to(device)
        _, vis_toks = model.encode_images(a, b) if img_a is not None else model.encode_features(a, b)
        result = generate(model, vis_toks, beam=beam, length_penalty=length_penalty)
        sequences = result.sequences()
        if not with_attention:
            out.extend(caption_text(ids, words) for ids in sequences)
            continue
        transposed = model.config.transpose_hsa_output
        mean = attention_grid(result.attention_mean(), transposed).cpu()
        last = attention_grid(result.attention_last(), transposed).cpu()
        for i, ids in enumerate(sequences):
            out.append(PairCaption(caption_text(ids, words), ids, float(result.log_probs[i]), mean[i], last[i]))
    return out
