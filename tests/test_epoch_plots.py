"""``--plot_every_epochs``: which epochs ESPnet's trainer draws its images after (aqc.espnet.epoch_plots)."""
from __future__ import annotations

import argparse

import pytest
from espnet2.train.reporter import Reporter

from aqc.espnet import epoch_plots


@pytest.fixture
def drawn(monkeypatch):
    """Reporter.matplotlib_plot records the epoch it draws at instead of drawing."""
    epochs = []
    monkeypatch.setattr(Reporter, "matplotlib_plot", lambda self, output_dir: epochs.append(self.get_epoch()))
    return epochs


def _train(reporter: Reporter, epochs, out):
    """What Trainer.run does with the reporter: stats of each epoch, then the plot call."""
    for epoch in epochs:
        reporter.set_epoch(epoch)
        with reporter.observe("train") as sub:
            sub.register({"loss": 1.0 / epoch})
        reporter.matplotlib_plot(out / "images")


def test_every_nth_epoch_and_the_last(drawn, tmp_path):
    with epoch_plots.plotting_every(3):
        _train(Reporter(), range(1, 8), tmp_path)
    assert drawn == [3, 6, 7]


def test_a_run_ending_on_a_plotted_epoch_is_not_drawn_twice(drawn, tmp_path):
    with epoch_plots.plotting_every(2):
        _train(Reporter(), range(1, 5), tmp_path)
    assert drawn == [2, 4]


def test_an_early_stop_is_drawn_when_training_ends(drawn, tmp_path):
    with epoch_plots.plotting_every(10):
        _train(Reporter(), range(1, 5), tmp_path)  # patience stopped it at epoch 4 of max_epoch 40
    assert drawn == [4]


def test_a_resumed_run_counts_epochs_from_the_start(drawn, tmp_path):
    reporter = Reporter()
    _train(reporter, range(1, 3), tmp_path)  # the first process, at every epoch; it stopped after epoch 2
    drawn.clear()
    with epoch_plots.plotting_every(3):  # --resume true: ESPnet's loop goes on at epoch 3
        _train(reporter, range(3, 6), tmp_path)
    assert drawn == [3, 5]


def test_an_error_draws_nothing_more_and_restores_espnet(drawn, tmp_path):
    patched_before = Reporter.matplotlib_plot
    with pytest.raises(RuntimeError, match="out of memory"):
        with epoch_plots.plotting_every(3):
            _train(Reporter(), range(1, 5), tmp_path)
            raise RuntimeError("out of memory")
    assert drawn == [3]
    assert Reporter.matplotlib_plot is patched_before


def test_every_epoch_leaves_espnet_alone(drawn, tmp_path):
    with epoch_plots.plotting_every(1):
        _train(Reporter(), range(1, 4), tmp_path)
    assert drawn == [1, 2, 3]


def test_real_images_show_every_epoch(tmp_path):
    """With matplotlib: nothing drawn before the 5th epoch, then the catch-up draws epochs 1-3."""
    reporter = Reporter()
    with epoch_plots.plotting_every(5):
        _train(reporter, range(1, 4), tmp_path)
        assert not (tmp_path / "images").exists()
    image = tmp_path / "images" / "loss.png"
    assert image.is_file() and image.stat().st_size > 1000


@pytest.mark.parametrize("text", ["0", "-2"])
def test_the_option_refuses_less_than_one_epoch(text):
    parser = argparse.ArgumentParser()
    epoch_plots.add_argument(parser.add_argument_group("trainer"))
    assert parser.parse_args(["--plot_every_epochs", "4"]).plot_every_epochs == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["--plot_every_epochs", text])
    with pytest.raises(ValueError, match="1 or more"):
        with epoch_plots.plotting_every(int(text)):
            pass


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "3"])
def test_a_config_value_that_is_not_a_whole_number_of_epochs_stops_before_training(value, tmp_path):
    """From a config file the value skips argparse's check: the preflight of both trainings names the file."""
    from aqc.cli import AQCUserError
    from aqc.espnet.preflight import check_plot_every_epochs

    config = tmp_path / "pretrain.yaml"
    with pytest.raises(AQCUserError, match=rf"^{config}: --plot_every_epochs {value!r}: expected a whole number"):
        check_plot_every_epochs(argparse.Namespace(config=str(config), plot_every_epochs=value))
    check_plot_every_epochs(argparse.Namespace(config=str(config), plot_every_epochs=6))
