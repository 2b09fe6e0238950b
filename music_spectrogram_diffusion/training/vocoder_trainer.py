"""Training of the spectrogram inverters (HiFi-GAN or Vocos generators) on random crops of real audio.

Each step draws ``batch_size`` random crops of ``crop_frames * hop`` samples from the pieces of a
dataset directory (the embedded dataset layout: manifest.json with "pieces", each with a
"split" and an "audio_path"), and computes their log-mel on the fly inside the jitted step, so the
generator is trained on exactly the features the diffusion model predicts (spec §2.2).

Two phases:
  1. ``pretrain_steps`` generator-only steps on mel L1 + multi-resolution STFT. On CPU this is
     what makes a small generator useful quickly (the discriminator is not run at all);
     gin/vocoders/vocos_small.gin trains the Vocos generator with this phase alone.
  2. HiFi-GAN training: least-squares adversarial loss from MPD + MSD, feature matching, mel L1
     (weight 45) and MR-STFT; AdamW(0.8, 0.99) for both networks (Kong et al., 2020).

Batch s is a pure function of (seed, s), and the step's random key is fold_in(seed key, s), so a
resumed run continues exactly as an uninterrupted one would. Checkpoints reuse the main
trainer's helpers (training/checkpoints.py): ``MODEL_DIR/checkpoint_<step>`` with
``MODEL_DIR/vocoder_config.json`` (FeatureConfig + network configs) beside them.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.audio import stft_distance
from music_spectrogram_diffusion.audio.vocoders import checkpoints as vocoder_checkpoints
from music_spectrogram_diffusion.audio.vocoders import data
from music_spectrogram_diffusion.audio.vocoders import generators
from music_spectrogram_diffusion.audio.vocoders import hifigan
from music_spectrogram_diffusion.audio.vocoders import losses
from music_spectrogram_diffusion.features import DEFAULT_FEATURES, FeatureConfig
from music_spectrogram_diffusion.training import checkpoints
from music_spectrogram_diffusion.training import summaries
from music_spectrogram_diffusion.training import trainer as trainer_lib


LR_SCHEDULES = ("exponential", "cosine")


@dataclasses.dataclass(frozen=True)
class VocoderTrainConfig:
    """Optimisation and bookkeeping of vocoder training (HiFi-GAN defaults where they exist)."""

    batch_size: int = 8
    crop_frames: int = 50  # 1 s crops at 50 frames/s
    learning_rate: float = 2e-4
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    weight_decay: float = 0.01
    lr_decay_per_1k_steps: float = 0.99  # 'exponential' schedule
    lr_schedule: str = "exponential"
    warmup_steps: int = 0  # linear warm-up from 0 ('cosine' schedule)
    decay_steps: int = 100000  # 'cosine': steps from the peak to 1% of learning_rate
    max_grad_norm: float | None = None  # global-norm gradient clipping; None = off
    pretrain_steps: int = 0
    mel_loss_weight: float = 45.0
    stft_loss_weight: float = 2.5
    magnitude_loss_weight: float = 0.0  # Vocos only: see VocoderTrainer._magnitude_loss
    feature_matching_weight: float = 2.0
    adversarial_weight: float = 1.0
    gain_range: tuple[float, float] = (0.5, 1.0)  # random loudness augmentation per crop
    log_every: int = 50
    summary_audio_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int | None = 3
    seed: int = 0

    def __post_init__(self):
        positive = ("batch_size", "crop_frames", "log_every", "summary_audio_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"VocoderTrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"VocoderTrainConfig.lr_schedule {self.lr_schedule!r} unknown; valid: {', '.join(LR_SCHEDULES)}"
            )
        if self.warmup_steps < 0 or self.decay_steps < 1:
            raise ValueError(
                f"VocoderTrainConfig needs warmup_steps >= 0 and decay_steps >= 1, got "
                f"{self.warmup_steps} and {self.decay_steps}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"VocoderTrainConfig.max_grad_norm must be > 0 or None, got {self.max_grad_norm}")
        if self.magnitude_loss_weight < 0:
            raise ValueError(f"VocoderTrainConfig.magnitude_loss_weight must be >= 0, got {self.magnitude_loss_weight}")
        if self.pretrain_steps < 0:
            raise ValueError(f"VocoderTrainConfig.pretrain_steps must be >= 0, got {self.pretrain_steps}")
        low, high = self.gain_range
        if not 0.0 < low <= high:
            raise ValueError(f"VocoderTrainConfig.gain_range must satisfy 0 < low <= high, got {self.gain_range}")
        object.__setattr__(self, "gain_range", tuple(self.gain_range))


@flax.struct.dataclass
class VocoderTrainState:
    step: jnp.ndarray
    generator_params: Any
    discriminator_params: Any
    generator_opt_state: Any
    discriminator_opt_state: Any


def sample_crops(
    pieces: list[np.ndarray], rng: np.random.Generator, *, batch_size: int, crop_samples: int
) -> np.ndarray:  # [batch, crop_samples] float32
    """Uniform random crops; a piece is picked with probability proportional to its length."""
    lengths = np.array([len(p) for p in pieces], np.float64)
    choices = rng.choice(len(pieces), size=batch_size, p=lengths / lengths.sum())
    batch = np.zeros((batch_size, crop_samples), np.float32)
    for row, index in enumerate(choices):
        piece = pieces[index]
        start = int(rng.integers(0, max(1, len(piece) - crop_samples + 1)))
        crop = piece[start : start + crop_samples]
        batch[row, : len(crop)] = crop  # Pieces shorter than a crop are zero-padded (silence).
    return batch


def _print_line(line: str) -> None:
    print(line, flush=True)  # Progress must reach a redirected log file as it happens.


def _make_optimizer(config: VocoderTrainConfig) -> optax.GradientTransformation:
    if config.lr_schedule == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, config.learning_rate, config.warmup_steps, config.warmup_steps + config.decay_steps,
            end_value=0.01 * config.learning_rate,
        )
    else:
        schedule = optax.exponential_decay(config.learning_rate, 1000, config.lr_decay_per_1k_steps)
    tx = optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, weight_decay=config.weight_decay)
    if config.max_grad_norm is not None:
        tx = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), tx)
    return tx


@dataclasses.dataclass(frozen=True)
class VocoderTrainer:
    """Networks, optimizers and the pure step functions of vocoder training.

    The generator kind follows the type of ``generator_config`` (generators.py); the
    discriminators are HiFi-GAN's for every kind.
    """

    generator_config: generators.GeneratorConfig
    discriminator_config: hifigan.DiscriminatorConfig
    train_config: VocoderTrainConfig
    features: FeatureConfig = DEFAULT_FEATURES

    def __post_init__(self):
        generators.build_generator(self.generator_config, self.features)  # Validates kind and hop.
        if self.train_config.magnitude_loss_weight and not self.generator_config.predicts_magnitude:
            raise ValueError(
                f"VocoderTrainConfig.magnitude_loss_weight needs a generator that predicts an STFT "
                f"magnitude (vocos), not {generators.generator_kind(self.generator_config)}"
            )

    @property
    def generator(self) -> nn.Module:
        """The network as trained (config.for_training()); checkpoints hold its parameters."""
        return generators.build_generator(self.generator_config.for_training(), self.features)

    def _generate(self, params, log_mel) -> tuple[jnp.ndarray, jnp.ndarray | None]:
        """(audio [batch, samples], predicted STFT log-magnitude or None when unused)."""
        if not self.train_config.magnitude_loss_weight:
            return self.generator.apply({"params": params}, log_mel), None
        audio, variables = self.generator.apply({"params": params}, log_mel, mutable=["intermediates"])
        return audio, variables["intermediates"]["log_magnitude"][0]

    def _magnitude_loss(self, log_magnitude: jnp.ndarray, audio: jnp.ndarray) -> jnp.ndarray:
        """Mean |predicted - ln max(|STFT(audio)|, floor)| over frames and bins (natural log).

        A direct, dense target for the Vocos magnitude head: mel L1 only constrains the 128 mel
        bands of the inverse STFT's output, and through a phase that is still being learned.
        The STFT is the codec's (spec §2.2), the one the generator's spectrum is inverted with.
        """
        features = self.features
        target = stft_distance.stft(
            audio, fft_length=features.fft_length, hop_length=features.hop_length,
            window_length=features.window_length,
        )[..., : log_magnitude.shape[-2], :]
        target = jnp.log(jnp.maximum(jnp.abs(target), features.log_floor))
        predicted = jnp.maximum(log_magnitude, np.log(features.log_floor))
        return jnp.mean(jnp.abs(predicted - target))

    @property
    def discriminator(self) -> hifigan.Discriminator:
        return hifigan.Discriminator(self.discriminator_config)

    def init(self, rng: jax.Array) -> VocoderTrainState:
        generator_rng, discriminator_rng = jax.random.split(rng)
        frames = self.train_config.crop_frames
        log_mel = jnp.zeros((1, frames, self.features.num_mels), jnp.float32)
        audio = jnp.zeros((1, frames * self.features.hop_length), jnp.float32)
        generator_params = self.generator.init(generator_rng, log_mel)["params"]
        discriminator_params = self.discriminator.init(discriminator_rng, audio)["params"]
        tx = _make_optimizer(self.train_config)
        return VocoderTrainState(
            step=jnp.zeros((), jnp.int32),
            generator_params=generator_params,
            discriminator_params=discriminator_params,
            generator_opt_state=tx.init(generator_params),
            discriminator_opt_state=tx.init(discriminator_params),
        )

    def _prepare(self, audio: jnp.ndarray, rng: jax.Array) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Random gain per crop, then the crop's log-mel [batch, frames, mels]."""
        low, high = self.train_config.gain_range
        gain = jax.random.uniform(rng, (audio.shape[0], 1), minval=low, maxval=high)
        audio = audio * gain
        return audio, spectrograms.compute_log_mel(audio, self.features)

    def _reconstruction_loss(self, fake, audio, log_mel, log_magnitude=None) -> tuple[jnp.ndarray, dict]:
        mel = losses.mel_l1_loss(fake, log_mel, self.features)
        stft = losses.multi_resolution_stft_loss(fake, audio)
        cfg = self.train_config
        total, metrics = cfg.mel_loss_weight * mel + cfg.stft_loss_weight * stft, {"mel_l1": mel, "mr_stft": stft}
        if log_magnitude is not None:
            metrics["magnitude_l1"] = self._magnitude_loss(log_magnitude, audio)
            total += cfg.magnitude_loss_weight * metrics["magnitude_l1"]
        return total, metrics

    def pretrain_step(
        self, state: VocoderTrainState, audio: jnp.ndarray, rng: jax.Array
    ) -> tuple[VocoderTrainState, dict[str, jnp.ndarray]]:
        """One generator-only step on mel L1 + MR-STFT. audio: [batch, crop_samples]."""
        audio, log_mel = self._prepare(audio, rng)

        def loss_fn(params):
            fake, log_magnitude = self._generate(params, log_mel)
            return self._reconstruction_loss(fake, audio, log_mel, log_magnitude)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.generator_params)
        updates, opt_state = _make_optimizer(self.train_config).update(
            grads, state.generator_opt_state, state.generator_params
        )
        state = state.replace(
            step=state.step + 1,
            generator_params=optax.apply_updates(state.generator_params, updates),
            generator_opt_state=opt_state,
        )
        return state, dict(metrics, generator_loss=loss, grad_norm=optax.global_norm(grads))

    def gan_step(
        self, state: VocoderTrainState, audio: jnp.ndarray, rng: jax.Array
    ) -> tuple[VocoderTrainState, dict[str, jnp.ndarray]]:
        """One discriminator update, then one generator update (HiFi-GAN). audio: [batch, samples]."""
        cfg = self.train_config
        tx = _make_optimizer(cfg)
        audio, log_mel = self._prepare(audio, rng)
        # The generator runs once; its VJP carries the generator loss gradient back afterwards.
        (fake, log_magnitude), generator_vjp = jax.vjp(
            lambda p: self._generate(p, log_mel), state.generator_params
        )

        def discriminator_loss_fn(params):
            real_logits, _ = self.discriminator.apply({"params": params}, audio)
            fake_logits, _ = self.discriminator.apply({"params": params}, jax.lax.stop_gradient(fake))
            return losses.lsgan_discriminator_loss(real_logits, fake_logits)

        d_loss, d_grads = jax.value_and_grad(discriminator_loss_fn)(state.discriminator_params)
        d_updates, d_opt_state = tx.update(d_grads, state.discriminator_opt_state, state.discriminator_params)
        discriminator_params = optax.apply_updates(state.discriminator_params, d_updates)

        _, real_features = self.discriminator.apply({"params": discriminator_params}, audio)

        def generator_loss_fn(fake_audio):
            fake_logits, fake_features = self.discriminator.apply({"params": discriminator_params}, fake_audio)
            adversarial = losses.lsgan_generator_loss(fake_logits)
            matching = losses.feature_matching_loss(real_features, fake_features)
            # The magnitude loss is added below: its gradient reaches the generator directly.
            reconstruction, metrics = self._reconstruction_loss(fake_audio, audio, log_mel)
            total = cfg.adversarial_weight * adversarial + cfg.feature_matching_weight * matching + reconstruction
            return total, dict(metrics, adversarial=adversarial, feature_matching=matching)

        (g_loss, metrics), fake_grad = jax.value_and_grad(generator_loss_fn, has_aux=True)(fake)
        magnitude_grad = None
        if log_magnitude is not None:
            magnitude_l1, magnitude_grad = jax.value_and_grad(self._magnitude_loss)(log_magnitude, audio)
            magnitude_grad = cfg.magnitude_loss_weight * magnitude_grad
            metrics["magnitude_l1"] = magnitude_l1
            g_loss += cfg.magnitude_loss_weight * magnitude_l1
        (g_grads,) = generator_vjp((fake_grad, magnitude_grad))
        g_updates, g_opt_state = tx.update(g_grads, state.generator_opt_state, state.generator_params)
        state = state.replace(
            step=state.step + 1,
            generator_params=optax.apply_updates(state.generator_params, g_updates),
            generator_opt_state=g_opt_state,
            discriminator_params=discriminator_params,
            discriminator_opt_state=d_opt_state,
        )
        return state, dict(metrics, generator_loss=g_loss, discriminator_loss=d_loss)


@functools.lru_cache(maxsize=4)
def jitted_steps(trainer: VocoderTrainer) -> tuple[Callable, Callable]:
    """(pretrain_step, gan_step) jitted once per trainer configuration and process."""
    return (
        jax.jit(trainer.pretrain_step, donate_argnums=0),
        jax.jit(trainer.gan_step, donate_argnums=0),
    )


class _AudioSummaryWriter(summaries.SummaryWriter):
    """The main trainer's TensorBoard writer plus audio summaries (16-bit WAV)."""

    def audio(self, step: int, tag: str, samples: np.ndarray, sample_rate: int) -> None:
        import soundfile
        from tensorboard.compat.proto import summary_pb2

        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(samples, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
        value = summary_pb2.Summary.Audio(
            sample_rate=sample_rate,
            num_channels=1,
            length_frames=len(samples),
            encoded_audio_string=buffer.getvalue(),
            content_type="audio/wav",
        )
        self._add(step, summary_pb2.Summary.Value(tag=tag, audio=value))


def train_vocoder(
    *,
    model_dir: str,
    data_dir: str,
    train_steps: int,
    generator_config: generators.GeneratorConfig = hifigan.GeneratorConfig.small(),
    discriminator_config: hifigan.DiscriminatorConfig = hifigan.DiscriminatorConfig.small(),
    train_config: VocoderTrainConfig = VocoderTrainConfig(),
    features: FeatureConfig = DEFAULT_FEATURES,
    split: str = "train",
    print_fn: Callable[[str], None] = _print_line,
    max_seconds: float | None = None,
    should_stop: Callable[[int], bool] | None = None,
    on_ready: Callable[[], None] | None = None,
) -> dict[str, float]:
    """Trains (or resumes) a vocoder in MODEL_DIR up to ``train_steps``; returns the last metrics.

    Stops early, saving a checkpoint, on SIGTERM, after ``max_seconds`` of wall time or when
    ``should_stop(step)`` is true (``trainer.StopCheck``). ``on_ready`` is called once the
    dataset and any existing MODEL_DIR have been checked, before anything is written there
    (msd-train-vocoder saves its config.gin from it).
    """
    if train_steps < 0:
        raise ValueError(f"train_steps must be >= 0, got {train_steps}")
    trainer = VocoderTrainer(generator_config, discriminator_config, train_config, features)
    pieces = list(data.load_split_audio(data_dir, split, features).values())
    if os.path.isfile(os.path.join(model_dir, vocoder_checkpoints.CONFIG_FILENAME)):
        # Resuming: the stored features and networks must be the ones being trained now.
        stored = vocoder_checkpoints.read_vocoder_config(model_dir)
        if FeatureConfig(**stored["features"]) != features or vocoder_checkpoints.read_generator_config(
            model_dir
        ) != generator_config:
            raise ValueError(
                f"{model_dir}: holds a vocoder with other features or generator config "
                f"({vocoder_checkpoints.CONFIG_FILENAME}); use a new MODEL_DIR"
            )
    if on_ready is not None:
        on_ready()
    vocoder_checkpoints.write_vocoder_config(
        model_dir,
        features=features,
        configs={"generator": generator_config, "discriminator": discriminator_config, "train": train_config},
    )
    init_key, step_key = jax.random.split(jax.random.PRNGKey(train_config.seed))
    state = trainer.init(init_key)
    restored = checkpoints.restore_latest(model_dir, state)
    if restored is not None:
        state = restored[0]
        print_fn(f"resumed from {checkpoints.checkpoint_path(model_dir, int(state.step))}")
    pretrain_step, gan_step = jitted_steps(trainer)
    writer = _AudioSummaryWriter(os.path.join(model_dir, "train"))
    progress = summaries.Progress(int(state.step), train_steps)
    print_fn(
        f"training {generators.generator_kind(generator_config)} vocoder: generator {hifigan.count_parameters(state.generator_params):,} params, "
        f"discriminator {hifigan.count_parameters(state.discriminator_params):,} params, "
        f"{len(pieces)} pieces, {sum(map(len, pieces)) / features.sample_rate:.0f} s of audio"
    )
    crop_samples = train_config.crop_frames * features.hop_length
    metrics: dict[str, float] = {}
    step = int(state.step)
    reason = None
    with trainer_lib.StopCheck(max_seconds, should_stop) as stop:
        while step < train_steps and reason is None:
            batch_rng = np.random.default_rng((train_config.seed, step))
            audio = sample_crops(pieces, batch_rng, batch_size=train_config.batch_size, crop_samples=crop_samples)
            step_fn = pretrain_step if step < train_config.pretrain_steps else gan_step
            state, step_metrics = step_fn(state, jnp.asarray(audio), jax.random.fold_in(step_key, step))
            step += 1
            if step % train_config.log_every == 0 or step == train_steps:
                metrics = {k: float(v) for k, v in step_metrics.items()}
                writer.scalars(step, metrics)
                line = progress.line(step, progress.rate(step), metrics["generator_loss"])
                print_fn(f"{line} mel_l1 {metrics['mel_l1']:.4f} mr_stft {metrics['mr_stft']:.4f}")
            if step % train_config.summary_audio_every == 0 or step == train_steps:
                log_mel = spectrograms.compute_log_mel(audio[:1], features)
                fake = np.asarray(trainer.generator.apply({"params": state.generator_params}, log_mel))[0]
                writer.audio(step, "audio/generated", fake, features.sample_rate)
                writer.audio(step, "audio/real", audio[0], features.sample_rate)
            reason = stop.reason(step) if step < train_steps else None
            if step % train_config.checkpoint_every == 0 or step == train_steps or reason:
                keep = train_config.keep_checkpoints
                checkpoints.save_checkpoint(model_dir, state, {"seed": train_config.seed}, keep=keep)
        if reason is not None:
            print_fn(f"{trainer_lib.STOP_MESSAGES[reason]} at step {step}: saved "
                     f"{checkpoints.checkpoint_path(model_dir, step)}; stopped")
    writer.flush()
    writer.close()
    return metrics
