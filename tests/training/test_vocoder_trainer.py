"""Tests of vocoder training on real rendered audio: steps, checkpoints, resume, gin, CLI.

HiFi-GAN and Vocos generators both train through the same trainer (generators.py kinds).
"""

import glob
import io
import dataclasses
import json
import logging
import os
import signal

import gin
import jax
import jax.numpy as jnp
import numpy as np
import pretty_midi
import pytest

from music_spectrogram_diffusion.audio import audio_io
from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio.vocoders import base
from music_spectrogram_diffusion.audio.vocoders import checkpoints as vocoder_checkpoints
from music_spectrogram_diffusion.audio.vocoders import evaluation
from music_spectrogram_diffusion.audio.vocoders import hifigan
from music_spectrogram_diffusion.audio.vocoders import vocos
from music_spectrogram_diffusion.cli import train_vocoder as cli
from music_spectrogram_diffusion.data.rendering import render_midi
from music_spectrogram_diffusion.training import vocoder_trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(
    generator_config=hifigan.GeneratorConfig.tiny(),
    discriminator_config=hifigan.DiscriminatorConfig.tiny(),
)
VOCOS_TINY = dict(TINY, generator_config=vocos.VocosConfig.tiny())


def _render(program: int, pitches: tuple[int, ...]) -> np.ndarray:
    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=program)
    for i, pitch in enumerate(pitches):
        instrument.notes.append(pretty_midi.Note(velocity=100, pitch=pitch, start=0.25 * i, end=0.25 * i + 0.5))
    midi.instruments.append(instrument)
    buffer = io.BytesIO()
    midi.write(buffer)
    return render_midi(buffer.getvalue(), tail_seconds=0.5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    """A two-piece dataset (manifest.json + 16 kHz WAVs) of rendered piano and flute."""
    root = tmp_path_factory.mktemp("vocoder_data")
    pieces = []
    for piece_id, split, program, pitches in (("piano", "train", 0, (60, 64, 67, 72)), ("flute", "test", 73, (72, 74, 76))):
        audio_io.write_wav(str(root / f"{piece_id}.wav"), _render(program, pitches))
        pieces.append({"id": piece_id, "split": split, "midi_path": "", "audio_path": f"{piece_id}.wav",
                       "duration_seconds": 0.0, "programs": [program]})
    (root / "manifest.json").write_text(json.dumps({"pieces": pieces}))
    return str(root)


def _train_config(**overrides) -> vocoder_trainer.VocoderTrainConfig:
    values = dict(batch_size=2, crop_frames=8, pretrain_steps=100, log_every=1, checkpoint_every=2,
                  summary_audio_every=2, learning_rate=1e-3)
    values.update(overrides)
    return vocoder_trainer.VocoderTrainConfig(**values)


def _piano_batch(data_dir: str, crop_frames: int = 16) -> jnp.ndarray:
    """One fixed batch of two piano crops: steps on it must lower the loss."""
    pieces = [audio_io.load_audio(os.path.join(data_dir, "piano.wav"))]
    crops = vocoder_trainer.sample_crops(pieces, np.random.default_rng(0), batch_size=2, crop_samples=crop_frames * 320)
    return jnp.asarray(crops)


def test_sample_crops_is_deterministic_and_pads_short_pieces():
    pieces = [np.arange(100, dtype=np.float32) + 1, np.ones(10, np.float32)]
    first = vocoder_trainer.sample_crops(pieces, np.random.default_rng((0, 5)), batch_size=16, crop_samples=50)
    again = vocoder_trainer.sample_crops(pieces, np.random.default_rng((0, 5)), batch_size=16, crop_samples=50)
    np.testing.assert_array_equal(first, again)
    assert first.shape == (16, 50)
    for row in first:
        if row[0] == 1.0 and row[1] == 1.0:  # the short piece: 10 samples, then zeros
            assert np.all(row[:10] == 1.0) and np.all(row[10:] == 0.0)
        else:  # a contiguous crop of the long piece
            np.testing.assert_array_equal(np.diff(row), 1.0)


def test_train_config_is_validated():
    with pytest.raises(ValueError, match="batch_size"):
        vocoder_trainer.VocoderTrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="gain_range"):
        vocoder_trainer.VocoderTrainConfig(gain_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="lr_schedule 'linear' unknown; valid: exponential, cosine"):
        vocoder_trainer.VocoderTrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="max_grad_norm"):
        vocoder_trainer.VocoderTrainConfig(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="valid kinds"):
        vocoder_trainer.VocoderTrainer({"dim": 4}, hifigan.DiscriminatorConfig.tiny(), _train_config())
    with pytest.raises(ValueError, match="must equal the hop"):
        vocoder_trainer.VocoderTrainer(hifigan.GeneratorConfig(upsample_rates=(8, 8, 4, 2)), hifigan.DiscriminatorConfig.tiny(), _train_config())
    with pytest.raises(ValueError, match="magnitude_loss_weight must be >= 0"):
        _train_config(magnitude_loss_weight=-1.0)
    with pytest.raises(ValueError, match=r"predicts an STFT magnitude \(vocos\), not hifigan"):
        vocoder_trainer.VocoderTrainer(train_config=_train_config(magnitude_loss_weight=1.0), **TINY)


def test_pretraining_steps_checkpoint_resume_and_load(tmp_path, data_dir):
    config = _train_config()
    resumed_dir, straight_dir = str(tmp_path / "resumed"), str(tmp_path / "straight")
    lines = []
    vocoder_trainer.train_vocoder(model_dir=resumed_dir, data_dir=data_dir, train_steps=2, train_config=config, print_fn=lines.append, **TINY)
    assert os.path.isdir(os.path.join(resumed_dir, "checkpoint_2"))
    metrics = vocoder_trainer.train_vocoder(model_dir=resumed_dir, data_dir=data_dir, train_steps=3, train_config=config, print_fn=lines.append, **TINY)
    assert any(line.startswith("resumed from") and line.endswith("checkpoint_2") for line in lines)
    assert any("steps/s ETA" in line and "mel_l1" in line for line in lines)
    assert np.isfinite(metrics["mel_l1"]) and metrics["mel_l1"] > 0
    vocoder_trainer.train_vocoder(model_dir=straight_dir, data_dir=data_dir, train_steps=3, train_config=config, print_fn=lambda _: None, **TINY)
    # Batch s and the step key depend only on (seed, s): resuming changes nothing.
    resumed = base.load_vocoder(resumed_dir)
    straight = base.load_vocoder(straight_dir)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(straight.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    audio = resumed.vocode(jnp.full((1, 6, 128), -4.0))
    assert audio.shape == (1, 6 * 320)
    assert glob.glob(os.path.join(resumed_dir, "train", "events.out.tfevents.*"))


def test_sigterm_saves_a_checkpoint_and_stops(tmp_path, data_dir):
    model_dir = str(tmp_path / "stopped")

    def print_and_terminate(line):
        if line.startswith("step 1/"):
            os.kill(os.getpid(), signal.SIGTERM)  # As a scheduler would, mid-run.

    vocoder_trainer.train_vocoder(
        model_dir=model_dir, data_dir=data_dir, train_steps=50, train_config=_train_config(), print_fn=print_and_terminate, **TINY
    )
    assert os.path.isdir(os.path.join(model_dir, "checkpoint_1"))
    assert not os.path.exists(os.path.join(model_dir, "checkpoint_2"))
    with pytest.raises(ValueError, match="other features or generator config"):
        vocoder_trainer.train_vocoder(
            model_dir=model_dir, data_dir=data_dir, train_steps=2, train_config=_train_config(),
            generator_config=hifigan.GeneratorConfig.small(), discriminator_config=hifigan.DiscriminatorConfig.tiny(),
        )


def test_pretraining_reduces_the_reconstruction_loss(data_dir):
    trainer = vocoder_trainer.VocoderTrainer(train_config=_train_config(crop_frames=16), **TINY)
    state = trainer.init(jax.random.PRNGKey(0))
    audio = _piano_batch(data_dir)
    step = jax.jit(trainer.pretrain_step)
    losses = []
    for i in range(12):  # the same batch: the loss must go down
        state, metrics = step(state, audio, jax.random.PRNGKey(0))
        losses.append(float(metrics["generator_loss"]))
    assert int(state.step) == 12
    assert losses[-1] < 0.9 * losses[0]


def test_evaluate_vocoders_on_a_split(tmp_path, data_dir):
    results = evaluation.evaluate_vocoders(data_dir, ["griffin-lim"], split="test", print_fn=lambda _: None)
    row = results["vocoders"]["griffin-lim"]
    assert results["num_pieces"] == 1 and 0.0 < row["mel_l1"] < 0.5 and row["mr_stft"] > 0.0
    assert "griffin-lim" in evaluation.format_table(results)
    path = str(tmp_path / "out" / "eval.json")
    evaluation.write_json(path, results)
    with open(path) as f:
        assert json.load(f)["vocoders"]["griffin-lim"]["pieces"]["flute"]["mel_l1"] == pytest.approx(row["mel_l1"])


@pytest.mark.parametrize(
    "name,config_class",
    [("hifigan_small.gin", hifigan.GeneratorConfig), ("hifigan_tiny.gin", hifigan.GeneratorConfig),
     ("vocos_small.gin", vocos.VocosConfig), ("vocos_tiny.gin", vocos.VocosConfig)],
)
def test_gin_files_parse_and_build(name, config_class):
    gin.clear_config()
    try:
        gin.add_config_file_search_path(REPO)
        gin.parse_config_files_and_bindings(
            [os.path.join(REPO, "gin", "vocoders", name)], ["MODEL_DIR = '/tmp/x'", "DATA_DIR = '/tmp/y'"]
        )
        # The generator the gin file hands train_vocoder, and the trainer built from it.
        reference = gin.query_parameter("vocoder_trainer.train_vocoder.generator_config")
        assert reference.configurable.wrapped is config_class
        trainer = vocoder_trainer.VocoderTrainer(
            gin.get_configurable(config_class)(),
            gin.get_configurable(hifigan.DiscriminatorConfig)(),
            gin.get_configurable(vocoder_trainer.VocoderTrainConfig)(),
        )
        audio = trainer.generator.apply(
            {"params": trainer.init(jax.random.PRNGKey(0)).generator_params}, jnp.full((1, 3, 128), -5.0)
        ) if "tiny" in name else None
        assert audio is None or audio.shape == (1, 960)
        assert gin.query_parameter("%TRAIN_STEPS") > 0
    finally:
        gin.clear_config()


def test_cli_trains_from_gin_and_reports_bad_input(tmp_path, data_dir, capsys, caplog,
                                                   monkeypatch):
    model_dir = str(tmp_path / "cli_model")
    monkeypatch.chdir(tmp_path)  # gin/... is found through the package, without ERROR lines
    argv = [
        "--gin_file=gin/vocoders/hifigan_tiny.gin",
        f"--gin.MODEL_DIR='{model_dir}'",
        f"--gin.DATA_DIR='{data_dir}'",
        "--gin.TRAIN_STEPS=1",
        "--gin.vocoder_trainer.VocoderTrainConfig.pretrain_steps=5",
    ]
    try:
        with caplog.at_level(logging.INFO):
            assert cli.main(argv) == 0
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert os.path.isfile(os.path.join(model_dir, "config.gin"))
        assert os.path.isdir(os.path.join(model_dir, "checkpoint_1"))
        gin.clear_config()
        bad = argv[:2] + [f"--gin.DATA_DIR='{tmp_path / 'no_data'}'"]
        assert cli.main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("msd-train-vocoder: error: ") and "no manifest.json" in err
        assert err.count("\n") == 1
    finally:
        gin.clear_config()


@pytest.mark.slow
def test_gan_steps_run_and_checkpoint(tmp_path, data_dir):
    """Two pretraining then two GAN steps (the GAN step compiles for minutes on a busy CPU)."""
    model_dir = str(tmp_path / "gan")
    metrics = vocoder_trainer.train_vocoder(
        model_dir=model_dir, data_dir=data_dir, train_steps=4, train_config=_train_config(pretrain_steps=2),
        print_fn=lambda _: None, **TINY,
    )
    assert {"adversarial", "feature_matching", "discriminator_loss"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    assert base.load_vocoder(os.path.join(model_dir, "checkpoint_4")).vocode(jnp.zeros((1, 4, 128))).shape == (1, 1280)


def test_vocos_pretraining_reduces_the_reconstruction_loss(data_dir):
    config = _train_config(crop_frames=16, lr_schedule="cosine", warmup_steps=2, decay_steps=20, max_grad_norm=10.0)
    trainer = vocoder_trainer.VocoderTrainer(train_config=config, **VOCOS_TINY)
    state = trainer.init(jax.random.PRNGKey(0))
    audio = _piano_batch(data_dir)
    step = jax.jit(trainer.pretrain_step)
    losses = []
    for _ in range(12):  # the same batch: the loss must go down
        state, metrics = step(state, audio, jax.random.PRNGKey(0))
        losses.append(float(metrics["generator_loss"]))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.9 * losses[0]


def test_vocos_magnitude_loss_and_training_consistency_iterations(data_dir):
    """The magnitude loss trains the Vocos magnitude head towards ln|STFT| in both step kinds;
    training runs num_train_consistency_iterations, vocoding num_consistency_iterations."""
    generator_config = dataclasses.replace(
        vocos.VocosConfig.tiny(), num_consistency_iterations=3, num_train_consistency_iterations=1
    )
    # Only the magnitude loss, so that its gradient alone must lower it.
    config = _train_config(crop_frames=16, magnitude_loss_weight=1.0, mel_loss_weight=0.0, stft_loss_weight=0.0,
                           pretrain_steps=8, learning_rate=1e-2)
    trainer = vocoder_trainer.VocoderTrainer(
        generator_config, VOCOS_TINY["discriminator_config"], config
    )
    assert trainer.generator.config.num_consistency_iterations == 1
    state = trainer.init(jax.random.PRNGKey(0))
    audio = _piano_batch(data_dir)
    pretrain, gan = vocoder_trainer.jitted_steps(trainer)
    magnitude = []
    for i in range(10):  # the same batch; steps 8 and 9 are GAN steps
        state, metrics = (pretrain if i < 8 else gan)(state, audio, jax.random.PRNGKey(0))
        magnitude.append(float(metrics["magnitude_l1"]))
    assert all(np.isfinite(magnitude)) and "discriminator_loss" in metrics
    assert magnitude[7] < 0.9 * magnitude[0]
    # Without the weight the magnitude loss is neither computed nor reported.
    plain = vocoder_trainer.VocoderTrainer(generator_config, VOCOS_TINY["discriminator_config"], _train_config(crop_frames=16))
    _, metrics = jax.jit(plain.pretrain_step)(plain.init(jax.random.PRNGKey(0)), audio, jax.random.PRNGKey(0))
    assert "magnitude_l1" not in metrics


def test_vocos_checkpoint_loads_as_a_vocos_vocoder(tmp_path, data_dir):
    model_dir = str(tmp_path / "vocos")
    vocoder_trainer.train_vocoder(
        model_dir=model_dir, data_dir=data_dir, train_steps=2, train_config=_train_config(),
        print_fn=lambda _: None, **VOCOS_TINY,
    )
    with open(os.path.join(model_dir, vocoder_checkpoints.CONFIG_FILENAME)) as f:
        assert json.load(f)["generator_kind"] == "vocos"
    vocoder = base.load_vocoder(model_dir)
    assert isinstance(vocoder, base.Vocoder) and vocoder.name == "vocos"
    assert vocoder.generator_config == vocos.VocosConfig.tiny()
    log_mel = np.asarray(spectrograms.compute_log_mel(audio_io.load_audio(os.path.join(data_dir, "flute.wav"))))
    audio = np.asarray(vocoder.vocode(log_mel[None, :20]))
    assert audio.shape == (1, 20 * 320) and np.all(np.isfinite(audio))
    # Resuming with another generator kind is refused instead of mixing parameters.
    with pytest.raises(ValueError, match="other features or generator config"):
        vocoder_trainer.train_vocoder(
            model_dir=model_dir, data_dir=data_dir, train_steps=3, train_config=_train_config(), **TINY
        )
