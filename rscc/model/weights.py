"""Backbone weights: reading weight files safely, loading a tower from one, and finding the files
(the Hugging Face hub, the torch hub cache, an installed package); nothing is downloaded silently."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rscc.errors import CheckpointError, ConfigError
from rscc.model.registry import WeightSource
from rscc.offline import hub_unreachable, offline_setting


def torch_load_failure(exc: Exception) -> str:
    """One line saying why ``torch.load(..., weights_only=True)`` failed: the unpickler's reason
    (e.g. ``Unsupported global: GLOBAL os.system``), without torch's advice to retry unsafely."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = next((line for line in lines if line.startswith("WeightsUnpickler error:")), lines[0] if lines else "")
    reason = reason.removeprefix("WeightsUnpickler error:").strip()
    return reason.split(" Please use `torch.serialization")[0] or type(exc).__name__


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file or a torch pickle loaded with ``weights_only=True``.

    A pickle that needs code to load is refused (CheckpointError), never executed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, ...
        raise CheckpointError(f"{path}: refused or unreadable checkpoint (loaded with weights_only=True, so a pickle "
                              f"that runs code is rejected): {torch_load_failure(exc)}") from None
    for key in ("state_dict", "model", "model_state_dict"):  # training checkpoints wrap the weights
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (a mapping of names to tensors)")
    return dict(obj)


def state_mismatch(own: dict[str, torch.Tensor],
                   state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """How ``state`` (from a file) fails to fit a module whose state dict is ``own``: the missing
    keys, the unexpected keys and the keys of another shape (``key: file (shape), model (shape)``),
    each in the module's or the file's order; three empty lists when it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    return missing, unexpected, wrong


def load_tower_file(net: nn.Module, path: Path, name: str, drop: tuple[str, ...] = (), prefix: str = "") -> None:
    """Load ``path`` into the tower ``net`` of backbone ``name``, keys matching exactly.

    Only the keys under ``prefix`` are kept, without it (a whole CLIP model's file gives its
    ``visual.`` tower in any case); keys starting with a prefix in ``drop`` (heads the tower has
    not got, e.g. ``fc.``) are left out. Any other mismatch is a CheckpointError naming the file
    and the first differing keys."""
    state = read_state_dict(path)
    if not prefix and any(k.startswith("visual.") for k in state):  # a whole CLIP model: the vision tower
        prefix = "visual."
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if drop:
        state = {k: v for k, v in state.items() if not k.startswith(drop)}
    missing, unexpected, wrong = state_mismatch(net.state_dict(), state)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: not {name} backbone weights (model.pretrained); missing keys {missing[:3]}, "
            f"unexpected keys {unexpected[:3]}, wrong shapes {wrong[:3]}")
    net.load_state_dict(state)


# ----------------------------------------------------------------------------- where weights are found
REMOTECLIP_REPO = "chendelong/RemoteCLIP"


def remoteclip_file(name: str) -> tuple[Path | None, str]:
    """Path of ``RemoteCLIP-<name>.pt``: from the local Hugging Face cache when it is there, else
    downloaded when online and the hub answers (short metadata timeout), or (None, why not).
    An unreachable hub is found out once per process in a few seconds at most, not after
    huggingface_hub's five retries per file."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        return None, "huggingface_hub is not installed"
    filename = f"RemoteCLIP-{name}.pt"
    offline = offline_setting()
    if offline is None:  # online: the local copy if there is one, else the hub if it answers
        cached = try_to_load_from_cache(REMOTECLIP_REPO, filename)
        if isinstance(cached, str):
            return Path(cached), ""
        unreachable = hub_unreachable()
        if unreachable:
            return None, unreachable
    try:
        path = hf_hub_download(REMOTECLIP_REPO, filename, local_files_only=offline is not None, etag_timeout=10)
    except Exception as exc:  # noqa: BLE001 - offline, missing or unreachable: all mean "no weights"
        why = f"{offline} is set and the file is not in the local cache" if offline else type(exc).__name__
        return None, why
    return Path(path), ""


def torchvision_cached_file(name: str) -> tuple[Path | None, str]:
    """torchvision's ImageNet-1k (V1, what ``pretrained=True`` gave the authors) file of ``name`` when it is
    already in the torch hub cache, or (None, why not); never downloads."""
    import torchvision

    weights = torchvision.models.get_model_weights(name).IMAGENET1K_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    return (path, "") if path.is_file() else (None, "not in the torch hub cache")


def packaged_file(package: str, resource: str, pip: str) -> Path:
    """Path of ``resource`` inside the installed ``package``; a one-line ConfigError naming ``pip`` if absent."""
    # find_spec locates the package without running its __init__ (geoembed's imports netcl/OpenCL).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Python package '{package}' is not installed: run `{pip}`")
    path = Path(next(iter(spec.submodule_search_locations))) / resource
    if not path.is_file():
        raise ConfigError(f"{package} has no file {resource}: reinstall it with `{pip}`")
    return path


@dataclass
class PackagedWeights:
    """A weight file shipped inside a pip package: ``resource`` inside the importable ``package``,
    installed by the command ``pip``."""

    package: str
    resource: str
    pip: str

    def file(self) -> Path:
        """The installed file; a one-line ConfigError naming ``pip`` if absent."""
        return packaged_file(self.package, self.resource, self.pip)

    def source(self, label: str, load: Callable[[nn.Module, Path, str], None]) -> WeightSource:
        """These weights as a backbone's named weights (read at build time, so a missing package is
        an error then, not at import)."""
        return WeightSource(label, locate=lambda name: (self.file(), ""), load=load, where=f"`{self.pip}`")
