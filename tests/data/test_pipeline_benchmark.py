"""The input pipeline benchmark's measurements run and report sane values (tiny settings)."""

from music_spectrogram_diffusion.data import pipeline_benchmark


def test_loader_and_data_startup_measurements(data_dir):
    loader = pipeline_benchmark.measure_loader(data_dir, num_workers=0, batch_size=2, steps=2,
                                               repeats=2)
    assert loader["examples_per_second"] >= loader["examples_per_second_median"] > 0
    assert loader["examples_per_worker_cpu_second"] > 0
    startup = pipeline_benchmark.measure_data_startup(data_dir)  # a fresh process
    assert 20 < startup["peak_rss_mb"] < 4000
    assert startup["process_seconds"] > startup["open_seconds"] > 0
    run = {"data": startup, "training": {"first_step_seconds": 1.0, "peak_rss_mb": 900.0}}
    table = pipeline_benchmark.format_table(
        {"loader": [loader], "runs": {"this/small": run, "this/large": run},
         "data_wait": [{"size": "tiny", "steps": 60, "batch_size": 8, "steps_per_second": 2.5,
                        "data_wait_fraction": 0.012}]})
    assert "| in process |" in table and "large - small = +0 MB" in table
    assert "| tiny context diffusion | 60 | 8 | 2.50 | 1.2 |" in table
