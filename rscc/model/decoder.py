"""The caption decoder, split as in CoCa (METHOD §2.5).

Token embedding + positions → ``unimodal_layers`` (causal self-attention only; their output at
the END token is the text embedding used for retrieval) → ``multimodal_layers`` (self-attention,
cross-attention to the visual tokens, feed-forward) → ``lm_head``.

Everything is batch first here: tokens (B, L, d), visual tokens (B, s*s, d). Attention keeps
the parameter layout of ``nn.MultiheadAttention`` (``in_proj_weight`` (3d, d), ``in_proj_bias``,
``out_proj``) so the authors' weights load unchanged, but computes with
``scaled_dot_product_attention`` and accepts a per-layer key/value cache (:class:`LayerCache`)
for incremental decoding: feed the new tokens only, with ``offset`` = number of cached positions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class LayerCache:
    """Keys/values (B, heads, T, d/heads) one decoder layer has already computed."""

    self_keys: torch.Tensor | None = None
    self_values: torch.Tensor | None = None
    cross_keys: torch.Tensor | None = None  # projections of the visual tokens, fixed per pair
    cross_values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.self_keys is None else self.self_keys.shape[2]

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the batch rows ``index`` (beam search), in place."""
        for name in ("self_keys", "self_values", "cross_keys", "cross_values"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, index))


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters and initialisation."""

    def __init__(self, d: int, *, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, heads, T, d/heads)
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def project_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``x`` in one matrix product (self-attention)."""
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self._split(q), self._split(k), self._split(v)

    def project_query(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return self._split(F.linear(x, self.in_proj_weight[:d], self.in_proj_bias[:d]))

    def project_keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = x.shape[-1]
        k, v = F.linear(x, self.in_proj_weight[d:], self.in_proj_bias[d:]).chunk(2, dim=-1)
        return self._split(k), self._split(v)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
               causal: bool = False, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """softmax(q kᵀ / √(d/heads)) v through ``out_proj``; ``mask`` is boolean, True = may attend.

        Returns (out (B, L, d), head-averaged weights (B, L, T) when ``need_weights``)."""
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)  # (B, heads, L, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = F.dropout(scores.softmax(dim=-1), p, self.training)
            out = weights @ v
            weights = weights.mean(dim=1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                                 is_causal=causal and mask is None)
            weights = None
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights


class DecoderLayer(nn.Module):
    """Self-attention (+ cross-attention when ``multimodal``) + GELU feed-forward, post- or pre-norm."""

    def __init__(self, d: int, *, heads: int, dropout: float, prenorm: bool, multimodal: bool):
        super().__init__()
        self.prenorm = prenorm
        self.multimodal = multimodal
        self.self_attention = MultiHeadAttention(d, heads=heads, dropout=dropout)
        self.self_attention_norm = nn.LayerNorm(d)
        self.self_attention_dropout = nn.Dropout(dropout)
        if multimodal:
            self.cross_attention = MultiHeadAttention(d, heads=heads, dropout=dropout)
            self.cross_attention_norm = nn.LayerNorm(d)
            self.cross_attention_dropout = nn.Dropout(dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d), nn.Dropout(dropout))
        self.feed_forward_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, self_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, d) → (x, cross-attention weights (B, L, s*s) or None).

        ``memory``: visual tokens (B, s*s, d) (multimodal layers). ``self_mask``: boolean
        (B or 1, 1, L, T), True = may attend; None = plain causal. ``cache``: keys/values of
        earlier positions, extended in place with those of ``x``."""
        weights = None
        if self.prenorm:
            x = x + self._self_attention(self.self_attention_norm(x), self_mask, cache)
            if self.multimodal:
                att, weights = self._cross_attention(self.cross_attention_norm(x), memory, cache)
                x = x + att
            x = x + self.feed_forward(self.feed_forward_norm(x))
        else:
            x = self.self_attention_norm(x + self._self_attention(x, self_mask, cache))
            if self.multimodal:
                att, weights = self._cross_attention(x, memory, cache)
                x = self.cross_attention_norm(x + att)
            x = self.feed_forward_norm(x + self.feed_forward(x))
        return x, weights

    def _self_attention(self, x, mask, cache):
        q, k, v = self.self_attention.project_all(x)
        causal = True
        if cache is not None:
            if cache.self_keys is not None:
                k = torch.cat([cache.self_keys, k], dim=2)
                v = torch.cat([cache.self_values, v], dim=2)
                causal = x.shape[1] > 1 and mask is None  # one new token sees every cached one
                if causal:
                    mask = causal_mask(x.shape[1], x.device, offset=cache.length)
            cache.self_keys, cache.self_values = k, v
        out, _ = self.self_attention.attend(q, k, v, mask, causal=causal)
        return self.self_attention_dropout(out)

    def _cross_attention(self, x, memory, cache):
        q = self.cross_attention.project_query(x)
        if cache is not None and cache.cross_keys is not None:
            k, v = cache.cross_keys, cache.cross_values
        else:
            k, v = self.cross_attention.project_keys_values(memory)
            if cache is not None:
                cache.cross_keys, cache.cross_values = k, v
        out, weights = self.cross_attention.attend(q, k, v, need_weights=True)
        return self.cross_attention_dropout(out), weights


def causal_mask(length: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """(1, 1, length, offset + length) boolean, True where query i may attend key j (j ≤ offset + i)."""
    keys = torch.arange(offset + length, device=device)
    queries = torch.arange(offset, offset + length, device=device)
    return (keys[None, :] <= queries[:, None])[None, None]


def self_attention_mask(pad_mask: torch.Tensor | None, length: int, device: torch.device,
                        offset: int = 0) -> torch.Tensor | None:
    """Causal mask combined with a key-padding mask (B, offset + length), True on PAD; None = causal only."""
    if pad_mask is None:
        return None
    return causal_mask(length, device, offset) & ~pad_mask.bool()[:, None, None, :]


class SinusoidalPositions(nn.Module):
    """The standard sin/cos table (base 10000), ``max_len`` rows; not a parameter."""

    def __init__(self, d: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, d, 2).float() * (-math.log(10000.0) / d))
        table = torch.zeros(max_len, d)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:  # (length, d)
        return self.table[offset:offset + length]


class LearnedPositions(nn.Module):
    def __init__(self, d: int, max_len: int):
        super().__init__()
        self.embedding = nn.Embedding(max_len, d)

    def forward(self, length: int, offset: int = 0) -> torch.Tensor:  # (length, d)
        return self.embedding.weight[offset:offset + length]


class CaptionDecoder(nn.Module):
    def __init__(self, vocab_size: int, *, d: int, max_len: int, heads: int, layers: int, dropout: float,
                 learnable_positions: bool = False, tie_embeddings: bool = True, prenorm: bool = False):
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d)
        self.positions = LearnedPositions(d, max_len) if learnable_positions else SinusoidalPositions(d, max_len)
        self.embedding_dropout = nn.Dropout(dropout)
        self.unimodal_layers = nn.ModuleList(
            DecoderLayer(d, heads=heads, dropout=dropout, prenorm=prenorm, multimodal=False) for _ in range(layers))
        self.multimodal_layers = nn.ModuleList(
            DecoderLayer(d, heads=heads, dropout=dropout, prenorm=prenorm, multimodal=True) for _ in range(layers))
        self.output_dropout = nn.Dropout(dropout)
        self.lm_head = nn.Linear(d, vocab_size, bias=False)
        nn.init.uniform_(self.token_embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.lm_head.weight, -0.1, 0.1)
        if tie_embeddings:
            self.token_embedding.weight = self.lm_head.weight

    @property
    def tied(self) -> bool:
        return self.token_embedding.weight is self.lm_head.weight

    def embed(self, input_ids: torch.Tensor, offset: int = 0) -> torch.Tensor:  # (B, L) -> (B, L, d)
        length = input_ids.shape[1]
        if offset + length > self.max_len:
            raise ValueError(f"sequence of {offset + length} tokens exceeds model.max_len {self.max_len}")
        return self.embedding_dropout(self.token_embedding(input_ids) + self.positions(length, offset))

    def unimodal(self, x: torch.Tensor, self_mask: torch.Tensor | None = None,
                 caches: list[LayerCache] | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.unimodal_layers):
            x, _ = layer(x, None, self_mask, caches[i] if caches else None)
        return x

    def multimodal(self, x: torch.Tensor, memory: torch.Tensor, self_mask: torch.Tensor | None = None,
                   caches: list[LayerCache] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns (x, cross-attention weights (B, L, s*s) of the last multimodal layer)."""
        weights = None
        n = len(self.unimodal_layers)
        for i, layer in enumerate(self.multimodal_layers):
            x, weights = layer(x, memory, self_mask, caches[n + i] if caches else None)
        return x, weights

    def new_caches(self) -> list[LayerCache]:
        """One empty cache per layer (unimodal, then multimodal) for incremental decoding."""
        return [LayerCache() for _ in range(len(self.unimodal_layers) + len(self.multimodal_layers))]

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, d) -> (B, L, V)
        return self.lm_head(self.output_dropout(x))


def text_embedding(hidden: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
    """Hidden state (B, L, d) at the last non-PAD position (the END token) → (B, d).

    Assumes right padding, as the data pipeline produces; without a pad mask, the last position."""
    if pad_mask is None:
        return hidden[:, -1]
    last = (~pad_mask.bool()).sum(dim=1) - 1  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
