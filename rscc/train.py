"""Training RSICRC (METHOD §4): the joint loss, checkpoints that resume bit-identically, DDP.

``train(config, out_dir)`` runs one training described by a :class:`~rscc.config.RunConfig`.
The run directory holds::

    config.yaml         the resolved configuration (model.vocab_size included)
    vocab.json          the vocabulary, the authors' flat {word: id} format
    last/  best/        weights.safetensors + state.pt (optimiser, scheduler, RNG states, position)
    log.csv             one row per logged training step and per validation
    tensorboard/        the same curves as TensorBoard events

The loss is ``L_cap + lam * L_con`` (METHOD §3); false negatives come from caption similarity,
computed once per dataset (sentence embeddings or exact strings) and indexed by caption.

Determinism. The order of an epoch is a permutation drawn from ``(seed, epoch)`` by a
``torch.Generator`` (``DistributedSampler``'s rule), so a run resumed from ``last/`` skips the
batches it already consumed and sees the same batches as an uninterrupted run; together with the
optimiser, scheduler and RNG states (dropout), the resumed run ends with bit-identical weights on
CPU. Checkpoints are written to a temporary folder, fsynced and renamed into place: a run killed
at any point leaves a complete ``last/`` (or none yet).

Distributed training: ``torchrun --nproc_per_node N -m rscc.train --preset P --out RUN …``.
``train.batch_size`` is the global batch; each process takes ``batch_size / N`` samples of the
same global batch a single process would take, the contrastive loss all-gathers the batch
(:func:`rscc.losses.gather_for_contrastive`), and the caption loss is weighted so that DDP's
gradient average equals the global token mean. Rank 0 validates and writes the run directory.
"""
from __future__ import annotations

import csv
import math
import os
import random
import shutil
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm.auto import tqdm

from rscc import paths
from rscc.config import RunConfig
from rscc.data.levircc import CAPTIONS_PER_PAIR, SPLITS, LevirCCDataset, Pair, Vocabulary, collate, load_pairs
from rscc.errors import CheckpointError, ConfigError, DatasetError, RsccError
from rscc.losses import ContrastiveLoss, caption_keys, caption_loss
from rscc.model.run import checkpoint_dir, resolve_device

STATE_FORMAT = 1
FEATURE_DTYPE = "float16"
LOG_FIELDS = ["step", "epoch", "split", "loss", "cap_loss", "con_loss", "lr", "samples_per_s", "metric", "score"]
SELECT_BEST = {"val_loss": "min", "cider": "max", "retrieval": "max"}  # direction of each criterion
# Options that may change when a run is resumed: they do not change what it computes.
RESUMABLE_CHANGES = {"train.log_every", "train.checkpoint_every", "train.num_threads", "data.num_workers", "train.device"}
# train.epochs may grow on resume: the run is extended (see check_resumed_config and the schedule in _train)
FULL_IMAGE_CHECK_PAIRS = 300  # datasets up to this size get their images decoded by the data check


# ============================================================================ devices, processes
@dataclass
class Processes:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier()


def setup_processes(device_name: str) -> tuple[Processes, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); pick this rank's device."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        procs = Processes(dist.get_rank(), dist.get_world_size())
        return procs, resolve_device(device_name, int(os.environ.get("LOCAL_RANK", procs.rank)))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes(), resolve_device(device_name)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    # rank 0 validates alone while the others wait: allow long validations
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(hours=2))
    return Processes(dist.get_rank(), dist.get_world_size()), device


# ============================================================================ schedule, sampling
class WarmupSchedule:
    """Learning-rate multiplier after ``step`` optimiser steps: linear warm-up from 0 over
    ``warmup_steps`` (a float, as in the authors' transformers scheduler), then constant (the
    authors) or a cosine decay to 0 at ``total_steps``."""

    def __init__(self, total_steps: int, warmup_steps: float, kind: str = "constant"):
        if kind not in ("constant", "cosine"):
            raise ConfigError(f"train.schedule '{kind}' is not one of constant, cosine")
        self.total_steps, self.warmup_steps, self.kind = total_steps, warmup_steps, kind

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / max(1.0, self.warmup_steps)
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1.0, self.total_steps - self.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class EpochBatches(Sampler):
    """The batches of one epoch for this process.

    The epoch's order is ``torch.randperm`` under a generator seeded with ``seed + epoch``
    (:class:`~torch.utils.data.DistributedSampler`, padded to a multiple of the world size); rank
    ``r`` takes every ``world``-th index, so that batch ``t`` of all ranks together is exactly
    batch ``t`` of a single process. ``start(epoch, skip)`` leaves out the first ``skip`` batches
    (a run resumed mid-epoch)."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ConfigError(f"train.batch_size {batch_size} (the global batch) must be a multiple of the "
                              f"number of processes {world}")
        self.sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.local_batch = batch_size // world
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.local_batch)
        self.skip = 0

    def start(self, epoch: int, skip: int = 0) -> None:
        self.sampler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        order = list(self.sampler)
        for t in range(self.skip, self.steps_per_epoch):
            yield order[t * self.local_batch:(t + 1) * self.local_batch]

    def __len__(self) -> int:
        return self.steps_per_epoch - self.skip


# ============================================================================ RNG states
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict:
    """Python, numpy, torch CPU and CUDA generator states, as tensors and plain values (so that
    ``torch.load(weights_only=True)`` reads them back)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_as_tuples(state["python"]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def gather_rng_states(procs: Processes) -> list[dict]:
    """Every rank's RNG state, in rank order (a collective call when distributed)."""
    own = rng_state()
    if not procs.distributed:
        return [own]
    states: list = [None] * procs.world
    torch.distributed.all_gather_object(states, own)
    return states


# ============================================================================ checkpoints
def write_checkpoint(run_dir: Path, name: str, model: nn.Module, state: dict) -> Path:
    """Write ``run_dir/name`` atomically: temp folder, fsync, rename (the old copy removed last)."""
    from rscc.model.rsicrc import save_weights

    final, old = run_dir / name, run_dir / f".{name}.old"
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    for stale in run_dir.glob(f".{name}.tmp-*"):  # this one, or left by a process killed while writing
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        save_weights(model, tmp / "weights.safetensors")
        torch.save(state, tmp / "state.pt")
        for file in tmp.iterdir():
            paths.fsync(file)
        paths.fsync(tmp)
    except BaseException:  # a full disk, say: give its space back; the previous copy is untouched
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)  # a leftover; `final` is the good copy
        os.replace(final, old)
    os.replace(tmp, final)
    paths.fsync(run_dir)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: Path) -> dict:
    from rscc.model.backbones import torch_load_failure

    try:
        return torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file, or a pickle that would run code
        raise CheckpointError(f"{path / 'state.pt'}: unreadable training state, refused or damaged (loaded with "
                              f"weights_only=True): {torch_load_failure(exc)}") from None


# ============================================================================ logging
class RunLog:
    """``log.csv`` and TensorBoard events of the main process; a resumed run first drops the
    rows written after its checkpoint."""

    def __init__(self, run_dir: Path, resumed_step: int | None, enabled: bool = True):
        self.enabled = enabled
        if not enabled:
            return
        self.path = run_dir / "log.csv"
        rows = []
        if resumed_step is not None and self.path.is_file():
            with self.path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resumed_step]
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.path)
        self.file = self.path.open("a", newline="")
        self.csv = csv.DictWriter(self.file, LOG_FIELDS)
        from torch.utils.tensorboard import SummaryWriter

        tb_dir = run_dir / "tensorboard"
        if resumed_step is None:
            shutil.rmtree(tb_dir, ignore_errors=True)
        self.tb = SummaryWriter(str(tb_dir), purge_step=None if resumed_step is None else resumed_step + 1)

    def row(self, **values) -> None:
        if not self.enabled:
            return
        self.csv.writerow({k: _fmt(values.get(k)) for k in LOG_FIELDS})
        self.file.flush()
        split = values["split"]
        for key in ("loss", "cap_loss", "con_loss", "lr", "samples_per_s", "score"):
            if values.get(key) is not None:
                name = f"{split}/{values['metric']}" if key == "score" else f"{split}/{key}"
                self.tb.add_scalar(name, values[key], values["step"])

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            self.tb.close()


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


# ============================================================================ data
def resolve_data_root(config: RunConfig, procs: Processes, progress: bool = True) -> Path:
    """``data.root``, or the synthetic dataset of the data section (generated once, by rank 0)."""
    data = config.data
    if data.root:
        return Path(data.root).expanduser()
    from rscc.data.synth import default_root, ensure_synthetic

    root = default_root(data.synth_pairs, data.synth_size, data.synth_seed, data.synth_stock_share)
    if procs.main:
        ensure_synthetic(root, data.synth_pairs, size=data.synth_size, seed=data.synth_seed, progress=progress,
                         stock_share=data.synth_stock_share)
    procs.barrier()
    return root


def check_dataset(root: Path) -> list[Pair]:
    """Run the data check (images decoded too for small datasets) and read the pairs; a
    DatasetError names the first problems."""
    from rscc.data.check import validate_dataset

    problems, _ = validate_dataset(root, images=False, with_summary=True)
    pairs = load_pairs(root) if not problems else []
    if pairs and len(pairs) <= FULL_IMAGE_CHECK_PAIRS:
        problems, _ = validate_dataset(root, images=True, with_summary=True)
    if problems:
        shown = "; ".join(f"{p.path}: {p.reason}" for p in problems[:3])
        raise DatasetError(f"{root}: the dataset check found {len(problems)} problem(s) "
                           f"(`rscc data check {root}` lists them all), first: {shown}")
    return pairs


def similarity_inputs(config: RunConfig, pairs: list[Pair], progress: bool = True) -> torch.Tensor | None:
    """What the false-negative mask compares, one row per caption (index 5 * pair + k): unit-norm
    sentence embeddings (N*5, dim) or int64 caption keys (N*5,); None without FNE/FNA."""
    loss = config.loss
    if loss.fn_mode == "none" or not pairs:
        return None
    raws = [raw for p in pairs for raw in p.raws]
    if loss.similarity_source == "string":
        return caption_keys(raws)
    from rscc.false_negatives import caption_embeddings

    return torch.from_numpy(caption_embeddings(raws, loss.sentence_model, paths.cache_dir(), progress=progress))


# ============================================================================ checks
def check_config(config: RunConfig, procs: Processes) -> None:
    t = config.train
    if t.select_best not in SELECT_BEST:
        raise ConfigError(f"train.select_best '{t.select_best}' is not one of {', '.join(SELECT_BEST)}")
    if t.batch_size < 2 and config.loss.lam != 0:
        raise ConfigError(f"train.batch_size {t.batch_size} leaves the contrastive loss without negatives; "
                          "use a batch of at least 2 (the authors use 4)")
    if t.epochs < 1 or (t.max_steps is not None and t.max_steps < 1):
        raise ConfigError(f"train.epochs ({t.epochs}) and train.max_steps ({t.max_steps}) must be at least 1")
    if t.checkpoint_every is not None and t.checkpoint_every < 1:
        raise ConfigError(f"train.checkpoint_every must be a number of steps >= 1 or null, got {t.checkpoint_every}")
    if t.select_best == "cider":
        try:
            import rscc.generate  # noqa: F401
        except ImportError:
            raise ConfigError("train.select_best=cider needs rscc.generate (greedy decoding), which is not "
                              "available; use val_loss or retrieval") from None
    if t.batch_size % procs.world:
        raise ConfigError(f"train.batch_size {t.batch_size} (the global batch) must be a multiple of the "
                          f"number of processes {procs.world}")


def prepare_run_dir(out_dir: Path, resume: bool) -> Path | None:
    """Create the run directory (checking that it is writable); the ``last`` checkpoint to resume
    from, or None. A directory holding a run is never overwritten without ``resume``."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RsccError(f"{out_dir}: the output directory is not writable ({exc.strerror or exc})") from None
    last = checkpoint_dir(out_dir, "last")
    if not resume and (last is not None or checkpoint_dir(out_dir, "best") is not None):
        raise CheckpointError(f"{out_dir}: already holds a training run; pass --resume (resume=True) to continue "
                              "it, or choose another output directory")
    return last


def check_free_space(out_dir: Path, model: nn.Module, trainable: list[nn.Parameter],
                     cache_bytes: int = 0) -> int:
    """Raise before training when the disk cannot hold the checkpoints (and the feature cache)."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    optimiser = sum(2 * p.numel() * 4 for p in trainable)
    checkpoint = weights + optimiser + 2**20
    need = 3 * checkpoint  # last, best and the copy being written
    free = shutil.disk_usage(out_dir).free
    if free < need:
        raise RsccError(f"{out_dir}: only {free / 1e9:.2f} GB free on this disk; a run needs about "
                        f"{need / 1e9:.2f} GB (checkpoints of {checkpoint / 1e9:.2f} GB: last, best and one being "
                        "written); free some space or choose another --out")
    if cache_bytes:
        cache = paths.cache_dir()
        free = shutil.disk_usage(cache).free
        if free < cache_bytes * 1.1:
            raise RsccError(f"{cache}: only {free / 1e9:.2f} GB free; the backbone feature cache needs about "
                            f"{cache_bytes / 1e9:.2f} GB (set RSCC_CACHE elsewhere, or train.cache_features=false)")
    return checkpoint


def check_resumed_config(config: RunConfig, saved: RunConfig, where: Path) -> None:
    """Refuse a resume that would compute something else; ``train.epochs`` may only grow (an extended run)."""
    new, old = config.to_dict(), saved.to_dict()
    changed = [f"{s}.{k}: {old[s].get(k)!r} -> {v!r}" for s in ("model", "data", "loss", "train")
               for k, v in new[s].items() if old[s].get(k) != v and f"{s}.{k}" not in RESUMABLE_CHANGES
               and not (f"{s}.{k}" == "train.epochs" and v > old[s][k])]
    if changed:
        raise CheckpointError(f"{where}: the configuration differs from the run being resumed ({'; '.join(changed)}); "
                              "a resumed run must compute the same thing")


# ============================================================================ one step
def model_inputs(batch: dict, split: str, features, device: torch.device) -> dict:
    """The model's keyword arguments for a batch: cached features or images, and the captions."""
    inputs = {"input_ids": batch["input_ids"].to(device), "pad_mask": batch["pad_mask"].to(device)}
    if features is not None:
        feat_a, feat_b = features.get(split, batch["pair_index"])  # (B, C, s, s) each
        inputs.update(feat_a=feat_a.to(device), feat_b=feat_b.to(device))
    else:
        inputs.update(img_a=batch["img_a"].to(device), img_b=batch["img_b"].to(device))
    return inputs


def contrastive(loss_fn: ContrastiveLoss, out, batch: dict, similarity: torch.Tensor | None,
                device: torch.device) -> torch.Tensor:
    labels = batch["label"].to(device)
    rows = None if similarity is None else similarity[batch["caption_index"]].to(device)
    if loss_fn.source == "string":
        loss, _ = loss_fn(out.vis_emb, out.text_emb, labels, captions=rows)
    else:
        loss, _ = loss_fn(out.vis_emb, out.text_emb, labels, sentence_embeddings=rows)
    return loss


# ============================================================================ validation
@torch.no_grad()
def validate(model, loader, features, similarity, loss_fn: ContrastiveLoss, lam: float, device, autocast,
             select_best: str, vocab: Vocabulary) -> dict:
    """Validation loss (the authors': mean over batches of L_cap + lam * L_con on first captions)
    and the model-selection score of ``select_best``."""
    model.eval()
    gather, loss_fn.gather = loss_fn.gather, False  # rank 0 validates alone
    totals, caps, cons = [], [], []
    vis, txt, labels = [], [], []
    try:
        for batch in loader:
            inputs = model_inputs(batch, "val", features, device)
            with autocast():
                out = model(**inputs)
            cap = caption_loss(out.logits, batch["labels"].to(device))
            con = contrastive(loss_fn, out, batch, similarity, device)
            totals.append(float(cap + lam * con))
            caps.append(float(cap))
            cons.append(float(con))
            if select_best == "retrieval":
                vis.append(out.vis_emb.float().cpu())
                txt.append(out.text_emb.float().cpu())
                labels.append(batch["label"])
        result = {"loss": float(np.mean(totals)), "cap_loss": float(np.mean(caps)), "con_loss": float(np.mean(cons))}
        if select_best == "val_loss":
            result["score"] = result["loss"]
        elif select_best == "retrieval":
            result["score"] = text_to_pair_hit_rate(torch.cat(vis), torch.cat(txt), torch.cat(labels), k=10)
        else:
            result["score"] = validation_cider(model, loader.dataset, features, device, autocast, vocab)
    finally:
        loss_fn.gather = gather
        model.train()
    return result


def text_to_pair_hit_rate(vis_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor, k: int = 10) -> float:
    """R@k (hit rate, ×100) of text -> pair retrieval with one caption per pair: a query's correct
    pairs are its own pair and, for a no-change caption, every no-change pair."""
    from rscc.metrics.retrieval import cross_modal_retrieval

    no_change = labels == -1
    result = cross_modal_retrieval(vis_emb, text_emb, torch.arange(len(labels)),
                                   duplicates=no_change[:, None] & no_change[None, :], ks=(k,))
    return float(result["text_to_pair"][f"R@{k}"])


def validation_cider(model, dataset: LevirCCDataset, features, device, autocast, vocab: Vocabulary) -> float:
    """CIDEr-D (tokens protocol, ×100) of greedy captions of the validation pairs."""
    from rscc.generate import caption_pairs
    from rscc.metrics.captioning import score_captions

    loader = DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=collate)
    predictions, references = {}, {}
    for batch in loader:
        inputs = model_inputs(batch, "val", features, device)
        images = {k: v for k, v in inputs.items() if k in ("img_a", "img_b", "feat_a", "feat_b")}
        with autocast():
            captions = caption_pairs(model, vocab, **images)
        for i, caption, refs in zip(batch["pair_index"].tolist(), captions, batch["references_tokens"]):
            predictions[i], references[i] = caption, refs
    return float(score_captions(predictions, references, protocol="tokens", meteor=False, spice=False)["all"]["CIDEr-D"])


# ============================================================================ training
def train(config: RunConfig, out_dir: str | Path, resume: bool = False, progress: bool = True,
          on_step: Callable[[dict], None] | None = None) -> dict:
    """Train the model of ``config`` into ``out_dir``; ``resume`` continues from ``out_dir/last``.

    ``on_step`` is called after every optimiser step (and its checkpoint, if any) with
    ``{"step", "epoch", "loss", "cap_loss", "con_loss", "lr"}``. Returns a summary: steps,
    epochs, best step and score, the selection criterion, paths, throughput."""
    threads = torch.get_num_threads()
    if config.train.num_threads is not None:
        torch.set_num_threads(config.train.num_threads)
    out_dir = Path(out_dir)
    created = _first_missing(out_dir) if os.environ.get("RANK", "0") == "0" else None
    try:
        return _train(config, out_dir, resume, progress, on_step)
    except BaseException:
        # a run that failed before writing its configuration leaves no folder behind
        if created is not None and created.is_dir() and not (out_dir / "config.yaml").exists():
            shutil.rmtree(created, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)  # the setting holds for this training only


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _train(config: RunConfig, out_dir: Path, resume: bool, progress: bool,
           on_step: Callable[[dict], None] | None) -> dict:
    from rscc.feature_cache import backbone_is_static, backbone_label, ensure_feature_cache, estimated_size, weights_source
    from rscc.model.rsicrc import build_model, load_weights

    config = RunConfig.from_dict(config.to_dict())  # a private copy: vocab_size is filled in below
    tc = config.train
    procs, device = setup_processes(tc.device)
    check_config(config, procs)
    show = progress and procs.main

    # --- run directory, data, vocabulary (errors surface here, before any training)
    last = prepare_run_dir(out_dir, resume) if procs.main else None
    procs.barrier()
    if procs.distributed:
        last = checkpoint_dir(out_dir, "last")
    if resume and last is None and show:
        print(f"{out_dir}: no checkpoint yet, starting from scratch", file=sys.stderr)
    root = resolve_data_root(config, procs, progress=show)
    pairs = check_dataset(root) if procs.main else load_pairs(root)
    by_split = {s: [p for p in pairs if p.split == s] for s in SPLITS}
    for split in ("train", "val"):
        if not by_split[split]:
            raise DatasetError(f"{root}: no '{split}' pairs; training needs the train and val splits")
    if last is not None:
        vocab = Vocabulary.load(out_dir / "vocab.json")
        config.model.vocab_size = len(vocab)
        check_resumed_config(config, RunConfig.load(out_dir / "config.yaml"), out_dir / "config.yaml")
    else:
        vocab = Vocabulary.build(pairs, rule=config.data.vocab_rule)
        config.model.vocab_size = len(vocab)

    # --- model (built under the seed: a random frozen backbone is the same in every run)
    seed_everything(tc.seed)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    model = build_model(config.model, load_pretrained=last is None)
    if last is not None:
        load_weights(model, last / "weights.safetensors")
    model.to(device)
    loss_fn = ContrastiveLoss.from_config(config.loss).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(loss_fn.parameters())
    use_cache = tc.cache_features and backbone_is_static(model.backbone)
    splits = {s: ps for s, ps in by_split.items() if ps}
    if procs.main:
        cache_bytes = estimated_size(model, len(pairs), FEATURE_DTYPE) if use_cache else 0
        check_free_space(out_dir, model, trainable, cache_bytes)

    # --- cached features, caption similarity, datasets
    use_bf16 = device.type == "cuda" and tc.bf16

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()

    features = None
    if use_cache:
        cache_args = dict(model=model, backbone_name=backbone_label(config.model),
                          weights_source=weights_source(config.model, tc.seed), root=root, splits=splits,
                          device=device, batch_size=max(32, tc.batch_size), num_workers=config.data.num_workers,
                          dtype=FEATURE_DTYPE, autocast=use_bf16, progress=show)
        if procs.main:
            features = ensure_feature_cache(**cache_args)
        procs.barrier()
        if not procs.main:
            features = ensure_feature_cache(**cache_args, build=False)
    # one call for both splits (one sentence-encoder load); rank 0 first fills the disk cache
    similarity_pairs = by_split["train"] + by_split["val"]
    if procs.main:
        both = similarity_inputs(config, similarity_pairs, progress=show)
    procs.barrier()
    if not procs.main:
        both = similarity_inputs(config, similarity_pairs, progress=False)
    cut = CAPTIONS_PER_PAIR * len(by_split["train"])  # rows are captions
    similarity = {"train": None if both is None else both[:cut], "val": None if both is None else both[cut:]}
    transform = None if use_cache else model.backbone.transform
    data_args = dict(vocab=vocab, root=root, transform=transform, max_len=config.data.max_len,
                     strict_length=config.data.strict_length)
    train_set = LevirCCDataset(by_split["train"], per_caption=True, **data_args)
    val_set = LevirCCDataset(by_split["val"], per_caption=False, **data_args)
    batches = EpochBatches(train_set, tc.batch_size, tc.seed, procs.rank, procs.world)
    # The loader gets its own generator: creating an iterator must not draw from the global RNG
    # (dropout), or a resumed run would diverge.
    train_loader = DataLoader(train_set, batch_sampler=batches, collate_fn=collate,
                              num_workers=config.data.num_workers, generator=torch.Generator().manual_seed(tc.seed))
    val_loader = DataLoader(val_set, batch_size=tc.batch_size, shuffle=False, collate_fn=collate,
                            num_workers=config.data.num_workers)

    # --- optimiser, schedule, state
    steps_per_epoch = batches.steps_per_epoch
    total_steps = tc.epochs * steps_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, weight_decay=tc.weight_decay, eps=tc.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupSchedule(total_steps, tc.warmup * total_steps,
                                                                            tc.schedule))
    step = epoch = position = 0
    best_score, best_step = None, None
    if last is not None:
        state = read_state(last)
        if state.get("steps_per_epoch") != steps_per_epoch:
            raise CheckpointError(f"{last}: saved with {state.get('steps_per_epoch')} steps per epoch, the data now "
                                  f"gives {steps_per_epoch}; the dataset changed")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])  # restores the saved WarmupSchedule's fields too
        schedule = scheduler.lr_lambdas[0]
        if schedule.total_steps != total_steps:
            # An extended run (more epochs) keeps the warm-up it had, in steps, and from here on
            # follows its schedule towards the new last step: constant stays constant; a cosine
            # decay is stretched, so the rate rises from the old end's back to the longer curve.
            schedule.total_steps = total_steps
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * schedule(scheduler.last_epoch)
        loss_fn.load_state_dict(state["loss"])
        step, epoch, position = state["step"], state["epoch"], state["position"]
        best_score, best_step = state["best_score"], state["best_step"]
        rngs = state["rng"]
        if len(rngs) == procs.world:
            set_rng_state(rngs[procs.rank])
        else:
            warnings.warn(f"{last}: saved by {len(rngs)} process(es), resumed by {procs.world}: dropout will differ "
                          "from an uninterrupted run", stacklevel=2)
            seed_everything(tc.seed + 1000 * step + procs.rank)
    else:
        seed_everything(tc.seed + procs.rank)
    if procs.main:
        config.save(out_dir / "config.yaml")
        vocab.save(out_dir / "vocab.json")
    log = RunLog(out_dir, step if last is not None else None, enabled=procs.main)

    net = model
    if procs.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                                  find_unused_parameters=True)  # HSA value projections are unused
    direction = SELECT_BEST[tc.select_best]

    def better(score: float) -> bool:
        if not math.isfinite(score):
            return False
        return best_score is None or (score < best_score if direction == "min" else score > best_score)

    def state_dict(rngs: list[dict]) -> dict:
        return {"format": STATE_FORMAT, "step": step, "epoch": epoch, "position": position,
                "steps_per_epoch": steps_per_epoch, "best_score": best_score, "best_step": best_step,
                "select_best": tc.select_best, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "loss": loss_fn.state_dict(), "rng": rngs,
                "world_size": procs.world}

    # --- the loop
    bar = tqdm(total=total_steps, initial=step, desc="training", unit="step", disable=not show, dynamic_ncols=True)
    window = {"loss": 0.0, "cap": 0.0, "con": 0.0, "n": 0, "samples": 0, "t": time.perf_counter()}
    trained_samples, trained_time = 0, 0.0
    last_saved = step if last is not None else None
    model.train()
    try:
        while step < total_steps:
            batches.start(epoch, skip=position)
            tick = time.perf_counter()
            for batch in train_loader:
                inputs = model_inputs(batch, "train", features, device)
                labels = batch["labels"].to(device)
                with autocast():
                    out = net(**inputs)
                cap = caption_loss(out.logits, labels)
                con = contrastive(loss_fn, out, batch, similarity["train"], device)
                cap_for_grad, cap_value = _caption_loss_across_ranks(cap, labels, procs)
                loss = cap_for_grad + config.loss.lam * con
                con_value = float(con.detach())
                loss_value = cap_value + config.loss.lam * con_value
                if not math.isfinite(loss_value):
                    kept = (f"the last good checkpoint is {out_dir / 'last'} (step {last_saved})"
                            if last_saved is not None else "no checkpoint was written yet")
                    raise RsccError(f"step {step + 1}: the loss is not finite (loss {loss_value}, caption "
                                    f"{cap_value}, contrastive {con_value}); training stopped, {kept}")
                loss.backward()
                if tc.grad_clip:
                    nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                position += 1
                n = len(batch["input_ids"]) * procs.world
                trained_samples += n
                trained_time += time.perf_counter() - tick
                window.update(loss=window["loss"] + loss_value, cap=window["cap"] + cap_value,
                              con=window["con"] + con_value, n=window["n"] + 1, samples=window["samples"] + n)
                if step % tc.log_every == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window["t"]
                    k = window["n"]
                    speed = window["samples"] / elapsed if elapsed > 0 else None
                    log.row(step=step, epoch=epoch, split="train", loss=window["loss"] / k, cap_loss=window["cap"] / k,
                            con_loss=window["con"] / k, lr=lr, samples_per_s=speed)
                    bar.set_postfix(loss=f"{window['loss'] / k:.3f}", lr=f"{lr:.2e}",
                                    samples_s=f"{speed:.0f}" if speed else "-", epoch=epoch)
                    window = {"loss": 0.0, "cap": 0.0, "con": 0.0, "n": 0, "samples": 0, "t": time.perf_counter()}
                bar.update(1)
                after_step = time.perf_counter()

                epoch_done = position == steps_per_epoch
                finished = step >= total_steps
                validated = None
                if epoch_done or finished:
                    if procs.main:
                        validated = validate(model, val_loader, features, similarity["val"], loss_fn,
                                             config.loss.lam, device, autocast, tc.select_best, vocab)
                        log.row(step=step, epoch=epoch, split="val", loss=validated["loss"],
                                cap_loss=validated["cap_loss"], con_loss=validated["con_loss"],
                                metric=tc.select_best, score=validated["score"])
                    if epoch_done:
                        epoch, position = epoch + 1, 0
                due = (finished or (epoch_done if tc.checkpoint_every is None else step % tc.checkpoint_every == 0))
                if epoch_done or finished or due:
                    rngs = gather_rng_states(procs)  # collective: every rank reaches it at the same steps
                    if procs.main:
                        if validated is not None and better(validated["score"]):
                            best_score, best_step = validated["score"], step
                            write_checkpoint(out_dir, "best", model, state_dict(rngs))  # best first: see resume
                        if due:
                            write_checkpoint(out_dir, "last", model, state_dict(rngs))
                    if due:
                        last_saved = step
                if on_step is not None:
                    on_step({"step": step, "epoch": epoch, "loss": loss_value, "cap_loss": cap_value,
                             "con_loss": con_value, "lr": lr})
                if finished:
                    break
                tick = time.perf_counter()  # validation and checkpoints are not training time
                window["t"] += tick - after_step
    finally:
        bar.close()
        log.close()
    return {
        "run_dir": str(out_dir),
        "steps": step,
        "epochs": epoch,
        "steps_per_epoch": steps_per_epoch,
        "select_best": tc.select_best,
        "best_step": best_step,
        "best_score": best_score,
        "last": str(out_dir / "last"),
        "best": str(out_dir / "best") if best_step is not None else None,
        "samples_per_s": trained_samples / trained_time if trained_time else None,
        "feature_cache": str(features.path) if features is not None else None,
        "device": str(device),
        "world_size": procs.world,
    }


def _caption_loss_across_ranks(cap: torch.Tensor, labels: torch.Tensor, procs: Processes) -> tuple[torch.Tensor, float]:
    """(the caption loss to differentiate, the global token-mean value).

    One process: the loss itself. Under DDP, which averages gradients over ranks, the local mean
    is reweighted by ``world * local_tokens / global_tokens`` so that the average is the
    gradient of the mean over all tokens of the global batch."""
    if not procs.distributed:
        return cap, float(cap.detach())
    tokens = (labels[:, 1:] != -100).sum().to(cap.dtype)
    stats = torch.stack([cap.detach() * tokens, tokens]).float()
    torch.distributed.all_reduce(stats)
    weight = procs.world * tokens / stats[1].clamp(min=1)
    return cap * weight, float(stats[0] / stats[1].clamp(min=1))


# ============================================================================ module entry point
def main(argv: list[str] | None = None) -> int:
    """``python -m rscc.train`` / ``torchrun … -m rscc.train``: the arguments of ``rscc train``."""
    import argparse

    from rscc.commands.train import add_arguments, run

    parser = argparse.ArgumentParser(prog="python -m rscc.train", description="Train RSICRC (also under torchrun).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        code = run(args)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            # Rank 0 hosts the rendezvous store: a rank still writing when it leaves aborts gloo
            # ("terminate called without an active exception"), so every rank finishes first.
            torch.distributed.barrier()
        return code
    except RsccError as exc:
        print(f"rscc train: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # as `rscc train` does: an unreadable or unwritable path, a full disk
        from rscc.cli import describe_os_error

        print(f"rscc train: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
