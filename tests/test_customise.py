"""Notebook parameters: a rerun with other settings writes beside, never over, the committed results."""
import pytest

from rscc.errors import ConfigError
from rscc.experiments.profiles import customise, get_profile
from rscc.paths import REPO_ROOT


def test_no_parameter_or_the_profiles_own_values_keep_the_committed_folders():
    quick = get_profile("quick")
    for same in (customise(quick), customise(quick, thetas=quick.thetas, seeds=None)):
        assert same.output_dir is None and same.figures_dir == REPO_ROOT / "figures"


def test_other_parameters_change_the_profile_and_write_under_runs(tmp_path):
    quick = get_profile("quick", runs_dir=tmp_path)
    custom = customise(quick, thetas=[0.7], seeds=[1, 2, 3], pairs=500, epochs=1)
    assert custom.thetas == [0.7] and custom.seeds == [1, 2, 3] and custom.synth_pairs == 500
    for overrides in (custom.overrides, custom.main_overrides, custom.sweep_overrides):
        assert overrides[-2:] == ["data.synth_pairs=500", "train.epochs=1"]
    assert custom.figures_dir.parent.parent == tmp_path / "quick" / "reruns"
    assert custom.results_dir.parent == custom.figures_dir.parent
    assert quick.thetas != [0.7]  # the profile itself is left as it was
    assert customise(quick, thetas=[0.7]).output_dir != customise(quick, thetas=[0.8]).output_dir


def test_out_and_a_notebooks_own_changed_parameters(tmp_path):
    quick = get_profile("quick", runs_dir=tmp_path)
    assert customise(quick, out=tmp_path / "mine").figures_dir == tmp_path / "mine" / "figures"
    assert customise(quick, changed={"fn_mode": "fne"}).output_dir.parent == tmp_path / "quick" / "reruns"


def test_an_unknown_parameter_is_refused():
    with pytest.raises(ConfigError, match="unknown notebook parameter"):
        customise(get_profile("quick"), theta_list=[0.7])
