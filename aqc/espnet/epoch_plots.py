"""How often ESPnet's trainer draws its matplotlib images (``<output_dir>/images/*.png``).

ESPnet redraws every statistic's curve after every epoch (``--use_matplotlib true``, its default). That
costs 2-5 s on 2 CPU cores however short the epoch is: in the tiny recipes (epochs of 50-250 updates)
it was 10-15 % of a training stage, 24 plots in a pre-training and 40 in a fine-tuning.
``--plot_every_epochs N`` draws them after every N-th epoch instead, and once more when training ends
(the last epoch, or an early stop), so the images of a finished run always show every epoch. The
statistics, the log, tensorboard and the checkpoints are unchanged, so no number depends on N. A run
that stops with an error keeps the images of its last plotted epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path
from typing import Iterator, Optional

from espnet2.train.reporter import Reporter


def epochs_between_plots(text: str) -> int:
    value = int(text)
    check(value)
    return value


def add_argument(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--plot_every_epochs", type=epochs_between_plots, default=1,
                       help="With --use_matplotlib true: draw images/*.png after every N-th epoch and when "
                            "training ends, instead of after every epoch (each drawing takes seconds; "
                            "nothing else changes)")


def check(value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--plot_every_epochs {value!r}: expected a whole number of epochs, 1 or more")


class _Plots:
    """Stands in for ``Reporter.matplotlib_plot`` during one run; remembers what it skipped."""

    def __init__(self, every: int, original):
        self.every = every
        self.original = original
        self.reporter: Optional[Reporter] = None
        self.output_dir: Optional[Path] = None
        self.plotted_epoch = 0

    def __call__(self, reporter: Reporter, output_dir) -> None:
        self.reporter, self.output_dir = reporter, Path(output_dir)
        if reporter.get_epoch() % self.every == 0:
            self.draw()

    def draw(self) -> None:
        self.original(self.reporter, self.output_dir)
        self.plotted_epoch = self.reporter.get_epoch()

    def catch_up(self) -> None:
        if self.reporter is not None and self.plotted_epoch != self.reporter.get_epoch():
            logging.info("Plotting the statistics of epochs 1-%d to %s", self.reporter.get_epoch(), self.output_dir)
            self.draw()


@contextlib.contextmanager
def plotting_every(epochs: int) -> Iterator[None]:
    """ESPnet's ``Trainer.run`` inside this block draws its images every ``epochs`` epochs and, when the
    block ends without an error, after the last epoch it ran."""
    check(epochs)
    if epochs == 1:
        yield
        return
    original = Reporter.matplotlib_plot
    plots = _Plots(epochs, original)

    def matplotlib_plot(self, output_dir):
        plots(self, output_dir)

    Reporter.matplotlib_plot = matplotlib_plot
    try:
        yield
    finally:
        Reporter.matplotlib_plot = original
    plots.catch_up()
