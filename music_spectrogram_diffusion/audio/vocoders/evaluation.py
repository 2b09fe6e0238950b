"""How well does a vocoder invert GROUND-TRUTH spectrograms? Mel L1 and MR-STFT on real audio.

For every piece of a dataset split, the real audio's log-mel is vocoded and the result is
compared with the real audio:

  * mel L1: mean |log-mel(vocoded) - log-mel(real)| over frames and bins (natural-log units);
  * MR-STFT: audio/stft_distance.multi_resolution_stft_distance(vocoded, real), the same
    function the vocoder trains with and the evaluation metrics report.

Pieces are vocoded in consecutive 256-frame (5.12 s) segments, like the diffusion model's
outputs, so every vocoder compiles once; the last segment is padded with silence and trimmed.
Numbers are duration-weighted means over pieces; per-piece numbers are kept in the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.audio.vocoders import base
from music_spectrogram_diffusion.audio.vocoders import data
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def vocode_in_segments(
    vocoder: base.Vocoder,
    log_mel: np.ndarray,  # [frames, mels] unscaled
    segment_frames: int,
) -> np.ndarray:  # [frames * hop]
    """Vocodes consecutive fixed-length segments (one compile) and concatenates them."""
    frames = log_mel.shape[0]
    num_segments = -(-frames // segment_frames)
    padded = np.full((num_segments * segment_frames, log_mel.shape[1]), vocoder.features.min_log_mel, np.float32)
    padded[:frames] = log_mel
    pieces = [
        np.asarray(vocoder.vocode(padded[None, i * segment_frames : (i + 1) * segment_frames]))[0]
        for i in range(num_segments)
    ]
    return np.concatenate(pieces)[: frames * vocoder.features.hop_length]


def score_vocoded_audio(
    vocoded: np.ndarray,  # [num_samples]
    real: np.ndarray,  # [num_samples]
    features: FeatureConfig = DEFAULT_FEATURES,
) -> dict[str, float]:
    """{'mel_l1', 'mr_stft'} of vocoded against real audio of the same length."""
    real_log_mel = spectrograms.compute_log_mel(real, features)
    vocoded_log_mel = spectrograms.compute_log_mel(vocoded, features)
    return {
        "mel_l1": float(jnp.mean(jnp.abs(vocoded_log_mel - real_log_mel))),
        "mr_stft": float(stft_distance.multi_resolution_stft_distance(jnp.asarray(vocoded), jnp.asarray(real))),
    }


def evaluate_vocoders(
    data_dir: str,
    vocoder_specs: Sequence[str],
    *,
    split: str = "test",
    max_pieces: int | None = None,
    features: FeatureConfig = DEFAULT_FEATURES,
    print_fn: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Scores each vocoder of ``vocoder_specs`` (load_vocoder specs) on a split's real audio.

    Returns {"split", "num_pieces", "seconds", "vocoders": {spec: {"name", "mel_l1", "mr_stft",
    "vocode_seconds", "pieces": {id: {...}}}}}.
    """
    audio = {
        piece_id: samples[: (len(samples) // features.hop_length) * features.hop_length]
        for piece_id, samples in data.load_split_audio(data_dir, split, features, max_pieces=max_pieces).items()
    }
    total_seconds = sum(len(a) for a in audio.values()) / features.sample_rate
    results: dict[str, Any] = {"split": split, "num_pieces": len(audio), "seconds": total_seconds, "vocoders": {}}
    for spec in vocoder_specs:
        vocoder = base.load_vocoder(spec, features=features)
        per_piece, start = {}, time.perf_counter()
        for piece_id, real in audio.items():
            log_mel = spectrograms.compute_log_mel_numpy(real, features)
            vocoded = vocode_in_segments(vocoder, log_mel, features.segment_frames)
            per_piece[piece_id] = dict(score_vocoded_audio(vocoded, real, features), seconds=len(real) / features.sample_rate)
        weights = np.array([p["seconds"] for p in per_piece.values()])
        summary = {
            metric: float(np.average([p[metric] for p in per_piece.values()], weights=weights))
            for metric in ("mel_l1", "mr_stft")
        }
        results["vocoders"][spec] = dict(
            summary, name=vocoder.name, vocode_seconds=time.perf_counter() - start, pieces=per_piece
        )
        print_fn(f"{vocoder.name} ({spec}): mel_l1 {summary['mel_l1']:.4f} mr_stft {summary['mr_stft']:.4f}")
    return results


def format_table(results: dict[str, Any]) -> str:
    """A plain-text table of the summary numbers, lowest (best) first by mel L1."""
    header = f"{'vocoder':<48} {'mel L1':>8} {'MR-STFT':>8} {'time s':>8}"
    rows = sorted(results["vocoders"].items(), key=lambda item: item[1]["mel_l1"])
    lines = [
        f"split={results['split']} pieces={results['num_pieces']} audio={results['seconds']:.1f} s",
        header,
        "-" * len(header),
    ]
    for spec, r in rows:
        label = f"{r['name']} ({spec})" if spec != r["name"] else spec
        lines.append(f"{label[:48]:<48} {r['mel_l1']:>8.4f} {r['mr_stft']:>8.4f} {r['vocode_seconds']:>8.1f}")
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Writes JSON atomically (``file_io.write_json_atomic``)."""
    file_io.write_json_atomic(path, payload, sort_keys=True)
