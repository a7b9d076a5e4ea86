"""Captions per second: the authors' greedy loop against the cached, batched greedy decoder.

The authors' loop (:func:`rscc.generate.greedy_reference`) decodes one pair at a time and re-runs
the decoder over the whole prefix at every step. :func:`rscc.generate.greedy` keeps every
layer's keys/values and decodes a batch of pairs at once. Both run the head of a preset with
random weights on random visual tokens (s*s, B, d), so no backbone is needed; the ids of the
pairs decoded by both are asserted equal. Times are per caption, in the same process.

    python benchmarks/decode.py                       # paper-rn50 head (d=2048) and cpu-tiny
    python benchmarks/decode.py --preset cpu-tiny --reference-pairs 8 --batch 1 64
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from rscc.config import load_preset
from rscc.generate import greedy, greedy_reference
from rscc.model.backbones import backbone_shape
from rscc.model.rsicrc import build_model

LEVIR_VOCAB_SIZE = 468  # the authors' vocabulary on LEVIR-CC (METHOD §1.2)


def reference_loop(model, vis_toks, pairs: int, steps: int) -> tuple[list[list[int]], float]:
    start = time.perf_counter()
    ids = greedy_reference(model, vis_toks=vis_toks[:, :pairs], max_len=steps)
    return ids, (time.perf_counter() - start) / pairs


def cached(model, vis_toks, batch: int, pairs: int, steps: int) -> tuple[list[list[int]], float]:
    ids, start = [], time.perf_counter()
    for first in range(0, pairs, batch):
        ids += greedy(model, vis_toks[:, first:first + batch], max_len=steps).sequences()
    return ids, (time.perf_counter() - start) / pairs


def bench(preset: str, reference_pairs: int, batches: list[int], cached_pairs: int, seed: int,
          steps: int) -> list[dict]:
    config = load_preset(preset, [f"model.vocab_size={LEVIR_VOCAB_SIZE}"])
    torch.manual_seed(seed)
    model = build_model(config.model, load_pretrained=False, with_backbone=False).eval()
    tokens = backbone_shape(config.model).feature_size ** 2
    pairs = max([reference_pairs, cached_pairs] + batches)
    vis_toks = torch.randn(tokens, pairs, config.model.d_model)
    with torch.no_grad():
        greedy(model, vis_toks[:, :2])  # warm-up
        expected, reference_time = reference_loop(model, vis_toks, reference_pairs, steps)
        rows = [dict(preset=preset, steps=steps, decoder="authors' loop", batch=1, pairs=reference_pairs,
                     seconds=reference_time, length=sum(map(len, expected)) / len(expected))]
        for batch in batches:
            n = max(batch, cached_pairs) if batch > 1 else cached_pairs
            ids, seconds = cached(model, vis_toks, batch, n, steps)
            both = min(n, reference_pairs)  # pairs decoded by both
            assert ids[:both] == expected[:both], f"{preset}: cached ids differ from the authors' loop"
            rows.append(dict(preset=preset, steps=steps, decoder="cached greedy", batch=batch, pairs=n, seconds=seconds,
                             length=sum(map(len, ids)) / len(ids)))
    for row in rows:
        row["speed-up"] = reference_time / row["seconds"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["paper-rn50", "cpu-tiny"])
    parser.add_argument("--reference-pairs", type=int, nargs="+", default=[2, 8],
                        help="pairs decoded by the authors' loop, per preset (the last value repeats)")
    parser.add_argument("--cached-pairs", type=int, default=4, help="pairs decoded one at a time with the cache")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--steps", type=int, nargs="+", default=[41, 12],
                        help="decoding steps; random weights seldom emit END, so every caption runs this many "
                        "(41: the authors' max_len; 12: a typical LEVIR-CC changed caption, 11 words + END)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"random weights, vocabulary {LEVIR_VOCAB_SIZE}\n")
    print("| preset | steps | decoder | batch | pairs | ids per caption | s per caption | captions/s | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for k, preset in enumerate(args.preset):
        reference_pairs = args.reference_pairs[min(k, len(args.reference_pairs) - 1)]
        for steps in args.steps:
            for r in bench(preset, reference_pairs, args.batch, args.cached_pairs, args.seed, steps):
                print(f"| {r['preset']} | {r['steps']} | {r['decoder']} | {r['batch']} | {r['pairs']} | "
                      f"{r['length']:.1f} | "
                      f"{r['seconds']:.4f} | {1 / r['seconds']:.1f} | {r['speed-up']:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
