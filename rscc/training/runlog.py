"""What a run reports: ``log.csv`` and TensorBoard events (rank 0), and the running averages between rows."""
from __future__ import annotations

import csv
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

LOG_FIELDS = ["step", "epoch", "split", "loss", "cap_loss", "con_loss", "lr", "samples_per_s", "metric", "score"]


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


@dataclass
class RunningMeans:
    """Mean losses and throughput of the steps since the last logged row.

    The clock counts training time only: :meth:`pause` and :meth:`resume` leave validation and
    checkpoints out of ``samples_per_s``."""

    loss: float = 0.0
    cap_loss: float = 0.0
    con_loss: float = 0.0
    steps: int = 0
    samples: int = 0
    started: float = field(default_factory=time.perf_counter)
    paused: float | None = None

    def add(self, loss: float, cap_loss: float, con_loss: float, samples: int) -> None:
        self.loss += loss
        self.cap_loss += cap_loss
        self.con_loss += con_loss
        self.steps += 1
        self.samples += samples

    def means(self) -> dict:
        """``{"loss", "cap_loss", "con_loss", "samples_per_s"}`` over the steps added (at least one)."""
        elapsed = time.perf_counter() - self.started
        k = self.steps
        return {"loss": self.loss / k, "cap_loss": self.cap_loss / k, "con_loss": self.con_loss / k,
                "samples_per_s": self.samples / elapsed if elapsed > 0 else None}

    def pause(self) -> None:
        self.paused = time.perf_counter()

    def resume(self) -> None:
        if self.paused is not None:
            self.started += time.perf_counter() - self.paused
            self.paused = None
