"""Tests of the Vocos generator (audio/vocoders/vocos.py), the shared iSTFT and the generator kinds."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.audio.vocoders import checkpoints
from music_spectrogram_diffusion.audio.vocoders import generators
from music_spectrogram_diffusion.audio.vocoders import griffin_lim
from music_spectrogram_diffusion.audio.vocoders import hifigan
from music_spectrogram_diffusion.audio.vocoders import vocos
from music_spectrogram_diffusion.features import DEFAULT_FEATURES

HOP = DEFAULT_FEATURES.hop_length
# The periodic Hann window is below sqrt(1e-3) for its first 36 samples, where istft leaves the
# signal at 0 rather than divide by ~0 (only the first frame covers them).
EDGE = 40


def _stft(samples):
    return stft_distance.stft(
        samples,
        fft_length=DEFAULT_FEATURES.fft_length,
        hop_length=HOP,
        window_length=DEFAULT_FEATURES.window_length,
    )


def _scatter_overlap_add(frames: np.ndarray, hop: int) -> np.ndarray:  # [frames, window] -> [samples]
    """The textbook overlap-add, to check the shifted-block implementation against."""
    num_frames, window_length = frames.shape
    out = np.zeros((num_frames - 1) * hop + window_length, np.float64)
    for i, frame in enumerate(frames):
        out[i * hop : i * hop + window_length] += frame
    return out


@pytest.mark.parametrize("window_length,hop", [(640, 320), (7, 3), (5, 5), (4, 8)])
def test_overlap_add_matches_the_textbook_sum(window_length, hop):
    frames = np.random.default_rng(window_length).normal(size=(6, window_length)).astype(np.float32)
    expected = _scatter_overlap_add(frames, hop)
    got = np.asarray(griffin_lim._overlap_add(jnp.asarray(frames), hop))
    np.testing.assert_allclose(got[: len(expected)], expected, rtol=1e-5, atol=1e-5)
    assert np.all(got[len(expected) :] == 0.0)


def test_istft_inverts_the_feature_stft():
    audio = np.random.default_rng(0).normal(size=(2, 37 * HOP)).astype(np.float32) * 0.3
    spectrum = _stft(jnp.asarray(audio))  # [2, 37, 513]
    assert spectrum.shape == (2, 37, 513)
    rebuilt = np.asarray(griffin_lim.istft(spectrum))
    assert rebuilt.shape == audio.shape
    np.testing.assert_allclose(rebuilt[:, EDGE:], audio[:, EDGE:], atol=2e-4)
    assert np.all(rebuilt[:, :30] == 0.0)


def test_spectrum_from_head_closed_form():
    log_magnitude = jnp.array([[np.log(2.0), 0.0, 50.0]])
    phase = jnp.array([[np.pi / 2, np.pi, 2 * np.pi]])
    spectrum = np.asarray(vocos.spectrum_from_head(log_magnitude, phase, max_log_magnitude=3.0))
    np.testing.assert_allclose(spectrum, [[2j, -1.0, np.exp(3.0)]], atol=1e-5)


def test_integrate_phase_follows_a_stationary_partial():
    """With a zero residual the phase advances like the STFT phase of a bin-centred sinusoid."""
    k0, frames = 37, 12
    frequency = k0 * DEFAULT_FEATURES.sample_rate / DEFAULT_FEATURES.fft_length
    t = np.arange((frames + 2) * HOP) / DEFAULT_FEATURES.sample_rate
    spectrum = np.asarray(_stft(jnp.asarray(np.cos(2 * np.pi * frequency * t), jnp.float32)))[:frames]
    true_advance = np.angle(spectrum[1:, k0] * np.conj(spectrum[:-1, k0]))
    phase = np.asarray(vocos.integrate_phase(jnp.zeros((frames, 513))))
    model_advance = np.angle(np.exp(1j * (phase[1:, k0] - phase[:-1, k0])))
    np.testing.assert_allclose(model_advance, true_advance, atol=1e-3)
    np.testing.assert_allclose(phase[0], 0.0)
    # A constant residual r adds r per frame on top of the bin-centre advance.
    shifted = np.asarray(vocos.integrate_phase(jnp.full((frames, 513), 0.25)))
    np.testing.assert_allclose(shifted - phase, np.broadcast_to(0.25 * (np.arange(frames)[:, None] + 1), phase.shape), atol=1e-4)


def _init(config, log_mel):
    generator = vocos.Generator(config)
    params = generator.init(jax.random.PRNGKey(0), log_mel)["params"]
    return generator, params


@pytest.mark.parametrize("phase_parameterisation", vocos.PHASE_PARAMETERISATIONS)
def test_generator_maps_frames_to_frames_times_hop_and_is_deterministic(phase_parameterisation):
    log_mel = jax.random.normal(jax.random.PRNGKey(1), (2, 9, 128)) * 2.0 - 6.0
    config = dataclasses.replace(vocos.VocosConfig.tiny(), phase_parameterisation=phase_parameterisation)
    generator, params = _init(config, log_mel)
    audio = generator.apply({"params": params}, log_mel)
    assert audio.shape == (2, 9 * HOP) and audio.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(audio)))
    np.testing.assert_array_equal(np.asarray(audio), np.asarray(generator.apply({"params": params}, log_mel)))
    # Same seed, same parameters; another seed, other parameters.
    again = vocos.Generator(config).init(jax.random.PRNGKey(0), log_mel)["params"]
    other = vocos.Generator(config).init(jax.random.PRNGKey(1), log_mel)["params"]
    leaves = lambda p: jax.tree_util.tree_leaves(p["block_0"])
    np.testing.assert_array_equal(leaves(params)[1], leaves(again)[1])
    assert not np.array_equal(leaves(params)[1], leaves(other)[1])


def test_consistency_stage_keeps_magnitudes_and_passes_gradients_to_the_phase_head():
    log_mel = jax.random.normal(jax.random.PRNGKey(2), (1, 10, 128)) * 2.0 - 5.0
    config = dataclasses.replace(vocos.VocosConfig.tiny(), num_consistency_iterations=2)
    generator, params = _init(config, log_mel)
    plain = vocos.Generator(dataclasses.replace(config, num_consistency_iterations=0))
    assert not np.allclose(
        np.asarray(generator.apply({"params": params}, log_mel)), np.asarray(plain.apply({"params": params}, log_mel))
    )
    target = jnp.zeros((1, 10 * HOP))

    def loss(p):
        return jnp.mean(jnp.square(generator.apply({"params": p}, log_mel) - target))

    grads = jax.grad(loss)(params)
    phase_gradient = np.asarray(grads["phase_head"]["kernel"])
    assert np.all(np.isfinite(phase_gradient)) and np.abs(phase_gradient).max() > 0.0


def test_small_config_has_a_few_million_parameters():
    log_mel = jnp.zeros((1, 4, 128))
    shapes = jax.eval_shape(lambda: vocos.Generator(vocos.VocosConfig.small()).init(jax.random.PRNGKey(0), log_mel))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert 2_000_000 < count < 5_000_000


def test_untrained_magnitude_is_the_mel_inversion_prior():
    """Magnitude head starts at 0, so with a zero phase the output is istft(NNLS magnitude)."""
    config = vocos.VocosConfig.tiny()
    audio = np.random.default_rng(3).normal(size=(1, 12 * HOP)).astype(np.float32) * 0.2
    log_mel = spectrograms.compute_log_mel(jnp.asarray(audio))  # [1, 12, 128]
    generator, params = _init(config, log_mel)
    params = dict(params, phase_head=jax.tree_util.tree_map(jnp.zeros_like, params["phase_head"]))
    got = generator.apply({"params": params}, log_mel)
    magnitude = griffin_lim.mel_to_linear_magnitude(log_mel, num_nnls_steps=config.num_prior_nnls_steps)
    expected = griffin_lim.istft(jnp.maximum(magnitude, 1e-5).astype(jnp.complex64))
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-4, atol=1e-6)


def test_without_prior_the_magnitude_head_is_trained_from_scratch():
    log_mel = jnp.full((1, 5, 128), -3.0)
    generator, params = _init(vocos.VocosConfig(dim=8, intermediate_dim=8, num_blocks=1, num_prior_nnls_steps=-1), log_mel)
    assert float(jnp.abs(params["magnitude_head"]["kernel"]).sum()) > 0.0
    assert generator.apply({"params": params}, log_mel).shape == (1, 5 * HOP)


def test_config_is_validated():
    with pytest.raises(ValueError, match="dim must be >= 1"):
        vocos.VocosConfig(dim=0)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        vocos.VocosConfig(kernel_size=4)
    with pytest.raises(ValueError, match="phase_parameterisation 'group_delay' unknown; valid: absolute, "):
        vocos.VocosConfig(phase_parameterisation="group_delay")
    with pytest.raises(ValueError, match="num_prior_nnls_steps"):
        vocos.VocosConfig(num_prior_nnls_steps=-2)
    with pytest.raises(ValueError, match="num_consistency_iterations must be >= 0"):
        vocos.VocosConfig(num_consistency_iterations=-1)


def test_generator_kinds_and_errors():
    assert generators.GENERATOR_KINDS == ("hifigan", "vocos")
    assert generators.generator_kind(vocos.VocosConfig.tiny()) == "vocos"
    assert generators.generator_kind(hifigan.GeneratorConfig.tiny()) == "hifigan"
    assert isinstance(generators.build_generator(vocos.VocosConfig.tiny()), vocos.Generator)
    with pytest.raises(ValueError, match="valid kinds: hifigan, vocos"):
        generators.config_from_dict("wavenet", {})
    with pytest.raises(ValueError, match="unknown generator config type dict"):
        generators.generator_kind({})


def test_generator_kind_round_trips_through_the_config_file(tmp_path):
    config = vocos.VocosConfig(dim=32, intermediate_dim=64, num_blocks=3, num_prior_nnls_steps=0)
    checkpoints.write_vocoder_config(str(tmp_path), features=DEFAULT_FEATURES, configs={"generator": config})
    payload = checkpoints.read_vocoder_config(str(tmp_path))
    assert payload["generator_kind"] == "vocos" and payload["format"] == checkpoints.CONFIG_FORMAT
    assert checkpoints.read_generator_config(str(tmp_path)) == config


def test_legacy_hifigan_config_without_kind_still_reads(tmp_path):
    path = tmp_path / checkpoints.CONFIG_FILENAME
    path.write_text(json.dumps({
        "format": "msd-hifigan-vocoder/1",
        "features": {name: getattr(DEFAULT_FEATURES, name) for name in DEFAULT_FEATURES.__dataclass_fields__},
        "generator": {"upsample_rates": [10, 8, 4], "upsample_kernel_sizes": [20, 16, 8], "initial_channels": 16,
                      "resblock_kernel_sizes": [3], "resblock_dilations": [[1]]},
    }))
    assert checkpoints.read_generator_config(str(tmp_path)) == hifigan.GeneratorConfig.tiny()
    payload = json.loads(path.read_text())
    payload["generator_kind"] = "wavenet"
    path.write_text(json.dumps(payload))
    with pytest.raises(checkpoints.VocoderCheckpointError, match="unknown generator_kind 'wavenet'; valid kinds"):
        checkpoints.read_vocoder_config(str(tmp_path))
