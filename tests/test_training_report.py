"""Notebook 03's helpers: the loss-curve figure of a run's log.csv and the caption examples table."""
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(run directory, dataset root) of the smoke profile's main training (seconds on a CPU)."""
    from rscc.experiments.profiles import get_profile
    from rscc.experiments.study import dataset_root, train_and_evaluate

    settings = get_profile("smoke", runs_dir=tmp_path_factory.mktemp("runs"))
    train_and_evaluate(settings, "03_joint_training", overrides=settings.main_overrides, meteor=False, progress=False)
    return settings.run_dir("03_joint_training"), dataset_root(settings, progress=False)


def test_training_log_figure_draws_train_and_val_caption_losses_at_their_steps(smoke_run):
    from rscc.plots import plot_training_log

    log = pd.read_csv(smoke_run[0] / "log.csv")
    fig = plot_training_log(smoke_run[0] / "log.csv")
    caption_axis = fig.axes[0]
    train_line, val_line = caption_axis.get_lines()[:2]
    assert list(train_line.get_xdata()) == log[log.split == "train"].step.tolist()
    assert list(val_line.get_xdata()) == log[log.split == "val"].step.tolist()
    assert list(val_line.get_ydata()) == pytest.approx(log[log.split == "val"].cap_loss.tolist())


def test_training_log_figure_has_caption_contrastive_total_loss_and_learning_rate_panels(smoke_run):
    from rscc.plots import plot_training_log

    log = pd.read_csv(smoke_run[0] / "log.csv")
    fig = plot_training_log(smoke_run[0] / "log.csv")
    assert [ax.get_title() for ax in fig.axes] == [
        "caption loss $L_{cap}$", "contrastive loss $L_{con}$", r"total loss $L_{cap} + \lambda L_{con}$",
        "learning rate"]
    contrastive_train = fig.axes[1].get_lines()[0]
    assert list(contrastive_train.get_ydata()) == pytest.approx(log[log.split == "train"].con_loss.tolist())
    assert list(fig.axes[3].get_lines()[0].get_ydata()) == pytest.approx(log[log.split == "train"].lr.tolist())


def test_caption_examples_take_the_first_changed_then_the_first_unchanged_pairs_of_the_split(smoke_run):
    from rscc.data.levircc import load_pairs
    from rscc.experiments.readouts import caption_examples

    run_dir, root = smoke_run
    val = load_pairs(root, ["val"])
    table = caption_examples(run_dir, split="val", changed=2, unchanged=1)
    expected = [p for p in val if p.changed][:2] + [p for p in val if not p.changed][:1]
    assert table.pair.tolist() == [p.filename for p in expected]
    assert table.changed.tolist() == [True, True, False]
    assert table.reference.tolist() == [p.raws[0].strip() for p in expected]

