"""Smoke run of scripts/benchmark_sampling.py --quick on the tiny network."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from music_spectrogram_diffusion.models import sampling_benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_benchmark_tokens_are_the_baseline_segment():
    tokens = sampling_benchmark.benchmark_note_tokens()
    assert tokens.shape == (1, 2048) and tokens.dtype == np.int32
    real = int(np.count_nonzero(tokens))
    # 60 notes (20 triads) in 5 s: onsets, offsets, shifts and a program/velocity preamble.
    assert 150 < real < 256
    assert tokens[0, real - 1] == 1 and not tokens[0, real:].any()  # EOS, then padding


@pytest.mark.slow
def test_quick_benchmark_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "benchmark_sampling.py"),
         "--config", "tiny", "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    for key in ("params_trainable", "encoder_seconds", "decoder_step_seconds", "decoder_step_flops", "rtf"):
        assert key in result
    assert result["params_trainable"] > 0 and result["decoder_step_flops"] > 0
    # The guided step is one batched call of 2 rows: about twice the conditional FLOPs.
    steps = result["decoder_steps"]
    assert 1.5 < steps["guided"]["flops"] / steps["conditional"]["flops"] < 2.5
    assert set(result["rtf"]) == {"ddpm_1000_w2", "dpm++_20_w2", "dpm++_50_w2"}
    assert "decoder step" in proc.stdout
