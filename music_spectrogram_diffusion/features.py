"""The shared data representation: audio rate, frame rate, segment lengths, log-mel range.

One frozen dataclass holds the numbers that the tokenizer, the spectrogram front end, the
windowing code, the networks and the vocoders must agree on (spec §0, §2.2). Everything
takes a ``FeatureConfig`` (or uses ``DEFAULT_FEATURES``) instead of repeating literals.
"""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Numbers of the original's MelGAN/SoundStream codec and its MT3-style tasks."""

    sample_rate: int = 16000
    hop_length: int = 320  # samples per spectrogram frame: 50 frames per second
    window_length: int = 640  # periodic Hann window
    fft_length: int = 1024
    num_mels: int = 128
    lower_edge_hertz: float = 0.0
    upper_edge_hertz: float = 8000.0
    log_floor: float = 1e-5  # log(clip(mel, 1e-5, 1e8))
    log_ceiling: float = 1e8
    max_log_mel: float = 4.0  # top of the [min_log_mel, 4.0] -> [-1, 1] scaling
    segment_frames: int = 256  # 5.12 s per target segment
    context_frames: int = 256  # previous segment seen by the context encoder
    lookahead_frames: int = 16  # extra STFT frames so a chunk's last frames see real audio
    max_note_tokens: int = 2048  # 2047 events + EOS, padded with 0

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def segment_seconds(self) -> float:
        return self.segment_frames / self.frames_per_second

    @property
    def min_log_mel(self) -> float:
        """ln(1e-5) = -11.5129: the log-mel of silence, which scales to -1."""
        return math.log(self.log_floor)


DEFAULT_FEATURES = FeatureConfig()
