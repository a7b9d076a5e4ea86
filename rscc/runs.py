"""Loading a run directory: configuration, vocabulary and weights, ready to caption or evaluate.

A run directory holds::

    config.yaml                  the RunConfig that built the model
    vocab.json                   its vocabulary (flat {word: id})
    weights.safetensors          converted runs (``rscc convert``)
    best/weights.safetensors     trained runs: the selected checkpoint ...
    last/weights.safetensors     ... and the latest one
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from rscc.config import RunConfig
from rscc.data.levircc import Vocabulary
from rscc.errors import CheckpointError, RsccError
from rscc.model.rsicrc import RSICRC, build_model, load_weights

WEIGHTS_FILE = "weights.safetensors"
CHECKPOINTS = ("best", "last")


def checkpoint_dir(run_dir: str | Path, name: str = "last") -> Path | None:
    """The complete training checkpoint ``name`` (last or best) of a run, or None.

    A run killed between the two renames of a checkpoint swap has only ``.<name>.old``; it is
    moved back into place."""
    run_dir = Path(run_dir)
    final, old = run_dir / name, run_dir / f".{name}.old"
    if (final / "state.pt").is_file():
        return final
    if (old / "state.pt").is_file() and not final.exists():
        os.replace(old, final)
        return final
    return None


def find_weights(run_dir: str | Path, which: str = "best") -> Path:
    """The weights file of a run: ``<which>/weights.safetensors``, else the top-level
    ``weights.safetensors`` (a converted run). CheckpointError when there is neither."""
    if which not in CHECKPOINTS:
        raise CheckpointError(f"unknown checkpoint '{which}'; expected one of {', '.join(CHECKPOINTS)}")
    run_dir = Path(run_dir)
    trained = checkpoint_dir(run_dir, which)
    candidates = [trained / WEIGHTS_FILE] if trained else []
    for path in candidates + [run_dir / which / WEIGHTS_FILE, run_dir / WEIGHTS_FILE]:
        if path.is_file():
            return path
    others = sorted(str(p.relative_to(run_dir)) for p in run_dir.glob(f"*/{WEIGHTS_FILE}"))
    hint = f" (it has {', '.join(others)}: choose it with which=/--checkpoint)" if others else (
        " (train one with `rscc train`, or convert the authors' checkpoint with `rscc convert`)")
    raise CheckpointError(f"{run_dir}: no checkpoint: neither {which}/{WEIGHTS_FILE} nor {WEIGHTS_FILE}{hint}")


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu",
             with_backbone: bool = True) -> tuple[RSICRC, RunConfig, Vocabulary]:
    """(model in evaluation mode on ``device``, its configuration, its vocabulary).

    ``which``: "best" or "last" for a trained run; a converted run has one set of weights.
    ``with_backbone=False`` builds the head only (for precomputed backbone features)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: run directory not found")
    for name in ("config.yaml", "vocab.json"):
        if not (run_dir / name).is_file():
            raise CheckpointError(f"{run_dir}: not a run directory ({name} is missing)")
    config = RunConfig.load(run_dir / "config.yaml")
    try:
        vocab = Vocabulary.load(run_dir / "vocab.json")
    except RsccError as exc:
        raise CheckpointError(str(exc)) from None
    if config.model.vocab_size <= 0:
        config.model.vocab_size = len(vocab)
    elif config.model.vocab_size != len(vocab):
        raise CheckpointError(f"{run_dir / 'config.yaml'}: model.vocab_size is {config.model.vocab_size} "
                              f"but {run_dir / 'vocab.json'} has {len(vocab)} entries")
    weights = find_weights(run_dir, which)
    model = build_model(config.model, load_pretrained=False, with_backbone=with_backbone)
    load_weights(model, weights)
    return model.to(device).eval(), config, vocab
