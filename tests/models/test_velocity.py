"""Velocity (issue 16, part 2): the vocabulary sizes the token embedding, ids past the table are
errors, 127-bin gin files build, and velocity tokens reach the model."""

import pathlib

import gin
import jax
import numpy as np
import pytest

from music_spectrogram_diffusion.data import tokenizer, vocabularies
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig
from music_spectrogram_diffusion.models import config, layers
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import example_batch, make_batch
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.testing import fake_models
from music_spectrogram_diffusion.testing.midi_fixtures import make_midi_bytes

REPO = pathlib.Path(__file__).resolve().parents[2]
ONE_BIN = VocabularyConfig(num_velocity_bins=1)
ALL_BINS = VocabularyConfig(num_velocity_bins=127)
# A piano chord and a flute line (programs 0 and 73), so program tokens (ids past 1536 with
# 127 bins) are part of the sequence too.
NOTES = [(0, False, 60, 0.0, 0.5), (0, False, 64, 0.0, 0.5), (73, False, 72, 0.25, 1.0)]


def _tokens(velocity: int, vocab: VocabularyConfig) -> np.ndarray:
    midi = make_midi_bytes([(*note, velocity) for note in NOTES])
    (segment,) = tokenizer.tokenize_midi(midi, vocab=vocab)
    return segment.tokens


def _parse(files, bindings=()):
    gin.parse_config_files_and_bindings([str(REPO / f) for f in files], list(bindings),
                                        finalize_config=False)


# ----------------------------------------------------------------------------- tokens


def test_velocity_30_and_110_differ_with_127_bins_only():
    soft, loud = _tokens(30, ALL_BINS), _tokens(110, ALL_BINS)
    assert soft.shape == loud.shape and not np.array_equal(soft, loud)
    velocity_first = vocabularies.NUM_SPECIAL_IDS + vocabularies.build_codec(
        ALL_BINS).event_type_range("velocity")[0]
    # The only differences are the note-on velocity tokens, bin 30 vs bin 110.
    differ = soft != loud
    assert set(soft[differ] - velocity_first) == {30}
    assert set(loud[differ] - velocity_first) == {110}
    # 127 bins move the program tokens up by 126 (program 73: 1208 -> 1334).
    assert loud.max() == _tokens(110, ONE_BIN).max() + 126
    np.testing.assert_array_equal(_tokens(30, ONE_BIN), _tokens(110, ONE_BIN))


# ----------------------------------------------------------------------------- table size


def test_vocabulary_sizes_the_embedding_table():
    assert config.token_embedding_rows(ONE_BIN) == 1536
    assert config.token_embedding_rows(ALL_BINS) == 1664
    assert config.token_embedding_rows(ONE_BIN, rows=2048) == 2048  # a larger table is fine
    with pytest.raises(ValueError, match=r"1536.*1664.*config\.token_embedding_rows\.rows"):
        config.token_embedding_rows(ALL_BINS, rows=1536)


@pytest.mark.parametrize("model_gin", ["gin/models/diffusion/tiny.gin",
                                       "gin/models/autoregressive/tiny.gin"])
def test_velocity127_gin_sizes_the_model(clean_gin, model_gin):
    _parse([model_gin])
    assert gin.query_parameter("%MODEL").scoped_configurable_fn().network_config.vocab_size == 1536
    gin.clear_config()
    _parse([model_gin, "gin/models/velocity127.gin"])
    model = gin.query_parameter("%MODEL").scoped_configurable_fn()
    assert model.network_config.vocab_size == 1664
    params = jax.eval_shape(model.init, jax.random.key(0), example_batch(model.network_config))
    embedding = next(v for k, v in jax.tree_util.tree_leaves_with_path(params)
                     if "token_embedder" in jax.tree_util.keystr(k))
    assert embedding.shape[0] == 1664


def test_building_a_model_smaller_than_the_vocabulary_is_an_error(clean_gin):
    _parse(["gin/models/diffusion/tiny.gin", "gin/models/velocity127.gin"],
           ["config.token_embedding_rows.rows = 1536"])
    with pytest.raises(ValueError, match=r"1536.*1664"):
        gin.query_parameter("%MODEL").scoped_configurable_fn()


def test_task_gin_files_make_127_bin_tasks(clean_gin, small_embedded_dataset):
    data_dir = small_embedded_dataset()
    for task_gin in ("gin/tasks/embedded_velocity127.gin",
                     "gin/tasks/context_embedded_velocity127.gin"):
        gin.clear_config()
        # The task file alone sets the vocabulary for the model too: one binding, both sides.
        _parse(["gin/models/diffusion/tiny.gin", task_gin], [f"DATA_DIR = '{data_dir}'"])
        model = gin.query_parameter("%MODEL").scoped_configurable_fn()
        source = gin.query_parameter("%TRAIN_DATA").scoped_configurable_fn()
        assert "_vb1" not in source.examples.task.name
        assert source.examples.vocab.num_velocity_bins == 127
        assert model.network_config.vocab_size == 1664
        batch = source.get_batch(0, 2, seed=0)
        assert batch["note_tokens"].max() < model.network_config.vocab_size
        assert source.examples.task.with_context == task_gin.startswith("gin/tasks/context")


# ----------------------------------------------------------------------------- ids past the table


def test_token_id_past_the_table_is_an_error_in_the_model_batch():
    cfg = T5Config.tiny(note_tokens_length=32, target_frames=8, context_frames=8)
    tokens = np.zeros((1, 32), np.int32)
    tokens[0, :17] = _tokens(110, ALL_BINS)
    tokens[0, 17] = vocabularies.vocab_size(ALL_BINS) - 1  # the last (extra) id: 1616
    with pytest.raises(ValueError, match=r"note token ids.*1616.*1536 rows"):
        make_batch(tokens, network_config=cfg)
    make_batch(tokens, network_config=T5Config.tiny(vocab_size=1664, note_tokens_length=32,
                                                    target_frames=8, context_frames=8))


class _TokensPastTheTable(fake_models.FakeBatchSource):
    """Batches of 127-bin-sized token ids (up to 1616) for a model with a 1536-row table."""

    def get_batch(self, index, batch_size, *, seed, rows=None):
        batch = super().get_batch(index, batch_size, seed=seed, rows=rows)
        batch["note_tokens"][:, 0] = vocabularies.vocab_size(ALL_BINS) - 1
        return batch


@pytest.mark.parametrize("bad", ["train", "eval"])
def test_trainer_refuses_batches_with_ids_past_the_table(tmp_path, bad):
    from music_spectrogram_diffusion.training import trainer

    sources = {"train": fake_models.FakeBatchSource(), "eval": fake_models.FakeBatchSource()}
    sources[bad] = _TokensPastTheTable()
    with pytest.raises(ValueError, match=r"note token ids of a batch range over \[\d+, 1616\] "
                                         r"but the embedding table has 1536 rows"):
        trainer.train(model=fake_models.FakeSpectrogramModel(), train_data=sources["train"],
                      eval_data=sources["eval"], eval_period=2, eval_steps=1, eval_images=False,
                      model_dir=str(tmp_path), train_steps=2, batch_size=2, seed=0,
                      frozen_param_mask_fn=fake_models.frozen_param_mask)


def test_velocity_tokens_reach_an_untrained_127_bin_model():
    """With 127 bins the soft and loud tokens give different spectrograms (they did not reach
    the model as distinct inputs with 1 bin)."""
    cfg = T5Config.tiny(vocab_size=1664, note_tokens_length=64, target_frames=16,
                        context_frames=16)
    model = DiffusionModel(network_config=cfg, with_context=False)

    def batch(velocity):
        tokens = np.zeros((1, 64), np.int32)
        segment = _tokens(velocity, ALL_BINS)
        tokens[0, :len(segment)] = segment
        return make_batch(tokens, network_config=cfg)

    params = model.init(jax.random.key(0), batch(30))
    rng = jax.random.key(1)
    soft = np.asarray(model.predict(params, batch(30), rng))
    loud = np.asarray(model.predict(params, batch(110), rng))
    assert np.isfinite(soft).all() and np.isfinite(loud).all()
    assert np.abs(soft - loud).max() > 1e-3


# ----------------------------------------------------------------------------- loudness follows velocity
#
# The embedded dataset's WAVs are RMS-normalized per piece (rendering.normalize_loudness), so a
# piece played softer is stored at the same level: only the balance between its parts (each at
# its own velocity, 72-104) follows velocity. To learn absolute dynamics the tests re-render the
# dataset's arranged MIDI at two velocities without normalization (the same renderer and
# soundfont), and train on two pieces, evaluate on the third.

SOFT, LOUD = 40, 110
SHORT = dict(segment_frames=64, context_frames=64, max_note_tokens=256)  # 1.28 s segments


def _rendered_pieces(data_dir, features):
    import glob
    import io

    import pretty_midi

    from music_spectrogram_diffusion.audio import spectrograms
    from music_spectrogram_diffusion.data import midi_io, note_sequences, rendering

    pieces = {}
    for k, path in enumerate(sorted(glob.glob(f"{data_dir}/midi/*.mid"))):
        for velocity in (SOFT, LOUD):
            midi = pretty_midi.PrettyMIDI(path)
            for instrument in midi.instruments:
                for note in instrument.notes:
                    note.velocity = velocity
            buffer = io.BytesIO()
            midi.write(buffer)
            audio = rendering.render_midi(buffer.getvalue(), sample_rate=features.sample_rate,
                                          normalize=False)
            log_mel = spectrograms.compute_log_mel_numpy(audio, features)
            ns = note_sequences.preprocess_note_sequence(midi_io.read_midi(buffer.getvalue()))
            index = tokenizer.index_note_sequence(ns, num_frames=log_mel.shape[0],
                                                  vocab=ALL_BINS, features=features)
            pieces[k, velocity] = (log_mel, index)
    return pieces


def _examples(piece, starts, features):
    from music_spectrogram_diffusion.data import windows

    log_mel, index = piece
    examples = [windows.window_example(log_mel, index, s, s + features.segment_frames,
                                       with_context=False, vocab=ALL_BINS, features=features)
                for s in starts]
    return {k: np.stack([e[k] for e in examples]) for k in examples[0]}


def test_rendered_loudness_follows_velocity(small_embedded_dataset):
    """The training signal: unnormalized renderings at velocity 110 are louder than at 40."""
    from music_spectrogram_diffusion.features import FeatureConfig

    pieces = _rendered_pieces(small_embedded_dataset(), FeatureConfig(**SHORT))
    for k in range(3):
        assert pieces[k, LOUD][0].mean() > pieces[k, SOFT][0].mean() + 0.5


@pytest.mark.slow
def test_trained_127_bin_model_loudness_follows_velocity(small_embedded_dataset):
    """A tiny x0 diffusion model (AdamW 3e-3, as gin/main/diffusion_cpu.gin) trained 200 steps
    on two pieces at both velocities plays the held-out piece louder with loud velocity tokens.

    Measured (README "Dynamics (velocity)"): mean predicted log-mel -4.49 / -4.49 at step 0,
    -1.16 (velocity 40) / -0.60 (velocity 110) at step 200; targets -2.03 / -1.05. About 60 s
    on an idle 2-core CPU.
    """
    import flax.linen as nn
    import optax

    from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
    from music_spectrogram_diffusion.features import FeatureConfig
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionConfig
    from music_spectrogram_diffusion.training import optimizers

    features = FeatureConfig(**SHORT)
    frames = features.segment_frames
    pieces = _rendered_pieces(small_embedded_dataset(), features)
    cfg = T5Config.tiny(vocab_size=config.token_embedding_rows(ALL_BINS), note_tokens_length=256,
                        target_frames=frames, context_frames=frames)
    model = DiffusionModel(network_config=cfg, with_context=False,
                           diffusion_config=DiffusionConfig(prediction="x0", loss_target="x0"))
    rng = np.random.default_rng(0)

    def train_batch(size=8):
        rows = []
        for _ in range(size):
            log_mel, index = pieces[int(rng.integers(2)), (SOFT, LOUD)[rng.integers(2)]]
            start = int(rng.integers(0, log_mel.shape[0] - frames))
            rows.append(_examples((log_mel, index), [start], features))
        return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}

    params = nn.unbox(model.init(jax.random.key(0), train_batch(1)))
    optimizer = optimizers.make_optimizer(
        optimizers.OptimizerConfig(name="adamw", learning_rate=3e-3, schedule="linear_warmup",
                                   warmup_steps=10, max_grad_norm=1.0),
        layers.frozen_param_mask(params))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        grads = jax.grad(lambda p: model.loss_fn(p, batch, key)[0])(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(200):
        params, opt_state = step(params, opt_state, train_batch(), jax.random.key(100 + i))

    def mean_log_mel(velocity):
        log_mel, _ = pieces[2, velocity]
        held_out = _examples(pieces[2, velocity], range(0, log_mel.shape[0] - frames, frames),
                             features)
        batch = make_batch(held_out["note_tokens"], network_config=cfg)
        predicted = model.predict(params, batch, jax.random.key(7),
                                  sampler=SamplerConfig(name="ddim", num_steps=20))
        return float(np.mean(np.asarray(predicted)))

    soft, loud = mean_log_mel(SOFT), mean_log_mel(LOUD)
    assert loud > soft + 0.25, (soft, loud)
