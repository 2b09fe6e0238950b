"""Whole-MIDI synthesis with tiny models trained by the real trainer (msd-train).

The diffusion checkpoint is trained once per session (see trained_checkpoints.py); every test
here samples with DPM-Solver++ in a few steps so that one compiled sampler serves all of them.
"""

import os
import sys

import jax
import numpy as np
import pytest

from music_spectrogram_diffusion.audio.vocoders.base import load_vocoder
from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.inference import loading, synthesis
from music_spectrogram_diffusion.testing import midi_fixtures

sys.path.insert(0, os.path.dirname(__file__))
import trained_checkpoints  # noqa: E402

F = DEFAULT_FEATURES
SAMPLER = SamplerConfig(name="dpm++", num_steps=3, guidance_weight=2.0)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    model_dir = trained_checkpoints.shared_checkpoint(tmp_path_factory, "diffusion_context")
    return loading.load_trained_model(model_dir)


@pytest.fixture(scope="module")
def vocoder():
    return load_vocoder("griffin-lim")


def _synthesizer(loaded, vocoder, **config):
    config = synthesis.SynthesisConfig(**{"sampler": SAMPLER, **config})
    return synthesis.Synthesizer(loaded.model, loaded.params, vocoder, config=config)


@pytest.fixture(scope="module")
def melody_result(loaded, vocoder):
    return _synthesizer(loaded, vocoder, seed=0).synthesize(
        trained_checkpoints.melody_midi_bytes(6.0), name="melody")


def test_trained_model_synthesizes_audio_of_the_midi_length(melody_result):
    result = melody_result
    # Notes end at 6.0 s; the release tail adds 1 s.
    assert result.midi_seconds == pytest.approx(6.0, abs=1e-3)
    assert result.sample_rate == 16000
    assert len(result.audio) == 7 * 16000
    assert result.audio.dtype == np.float32
    assert np.all(np.isfinite(result.audio))
    assert float(np.sqrt(np.mean(result.audio**2))) > 1e-4  # not silent
    # Two segments were predicted (7 s > 5.12 s); the log-mel is trimmed like the audio.
    assert len(result.segment_seconds) == 2
    assert result.log_mel.shape == (350, F.num_mels)
    assert np.all(np.isfinite(result.log_mel))
    assert result.real_time_factor > 0


def test_context_chaining_passes_each_prediction_to_the_next_segment(loaded, vocoder):
    synthesizer = _synthesizer(loaded, vocoder, seed=3)
    real_predict = synthesizer.predict_fn
    calls = []

    def recording_predict(params, batch, rng):
        prediction = np.asarray(real_predict(params, batch, rng))
        calls.append((jax.tree.map(np.copy, batch), prediction))
        return prediction

    synthesizer.predict_fn = recording_predict
    prepared = synthesizer.prepare(midi_fixtures.make_midi_bytes(
        [(0, False, 60 + i % 12, 0.9 * i, 0.9 * i + 0.8) for i in range(12)]), name="piano")
    result = synthesizer.synthesize_prepared(prepared)
    assert len(calls) == len(prepared.segments) == 3  # 10.7 s + 1 s release
    first, second, third = calls
    assert first[0]["context_mask"].shape == (1, F.context_frames)
    np.testing.assert_array_equal(first[0]["context_mask"], 0.0)
    np.testing.assert_array_equal(first[0]["context_frames"], 0.0)
    np.testing.assert_array_equal(second[0]["context_mask"], 1.0)
    np.testing.assert_array_equal(second[0]["context_frames"], first[1])
    np.testing.assert_array_equal(third[0]["context_frames"], second[1])
    # The note tokens are each segment's own, padded to 2048.
    for (batch, _), segment in zip(calls, prepared.segments):
        assert batch["note_tokens"].shape == (1, F.max_note_tokens)
        np.testing.assert_array_equal(batch["note_tokens"][0, :len(segment.tokens)],
                                      segment.tokens)
    # The song's log-mel is the predictions concatenated (then trimmed).
    full = np.concatenate([prediction[0] for _, prediction in calls])
    np.testing.assert_array_equal(result.log_mel, full[:len(result.log_mel)])


def test_always_mask_context_never_shows_the_previous_segment(loaded, vocoder):
    synthesizer = _synthesizer(loaded, vocoder, always_mask_context=True)
    real_predict, masks = synthesizer.predict_fn, []

    def recording_predict(params, batch, rng):
        masks.append(np.array(batch["context_mask"]))
        return real_predict(params, batch, rng)

    synthesizer.predict_fn = recording_predict
    synthesizer.synthesize(trained_checkpoints.melody_midi_bytes(6.0))
    assert len(masks) == 2 and all(np.all(mask == 0.0) for mask in masks)


def test_same_seed_same_audio_other_seed_other_audio(loaded, vocoder, melody_result):
    midi = trained_checkpoints.melody_midi_bytes(6.0)
    again = _synthesizer(loaded, vocoder, seed=0).synthesize(midi)
    np.testing.assert_array_equal(again.audio, melody_result.audio)
    other = _synthesizer(loaded, vocoder, seed=1).synthesize(midi)
    assert other.audio.shape == melody_result.audio.shape
    assert np.max(np.abs(other.log_mel - melody_result.log_mel)) > 1e-3


def test_segments_use_different_noise(loaded, vocoder):
    # The original sampled every segment with seed 0 (spec §11.8); two segments with identical
    # tokens and context must therefore differ here.
    synthesizer = _synthesizer(loaded, vocoder, always_mask_context=True, release_seconds=0.0)
    prepared = synthesizer.prepare(midi_fixtures.make_midi_bytes([(0, False, 60, 0.0, 10.24)]))
    segment = prepared.segments[1]
    log_mel, _ = synthesizer.predict_segments([segment, segment])
    assert np.max(np.abs(log_mel[:F.segment_frames] - log_mel[F.segment_frames:])) > 1e-3


def test_bad_midi_is_refused_with_the_file_name(tmp_path):
    from music_spectrogram_diffusion.data.midi_io import MidiError

    config = synthesis.SynthesisConfig(max_midi_seconds=5.0)
    with pytest.raises(synthesis.SynthesisError, match="song.mid: MIDI file contains no notes"):
        synthesis.prepare_midi(midi_fixtures.make_midi_bytes([]), name="song.mid", config=config)
    with pytest.raises(synthesis.SynthesisError, match=r"long.mid: MIDI file is 6.0 s long, over "
                                                       r"the limit of 5 s"):
        synthesis.prepare_midi(trained_checkpoints.melody_midi_bytes(6.0), name="long.mid",
                               config=config)
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01")
    with pytest.raises(MidiError, match="corrupt.mid"):
        synthesis.prepare_midi(str(corrupt), config=config)


def test_prepare_covers_the_notes_plus_the_release_tail():
    prepared = synthesis.prepare_midi(trained_checkpoints.melody_midi_bytes(6.0),
                                      config=synthesis.SynthesisConfig(release_seconds=4.5))
    assert prepared.total_seconds == pytest.approx(10.5, abs=1e-3)
    # 10.5 s = 526 frames = segments of 256, 256 and 14 frames.
    assert [s.num_frames for s in prepared.segments] == [256, 256, 14]
    assert [s.start_frame for s in prepared.segments] == [0, 256, 512]


def test_release_tail_segment_has_no_stale_notes():
    # Notes end at 5.2 s; with a 6 s release the third segment (10.24 s on) lies after every
    # note: its tie section must be empty (the original repeated stale state, spec §11.4).
    midi = midi_fixtures.make_midi_bytes([(0, False, 60, 0.0, 5.0), (0, False, 64, 4.0, 5.2)])
    prepared = synthesis.prepare_midi(midi, config=synthesis.SynthesisConfig(release_seconds=6.0))
    assert len(prepared.segments) == 3
    tie = prepared.segments[0].tokens[0]  # nothing sounds at 0 s: the segment starts with tie
    assert len(prepared.segments[1].tokens) > 2  # note 64 is tied into the second segment
    np.testing.assert_array_equal(prepared.segments[2].tokens, [tie, 1])


def test_dense_segment_overflow_is_truncated_or_refused():
    dense = midi_fixtures.dense_midi_bytes(seconds=5.0)
    prepared = synthesis.prepare_midi(dense, name="dense.mid")
    assert all(len(s.tokens) <= F.max_note_tokens for s in prepared.segments)
    assert max(len(s.tokens) for s in prepared.segments) > F.max_note_tokens // 2
    with pytest.raises(synthesis.SynthesisError, match="dense.mid: .*exceed the limit"):
        synthesis.prepare_midi(dense, name="dense.mid",
                               config=synthesis.SynthesisConfig(overflow="error"))


def test_vocoder_for_other_features_is_refused(loaded):
    from music_spectrogram_diffusion.audio.vocoders.griffin_lim import GriffinLimVocoder
    from music_spectrogram_diffusion.features import FeatureConfig

    other = GriffinLimVocoder(features=FeatureConfig(hop_length=256))
    with pytest.raises(synthesis.SynthesisError, match="other features"):
        synthesis.Synthesizer(loaded.model, loaded.params, other)


def test_config_validation_lists_valid_values():
    with pytest.raises(ValueError, match=r"valid values: \['truncate', 'error'\]"):
        synthesis.SynthesisConfig(overflow="skip")
    with pytest.raises(ValueError, match="release_seconds"):
        synthesis.SynthesisConfig(release_seconds=-1.0)


@pytest.mark.slow
def test_autoregressive_model_through_the_same_api(tmp_path_factory, vocoder):
    model_dir = trained_checkpoints.shared_checkpoint(tmp_path_factory, "autoregressive")
    ar = loading.load_trained_model(model_dir)
    assert type(ar.model).__name__ == "AutoregressiveModel"
    midi = trained_checkpoints.melody_midi_bytes(6.0)
    result = _synthesizer(ar, vocoder, seed=0).synthesize(midi)
    assert len(result.audio) == 7 * 16000 and np.all(np.isfinite(result.audio))
    assert float(np.sqrt(np.mean(result.audio**2))) > 1e-4
    # Deterministic decoding (no dither): the seed does not matter.
    again = synthesis.synthesize(midi, ar.model, ar.params, vocoder,
                                 config=synthesis.SynthesisConfig(seed=5))
    np.testing.assert_array_equal(again, result.audio)


def _untrained_vocoder(kind):
    """A randomly initialised trained-vocoder network: streaming depends on its receptive field,
    not on its weights."""
    import jax.numpy as jnp

    from music_spectrogram_diffusion.audio.vocoders import checkpoints, generators, hifigan, vocos

    config = {"vocos": vocos.VocosConfig.tiny(), "hifigan": hifigan.GeneratorConfig.tiny()}[kind]
    network = generators.build_generator(config, F)
    params = network.init(jax.random.key(0), jnp.zeros((1, 32, F.num_mels)))["params"]
    return checkpoints.TrainedVocoder(F, config, params)


@pytest.mark.parametrize("kind", ["griffin-lim", "vocos"])
def test_stream_yields_each_segment_and_ends_with_the_non_streaming_result(loaded, vocoder,
                                                                          melody_result, kind):
    voc = vocoder if kind == "griffin-lim" else _untrained_vocoder(kind)
    synthesizer = synthesis.Synthesizer(
        loaded.model, loaded.params, voc,
        config=synthesis.SynthesisConfig(sampler=SAMPLER, seed=0))
    chunks = list(synthesizer.stream(trained_checkpoints.melody_midi_bytes(6.0), name="melody"))
    assert [c.segment_index for c in chunks] == [0, 1]
    assert all(c.num_segments == 2 for c in chunks)
    assert [c.result is None for c in chunks] == [True, False]
    # The first chunk is out before the second segment is sampled: all of segment 0 but the
    # vocoder's overlap.
    assert chunks[0].start_sample == 0
    assert len(chunks[0].audio) == (256 - synthesis.STREAM_CONTEXT_FRAMES) * 320
    # Chunks tile the song without gaps or overlap, up to the trimmed length.
    assert chunks[1].start_sample == chunks[0].end_sample
    result = chunks[-1].result
    streamed = np.concatenate([c.audio for c in chunks])
    assert len(streamed) == len(result.audio) == 7 * 16000
    assert all(c.real_time_factor > 0 for c in chunks)
    if kind == "griffin-lim":
        # Same seed: the whole-song result equals the non-streaming one exactly.
        np.testing.assert_array_equal(result.audio, melody_result.audio)
        np.testing.assert_array_equal(result.log_mel, melody_result.log_mel)
        # Griffin-Lim is a global iteration: streamed windows are a close preview only.
        error = np.abs(streamed - result.audio)
        assert float(np.sqrt(np.mean(error**2))) < 0.5 * float(np.sqrt(np.mean(result.audio**2)))
    else:
        expected = synthesizer.synthesize(trained_checkpoints.melody_midi_bytes(6.0)).audio
        np.testing.assert_array_equal(result.audio, expected)
        # A convolutional vocoder's receptive field is inside the overlap: the streamed chunks
        # are the whole-song audio up to float rounding.
        np.testing.assert_allclose(streamed, result.audio, atol=1e-4 * float(
            np.max(np.abs(result.audio))) + 1e-7)
