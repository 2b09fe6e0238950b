"""The training benchmark: real-work FLOPs and one timed setting of the tiny model."""

import numpy as np

from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.testing import fake_models
from music_spectrogram_diffusion.training import benchmark

MODEL = DiffusionModel(network_config=T5Config.tiny(), with_context=True)


def test_real_work_is_the_mean_step_cost_at_each_examples_own_length():
    def cost(length):  # optimizer + 4 examples x (linear + attention)
        return 1e6 + 4 * (300.0 * length + 2.0 * length ** 2)

    tokens = np.zeros((4, 2048), np.int32)
    for row, n in enumerate((10, 100, 0, 1000)):
        tokens[row, :n] = 5
    counter = benchmark.RealWorkCounter(cost)
    np.testing.assert_allclose(counter(tokens), np.mean([cost(n) for n in (10, 100, 0, 1000)]),
                               rtol=1e-9)


def test_the_steps_cost_is_quadratic_in_the_token_length():
    cost = benchmark.lowered_step_cost(MODEL, fake_models.FakeBatchSource(), batch_size=2)
    counter = benchmark.RealWorkCounter(cost)  # fitted at 64, 128, 256 tokens
    for length in (32, 512):
        np.testing.assert_allclose(np.polyval(counter.coefficients, length), cost(length),
                                   rtol=1e-4)


def test_benchmark_reports_padded_and_real_work_against_the_probe():
    source = fake_models.FakeBatchSource()
    counter = benchmark.make_real_work_counter(MODEL, source, batch_size=2)
    result = benchmark.benchmark_training(MODEL, source, name="tiny", batch_size=2, steps=1,
                                          real_work=counter)
    assert result.note_tokens == (256,) and result.compilations == 1  # 5-39 real tokens
    assert 0 < result.real_flops_per_step < result.flops_per_step
    assert result.seconds_per_step > 0 and result.probe_flops_per_second > 0
    np.testing.assert_allclose(result.real_fraction_of_probe / result.fraction_of_probe,
                               result.real_flops_per_step / result.flops_per_step, rtol=1e-6)
    table = benchmark.format_table([dict(result.__dict__, speedup=1.0)])
    assert table.splitlines()[2].startswith("| tiny | 256 |")
