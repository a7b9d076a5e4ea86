"""Evaluation and feature caching of a frozen backbone: what the study's trainings spend outside the
training steps, each against its baseline in the same process, on one thread.

1. Feature caching (:func:`rscc.feature_cache.compute_features`, channels-last convolutions) against
   the same loop in the default memory layout (the baseline, written out below).
2. Captioning and embedding a test split (:func:`rscc.evaluate.run_model`) from the trainer's
   feature cache against running the backbone on the images again (the evaluation before the cache
   was read).

The model is the quick profile's preset (a frozen ImageNet EfficientNet-Lite0 under the narrow head)
with an untrained head, so greedy decoding runs all of its steps (the worst case); the data are a
synthetic set generated into a temporary folder.

    python benchmarks/cached_eval.py                     # 200 pairs at 128 px
    python benchmarks/cached_eval.py --pairs 200 --image-size 224
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader


def baseline_features(model, pairs, root, out):
    """compute_features as it was: the default (contiguous) memory layout."""
    from rscc.data.images import PairImages

    loader = DataLoader(PairImages([p.image_paths(root) for p in pairs], model.backbone.transform), batch_size=32)
    start = 0
    with torch.no_grad():
        for img_a, img_b in loader:
            n = img_a.shape[0]
            feats = model.backbone_features(torch.cat([img_a, img_b])).float()
            out[start:start + n] = torch.stack([feats[:n], feats[n:]], dim=1).numpy()
            start += n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--preset", default="efficientnet-lite0-imagenet")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from rscc.config import load_preset
    from rscc.data.levircc import Vocabulary, load_pairs
    from rscc.data.synth import make_synthetic
    from rscc.evaluate import run_model
    from rscc.feature_cache import compute_features, ensure_feature_cache
    from rscc.model.rsicrc import build_model

    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "synthetic", args.pairs, size=128, seed=0, progress=False)
        pairs = load_pairs(root)
        vocab = Vocabulary.build(pairs, rule="authors")
        config = load_preset(args.preset, [f"model.image_size={args.image_size}", f"model.vocab_size={len(vocab)}"])
        torch.manual_seed(0)
        model = build_model(config.model).eval()
        b = model.backbone
        shape = (len(pairs), 2, b.out_channels, b.feature_size, b.feature_size)

        baseline_features(model, pairs[:8], root, np.zeros((8, *shape[1:]), np.float32))  # warm-up
        start = time.perf_counter()
        baseline_features(model, pairs, root, np.zeros(shape, np.float32))
        contiguous = time.perf_counter() - start
        start = time.perf_counter()
        compute_features(model, pairs, root, np.zeros(shape, np.float32), torch.device("cpu"), desc=None)
        channels_last = time.perf_counter() - start

        splits = {s: [p for p in pairs if p.split == s] for s in ("train", "val", "test")}
        cache = ensure_feature_cache(model, args.preset, "imagenet", root, splits, device=torch.device("cpu"),
                                     progress=False, cache_root=Path(tmp) / "cache")
        test = splits["test"]
        start = time.perf_counter()
        from_images = run_model(model, vocab, test, root, progress=False)
        images_s = time.perf_counter() - start
        start = time.perf_counter()
        from_cache = run_model(model, vocab, test, root, progress=False, features=cache, split="test")
        cache_s = time.perf_counter() - start
        cosine = torch.nn.functional.cosine_similarity(from_images["vis_emb"], from_cache["vis_emb"]).min().item()

    images = 2 * len(pairs)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, 1 thread; {args.preset} at {args.image_size} px "
          f"({b.out_channels} x {b.feature_size} x {b.feature_size}), synthetic pairs\n")
    print("| step | baseline | rscc | speed-up |\n|---|---|---|---|")
    print(f"| feature caching, {images} images | contiguous {1000 * contiguous / images:.1f} ms/image "
          f"| channels-last {1000 * channels_last / images:.1f} ms/image | {contiguous / channels_last:.2f}x |")
    print(f"| test split, {len(test)} pairs: captions + embeddings | backbone on the images {images_s:.2f} s "
          f"| feature cache {cache_s:.2f} s | {images_s / cache_s:.1f}x |")
    print(f"\nlowest cosine between a pair embedding from the images and from the (float16) cache: {cosine:.6f}")


if __name__ == "__main__":
    main()
