"""The change encoder on top of the backbone (METHOD §2.2–2.4).

``HSA``               hierarchical self attention: each image alone, then both jointly.
``CosineMaskFusion``  merges the two maps, weighted by their per-position cosine similarity.
``AttentionPooling``  one learned query → the image-pair embedding used for retrieval.

Three faithful quirks of the authors' HSA are options (all on for a converted checkpoint):
``value_from_key`` (values use the key projection; the value projection is never used),
``transpose_output`` (the returned maps are spatially transposed) and ``double_residual``
(a second residual around the single-image block).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HSAAttention(nn.Module):
    """Multi-head attention of width ``width`` through ``a_dim`` bias-free projections."""

    def __init__(self, width: int, *, a_dim: int, heads: int, dropout: float, value_from_key: bool):
        super().__init__()
        self.heads = heads
        self.scale = (a_dim // heads) ** -0.5
        self.value_from_key = value_from_key
        self.dropout = dropout
        self.query = nn.Linear(width, a_dim, bias=False)
        self.key = nn.Linear(width, a_dim, bias=False)
        self.value = nn.Linear(width, a_dim, bias=False)  # unused when value_from_key
        # The authors skip the output projection only when it would be the identity map's size.
        self.out = None if heads == 1 and a_dim == width else nn.Linear(a_dim, width)
        self.out_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, width) -> (B, N, width)
        def split(t):  # (B, N, a) -> (B, heads, N, a / heads)
            return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

        q, k = split(self.query(x)), split(self.key(x))
        v = k if self.value_from_key else split(self.value(x))
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, scale=self.scale)
        out = out.transpose(1, 2).flatten(2)  # (B, N, a_dim)
        if self.out is None:
            return out
        return self.out_dropout(self.out(out))


class HSABlock(nn.Module):
    """Post-norm transformer block: x = LN(Att(x) + x); x = LN(FF(x) + x)."""

    def __init__(self, width: int, *, a_dim: int, h_dim: int, heads: int, dropout: float, value_from_key: bool):
        super().__init__()
        self.attention = HSAAttention(width, a_dim=a_dim, heads=heads, dropout=dropout, value_from_key=value_from_key)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, h_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(h_dim, width), nn.Dropout(dropout))
        self.attention_norm = nn.LayerNorm(width)
        self.feed_forward_norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(self.attention(x) + x)
        return self.feed_forward_norm(self.feed_forward(x) + x)


class HSALayer(nn.Module):
    """One HSA level: ``image_block`` (width d) on each image, ``pair_block`` (width 2d) on both."""

    def __init__(self, d: int, *, a_dim: int, h_dim: int, heads: int, dropout: float, value_from_key: bool):
        super().__init__()
        block = dict(a_dim=a_dim, h_dim=h_dim, heads=heads, dropout=dropout, value_from_key=value_from_key)
        self.image_block = HSABlock(d, **block)
        self.pair_block = HSABlock(2 * d, **block)


class HSA(nn.Module):
    """Hierarchical self attention over the two feature maps (B, d, s, s) → two maps (B, d, s, s)."""

    def __init__(self, d: int, *, feature_size: int, layers: int, heads: int, a_dim: int, h_dim: int,
                 dropout: float, value_from_key: bool = True, transpose_output: bool = True,
                 double_residual: bool = True):
        super().__init__()
        # Position (row i, column j) gets cat(column_embedding[j], row_embedding[i]).
        # (The authors call these tables h_embedding and w_embedding respectively.)
        self.column_embedding = nn.Embedding(feature_size, d // 2)
        self.row_embedding = nn.Embedding(feature_size, d // 2)
        self.layers = nn.ModuleList(
            HSALayer(d, a_dim=a_dim, h_dim=h_dim, heads=heads, dropout=dropout, value_from_key=value_from_key)
            for _ in range(layers))
        self.transpose_output = transpose_output
        self.double_residual = double_residual
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def positions(self, s: int, device: torch.device) -> torch.Tensor:  # (s*s, d), row-major
        idx = torch.arange(s, device=device)
        col = self.column_embedding(idx)[None, :, :].expand(s, s, -1)  # [i, j] -> column j
        row = self.row_embedding(idx)[:, None, :].expand(s, s, -1)  # [i, j] -> row i
        return torch.cat([col, row], dim=-1).flatten(0, 1)

    def forward(self, map_a: torch.Tensor, map_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, d, s, _ = map_a.shape
        pos = self.positions(s, map_a.device)
        a0 = map_a.flatten(2).transpose(1, 2) + pos  # (B, s*s, d)
        b0 = map_b.flatten(2).transpose(1, 2) + pos
        a, b = a0, b0
        for layer in self.layers:
            # the same block on both images, run as one batch (B + B, s*s, d)
            a_out, b_out = layer.image_block(torch.cat([a, b])).chunk(2)
            if self.double_residual:  # a residual around a block that already has its own
                a_out, b_out = a_out + a, b_out + b
            a, b = a_out, b_out
            z = layer.pair_block(torch.cat([a, b], dim=-1))  # (B, s*s, 2d)
            a, b = z[..., :d] + a0, z[..., d:] + b0
        return self._to_maps(a, s), self._to_maps(b, s)

    def _to_maps(self, tokens: torch.Tensor, s: int) -> torch.Tensor:  # (B, s*s, d) -> (B, d, s, s)
        grid = tokens.unflatten(1, (s, s))  # (B, row, col, d)
        if self.transpose_output:
            return grid.transpose(1, 3)  # (B, d, col, row): the authors' spatially transposed maps
        return grid.permute(0, 3, 1, 2)  # (B, d, row, col)


class ResidualBlock(nn.Module):
    """relu(x + BN(Conv1x1(ReLU(BN(Conv3x3(ReLU(BN(Conv1x1(x))))))))), bottleneck width d/2."""

    def __init__(self, d: int):
        super().__init__()
        half = d // 2
        self.branch = nn.Sequential(
            nn.Conv2d(d, half, kernel_size=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, kernel_size=3, padding=1), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, d, kernel_size=1), nn.BatchNorm2d(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + x)


class CosineMaskFusion(nn.Module):
    """(B, d, s, s) × 2 → visual tokens (s*s, B, d): Conv1x1(cat[a, b] + cos(a, b)), then a residual block."""

    def __init__(self, d: int):
        super().__init__()
        self.merge = nn.Conv2d(2 * d, d, kernel_size=1)
        self.residual = ResidualBlock(d)

    def forward(self, map_a: torch.Tensor, map_b: torch.Tensor) -> torch.Tensor:
        similarity = F.cosine_similarity(map_a, map_b, dim=1, eps=1e-8)  # (B, s, s)
        x = torch.cat([map_a, map_b], dim=1) + similarity.unsqueeze(1)
        x = self.residual(self.merge(x))  # (B, d, s, s)
        return x.flatten(2).permute(2, 0, 1)  # (s*s, B, d), sequence first


class AttentionPooling(nn.Module):
    """One learned query attends to the visual tokens; LayerNorm → image-pair embedding (B, d)."""

    def __init__(self, d: int, *, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, d))
        self.attention = nn.MultiheadAttention(d, heads)
        self.norm = nn.LayerNorm(d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (s*s, B, d) -> (B, d)
        query = self.query.unsqueeze(1).expand(1, tokens.shape[1], -1)  # (1, B, d)
        pooled = self.attention(query, tokens, tokens, need_weights=False)[0]
        return self.norm(pooled[0])
