"""A run of another configuration is set aside, never deleted."""
from rscc.experiments.study import set_aside


def test_set_aside_keeps_the_run_and_never_overwrites_an_earlier_one(tmp_path):
    kept = []
    for n in range(2):
        run = tmp_path / "run"
        run.mkdir()
        (run / "eval.json").write_text(str(n))
        kept.append(set_aside(run))
    assert not (tmp_path / "run").exists()
    assert [p.name for p in kept] == ["run@unreadable", "run@unreadable-1"]
    assert [(p / "eval.json").read_text() for p in kept] == ["0", "1"]
