"""Peak memory of training cpu-tiny on 2,000 vs 10,000 synthetic pairs (issue 8).

The authors' loader decodes every image of the dataset into one tensor in RAM (≈12 GB on
LEVIR-CC); rscc reads images lazily, one batch at a time, and keeps frozen-backbone features in a
file on disk, read row by row. This benchmark shows that the process's memory stays far below 3 GB
and does not grow with the number of pairs.

Every measurement runs in a fresh subprocess (the parent only orchestrates), for each dataset size:

``loader``
    one pass of a DataLoader (batch 32) over every pair of every split with the cpu-tiny
    backbone transform: each image decoded once, every caption encoded.
``epoch``
    ``rscc.train.train`` of the cpu-tiny preset for one full epoch, from an empty cache: the
    frozen-backbone feature cache is built (every image decoded once and written to a
    .npy file), every training step reads its batch from it, then the validation.
``images``
    the same training with ``train.cache_features=false`` (images decoded at every step, as with
    a fine-tuned backbone), capped at ``--image-steps`` steps plus the validation pass.

Reported per run: peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``, the kernel's
high-water mark, which counts file-backed pages of the feature map too), the peak of anonymous
memory (``RssAnon`` from /proc/self/status, sampled every 20 ms: the heap, tensors, model) and
the RSS after the imports, before any work. Cheap settings, said so in the output: images are
generated at ``--size`` px (64 by default; the backbone transform resizes them to 128 px), the
contrastive false negatives use exact caption strings (no sentence encoder), one torch thread.

    python benchmarks/memory.py                      # 2,000 and 10,000 pairs, prints a table
    python benchmarks/memory.py --write              # ... and appends it to benchmarks/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
LIMIT_GB = 3.0


# ----------------------------------------------------------------------------- inside a child
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """Samples RssAnon every ``interval`` seconds in a daemon thread; ``peak`` in KiB."""

    def __init__(self, interval: float = 0.02):
        self.peak, self.interval, self._stop = 0, interval, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_kib("RssAnon"))
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("RssAnon"))
        return self.peak


def _overrides(root: str, mode: str, image_steps: int) -> list[str]:
    common = [f"data.root={root}", "train.epochs=1", "loss.similarity_source=string", "train.num_threads=1",
              "train.log_every=100"]
    return common + (["train.cache_features=false", f"train.max_steps={image_steps}"] if mode == "images" else [])


def child(mode: str, root: str, work: str, image_steps: int) -> dict:
    import torch

    from rscc.config import load_preset

    torch.set_num_threads(1)
    config = load_preset("cpu-tiny", _overrides(root, mode, image_steps))
    baseline_kib = _status_kib("VmRSS")
    sampler = AnonPeak()
    start = time.perf_counter()
    result: dict = {"mode": mode}
    if mode == "loader":
        from torch.utils.data import DataLoader

        from rscc.data.levircc import LevirCCDataset, Vocabulary, collate, load_pairs
        from rscc.model.rsicrc import build_model

        pairs = load_pairs(root)
        vocab = Vocabulary.build(pairs)
        config.model.vocab_size = len(vocab)
        transform = build_model(config.model, load_pretrained=False).backbone.transform
        dataset = LevirCCDataset(pairs, vocab, root, transform=transform, per_caption=False)
        seen = 0
        for batch in DataLoader(dataset, batch_size=32, collate_fn=collate):
            seen += len(batch["img_a"])
        result.update(samples=seen, images=2 * seen)
    else:
        from rscc.train import train

        os.environ["RSCC_CACHE"] = str(Path(work) / "cache")  # empty: the feature cache is built here
        summary = train(config, Path(work) / "run", progress=False)
        result.update(steps=summary["steps"], steps_per_epoch=summary["steps_per_epoch"])
    result["seconds"] = time.perf_counter() - start
    result["anon_peak_mb"] = sampler.stop() / 1024
    result["baseline_rss_mb"] = baseline_kib / 1024
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return result


# ----------------------------------------------------------------------------- the parent
def measure(mode: str, root: Path, work: Path, image_steps: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, __file__, "--child", mode, "--root", str(root), "--work", str(work),
                           "--image-steps", str(image_steps)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{mode} on {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def authors_bytes(pairs: int, side: int) -> int:
    """What a loader holding every image as a float32 tensor of the model's input size would keep."""
    return pairs * 2 * 3 * side * side * 4


def table(rows: list[dict], size: int, image_steps: int, load: tuple[float, float]) -> str:
    lines = [
        f"Command: `python benchmarks/memory.py --pairs {' '.join(str(r) for r in sorted({r['pairs'] for r in rows}))} "
        f"--size {size} --image-steps {image_steps}`  ",
        f"Synthetic pairs generated at {size} px (cheaper than LEVIR-CC's 256 px; the cpu-tiny transform resizes them "
        f"to 128 px), exact-string false negatives, 1 torch thread; load average {load[0]:.1f} before, "
        f"{load[1]:.1f} after (other helpers share the 2 cores). One fresh process per row. Last column: every "
        "image of the dataset held as a float32 tensor at the 128 px model input, as the authors' loader holds "
        "LEVIR-CC (≈12 GB at their input size).",
        "",
        "| pairs | run | steps | images decoded | wall s | RSS after imports MB | peak RSS MB | peak anonymous MB "
        "| in-RAM loader would hold MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {"loader": "loader pass, every pair once", "epoch": "1 epoch, feature cache built + read",
             "images": "training, images decoded per step"}
    for r in rows:
        steps = r.get("steps", "")
        images = r.get("images", 2 * r["pairs"] if r["mode"] == "epoch" else "")
        lines.append(f"| {r['pairs']:,} | {names[r['mode']]} | {steps} | {images if images == '' else f'{images:,}'} | "
                     f"{r['seconds']:.0f} | {r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['anon_peak_mb']:.0f} | {authors_bytes(r['pairs'], 128) / 2**20:,.0f} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    by = {(r["pairs"], r["mode"]): r for r in rows}
    small, large = sorted({r["pairs"] for r in rows})[0], sorted({r["pairs"] for r in rows})[-1]
    worst = max(r["peak_rss_mb"] for r in rows) / 1024
    parts = [f"Largest peak RSS: {worst:.2f} GB ({'under' if worst < LIMIT_GB else 'OVER'} the {LIMIT_GB:.0f} GB "
             "target)."]
    for mode in ("loader", "epoch", "images"):
        if (small, mode) in by and (large, mode) in by:
            a, b = by[(small, mode)], by[(large, mode)]
            parts.append(f"{mode}: {large:,} vs {small:,} pairs: peak anonymous memory {b['anon_peak_mb']:.0f} vs "
                         f"{a['anon_peak_mb']:.0f} MB ({b['anon_peak_mb'] / a['anon_peak_mb']:.2f}x), peak RSS "
                         f"{b['peak_rss_mb']:.0f} vs {a['peak_rss_mb']:.0f} MB "
                         f"({b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x).")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--size", type=int, default=64, help="image side of the synthetic pairs (default 64)")
    parser.add_argument("--image-steps", type=int, default=100, help="steps of the run without feature cache")
    parser.add_argument("--modes", nargs="+", default=["loader", "epoch", "images"])
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "bench-memory",
                        help="datasets and runs (default .cache/bench-memory)")
    parser.add_argument("--write", action="store_true", help="append the table to benchmarks/RESULTS.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.root, str(args.work), args.image_steps)))
        return 0

    import shutil

    from rscc.data.synth import ensure_synthetic

    load_before = os.getloadavg()[0]
    rows = []
    for pairs in args.pairs:
        start = time.perf_counter()
        root = ensure_synthetic(args.work / f"synthetic-{pairs}-{args.size}-0", pairs, size=args.size, seed=0,
                                progress=False, workers=2)
        print(f"{pairs:,} pairs at {args.size} px ready in {time.perf_counter() - start:.0f} s", flush=True)
        for mode in args.modes:
            work = args.work / f"{mode}-{pairs}"
            shutil.rmtree(work, ignore_errors=True)  # a fresh run and an empty feature cache
            row = {"pairs": pairs, **measure(mode, root, work, args.image_steps)}
            shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = table(rows, args.size, args.image_steps, (load_before, os.getloadavg()[0])) + "\n\n" + summary(rows)
    print("\n" + text)
    if args.write:
        section = f"\n\n## Peak memory of training vs dataset size (benchmarks/memory.py, {date.today()})\n\n{text}\n"
        with RESULTS.open("a", encoding="utf-8") as out:  # appended: other benchmarks write here too
            out.write(section)
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
