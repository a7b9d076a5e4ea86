import os
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest

from rscc.paths import shared_dir


@pytest.fixture(scope="session")
def shared():
    """The read-only ../shared folder; tests that need it skip when it is absent."""
    path = shared_dir()
    if path is None:
        pytest.skip("../shared is absent (set RSCC_SHARED to its path); real LEVIR-CC material unavailable")
    return path


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The models under test are tiny: one torch thread is faster than two on a shared 2-core
    machine (extra threads only spin) and keeps float results independent of the core count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_MODEL = ["model.d_model=32", "model.a_dim=32", "model.h_dim=16", "model.tiny_width=32",
              "model.tiny_layers=1", "model.image_size=64"]


@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    """Six synthetic LEVIR-CC pairs of 64 px, shared by every test: read it, or break a copy."""
    from rscc.data.synth import make_synthetic

    return make_synthetic(tmp_path_factory.mktemp("clean") / "levir", 6, size=64, seed=0, progress=False)


@pytest.fixture
def dataset(clean, tmp_path):
    """A private copy of the clean dataset, to break."""
    import shutil
    from pathlib import Path

    return Path(shutil.copytree(clean, tmp_path / "levir"))


def write_tiny_run(run_dir, vocab, overrides=(), end_boost=None):
    """A run directory holding a random cpu-tiny model (64 px, d = 32, backbone included), its
    config and ``vocab``; ``end_boost`` scales the END row of the tied embedding so that greedy
    captions of the random model stop early."""
    import torch

    from rscc.config import load_preset
    from rscc.data.levircc import END
    from rscc.model.rsicrc import build_model, save_weights

    config = load_preset("cpu-tiny", TINY_MODEL + [f"model.vocab_size={len(vocab)}", *overrides])
    torch.manual_seed(0)
    model = build_model(config.model, load_pretrained=False)
    if end_boost is not None:
        with torch.no_grad():
            model.decoder.lm_head.weight[END] *= end_boost
    (run_dir / "best").mkdir()
    save_weights(model, run_dir / "best" / "weights.safetensors")
    config.save(run_dir / "config.yaml")
    vocab.save(run_dir / "vocab.json")
    return run_dir


@pytest.fixture(scope="session")
def make_tiny_run():
    return write_tiny_run


@contextmanager
def private_synthetic_cache(path, pairs: int = 40, size: int = 64):
    """RSCC_CACHE set to ``path`` for the block, holding the synthetic set (seed 0) that a training
    with ``data.synth_pairs=pairs``, ``data.synth_size=size`` and no ``data.root`` reads."""
    from rscc.data.synth import default_root, ensure_synthetic

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RSCC_CACHE", str(path))
        ensure_synthetic(default_root(pairs, size), pairs, size=size, seed=0, progress=False)
        yield path


@pytest.fixture(scope="session")
def synthetic_cache():
    """:func:`private_synthetic_cache`, for fixtures of any scope."""
    return private_synthetic_cache
