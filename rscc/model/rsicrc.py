"""The whole RSICRC model (METHOD §2), built from a :class:`~rscc.config.ModelConfig`.

    images A, B ─ backbone ─ (proj) ─ HSA ─ cosine-mask fusion ─ visual tokens ─┬─ attention pooling → vis_emb
                                                                                 └─ multimodal decoder → logits
    caption ─ token embedding + positions ─ unimodal decoder → text_emb (at END) ─┘

``backbone_features`` is what a feature cache stores (the raw backbone output, before ``proj``);
``encode_features`` continues from there. Weights are saved as safetensors (tied embeddings
stored once); :func:`load_weights` checks them against the configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rscc.config import ModelConfig
from rscc.errors import CheckpointError, ConfigError
from rscc.losses import caption_loss
from rscc.model.backbones import Backbone, backbone_shape, build_backbone
from rscc.model.decoder import CaptionDecoder, self_attention_mask, text_embedding
from rscc.model.encoder import HSA, AttentionPooling, CosineMaskFusion, HSAAttention
from rscc.model.weights import state_mismatch

TIED_KEY = "decoder.token_embedding.weight"  # the same tensor as decoder.lm_head.weight when tied


@dataclass
class RSICRCOutput:
    vis_emb: torch.Tensor  # (B, d) image-pair embedding
    text_emb: torch.Tensor  # (B, d) caption embedding (unimodal output at END)
    vis_toks: torch.Tensor  # (s*s, B, d) visual tokens, sequence first
    logits: torch.Tensor  # (B, L, V)
    cross_attention: torch.Tensor  # (B, L, s*s), last multimodal layer, averaged over heads
    cap_loss: torch.Tensor | None  # scalar rscc.losses.caption_loss, when labels are given


class RSICRC(nn.Module):
    def __init__(self, config: ModelConfig, load_pretrained: bool = True, with_backbone: bool = True):
        """``load_pretrained``: fetch the backbone's pretrained weights (False when a checkpoint
        follows). ``with_backbone=False`` builds the head only, fed with precomputed features."""
        super().__init__()
        if config.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be set from the run's vocabulary (got "
                              f"{config.vocab_size})")
        self.config = config
        shape = backbone_shape(config)
        self.backbone: Backbone | None = build_backbone(config, load_pretrained) if with_backbone else None
        self.feature_channels, self.feature_size = shape.out_channels, shape.feature_size
        d = config.d_model
        self.proj = nn.Conv2d(shape.out_channels, d, kernel_size=1) if shape.out_channels != d else None
        self.hsa = HSA(d, feature_size=shape.feature_size, layers=config.encoder_layers, heads=config.num_heads,
                       a_dim=config.a_dim, h_dim=config.h_dim, dropout=config.dropout,
                       value_from_key=config.value_from_key, transpose_output=config.transpose_hsa_output,
                       double_residual=config.double_residual)
        self.fusion = CosineMaskFusion(d)
        self.pooling = AttentionPooling(d, heads=config.num_heads)
        self.decoder = CaptionDecoder(config.vocab_size, d=d, max_len=config.max_len, heads=config.num_heads,
                                      layers=config.decoder_layers, dropout=config.dropout,
                                      learnable_positions=config.learnable_positions,
                                      tie_embeddings=config.tie_embeddings, prenorm=config.prenorm)

    # ------------------------------------------------------------------ images
    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, C, s, s)
        if self.backbone is None:
            raise RuntimeError("this model was built without a backbone; feed features to encode_features")
        return self.backbone(images)

    def encode_features(self, feat_a: torch.Tensor, feat_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone features (B, C, s, s) × 2 → (vis_emb (B, d), vis_toks (s*s, B, d))."""
        if self.proj is not None:
            feat_a, feat_b = self.proj(feat_a), self.proj(feat_b)
        map_a, map_b = self.hsa(feat_a, feat_b)
        vis_toks = self.fusion(map_a, map_b)
        return self.pooling(vis_toks), vis_toks

    def encode_images(self, img_a: torch.Tensor, img_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_features(self.backbone_features(img_a), self.backbone_features(img_b))

    # ------------------------------------------------------------------ text
    def encode_text(self, input_ids: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """Caption (B, L) → text embedding (B, d); runs the unimodal layers only."""
        x = self.decoder.embed(input_ids)
        x = self.decoder.unimodal(x, self_attention_mask(pad_mask, input_ids.shape[1], input_ids.device))
        return text_embedding(x, pad_mask)

    def decode(self, input_ids: torch.Tensor, pad_mask: torch.Tensor | None,
               vis_toks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, L, V), cross-attention (B, L, s*s)); ``vis_toks`` (s*s, B, d)."""
        return self._decode(input_ids, pad_mask, vis_toks)[1:]

    def _decode(self, input_ids, pad_mask, vis_toks):
        mask = self_attention_mask(pad_mask, input_ids.shape[1], input_ids.device)
        x = self.decoder.unimodal(self.decoder.embed(input_ids), mask)
        text_emb = text_embedding(x, pad_mask)
        x, weights = self.decoder.multimodal(x, vis_toks.transpose(0, 1), mask)
        return text_emb, self.decoder.logits(x), weights

    # ------------------------------------------------------------------ both
    def forward(self, input_ids: torch.Tensor, pad_mask: torch.Tensor | None, labels: torch.Tensor | None = None,
                img_a: torch.Tensor | None = None, img_b: torch.Tensor | None = None,
                feat_a: torch.Tensor | None = None, feat_b: torch.Tensor | None = None) -> RSICRCOutput:
        """One pass over image pairs (``img_*`` or precomputed ``feat_*``) and their captions."""
        if feat_a is None or feat_b is None:
            if img_a is None or img_b is None:
                raise ValueError("give img_a and img_b, or feat_a and feat_b")
            feat_a, feat_b = self.backbone_features(img_a), self.backbone_features(img_b)
        vis_emb, vis_toks = self.encode_features(feat_a, feat_b)
        text_emb, logits, weights = self._decode(input_ids, pad_mask, vis_toks)
        loss = caption_loss(logits, labels) if labels is not None else None
        return RSICRCOutput(vis_emb, text_emb, vis_toks, logits, weights, loss)


def build_model(config: ModelConfig, load_pretrained: bool = True, with_backbone: bool = True) -> RSICRC:
    return RSICRC(config, load_pretrained=load_pretrained, with_backbone=with_backbone)


# ---------------------------------------------------------------------- bookkeeping
def parameter_table(model: RSICRC) -> list[tuple[str, int, int]]:
    """(block, total, trainable) for each top-level block, then ("total", ...). Tied weights count once."""
    rows, seen = [], set()
    for name, module in model.named_children():
        params = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in params)
        rows.append((name, sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)))
    rows.append(("total", sum(r[1] for r in rows), sum(r[2] for r in rows)))
    return rows


def unused_parameter_count(model: RSICRC) -> int:
    """Parameters that never reach an output: HSA value projections when ``value_from_key``."""
    return sum(m.value.weight.numel() for m in model.hsa.modules()
               if isinstance(m, HSAAttention) and m.value_from_key)


# ---------------------------------------------------------------------- weights on disk
def save_weights(model: RSICRC, path: str | Path) -> None:
    """All parameters and buffers as safetensors; a tied embedding is stored once (as lm_head)."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.decoder.tied:
        state.pop(TIED_KEY)
    save_file(state, str(path), metadata={"format": "rscc", "tied_embeddings": str(model.decoder.tied)})


def load_weights(model: RSICRC, path: str | Path) -> RSICRC:
    """Load :func:`save_weights` output; CheckpointError when the file does not fit the configuration.

    A model built without a backbone ignores the file's backbone weights."""
    from rscc.model.backbones import read_state_dict

    path = Path(path)
    state = read_state_dict(path)
    if model.backbone is None:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    load_state(model, state, source=str(path))
    return model


def load_state(model: RSICRC, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict in our key names, naming the first mismatching keys and shapes."""
    state = dict(state)
    if model.decoder.tied:
        if TIED_KEY in state and "decoder.lm_head.weight" not in state:
            state["decoder.lm_head.weight"] = state[TIED_KEY]
        if "decoder.lm_head.weight" in state:
            state[TIED_KEY] = state["decoder.lm_head.weight"]
    missing, unexpected, wrong = state_mismatch(model.state_dict(), state)
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"shape mismatch for {len(wrong)} key(s), first: {'; '.join(wrong[:3])}")
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the file, first: {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), first: {', '.join(unexpected[:3])}")
        raise CheckpointError(f"{source}: weights do not fit the model configuration "
                              f"(backbone {model.config.backbone}, d_model {model.config.d_model}, "
                              f"vocab_size {model.config.vocab_size}): " + "; ".join(parts))
    model.load_state_dict(state)
