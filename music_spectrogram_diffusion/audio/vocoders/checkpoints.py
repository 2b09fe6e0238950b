"""On-disk format of a trained vocoder, and the TrainedVocoder that loads it for inference.

A vocoder model directory looks like the main trainer's:

    MODEL_DIR/vocoder_config.json     FeatureConfig, generator kind ('hifigan' | 'vocos', see
                                      generators.py) + generator/discriminator/training configs
    MODEL_DIR/checkpoint_<step>/      the main trainer's orbax checkpoint (training/checkpoints.py)
                                      of the whole VocoderTrainState

The FeatureConfig is stored so that a vocoder trained for other features (another hop, mel count
or log floor) is refused with a clear error instead of producing noise (see base.load_vocoder).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.audio.vocoders import generators
from music_spectrogram_diffusion.features import FeatureConfig
from music_spectrogram_diffusion.training import checkpoints

CONFIG_FILENAME = "vocoder_config.json"
CONFIG_FORMAT = "msd-vocoder/2"
# Written before Vocos existed; identical except that it has no "generator_kind" (= hifigan).
_LEGACY_FORMATS = ("msd-hifigan-vocoder/1",)


class VocoderCheckpointError(ValueError):
    """A vocoder directory that is missing, unreadable, or made for other features."""


def write_vocoder_config(model_dir: str, *, features: FeatureConfig, configs: dict[str, Any]) -> str:
    """Writes MODEL_DIR/vocoder_config.json atomically; ``configs`` maps names to dataclasses.

    The kind of ``configs["generator"]`` is recorded as "generator_kind" so that loading builds
    the same network.
    """
    os.makedirs(model_dir, exist_ok=True)
    payload = {"format": CONFIG_FORMAT, "features": dataclasses.asdict(features)}
    if "generator" in configs:
        payload["generator_kind"] = generators.generator_kind(configs["generator"])
    payload.update({name: dataclasses.asdict(value) for name, value in configs.items()})
    path = os.path.join(model_dir, CONFIG_FILENAME)
    file_io.write_json_atomic(path, payload, sort_keys=True)
    return path


def read_vocoder_config(model_dir: str) -> dict[str, Any]:
    """Reads and checks MODEL_DIR/vocoder_config.json."""
    path = os.path.join(model_dir, CONFIG_FILENAME)
    payload = file_io.read_json_object(
        path, VocoderCheckpointError, what="vocoder config",
        missing=f"not found; {model_dir} is not a trained vocoder directory")
    known = (CONFIG_FORMAT,) + _LEGACY_FORMATS
    if not isinstance(payload, dict) or payload.get("format") not in known or "features" not in payload or (
        "generator" not in payload
    ):
        format_name = payload.get("format") if isinstance(payload, dict) else None
        raise VocoderCheckpointError(f"{path}: not a {CONFIG_FORMAT} config (format={format_name!r})")
    payload.setdefault("generator_kind", generators.LEGACY_KIND)
    if payload["generator_kind"] not in generators.GENERATOR_KINDS:
        raise VocoderCheckpointError(
            f"{path}: unknown generator_kind {payload['generator_kind']!r}; valid kinds: "
            + ", ".join(generators.GENERATOR_KINDS)
        )
    return payload


def read_generator_config(model_dir: str) -> generators.GeneratorConfig:
    """The generator config (of the recorded kind) stored in MODEL_DIR/vocoder_config.json."""
    payload = read_vocoder_config(model_dir)
    try:
        return generators.config_from_dict(payload["generator_kind"], payload["generator"])
    except (TypeError, ValueError) as e:
        raise VocoderCheckpointError(
            f"{os.path.join(model_dir, CONFIG_FILENAME)}: bad {payload['generator_kind']} generator config ({e})"
        ) from e


def restore_generator_params(checkpoint_path: str) -> Any:
    """Reads only what inference needs, the generator parameters, from a training checkpoint.

    The checkpoint is the main trainer's orbax composite layout (training/checkpoints.py), whose
    ``state`` item is the VocoderTrainState; it is restored without a target so that loading
    does not need the discriminator or optimizer configuration.
    """
    import orbax.checkpoint as ocp

    try:
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            os.path.abspath(checkpoint_path), args=ocp.args.Composite(state=ocp.args.StandardRestore())
        )
    except Exception as e:  # orbax/tensorstore raise many types for a damaged directory.
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise VocoderCheckpointError(f"{checkpoint_path}: not a readable vocoder checkpoint ({first_line})") from e
    state = restored["state"]
    if not isinstance(state, dict) or "generator_params" not in state:
        raise VocoderCheckpointError(f"{checkpoint_path}: has no generator_params; not a vocoder checkpoint")
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x)), state["generator_params"])


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedVocoder:
    """The Vocoder interface (base.py) around a trained generator of any registered kind."""

    features: FeatureConfig
    generator_config: generators.GeneratorConfig
    params: Any

    def __post_init__(self):
        try:
            generator = generators.build_generator(self.generator_config, self.features)
        except ValueError as e:
            raise VocoderCheckpointError(str(e)) from e
        object.__setattr__(self, "_apply", jax.jit(generator.apply))

    @property
    def name(self) -> str:
        return generators.generator_kind(self.generator_config)

    def vocode(self, log_mel: jnp.ndarray) -> jnp.ndarray:
        """[batch, frames, mels] unscaled log-mel -> [batch, frames * hop] float32 audio."""
        log_mel = jnp.asarray(log_mel, jnp.float32)
        if log_mel.ndim != 3 or log_mel.shape[-1] != self.features.num_mels:
            raise ValueError(f"expected log-mel [batch, frames, {self.features.num_mels}], got {log_mel.shape}")
        return self._apply({"params": self.params}, log_mel)

    @classmethod
    def load(cls, model_dir: str, checkpoint_path: str | None = None) -> TrainedVocoder:
        """Loads the newest checkpoint of MODEL_DIR (or ``checkpoint_path``) for inference."""
        payload = read_vocoder_config(model_dir)
        features = FeatureConfig(**payload["features"])
        generator_config = read_generator_config(model_dir)
        if checkpoint_path is None:
            steps = checkpoints.list_checkpoints(model_dir)
            if not steps:
                raise VocoderCheckpointError(f"{model_dir}: has {CONFIG_FILENAME} but no finished checkpoint_<step>")
            checkpoint_path = checkpoints.checkpoint_path(model_dir, steps[-1])
        params = restore_generator_params(checkpoint_path)
        return cls(features=features, generator_config=generator_config, params=params)


# The name from before generators had kinds; HiFi-GAN directories load through it unchanged.
HiFiGanVocoder = TrainedVocoder
