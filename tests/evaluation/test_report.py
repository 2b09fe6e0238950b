"""The evaluation's pictures are labelled: axes, units, titles and a colour scale."""

import numpy as np

from music_spectrogram_diffusion.evaluation import report
from music_spectrogram_diffusion.inference import files


def test_example_figure_is_labelled():
    reference = np.full((300, 128), -5.0, np.float32)
    predicted = np.full((280, 128), -3.0, np.float32)
    figure = report.example_figure(reference, predicted, song_id="bach_bwv66.6",
                                   row_label="diffusion ctx @ 200")
    images = [ax for ax in figure.axes if ax.images]
    assert [ax.get_title() for ax in images] == ["ground truth (real audio)",
                                                 "diffusion ctx @ 200"]
    assert [ax.get_ylabel() for ax in images] == ["mel bin", "mel bin"]
    assert images[-1].get_xlabel() == "time (s)"
    # Both panels cover the common 280 frames: 5.6 s at 50 frames per second.
    assert [ax.images[0].get_extent()[1] for ax in images] == [5.6, 5.6]
    colorbars = [ax for ax in figure.axes if not ax.images]
    assert len(colorbars) == 2 and all(ax.get_ylabel() == "ln mel" for ax in colorbars)
    assert figure.get_suptitle() == "bach_bwv66.6: log-mel spectrograms"
    assert files.figure_png(figure)[:8] == b"\x89PNG\r\n\x1a\n"
