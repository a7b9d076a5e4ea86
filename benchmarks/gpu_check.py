"""GPU check: training throughput and memory of paper-rn50 in bf16, and proof that bf16 trains.

A short prepared script for a CUDA machine (< 3 minutes on an H100, model builds included):

1. **Throughput.** ``paper-rn50`` (random init: no weights are downloaded) at batch 32, the
   training step of :func:`rscc.train.train` (forward under bf16 autocast, caption + contrastive
   loss, backward, AdamW) on a random batch: steps/s, samples/s and peak GPU memory, in bf16 and,
   for comparison, in fp32.
2. **bf16 trains.** The same model, from one initialisation, trained for ``--train-steps`` steps on
   one fixed batch of a small synthetic LEVIR-CC set (real images and captions from
   ``rscc synth``) in bf16 and in fp32. The check passes when the bf16 loss falls (the mean of
   its last 5 steps below ``--max-ratio`` times its first step) and stays finite; the fp32 curve
   is recorded beside it.

    python benchmarks/gpu_check.py --out runs/gpu_check          # on a CUDA machine
    python benchmarks/gpu_check.py --out /tmp/g --device cpu --preset cpu-tiny --batch 8 --train-steps 10

Writes ``gpu_check.json`` to ``--out`` and prints a summary; exit status 1 when the training check
fails. Without CUDA (and ``--device cuda``) it says so and exits 0 without measuring anything.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from train_step import LEVIR_VOCAB_SIZE, random_batch


def autocast(device, bf16: bool):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def build(preset: str, vocab_size: int, device, overrides: list[str] = ()):
    """(config, model in train mode on ``device``, contrastive loss, AdamW) with random weights."""
    import torch

    from rscc.config import load_preset
    from rscc.losses import ContrastiveLoss
    from rscc.model.rsicrc import build_model

    config = load_preset(preset, ["model.pretrained=null", f"model.vocab_size={vocab_size}", *overrides])
    torch.manual_seed(0)
    model = build_model(config.model, load_pretrained=False).to(device).train()
    loss_fn = ContrastiveLoss.from_config(config.loss).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay,
                                  eps=config.train.eps)
    return config, model, loss_fn, optimizer


def train_step(model, loss_fn, optimizer, inputs: dict, labels, contrastive: dict, lam: float, device, bf16: bool) -> float:
    from rscc.losses import caption_loss

    with autocast(device, bf16):
        out = model(**inputs)
    con, _ = loss_fn(out.vis_emb, out.text_emb, **contrastive)  # computed in float32 (losses.info_nce)
    loss = caption_loss(out.logits, labels) + lam * con
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def on(device, tensors: dict) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in tensors.items()}


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(preset: str, batch: int, steps: int, device, bf16: bool) -> dict:
    import torch

    config, model, loss_fn, optimizer = build(preset, LEVIR_VOCAB_SIZE, device)
    inputs, contrastive = random_batch(config, batch, use_features=False)
    inputs, contrastive = on(device, inputs), on(device, contrastive)
    labels = inputs.pop("labels")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(3):  # warm-up: cuDNN algorithm choice, allocator
        train_step(model, loss_fn, optimizer, inputs, labels, contrastive, config.loss.lam, device, bf16)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loss = train_step(model, loss_fn, optimizer, inputs, labels, contrastive, config.loss.lam, device, bf16)
    synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    result = {"precision": "bf16" if bf16 else "fp32", "preset": preset, "batch": batch, "steps": steps,
              "seconds_per_step": seconds, "steps_per_s": 1 / seconds, "samples_per_s": batch / seconds,
              "last_loss": loss}
    if device.type == "cuda":
        result["peak_memory_allocated_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
        result["peak_memory_reserved_gb"] = torch.cuda.max_memory_reserved(device) / 1e9
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def synthetic_batch(batch: int, size: int):
    """A fixed batch of ``batch`` (pair, caption) samples of a small synthetic set, and its vocabulary."""
    from rscc.data.levircc import Vocabulary, load_pairs
    from rscc.data.synth import make_synthetic

    pairs_needed = max(12, (batch + 4) // 5 * 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "synthetic", pairs_needed, size=size, seed=0, progress=False)
        pairs = load_pairs(root)
        vocab = Vocabulary.build(pairs, rule="train")
        return pairs, vocab, _load_images(pairs, root)


def _load_images(pairs, root) -> dict:
    from rscc.data.levircc import load_pair_images

    return {p.imgid: load_pair_images(p, root) for p in pairs}


def fixed_batch(config, pairs, vocab, images: dict, model, batch: int) -> tuple[dict, dict]:
    """Model inputs and contrastive inputs (string false negatives) of the first ``batch`` captions."""
    import torch

    from rscc.data.levircc import encode_captions
    from rscc.losses import caption_keys

    encoded = encode_captions(pairs, vocab, config.model.max_len)
    rows = list(range(batch))  # caption 5 * i + k: pair i, caption k
    chosen = [pairs[r // 5] for r in rows]
    transform = model.backbone.transform
    inputs = {
        "input_ids": encoded.input_ids[rows], "pad_mask": encoded.pad_mask[rows], "labels": encoded.labels[rows],
        "img_a": torch.stack([transform(images[p.imgid][0]) for p in chosen]),
        "img_b": torch.stack([transform(images[p.imgid][1]) for p in chosen]),
    }
    contrastive = {"labels": torch.tensor([p.label for p in chosen]),
                   "captions": caption_keys([p.raws[r % 5] for p, r in zip(chosen, rows)])}
    return inputs, contrastive


def training_curve(preset: str, batch: int, steps: int, device, bf16: bool, data) -> list[float]:
    pairs, vocab, images = data
    config, model, loss_fn, optimizer = build(preset, len(vocab), device, ["loss.similarity_source=string"])
    inputs, contrastive = fixed_batch(config, pairs, vocab, images, model, batch)
    inputs, contrastive = on(device, inputs), on(device, contrastive)
    labels = inputs.pop("labels")
    return [train_step(model, loss_fn, optimizer, inputs, labels, contrastive, config.loss.lam, device, bf16)
            for _ in range(steps)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the script's logic)")
    parser.add_argument("--preset", default="paper-rn50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="timed steps of the throughput measurement")
    parser.add_argument("--train-steps", type=int, default=30, help="steps of the bf16-trains check")
    parser.add_argument("--max-ratio", type=float, default=0.7,
                        help="pass when mean(last 5 bf16 losses) < max-ratio * first bf16 loss")
    parser.add_argument("--image-size", type=int, default=256, help="synthetic images (LEVIR-CC: 256)")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available here; nothing measured (run it on a GPU machine, "
              "or pass --device cpu for a dry run)")
        return 0
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__, "python": platform.python_version(), "device": args.device,
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()}
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 (the trainer's default)
        torch.backends.cudnn.allow_tf32 = False
    print(f"gpu_check on {report['device_name']}, torch {report['torch']}", flush=True)

    report["throughput"] = []
    for bf16 in (True, False):
        row = throughput(args.preset, args.batch, args.steps, device, bf16)
        report["throughput"].append(row)
        memory = f", peak memory {row['peak_memory_allocated_gb']:.2f} GB" if "peak_memory_allocated_gb" in row else ""
        print(f"{args.preset} batch {args.batch} {row['precision']}: {row['steps_per_s']:.2f} steps/s "
              f"({row['samples_per_s']:.0f} samples/s){memory}", flush=True)

    data = synthetic_batch(args.batch, args.image_size)
    curves = {name: training_curve(args.preset, args.batch, args.train_steps, device, name == "bf16", data)
              for name in ("bf16", "fp32")}
    bf16 = curves["bf16"]
    tail = sum(bf16[-5:]) / len(bf16[-5:])
    finite = all(v == v and abs(v) != float("inf") for v in bf16)
    passed = finite and tail < args.max_ratio * bf16[0]
    report["training"] = {"steps": args.train_steps, "batch": args.batch, "curves": curves,
                          "bf16_first": bf16[0], "bf16_last5_mean": tail,
                          "fp32_last5_mean": sum(curves["fp32"][-5:]) / len(curves["fp32"][-5:]),
                          "criterion": f"finite and mean(last 5) < {args.max_ratio} × first", "passed": passed}
    print(f"bf16 training on a fixed synthetic batch: loss {bf16[0]:.3f} -> {tail:.3f} (mean of the last 5 of "
          f"{args.train_steps} steps); fp32: {curves['fp32'][0]:.3f} -> {report['training']['fp32_last5_mean']:.3f}; "
          f"{'PASS' if passed else 'FAIL'}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'gpu_check.json'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
