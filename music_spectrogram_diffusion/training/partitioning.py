"""Device mesh, the logical-axis rules table, and shardings for params, optimizer state, batches.

t5x conventions (``t5x.partitioning.PjitPartitioner``): a 2-D mesh with axes ('data', 'model');
``num_partitions`` devices per model replica (or an explicit ``model_parallel_submesh``); modules
name their axes logically ('embed', 'mlp', 'heads', ...) through ``nn.with_logical_partitioning``
and ONE rules table maps logical names to mesh axes. Everything is placed with ``jax.jit`` and
``NamedSharding``; there is no pmap. The original ran ``num_partitions=1``: pure data parallelism.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
MODEL_AXIS = "model"

# t5x `standard_logical_axis_rules` (activation_partitioning_dims=1, parameter_partitioning_dims=1)
# plus this codebase's continuous-feature names. Names absent here (or mapped to None) are
# replicated. Model parallelism splits the MLP hidden axis, the attention heads and the vocabulary;
# 'embed' (d_model) stays whole, as in t5x's 1-D parameter partitioning.
STANDARD_LOGICAL_AXIS_RULES: tuple[tuple[str, str | None], ...] = (
    ("batch", DATA_AXIS),
    ("vocab", MODEL_AXIS),
    ("embed", None),
    ("mlp", MODEL_AXIS),
    ("heads", MODEL_AXIS),
    ("kv", None),
    ("joined_kv", MODEL_AXIS),
    ("relpos_buckets", None),
    ("abspos_buckets", None),
    ("length", None),
    ("layers", None),
    ("stack", None),
    ("mlp_activations", None),
    ("mel", None),
    ("time_embed", None),
    ("film", None),
)


@dataclasses.dataclass(frozen=True)
class PartitionConfig:
    """How devices form the ('data', 'model') mesh.

    Attributes:
      num_partitions: devices per model replica along 'model' (t5x ``num_partitions``).
      model_parallel_submesh: alternative to num_partitions, t5x style; only the product of the
        tuple is used here (the 'model' axis size), devices are laid out by ``mesh_utils``.
      logical_axis_rules: overrides the standard table (sequence of (logical name, mesh axis)).
      multihost: call ``jax.distributed.initialize()`` before building the mesh (one process per
        host; coordinator settings come from the environment, as in t5x).
    """

    num_partitions: int = 1
    model_parallel_submesh: tuple[int, ...] | None = None
    logical_axis_rules: tuple[tuple[str, str | None], ...] | None = None
    multihost: bool = False

    def __post_init__(self):
        if self.num_partitions < 1:
            raise ValueError(f"PartitionConfig.num_partitions must be >= 1, got {self.num_partitions}")
        if self.model_parallel_submesh is not None and self.num_partitions != 1:
            raise ValueError(
                "PartitionConfig: set num_partitions or model_parallel_submesh, not both"
            )

    @property
    def model_axis_size(self) -> int:
        if self.model_parallel_submesh is not None:
            return int(math.prod(self.model_parallel_submesh))
        return self.num_partitions

    @property
    def rules(self) -> tuple[tuple[str, str | None], ...]:
        return self.logical_axis_rules or STANDARD_LOGICAL_AXIS_RULES


# Environment variables read when the flags are not given (jax.distributed itself also reads the
# cluster launchers' variables: SLURM, Open MPI, TPU metadata, Kubernetes).
COORDINATOR_ENV, PROCESS_COUNT_ENV, PROCESS_INDEX_ENV = (
    "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-process run (t5x's ``--coordinator_address``,
    ``--process_count``, ``--process_index``).

    Attributes:
      coordinator_address: HOST:PORT of process 0's coordinator service; None reads
        $JAX_COORDINATOR_ADDRESS, and if that is unset too, this is a 1-process run unless
        ``auto`` is set.
      process_count: number of processes (one per host); None: $JAX_NUM_PROCESSES or the launcher's.
      process_index: this process's index in [0, process_count); None: $JAX_PROCESS_ID or the
        launcher's.
      auto: call ``jax.distributed.initialize()`` with no arguments, so it reads the cluster
        launcher's environment (TPU pods, SLURM, Open MPI); PartitionConfig.multihost does the same.
    """

    coordinator_address: str | None = None
    process_count: int | None = None
    process_index: int | None = None
    auto: bool = False

    @classmethod
    def from_env(cls, coordinator_address=None, process_count=None, process_index=None,
                 auto: bool = False) -> DistributedConfig:
        env = os.environ
        if coordinator_address is None:
            coordinator_address = env.get(COORDINATOR_ENV) or None
        if process_count is None and env.get(PROCESS_COUNT_ENV):
            process_count = int(env[PROCESS_COUNT_ENV])
        if process_index is None and env.get(PROCESS_INDEX_ENV):
            process_index = int(env[PROCESS_INDEX_ENV])
        return cls(coordinator_address, process_count, process_index, auto)

    def __post_init__(self):
        if self.coordinator_address is not None and ":" not in self.coordinator_address:
            raise ValueError(f"coordinator_address {self.coordinator_address!r} must be HOST:PORT")
        if self.process_count is not None and self.process_count < 1:
            raise ValueError(f"process_count must be >= 1, got {self.process_count}")
        if self.process_index is not None and not (
                0 <= self.process_index < (self.process_count or self.process_index + 1)):
            raise ValueError(f"process_index {self.process_index} is not in "
                             f"[0, process_count={self.process_count})")
        if self.coordinator_address and (self.process_count is None or self.process_index is None):
            raise ValueError("coordinator_address needs process_count and process_index too "
                             "(flags --process_count/--process_index or $JAX_NUM_PROCESSES/"
                             "$JAX_PROCESS_ID)")

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator_address is not None


def initialize_distributed(config: DistributedConfig) -> None:
    """Joins the multi-process run described by ``config``; a no-op for a 1-process run.

    Must run before anything touches a JAX backend. CPU processes exchange collectives through
    gloo (so multi-process runs, and their tests, work on CPU-only machines); accelerators use
    their own (NCCL, ICI).
    """
    if not config.enabled or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if config.coordinator_address is None:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(coordinator_address=config.coordinator_address,
                                   num_processes=config.process_count,
                                   process_id=config.process_index)
    logging.info("jax.distributed: process %d of %d, %d local of %d devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())


def initialize_multihost(config: PartitionConfig) -> None:
    """Starts jax.distributed from the launcher's environment when ``config.multihost`` asks
    for it and the process has not joined a run yet (see ``initialize_distributed``)."""
    if config.multihost:
        initialize_distributed(DistributedConfig(auto=True))


def make_mesh(config: PartitionConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'model') mesh: data = num_devices / model_axis_size."""
    devices = list(devices if devices is not None else jax.devices())
    model = config.model_axis_size
    if len(devices) % model:
        raise ValueError(
            f"PartitionConfig: {len(devices)} devices cannot be split into model-parallel groups "
            f"of {model}"
        )
    shape = (len(devices) // model, model)
    try:
        from jax.experimental import mesh_utils

        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


def logical_shardings(abstract_boxed_tree: Any, mesh: Mesh, rules) -> Any:
    """NamedShardings for a tree whose leaves carry flax logical-axis metadata (or none)."""
    specs = nn.get_partition_spec(abstract_boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def _drop_axis(spec: PartitionSpec, rank: int, axis: int) -> PartitionSpec:
    entries = list(spec) + [None] * (rank - len(spec))
    del entries[axis]
    return PartitionSpec(*entries)


def _path_keys(path) -> tuple:
    return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def optimizer_state_shardings(
    abstract_opt_state: Any, abstract_params: Any, param_shardings: Any, mesh: Mesh
) -> Any:
    """Shards optimizer-state leaves like the parameter they belong to.

    optax states hold per-parameter subtrees (Adam moments, Adafactor's v / v_row / v_col), so a
    state leaf whose key path ends with a parameter's path belongs to that parameter. A leaf of
    the parameter's shape takes its sharding; a factored Adafactor row/column statistic (the
    parameter's shape with one axis removed) takes its spec with that axis dropped; anything else
    (counts, scalars, placeholder (1,) factors) is replicated.
    """
    by_path = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(abstract_params), jax.tree.leaves(param_shardings)
    ):
        by_path[_path_keys(path)] = (tuple(leaf.shape), sharding.spec)
    replicated = NamedSharding(mesh, PartitionSpec())

    def assign(path, leaf):
        keys = _path_keys(path)
        shape = tuple(getattr(leaf, "shape", ()))
        for start in range(len(keys)):
            found = by_path.get(keys[start:])
            if found is None:
                continue
            param_shape, spec = found
            if shape == param_shape:
                return NamedSharding(mesh, spec)
            for axis in range(len(param_shape)):
                if shape == param_shape[:axis] + param_shape[axis + 1 :]:
                    return NamedSharding(mesh, _drop_axis(spec, len(param_shape), axis))
            return replicated
        return replicated

    return jax.tree_util.tree_map_with_path(assign, abstract_opt_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches are split over 'data' on their leading axis and replicated over 'model'."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def host_batch_slice(global_batch_size: int) -> slice:
    """This host's rows of the global batch (per-host input sharding, t5x style); the rule is
    ``data.loader.host_rows``, which the input pipeline uses too."""
    from music_spectrogram_diffusion.data.loader import host_rows

    rows = host_rows(global_batch_size, process_index=jax.process_index(),
                     process_count=jax.process_count())
    return slice(0, global_batch_size) if rows is None else rows


# A host that does not answer in 30 minutes is gone (the others may still be compiling a large
# model's first step, or writing a checkpoint, when an exchange starts).
_EXCHANGE_TIMEOUT_MS = 30 * 60 * 1000
_exchanges = itertools.count()


def max_over_hosts(value: int) -> int:
    """The largest ``value`` over all processes; ``value`` itself in a single process.

    For per-batch choices every host must make alike, such as the note-token bucket (each host
    holds only its rows of the global batch, but the global array has one shape). Every process
    must call it the same number of times in the same order (the trainer does: once per train
    and eval batch).

    The values travel through the ``jax.distributed`` coordinator's key-value store, host to
    host: a device collective (``process_allgather``) would be queued behind the train step
    that is running on the device, so the host could not prepare the next batch until that step
    ended and the device would wait for every batch.
    """
    if jax.process_count() == 1:
        return int(value)
    from jax._src import distributed  # the coordinator client jax.distributed.initialize made

    client = distributed.global_state.client
    if client is None:  # multi-process without jax.distributed (e.g. TPU auto-detection)
        from jax.experimental import multihost_utils

        return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))
    exchange = next(_exchanges)
    me, count = jax.process_index(), jax.process_count()
    client.key_value_set(f"msd/max_over_hosts/{exchange}/{me}", str(int(value)))
    values = []
    for i in range(count):
        try:
            values.append(int(client.blocking_key_value_get(f"msd/max_over_hosts/{exchange}/{i}",
                                                            _EXCHANGE_TIMEOUT_MS)))
        except Exception as e:  # jaxlib raises its runtime error type for a deadline
            raise RuntimeError(
                f"process {me}: process {i} did not reach exchange {exchange} of the per-batch "
                f"note-token bucket within {_EXCHANGE_TIMEOUT_MS // 60000} minutes ({e}); every "
                "process must run the same command with the same gin config") from e
    if exchange >= 2:
        # Every host has read exchange - 2: each has published exchange - 1, which it does only
        # after reading all of exchange - 2.
        client.key_value_delete(f"msd/max_over_hosts/{exchange - 2}/{me}")
    return max(values)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Places a host-local batch (this host's rows) as global arrays sharded over 'data'."""
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return {k: jax.device_put(v, sharding) for k, v in batch.items()}
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
