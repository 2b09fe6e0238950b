"""scripts/benchmark_samplers.py's library: variants, the table and plot, and a tiny real run."""

import dataclasses
import os
import sys

import pytest

from music_spectrogram_diffusion.evaluation import runner, sampler_benchmark as bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "inference"))
import trained_checkpoints  # noqa: E402


def test_parse_variant():
    config = bench.parse_variant("dpm++:uniform_lambda", num_steps=8, guidance_weight=1.5)
    assert (config.name, config.time_grid, config.lower_order_final) == ("dpm++", "uniform_lambda", True)
    assert (config.num_steps, config.guidance_weight) == (8, 1.5)
    old = bench.parse_variant("dpm++:uniform_t:no-lof")
    assert not old.lower_order_final and old.label == "dpm++ no-lof 20"
    with pytest.raises(ValueError, match="valid samplers: ddpm"):
        bench.parse_variant("euler")
    with pytest.raises(ValueError, match="valid time grids"):
        bench.parse_variant("ddim:karras")
    with pytest.raises(ValueError, match="not to 'ddim'"):
        bench.parse_variant("ddim:no-lof")
    with pytest.raises(ValueError, match="sampler\\[:time_grid\\]\\[:no-lof\\]"):
        bench.parse_variant("dpm++:uniform_t:quadratic_t")


def test_config_validation_and_sampler_list():
    config = bench.SamplerBenchmarkConfig(variants=["ddim", "unipc:quadratic_t"], steps=[4, 8])
    assert [s.label for s in config.samplers()] == [
        "ddim 4", "ddim 8", "unipc quadratic_t 4", "unipc quadratic_t 8"]
    assert config.reference.name == "ddpm" and config.reference.num_steps == 1000
    with pytest.raises(ValueError, match="floor_seed must differ"):
        bench.SamplerBenchmarkConfig(floor_seed=0)
    with pytest.raises(ValueError, match="step counts >= 1"):
        bench.SamplerBenchmarkConfig(steps=[0])


def _row(label, name, steps, mel_l1, musicnn, vs_ddpm, grid="uniform_t", lof=True):
    metrics = {"mel_l1": mel_l1, "mr_stft": 2.0, "musicnn_distance": musicnn,
               "mel_l1_vs_ddpm": vs_ddpm, "mr_stft_vs_ddpm": 0.5, "musicnn_distance_vs_ddpm": 1.0,
               "seconds_per_segment": 0.1}
    return {"label": label, "kind": "sampler", "metrics": metrics,
            "sampler": {"name": name, "num_steps": steps, "time_grid": grid,
                        "lower_order_final": lof}}


def _result():
    reference = {"label": "DDPM 1000 (reference)", "kind": "reference", "seed": 0,
                 "metrics": {"mel_l1": 1.0, "mr_stft": 2.0, "musicnn_distance": 10.0,
                             "seconds_per_segment": 5.0}}
    floor = {"label": "DDPM 1000, seed 1", "kind": "floor", "seed": 1,
             "metrics": {"mel_l1": 0.99, "mr_stft": 2.0, "musicnn_distance": 10.1,
                         "mel_l1_vs_ddpm": 0.03, "seconds_per_segment": 5.0}}
    rows = [_row("ddim 8", "ddim", 8, 0.98, 11.0, 0.2), _row("ddim 20", "ddim", 20, 1.05, 10.8, 0.15),
            _row("dpm++ uniform_lambda 8", "dpm++", 8, 1.04, 10.2, 0.1, "uniform_lambda"),
            _row("dpm++ uniform_lambda 20", "dpm++", 20, 1.01, 10.1, 0.05, "uniform_lambda"),
            _row("dpm++ no-lof 20", "dpm++", 20, 1.3, 12.0, 0.9, lof=False)]
    config = dataclasses.asdict(bench.SamplerBenchmarkConfig(variants=["ddim"], steps=[8, 20]))
    return {"reference": reference, "floor": floor, "rows": rows, "config": config,
            "songs": ["a", "b"], "checkpoint": "/ckpt/checkpoint_200", "machine": "x86_64, 2 CPUs"}


def test_table_summary_and_plot(tmp_path):
    result = _result()
    # Closest to DDPM, not lowest mel L1 against the real audio (ddim 8 has that).
    best = bench.best_rows(result)
    assert best[8]["label"] == "dpm++ uniform_lambda 8" and best[20]["label"] == "dpm++ uniform_lambda 20"
    assert bench.best_rows(result, "mel_l1")[8]["label"] == "ddim 8"
    assert bench.summary_lines(result) == [
        "closest to DDPM at 8 steps: dpm++ uniform_lambda 8: mel L1 vs DDPM 0.100 (floor 0.030); "
        "vs real: mel L1 1.040 (+4.0%), musicnn 10.200 (+2.0%)",
        "closest to DDPM at 20 steps: dpm++ uniform_lambda 20: mel L1 vs DDPM 0.050 (floor 0.030); "
        "vs real: mel L1 1.010 (+1.0%), musicnn 10.100 (+1.0%)",
        "DDPM 1000: mel L1 1.000 (seed 1: 0.990); every variant with a first-order final step: "
        "0.980 .. 1.050",
    ]
    lines = bench.format_table(result).splitlines()
    assert lines[0] == ("| Row | mel L1 | MR-STFT | musicnn dist. | mel L1 vs DDPM | MR-STFT vs DDPM "
                        "| musicnn dist. vs DDPM | s / segment |")
    assert lines[2] == "| DDPM 1000 (reference) | 1.000 | 2.000 | 10.000 | - | - | - | 5.00 |"
    assert lines[3] == "| DDPM 1000, seed 1 | 0.990 | 2.000 | 10.100 | 0.030 | - | - | 5.00 |"
    assert lines[4] == "| ddim 8 | 0.980 | 2.000 | 11.000 | 0.200 | 0.500 | 1.000 | 0.10 |"
    path = bench.plot_quality_vs_steps(result, str(tmp_path / "plot.png"))
    assert os.path.getsize(path) > 10_000


@pytest.mark.slow
def test_benchmark_runs_on_a_trained_checkpoint_and_resumes(tmp_path_factory, tmp_path, monkeypatch):
    model_dir = trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_context")
    data_dir = trained_checkpoints.shared_dataset(tmp_path_factory)
    songs = runner.list_songs(data_dir=data_dir, split="test")
    config = bench.SamplerBenchmarkConfig(variants=["ddim", "dpm++:uniform_lambda"], steps=[2],
                                          reference_steps=3, max_songs=1, max_seconds=5.12,
                                          embedders=("logmel",))
    checkpoint = os.path.join(model_dir, f"checkpoint_{trained_checkpoints.TRAIN_STEPS}")
    result = bench.run_sampler_benchmark(checkpoint, songs, out_dir=str(tmp_path), config=config)
    assert [row["label"] for row in result["rows"]] == ["ddim 2", "dpm++ uniform_lambda 2"]
    assert result["floor"]["seed"] == 1 and result["reference"]["seed"] == 0
    for row in result["rows"] + [result["floor"]]:
        metrics = row["metrics"]
        assert metrics["mel_l1"] > 0 and metrics["mel_l1_vs_ddpm"] >= 0
        assert metrics["logmel_distance_vs_ddpm"] >= 0 and metrics["seconds_per_segment"] > 0
    assert "mel_l1_vs_ddpm" not in result["reference"]["metrics"]

    # Rerun: every row and the reference audio are on disk, so nothing is synthesized again.
    def fail(*args, **kwargs):
        raise AssertionError("a finished row was recomputed")

    monkeypatch.setattr(runner, "synthesize_references", fail)
    again = bench.run_sampler_benchmark(checkpoint, songs, out_dir=str(tmp_path), config=config)
    assert [r["metrics"] for r in again["rows"]] == [r["metrics"] for r in result["rows"]]
