"""The trainable generator kinds, by name: the one table that maps a kind to its config and network.

The kind is recorded in MODEL_DIR/vocoder_config.json ("generator_kind") next to the generator
config, so ``load_vocoder`` rebuilds the network a directory was trained with:

  * ``'hifigan'``: hifigan.Generator, upsampling 320x through transposed convolutions;
  * ``'vocos'``: vocos.Generator, ConvNeXt at the frame rate + inverse STFT (CPU-trainable).

Directories written before the kind was recorded hold HiFi-GAN generators (the only kind then).
"""

from __future__ import annotations

from typing import Any, Union

import flax.linen as nn

from music_spectrogram_diffusion.audio.vocoders import hifigan
from music_spectrogram_diffusion.audio.vocoders import vocos
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig

GeneratorConfig = Union[hifigan.GeneratorConfig, vocos.VocosConfig]

# kind -> (config class, network class). Both networks map [batch, frames, mels] unscaled
# log-mel to [batch, frames * hop] audio.
_KINDS: dict[str, tuple[type, type]] = {
    "hifigan": (hifigan.GeneratorConfig, hifigan.Generator),
    "vocos": (vocos.VocosConfig, vocos.Generator),
}
GENERATOR_KINDS: tuple[str, ...] = tuple(_KINDS)
LEGACY_KIND = "hifigan"  # The kind of config files that do not record one.


def generator_kind(config: GeneratorConfig) -> str:
    """The registered kind of a generator config object."""
    for kind, (config_class, _) in _KINDS.items():
        if type(config) is config_class:
            return kind
    raise ValueError(
        f"unknown generator config type {type(config).__name__}; valid kinds: "
        + ", ".join(f"{kind} ({c.__module__}.{c.__name__})" for kind, (c, _) in _KINDS.items())
    )


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise ValueError(f"unknown generator kind {kind!r}; valid kinds: {', '.join(GENERATOR_KINDS)}")


def config_from_dict(kind: str, values: dict[str, Any]) -> GeneratorConfig:
    """Rebuilds a generator config from its JSON dict (dataclasses.asdict of it)."""
    _check_kind(kind)
    return _KINDS[kind][0](**values)


def build_generator(config: GeneratorConfig, features: FeatureConfig = DEFAULT_FEATURES) -> nn.Module:
    """The generator network for ``config``, checked against ``features``.

    Raises:
      ValueError: unknown config type, or a HiFi-GAN whose upsampling is not the hop length.
    """
    kind = generator_kind(config)
    if kind == "hifigan" and config.hop_length != features.hop_length:
        raise ValueError(
            f"prod(upsample_rates) = {config.hop_length} must equal the hop length {features.hop_length}"
        )
    return _KINDS[kind][1](config, features)
