"""``train(config, out_dir)``: one training described by a :class:`~rscc.config.RunConfig`.

The run directory holds::

    config.yaml         the resolved configuration (model.vocab_size included)
    vocab.json          the vocabulary, the authors' flat {word: id} format
    last/  best/        weights.safetensors + state.pt (optimiser, scheduler, RNG states, position)
    log.csv             one row per logged training step and per validation
    tensorboard/        the same curves as TensorBoard events

The loss is ``L_cap + lam * L_con`` (METHOD §3, :class:`~rscc.losses.JointLoss`);
false negatives come from caption similarity, computed once per dataset (sentence embeddings or
exact strings) and indexed by caption. A run resumed from ``last/`` sees the same batches and
RNG states as an uninterrupted run (:mod:`rscc.training.sampling`) and ends with bit-identical
weights on CPU.
"""
from __future__ import annotations

import math
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from rscc.config import RunConfig
from rscc.device import machine
from rscc.errors import CheckpointError, RsccError
from rscc.training.checkpoint import STATE_FORMAT, read_state, write_checkpoint
from rscc.training.data import model_inputs
from rscc.training.distributed import is_rank_zero
from rscc.training.runlog import RunLog, RunningMeans
from rscc.training.sampling import gather_rng_states, seed_everything, set_rng_state
from rscc.training.schedule import restart_rate, saved_schedule, schedule_state, warmup_schedule
from rscc.training.setup import Prepared, prepare
from rscc.training.validation import improves, validate


@dataclass
class Progress:
    """Where a run stands; saved in every checkpoint and restored on resume."""

    step: int = 0  # optimiser steps taken
    epoch: int = 0
    position: int = 0  # batches of the current epoch already taken
    best_score: float | None = None
    best_step: int | None = None


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
    created = _first_missing(out_dir) if is_rank_zero() else None
    try:
        return _train(prepare(config, out_dir, resume, progress), on_step)
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


@dataclass
class Optimisation:
    """The optimiser and its schedule over the run's steps."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    total_steps: int
    warmup_steps: float  # kept from the run's start when it is extended
    steps_per_epoch: int


def _start(run: Prepared) -> tuple[Optimisation, Progress]:
    """The optimiser, schedule and position of a new run, or of the run in ``run.last`` (its RNG
    states restored too)."""
    tc, procs = run.config.train, run.procs
    steps_per_epoch = run.batches.steps_per_epoch
    total_steps = tc.epochs * steps_per_epoch
    if tc.max_steps is not None:
        total_steps = min(tc.max_steps, total_steps)
    optimizer = torch.optim.AdamW(run.trainable, lr=tc.lr, weight_decay=tc.weight_decay, eps=tc.eps)
    if run.last is None:
        warmup_steps = tc.warmup * total_steps
        scheduler = warmup_schedule(optimizer, total_steps, warmup_steps, tc.schedule)
        seed_everything(tc.seed + procs.rank)
        return Optimisation(optimizer, scheduler, total_steps, warmup_steps, steps_per_epoch), Progress()
    state = read_state(run.last)
    if state.get("steps_per_epoch") != steps_per_epoch:
        raise CheckpointError(f"{run.last}: saved with {state.get('steps_per_epoch')} steps per epoch, the data "
                              f"now gives {steps_per_epoch}; the dataset changed")
    saved_total, warmup_steps = saved_schedule(state)  # an extended run keeps its warm-up, in steps
    scheduler = warmup_schedule(optimizer, total_steps, warmup_steps, tc.schedule)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if saved_total != total_steps:  # extended: the next rate follows the schedule to the new last step
        restart_rate(optimizer, scheduler)
    run.objective.contrastive.load_state_dict(state["loss"])
    at = Progress(**{k: state[k] for k in ("step", "epoch", "position", "best_score", "best_step")})
    rngs = state["rng"]
    if len(rngs) == procs.world:
        set_rng_state(rngs[procs.rank])
    else:
        warnings.warn(f"{run.last}: saved by {len(rngs)} process(es), resumed by {procs.world}: dropout will "
                      "differ from an uninterrupted run", stacklevel=2)
        seed_everything(tc.seed + 1000 * at.step + procs.rank)
    return Optimisation(optimizer, scheduler, total_steps, warmup_steps, steps_per_epoch), at


def checkpoint_state(run: Prepared, opt: Optimisation, at: Progress, rngs: list[dict]) -> dict:
    """What ``state.pt`` holds: the position, the optimiser, schedule and loss states, every rank's RNG state."""
    return {"format": STATE_FORMAT, **asdict(at), "steps_per_epoch": opt.steps_per_epoch,
            "select_best": run.config.train.select_best, "optimizer": opt.optimizer.state_dict(),
            "scheduler": opt.scheduler.state_dict(), "schedule": schedule_state(opt.total_steps, opt.warmup_steps),
            "loss": run.objective.contrastive.state_dict(), "rng": rngs, "world_size": run.procs.world}


def _end_of_step(run: Prepared, opt: Optimisation, at: Progress, log: RunLog) -> bool:
    """Validate at the end of an epoch and of the run (rank 0), advance the epoch, write ``best/``
    (an improved score) and ``last/`` (when due); whether ``last/`` was written."""
    tc, procs = run.config.train, run.procs
    epoch_done = at.position == opt.steps_per_epoch
    finished = at.step >= opt.total_steps
    validated = None
    if (epoch_done or finished) and procs.main:
        validated = validate(run.model, run.val_loader, run.features, run.similarity["val"], run.objective,
                             run.device, run.autocast, tc.select_best, run.vocab)
        log.row(step=at.step, epoch=at.epoch, split="val", loss=validated["loss"], cap_loss=validated["cap_loss"],
                con_loss=validated["con_loss"], metric=tc.select_best, score=validated["score"])
    if epoch_done:
        at.epoch, at.position = at.epoch + 1, 0
    due = finished or (epoch_done if tc.checkpoint_every is None else at.step % tc.checkpoint_every == 0)
    if epoch_done or finished or due:
        rngs = gather_rng_states(procs)  # collective: every rank reaches it at the same steps
        if procs.main:
            if validated is not None and improves(validated["score"], at.best_score, tc.select_best):
                at.best_score, at.best_step = validated["score"], at.step
                write_checkpoint(run.out_dir, "best", run.model, checkpoint_state(run, opt, at, rngs))  # best first
            if due:
                write_checkpoint(run.out_dir, "last", run.model, checkpoint_state(run, opt, at, rngs))
    return due


def _train(run: Prepared, on_step: Callable[[dict], None] | None) -> dict:
    config, tc, procs, out_dir = run.config, run.config.train, run.procs, run.out_dir
    model, objective, batches = run.model, run.objective, run.batches
    opt, at = _start(run)
    optimizer, scheduler, total_steps = opt.optimizer, opt.scheduler, opt.total_steps
    if procs.main:
        config.save(out_dir / "config.yaml")
        run.vocab.save(out_dir / "vocab.json")
    log = RunLog(out_dir, at.step if run.last is not None else None, enabled=procs.main)

    net = model
    if procs.distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[run.device] if run.device.type == "cuda" else None,
                                                  find_unused_parameters=True)  # HSA value projections are unused

    # --- the loop
    bar = tqdm(total=total_steps, initial=at.step, desc="training", unit="step", disable=not run.show,
               dynamic_ncols=True)
    window = RunningMeans()
    trained_samples, trained_time = 0, 0.0
    last_saved = at.step if run.last is not None else None
    model.train()
    try:
        while at.step < total_steps:
            batches.start(at.epoch, skip=at.position)
            tick = time.perf_counter()
            for batch in run.train_loader:
                inputs = model_inputs(batch, "train", run.features, run.device)
                with run.autocast():
                    out = net(**inputs)
                terms = objective(out, batch, run.similarity["train"], world=procs.world)
                if not math.isfinite(terms.total_value):
                    kept = (f"the last good checkpoint is {out_dir / 'last'} (step {last_saved})"
                            if last_saved is not None else "no checkpoint was written yet")
                    raise RsccError(f"step {at.step + 1}: the loss is not finite (loss {terms.total_value}, caption "
                                    f"{terms.caption_value}, contrastive {terms.contrastive_value}); training "
                                    f"stopped, {kept}")
                terms.total.backward()
                if tc.grad_clip:
                    nn.utils.clip_grad_norm_(run.trainable, tc.grad_clip)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                at.step += 1
                at.position += 1
                n = len(batch["input_ids"]) * procs.world
                trained_samples += n
                trained_time += time.perf_counter() - tick
                window.add(terms.total_value, terms.caption_value, terms.contrastive_value, n)
                if at.step % tc.log_every == 0 or at.step == total_steps:
                    means = window.means()
                    speed = means["samples_per_s"]
                    log.row(step=at.step, epoch=at.epoch, split="train", lr=lr, **means)
                    bar.set_postfix(loss=f"{means['loss']:.3f}", lr=f"{lr:.2e}",
                                    samples_s=f"{speed:.0f}" if speed else "-", epoch=at.epoch)
                    window = RunningMeans()
                bar.update(1)
                window.pause()  # validation and checkpoints are not training time

                if _end_of_step(run, opt, at, log):
                    last_saved = at.step
                if on_step is not None:
                    on_step({"step": at.step, "epoch": at.epoch, "loss": terms.total_value,
                             "cap_loss": terms.caption_value, "con_loss": terms.contrastive_value, "lr": lr})
                if at.step >= total_steps:
                    break
                tick = time.perf_counter()
                window.resume()
    finally:
        bar.close()
        log.close()
    return {
        "run_dir": str(out_dir),
        "steps": at.step,
        "epochs": at.epoch,
        "steps_per_epoch": opt.steps_per_epoch,
        "select_best": tc.select_best,
        "best_step": at.best_step,
        "best_score": at.best_score,
        "last": str(out_dir / "last"),
        "best": str(out_dir / "best") if at.best_step is not None else None,
        "samples_per_s": trained_samples / trained_time if trained_time else None,
        "feature_cache": str(run.features.path) if run.features is not None else None,
        "device": str(run.device),
        "world_size": procs.world,
        **{f"machine_{k}": v for k, v in machine().items()},  # the CPU and kernels these numbers came from
    }
