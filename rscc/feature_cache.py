"""Backbone features computed once and kept on disk, for a backbone that does not train.

When the backbone is frozen (``model.freeze_backbone``), its output for a pair depends only on the
two images, so every epoch (and every training of a sweep over ``theta``) would recompute the same
(C, s, s) maps. The trainer computes them once per dataset, stores one ``.npy`` file per split
holding an array (pairs, 2, C, s, s) (index 0 = image A, 1 = image B; rows in the split's file
order), and reads batches from it through a memory map.

The cache lives under ``rscc.paths.cache_dir()/features/<name>-<key>``. The key hashes everything
the features depend on: the backbone name, image size and output shape, the backbone's weights
(a digest of its state dict, so a random initialisation must be reproducible: the trainer builds
the model under its seed), the storage dtype, and the dataset content (the captions JSON bytes and
the size and modification time of every image file). Change any of them and a new cache is made.

Storage is float16 by default: it halves the disk and page-cache footprint at no measurable cost.
Measured on cpu-tiny (synthetic 128 px validation pairs, a briefly trained model): rounding the
features to float16 changes them by 2e-4 (relative norm), the caption loss by 3e-7 and the
contrastive loss by 1.5e-6 (relative), and keeps every pair embedding at cosine > 0.9999998 with
its float32 value. ``dtype="float32"`` keeps exact features.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rscc import paths
from rscc.data.images import PairImages
from rscc.data.levircc import CAPTIONS_FILE, Pair
from rscc.errors import RsccError

CACHE_FORMAT = 2  # 2: computed channels-last; bump when the layout or the way features are computed changes
DTYPES = {"float16": np.float16, "float32": np.float32}


def backbone_is_static(backbone: nn.Module) -> bool:
    """True when the backbone's output cannot change during training: no trainable parameter and
    no layer whose behaviour depends on train mode (BatchNorm statistics, dropout), unless the
    backbone is frozen and so kept in evaluation mode."""
    if any(p.requires_grad for p in backbone.parameters()):
        return False
    if getattr(backbone, "frozen", False):
        return True
    mode_dependent = (nn.modules.batchnorm._BatchNorm, nn.Dropout)
    return not any(isinstance(m, mode_dependent) and getattr(m, "p", 1.0) != 0.0 for m in backbone.modules())


# ----------------------------------------------------------------------------- key
def weights_digest(module: nn.Module) -> str:
    """BLAKE2b digest of a module's state dict (names, dtypes, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def dataset_digest(root: str | Path, pairs: Sequence[Pair]) -> str:
    """Digest of the captions JSON bytes and of every image's name, size and modification time."""
    root = Path(root)
    h = hashlib.blake2b(digest_size=16)
    h.update((root / CAPTIONS_FILE).read_bytes())
    for pair in pairs:
        for path in pair.image_paths(root):
            try:
                st = path.stat()
            except FileNotFoundError:
                raise RsccError(f"{path}: image not found (needed for the feature cache)") from None
            h.update(f"{path.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()


def cache_identity(backbone: nn.Module, backbone_name: str, weights_source: str, root: str | Path,
                   pairs: Sequence[Pair], dtype: str = "float16") -> dict:
    """What the cached features depend on; its hash names the cache folder."""
    return {
        "format": CACHE_FORMAT,
        "backbone": backbone_name,
        "weights_source": weights_source,  # a pretrained path/tag, or random-seed-<seed>
        "weights_digest": weights_digest(backbone),
        "image_size": int(getattr(backbone, "image_size", 0)),
        "channels": int(backbone.out_channels),
        "feature_size": int(backbone.feature_size),
        "dtype": dtype,
        "dataset_digest": dataset_digest(root, pairs),
    }


def cache_path(identity: dict, cache_root: str | Path | None = None) -> Path:
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(cache_root) if cache_root is not None else paths.cache_dir()
    return root / "features" / f"{identity['backbone']}-{identity['image_size']}px-{key}"


# ----------------------------------------------------------------------------- cache
class FeatureCache:
    """Read-only features of a dataset: ``get(split, pair_index)`` -> (feat_a, feat_b).

    Rows are read with ``os.pread`` rather than through a memory map, so the pages read stay in
    the kernel's file cache and are not counted in the process's resident memory: RSS does not
    grow with the size of the cache (benchmarks/memory.py)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta_file = self.path / "meta.json"
        if not meta_file.is_file():
            raise RsccError(f"{self.path}: not a feature cache (meta.json missing)")
        self.meta = json.loads(meta_file.read_text())
        self.layout = {}  # split -> (file, row shape, dtype, offset of row 0)
        for split in self.meta["splits"]:
            file = self.path / f"{split}.npy"
            header = np.load(file, mmap_mode="r")  # reads the header only
            self.layout[split] = (file, header.shape, header.dtype, header.offset)
            del header

    def __contains__(self, split: str) -> bool:
        return split in self.layout

    def num_pairs(self, split: str) -> int:
        return int(self.layout[split][1][0])

    def get(self, split: str, pair_index: torch.Tensor | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 feature maps (B, C, s, s) of images A and B of the given pairs of ``split``."""
        file, shape, dtype, offset = self.layout[split]
        row_shape = shape[1:]  # (2, C, s, s)
        row_bytes = int(np.prod(row_shape)) * dtype.itemsize
        index = np.asarray(pair_index, dtype=np.int64).reshape(-1)
        if index.size and (index.min() < 0 or index.max() >= shape[0]):
            raise IndexError(f"{file}: pair index out of range 0..{shape[0] - 1}")
        fd = os.open(file, os.O_RDONLY)
        try:
            buffer = b"".join(os.pread(fd, row_bytes, offset + int(i) * row_bytes) for i in index)
        finally:
            os.close(fd)
        rows = np.frombuffer(buffer, dtype=dtype).reshape(len(index), *row_shape).astype(np.float32)
        rows = torch.from_numpy(rows)  # (B, 2, C, s, s)
        return rows[:, 0], rows[:, 1]


class _RowWriter:
    """A .npy file filled by ``writer[start:stop] = rows`` with plain writes (no memory map, so the
    pages written are not counted in the process's resident memory while a cache is built)."""

    def __init__(self, file: Path, shape: tuple[int, ...], dtype):
        header = np.lib.format.open_memmap(file, mode="w+", dtype=dtype, shape=shape)  # header + size
        self.offset, self.dtype = header.offset, np.dtype(dtype)
        self.row_bytes = int(np.prod(shape[1:])) * self.dtype.itemsize
        del header
        self.fd = os.open(file, os.O_WRONLY)
        self.nonzero = self.zeroed = 0  # values that were not 0, and those the storage dtype made 0

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        stored = np.ascontiguousarray(values, dtype=self.dtype)
        nonzero = int(np.count_nonzero(values))
        self.nonzero += nonzero
        self.zeroed += nonzero - int(np.count_nonzero(stored))
        os.pwrite(self.fd, stored.tobytes(), self.offset + rows.start * self.row_bytes)

    def __enter__(self) -> _RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        os.close(self.fd)


@torch.no_grad()
def compute_features(model: nn.Module, pairs: Sequence[Pair], root: str | Path, out: np.ndarray,
                     device: torch.device, batch_size: int = 32, num_workers: int = 0, autocast: bool = False,
                     desc: str = "features") -> None:
    """Fill ``out`` (N, 2, C, s, s) with ``model.backbone_features`` of the pairs' images A and B."""
    loader = DataLoader(PairImages([p.image_paths(root) for p in pairs], model.backbone.transform),
                        batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    start = 0
    # channels-last convolutions are faster on a CPU (benchmarks/cached_eval.py); the backbone is put
    # back in the default layout afterwards
    model.backbone.to(memory_format=torch.channels_last)
    try:
        for img_a, img_b in tqdm(loader, desc=desc, unit="batch", leave=False, disable=desc is None):
            n = img_a.shape[0]
            images = torch.cat([img_a, img_b]).to(device)  # (2n, 3, H, W): one pass for both dates
            images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                feats = model.backbone_features(images).float()  # (2n, C, s, s)
            out[start:start + n] = torch.stack([feats[:n], feats[n:]], dim=1).cpu().numpy()  # (n, 2, C, s, s)
            start += n
    finally:
        model.backbone.to(memory_format=torch.contiguous_format)


def ensure_feature_cache(model: nn.Module, backbone_name: str, weights_source: str, root: str | Path,
                         splits: dict[str, Sequence[Pair]],
                         device: torch.device, batch_size: int = 32, num_workers: int = 0, dtype: str = "float16",
                         autocast: bool = False, progress: bool = True, cache_root: str | Path | None = None,
                         build: bool = True) -> FeatureCache:
    """The feature cache of these pairs, computed now when missing (``build=False``: only open it).

    ``backbone_name`` and ``weights_source`` (from :func:`backbone_label`, :func:`weights_source`)
    name the cache for humans; the weights digest is what makes it exact.
    ``model`` exposes ``backbone`` (with ``out_channels``, ``feature_size``, ``transform``) and
    ``backbone_features(images)``. The folder is written under a temporary name and renamed when
    complete, so an interrupted computation leaves nothing that looks like a cache."""
    if dtype not in DTYPES:
        raise RsccError(f"feature cache dtype '{dtype}' is not one of {sorted(DTYPES)}")
    all_pairs = [p for split in splits.values() for p in split]
    identity = cache_identity(model.backbone, backbone_name, weights_source, root, all_pairs, dtype)
    path = cache_path(identity, cache_root)
    if (path / "meta.json").is_file():
        return FeatureCache(path)
    if not build:
        raise RsccError(f"{path}: feature cache missing")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f".{path.name}.{os.getpid()}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    was_training = model.training
    model.eval()
    try:
        shape = (2, model.backbone.out_channels, model.backbone.feature_size, model.backbone.feature_size)
        nonzero = zeroed = 0
        for split, pairs in splits.items():
            with _RowWriter(partial / f"{split}.npy", (len(pairs), *shape), DTYPES[dtype]) as out:
                compute_features(model, pairs, root, out, device, batch_size, num_workers, autocast,
                                 desc=f"caching {split} features" if progress else None)
            nonzero, zeroed = nonzero + out.nonzero, zeroed + out.zeroed
        if message := underflow_message(f"{backbone_name} ({weights_source})", dtype, nonzero, zeroed):
            warnings.warn(message, stacklevel=2)
        meta = dict(identity, splits={s: [p.filename for p in pairs] for s, pairs in splits.items()})
        (partial / "meta.json").write_text(json.dumps(meta, indent=1))
        for file in partial.iterdir():
            paths.fsync(file)
        paths.fsync(partial)
        try:
            os.replace(partial, path)
        except OSError:  # another process finished the same cache first
            if not (path / "meta.json").is_file():
                raise
            shutil.rmtree(partial, ignore_errors=True)
        paths.fsync(path.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        model.train(was_training)
    return FeatureCache(path)


def underflow_message(backbone: str, dtype: str, nonzero: int, zeroed: int, limit: float = 0.01) -> str:
    """A warning when storing features as ``dtype`` turned more than ``limit`` of the non-zero ones
    into 0 (features below float16's range: a randomly initialised network with BatchNorm in eval
    mode, e.g. MobileNetV2, shrinks them to ~1e-9), else "". Such a cache hides the images from the
    model."""
    if nonzero == 0:
        return f"{backbone}: every backbone feature is 0; the model trained on this cache sees no image"
    if zeroed / nonzero <= limit:
        return ""
    return (f"{backbone}: {100 * zeroed / nonzero:.0f} % of the non-zero backbone features are too small for "
            f"{dtype} and are stored as 0, so the model sees almost nothing of the images (a random-init "
            "network with BatchNorm in eval mode does this); train.cache_features=false keeps them in float32")


def estimated_size(model: nn.Module, num_pairs: int, dtype: str = "float16") -> int:
    """Bytes a cache of ``num_pairs`` pairs takes on disk."""
    b = model.backbone
    return num_pairs * 2 * b.out_channels * b.feature_size ** 2 * np.dtype(DTYPES[dtype]).itemsize


def backbone_label(config) -> str:
    """The backbone's name for a cache folder; the tiny tower's shape is part of its name."""
    if config.backbone == "tiny":
        return f"tiny-w{config.tiny_width}-l{config.tiny_layers}-p{config.tiny_patch}"
    return config.backbone


def weights_source(config, seed: int) -> str:
    """Where the backbone weights come from: the pretrained path or tag, or ``random-seed-<seed>``."""
    return str(config.pretrained) if config.pretrained else f"random-seed-{seed}"
