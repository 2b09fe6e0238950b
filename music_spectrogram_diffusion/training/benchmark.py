"""Training-step throughput: steps/s, examples/s and achieved FLOP/s (XLA cost analysis).

Times the real jitted, sharded ``train_step`` of ``training.trainer`` on synthetic batches in
the model-batch layout, so the numbers measure the model + optimizer, not the input pipeline.
Used by ``scripts/benchmark_training.py``.
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from music_spectrogram_diffusion.models.contract import SpectrogramModel
from music_spectrogram_diffusion.testing.fake_models import random_batch
from music_spectrogram_diffusion.training import optimizers, partitioning, trainer
from music_spectrogram_diffusion.training.train_state import create_train_state


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    model: str
    batch_size: int
    steps: int
    compile_seconds: float
    seconds_per_step: float
    steps_per_second: float
    examples_per_second: float
    flops_per_step: float  # XLA's estimate for one compiled train step
    achieved_flops_per_second: float
    devices: int
    device_kind: str


def benchmark_training(
    model: SpectrogramModel,
    *,
    name: str,
    batch_size: int,
    steps: int,
    warmup_steps: int = 1,
    seed: int = 0,
    optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig(),
    partition: partitioning.PartitionConfig = partitioning.PartitionConfig(),
) -> BenchmarkResult:
    """Compiles and times ``steps`` train steps (after ``warmup_steps`` untimed ones)."""
    from music_spectrogram_diffusion.models.layers import frozen_param_mask

    mesh = partitioning.make_mesh(partition)
    batch = random_batch(seed, batch_size)
    with mesh:
        state, shardings, tx = create_train_state(
            model,
            lambda p: optimizers.make_optimizer(optimizer, frozen_param_mask(p)),
            jax.random.key(seed),
            {k: v[:1] for k, v in batch.items()},
            mesh,
            partition.rules,
        )
        replicated = NamedSharding(mesh, PartitionSpec())
        step = jax.jit(
            trainer.make_train_step(model, tx),
            in_shardings=(shardings, partitioning.batch_sharding(mesh), replicated),
            out_shardings=(shardings, replicated),
            donate_argnums=(0,),
        )
        device_batch = partitioning.shard_batch(batch, mesh)
        key = jax.random.key(seed + 1)
        start = time.perf_counter()
        compiled = step.lower(state, device_batch, key).compile()
        compile_seconds = time.perf_counter() - start
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float((cost or {}).get("flops", float("nan")))
        for i in range(warmup_steps):
            state, metrics = compiled(state, device_batch, jax.random.fold_in(key, i))
        jax.block_until_ready(state)
        start = time.perf_counter()
        for i in range(steps):
            state, metrics = compiled(state, device_batch, jax.random.fold_in(key, 1000 + i))
        jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / steps
    if not np.isfinite(float(metrics["loss"])):
        raise FloatingPointError(f"benchmark {name}: non-finite loss")
    return BenchmarkResult(
        model=name,
        batch_size=batch_size,
        steps=steps,
        compile_seconds=compile_seconds,
        seconds_per_step=seconds,
        steps_per_second=1.0 / seconds,
        examples_per_second=batch_size / seconds,
        flops_per_step=flops,
        achieved_flops_per_second=flops / seconds,
        devices=len(jax.devices()),
        device_kind=jax.devices()[0].device_kind,
    )
