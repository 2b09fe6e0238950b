"""Optimizers and learning-rate schedules, built on optax.

The original trains with t5x's Adafactor (spec §6): decay_rate 0.8, factored second moments,
update scaled by max(1e-3, RMS(param)), update-RMS clipping at 1.0, epsilon1 1e-30, no momentum,
no weight decay, and a flat learning rate of 1e-3. ``OptimizerConfig()`` reproduces exactly that
through ``optax.adafactor``. AdamW and the usual schedules are here for experiments.

Frozen parameters (the random-phase position tables stored as ``Embed_0/embedding``, spec §4.2)
are masked out of the update with ``optax.masked`` + ``set_to_zero``, so they never change and
carry no optimizer state, whatever their gradient.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "linear_warmup", "rsqrt")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer and schedule; the defaults are the original's t5x Adafactor (spec §6).

    Attributes:
      name: 'adafactor' or 'adamw'.
      learning_rate: peak (or constant) learning rate.
      schedule: 'constant' (the original: its warmup_steps=1000 binding had no effect, §11.7),
        'linear_warmup' (0 -> learning_rate over warmup_steps, then flat), or 'rsqrt'
        (linear warm-up, then learning_rate * sqrt(warmup_steps / step), t5x's rsqrt_decay).
      warmup_steps: warm-up length for 'linear_warmup' and 'rsqrt'.
      decay_rate: Adafactor second-moment decay exponent: beta2(t) = 1 - (t+1)^-decay_rate.
      clipping_threshold: Adafactor update-RMS clipping; None disables it.
      multiply_by_parameter_scale: Adafactor's relative step size.
      min_dim_size_to_factor: Adafactor factors a dimension pair only if both are at least this.
      b1, b2, eps, weight_decay: AdamW settings.
      max_grad_norm: global-norm gradient clipping before the optimizer; None disables it.
    """

    name: str = "adafactor"
    learning_rate: float = 1e-3
    schedule: str = "constant"
    warmup_steps: int = 1000
    decay_rate: float = 0.8
    clipping_threshold: float | None = 1.0
    multiply_by_parameter_scale: bool = True
    min_dim_size_to_factor: int = 128
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-9
    weight_decay: float = 0.0
    max_grad_norm: float | None = None

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"OptimizerConfig.name={self.name!r}; valid values: {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"OptimizerConfig.schedule={self.schedule!r}; valid values: {SCHEDULES}"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"OptimizerConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.schedule != "constant" and self.warmup_steps < 1:
            raise ValueError(
                f"OptimizerConfig.warmup_steps must be >= 1 for schedule {self.schedule!r}"
            )


def make_learning_rate_schedule(config: OptimizerConfig) -> optax.Schedule:
    """Returns step -> learning rate (a scalar float32 array)."""
    peak = config.learning_rate
    if config.schedule == "constant":
        return optax.constant_schedule(peak)
    warmup = float(config.warmup_steps)

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        ramp = peak * jnp.minimum(1.0, (step + 1.0) / warmup)
        if config.schedule == "linear_warmup":
            return ramp
        # rsqrt: lr * sqrt(warmup / max(step, warmup)) after the ramp (t5x 'rsqrt_decay').
        return jnp.where(step < warmup, ramp, peak * jnp.sqrt(warmup / jnp.maximum(step, warmup)))

    return schedule


def _base_transform(config: OptimizerConfig, schedule: optax.Schedule):
    if config.name == "adafactor":
        return optax.adafactor(
            learning_rate=schedule,
            min_dim_size_to_factor=config.min_dim_size_to_factor,
            decay_rate=config.decay_rate,
            decay_offset=0,
            multiply_by_parameter_scale=config.multiply_by_parameter_scale,
            clipping_threshold=config.clipping_threshold,
            momentum=None,
            eps=1e-30,
            factored=True,
        )
    return optax.adamw(
        learning_rate=schedule,
        b1=config.b1,
        b2=config.b2,
        eps=config.eps,
        weight_decay=config.weight_decay,
    )


def make_optimizer(config: OptimizerConfig, frozen_mask: Any) -> optax.GradientTransformation:
    """Builds the optimizer; parameters where ``frozen_mask`` is True get zero updates.

    Args:
      config: the optimizer settings.
      frozen_mask: bool pytree with the parameters' structure (``models.layers.frozen_param_mask``).
    """
    schedule = make_learning_rate_schedule(config)
    trainable = _base_transform(config, schedule)
    if config.max_grad_norm is not None:
        trainable = optax.chain(optax.clip_by_global_norm(config.max_grad_norm), trainable)
    not_frozen = jax.tree.map(lambda frozen: not bool(frozen), frozen_mask)
    return optax.chain(
        optax.masked(trainable, not_frozen),
        optax.masked(optax.set_to_zero(), frozen_mask),
    )
