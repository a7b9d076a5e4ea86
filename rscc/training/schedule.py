"""The learning-rate schedule: linear warm-up from 0, then constant (the authors) or a cosine decay to 0.

Both are ``transformers``' schedules (``get_constant_schedule_with_warmup``,
``get_cosine_schedule_with_warmup``), as in the authors' code, which passes a float number of
warm-up steps (``train.warmup`` × total steps); transformers' lambdas compute with it as given
(``step / max(1, warmup)``), so the float is kept.

An extended run (``--resume train.epochs=N``) keeps the warm-up it had, in steps, and from there
follows its schedule towards the new last step: a constant rate stays constant; a cosine decay is
stretched, so the rate rises from the old end's back to the longer curve.
"""
from __future__ import annotations

import torch

from rscc.config import CHOICES
from rscc.errors import ConfigError

SCHEDULES = CHOICES["train.schedule"]  # constant, cosine


def warmup_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: float,
                    kind: str = "constant") -> torch.optim.lr_scheduler.LambdaLR:
    """The scheduler of ``train.schedule`` = ``kind`` over ``total_steps`` optimiser steps."""
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if kind not in SCHEDULES:
        raise ConfigError(f"train.schedule '{kind}' is not one of {', '.join(SCHEDULES)}")
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps)
    return get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)


def schedule_state(total_steps: int, warmup_steps: float) -> dict:
    """What a checkpoint records of its schedule (transformers' scheduler state holds neither)."""
    return {"total_steps": total_steps, "warmup_steps": warmup_steps}


def saved_schedule(state: dict) -> tuple[int, float]:
    """(total steps, warm-up steps) of the schedule a checkpoint's run followed."""
    if "schedule" in state:
        return state["schedule"]["total_steps"], state["schedule"]["warmup_steps"]
    fields = state["scheduler"]["lr_lambdas"][0]  # checkpoints of rscc.train saved its schedule object's fields
    return fields["total_steps"], fields["warmup_steps"]


def restart_rate(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR) -> None:
    """Set the rate of the next step from the schedule (after loading a checkpoint of a shorter run)."""
    for group, base, rate in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * rate(scheduler.last_epoch)
