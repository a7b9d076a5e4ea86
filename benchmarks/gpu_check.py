"""GPU check (issue 14): the training, decoding, search and torchrun paths of rscc on one accelerator.

One prepared script for a CUDA machine, estimated (never yet run on one) at about 7 minutes on an
H200. Its sections run in this order, each skipped when ``--budget-s`` has too little left, and
every result is written to disk as soon as it exists:

1. **Training throughput** (section ``training``). ``paper-rn50`` with random weights (nothing
   downloaded), the training step of :func:`rscc.train.train` (forward under bf16 autocast,
   caption + 0.5 · InfoNCE with FNA, backward, AdamW; cuDNN deterministic, as the trainer sets it)
   on a random LEVIR-CC-shaped batch (the backbone's 224 px input: LEVIR-CC's 256 px images after
   its transform): steps/s, samples/s, peak GPU memory, in bf16 at batch 4, 32 and 128 and in
   fp32 (TF32 off) at 4 and 32. **Model FLOPs utilisation**: FLOPs of one step (forward +
   backward, counted by :class:`torch.utils.flop_counter.FlopCounterMode`) × steps/s ÷ the
   device's dense bf16 peak (:data:`BF16_PEAK_FLOPS` by device name, or ``--peak-tflops``).
2. **bf16 trains** (``curves``). One initialisation trained ``curve_steps`` steps on a small
   synthetic LEVIR-CC set (images and captions from :func:`rscc.data.synth.make_synthetic`,
   string false negatives) in bf16 and in fp32: passes when every bf16 loss is finite and the
   mean of its last tenth is below ``--max-ratio`` × the mean of its first tenth.
3. **Decoding** (``decoding``). The cached greedy decoder and beam search against the authors'
   per-pair loop (``benchmarks/decode.py``'s functions), paper-rn50 head with random weights on
   random visual tokens: captions/s; the greedy ids must equal the loop's.
4. **Gallery search** (``search``, :class:`rscc.index.GalleryIndex`): single-query latency
   p50/p95 at 100k and 1M random unit rows of d = 2048, stored on the device.
5. **torchrun** (``torchrun``). ``torchrun --nproc_per_node 1 -m rscc.train`` trains one epoch on
   synthetic data and checkpoints; ``--resume train.epochs=2`` resumes it and trains the second;
   then a DDP probe under torchrun makes the process group (NCCL on CUDA, gloo on a CPU),
   all-reduces and takes a DDP step (with one process the trainer itself makes no group).
6. **Variants** (``variants``), against a baseline measured just before them: channels-last
   convolutions, fused AdamW, cuDNN autotuning, ``torch.compile`` and all four together.
7. **Paper profile wall time**, from the rows above: 50 epochs × 34,075 LEVIR-CC training captions
   at batch 4 and at the fastest measured configuration (training steps only: validation and data
   loading not counted).

    python benchmarks/gpu_check.py --out runs/gpu_check                            # on the GPU machine
    python benchmarks/gpu_check.py --out /tmp/gpu_check --device cpu --small --threads 2   # CPU dry run

Writes ``gpu_check.json`` and ``gpu_check.md`` (a section for benchmarks/RESULTS.md) to ``--out``.
Exit status 1 when a check fails (a non-finite loss, the bf16 curve, the decoder's ids, torchrun
or a section that crashed), 2 with ``--device cuda`` and no CUDA device (nothing measured).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py, decode.py beside this file

from train_step import LEVIR_VOCAB_SIZE, random_batch  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s, from the vendors' data sheets; the first key
# found in the device's name wins (so "H100 PCIe" before the SXM part's "H100").
BF16_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                   "L4": 121e12}
PAPER_EPOCHS = 50
LEVIR_TRAIN_CAPTIONS = 34_075  # LEVIR-CC's training split: 6,815 pairs × 5 captions
AUTHORS_BATCH = 4
GALLERY_DIM = 2048  # the paper model's embedding width


@dataclass(frozen=True)
class Variant:
    """One way of running the same training step."""

    name: str
    channels_last: bool = False
    fused_adamw: bool = False
    cudnn_benchmark: bool = False  # the trainer sets cudnn.deterministic and no autotuning
    compile: bool = False


BASELINE = Variant("baseline (as the trainer)")
VARIANTS = [Variant("channels-last", channels_last=True), Variant("fused AdamW", fused_adamw=True),
            Variant("cuDNN autotune", cudnn_benchmark=True), Variant("torch.compile", compile=True),
            Variant("all four", channels_last=True, fused_adamw=True, cudnn_benchmark=True, compile=True)]


@dataclass
class Sizes:
    """What the script measures; :func:`gpu_sizes` for the device, :func:`small_sizes` for a CPU dry run."""

    preset: str = "paper-rn50"
    overrides: tuple[str, ...] = ()
    batches: tuple[int, ...] = (4, 32, 128)
    fp32_batches: tuple[int, ...] = (4, 32)
    variant_batch: int = 32
    warmup: int = 3
    steps: int = 20
    curve_batch: int = 32
    curve_steps: int = 300
    curve_pairs: int = 64
    curve_image_size: int = 256
    decode_reference_pairs: int = 8
    decode_batch: int = 64
    decode_steps: int = 41
    beam: int = 3
    galleries: tuple[int, ...] = (100_000, 1_000_000)
    search_queries: int = 50
    torchrun_preset: str = "paper-rn50"
    torchrun_overrides: tuple[str, ...] = ("model.pretrained=null", "train.batch_size=8", "data.synth_size=256")
    torchrun_pairs: int = 40
    compile: bool = True


def gpu_sizes() -> Sizes:
    return Sizes()


SMALL_MODEL = ("model.tiny_width=64", "model.tiny_layers=1", "model.image_size=64", "model.d_model=32",
               "model.h_dim=32", "model.a_dim=32", "model.num_heads=2")


def small_sizes() -> Sizes:
    """cpu-tiny narrowed to 64 px and d = 32 (bf16 autocast is slow on a CPU without bf16 units),
    small batches, 10k/100k galleries: a few minutes on 1-2 CPU threads."""
    return Sizes(preset="cpu-tiny", overrides=SMALL_MODEL, batches=(4, 16), fp32_batches=(4, 16), variant_batch=16,
                 warmup=2, steps=5, curve_batch=8, curve_steps=60, curve_pairs=12, curve_image_size=64,
                 decode_reference_pairs=4, decode_batch=16, decode_steps=12, galleries=(10_000, 100_000),
                 search_queries=20,
                 torchrun_preset="cpu-tiny", torchrun_overrides=(*SMALL_MODEL, "train.batch_size=16",
                                                                 "data.synth_size=64", "train.num_threads=1"))


def tiny_sizes() -> Sizes:
    """The smallest configuration (the unit test): seconds on one thread."""
    return Sizes(preset="cpu-tiny", overrides=SMALL_MODEL, batches=(2,), fp32_batches=(2,), variant_batch=2,
                 warmup=1, steps=1, curve_batch=4, curve_steps=4, curve_pairs=4, curve_image_size=64,
                 decode_reference_pairs=1, decode_batch=2, decode_steps=4, beam=2, galleries=(2_000,),
                 search_queries=3, torchrun_preset="cpu-tiny",
                 torchrun_overrides=(*SMALL_MODEL, "train.batch_size=16", "data.synth_size=64", "train.num_threads=1"),
                 compile=False)


# ============================================================================ helpers
def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device, bf16: bool):
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu} ({os.cpu_count()} CPUs), {torch.get_num_threads()} torch thread(s)"


def bf16_peak(name: str, override_tflops: float | None) -> float | None:
    """The dense bf16 peak (FLOP/s) of the device called ``name``; None when unknown (e.g. a CPU)."""
    if override_tflops is not None:
        return override_tflops * 1e12
    return next((peak for key, peak in BF16_PEAK_FLOPS.items() if key in name), None)


def set_cudnn(device, variant: Variant) -> None:
    import torch

    if device.type == "cuda":
        torch.backends.cudnn.deterministic = not variant.cudnn_benchmark
        torch.backends.cudnn.benchmark = variant.cudnn_benchmark


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else None


def on(device, tensors: dict) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in tensors.items()}


def finite(values) -> bool:
    return all(math.isfinite(v) for v in values)


# ============================================================================ 1-3 training steps
def build(preset: str, vocab_size: int, device, overrides=(), variant: Variant = BASELINE):
    """(config, model in train mode on ``device``, contrastive loss, AdamW) with random weights."""
    import torch

    from rscc.config import load_preset
    from rscc.losses import ContrastiveLoss
    from rscc.model.rsicrc import build_model

    config = load_preset(preset, ["model.pretrained=null", f"model.vocab_size={vocab_size}", *overrides])
    torch.manual_seed(0)
    try:  # initialised on the device: seconds faster for 350 M parameters than on the host
        with torch.device(device):
            model = build_model(config.model, load_pretrained=False)
    except Exception:  # a module that cannot be built under a default device: build on the host
        torch.manual_seed(0)
        model = build_model(config.model, load_pretrained=False)
    model = model.to(device).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = ContrastiveLoss.from_config(config.loss).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.train.lr, weight_decay=config.train.weight_decay,
                                  eps=config.train.eps, fused=True if variant.fused_adamw else None)
    return config, model, loss_fn, optimizer


def train_step(forward, loss_fn, optimizer, inputs: dict, labels, contrastive: dict, lam: float, device,
               bf16: bool) -> float:
    """One optimiser step as the trainer takes it; the loss as a float (a host sync, as in the trainer)."""
    from rscc.losses import caption_loss

    with autocast(device, bf16):
        out = forward(**inputs)
    con, _ = loss_fn(out.vis_emb, out.text_emb, **contrastive)  # computed in float32 (losses.info_nce)
    loss = caption_loss(out.logits, labels) + lam * con
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def count_flops(step) -> int:
    """FLOPs of one call of ``step`` (forward and backward matrix products and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def measure_training(sizes: Sizes, batch: int, device, bf16: bool, variant: Variant = BASELINE,
                     flops: bool = False) -> dict:
    """Seconds per training step of ``sizes.preset`` at ``batch`` (after warm-up), peak memory, and
    with ``flops`` the FLOPs of one step (counted on the eager model before the timed steps)."""
    import gc

    import torch

    torch._dynamo.reset()  # a compiled graph of an earlier row holds that row's model
    gc.collect()
    set_cudnn(device, variant)
    reset_peak_memory(device)
    config, model, loss_fn, optimizer = build(sizes.preset, LEVIR_VOCAB_SIZE, device, sizes.overrides, variant)
    inputs, contrastive = random_batch(config, batch, use_features=False)
    inputs, contrastive = on(device, inputs), on(device, contrastive)
    labels = inputs.pop("labels")
    if variant.channels_last:
        inputs = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in inputs.items()}
    forward = torch.compile(model) if variant.compile else model

    def step() -> float:
        return train_step(forward, loss_fn, optimizer, inputs, labels, contrastive, config.loss.lam, device, bf16)

    start = time.perf_counter()
    step()  # the first step: compilation, cuDNN algorithm search, allocator
    synchronize(device)
    first_step_s = time.perf_counter() - start
    for _ in range(sizes.warmup - 1):
        step()
    counted = None
    if flops:  # the eager model: FlopCounterMode does not see inside a compiled graph
        def eager() -> float:
            return train_step(model, loss_fn, optimizer, inputs, labels, contrastive, config.loss.lam, device, bf16)

        counted = count_flops(eager)
    synchronize(device)
    times, losses = [], []
    for _ in range(sizes.steps):
        start = time.perf_counter()
        losses.append(step())  # float(loss) waits for the step: per-step times are device times
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    row = {"preset": sizes.preset, "batch": batch, "precision": "bf16" if bf16 else "fp32", "variant": variant.name,
           "steps": sizes.steps, "warmup": sizes.warmup, "seconds_per_step": seconds,
           "min_seconds_per_step": min(times),
           "steps_per_s": 1 / seconds, "samples_per_s": batch / seconds, "first_step_s": first_step_s,
           "peak_memory_gb": peak_memory_gb(device), "losses_finite": finite(losses), "last_loss": losses[-1],
           "flops_per_step": counted}
    set_cudnn(device, BASELINE)
    return row


def add_utilisation(rows: list[dict], flops_by_batch: dict[int, int], peak: float | None) -> None:
    """Achieved TFLOP/s of every row, and MFU of the bf16 rows (against ``peak``)."""
    for row in rows:
        counted = flops_by_batch.get(row["batch"])
        row["flops_per_step"] = counted
        row["achieved_tflops"] = counted / row["seconds_per_step"] / 1e12 if counted else None
        row["mfu"] = (counted / row["seconds_per_step"] / peak
                      if counted and peak and row["precision"] == "bf16" else None)


# ============================================================================ 4 bf16 trains
def curve_data(sizes: Sizes, workers: int = 1):
    """(pairs, vocabulary, images) of a small synthetic LEVIR-CC set, made in a temporary folder."""
    from rscc.data.levircc import Vocabulary, load_pair_images, load_pairs
    from rscc.data.synth import make_synthetic

    with tempfile.TemporaryDirectory() as tmp:
        root = make_synthetic(Path(tmp) / "synthetic", sizes.curve_pairs, size=sizes.curve_image_size, seed=0,
                              progress=False, workers=workers)
        pairs = [p for p in load_pairs(root)]
        vocab = Vocabulary.build(pairs, rule="train")
        return pairs, vocab, {p.imgid: load_pair_images(p, root) for p in pairs}


def loss_curve(sizes: Sizes, device, bf16: bool, data) -> list[float]:
    """Training losses of ``sizes.curve_steps`` steps over every caption of ``data``, epoch after
    epoch in a seeded order (the same for bf16 and fp32), from one initialisation."""
    import torch

    from rscc.data.levircc import encode_captions
    from rscc.losses import caption_keys

    pairs, vocab, images = data
    config, model, loss_fn, optimizer = build(sizes.preset, len(vocab), device,
                                              [*sizes.overrides, "loss.similarity_source=string"])
    transform = model.backbone.transform
    encoded = encode_captions(pairs, vocab, config.model.max_len)  # row 5 i + k: pair i, caption k
    img_a = torch.stack([transform(images[p.imgid][0]) for p in pairs]).to(device)  # (P, 3, H, W)
    img_b = torch.stack([transform(images[p.imgid][1]) for p in pairs]).to(device)
    change = torch.tensor([p.label for p in pairs])
    keys = caption_keys([raw for p in pairs for raw in p.raws[:5]])
    rows, losses, epoch = len(pairs) * 5, [], 0
    order = torch.empty(0, dtype=torch.long)
    while len(losses) < sizes.curve_steps:
        if len(order) < sizes.curve_batch:
            order = torch.randperm(rows, generator=torch.Generator().manual_seed(epoch))
            epoch += 1
        take, order = order[:sizes.curve_batch], order[sizes.curve_batch:]
        pair = take // 5
        inputs = {"input_ids": encoded.input_ids[take].to(device), "pad_mask": encoded.pad_mask[take].to(device),
                  "img_a": img_a[pair.to(device)], "img_b": img_b[pair.to(device)]}
        contrastive = {"labels": change[pair].to(device), "captions": keys[take].to(device)}
        losses.append(train_step(model, loss_fn, optimizer, inputs, encoded.labels[take].to(device), contrastive,
                                 config.loss.lam, device, bf16))
    return losses


def curve_summary(curves: dict[str, list[float]], max_ratio: float) -> dict:
    tenth = max(1, len(curves["bf16"]) // 10)
    first = {k: sum(v[:tenth]) / tenth for k, v in curves.items()}
    last = {k: sum(v[-tenth:]) / tenth for k, v in curves.items()}
    passed = finite(curves["bf16"]) and last["bf16"] < max_ratio * first["bf16"]
    return {"steps": len(curves["bf16"]), "window": tenth, "first_mean": first, "last_mean": last,
            "bf16_finite": finite(curves["bf16"]), "criterion": f"finite and mean(last {tenth}) < {max_ratio} × "
            f"mean(first {tenth})", "passed": passed, "curves": curves}


# ============================================================================ 5 decoding
def decoding(sizes: Sizes, device) -> dict:
    """Captions/s of the authors' loop, cached greedy (batch 1 and ``decode_batch``) and beam search."""
    import torch
    from decode import cached, reference_loop

    from rscc.config import load_preset
    from rscc.generate import beam_search, greedy
    from rscc.model.backbones import backbone_shape
    from rscc.model.rsicrc import build_model

    config = load_preset(sizes.preset, ["model.pretrained=null", f"model.vocab_size={LEVIR_VOCAB_SIZE}",
                                        *sizes.overrides])
    torch.manual_seed(0)
    model = build_model(config.model, load_pretrained=False, with_backbone=False).to(device).eval()
    tokens = backbone_shape(config.model).feature_size ** 2
    pairs = max(sizes.decode_batch, sizes.decode_reference_pairs)
    vis_toks = torch.randn(tokens, pairs, config.model.d_model, generator=torch.Generator().manual_seed(1)).to(device)
    steps, rows = sizes.decode_steps, []
    with torch.no_grad():
        greedy(model, vis_toks[:, :2], max_len=steps)  # warm-up
        expected, reference_s = reference_loop(model, vis_toks, sizes.decode_reference_pairs, steps)
        rows.append({"decoder": "authors' loop", "batch": 1, "pairs": sizes.decode_reference_pairs,
                     "seconds_per_caption": reference_s})
        same, shares = True, []
        for batch in sorted({1, sizes.decode_batch}):
            n = sizes.decode_batch if batch > 1 else sizes.decode_reference_pairs
            ids, seconds = cached(model, vis_toks, batch, n, steps)
            both = min(n, sizes.decode_reference_pairs)
            same &= ids[:both] == expected[:both]
            shares.append(sum(a == b for a, b in zip(ids[:both], expected[:both])) / both)
            rows.append({"decoder": "cached greedy", "batch": batch, "pairs": n, "seconds_per_caption": seconds})
        beam_one = beam_search(model, vis_toks[:, :sizes.decode_reference_pairs], beam=1, max_len=steps).sequences()
        same_beam_one = beam_one == expected
        beam_search(model, vis_toks[:, :2], beam=sizes.beam, max_len=steps)  # warm-up
        synchronize(device)
        start = time.perf_counter()
        beam_search(model, vis_toks[:, :sizes.decode_batch], beam=sizes.beam, max_len=steps).sequences()
        seconds = (time.perf_counter() - start) / sizes.decode_batch
        rows.append({"decoder": f"beam search (beam {sizes.beam})", "batch": sizes.decode_batch,
                     "pairs": sizes.decode_batch, "seconds_per_caption": seconds})
    for row in rows:
        row["captions_per_s"] = 1 / row["seconds_per_caption"]
        row["speed_up"] = reference_s / row["seconds_per_caption"]
    return {"preset": sizes.preset, "steps": steps, "visual_tokens": tokens, "rows": rows,
            "greedy_same_ids_as_authors_loop": bool(same), "beam_1_same_ids_as_authors_loop": bool(same_beam_one),
            # a share below 1 with a long common prefix is a near-tie of random logits, not a cache bug
            "greedy_identical_caption_share": min(shares)}


# ============================================================================ 6 gallery search
def device_gallery(n: int, d: int, dtype, device, seed: int = 0, chunk: int = 65_536):
    """(n, d) random unit rows in ``dtype``, generated on ``device`` chunk by chunk."""
    import torch
    import torch.nn.functional as F

    rows = torch.empty((n, d), dtype=dtype, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        rows[start:stop] = F.normalize(torch.randn(stop - start, d, generator=g, device=device), dim=1)
    return rows


def search_latency(sizes: Sizes, device) -> list[dict]:
    """p50/p95 of single-query exact searches per gallery size and stored dtype."""
    import torch
    import torch.nn.functional as F

    from rscc.index import GalleryIndex, int8_matmul_available

    # The int8 prefilter quantises with torch._int_mm on the CPU; on CUDA the float scan is used.
    prefilters = ["none"] + (["int8"] if device.type == "cpu" and int8_matmul_available() else [])
    rows = []
    for n in sizes.galleries:
        for dtype in ([torch.float16, torch.float32] if n <= 100_000 else [torch.float16]):
            index = GalleryIndex.from_embeddings(device_gallery(n, GALLERY_DIM, dtype, device), normalize=False)
            queries = F.normalize(torch.randn(sizes.search_queries + 3, GALLERY_DIM,
                                              generator=torch.Generator().manual_seed(1)), dim=1).to(device)
            expected = None
            for prefilter in prefilters:
                for q in queries[:3]:  # warm-up (and the int8 codes)
                    index.search(q[None], k=10, prefilter=prefilter)
                times, found = [], []
                for q in queries[3:]:
                    start = time.perf_counter()
                    _, indices = index.search(q[None], k=10, prefilter=prefilter)
                    found.append(indices.cpu())  # waits for the device
                    times.append(time.perf_counter() - start)
                found = torch.cat(found)
                expected = found if expected is None else expected
                p50 = statistics.median(times)
                nbytes = index.embeddings.numel() * index.embeddings.element_size()
                rows.append({"pairs": n, "dim": GALLERY_DIM, "dtype": str(dtype).removeprefix("torch."),
                             "prefilter": prefilter, "queries": len(times), "p50_ms": p50 * 1e3,
                             "p95_ms": sorted(times)[int(0.95 * (len(times) - 1))] * 1e3,
                             "gallery_gb_per_s": nbytes / p50 / 1e9,
                             "same_top10_as_float_scan": bool(torch.equal(found, expected))})
            del index
            reset_peak_memory(device)
    return rows


# ============================================================================ 7 torchrun
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], env: dict, timeout: float) -> dict:
    """Exit status, seconds, the JSON printed last and (on failure) the end of stderr of one torchrun."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "1",
               "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{_free_port()}", *args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return {"returncode": done.returncode, "seconds": time.perf_counter() - start, "output": _summary(done.stdout),
            "stderr_tail": done.stderr[-1500:] if done.returncode else ""}


def _summary(stdout: str) -> dict | None:
    """The JSON summary `rscc train` prints last."""
    start = stdout.rfind("\n{")
    try:
        return json.loads(stdout[start + 1 if start >= 0 else 0:])
    except json.JSONDecodeError:
        return None


def torchrun_check(sizes: Sizes, device, timeout: float = 240) -> dict:
    """One epoch under torchrun, its resume to two epochs, and a DDP probe."""
    import torch

    work = Path(tempfile.mkdtemp(prefix="gpu_check_torchrun_"))
    env = dict(os.environ, RSCC_CACHE=str(work / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONWARNINGS="ignore")
    run = work / "run"
    flags = ["-m", "rscc.train", "--preset", sizes.torchrun_preset, "--data", "synthetic", "--out", str(run),
             "--no-progress"]
    overrides = [*sizes.torchrun_overrides, f"data.synth_pairs={sizes.torchrun_pairs}", "loss.similarity_source=string",
                 f"train.device={device.type}", "train.log_every=1"]
    result = {"preset": sizes.torchrun_preset, "overrides": list(sizes.torchrun_overrides), "device": device.type}
    try:
        first = result["first"] = _torchrun([*flags, *overrides, "train.epochs=1"], env, timeout)
        state = torch.load(run / "last" / "state.pt", weights_only=True) if first["returncode"] == 0 else {}
        spe = state.get("steps_per_epoch")
        result["checkpoint_step"] = state.get("step")
        second = result["resumed"] = _torchrun([*flags, "--resume", *overrides, "train.epochs=2"], env, timeout)
        resumed = torch.load(run / "last" / "state.pt", weights_only=True) if second["returncode"] == 0 else {}
        result["resumed_step"] = resumed.get("step")
        result["steps_per_epoch"] = spe
        probe = result["ddp_probe"] = _torchrun([str(Path(__file__).resolve()), "--ddp-probe", device.type], env,
                                                timeout)
        result["passed"] = (first["returncode"] == second["returncode"] == probe["returncode"] == 0
                            and spe is not None and state.get("step") == spe and resumed.get("step") == 2 * spe
                            and (first["output"] or {}).get("device", "").startswith(device.type)
                            and (probe["output"] or {}).get("ok") is True)
    except subprocess.TimeoutExpired as exc:
        result["passed"] = False
        result["error"] = f"timed out after {exc.timeout} s: {' '.join(map(str, exc.cmd))[-300:]}"
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def ddp_probe(kind: str) -> int:
    """Under torchrun: the process group (NCCL on CUDA, gloo on a CPU), an all-reduce and a DDP step."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if kind == "cuda" else "gloo"
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)
    try:
        value = torch.ones(4, device=device) * (dist.get_rank() + 1)
        dist.all_reduce(value)
        layer = torch.nn.Linear(8, 8).to(device)
        net = torch.nn.parallel.DistributedDataParallel(layer, device_ids=[device] if kind == "cuda" else None)
        net(torch.randn(2, 8, device=device)).sum().backward()
        dist.barrier()
        world = dist.get_world_size()
        ok = bool(torch.isfinite(layer.weight.grad).all()) and float(value[0]) == world * (world + 1) / 2
        print(json.dumps({"backend": dist.get_backend(), "world_size": dist.get_world_size(), "ok": ok}))
    finally:
        dist.destroy_process_group()
    return 0


# ============================================================================ 8 paper profile
def paper_wall_time(rows: list[dict]) -> dict:
    """Hours of 50 epochs of LEVIR-CC's training captions from measured seconds per step."""
    def hours(row):
        steps = PAPER_EPOCHS * math.ceil(LEVIR_TRAIN_CAPTIONS / row["batch"])
        return {"batch": row["batch"], "precision": row["precision"], "variant": row["variant"],
                "steps": steps, "seconds_per_step": row["seconds_per_step"],
                "hours": steps * row["seconds_per_step"] / 3600}

    out = {}
    authors = (AUTHORS_BATCH, "bf16", BASELINE.name)
    at_authors = [r for r in rows if (r["batch"], r["precision"], r["variant"]) == authors]
    if at_authors:
        out["authors_batch"] = hours(at_authors[0])
    bf16 = [r for r in rows if r["precision"] == "bf16" and r["losses_finite"]]
    if bf16:
        out["fastest"] = hours(max(bf16, key=lambda r: r["samples_per_s"]))
    return out


# ============================================================================ report
def markdown(report: dict) -> str:
    r, lines = report, []
    kind = "CPU dry run, not a GPU measurement" if r["device"] == "cpu" else r["device_name"]
    lines += [f"## GPU check (issue 14): {kind}", "",
              f"Machine: {r['device_name']}; torch {r['torch']}, Python {r['python']}; {r['date']}.  ",
              f"Command: `{r['command']}` ({r['elapsed_s']:.0f} s).  ",
              f"Models have random weights; inputs are random LEVIR-CC-shaped batches except the loss curves "
              f"(synthetic LEVIR-CC). Preset `{r['sizes']['preset']}`"
              + (f" with {' '.join(r['sizes']['overrides'])}" if r['sizes']['overrides'] else "") + ".", ""]
    if r.get("training"):
        peak = r.get("bf16_peak_flops")
        lines += ["### Training steps", "",
                  f"Median of {r['sizes']['steps']} timed steps after {r['sizes']['warmup']} warm-up; 'vs baseline' "
                  "against the nearest baseline row above it (the variants' block starts with one); FLOPs per step "
                  f"counted by FlopCounterMode (forward + backward); MFU against "
                  + (f"{peak / 1e12:.0f} TFLOP/s dense bf16." if peak else "no known peak (MFU not given)."), "",
                  "| batch | precision | variant | s/step | steps/s | samples/s | first step (s) | peak GPU mem (GB) "
                  "| TFLOP/step | achieved TFLOP/s | MFU | vs baseline |", "|---" * 12 + "|"]
        base = {}  # the latest baseline of each (batch, precision) measured before a row
        for x in r["training"]:
            if x["variant"] == BASELINE.name:
                base[x["batch"], x["precision"]] = x["seconds_per_step"]
            ref = base.get((x["batch"], x["precision"]))
            ratio = f"{ref / x['seconds_per_step']:.2f}×" if ref else "—"
            lines.append(
                f"| {x['batch']} | {x['precision']} | {x['variant']} | {x['seconds_per_step']:.4f} "
                f"| {x['steps_per_s']:.2f} "
                f"| {x['samples_per_s']:.1f} | {x['first_step_s']:.1f} | {_num(x['peak_memory_gb'], '.2f')} "
                f"| {_num(x['flops_per_step'] and x['flops_per_step'] / 1e12, '.3g')} "
                f"| {_num(x.get('achieved_tflops'), '.3g')} "
                f"| {_num(x.get('mfu') and 100 * x['mfu'], '.1f', '%')} | {ratio} |")
        lines += [f"| {x} | skipped (time budget) |" + " |" * 10 for x in r.get("skipped", [])
                  if not x.startswith("section ")]
        lines.append("")
    if r.get("curves"):
        c = r["curves"]
        n = c["steps"]
        marks = sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})
        lines += ["### bf16 trains (synthetic LEVIR-CC)", "",
                  f"{c['pairs']} synthetic pairs ({c['image_size']} px), batch {c['batch']}, {n} steps from one "
                  f"initialisation; {c['criterion']}: **{'PASS' if c['passed'] else 'FAIL'}**.", "",
                  "| step | " + " | ".join(str(m + 1) for m in marks)
                  + f" | mean first {c['window']} | mean last {c['window']} |",
                  "|---|" + "---|" * (len(marks) + 2)]
        for name in ("bf16", "fp32"):
            values = c["curves"][name]
            lines.append(f"| {name} | " + " | ".join(f"{values[m]:.3f}" for m in marks)
                         + f" | {c['first_mean'][name]:.3f} | {c['last_mean'][name]:.3f} |")
        lines.append("")
    if r.get("decoding"):
        d = r["decoding"]
        lines += ["### Decoding (random weights: every caption runs all steps)", "",
                  f"{d['preset']} head, {d['visual_tokens']} visual tokens, {d['steps']} steps. Greedy ids equal to "
                  f"the authors' loop: {'yes' if d['greedy_same_ids_as_authors_loop'] else 'NO'}; beam 1 equal: "
                  f"{'yes' if d['beam_1_same_ids_as_authors_loop'] else 'NO'}.", "",
                  "| decoder | batch | pairs | captions/s | speed-up |", "|---|---|---|---|---|"]
        lines += [f"| {x['decoder']} | {x['batch']} | {x['pairs']} | {x['captions_per_s']:.1f} | {x['speed_up']:.1f}× |"
                  for x in d["rows"]]
        lines.append("")
    if r.get("search"):
        lines += ["### Gallery search (random unit rows, one query per call, k = 10)", "",
                  "Bandwidth: the stored rows' bytes ÷ p50 (an int8 row reads 1-byte codes instead, then rescores "
                  "a few hundred rows). Same top 10: equal to the float scan of the same gallery.", "",
                  "| pairs | d | stored | prefilter | p50 (ms) | p95 (ms) | gallery GB/s at p50 | same top 10 |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {x['pairs']:,} | {x['dim']} | {x['dtype']} | {x['prefilter']} | {x['p50_ms']:.3f} "
                  f"| {x['p95_ms']:.3f} | {x['gallery_gb_per_s']:.0f} "
                  f"| {'yes' if x['same_top10_as_float_scan'] else 'NO'} |" for x in r["search"]]
        lines.append("")
    if r.get("torchrun"):
        t = r["torchrun"]
        probe = (t.get("ddp_probe") or {}).get("output") or {}
        lines += ["### torchrun --nproc_per_node 1", "",
                  f"`{t['preset']}` {' '.join(t['overrides'])} on synthetic data: one epoch "
                  f"({t.get('steps_per_epoch')} steps, checkpoint at step {t.get('checkpoint_step')}, "
                  f"{_num((t.get('first') or {}).get('seconds'), '.0f')} s), resumed with `--resume train.epochs=2` "
                  f"to step {t.get('resumed_step')} ({_num((t.get('resumed') or {}).get('seconds'), '.0f')} s); "
                  f"DDP probe: backend {probe.get('backend')}, all-reduce and DDP step "
                  f"{'ok' if probe.get('ok') else 'FAILED'}. **{'PASS' if t.get('passed') else 'FAIL'}**"
                  + (f" ({t['error']})" if t.get("error") else "") + ".", ""]
    if r.get("paper_wall_time"):
        lines += ["### Paper profile wall time (extrapolated)", "",
                  f"{PAPER_EPOCHS} epochs × {LEVIR_TRAIN_CAPTIONS:,} captions of the model measured above "
                  f"(`{r['sizes']['preset']}`) from its s/step (training steps only; validation and data loading "
                  "not counted):", ""]
        for label, x in r["paper_wall_time"].items():
            which = "authors’ batch" if label == "authors_batch" else "fastest measured"
            lines.append(f"- {which}: batch {x['batch']}, "
                         f"{x['precision']}, {x['variant']}: {x['steps']:,} steps × {x['seconds_per_step']:.4f} s = "
                         f"**{x['hours']:.1f} h**")
        lines.append("")
    skipped = [x for x in r.get("skipped", []) if x.startswith("section ")]
    if r.get("failures") or skipped:
        lines += ["### Failures and skipped sections", ""]
        lines += [f"- FAILED: {x}" for x in r.get("failures", [])] + [f"- skipped: {x}" for x in skipped]
        lines.append("")
    return "\n".join(lines)


def _num(value, fmt: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{suffix}"


# ============================================================================ main
def run_checks(sizes: Sizes, device, out: Path, budget_s: float, max_ratio: float, peak_tflops: float | None,
               sections: set[str], command: str = "") -> dict:
    """Every section of ``sections`` in turn, writing ``gpu_check.json``/``.md`` to ``out`` after each."""
    import torch

    t0 = time.perf_counter()
    name = device_name(device)
    report = {"device": device.type, "device_name": name, "torch": torch.__version__,
              "python": platform.python_version(),
              "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
              "sizes": asdict(sizes), "bf16_peak_flops": bf16_peak(name, peak_tflops), "failures": [], "skipped": []}
    out.mkdir(parents=True, exist_ok=True)

    def left() -> float:
        return budget_s - (time.perf_counter() - t0)

    def save() -> None:
        report["elapsed_s"] = time.perf_counter() - t0
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        (out / "gpu_check.md").write_text(markdown(report))

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f} s] {text}", flush=True)

    say(f"gpu_check on {name}, torch {torch.__version__}")

    def training_rows(plan: list[tuple[int, bool, Variant, bool]], need_s: float) -> None:
        rows = report.setdefault("training", [])
        for batch, bf16, variant, count in plan:
            label = f"batch {batch} {'bf16' if bf16 else 'fp32'} {variant.name}"
            if left() < need_s:
                report["skipped"].append(label)
                say(f"skipped {label}: time budget")
                continue
            try:
                row = measure_training(sizes, batch, device, bf16, variant, flops=count and batch not in flops)
            except Exception as exc:  # a variant that does not run here is a finding, not the end
                report["failures"].append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
                say(f"FAILED {label}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            if row["flops_per_step"]:
                flops[batch] = row["flops_per_step"]
            rows.append(row)
            add_utilisation(rows, flops, report["bf16_peak_flops"])
            say(f"{label}: {row['seconds_per_step'] * 1e3:.1f} ms/step, {row['samples_per_s']:.1f} samples/s, "
                f"peak {_num(row['peak_memory_gb'], '.2f')} GB, first step {row['first_step_s']:.1f} s, "
                f"MFU {_num(row.get('mfu') and 100 * row['mfu'], '.1f', '%')}")
            if not row["losses_finite"]:
                report["failures"].append(f"{label}: a loss is not finite")
            report["paper_wall_time"] = paper_wall_time(rows)
            save()

    def section(key: str, need_s: float, work) -> None:
        """Run ``work()`` (which fills ``report``) when asked for and time is left; a crash is a failure."""
        if key not in sections:
            return
        if left() < need_s:
            report["skipped"].append(f"section {key}: time budget")
            say(f"skipped section {key}: time budget")
            return
        start = time.perf_counter()
        try:
            work()
        except Exception as exc:
            report["failures"].append(f"section {key}: {type(exc).__name__}: {str(exc)[:500]}")
            say(f"FAILED section {key}: {type(exc).__name__}: {exc}")
        report.setdefault("section_seconds", {})[key] = time.perf_counter() - start
        save()

    flops: dict[int, int] = {}

    def baselines() -> None:
        training_rows([(b, True, BASELINE, True) for b in sizes.batches]
                      + [(b, False, BASELINE, True) for b in sizes.fp32_batches], need_s=30)

    def curves() -> None:
        data = curve_data(sizes, workers=min(8, os.cpu_count() or 1) if device.type == "cuda" else 1)
        values = {}
        for precision in ("bf16", "fp32"):
            values[precision] = loss_curve(sizes, device, precision == "bf16", data)
            say(f"{precision} loss curve: {values[precision][0]:.3f} -> {values[precision][-1]:.3f} "
                f"over {len(values[precision])} steps")
        report["curves"] = {**curve_summary(values, max_ratio), "pairs": sizes.curve_pairs,
                            "image_size": sizes.curve_image_size, "batch": sizes.curve_batch}
        if not report["curves"]["passed"]:
            report["failures"].append("bf16 loss curve: " + report["curves"]["criterion"] + " not met")

    def decode() -> None:
        report["decoding"] = decoding(sizes, device)
        for x in report["decoding"]["rows"]:
            say(f"decode {x['decoder']} batch {x['batch']}: {x['captions_per_s']:.1f} captions/s "
                f"({x['speed_up']:.1f}x)")
        if not report["decoding"]["greedy_same_ids_as_authors_loop"]:
            report["failures"].append("cached greedy ids differ from the authors' loop")

    def search() -> None:
        report["search"] = search_latency(sizes, device)
        for x in report["search"]:
            say(f"search {x['pairs']:,} {x['dtype']} {x['prefilter']}: p50 {x['p50_ms']:.3f} ms")

    def torchrun() -> None:
        report["torchrun"] = torchrun_check(sizes, device, timeout=max(60.0, min(240.0, left() / 2)))
        say(f"torchrun: {'PASS' if report['torchrun']['passed'] else 'FAIL'}")
        if not report["torchrun"]["passed"]:
            report["failures"].append("torchrun start/train/checkpoint/resume or DDP probe failed")

    def variants() -> None:
        # the baseline again (the ratios are taken against the nearest one before), the cheap
        # variants, then torch.compile (a compilation per row)
        plan = [(sizes.variant_batch, True, BASELINE, False)]
        plan += [(sizes.variant_batch, True, v, False) for v in VARIANTS if sizes.compile or not v.compile]
        if sizes.compile and max(sizes.batches) != sizes.variant_batch:
            plan.append((max(sizes.batches), True, VARIANTS[-1], False))
        training_rows(plan, need_s=90 if sizes.compile else 30)

    section("training", 30, baselines)
    section("curves", 60, curves)
    section("decoding", 30, decode)
    section("search", 30, search)
    section("torchrun", 90, torchrun)
    section("variants", 60, variants)
    save()
    say(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}; failures: {report['failures'] or 'none'}")
    return report


SECTIONS = ("training", "curves", "decoding", "search", "torchrun", "variants")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--small", action="store_true", help="the CPU dry-run sizes (cpu-tiny, small batches, "
                                                             "10k/100k galleries): a few minutes on 1-2 threads")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--budget-s", type=float, default=480, help="stop starting new measurements after this")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak in TFLOP/s (default: from BF16_PEAK_FLOPS by name)")
    parser.add_argument("--max-ratio", type=float, default=0.7,
                        help="bf16 curve passes when mean(last tenth) < max-ratio * mean(first tenth)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--ddp-probe", choices=("cuda", "cpu"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ddp_probe:
        return ddp_probe(args.ddp_probe)
    if not args.out:
        parser.error("--out is required")

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is available here; nothing measured (run it on a GPU machine, "
              "or pass --device cpu --small for a dry run)")
        return 2
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows mean fp32
        torch.backends.cudnn.allow_tf32 = False
    sizes = small_sizes() if args.small else gpu_sizes()
    if args.no_compile:
        sizes.compile = False
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
    report = run_checks(sizes, device, Path(args.out), args.budget_s, args.max_ratio, args.peak_tflops,
                        set(args.sections), command)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
