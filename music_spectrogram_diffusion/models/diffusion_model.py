"""The spectrogram diffusion model: training loss and fast sampling around the T5 networks.

``DiffusionModel`` implements the model contract shared with ``AutoregressiveModel``
(``init`` / ``loss_fn`` / ``predict``) for the networks of spec §4.3 (with context) and §4.4
(without). The diffusion math lives in ``music_spectrogram_diffusion.diffusion``; this module
only wires it to the network.

Sampling is organised for speed (spec §11.14-§11.15): per segment, the encoders run once and
the cross-attention keys/values of every decoder layer are projected once; each denoising step
then runs only the decoder, with the conditional and unconditional passes as one batched call
(batch 2B; the unconditional rows have an all-zero encoding mask), and the whole loop is one
jitted ``lax.scan``. Padded note tokens are cut to a bucket before encoding (exact, see
``trim_note_tokens``).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.audio import spectrograms
from music_spectrogram_diffusion.data.feature_converters import longest_note_tokens
from music_spectrogram_diffusion.diffusion import objectives
from music_spectrogram_diffusion.diffusion import samplers
from music_spectrogram_diffusion.diffusion import schedules
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import LOSS_WEIGHT, Array, Batch, Metrics, Params
from music_spectrogram_diffusion.models.contract import split_loss_keys
from music_spectrogram_diffusion.models.networks import ContextTransformer
from music_spectrogram_diffusion.models.networks import NoContextTransformer

PREDICTIONS = ("eps", "x0", "v")


@dataclasses.dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion objective (spec §5.1 defaults).

    Attributes:
        schedule: log-SNR schedule name, see ``schedules.SCHEDULE_NAMES`` ('cosine').
        loss_norm: 'l1' (original) or 'l2'; a MEAN over real frames x bins (spec §11.7).
        prediction: what the network outputs: 'eps' (original), 'x0' or 'v'.
        loss_target: which quantity the loss compares: 'eps' (original), 'x0' or 'v'.
        drop_condition_prob: classifier-free-guidance dropout of notes + context together.
        clip_targets: clip the log-mel to [ln 1e-5, 4] before scaling to [-1, 1] (original).
        token_bucket: ``predict`` cuts padded note tokens to a multiple of this (0: never).
    """

    schedule: str = "cosine"
    loss_norm: str = "l1"
    prediction: str = "eps"
    loss_target: str = "eps"
    drop_condition_prob: float = 0.1
    clip_targets: bool = True
    token_bucket: int = 256

    def __post_init__(self):
        schedules.get_schedule(self.schedule)  # raises with the valid names
        if self.loss_norm not in objectives.LOSS_NORMS:
            raise ValueError(
                f"DiffusionConfig.loss_norm={self.loss_norm!r}; valid: {', '.join(objectives.LOSS_NORMS)}."
            )
        for field in ("prediction", "loss_target"):
            if getattr(self, field) not in PREDICTIONS:
                raise ValueError(
                    f"DiffusionConfig.{field}={getattr(self, field)!r}; valid: {', '.join(PREDICTIONS)}."
                )
        if not 0.0 <= self.drop_condition_prob <= 1.0:
            raise ValueError(
                f"DiffusionConfig.drop_condition_prob must be in [0, 1], got {self.drop_condition_prob}."
            )
        if self.token_bucket < 0:
            raise ValueError(f"DiffusionConfig.token_bucket must be >= 0, got {self.token_bucket}.")


class SegmentEncoding(NamedTuple):
    """What the decoder needs from the encoders, computed once per segment."""

    cross_kv: Any  # per decoder layer (key, value), each [B, S, H, Dh]
    encoding_mask: Array  # bool [B, S]: concat(note-token mask, context mask)


def segment_rng(seed: int, segment_index: int) -> Array:
    """Sampling key of segment ``segment_index`` of a song synthesised with ``seed``.

    Differs from the original on purpose (spec §11.8): it sampled every segment with seed 0,
    i.e. the same initial and step noise in every 5.12 s segment of a song.
    """
    return jax.random.fold_in(jax.random.key(seed), segment_index)


def trim_note_tokens(note_tokens: np.ndarray | Array, bucket: int) -> np.ndarray:
    """Cuts trailing all-padding columns of int [B, L] tokens to a multiple of ``bucket``.

    Exact: padded tokens (id 0) are masked keys in the note encoder's self-attention and in
    the decoder's cross-attention, where a masked key adds exp(-1e10) = 0 to the softmax, and
    position p keeps row p of the position table. Only the values of the padded rows' own
    encodings change, and nothing reads them. Rounding to a bucket bounds the number of
    compiled shapes (2048 / 256 = 8). A bucket of 0 returns the tokens unchanged.

    Returns:
        int [B, L'] with L' = min(L, max(bucket, ceil(longest real length / bucket) * bucket)).
    """
    note_tokens = np.asarray(note_tokens)
    length = note_tokens.shape[1]
    if bucket <= 0:
        return note_tokens
    longest = longest_note_tokens(note_tokens)
    trimmed = max(bucket, -(-longest // bucket) * bucket)
    return note_tokens[:, : min(length, trimmed)]


@dataclasses.dataclass(frozen=True)
class DiffusionModel:
    """The diffusion networks behind the model contract (``models.contract.SpectrogramModel``).

    Batch keys read: ``note_tokens`` int32 [B, L] (0-padded), ``target_frames`` float32
    [B, T, mels] (unscaled log-mel), ``target_mask`` float32 [B, T], and with context
    ``context_frames`` float32 [B, C, mels] (unscaled) and ``context_mask`` float32 [B, C].
    """

    network_config: T5Config
    diffusion_config: DiffusionConfig = DiffusionConfig()
    with_context: bool = True

    @property
    def network(self) -> ContextTransformer:
        cls = ContextTransformer if self.with_context else NoContextTransformer
        return cls(self.network_config)

    @property
    def log_snr_fn(self) -> schedules.LogSnrFn:
        return schedules.get_schedule(self.diffusion_config.schedule)

    def _context(self, batch: Batch) -> tuple[Array | None, Array | None]:
        if not self.with_context:
            return None, None
        context = spectrograms.scale_features(batch["context_frames"], clip=True)  # [B, C, mels]
        return context, batch["context_mask"]

    def init(self, rng: Array, batch: Batch) -> Params:
        """Parameters (boxed with logical axis names) for batches shaped like ``batch``."""
        context, context_mask = self._context(batch)
        x0 = spectrograms.scale_features(batch["target_frames"], clip=True)
        variables = self.network.init(
            {"params": rng},
            batch["note_tokens"],
            context,
            context_mask,
            x0,
            jnp.zeros(x0.shape[:1], jnp.float32),
            deterministic=True,
        )
        return variables["params"]

    # ------------------------------------------------------------------------------- training

    def _to_eps_x0_v(self, output: Array, z: Array, log_snr: Array) -> dict[str, Array]:
        kind = self.diffusion_config.prediction
        if kind == "eps":
            eps = output
        elif kind == "x0":
            eps = objectives.eps_from_x0(z, output, log_snr)
        else:
            eps = objectives.eps_from_v(z, output, log_snr)
        return {
            "eps": eps,
            "x0": output if kind == "x0" else objectives.x0_from_eps(z, eps, log_snr),
            "v": output if kind == "v" else objectives.v_from_eps(z, eps, log_snr),
        }

    def loss_fn(
        self, params: Params, batch: Batch, rng: Array, *, train: bool = True
    ) -> tuple[Array, Metrics]:
        """The denoising loss of spec §5.3 (normalised, §11.7) and its metrics.

        ``train`` switches network dropout only; the diffusion objective (noise, time and CFG
        dropout draws) is the same at evaluation, so eval loss estimates the training loss.
        ``rng``: one key, or one key per example (``contract.split_loss_keys``).
        """
        cfg = self.diffusion_config
        x0 = spectrograms.scale_features(batch["target_frames"], clip=cfg.clip_targets)  # [B, T, M]
        batch_size = x0.shape[0]
        dropout_rng, example_rngs = split_loss_keys(rng, batch_size)
        # Per example: its noise, time and CFG dropout come from its own key (microbatch-exact).
        keys = jax.vmap(lambda key: jax.random.split(key, 3))(example_rngs)  # [B, 3]
        eps_rngs, time_rngs, condition_rngs = keys[:, 0], keys[:, 1], keys[:, 2]
        eps = jax.vmap(lambda key: jax.random.normal(key, x0.shape[1:], jnp.float32))(eps_rngs)
        t = jax.vmap(lambda key: jax.random.uniform(key, ()))(time_rngs)  # U[0, 1)
        log_snr = self.log_snr_fn(t)
        z = objectives.diffuse(x0, eps, log_snr)

        context, context_mask = self._context(batch)
        note_tokens, dropped_context_mask, keep = objectives.drop_conditioning(
            condition_rngs, batch["note_tokens"], context_mask, cfg.drop_condition_prob
        )
        output = self.network.apply(
            {"params": params},
            note_tokens,
            context,
            dropped_context_mask,
            z,
            t,
            deterministic=not train,
            rngs={"dropout": dropout_rng},
        )
        predicted = self._to_eps_x0_v(output, z, log_snr)
        target = {"eps": eps, "x0": x0, "v": objectives.v_from_eps(z, eps, log_snr)}[cfg.loss_target]
        target_mask = batch["target_mask"].astype(jnp.float32)
        loss, per_frame = objectives.masked_loss(
            predicted[cfg.loss_target], target, target_mask, norm=cfg.loss_norm
        )
        total_frames = jnp.sum(target_mask)
        metrics = {
            "loss": loss,
            LOSS_WEIGHT: total_frames * target.shape[-1],  # loss = mean over real frames x bins
            # The original's per-frame value: error summed over bins, averaged over real frames.
            "loss_per_frame": jnp.sum(per_frame) / jnp.maximum(total_frames, 1.0),
            "target_frames": total_frames / batch_size,
            "conditioning_dropped": 1.0 - jnp.mean(keep),
        }
        if self.with_context:
            metrics["context_frames"] = jnp.mean(jnp.sum(context_mask.astype(jnp.float32), axis=-1))
        return loss, metrics

    # ------------------------------------------------------------------------------- sampling

    def encode(self, params: Params, batch: Batch) -> SegmentEncoding:
        """Runs the encoders and projects the decoder's cross-attention keys/values, once.

        Reads ``note_tokens`` int32 [B, L] and, with context, ``context_frames`` [B, C, mels]
        (unscaled log-mel) and ``context_mask`` [B, C]; other keys are ignored.
        """
        network = self.network
        variables = {"params": params}
        context_frames, context_mask = self._context(batch)
        encodings, encoding_mask = network.apply(
            variables, batch["note_tokens"], context_frames, context_mask, deterministic=True,
            method="encode")
        cross_kv = network.apply(variables, encodings, method="cross_attention_kv")
        return SegmentEncoding(cross_kv, encoding_mask)

    def decode(self, params: Params, encoding: SegmentEncoding, z: Array, t: Array) -> Array:
        """ε̂(z [B, T, M], t [B]) from cached cross-attention keys/values (no guidance).

        The network's output is read as ``diffusion_config.prediction`` (eps, x0 or v) and
        converted to ε̂, the samplers' currency.
        """
        output = self.network.apply(
            {"params": params},
            z,
            t,
            None,
            encoding.encoding_mask,
            cross_kv=encoding.cross_kv,
            deterministic=True,
            method="decode",
        )
        return self._to_eps_x0_v(output, z, self.log_snr_fn(t))["eps"]

    def denoise_fn(
        self, params: Params, encoding: SegmentEncoding, guidance_weight: float
    ) -> samplers.DenoiseFn:
        """The guided ε̂(z, t) closure for the samplers (spec §5.4 step 2)."""
        # Unconditional rows: same keys/values, all-zero mask. Every cross-attention output is
        # then zeroed (``zero_activations_if_masked``), exactly as dropping tokens and context.
        paired = SegmentEncoding(
            jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), encoding.cross_kv),
            jnp.concatenate([encoding.encoding_mask, jnp.zeros_like(encoding.encoding_mask)]),
        )
        return samplers.guided_denoise_fn(
            lambda z, t: self.decode(params, encoding, z, t),
            lambda z, t: self.decode(params, paired, z, t),
            guidance_weight,
        )

    def sample(
        self,
        params: Params,
        encoding: SegmentEncoding,
        rng: Array,
        sampler: samplers.SamplerConfig,
    ) -> Array:
        """Draws x̂0 in the scaled [-1, 1] space: float32 [B, T, mels]."""
        cfg = self.network_config
        shape = (encoding.encoding_mask.shape[0], cfg.target_frames, cfg.num_mels)
        denoise = self.denoise_fn(params, encoding, sampler.guidance_weight)
        return samplers.sample(sampler, denoise, rng, shape, log_snr_fn=self.log_snr_fn)

    def predict(
        self,
        params: Params,
        batch: Batch,
        rng: Array,
        *,
        sampler: samplers.SamplerConfig = samplers.SamplerConfig(),
    ) -> Array:
        """Samples one segment per example: float32 [B, T, mels] UNSCALED log-mel.

        Args:
            params: network parameters.
            batch: the model batch; ``target_frames``/``target_mask`` are not read.
            rng: sampling key (use ``segment_rng`` per segment of a song).
            sampler: which sampler, how many steps, the guidance weight.
        """
        note_tokens = batch["note_tokens"]
        if not isinstance(note_tokens, jax.core.Tracer):  # trimming needs concrete lengths
            note_tokens = trim_note_tokens(note_tokens, self.diffusion_config.token_bucket)
        conditioning = {"note_tokens": note_tokens}
        if self.with_context:
            if "context_frames" not in batch or "context_mask" not in batch:
                raise ValueError(
                    "DiffusionModel(with_context=True).predict needs batch['context_frames'] and "
                    "batch['context_mask'] (an all-zero mask for the first segment of a song)."
                )
            conditioning.update(context_frames=batch["context_frames"],
                                context_mask=batch["context_mask"])
        return _predict_jit(self, sampler, params, conditioning, rng)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _predict_jit(
    model: DiffusionModel,
    sampler: samplers.SamplerConfig,
    params: Params,
    conditioning: Batch,
    rng: Array,
) -> Array:
    encoding = model.encode(params, conditioning)
    x0 = model.sample(params, encoding, rng, sampler)
    return spectrograms.scale_to_features(x0, clip=True)
