"""Which torch device a run uses: ``train.device`` (auto, cuda, mps, cpu) resolved on this machine."""
from __future__ import annotations

import torch

from rscc.errors import ConfigError


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; naming an absent device is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda":
        if not cuda:
            raise ConfigError("device cuda was asked for but no CUDA device is available; use auto or cpu")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if name == "mps":
        if not mps:
            raise ConfigError("device mps was asked for but the MPS backend is not available; use auto or cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device '{name}' is not one of auto, cuda, mps, cpu")


def machine() -> dict[str, str | int]:
    """What a run's numbers depend on beyond its configuration and data: the CPU (its name, and on
    Linux its family and model), the SIMD kernels torch dispatches to on it (``cpu_capability``:
    e.g. AVX2 or AVX512; the same training gives slightly different floats on CPUs that take
    different kernels), the torch version and its thread count. Stored in each run's summary so
    that two results can be compared knowing whether they come from the same kind of machine."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            first = f.read().split("\n\n")[0]  # the first processor's block
    except OSError:  # not Linux
        first = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    if fields.get("model name"):
        cpu = f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
