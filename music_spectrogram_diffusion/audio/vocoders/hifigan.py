"""HiFi-GAN (Kong et al., NeurIPS 2020) generator and discriminators in Flax linen.

The generator maps our unscaled 128-bin log-mel [batch, frames, 128] to 16 kHz audio
[batch, frames * 320]: a 1-D conv at frame rate, transposed-conv upsampling whose factors
multiply to the hop (320), each followed by a multi-receptive-field fusion (MRF) block (the mean
of residual blocks with different kernels and dilations), then a conv to one channel and tanh.

Differences from the paper, on purpose:
  * no weight normalisation: AdamW on plain kernels trains stably at these sizes and keeps the
    parameter tree a plain nested dict that orbax saves and restores without special handling;
  * the input log-mel is first scaled to [-1, 1] with the codec's own scaling (spec §2.2), so
    silence is -1 whatever the log floor, and the first conv sees well-conditioned inputs;
  * the discriminators take a channel width multiplier so a CPU-sized model is one config away.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

LRELU_SLOPE = 0.1  # HiFi-GAN's leaky-ReLU slope, everywhere.


@dataclasses.dataclass(frozen=True)
class GeneratorConfig:
    """Sizes of the HiFi-GAN generator. ``prod(upsample_rates)`` must equal the hop length."""

    upsample_rates: tuple[int, ...] = (8, 5, 4, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 10, 8, 4)
    initial_channels: int = 256
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

    def __post_init__(self):
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError(
                f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                f"{self.upsample_kernel_sizes} must have the same length"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilations):
            raise ValueError(
                f"resblock_kernel_sizes {self.resblock_kernel_sizes} and resblock_dilations "
                f"{self.resblock_dilations} must have the same length"
            )
        if self.initial_channels % (2 ** len(self.upsample_rates)):
            raise ValueError(
                f"initial_channels {self.initial_channels} must be divisible by "
                f"2**{len(self.upsample_rates)} (channels halve at every upsampling)"
            )
        # Tuples from gin arrive as tuples, from JSON as lists: normalise to hashable tuples.
        object.__setattr__(self, "upsample_rates", tuple(self.upsample_rates))
        object.__setattr__(self, "upsample_kernel_sizes", tuple(self.upsample_kernel_sizes))
        object.__setattr__(self, "resblock_kernel_sizes", tuple(self.resblock_kernel_sizes))
        object.__setattr__(self, "resblock_dilations", tuple(tuple(d) for d in self.resblock_dilations))

    # HiFi-GAN outputs audio directly: no STFT magnitude for the trainer's magnitude loss.
    predicts_magnitude: ClassVar[bool] = False

    def for_training(self) -> GeneratorConfig:
        """The generator the vocoder trainer runs: the same one (see VocosConfig.for_training)."""
        return self

    @property
    def hop_length(self) -> int:
        return math.prod(self.upsample_rates)

    @classmethod
    def small(cls) -> GeneratorConfig:
        """A CPU-trainable generator (~0.9 M parameters)."""
        return cls(
            upsample_rates=(10, 8, 4),
            upsample_kernel_sizes=(20, 16, 8),
            initial_channels=128,
            resblock_kernel_sizes=(3, 7),
            resblock_dilations=((1, 3), (1, 3)),
        )

    @classmethod
    def tiny(cls) -> GeneratorConfig:
        """For tests: a few thousand parameters, still 320x upsampling."""
        return cls(
            upsample_rates=(10, 8, 4),
            upsample_kernel_sizes=(20, 16, 8),
            initial_channels=16,
            resblock_kernel_sizes=(3,),
            resblock_dilations=((1,),),
        )


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Multi-period (MPD) and multi-scale (MSD) discriminators; channels scale with ``width``."""

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    num_scales: int = 3
    width: float = 1.0

    def __post_init__(self):
        if not self.periods and self.num_scales < 1:
            raise ValueError("DiscriminatorConfig needs at least one period or one scale")
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        object.__setattr__(self, "periods", tuple(self.periods))

    def channels(self, base: int) -> int:
        return max(4, int(round(base * self.width)))

    @classmethod
    def small(cls) -> DiscriminatorConfig:
        return cls(periods=(2, 3, 5, 7, 11), num_scales=3, width=0.125)

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        return cls(periods=(2, 3), num_scales=2, width=1 / 32)


def _leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    return nn.leaky_relu(x, LRELU_SLOPE)


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, lrelu -> dilated conv -> lrelu -> conv, plus residual."""

    channels: int
    kernel_size: int
    dilations: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:  # [batch, time, channels]
        for dilation in self.dilations:
            y = nn.Conv(self.channels, (self.kernel_size,), kernel_dilation=(dilation,), padding="SAME")(
                _leaky_relu(x)
            )
            y = nn.Conv(self.channels, (self.kernel_size,), padding="SAME")(_leaky_relu(y))
            x = x + y
        return x


class Generator(nn.Module):
    """Unscaled log-mel [batch, frames, mels] -> audio [batch, frames * hop] in [-1, 1]."""

    config: GeneratorConfig
    features: FeatureConfig = DEFAULT_FEATURES

    @nn.compact
    def __call__(self, log_mel: jnp.ndarray) -> jnp.ndarray:
        cfg = self.config
        x = spectrograms.scale_features(log_mel.astype(jnp.float32), clip=True, features=self.features)
        x = nn.Conv(cfg.initial_channels, (7,), padding="SAME", name="conv_pre")(x)
        for i, (rate, kernel) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            channels = cfg.initial_channels // 2 ** (i + 1)
            x = nn.ConvTranspose(channels, (kernel,), strides=(rate,), padding="SAME", name=f"upsample_{i}")(
                _leaky_relu(x)
            )  # [batch, time * rate, channels]
            x = sum(
                ResBlock(channels, k, d, name=f"resblock_{i}_{j}")(x)
                for j, (k, d) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations))
            ) / len(cfg.resblock_kernel_sizes)
        x = nn.Conv(1, (7,), padding="SAME", name="conv_post")(_leaky_relu(x))
        return jnp.tanh(x[..., 0])


class PeriodDiscriminator(nn.Module):
    """Folds audio into [time / p, p] and applies 2-D convs along time (HiFi-GAN MPD branch)."""

    period: int
    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio: jnp.ndarray) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
        batch, length = audio.shape
        pad = (-length) % self.period
        x = jnp.pad(audio, ((0, 0), (0, pad)), mode="reflect" if pad < length else "constant")
        x = x.reshape(batch, -1, self.period, 1)  # [batch, time / p, p, 1]
        features = []
        for base in (32, 128, 512, 1024):
            x = _leaky_relu(nn.Conv(self.config.channels(base), (5, 1), strides=(3, 1), padding=((2, 2), (0, 0)))(x))
            features.append(x)
        x = _leaky_relu(nn.Conv(self.config.channels(1024), (5, 1), padding=((2, 2), (0, 0)))(x))
        features.append(x)
        x = nn.Conv(1, (3, 1), padding=((1, 1), (0, 0)))(x)
        features.append(x)
        return x.reshape(batch, -1), features


class ScaleDiscriminator(nn.Module):
    """Strided, grouped 1-D convs over (average-pooled) audio (MelGAN / HiFi-GAN MSD branch)."""

    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio: jnp.ndarray) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
        x = audio[..., None]  # [batch, time, 1]
        features = []
        layers = ((128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16),
                  (1024, 41, 1, 16), (1024, 5, 1, 1))
        for base, kernel, stride, groups in layers:
            channels = self.config.channels(base)
            groups = math.gcd(groups, math.gcd(channels, x.shape[-1]))
            x = nn.Conv(channels, (kernel,), strides=(stride,), feature_group_count=groups, padding="SAME")(x)
            x = _leaky_relu(x)
            features.append(x)
        x = nn.Conv(1, (3,), padding="SAME")(x)
        features.append(x)
        return x[..., 0], features


class Discriminator(nn.Module):
    """All MPD and MSD branches. Returns per-branch logits and per-branch feature maps."""

    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, audio: jnp.ndarray) -> tuple[list[jnp.ndarray], list[list[jnp.ndarray]]]:
        logits, features = [], []
        for period in self.config.periods:
            out, feats = PeriodDiscriminator(period, self.config, name=f"period_{period}")(audio)
            logits.append(out)
            features.append(feats)
        x = audio
        for scale in range(self.config.num_scales):
            if scale:
                # Average-pool by 2 (kernel 4, stride 2) between scales, as MelGAN.
                x = nn.avg_pool(x[..., None], (4,), strides=(2,), padding="SAME")[..., 0]
            out, feats = ScaleDiscriminator(self.config, name=f"scale_{scale}")(x)
            logits.append(out)
            features.append(feats)
        return logits, features


def count_parameters(params) -> int:
    """Number of scalars in a parameter pytree."""
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
