"""A rerun with other settings trains beside a finished run, never over it."""
from rscc.config import load_preset
from rscc.experiments.profiles import get_profile
from rscc.experiments.study import config_digest, run_dir_for


def _profile(tmp_path):
    return get_profile("smoke", runs_dir=tmp_path / "runs")


def test_a_free_or_same_configuration_folder_is_used_as_it_is(tmp_path):
    profile, config = _profile(tmp_path), load_preset("cpu-tiny", ["train.epochs=1"])
    base = profile.run_dir("03_joint_training")
    assert run_dir_for(profile, "03_joint_training", config) == base
    base.mkdir(parents=True)
    config.save(base / "config.yaml")
    assert run_dir_for(profile, "03_joint_training", config) == base


def test_another_configuration_goes_beside_the_finished_run(tmp_path):
    profile = _profile(tmp_path)
    first, other = load_preset("cpu-tiny", ["train.epochs=1"]), load_preset("cpu-tiny", ["train.epochs=2"])
    base = profile.run_dir("04_ablation", "fna-seed42")
    base.mkdir(parents=True)
    first.save(base / "config.yaml")
    (base / "eval.json").write_text("finished")
    beside = run_dir_for(profile, "04_ablation/fna-seed42", other)
    assert beside == base.with_name(f"fna-seed42@{config_digest(other)[:8]}")
    assert (base / "eval.json").read_text() == "finished" and not beside.exists()  # nothing moved or made


def test_a_folder_with_an_unreadable_configuration_is_left_alone(tmp_path):
    profile, config = _profile(tmp_path), load_preset("cpu-tiny")
    base = profile.run_dir("run")
    base.mkdir(parents=True)
    (base / "config.yaml").write_text(": not yaml [")
    assert run_dir_for(profile, "run", config).name == f"run@{config_digest(config)[:8]}"
    assert (base / "config.yaml").read_text() == ": not yaml ["
