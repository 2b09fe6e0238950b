"""The pure train step: gradient accumulation, explicit dropout keys, non-finite handling."""

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from music_spectrogram_diffusion.models.diffusion_model import DiffusionConfig

from music_spectrogram_diffusion.testing import fake_models
from music_spectrogram_diffusion.training import optimizers, partitioning, train_state, trainer


def _setup(model, batch):
    mesh = partitioning.make_mesh(partitioning.PartitionConfig())
    state, _, tx = train_state.create_train_state(
        model,
        lambda p: optimizers.make_optimizer(
            optimizers.OptimizerConfig(name="adamw"), fake_models.frozen_param_mask(p)),
        jax.random.key(0), batch, mesh, partitioning.STANDARD_LOGICAL_AXIS_RULES)
    return state, tx


def test_microbatched_step_equals_full_batch_step():
    model = fake_models.FakeSpectrogramModel(dropout_rate=0.0)
    batch = fake_models.random_batch(0, 4)
    state, tx = _setup(model, batch)
    full = jax.jit(trainer.make_train_step(model, tx))
    micro = jax.jit(trainer.make_train_step(model, tx, num_microbatches=2))
    rng = jax.random.key(1)
    s1, m1 = full(state, batch, rng)
    s2, m2 = micro(state, batch, rng)
    np.testing.assert_allclose(float(m1["loss"]), float(m2["loss"]), rtol=1e-5)
    np.testing.assert_allclose(float(m1["grad_norm"]), float(m2["grad_norm"]), rtol=1e-4)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(s1.step) == int(s2.step) == 1
    frozen = s1.params["params"]["Embed_0"]["embedding"]
    np.testing.assert_array_equal(frozen, state.params["params"]["Embed_0"]["embedding"])


_TINY = dict(note_tokens_length=64, target_frames=16, context_frames=16)


def _unequal_batch(batch_size=8, seed=0):
    """Every example with its own number of note tokens, real target and context frames."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((batch_size, 64), np.int32)
    target_mask = np.zeros((batch_size, 16), np.float32)
    context_mask = np.zeros((batch_size, 16), np.float32)
    for b in range(batch_size):
        n = int(rng.integers(1, 64))
        tokens[b, :n] = rng.integers(3, 1000, n)
        target_mask[b, : [16, 1, 9, 4, 16, 2, 12, 7][b % 8]] = 1.0
        context_mask[b, : int(rng.integers(0, 17))] = 1.0
    frames = lambda: rng.uniform(-11.5, 4.0, (batch_size, 16, 128)).astype(np.float32)  # noqa: E731
    return {"note_tokens": tokens, "target_frames": frames(), "target_mask": target_mask,
            "context_frames": frames(), "context_mask": context_mask}


def _models_with_random_losses():
    from music_spectrogram_diffusion.models.autoregressive_model import AutoregressiveModel
    from music_spectrogram_diffusion.models.config import T5Config
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel

    config = T5Config.tiny(**_TINY)
    return {
        # Noise, times and guidance dropout (p = 0.5) are all drawn per example.
        "diffusion": DiffusionModel(network_config=config, with_context=True,
                                    diffusion_config=DiffusionConfig(drop_condition_prob=0.5)),
        "autoregressive": AutoregressiveModel(network_config=config, input_noise_std=0.5),
    }


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_microbatches_weighted_by_real_frames_give_the_full_batch_gradient(kind):
    model = _models_with_random_losses()[kind]
    batch = _unequal_batch()
    mesh = partitioning.make_mesh(partitioning.PartitionConfig())
    # SGD with learning rate 1: the parameter change is minus the gradient.
    state, _, tx = train_state.create_train_state(
        model, lambda p: optax.sgd(1.0), jax.random.key(0), batch, mesh,
        partitioning.STANDARD_LOGICAL_AXIS_RULES)
    old = jax.tree.leaves(state.params)
    rng = jax.random.key(3)
    results = {m: jax.jit(trainer.make_train_step(model, tx, num_microbatches=m))(state, batch, rng)
               for m in (1, 4)}
    (full, full_metrics), (micro, micro_metrics) = results[1], results[4]
    delta_full = np.concatenate([np.ravel(a - o) for a, o in zip(jax.tree.leaves(full.params), old)])
    delta_micro = np.concatenate([np.ravel(b - o) for b, o in zip(jax.tree.leaves(micro.params), old)])
    assert np.linalg.norm(delta_full) > 0
    relative = np.linalg.norm(delta_full - delta_micro) / np.linalg.norm(delta_full)
    assert relative < 1e-5, relative
    for name in ("loss", "loss_per_frame", "model/loss_weight", "model/target_frames"):
        np.testing.assert_allclose(micro_metrics[name], full_metrics[name], rtol=1e-5, err_msg=name)


def _relative_difference(a, b) -> float:
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])  # noqa: E731
    return float(np.linalg.norm(flat(a) - flat(b)) / np.linalg.norm(flat(a)))


@pytest.mark.parametrize("kind", ["diffusion", "autoregressive"])
def test_bucketed_note_tokens_give_the_loss_and_gradients_of_full_padding(kind):
    from music_spectrogram_diffusion.data import feature_converters
    from music_spectrogram_diffusion.models.config import T5Config

    model = dataclasses.replace(_models_with_random_losses()[kind], network_config=T5Config.tiny())
    batch = fake_models.random_batch(0, 3)  # 2048 tokens, 5-39 of them real
    batch["target_mask"][1, 100:] = 0.0
    batch["context_mask"][2, 30:] = 0.0
    cut = feature_converters.bucket_note_tokens(batch, feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS)
    assert cut["note_tokens"].shape == (3, 256)
    params = jax.jit(model.init)(jax.random.key(0), batch)
    keys = jax.random.split(jax.random.key(1), 3)
    loss_and_grad = jax.jit(jax.value_and_grad(model.loss_fn, has_aux=True))
    (full_loss, full_metrics), full_grads = loss_and_grad(params, batch, keys)
    (cut_loss, cut_metrics), cut_grads = loss_and_grad(params, cut, keys)
    np.testing.assert_allclose(cut_loss, full_loss, rtol=1e-5)
    for name in full_metrics:
        np.testing.assert_allclose(cut_metrics[name], full_metrics[name], rtol=1e-5, err_msg=name)
    assert _relative_difference(full_grads, cut_grads) < 1e-5


_TRACED_LENGTHS = []


@dataclasses.dataclass(frozen=True)
class _TraceCountingModel(fake_models.FakeSpectrogramModel):
    def loss_fn(self, params, batch, rng, *, train=True):
        _TRACED_LENGTHS.append(batch["note_tokens"].shape[1])  # runs once per compilation
        return super().loss_fn(params, batch, rng, train=train)


def test_buckets_bound_the_number_of_compilations(tmp_path):
    from music_spectrogram_diffusion.data import feature_converters

    buckets, source, steps = (8, 16, 32, 64), fake_models.FakeBatchSource(), 12
    expected = {feature_converters.bucket_length(
        feature_converters.longest_note_tokens(source.get_batch(i, 2, seed=0)["note_tokens"]),
        buckets, 2048) for i in range(steps)}
    assert len(expected) >= 2  # the batches do land in different buckets
    _TRACED_LENGTHS.clear()
    trainer.train(model=_TraceCountingModel(), train_data=source, model_dir=str(tmp_path),
                  train_steps=steps, batch_size=2, seed=0, note_token_buckets=buckets,
                  frozen_param_mask_fn=fake_models.frozen_param_mask)
    assert sorted(_TRACED_LENGTHS) == sorted(expected), _TRACED_LENGTHS


def test_dropout_key_is_explicit_and_changes_the_loss():
    model = fake_models.FakeSpectrogramModel(dropout_rate=0.5)
    batch = fake_models.random_batch(0, 2)
    state, tx = _setup(model, batch)
    step = jax.jit(trainer.make_train_step(model, tx))
    a = float(step(state, batch, jax.random.key(1))[1]["loss"])
    b = float(step(state, batch, jax.random.key(1))[1]["loss"])
    c = float(step(state, batch, jax.random.key(2))[1]["loss"])
    assert a == b and a != c


@dataclasses.dataclass(frozen=True)
class _NanModel(fake_models.FakeSpectrogramModel):
    def loss_fn(self, params, batch, rng, *, train=True):
        loss, aux = super().loss_fn(params, batch, rng, train=train)
        return loss * jnp.nan, aux


def test_nonfinite_update_skipped_when_configured():
    model = _NanModel()
    batch = fake_models.random_batch(0, 2)
    state, tx = _setup(model, batch)
    step = jax.jit(trainer.make_train_step(model, tx, skip_nonfinite=True))
    new, metrics = step(state, batch, jax.random.key(0))
    assert float(metrics["nonfinite"]) == 1.0 and int(new.step) == 1
    for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(a, b)


def test_nonfinite_loss_stops_training_naming_the_step(tmp_path):
    with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 0"):
        trainer.train(model=_NanModel(), train_data=fake_models.FakeBatchSource(),
                      model_dir=str(tmp_path), train_steps=3, batch_size=2, seed=0,
                      frozen_param_mask_fn=fake_models.frozen_param_mask)


@dataclasses.dataclass(frozen=True)
class _NanFromStep(fake_models.FakeBatchSource):
    """Batches from ``bad_step`` on carry a NaN target, so the loss turns non-finite there."""

    bad_step: int = 3

    def get_batch(self, index, batch_size, *, seed, rows=None):
        batch = super().get_batch(index, batch_size, seed=seed, rows=rows)
        if index >= self.bad_step:
            batch["target_frames"] = np.full_like(batch["target_frames"], np.nan)
        return batch


def test_nonfinite_is_read_back_every_log_period_and_names_the_first_bad_step(tmp_path):
    from music_spectrogram_diffusion.training import checkpoints

    with pytest.raises(trainer.NonFiniteLossError, match="non-finite loss at step 3 "):
        trainer.train(model=fake_models.FakeSpectrogramModel(), train_data=_NanFromStep(),
                      model_dir=str(tmp_path), train_steps=20, batch_size=2, seed=0,
                      log_period=10, checkpoint=checkpoints.CheckpointConfig(period=2, keep=None),
                      frozen_param_mask_fn=fake_models.frozen_param_mask)
    # Steps 4.. ran (the loop does not wait for the device each step) but every save is
    # preceded by a read-back, so only the finite checkpoint_2 is on disk.
    assert checkpoints.list_checkpoints(str(tmp_path)) == [2]


def test_train_writes_scalars_images_and_checkpoints(tmp_path):
    from music_spectrogram_diffusion.training import checkpoints, summaries

    result = trainer.train(
        model=fake_models.FakeSpectrogramModel(), train_data=fake_models.FakeBatchSource(),
        eval_data=fake_models.FakeBatchSource(pool_seed=7), model_dir=str(tmp_path),
        train_steps=4, batch_size=4, seed=0, log_period=2, eval_period=4, eval_steps=1,
        checkpoint=checkpoints.CheckpointConfig(period=2, keep=1),
        frozen_param_mask_fn=fake_models.frozen_param_mask, config_text="# test\n")
    assert result.step == 4 and not result.stopped_by_signal
    assert checkpoints.list_checkpoints(str(tmp_path)) == [4]
    assert (tmp_path / "config.gin").read_text() == "# test\n"
    train = summaries.read_scalars(str(tmp_path / "train"))
    for tag in ("loss", "loss_per_frame", "grad_norm", "learning_rate", "steps_per_second",
                "examples_per_second", "data_wait_fraction"):
        assert [s for s, _ in train[tag]] == [2, 4], tag
    assert all(0.0 <= v <= 1.0 for _, v in train["data_wait_fraction"])
    assert [s for s, _ in summaries.read_scalars(str(tmp_path / "eval"))["loss"]] == [4]
    png = (tmp_path / "eval" / "spectrogram_step_4.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


class _SlowSource(fake_models.FakeBatchSource):
    """Takes 0.2 s per batch: far longer than the fake model's step."""

    def get_batch(self, index, batch_size, *, seed, rows=None):
        time.sleep(0.2)
        return super().get_batch(index, batch_size, seed=seed, rows=rows)


def test_data_wait_fraction_measures_the_time_blocked_on_input(tmp_path):
    def run(source, name):
        return trainer.train(
            model=fake_models.FakeSpectrogramModel(), train_data=source,
            model_dir=str(tmp_path / name), train_steps=16, batch_size=2, seed=0, log_period=16,
            frozen_param_mask_fn=fake_models.frozen_param_mask).metrics["data_wait_fraction"]

    slow = run(_SlowSource(), "slow")
    fast = run(fake_models.FakeBatchSource(), "fast")
    # 16 batches x 0.2 s of input against milliseconds of compute: waiting is a large part of
    # the wall time (which also holds the first step's compilation); a free source waits little.
    assert slow > 0.25
    assert fast < slow / 4


@dataclasses.dataclass(frozen=True)
class _DrawingModel(fake_models.FakeSpectrogramModel):
    """Reports a per-example random draw of its loss keys (like a diffusion loss's t)."""

    def loss_fn(self, params, batch, rng, *, train=True):
        from music_spectrogram_diffusion.models.contract import split_loss_keys

        loss, aux = super().loss_fn(params, batch, rng, train=train)
        _, keys = split_loss_keys(rng, batch["note_tokens"].shape[0])
        return loss, dict(aux, draw=jnp.mean(jax.vmap(jax.random.uniform)(keys)))


def test_train_eval_draws_are_the_same_at_every_evaluation(tmp_path):
    from music_spectrogram_diffusion.training import summaries

    trainer.train(
        model=_DrawingModel(), train_data=fake_models.FakeBatchSource(),
        eval_data=fake_models.FakeBatchSource(pool_seed=7), model_dir=str(tmp_path),
        train_steps=3, batch_size=2, seed=0, eval_period=1, eval_steps=2, eval_images=False,
        frozen_param_mask_fn=fake_models.frozen_param_mask)
    scalars = summaries.read_scalars(str(tmp_path / "eval"))
    draws = [v for _, v in scalars["model/draw"]]
    assert len(draws) == 3 and draws[0] == draws[1] == draws[2], draws
    losses = [v for _, v in scalars["loss"]]
    assert losses[0] != losses[2]  # the parameters did change between the evaluations
    train_draws = [v for _, v in summaries.read_scalars(str(tmp_path / "train"))["model/draw"]]
    assert train_draws and train_draws[0] != draws[0]


def _train(tmp_path, **kwargs):
    from music_spectrogram_diffusion.training import checkpoints

    return trainer.train(
        model=fake_models.FakeSpectrogramModel(), train_data=fake_models.FakeBatchSource(),
        model_dir=str(tmp_path), batch_size=2, seed=0, log_period=1,
        checkpoint=checkpoints.CheckpointConfig(period=100, keep=None),
        frozen_param_mask_fn=fake_models.frozen_param_mask, **kwargs)


def test_should_stop_saves_and_returns_and_a_rerun_resumes(tmp_path):
    from music_spectrogram_diffusion.training import checkpoints

    seen = []
    result = _train(tmp_path, train_steps=10, save_initial_checkpoint=True,
                    should_stop=lambda step: seen.append(step) or step == 3)
    assert result.step == 3 and result.stop_reason == "should_stop"
    assert not result.stopped_by_signal and seen == [1, 2, 3]
    assert checkpoints.list_checkpoints(str(tmp_path)) == [0, 3]
    resumed = _train(tmp_path, train_steps=5, save_initial_checkpoint=True)
    assert resumed.step == 5 and resumed.stop_reason is None
    # Resuming saves no second step-0 checkpoint.
    assert checkpoints.list_checkpoints(str(tmp_path)) == [0, 3, 5]
    # Re-running the finished run (README: "re-running resumes") does nothing and says so.
    again = _train(tmp_path, train_steps=5)
    assert again.step == 5 and again.stop_reason is None
    assert checkpoints.list_checkpoints(str(tmp_path)) == [0, 3, 5]


def test_deadline_stops_the_run_with_a_checkpoint(tmp_path):
    from music_spectrogram_diffusion.training import checkpoints

    result = _train(tmp_path, train_steps=1000, max_seconds=1e-3)
    assert result.stop_reason == "deadline" and result.step == 1
    assert checkpoints.list_checkpoints(str(tmp_path)) == [1]
    with pytest.raises(ValueError, match="max_seconds must be > 0"):
        _train(tmp_path / "x", train_steps=2, max_seconds=0)


def test_model_json_is_written_for_registered_models(tmp_path):
    from music_spectrogram_diffusion.models import registry
    from music_spectrogram_diffusion.models.autoregressive_model import AutoregressiveModel
    from music_spectrogram_diffusion.models.config import T5Config

    _train(tmp_path / "fake", train_steps=1)
    assert not (tmp_path / "fake" / "model.json").exists()  # not a registered kind
    model = AutoregressiveModel(network_config=T5Config.tiny(), input_noise_std=0.5)
    trainer.train(model=model, train_data=fake_models.FakeBatchSource(),
                  model_dir=str(tmp_path / "ar"), train_steps=1, batch_size=1, seed=0)
    assert registry.read_model_config(str(tmp_path / "ar")) == model


def test_loader_workers_give_the_same_run_and_checkpoints_hold_its_position(tmp_path):
    import orbax.checkpoint as ocp

    from music_spectrogram_diffusion.training import checkpoints

    results = {}
    for workers in (0, 2):
        model_dir = tmp_path / f"workers{workers}"
        trainer.train(model=fake_models.FakeSpectrogramModel(),
                      train_data=fake_models.FakeBatchSource(), model_dir=str(model_dir),
                      train_steps=3, batch_size=2, seed=0, log_period=1, data_workers=workers,
                      checkpoint=checkpoints.CheckpointConfig(period=3, keep=None),
                      frozen_param_mask_fn=fake_models.frozen_param_mask)
        path = os.path.join(checkpoints.checkpoint_path(str(model_dir), 3), "metadata")
        metadata = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
        assert metadata["data"] == {"next_step": 3, "seed": 0, "batch_size": 2}
        tree = ocp.StandardCheckpointer().restore(
            os.path.join(checkpoints.checkpoint_path(str(model_dir), 3), "state"))
        results[workers] = jax.tree.leaves(tree["params"])
    for a, b in zip(results[0], results[2]):
        np.testing.assert_array_equal(a, b)
