"""Zero-shot baseline of the authors (METHOD §6.6): a CLIP model on the pixel difference |B − A|.

Each image is put through the model's own evaluation transform (resize, centre crop, CLIP
mean/std), the absolute difference of the two normalised tensors is encoded as an image, and the
caption with the model's text tower. The embeddings are scored with the functions of
:mod:`rscc.metrics.retrieval`, like the model's.

Offline without the weights, the model runs with random initialisation and says so with a
warning: its scores are then a chance-level check, not a baseline.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch


def load_clip(model_name: str, pretrained: str | None, device: str | torch.device = "cpu"):
    """(model, preprocess, tokenizer) of an open_clip model; random init, with a warning, when
    `pretrained` is None or its weights cannot be loaded (e.g. offline)."""
    import open_clip

    model = preprocess = None
    if pretrained is not None:
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained,
                                                                         device=device)
        except Exception as exc:  # offline hub, missing file, unknown tag: fall back, loudly
            warnings.warn(f"zero-shot baseline: could not load weights {pretrained!r} for {model_name} ({exc}); "
                          "using RANDOM initialisation, the scores are not a baseline", stacklevel=2)
    else:
        warnings.warn(f"zero-shot baseline: no weights given for {model_name}; using RANDOM initialisation, "
                      "the scores are not a baseline", stacklevel=2)
    if model is None:
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None, device=device)
    return model.eval(), preprocess, open_clip.get_tokenizer(model_name)


def _as_batch(images: Sequence, preprocess, device) -> torch.Tensor:
    """(B, 3, H, W): preprocessed PIL images or image paths; a tensor is taken as preprocessed."""
    if isinstance(images, torch.Tensor):
        return images.to(device)
    from PIL import Image

    batch = []
    for image in images:
        if isinstance(image, (str, Path)):
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        batch.append(preprocess(image))
    return torch.stack(batch).to(device)


@torch.no_grad()
def zero_shot_embeddings(model_name: str, pretrained: str | None, pairs_A: Sequence, pairs_B: Sequence,
                         captions: Sequence[str], batch_size: int = 32,
                         device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(pair_emb (N, e), text_emb (M, e)) of a CLIP model: images |B − A|, captions as text.

    pairs_A / pairs_B: N before / after images, as PIL images, paths, or (N, 3, H, W) tensors
    already preprocessed. `pretrained` is an open_clip tag or a checkpoint path (None: random
    init). Embeddings are returned unnormalised, on the CPU.
    """
    if len(pairs_A) != len(pairs_B):
        raise ValueError("zero_shot_embeddings needs as many before as after images "
                         f"({len(pairs_A)} vs {len(pairs_B)})")
    model, preprocess, tokenizer = load_clip(model_name, pretrained, device)
    pair_emb = []
    for start in range(0, len(pairs_A), batch_size):
        before = _as_batch(pairs_A[start:start + batch_size], preprocess, device)
        after = _as_batch(pairs_B[start:start + batch_size], preprocess, device)
        pair_emb.append(model.encode_image((after - before).abs()).float().cpu())
    text_emb = [model.encode_text(tokenizer(list(captions[start:start + batch_size])).to(device)).float().cpu()
                for start in range(0, len(captions), batch_size)]
    return torch.cat(pair_emb), torch.cat(text_emb)


__all__ = ["load_clip", "zero_shot_embeddings"]
