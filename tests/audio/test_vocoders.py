"""Tests of the vocoder package: HiFi-GAN shapes, loss closed forms, load_vocoder, SoundStream."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio.vocoders import base
from music_spectrogram_diffusion.audio.vocoders import checkpoints
from music_spectrogram_diffusion.audio.vocoders import hifigan
from music_spectrogram_diffusion.audio.vocoders import losses
from music_spectrogram_diffusion.audio.vocoders import soundstream
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig


def test_generator_maps_frames_to_frames_times_hop():
    config = hifigan.GeneratorConfig.tiny()
    generator = hifigan.Generator(config)
    log_mel = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 128)) * 3.0 - 5.0
    params = generator.init(jax.random.PRNGKey(0), log_mel)["params"]
    audio = generator.apply({"params": params}, log_mel)
    assert audio.shape == (2, 7 * 320) and audio.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(audio))) <= 1.0  # tanh output
    assert config.hop_length == DEFAULT_FEATURES.hop_length == hifigan.GeneratorConfig.small().hop_length
    assert hifigan.GeneratorConfig().hop_length == 320


def test_generator_config_is_validated():
    with pytest.raises(ValueError, match="same length"):
        hifigan.GeneratorConfig(upsample_rates=(10, 32), upsample_kernel_sizes=(20,))
    with pytest.raises(ValueError, match="divisible"):
        hifigan.GeneratorConfig(initial_channels=10)
    with pytest.raises(ValueError, match="width"):
        hifigan.DiscriminatorConfig(width=0.0)


def test_discriminator_returns_logits_and_features_per_branch():
    config = hifigan.DiscriminatorConfig.tiny()
    discriminator = hifigan.Discriminator(config)
    audio = jax.random.normal(jax.random.PRNGKey(0), (2, 1000)) * 0.1
    params = discriminator.init(jax.random.PRNGKey(1), audio)["params"]
    logits, features = discriminator.apply({"params": params}, audio)
    assert len(logits) == len(features) == len(config.periods) + config.num_scales
    for out in logits:
        assert out.ndim == 2 and out.shape[0] == 2
    assert len(features[0]) == 6 and len(features[-1]) == 8  # MPD: 4+1+1 maps; MSD: 7+1.
    assert features[0][0].shape[2] == config.periods[0]  # period branch folds time by p


def test_lsgan_losses_on_constants():
    ones, zeros, halves = jnp.ones((2, 5)), jnp.zeros((2, 5)), jnp.full((2, 5), 0.5)
    assert float(losses.lsgan_discriminator_loss([ones, ones], [zeros, zeros])) == 0.0
    assert float(losses.lsgan_discriminator_loss([halves], [halves])) == pytest.approx(0.5)
    assert float(losses.lsgan_discriminator_loss([zeros], [ones])) == pytest.approx(2.0)
    assert float(losses.lsgan_generator_loss([ones, ones])) == 0.0
    assert float(losses.lsgan_generator_loss([zeros, halves])) == pytest.approx(1.25)


def test_feature_matching_closed_form_and_real_side_is_constant():
    real = [[jnp.ones((2, 3)), jnp.zeros((4,))]]
    fake = [[jnp.full((2, 3), 3.0), jnp.full((4,), -1.0)]]
    assert float(losses.feature_matching_loss(real, fake)) == pytest.approx(3.0)
    grad_real = jax.grad(lambda r: losses.feature_matching_loss([[r]], [[jnp.zeros(3)]]))(jnp.ones(3))
    assert float(jnp.abs(grad_real).sum()) == 0.0


def test_mel_l1_is_zero_for_the_audio_the_mel_came_from_and_positive_otherwise():
    audio = jax.random.normal(jax.random.PRNGKey(0), (1, 3200)) * 0.1
    log_mel = spectrograms.compute_log_mel(audio)
    assert float(losses.mel_l1_loss(audio, log_mel)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.mel_l1_loss(0.5 * audio, log_mel)) == pytest.approx(np.log(2.0), rel=1e-3)
    assert float(losses.multi_resolution_stft_loss(audio, audio)) == 0.0


def test_load_vocoder_griffin_lim():
    vocoder = base.load_vocoder("griffin-lim")
    assert isinstance(vocoder, base.Vocoder)
    assert vocoder.name == "griffin-lim" and vocoder.features == DEFAULT_FEATURES


def test_load_vocoder_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(checkpoints.VocoderCheckpointError, match="nope: no such vocoder directory"):
        base.load_vocoder(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(checkpoints.VocoderCheckpointError, match="not a trained vocoder directory"):
        base.load_vocoder(str(empty))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(checkpoints.VocoderCheckpointError, match="is a file"):
        base.load_vocoder(str(a_file))
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / checkpoints.CONFIG_FILENAME).write_text("{not json")
    with pytest.raises(checkpoints.VocoderCheckpointError, match="unreadable vocoder config"):
        base.load_vocoder(str(garbled))


def test_load_vocoder_refuses_other_features(tmp_path):
    other = dataclasses.replace(DEFAULT_FEATURES, hop_length=256)
    checkpoints.write_vocoder_config(
        str(tmp_path), features=other, configs={"generator": hifigan.GeneratorConfig.tiny()}
    )
    with pytest.raises(checkpoints.VocoderCheckpointError, match="other features.*hop_length"):
        base.load_vocoder(str(tmp_path))
    with open(tmp_path / checkpoints.CONFIG_FILENAME) as f:
        assert json.load(f)["features"]["hop_length"] == 256


def test_load_vocoder_without_checkpoint_is_an_error(tmp_path):
    checkpoints.write_vocoder_config(
        str(tmp_path), features=DEFAULT_FEATURES, configs={"generator": hifigan.GeneratorConfig.tiny()}
    )
    with pytest.raises(checkpoints.VocoderCheckpointError, match="no finished checkpoint"):
        base.load_vocoder(str(tmp_path))
    (tmp_path / "checkpoint_5").mkdir()  # A directory that is not an orbax checkpoint.
    with pytest.raises(checkpoints.VocoderCheckpointError, match="not a readable vocoder checkpoint"):
        base.load_vocoder(str(tmp_path / "checkpoint_5"))


def _save_fake_soundstream(path: str) -> None:
    """A SavedModel with the TF-Hub decoder's call signature: [B, T, 128] -> [B, T * 320]."""
    import tensorflow as tf

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, 128], tf.float32)])
        def __call__(self, log_mel):
            level = tf.reduce_mean(log_mel, axis=-1, keepdims=True)  # [B, T, 1]
            return tf.reshape(tf.tile(level, [1, 1, 320]), [tf.shape(log_mel)[0], -1]) * 0.01

    tf.saved_model.save(Decoder(), path)


def test_soundstream_adapter_runs_a_local_saved_model(tmp_path):
    path = str(tmp_path / "soundstream")
    _save_fake_soundstream(path)
    vocoder = base.load_vocoder(path)
    assert isinstance(vocoder, soundstream.SoundStreamVocoder) and vocoder.name == "soundstream"
    log_mel = np.full((2, 3, 128), -2.0, np.float32)
    log_mel[1] = 1.0
    audio = vocoder.vocode(log_mel)
    assert audio.shape == (2, 960) and audio.dtype == np.float32
    np.testing.assert_allclose(audio[0], -0.02, rtol=1e-6)  # the model saw UNSCALED log-mel
    np.testing.assert_allclose(audio[1], 0.01, rtol=1e-6)
    with pytest.raises(checkpoints.VocoderCheckpointError, match="only works with the original features"):
        base.load_vocoder(path, features=dataclasses.replace(DEFAULT_FEATURES, num_mels=80))


def test_soundstream_adapter_errors(tmp_path):
    with pytest.raises(checkpoints.VocoderCheckpointError, match="not found"):
        soundstream.SoundStreamVocoder(str(tmp_path / "missing"))
    with pytest.raises(checkpoints.VocoderCheckpointError, match="not a TensorFlow SavedModel"):
        soundstream.SoundStreamVocoder(str(tmp_path))
    (tmp_path / "saved_model.pb").write_bytes(b"garbage")
    with pytest.raises(checkpoints.VocoderCheckpointError, match="cannot load the SavedModel"):
        base.load_vocoder(str(tmp_path))


def test_feature_config_round_trips_through_the_config_file(tmp_path):
    checkpoints.write_vocoder_config(
        str(tmp_path), features=DEFAULT_FEATURES, configs={"generator": hifigan.GeneratorConfig.small()}
    )
    payload = checkpoints.read_vocoder_config(str(tmp_path))
    assert FeatureConfig(**payload["features"]) == DEFAULT_FEATURES
    assert hifigan.GeneratorConfig(**payload["generator"]) == hifigan.GeneratorConfig.small()
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
