"""Every knob a user varies is a papermill parameter, and a rerun with other values writes beside."""
import json

import nbformat
import pytest

from rscc.experiments.profiles import KNOBS
from rscc.experiments.reproduce import notebooks, run_notebook

# the knobs each notebook reads (04 and 05 train sweeps, 06 locates their runs)
EXPECTED = {
    "01": {"pairs"}, "03": {"pairs", "epochs"}, "04": {"thetas", "fn_modes", "seeds", "pairs", "epochs"}, "05": {"backbones", "seeds", "pairs", "epochs"},
    "06": {"thetas", "fn_modes", "seeds", "backbones", "pairs", "epochs"}, "07": {"pairs"},
    "08": {"seeds", "epochs"},
    "09": {"stock_shares", "fn_modes", "seeds", "pairs", "epochs"},
}


def _parameters(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line and not line.startswith("#")}
    return names, "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_the_notebook_declares_its_knobs_and_passes_them_to_customise(number):
    (path,) = notebooks([number])
    names, code = _parameters(path)
    assert {"profile", "out"} | EXPECTED[number] <= names
    assert "customise(" in code
    for knob in EXPECTED[number] - {"epochs"} if number == "03" else EXPECTED[number]:
        assert f"{knob}={knob}" in code, knob
    assert EXPECTED[number] <= set(KNOBS)


@pytest.mark.slow
def test_papermill_parameters_reach_the_notebook_and_its_outputs_go_to_out(tmp_path):
    (path,) = notebooks(["01"])
    out = tmp_path / "rerun"
    executed = run_notebook(path, tmp_path / "executed", {"profile": "smoke", "pairs": 24, "out": str(out)})
    assert (out / "figures" / "01_example_pairs.png").stat().st_size > 0
    text = json.dumps(nbformat.read(executed, as_version=4).cells[-1].get("outputs", []))
    assert "checks passed" in text
    summary = [c for c in nbformat.read(executed, as_version=4).cells if c.cell_type == "code"
               and c.source.startswith("summary = analysis.split_summary")][0]
    assert "synthetic LEVIR-CC (24 pairs, 64 px)" in summary.outputs[0]["data"]["text/plain"]


@pytest.mark.slow
def test_a_rerun_of_notebook_04_with_other_thetas_and_seeds_trains_only_what_is_new(tmp_path):
    """The issue's example, on the smoke profile: papermill 04 -p thetas [0.9] -p seeds [7] trains
    only the new seed's runs, leaves every earlier run as it was, and writes its tables to out."""
    from rscc.paths import REPO_ROOT

    (path,) = notebooks(["04"])
    run_notebook(path, tmp_path / "first", {"profile": "smoke"})
    runs = REPO_ROOT / "runs" / "smoke"
    before = {p: p.stat().st_mtime_ns for d in runs.glob("04_*") for p in d.rglob("*") if p.is_file()}
    committed = {p.name: p.read_bytes() for p in (REPO_ROOT / "results").glob("*.*")}
    out = tmp_path / "rerun"
    run_notebook(path, tmp_path / "second", {"profile": "smoke", "thetas": [0.9], "seeds": [7], "out": str(out)})
    assert {p: p.stat().st_mtime_ns for p in before if p.exists()} == before  # nothing earlier touched or removed
    new_runs = {p.parent.parent.relative_to(runs).as_posix()
                for d in runs.glob("04_*") for p in d.rglob("eval/metrics.json") if p not in before}
    assert new_runs and all("seed7" in name for name in new_runs), new_runs
    assert {p.name: p.read_bytes() for p in (REPO_ROOT / "results").glob("*.*")} == committed
    assert any((out / "results").glob("*.md")) and any((out / "figures").glob("*.png"))
