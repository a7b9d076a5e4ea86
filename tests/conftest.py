import os

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
