"""Seconds per training step and peak memory (RSS) on the CPU, faithful options on and off.

One training step is what :func:`rscc.train.train` does per batch: the forward pass, the joint
loss (caption cross-entropy + 0.5 · InfoNCE with FNA), the backward pass and an AdamW step.
Weights are random (no pretrained weights are needed); the batch is random images (or, for a
preset whose frozen backbone the trainer caches, random backbone features, as the trainer feeds
them) with random captions of 8–20 words padded to 41 tokens, as LEVIR-CC's.

Each configuration runs in its own subprocess, so that its peak RSS (``ru_maxrss``) is its own:
model build, ``--warmup`` steps, then ``--steps`` timed steps. On a CPU shared with other jobs the
wall time of a step varies several-fold (a thread descheduled mid-step stalls its partner at the
next barrier), so the table gives the median, the minimum (the figure closest to an unloaded
machine, used for the ratio to the authors' code) and the process CPU time of a step.
"Faithful on" is the authors' computation (``value_from_key``, ``transpose_hsa_output``,
``double_residual``); "off" the corrected one.

    python benchmarks/train_step.py                              # paper-rn50 @4, cpu-tiny @32
    python benchmarks/train_step.py --preset paper-rn50 --batch 4 --threads 2 --steps 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

FAITHFUL = ("value_from_key", "transpose_hsa_output", "double_residual")
LEVIR_VOCAB_SIZE = 468  # the authors' vocabulary on LEVIR-CC (METHOD §1.2)
SENTENCE_DIM = 384  # all-MiniLM-L6-v2; only the false-negative mask reads these vectors
AUTHORS_SECONDS_PER_STEP = 14.0  # the authors' code, paper-rn50 at batch 4, 2 cores, unloaded machine
AUTHORS_PEAK_GB = 7.1


def random_batch(config, batch: int, use_features: bool, seed: int = 0) -> tuple[dict, dict]:
    """(model inputs, contrastive-loss inputs) of a random batch shaped like LEVIR-CC's."""
    import torch

    from rscc.model.backbones import backbone_shape

    g = torch.Generator().manual_seed(seed)
    max_len = config.model.max_len
    input_ids = torch.zeros(batch, max_len, dtype=torch.long)
    for i in range(batch):
        words = int(torch.randint(8, 21, (1,), generator=g))
        input_ids[i, 0] = 1  # START
        input_ids[i, 1:words + 1] = torch.randint(4, LEVIR_VOCAB_SIZE, (words,), generator=g)
        input_ids[i, words + 1] = 3  # END
    pad_mask = input_ids == 0
    inputs = {"input_ids": input_ids, "pad_mask": pad_mask, "labels": input_ids.masked_fill(pad_mask, -100)}
    shape = backbone_shape(config.model)
    if use_features:  # (B, C, s, s) as the feature cache stores them
        size = (batch, shape.out_channels, shape.feature_size, shape.feature_size)
        inputs.update(feat_a=torch.randn(size, generator=g), feat_b=torch.randn(size, generator=g))
    else:
        size = (batch, 3, shape.image_size, shape.image_size)
        inputs.update(img_a=torch.randn(size, generator=g), img_b=torch.randn(size, generator=g))
    labels = torch.arange(batch)
    labels[: batch // 4] = -1  # a quarter unchanged, as in LEVIR-CC
    sentences = torch.nn.functional.normalize(torch.randn(batch, SENTENCE_DIM, generator=g), dim=1)
    return inputs, {"labels": labels, "sentence_embeddings": sentences}


def measure(preset: str, batch: int, faithful: bool, warmup: int, steps: int, threads: int) -> dict:
    """Build the model of ``preset`` and time ``steps`` training steps after ``warmup`` (in this process)."""
    import torch

    from rscc.config import load_preset
    from rscc.feature_cache import backbone_is_static
    from rscc.losses import ContrastiveLoss, caption_loss
    from rscc.model.rsicrc import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    flags = [f"model.{name}={str(faithful).lower()}" for name in FAITHFUL]
    config = load_preset(preset, ["model.pretrained=null", f"model.vocab_size={LEVIR_VOCAB_SIZE}", *flags])
    model = build_model(config.model, load_pretrained=False).train()
    loss_fn = ContrastiveLoss.from_config(config.loss)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay,
                                  eps=config.train.eps)
    use_features = config.train.cache_features and backbone_is_static(model.backbone)
    inputs, contrastive_inputs = random_batch(config, batch, use_features)
    labels = inputs.pop("labels")

    def step() -> float:
        out = model(**inputs)
        con, _ = loss_fn(out.vis_emb, out.text_emb, **contrastive_inputs)
        loss = caption_loss(out.logits, labels) + config.loss.lam * con
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    for _ in range(warmup):
        step()
    times, cpu_times = [], []
    for _ in range(steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return {
        "preset": preset, "batch": batch, "faithful": faithful, "threads": threads,
        "input": "cached features" if use_features else "images",
        "trainable_parameters": sum(p.numel() for p in trainable),
        "seconds_per_step": statistics.median(times), "min_seconds_per_step": min(times),
        "cpu_seconds_per_step": statistics.median(cpu_times),
        "steps": steps, "warmup": warmup,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,  # ru_maxrss is KiB
    }


def run_child(args: argparse.Namespace, preset: str, batch: int, faithful: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", preset, str(batch), str(int(faithful)),
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--threads", str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", default=["paper-rn50", "cpu-tiny"])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 32], help="one per preset (the last repeats)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the authors' figure: 2 cores)")
    parser.add_argument("--child", nargs=3, metavar=("PRESET", "BATCH", "FAITHFUL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        preset, batch, faithful = args.child
        print(json.dumps(measure(preset, int(batch), faithful == "1", args.warmup, args.steps, args.threads)))
        return

    import torch

    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s), "
          f"{platform.processor() or platform.machine()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| preset | batch | threads | input | faithful options | trainable params | s/step (median) | s/step (min) "
          "| CPU s/step | peak RSS (GB) | min vs authors' 14 s | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for k, preset in enumerate(args.preset):
        batch = args.batch[min(k, len(args.batch) - 1)]
        for faithful in (True, False):
            r = run_child(args, preset, batch, faithful)
            ratio = (f"{r['min_seconds_per_step'] / AUTHORS_SECONDS_PER_STEP:.2f}×"
                     if preset == "paper-rn50" and batch == 4 else "—")
            print(f"| {preset} | {batch} | {args.threads} | {r['input']} | {'on' if faithful else 'off'} | "
                  f"{r['trainable_parameters'] / 1e6:.1f} M | {r['seconds_per_step']:.3f} | "
                  f"{r['min_seconds_per_step']:.3f} | {r['cpu_seconds_per_step']:.3f} | "
                  f"{r['peak_rss_gb']:.2f} | {ratio} | "
                  f"{os.getloadavg()[0]:.2f} |", flush=True)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; the authors' code: "
          f"{AUTHORS_SECONDS_PER_STEP} s/step, {AUTHORS_PEAK_GB} GB peak RSS (paper-rn50, batch 4, 2 cores, unloaded)")


if __name__ == "__main__":
    main()
