"""The training loop, t5x style: a pure jitted ``train_step`` plus a resumable driver ``train``.

``make_train_step`` returns ``train_step(state, batch, rng) -> (state, metrics)``: gradient
accumulation over microbatches inside one ``lax.scan``, the dropout key passed in explicitly
(``train`` derives it as ``fold_in(key(seed), step)``, so a resumed run draws the same dropout
as an uninterrupted one; it is split per example, so microbatches draw as the full batch does), and an optional skip of non-finite updates. ``train`` builds the mesh
and sharded state, resumes from the newest complete checkpoint in ``model_dir``, and loops:
batch ``s`` comes from ``train_data.get_batch(s, ...)``, a pure function of (seed, s), read ahead
by ``data.loader.BatchLoader`` (Grain worker processes) and put on the device while the previous
step runs; every checkpoint records the loader's position (``metadata['data']``), and a resumed
run continues from it, so it sees exactly the batches of an uninterrupted one. Train-eval loss and target-vs-sampled spectrogram images are written every
``eval_period`` steps. A run stops early, saving a checkpoint and returning cleanly, on SIGTERM,
at a wall-clock deadline (``max_seconds``) or when the caller's ``should_stop(step)`` says so;
``save_initial_checkpoint`` also saves the untrained state as checkpoint_0, so a job can
evaluate the initialisation without copying the trainer's init sequence.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time
from typing import Any, Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from music_spectrogram_diffusion.training import checkpoints as ckpt_lib
from music_spectrogram_diffusion.training import optimizers as opt_lib
from music_spectrogram_diffusion.training import partitioning, summaries
from music_spectrogram_diffusion import file_io
from music_spectrogram_diffusion.data import feature_converters
from music_spectrogram_diffusion.data import loader as data_loader
from music_spectrogram_diffusion.data.vocabularies import VocabularyConfig
from music_spectrogram_diffusion.models import registry
from music_spectrogram_diffusion.models.contract import LOSS_WEIGHT, SpectrogramModel
from music_spectrogram_diffusion.models.contract import metric_reduction
from music_spectrogram_diffusion.models.layers import check_ids_in_table
from music_spectrogram_diffusion.training.train_state import (
    TrainState,
    abstract_state,
    create_train_state,
)

logger = logging.getLogger(__name__)

NONFINITE_ACTIONS = ("stop", "skip")
DATA_ITEM = "data"  # checkpoint metadata key of the input iterator's position
MICROBATCH_REDUCTIONS = ("mean", "sum")


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite."""


class BatchSource(Protocol):
    """Model batches by index; batch ``index`` must be a pure function of (seed, index)."""

    def get_batch(
        self, index: int, batch_size: int, *, seed: int, rows: slice | None = None
    ) -> dict[str, np.ndarray]: ...


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` did: final step, last metrics, why it stopped."""

    step: int
    metrics: dict[str, float]
    stopped_by_signal: bool
    model_dir: str
    stop_reason: str | None = None  # None (reached train_steps), 'signal', 'deadline', 'should_stop'


def _tree_where(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def _loss_metrics(loss, aux: dict, batch: dict) -> dict:
    """The model's own metrics under 'model/', plus loss and loss per real target frame."""
    metrics = {f"model/{k}": jnp.asarray(v, jnp.float32) for k, v in aux.items()}
    # A model that normalises its loss reports its own per-frame value; for the original's
    # unnormalised sum (spec §5.3) it is loss / number of real target frames.
    per_frame = aux.get("loss_per_frame", aux.get("loss_per_target_frame"))
    if per_frame is None:
        per_frame = loss / jnp.maximum(jnp.sum(batch["target_mask"]), 1.0)
    metrics.update(loss=jnp.asarray(loss, jnp.float32), loss_per_frame=per_frame)
    return metrics


def _total_weight(weights):
    total = jnp.sum(weights)
    return jnp.where(total > 0, total, 1.0)  # nothing real anywhere: the loss is 0, as unsplit


def _combine_metrics(auxes: dict) -> dict:
    """Stacked per-microbatch metrics {name: [M]} -> the batch's (``contract.metric_reduction``)."""
    share = auxes[LOSS_WEIGHT] / _total_weight(auxes[LOSS_WEIGHT])
    combine = {"sum": jnp.sum, "weighted_mean": lambda x: jnp.sum(x * share), "mean": jnp.mean}
    return {k: combine[metric_reduction(k)](v) for k, v in auxes.items()}


def make_train_step(
    model: SpectrogramModel,
    optimizer: optax.GradientTransformation,
    *,
    num_microbatches: int = 1,
    microbatch_reduction: str = "mean",
    skip_nonfinite: bool = False,
    learning_rate_fn: optax.Schedule | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Builds the pure, jit-able ``train_step(state, batch, rng) -> (state, metrics)``.

    ``rng`` is split into one key per example (``example_keys``), handed to the loss with the
    example's row, so every example draws the same noise whatever ``num_microbatches`` is.

    Args:
      model: the model; its ``loss_fn(params, batch, rng, train=True)`` is differentiated.
      optimizer: the optax transformation the state was created with.
      num_microbatches: split the batch into this many microbatches and accumulate gradients
        (t5x ``num_microbatches``); with 'mean' the result is the full-batch gradient.
      microbatch_reduction: 'mean' weights microbatch losses and gradients by their
        ``LOSS_WEIGHT`` (real frames), which gives the full-batch loss and gradient for losses
        that are means over real frames; 'sum' adds them (t5x's convention, right for the
        original's unnormalised sum losses, spec §5.3).
      skip_nonfinite: if the loss or gradient norm is not finite, keep the old params and
        optimizer state (the step counter still advances, so the data moves on).
      learning_rate_fn: the schedule, only to report ``learning_rate`` in the metrics.
    """
    if microbatch_reduction not in MICROBATCH_REDUCTIONS:
        raise ValueError(
            f"microbatch_reduction={microbatch_reduction!r}; valid values: {MICROBATCH_REDUCTIONS}"
        )
    if num_microbatches < 1:
        raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}")

    grad_fn = jax.value_and_grad(
        lambda params, batch, rng: model.loss_fn(params, batch, rng, train=True), has_aux=True
    )

    def microbatches(tree):
        # Microbatch i takes rows i, i+M, i+2M, ...: every microbatch then spans every data shard.
        def split(x):
            per = x.shape[0] // num_microbatches
            return jnp.swapaxes(x.reshape((per, num_microbatches) + x.shape[1:]), 0, 1)

        return jax.tree.map(split, tree)

    def train_step(state: TrainState, batch: dict, rng: jax.Array):
        keys = example_keys(rng, batch)
        if num_microbatches == 1:
            (loss, aux), grads = grad_fn(state.params, batch, keys)
        else:
            split_batch, split_keys = microbatches((batch, keys))

            def body(grad_sum, i):
                mb, mb_keys = jax.tree.map(lambda x: x[i], (split_batch, split_keys))
                (loss, aux), grads = grad_fn(state.params, mb, mb_keys)
                # 'mean': sum(weight_i * grad_i) / sum(weight_i) below is the full-batch gradient
                # of a loss that is a mean over LOSS_WEIGHT (real frames); 'sum': plain sum.
                scale = aux[LOSS_WEIGHT] if microbatch_reduction == "mean" else 1.0
                grad_sum = jax.tree.map(lambda a, g: a + scale * g, grad_sum, grads)
                return grad_sum, (loss, aux)

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            grads, (losses, auxes) = jax.lax.scan(body, zeros, jnp.arange(num_microbatches))
            aux = _combine_metrics(auxes)
            if microbatch_reduction == "mean":
                total = _total_weight(auxes[LOSS_WEIGHT])
                loss = jnp.sum(losses * auxes[LOSS_WEIGHT]) / total
                grads = jax.tree.map(lambda g: g / total, grads)
            else:
                loss = jnp.sum(losses)
        grad_norm = optax.global_norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        if skip_nonfinite:
            params = _tree_where(finite, params, state.params)
            opt_state = _tree_where(finite, opt_state, state.opt_state)
        metrics = _loss_metrics(loss, aux, batch)
        metrics.update(
            grad_norm=grad_norm,
            nonfinite=1.0 - finite.astype(jnp.float32),
        )
        if learning_rate_fn is not None:
            metrics["learning_rate"] = jnp.asarray(learning_rate_fn(state.step), jnp.float32)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step


def jit_train_step(model: SpectrogramModel, optimizer: optax.GradientTransformation,
                   state_shardings: TrainState, mesh, **step_options: Any):
    """``make_train_step(model, optimizer, **step_options)`` jitted with the trainer's shardings:
    the state as ``state_shardings`` (donated), batches over 'data', key and metrics replicated.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        make_train_step(model, optimizer, **step_options),
        in_shardings=(state_shardings, partitioning.batch_sharding(mesh), replicated),
        out_shardings=(state_shardings, replicated),
        donate_argnums=(0,),
    )


def example_keys(rng: jax.Array, batch: dict) -> jax.Array:
    """One key per example of ``batch`` (``contract.split_loss_keys`` takes them)."""
    return jax.random.split(rng, batch["target_frames"].shape[0])


def make_eval_step(model: SpectrogramModel) -> Callable[[Any, dict, jax.Array], dict]:
    """``eval_step(params, batch, rng) -> metrics``: the loss with dropout off."""

    def eval_step(params, batch, rng):
        loss, aux = model.loss_fn(params, batch, example_keys(rng, batch), train=False)
        return _loss_metrics(loss, aux, batch)

    return eval_step


class SigtermFlag:
    """Turns SIGTERM into a flag the loop polls (so it saves and exits between steps)."""

    def __init__(self):
        self.raised = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # Not the main thread: cannot install handlers; run without one.
            self._previous = None
        return self

    def _handle(self, signum, frame):
        del signum, frame
        self.raised = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


STOP_MESSAGES = {"signal": "SIGTERM", "deadline": "deadline reached",
                 "should_stop": "stop requested"}


class StopCheck:
    """Why a training loop should stop early: SIGTERM, a wall-clock deadline, or the caller.

    A context manager (it installs the SIGTERM handler); the clock starts on entry. Shared by
    ``train`` and the vocoder trainer, so every loop stops the same ways.

    Args:
      max_seconds: wall-clock budget from entry; None for none.
      should_stop: called with the step after each step; True stops.
    """

    def __init__(self, max_seconds: float | None = None,
                 should_stop: Callable[[int], bool] | None = None):
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0 or None, got {max_seconds}")
        self._max_seconds = max_seconds
        self._should_stop = should_stop
        self._sigterm = SigtermFlag()
        self._started = 0.0

    def __enter__(self) -> StopCheck:
        self._started = time.monotonic()
        self._sigterm.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._sigterm.__exit__(*exc)

    def reason(self, step: int) -> str | None:
        """None, or 'signal' / 'deadline' / 'should_stop' (see ``STOP_MESSAGES``)."""
        if self._sigterm.raised:
            return "signal"
        if self._max_seconds is not None and time.monotonic() - self._started >= self._max_seconds:
            return "deadline"
        if self._should_stop is not None and self._should_stop(step):
            return "should_stop"
        return None


def host_batch(source: BatchSource, index: int, batch_size: int, seed: int,
               buckets: Sequence[int] = (), table_rows: int | None = None) -> dict:
    """This host's rows of batch ``index``, ready for the step (``_ready``)."""
    rows = partitioning.host_batch_slice(batch_size) if jax.process_count() > 1 else None
    return _ready(source.get_batch(index, batch_size, seed=seed, rows=rows), buckets, table_rows)


def _ready(batch: dict, buckets: Sequence[int], table_rows: int | None = None) -> dict:
    """``batch`` checked against the token embedding table (``table_rows`` rows: an id past it
    would be embedded as zeros) and cut to the global batch's bucket."""
    if table_rows is not None:
        check_ids_in_table(batch["note_tokens"], table_rows, what="note token ids of a batch")
    return _bucketed(batch, buckets)


def _bucketed(batch: dict, buckets: Sequence[int]) -> dict:
    """``batch`` with note tokens cut to the bucket of the global batch's longest row."""
    if not buckets:
        return batch
    # Every host must cut to the same length: the bucket of the longest row of ALL hosts.
    longest = partitioning.max_over_hosts(feature_converters.longest_note_tokens(batch["note_tokens"]))
    return feature_converters.bucket_note_tokens(batch, buckets, longest)


def _make_loader(source: BatchSource, *, batch_size: int, seed: int, start_step: int,
                 end_step: int, metadata: dict | None, num_workers: int, prefetch: int
                 ) -> data_loader.BatchLoader:
    """This host's loader of batches start_step, start_step + 1, ..., continuing the saved
    iterator position of a resumed run (which must agree with the state's step)."""
    rows = partitioning.host_batch_slice(batch_size) if jax.process_count() > 1 else None
    options = dict(rows=rows, num_workers=num_workers, prefetch=prefetch, end_step=end_step)
    saved = (metadata or {}).get(DATA_ITEM)
    if saved is not None and saved.get("batch_size") == batch_size and saved.get("seed") == seed:
        if saved.get("next_step") != start_step:
            raise ckpt_lib.CheckpointError(
                f"checkpoint_{start_step}: its data position {saved} disagrees with its step "
                f"{start_step}; the checkpoint is inconsistent, delete it to resume from the one before")
        return data_loader.BatchLoader.from_state(source, saved, **options)
    return data_loader.BatchLoader(source, batch_size=batch_size, seed=seed,
                                   start_step=start_step, **options)


class _DataWaitTimer:
    """Wall time the loop spends blocked on the input, as a fraction of the wall time since the
    previous reading (one log period: the first also holds the first step's compilation)."""

    def __init__(self):
        self._start = time.perf_counter()
        self._waited = 0.0

    def next(self, iterator, finish=lambda item: item):
        """``finish(next(iterator))``, timed: the host-side work that readies the next batch."""
        t0 = time.perf_counter()
        item = finish(next(iterator))
        self._waited += time.perf_counter() - t0
        return item

    def fraction(self) -> float:
        """The fraction since the previous call (or the start); starts the next period."""
        now = time.perf_counter()
        fraction = self._waited / max(now - self._start, 1e-9)
        self._start, self._waited = now, 0.0
        return fraction


class _PendingMetrics:
    """Device metrics of the steps not read back yet.

    The loop reads them back only every ``log_period`` steps and before every checkpoint or
    evaluation, so the host never waits for the device in between; then a non-finite loss
    raises ``NonFiniteLossError`` naming the FIRST bad step (with on_nonfinite='stop'), and
    since that check precedes every save, the checkpoints on disk are all finite.
    """

    MAX_IN_FLIGHT = 2  # steps dispatched ahead of the host; bounds the batches held on device

    def __init__(self, model_dir: str, on_nonfinite: str):
        self.model_dir, self.on_nonfinite = model_dir, on_nonfinite
        self._steps: list[tuple[int, dict]] = []

    def add(self, step: int, device_metrics: dict) -> None:
        self._steps.append((step, device_metrics))

    def bound_in_flight(self) -> None:
        if len(self._steps) > self.MAX_IN_FLIGHT:
            jax.block_until_ready(self._steps[-self.MAX_IN_FLIGHT - 1][1]["loss"])

    def read_back(self) -> dict[str, float] | None:
        """The newest step's metrics as floats (None if nothing is pending)."""
        if not self._steps:
            return None
        steps, self._steps = self._steps, []
        flags = jax.device_get([m["nonfinite"] for _, m in steps])
        if self.on_nonfinite == "stop":
            bad = [(s, m) for (s, m), flag in zip(steps, flags) if flag]
            if bad:
                first, m = bad[0]
                loss, grad_norm = (float(v) for v in jax.device_get((m["loss"], m["grad_norm"])))
                raise NonFiniteLossError(
                    f"{self.model_dir}: non-finite loss at step {first} (loss={loss}, "
                    f"grad_norm={grad_norm}); the last checkpoint is unchanged. "
                    "Lower the learning rate, or set on_nonfinite='skip'.")
        return {k: float(v) for k, v in jax.device_get(steps[-1][1]).items()}


def _default_frozen_mask_fn():
    from music_spectrogram_diffusion.models.layers import frozen_param_mask

    return frozen_param_mask


def train(
    *,
    model: SpectrogramModel,
    train_data: BatchSource,
    model_dir: str,
    train_steps: int,
    batch_size: int,
    seed: int,
    optimizer: opt_lib.OptimizerConfig = opt_lib.OptimizerConfig(),
    partition: partitioning.PartitionConfig = partitioning.PartitionConfig(),
    checkpoint: ckpt_lib.CheckpointConfig = ckpt_lib.CheckpointConfig(),
    num_microbatches: int = 1,
    microbatch_reduction: str = "mean",
    note_token_buckets: Sequence[int] = feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS,
    on_nonfinite: str = "stop",
    eval_data: BatchSource | None = None,
    eval_period: int = 1000,
    eval_steps: int = 20,
    eval_images: bool = True,
    predict_options: dict[str, Any] | None = None,
    log_period: int = 100,
    frozen_param_mask_fn: Callable[[Any], Any] | None = None,
    config_text: str | None = None,
    initial_checkpoint: str | None = None,
    save_initial_checkpoint: bool = False,
    max_seconds: float | None = None,
    should_stop: Callable[[int], bool] | None = None,
    data_workers: int = 0,
    data_prefetch: int = 2,
    vocabulary: VocabularyConfig | None = None,
) -> TrainResult:
    """Trains ``model`` to ``train_steps`` steps, resuming from ``model_dir`` if it has checkpoints.

    Args:
      model: a model object (``models.contract.SpectrogramModel``).
      train_data, eval_data: batch sources (see ``BatchSource``); eval batches 0..eval_steps-1
        and their random draws (noise, times, guidance dropout: one fixed key, not one per
        step) are the same at every evaluation, so train-eval losses compare checkpoints on
        equal terms.
      model_dir: checkpoints, config.gin, model.json and TensorBoard logs go here.
      train_steps: total optimizer steps (a resumed run continues up to this).
      batch_size: global batch size (divisible by the mesh's 'data' size x num_microbatches).
      seed: parameter init, dropout (fold_in(key, step)) and data order all derive from it.
      optimizer, partition, checkpoint: configs (see their modules).
      num_microbatches, microbatch_reduction: gradient accumulation (see make_train_step).
      note_token_buckets: each train and eval batch's note tokens are cut to the smallest of
        these lengths that holds its longest example (``feature_converters.bucket_note_tokens``:
        the same loss and gradients as full padding, one compilation per bucket used); () keeps
        the full padding.
      on_nonfinite: 'stop' raises NonFiniteLossError naming the step; 'skip' drops the update.
      eval_period, eval_steps, eval_images, predict_options: train-eval loss over eval_steps
        batches every eval_period steps; images compare the target with ``model.predict(...,
        **predict_options)`` for the first eval example.
      log_period: steps between progress lines and scalar summaries.
      frozen_param_mask_fn: params -> bool tree of frozen parameters; defaults to
        ``models.layers.frozen_param_mask``.
      config_text: the operative gin config, saved as model_dir/config.gin.
      initial_checkpoint: a checkpoint_<step> directory (or a MODEL_DIR: its newest) whose
        parameters start a fine-tuning run when model_dir has no checkpoint of its own
        (gin/resume.gin): params only, a fresh optimizer state, step 0. Imported weights
        (msd-import-weights) work, as they hold no optimizer state.
      save_initial_checkpoint: on a fresh start, also save the initial state (the
        ``initial_checkpoint`` parameters, if given) as checkpoint_0 before the first step.
      max_seconds: wall-clock budget of this call, from its start; when it is spent the run
        saves a checkpoint and returns with ``stop_reason='deadline'``. None: no deadline.
      should_stop: called with the step after every step; True saves and returns with
        ``stop_reason='should_stop'``.
      data_workers, data_prefetch: Grain worker processes reading training batches ahead, and
        the batches each keeps ready (``data.loader.BatchLoader``); 0 workers reads in this
        process. The batches are the same for any number of workers.
      vocabulary: the note-token vocabulary of the tasks (gin/train.gin binds the one they
        tokenize with); recorded in model.json so that inference tokenizes MIDI the same way
        (e.g. 127 velocity bins), and checked against the model's embedding table.
    """
    if on_nonfinite not in NONFINITE_ACTIONS:
        raise ValueError(f"on_nonfinite={on_nonfinite!r}; valid values: {NONFINITE_ACTIONS}")
    buckets = feature_converters.check_buckets(note_token_buckets)
    # Installed first, so a SIGTERM during start-up is also deferred to the first step boundary.
    with StopCheck(max_seconds, should_stop) as stop, ckpt_lib.CheckpointStore(
            model_dir, keep=checkpoint.keep, async_save=checkpoint.async_save) as store:
        partitioning.initialize_multihost(partition)
        mesh = partitioning.make_mesh(partition)
        data_size = mesh.shape[partitioning.DATA_AXIS]
        if batch_size % (data_size * num_microbatches):
            raise ValueError(
                f"batch_size {batch_size} must be divisible by the data-parallel size {data_size} "
                f"x num_microbatches {num_microbatches}"
            )
        frozen_param_mask_fn = frozen_param_mask_fn or _default_frozen_mask_fn()
        root = jax.random.key(seed)
        init_key, dropout_key, eval_key = jax.random.split(root, 3)

        first = host_batch(train_data, 0, batch_size, seed)
        init_batch = {k: np.asarray(v[:1]) for k, v in first.items()}
        make_optimizer = lambda params: opt_lib.make_optimizer(optimizer, frozen_param_mask_fn(params))
        with mesh:
            state, shardings, tx = create_train_state(
                model, make_optimizer, init_key, init_batch, mesh, partition.rules
            )
        restored = store.restore_latest(abstract_state(state, shardings))
        fresh = restored is None
        if fresh and initial_checkpoint:
            state = _initialise_from(initial_checkpoint, state, shardings, tx)
        start_step, resumed_metadata = 0, None
        if restored is not None:
            state, metadata, _ = restored
            resumed_metadata = metadata
            start_step = int(state.step)
            if metadata.get("batch_size") not in (None, batch_size):
                logger.warning(
                    "%s: resumed with batch_size %d (checkpoint used %s); batches are re-derived from "
                    "the step, so examples seen differ from an uninterrupted run",
                    model_dir, batch_size, metadata.get("batch_size"),
                )
            if not fresh:
                logger.info("Resumed from %s at step %d",
                            ckpt_lib.checkpoint_path(model_dir, start_step), start_step)
        loader = _make_loader(train_data, batch_size=batch_size, seed=seed, start_step=start_step,
                              end_step=train_steps, metadata=resumed_metadata,
                              num_workers=data_workers, prefetch=data_prefetch)
        loader.start_prefetch()  # the workers read ahead while the step compiles
        if jax.process_index() == 0:
            if config_text is not None:
                ckpt_lib.write_config(model_dir, config_text)
            if registry.is_registered(model):
                registry.write_model_config(model_dir, model, vocabulary)

        step_fn = jit_train_step(
            model, tx, shardings, mesh,
            num_microbatches=num_microbatches,
            microbatch_reduction=microbatch_reduction,
            skip_nonfinite=on_nonfinite == "skip",
            learning_rate_fn=opt_lib.make_learning_rate_schedule(optimizer),
        )
        eval_fn = jax.jit(make_eval_step(model))
        writers = {}
        if jax.process_index() == 0:
            writers = {
                "train": summaries.SummaryWriter(os.path.join(model_dir, "train")),
                "eval": summaries.SummaryWriter(os.path.join(model_dir, "eval")),
            }

        def save(state):
            # The loader has already handed out the batch of step state.step (read ahead for
            # the next step), so the position to resume from is the state's step.
            metadata = {"examples_seen": int(state.step) * batch_size, "data_seed": seed,
                        "batch_size": batch_size, "time": time.time(),
                        DATA_ITEM: dict(loader.get_state(), next_step=int(state.step))}
            store.save(state, metadata)

        if fresh and save_initial_checkpoint:
            save(state)

        progress = summaries.Progress(start_step, train_steps)
        metrics: dict[str, float] = {}
        pending = _PendingMetrics(model_dir, on_nonfinite)
        data_timer = _DataWaitTimer()
        step = start_step
        reason = None
        with mesh, loader:
            # The batch of the next step is read and put on the device while this step runs
            # (steps are dispatched asynchronously; nothing is read back every step).
            table_rows = model.network_config.vocab_size

            def next_batch():  # bucket choice (a host exchange on many hosts) counts as data
                return partitioning.shard_batch(data_timer.next(
                    loader, lambda item: _ready(item[1], buckets, table_rows)), mesh)

            if step < train_steps:  # a finished run re-run (resumed at train_steps) stops here
                batch = next_batch()
            while step < train_steps:
                state, device_metrics = step_fn(state, batch, jax.random.fold_in(dropout_key, step))
                pending.add(step, device_metrics)
                step += 1
                if step < train_steps:
                    batch = next_batch()
                pending.bound_in_flight()
                log = step % log_period == 0 or step == train_steps
                reason = stop.reason(step) if step < train_steps else None
                save_now = reason is not None or step % checkpoint.period == 0 or step == train_steps
                evaluate = eval_data is not None and (step % eval_period == 0 or step == train_steps)
                if log or save_now or evaluate:
                    metrics = pending.read_back() or metrics  # raises on a non-finite loss
                if log:
                    rate = progress.rate(step)
                    metrics.update(steps_per_second=rate, examples_per_second=rate * batch_size,
                                   data_wait_fraction=data_timer.fraction())
                    logger.info("%s; data wait %.1f%%", progress.line(step, rate, metrics["loss"]),
                                100 * metrics["data_wait_fraction"])
                    if writers:
                        writers["train"].scalars(step, metrics)
                if evaluate:
                    _evaluate(model, eval_fn, state, eval_data, eval_steps, batch_size, seed,
                              eval_key, step, writers.get("eval"),
                              eval_images, predict_options or {}, model_dir, mesh, buckets)
                if reason is not None:
                    logger.warning("%s at step %d: saving a checkpoint and stopping",
                                   STOP_MESSAGES[reason], step)
                    save(state)
                    break
                if save_now:
                    save(state)
        store.wait()
        for writer in writers.values():
            writer.close()
        return TrainResult(step=step, metrics=metrics, stopped_by_signal=reason == "signal",
                           model_dir=model_dir, stop_reason=reason)


def _initialise_from(initial_checkpoint: str, state: TrainState, shardings: TrainState,
                     tx: optax.GradientTransformation) -> TrainState:
    """``state`` with the parameters of ``initial_checkpoint``, a fresh optimizer state, step 0."""
    path = initial_checkpoint
    if ckpt_lib.checkpoint_step(path) is None and ckpt_lib.list_checkpoints(path):
        path = ckpt_lib.checkpoint_path(path, ckpt_lib.list_checkpoints(path)[-1])
    params = ckpt_lib.restore_params(path, abstract_state(state, shardings).params)
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
    logger.info("Initialised the parameters from %s (fresh optimizer state, step 0)", path)
    return state.replace(params=params, opt_state=opt_state)  # a fresh state's step is 0


def _evaluate(model, eval_fn, state, eval_data, eval_steps, batch_size, seed, key, step,
              writer, eval_images, predict_options, model_dir, mesh, buckets) -> dict[str, float]:
    """Train-eval loss averaged over eval_steps fixed batches, plus spectrogram images."""
    totals: dict[str, float] = {}
    first = None
    for i in range(eval_steps):
        host = host_batch(eval_data, i, batch_size, seed, buckets,
                          model.network_config.vocab_size)
        first = host if first is None else first
        batch = partitioning.shard_batch(host, mesh)
        out = jax.device_get(eval_fn(state.params, batch, jax.random.fold_in(key, i)))
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) / eval_steps
    logger.info("eval at step %d: loss %.5g", step, totals.get("loss", float("nan")))
    if writer is not None:
        writer.scalars(step, totals)
    params = state.params
    if eval_images and jax.process_count() > 1:
        # Process 0 samples alone from a host copy of the (possibly sharded) parameters;
        # gathering them is a collective every process takes part in.
        from jax.experimental import multihost_utils

        params = multihost_utils.process_allgather(params, tiled=True)
        first = eval_data.get_batch(0, batch_size, seed=seed, rows=slice(0, 1))
    if eval_images and first is not None and writer is not None:
        one = {k: np.asarray(v[:1]) for k, v in first.items()}
        predicted = np.asarray(model.predict(params, one, key, **predict_options))[0]
        png, height, width = summaries.spectrogram_comparison_png(one["target_frames"][0], predicted)
        writer.image(step, "spectrogram/target_vs_sampled", png, height, width)
        path = os.path.join(model_dir, "eval", f"spectrogram_step_{step}.png")
        file_io.write_bytes_atomic(path, png)
        summaries.write_sampled_audio(writer, step, one["target_frames"][0], predicted,
                                      os.path.join(model_dir, "eval"))
    if writer is not None:
        writer.flush()
    return totals
