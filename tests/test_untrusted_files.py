"""Untrusted files stay inert: code hidden in a pickle (a training state, backbone weights) is refused
and never run, and the package never evaluates or unpickles text it reads.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from reliability_helpers import REPO, assert_one_line_error, cli, copy_run, train_argv, train_small_run


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """(40 synthetic pairs of 64 px, a private RSCC_CACHE, a 3-step run trained on them)."""
    return train_small_run(tmp_path_factory)


class WritesMarker:
    """Unpickling this would create a file: code hidden in a checkpoint."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_training_state_with_code_in_its_pickle_is_refused_on_resume_and_never_run(small_data, tmp_path, monkeypatch,
                                                                                     capsys):
    data, cache, trained = small_data
    run = copy_run(trained, tmp_path / "run")
    marker = tmp_path / "marker"
    state = torch.load(run / "last" / "state.pt", weights_only=True)
    state["rng"][0]["python"] = WritesMarker(marker)
    torch.save(state, run / "last" / "state.pt")
    monkeypatch.setenv("RSCC_CACHE", str(cache))
    status, err = cli(train_argv(data, run, "--resume", overrides=("train.max_steps=3",)), capsys)
    assert_one_line_error(status, err, str(run / "last" / "state.pt"), "unreadable training state")
    assert not marker.exists()


def test_training_states_round_trip_through_torch_load_with_weights_only(small_data):
    from rscc.training.checkpoint import read_state
    from rscc.training.sampling import set_rng_state

    state = read_state(small_data[2] / "last")  # python, numpy and torch RNG states included
    set_rng_state(state["rng"][0])
    assert state["step"] == 3 and {"python", "numpy", "torch"} <= set(state["rng"][0])


def test_pretrained_backbone_weights_with_code_in_their_pickle_are_refused(tmp_path):
    from rscc.config import ModelConfig
    from rscc.errors import CheckpointError
    from rscc.model.rsicrc import build_model

    marker = tmp_path / "marker"
    torch.save({"visual.proj": WritesMarker(marker)}, tmp_path / "weights.pt")
    config = ModelConfig(backbone="tiny", pretrained=str(tmp_path / "weights.pt"), tiny_width=32, tiny_layers=1,
                         image_size=64, d_model=32, a_dim=32, h_dim=16, vocab_size=8)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_model(config)
    assert not marker.exists()


def _package_calls() -> list[tuple[str, int, str, object]]:
    """(file, line, dotted callee, call node) of every call in the rscc package."""
    import ast

    found = []
    for path in sorted((REPO / "rscc").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                found.append((str(path.relative_to(REPO)), node.lineno, ast.unparse(node.func), node))
    return found


def test_the_package_never_evaluates_or_unpickles_untrusted_text():
    import ast

    unsafe, calls = [], _package_calls()
    for where, line, callee, node in calls:
        keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
        if callee in ("eval", "exec", "builtins.eval", "builtins.exec", "pickle.load", "pickle.loads",
                      "yaml.load", "yaml.unsafe_load", "yaml.full_load", "marshal.loads", "dill.load"):
            unsafe.append(f"{where}:{line}: {callee}")
        if callee == "torch.load" and keywords.get("weights_only") != "True":
            unsafe.append(f"{where}:{line}: torch.load without weights_only=True")
        if callee.endswith("np.load") and keywords.get("allow_pickle") not in (None, "False"):
            unsafe.append(f"{where}:{line}: np.load with allow_pickle")
    assert unsafe == []
    assert any(callee == "torch.load" for _, _, callee, _ in calls)  # the scan sees the calls it checks
