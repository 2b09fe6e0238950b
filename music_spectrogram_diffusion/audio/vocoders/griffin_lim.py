"""Griffin-Lim spectrogram inversion for our log-mel features: a training-free fallback vocoder.

Two steps, both jnp and jit-able:

1. log-mel -> linear magnitude. The mel features are |STFT| @ M with M the [513, 128] TF/HTK mel
   matrix (spec §2.2). We start from the pseudo-inverse solution clipped at 0 and refine it with
   a fixed number of projected-gradient steps on ||S M - mel||^2 subject to S >= 0 (a cheap
   non-negative least squares, like librosa.feature.inverse.mel_to_stft's NNLS).
2. Fast Griffin-Lim (Perraudin et al., 2013; momentum 0.99 as librosa) with exactly the
   front end's STFT: periodic Hann 640, FFT 1024, hop 320, frames not centred, end padding.

The phase starts at zero, so the output is a deterministic function of the input; the number
of iterations is fixed so the whole function compiles to one XLA loop.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


@functools.lru_cache(maxsize=8)
def _mel_inverse_tables(features: FeatureConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """(M [513, mels], pinv(M) [mels, 513], 1 / Lipschitz constant of the NNLS gradient)."""
    mel_matrix = np.asarray(spectrograms.mel_weight_matrix(features), np.float64)
    pseudo_inverse = np.linalg.pinv(mel_matrix, rcond=1e-6)
    lipschitz = float(np.linalg.norm(mel_matrix, ord=2) ** 2)
    return mel_matrix.astype(np.float32), pseudo_inverse.astype(np.float32), 1.0 / lipschitz


def mel_to_linear_magnitude(
    log_mel: jnp.ndarray,  # [..., frames, mels] unscaled log-mel
    features: FeatureConfig = DEFAULT_FEATURES,
    *,
    num_nnls_steps: int = 50,
) -> jnp.ndarray:  # [..., frames, fft_length // 2 + 1], >= 0
    """Non-negative linear magnitude S with S @ M close to exp(log_mel)."""
    mel_matrix, pseudo_inverse, step_size = _mel_inverse_tables(features)
    mel = jnp.exp(log_mel.astype(jnp.float32))
    magnitude = jnp.maximum(mel @ pseudo_inverse, 0.0)

    def projected_gradient_step(_, s):
        gradient = (s @ mel_matrix - mel) @ mel_matrix.T
        return jnp.maximum(s - step_size * gradient, 0.0)

    return jax.lax.fori_loop(0, num_nnls_steps, projected_gradient_step, magnitude)


def istft(
    spectrum: jnp.ndarray,  # [..., frames, fft_length // 2 + 1] complex
    features: FeatureConfig = DEFAULT_FEATURES,
) -> jnp.ndarray:  # [..., frames * hop_length]
    """Least-squares inverse of stft_distance.stft with the front end's settings.

    Weighted overlap-add divided by the summed squared window (Griffin & Lim, 1984). Samples
    whose summed squared window is below 1e-3 of its peak (the first ~36, covered only by the
    rising edge of the first frame's periodic Hann) are left at 0 instead of being divided by ~0.
    This is the package's one inverse STFT: Griffin-Lim and the Vocos generator both use it.
    """
    hop, window_length = features.hop_length, features.window_length
    num_frames = spectrum.shape[-2]
    window = spectrograms.periodic_hann_window(window_length).astype(np.float32)
    frames = jnp.fft.irfft(spectrum, n=features.fft_length, axis=-1)[..., :window_length] * window
    signal = _overlap_add(frames, hop)
    envelope = np.asarray(_overlap_add(np.broadcast_to(window**2, (num_frames, window_length)), hop, xp=np))
    safe = envelope > 1e-3 * envelope.max()
    signal = jnp.where(safe, signal / np.where(safe, envelope, 1.0), 0.0)
    return signal[..., : num_frames * hop]


def _overlap_add(frames, hop: int, xp=jnp):  # [..., frames, window] -> [..., (frames + k - 1) * hop]
    """Sums frames placed ``hop`` apart, with k = ceil(window / hop) shifted adds.

    Frames are split into k hop-sized blocks and block j of frame i lands in output block i + j,
    so overlap-add is k pads and a sum: no scatter, which XLA runs slowly on CPU and whose
    gradient (a gather) the Vocos generator needs at every training step.
    """
    num_frames, window_length = frames.shape[-2:]
    k = -(-window_length // hop)
    lead = [(0, 0)] * (frames.ndim - 2)
    blocks = xp.pad(frames, lead + [(0, 0), (0, k * hop - window_length)])
    blocks = blocks.reshape(frames.shape[:-1] + (k, hop))  # [..., frames, k, hop]
    total = sum(
        xp.pad(blocks[..., j, :], lead + [(j, k - 1 - j), (0, 0)]) for j in range(k)
    )  # [..., frames + k - 1, hop]
    return total.reshape(frames.shape[:-2] + ((num_frames + k - 1) * hop,))


def _fast_griffin_lim_step(
    magnitude: jnp.ndarray, angles: jnp.ndarray, previous: jnp.ndarray, features: FeatureConfig, momentum: float
) -> tuple[jnp.ndarray, jnp.ndarray]:  # (new unit-modulus angles, this projection)
    """One fast Griffin-Lim iteration (Perraudin et al., 2013; momentum 0.99 as librosa).

    Projects magnitude * angles onto the consistent spectrograms (the STFT of its inverse STFT),
    extrapolates past the previous projection by the momentum term and keeps only the phase.
    """
    rebuilt = stft_distance.stft(
        istft(magnitude * angles, features),
        fft_length=features.fft_length,
        hop_length=features.hop_length,
        window_length=features.window_length,
    )
    accelerated = rebuilt - (momentum / (1.0 + momentum)) * previous
    return accelerated / (jnp.abs(accelerated) + 1e-16), rebuilt


def consistency_iterations(
    spectrum: jnp.ndarray,  # [..., frames, fft_length // 2 + 1] complex
    features: FeatureConfig = DEFAULT_FEATURES,
    *,
    num_iterations: int,
    momentum: float = 0.99,
) -> jnp.ndarray:  # [..., frames, fft_length // 2 + 1] complex64, same magnitudes
    """Fast Griffin-Lim that keeps |spectrum| and starts from the spectrum's own phase.

    Unrolled in Python rather than a fori_loop so that reverse-mode gradients flow through it:
    the Vocos generator's optional consistency stage (vocos.VocosConfig.num_consistency_iterations)
    trains through these iterations, in the spirit of Deep Griffin-Lim (Masuyama et al., 2019).
    """
    spectrum = spectrum.astype(jnp.complex64)
    magnitude = jnp.abs(spectrum)
    angles, previous = spectrum / (magnitude + 1e-16), jnp.zeros_like(spectrum)
    for _ in range(num_iterations):
        angles, previous = _fast_griffin_lim_step(magnitude, angles, previous, features, momentum)
    return magnitude * angles


def griffin_lim(
    magnitude: jnp.ndarray,  # [..., frames, fft_length // 2 + 1]
    features: FeatureConfig = DEFAULT_FEATURES,
    *,
    num_iterations: int = 64,
    momentum: float = 0.99,
) -> jnp.ndarray:  # [..., frames * hop_length]
    """Fast Griffin-Lim from a zero initial phase; deterministic and jit-able (one XLA loop)."""
    magnitude = magnitude.astype(jnp.float32)
    angles, _ = jax.lax.fori_loop(
        0,
        num_iterations,
        lambda _, carry: _fast_griffin_lim_step(magnitude, *carry, features, momentum),
        (jnp.ones(magnitude.shape, jnp.complex64), jnp.zeros(magnitude.shape, jnp.complex64)),
    )
    return istft(magnitude * angles, features)


@dataclasses.dataclass(frozen=True)
class GriffinLimVocoder:
    """The Vocoder interface (base.py) around mel pseudo-inversion + fast Griffin-Lim."""

    features: FeatureConfig = DEFAULT_FEATURES
    num_iterations: int = 64
    num_nnls_steps: int = 50
    momentum: float = 0.99

    def __post_init__(self):
        if self.num_iterations < 0 or self.num_nnls_steps < 0:
            raise ValueError(
                f"num_iterations ({self.num_iterations}) and num_nnls_steps "
                f"({self.num_nnls_steps}) must be >= 0"
            )
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def name(self) -> str:
        return "griffin-lim"

    def vocode(self, log_mel: jnp.ndarray) -> jnp.ndarray:
        """[batch, frames, mels] unscaled log-mel -> [batch, frames * hop] float32 audio."""
        return _vocode_jit(jnp.asarray(log_mel, jnp.float32), self)


@functools.partial(jax.jit, static_argnums=1)
def _vocode_jit(log_mel: jnp.ndarray, vocoder: GriffinLimVocoder) -> jnp.ndarray:
    magnitude = mel_to_linear_magnitude(log_mel, vocoder.features, num_nnls_steps=vocoder.num_nnls_steps)
    return griffin_lim(
        magnitude, vocoder.features, num_iterations=vocoder.num_iterations, momentum=vocoder.momentum
    )
