"""The autoregressive spectrogram model: the paper's ablation baseline (spec §4.5, §5.5).

A T5 encoder-decoder reads the note tokens and predicts each raw (unscaled) log-mel frame from
the previous ones. Training is teacher-forced regression (the ``Deterministic`` output function:
squared error averaged over the 128 bins); inference decodes the 256 frames of a segment one at a
time with a key/value cache, feeding each prediction back as the next input, in one ``lax.scan``.
Segments are generated independently: the model has no context encoder.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from music_spectrogram_diffusion.diffusion.samplers import SamplerConfig
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import LOSS_WEIGHT, Array, Batch, Metrics, Params
from music_spectrogram_diffusion.models.contract import split_loss_keys
from music_spectrogram_diffusion.models.networks import AutoregressiveTransformer


def shift_frames_right(frames: Array) -> Array:
    """[B, T, mels] -> [B, T, mels] decoder inputs: frame t sees frame t-1, frame 0 sees 0.0."""
    return jnp.pad(frames, ((0, 0), (1, 0), (0, 0)))[:, :-1]


@dataclasses.dataclass(frozen=True)
class AutoregressiveModel:
    """``AutoregressiveTransformer`` behind the model contract (``models.contract.SpectrogramModel``).

    Batch keys read: ``note_tokens`` int32 [B, L], ``target_frames`` float32 [B, T, mels]
    (unscaled log-mel), ``target_mask`` float32 [B, T]. Context keys are ignored.
    """

    network_config: T5Config
    # Standard deviation (raw log-mel units) of Gaussian noise added to the teacher-forced
    # decoder inputs in training; 0 is the original. Not in the original: a remedy for exposure
    # bias (the decoder otherwise learns to copy its previous frame, and at inference, where
    # that frame is its own prediction, drifts), like Tacotron's always-on pre-net dropout.
    input_noise_std: float = 0.0

    def __post_init__(self):
        if self.input_noise_std < 0:
            raise ValueError(f"AutoregressiveModel.input_noise_std must be >= 0, got {self.input_noise_std}")

    @property
    def network(self) -> AutoregressiveTransformer:
        return AutoregressiveTransformer(self.network_config)

    @property
    def with_context(self) -> bool:
        return False  # Segments are generated independently (spec §4.5).

    def init(self, rng: Array, batch: Batch) -> Params:
        """Parameters (boxed with logical axis names) for batches shaped like ``batch``."""
        variables = self.network.init(
            {"params": rng},
            batch["note_tokens"],
            shift_frames_right(batch["target_frames"]),
            deterministic=True,
        )
        return variables["params"]

    def loss_fn(
        self, params: Params, batch: Batch, rng: Array, *, train: bool = True
    ) -> tuple[Array, Metrics]:
        """Teacher-forced squared error on raw log-mel (spec §5.5).

        Differs from the original on purpose (spec §11.7): the loss is the MEAN over real frames
        and mel bins, not the sum over batch and frames of per-frame means, so its scale does not
        change with the batch size or segment length. ``loss_sum`` reports the original's value.
        ``rng``: one key, or one key per example (``contract.split_loss_keys``).
        """
        targets = batch["target_frames"]  # [B, T, mels]
        mask = batch["target_mask"].astype(jnp.float32)  # [B, T]
        inputs = shift_frames_right(targets)
        dropout_rng, example_rngs = split_loss_keys(rng, targets.shape[0])
        if train and self.input_noise_std > 0.0:
            # Per example, from its own key: the same draws in any microbatch.
            noise = jax.vmap(lambda key: jax.random.normal(key, inputs.shape[1:], inputs.dtype))(
                example_rngs)
            inputs = inputs + self.input_noise_std * noise
        predictions = self.network.apply(
            {"params": params},
            batch["note_tokens"],
            inputs,
            deterministic=not train,
            rngs={"dropout": dropout_rng},
        )
        per_frame = jnp.mean(jnp.square(predictions - targets), axis=-1)  # [B, T]
        total_frames = jnp.sum(mask)
        loss_sum = jnp.sum(per_frame * mask)
        loss = loss_sum / jnp.maximum(total_frames, 1.0)
        metrics = {
            "loss": loss,
            LOSS_WEIGHT: total_frames,  # loss = mean over real frames
            "loss_sum": loss_sum,
            "target_frames": total_frames / mask.shape[0],  # mean real frames per example
        }
        return loss, metrics

    def init_cache(self, params: Params, encodings: Array, encoding_mask: Array) -> Any:
        """Zeroed key/value cache for decoding ``target_frames`` frames (shapes via eval_shape)."""
        cfg = self.network_config
        batch = encodings.shape[0]

        def cache_of_full_pass(params, encodings, encoding_mask):
            _, variables = self.network.apply(
                {"params": params},
                jnp.zeros((batch, cfg.target_frames, cfg.num_mels), jnp.float32),
                encodings,
                encoding_mask,
                decode=True,
                deterministic=True,
                mutable=["cache"],
                method="decode",
            )
            return variables["cache"]

        shapes = jax.eval_shape(cache_of_full_pass, params, encodings, encoding_mask)
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def encode(self, params: Params, batch: Batch) -> tuple[Array, Array]:
        """(encodings [B, L, d], encoding mask [B, L]) of ``batch['note_tokens']``."""
        return self.network.apply(
            {"params": params}, batch["note_tokens"], deterministic=True, method="encode")

    def predict(
        self,
        params: Params,
        batch: Batch,
        rng: Array,
        *,
        sampler: SamplerConfig | None = None,
        dither_amount: float = 0.0,
    ) -> Array:
        """Decodes one segment per example, frame by frame: float32 [B, T, mels] log-mel.

        Jitted once per (model, dither amount, shapes).

        Args:
          rng: draws the optional Gaussian dither (the original's ``sampling_dither_amount``)
            added to each predicted frame before it is fed back.
          sampler: accepted for the model contract and ignored: decoding is not sampled.
          dither_amount: standard deviation of that dither; 0 (the original default) makes the
            prediction deterministic.
        """
        del sampler
        return _predict_jit(self, float(dither_amount), params, {"note_tokens": batch["note_tokens"]},
                            rng)

    def _decode_frames(self, params: Params, batch: Batch, rng: Array, dither_amount: float
                       ) -> Array:
        cfg = self.network_config
        network = self.network
        encodings, encoding_mask = self.encode(params, batch)
        cache = self.init_cache(params, encodings, encoding_mask)
        batch_size = encodings.shape[0]

        def step(carry, index):
            cache, previous = carry  # previous: [B, 1, mels], the frame before `index`
            frame, variables = network.apply(
                {"params": params, "cache": cache},
                previous,
                encodings,
                encoding_mask,
                decoder_positions=index[None],
                decode=True,
                deterministic=True,
                mutable=["cache"],
                method="decode",
            )
            if dither_amount > 0.0:
                noise = jax.random.normal(jax.random.fold_in(rng, index), frame.shape)
                frame = frame + dither_amount * noise
            return (variables["cache"], frame), frame[:, 0]

        first_input = jnp.zeros((batch_size, 1, cfg.num_mels), jnp.float32)
        _, frames = jax.lax.scan(step, (cache, first_input), jnp.arange(cfg.target_frames))
        return jnp.transpose(frames, (1, 0, 2))  # [T, B, mels] -> [B, T, mels]


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict_jit(model: AutoregressiveModel, dither_amount: float, params: Params,
                 batch: Batch, rng: Array) -> Array:
    return model._decode_frames(params, batch, rng, dither_amount)
