"""The train state (step, parameters, optimizer state) and its sharded creation.

Parameters live in the state as plain arrays (the flax logical-axis boxes are read once to
derive shardings, then unboxed), like t5x's ``FlaxOptimTrainState``. The state is created
directly in its sharded layout by a jitted init with ``out_shardings``, so no device ever holds
a full copy of a model that only fits sharded.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from music_spectrogram_diffusion.models.contract import SpectrogramModel
from music_spectrogram_diffusion.training import partitioning


@flax.struct.dataclass
class TrainState:
    """Everything a training step changes. ``step`` counts optimizer updates applied."""

    step: jax.Array  # int32 scalar
    params: Any
    opt_state: Any


def abstract_boxed_params(model: SpectrogramModel, rng: jax.Array, batch: dict) -> Any:
    """Shapes, dtypes and logical-axis metadata of the parameters, without computing them."""
    return jax.eval_shape(model.init, rng, batch)


def state_shardings(
    model: SpectrogramModel,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    batch: dict,
    mesh: Mesh,
    rules,
) -> TrainState:
    """A TrainState of NamedShardings: params by the logical rules, opt state like its params."""
    boxed = abstract_boxed_params(model, rng, batch)
    param_shardings = partitioning.logical_shardings(boxed, mesh, rules)
    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
    opt_shardings = partitioning.optimizer_state_shardings(
        abstract_opt, abstract_params, param_shardings, mesh
    )
    return TrainState(
        step=NamedSharding(mesh, PartitionSpec()), params=param_shardings, opt_state=opt_shardings
    )


def create_train_state(
    model: SpectrogramModel,
    make_optimizer: Callable[[Any], optax.GradientTransformation],
    rng: jax.Array,
    batch: dict,
    mesh: Mesh,
    rules,
) -> tuple[TrainState, TrainState, optax.GradientTransformation]:
    """Initialises parameters and optimizer state in their sharded layout.

    Args:
      model: the model object.
      make_optimizer: params -> optimizer (the optimizer needs the frozen-parameter mask, which
        needs the parameter tree).
      rng: the parameter-initialisation key.
      batch: an example batch (only shapes and dtypes matter).
      mesh, rules: the device mesh and logical-axis rules.

    Returns:
      (state, shardings of the state, optimizer).
    """
    abstract_params = nn.unbox(abstract_boxed_params(model, rng, batch))
    optimizer = make_optimizer(abstract_params)
    shardings = state_shardings(model, optimizer, rng, batch, mesh, rules)

    def init(rng, batch):
        params = nn.unbox(model.init(rng, batch))
        return TrainState(
            step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params)
        )

    state = jax.jit(init, out_shardings=shardings)(rng, batch)
    return state, shardings, optimizer


def abstract_state(state_shape: TrainState, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs with shardings: the restore target for checkpoints."""
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state_shape, shardings
    )
