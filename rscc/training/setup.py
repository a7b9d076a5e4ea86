"""Everything a training needs before its first step: processes, run directory, data, vocabulary,
model, joint loss, feature cache, caption similarity and loaders (errors surface here)."""
from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from rscc.config import RunConfig
from rscc.data.levircc import CAPTIONS_PER_PAIR, SPLITS, LevirCCDataset, Vocabulary, collate, load_pairs
from rscc.errors import DatasetError
from rscc.losses import JointLoss
from rscc.runs import checkpoint_dir
from rscc.training.data import resolve_data_root, similarity_inputs
from rscc.training.distributed import Processes, setup_processes
from rscc.training.preflight import (
    check_config,
    check_dataset,
    check_free_space,
    check_resumed_config,
    prepare_run_dir,
)
from rscc.training.sampling import EpochBatches, seed_everything

FEATURE_DTYPE = "float16"


@dataclass
class Prepared:
    """A training ready to start (or resume from ``last``)."""

    config: RunConfig  # a private copy, model.vocab_size filled in
    out_dir: Path
    procs: Processes
    device: torch.device
    show: bool  # progress bars: asked for, and rank 0
    last: Path | None  # the checkpoint to resume from
    vocab: Vocabulary
    model: nn.Module
    objective: JointLoss
    trainable: list[nn.Parameter]
    features: object | None  # the backbone feature cache, or None (images go through the backbone)
    similarity: dict  # split -> caption similarity rows (or None)
    batches: EpochBatches
    train_loader: DataLoader
    val_loader: DataLoader
    bf16: bool

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else nullcontext()


def prepare(config: RunConfig, out_dir: Path, resume: bool, progress: bool) -> Prepared:
    from rscc.feature_cache import (
        backbone_is_static,
        backbone_label,
        ensure_feature_cache,
        estimated_size,
        weights_source,
    )
    from rscc.model.rsicrc import build_model, load_weights

    config = RunConfig.from_dict(config.to_dict())  # a private copy: vocab_size is filled in below
    tc = config.train
    procs, device = setup_processes(tc.device)
    check_config(config, procs)
    show = progress and procs.main

    # --- run directory, data, vocabulary
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
    objective = JointLoss.from_config(config.loss).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(objective.parameters())
    use_cache = tc.cache_features and backbone_is_static(model.backbone)
    splits = {s: ps for s, ps in by_split.items() if ps}
    if procs.main:
        cache_bytes = estimated_size(model, len(pairs), FEATURE_DTYPE) if use_cache else 0
        check_free_space(out_dir, model, trainable, cache_bytes)

    # --- cached features, caption similarity, datasets
    bf16 = device.type == "cuda" and tc.bf16
    features = None
    if use_cache:
        cache_args = dict(model=model, backbone_name=backbone_label(config.model),
                          weights_source=weights_source(config.model, tc.seed), root=root, splits=splits,
                          device=device, batch_size=max(32, tc.batch_size), num_workers=config.data.num_workers,
                          dtype=FEATURE_DTYPE, autocast=bf16, progress=show)
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
    return Prepared(config=config, out_dir=out_dir, procs=procs, device=device, show=show, last=last, vocab=vocab,
                    model=model, objective=objective, trainable=trainable, features=features, similarity=similarity,
                    batches=batches, train_loader=train_loader, val_loader=val_loader, bf16=bf16)
