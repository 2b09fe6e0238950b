"""Training-step throughput on real batches, against a matmul probe timed in the same run.

``benchmark_training`` times the trainer's own jitted, sharded step (``trainer.jit_train_step``
on ``trainer.host_batch`` batches, note-token buckets included) for one model and one setting,
and reports it three ways:

* ``flops_per_step``: XLA's cost analysis of the compiled step, i.e. what the machine executes,
  token padding included;
* ``real_flops_per_step``: the same step's cost had every example's note tokens been cut to
  its own length, "real work" (``RealWorkCounter``: the step's cost is a quadratic in the token
  length, fitted through three lowered lengths, and averaged over the examples);
* ``probe_flops_per_second``: a jitted float32 matmul of the model's MLP shape ([B*T, d] @
  [d, mlp]), timed right before and after every timed step, so a busy machine slows both.

``fraction_of_probe`` and ``real_fraction_of_probe`` are the medians over timed steps of
(step FLOP/s) / (mean of its two probes). Used by ``scripts/benchmark_training.py``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.data import feature_converters
from music_spectrogram_diffusion.models.contract import SpectrogramModel
from music_spectrogram_diffusion.training import optimizers, partitioning, trainer
from music_spectrogram_diffusion.training.train_state import TrainState, abstract_boxed_params
from music_spectrogram_diffusion.training.train_state import create_train_state

FIT_LENGTHS = (64, 128, 256)  # note-token lengths the real-work quadratic is fitted through


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """One benchmarked setting; rates are medians over the timed steps."""

    name: str
    batch_size: int
    steps: int
    buckets: tuple[int, ...]
    dtype: str
    note_tokens: tuple[int, ...]  # padded token lengths of the timed batches (sorted, distinct)
    mean_real_tokens: float  # real note tokens per example
    compile_seconds: float
    compilations: int
    seconds_per_step: float
    examples_per_second: float
    flops_per_step: float  # XLA cost analysis of the compiled step(s), mean over batches
    real_flops_per_step: float  # the same with every example cut to its own token length
    flops_per_second: float
    real_flops_per_second: float
    probe_flops_per_second: float  # float32 matmul probe
    probe_bf16_flops_per_second: float  # the same matmul on bfloat16 inputs, float32 sums
    fraction_of_probe: float
    real_fraction_of_probe: float
    load_average: tuple[float, float]  # 1-minute load before and after
    device_kind: str


def _flops(stage: Any) -> float:
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", float("nan")))


class MatmulProbe:
    """A jitted x [m, k] @ w [k, n] (float32, or bfloat16 inputs with float32 accumulation)."""

    def __init__(self, m: int, k: int, n: int, dtype: Any = jnp.float32, seconds: float = 0.3):
        self.flops = 2.0 * m * k * n
        self._x = jnp.ones((m, k), dtype)
        self._w = jnp.ones((k, n), dtype)
        self._fn = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32))
        start = time.perf_counter()
        self._fn(self._x, self._w).block_until_ready()
        self._fn(self._x, self._w).block_until_ready()
        once = max(time.perf_counter() - start, 1e-6) / 2
        self._reps = max(1, int(seconds / once))

    def __call__(self) -> float:
        """FLOP/s of one timed burst."""
        start = time.perf_counter()
        for _ in range(self._reps):
            out = self._fn(self._x, self._w)
        out.block_until_ready()
        return self.flops * self._reps / (time.perf_counter() - start)


class RealWorkCounter:
    """FLOPs of a step with each example's note tokens cut to its own length.

    The step's XLA cost at token length L is c0 + c1 L + c2 L^2 (attention is quadratic, the
    rest linear, the optimizer constant); with the batch's B examples all at length L it is
    opt + B g(L), so a batch whose example b has n_b real tokens costs
    mean_b cost(n_b) = opt + sum_b g(n_b). The quadratic goes through the lowered (unoptimised)
    costs at ``FIT_LENGTHS``.
    """

    def __init__(self, cost_at_length: Callable[[int], float],
                 lengths: Sequence[int] = FIT_LENGTHS):
        costs = [cost_at_length(n) for n in lengths]
        self.coefficients = np.polyfit(np.asarray(lengths, np.float64), costs, 2)

    def __call__(self, note_tokens: np.ndarray) -> float:
        real = [feature_converters.longest_note_tokens(row[None]) for row in note_tokens]
        return float(np.mean(np.polyval(self.coefficients, np.asarray(real, np.float64))))


def benchmark_training(
    model: SpectrogramModel,
    source: trainer.BatchSource,
    *,
    name: str,
    batch_size: int,
    steps: int,
    buckets: Sequence[int] = feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS,
    seed: int = 0,
    optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig(),
    partition: partitioning.PartitionConfig = partitioning.PartitionConfig(),
    real_work: RealWorkCounter | None = None,
) -> BenchmarkResult:
    """Compiles every batch shape, runs one untimed step, then times ``steps`` steps.

    Batches 0..steps-1 of ``source`` are timed (batch ``steps`` is the warm-up); ``real_work``
    may be shared between settings of one model size (see ``make_real_work_counter``).
    """
    from music_spectrogram_diffusion.models.layers import frozen_param_mask

    buckets = feature_converters.check_buckets(buckets)
    mesh = partitioning.make_mesh(partition)
    batches = [trainer.host_batch(source, i, batch_size, seed, buckets) for i in range(steps + 1)]
    cfg = model.network_config
    rows = batch_size * cfg.target_frames
    probe = MatmulProbe(rows, cfg.emb_dim, cfg.mlp_dim)
    probe_bf16 = MatmulProbe(rows, cfg.emb_dim, cfg.mlp_dim, jnp.bfloat16)
    load_before = os.getloadavg()[0]
    with mesh:
        state, shardings, tx = create_train_state(
            model,
            lambda p: optimizers.make_optimizer(optimizer, frozen_param_mask(p)),
            jax.random.key(seed),
            {k: v[:1] for k, v in batches[0].items()},
            mesh,
            partition.rules,
        )
        step = trainer.jit_train_step(model, tx, shardings, mesh)
        device_batches = [partitioning.shard_batch(b, mesh) for b in batches]
        key = jax.random.key(seed + 1)
        compiled, flops = {}, {}
        start = time.perf_counter()
        for batch in device_batches:
            length = batch["note_tokens"].shape[1]
            if length not in compiled:
                compiled[length] = step.lower(state, batch, key).compile()
                flops[length] = _flops(compiled[length])
        compile_seconds = time.perf_counter() - start

        def run(batch, i):
            return compiled[batch["note_tokens"].shape[1]](state, batch, jax.random.fold_in(key, i))

        state, metrics = run(device_batches[-1], steps)
        jax.block_until_ready(state)
        seconds, ratios, real_ratios, probes = [], [], [], []
        for i, batch in enumerate(device_batches[:-1]):
            before = probe()
            start = time.perf_counter()
            state, metrics = run(batch, i)
            jax.block_until_ready((state, metrics))
            seconds.append(time.perf_counter() - start)
            probes.append((before + probe()) / 2)
            length = batch["note_tokens"].shape[1]
            ratios.append(flops[length] / seconds[-1] / probes[-1])
            if real_work is not None:
                real_ratios.append(real_work(batches[i]["note_tokens"]) / seconds[-1] / probes[-1])
        bf16_rate = probe_bf16()
    if not np.isfinite(float(metrics["loss"])):
        raise FloatingPointError(f"benchmark {name}: non-finite loss")
    per_step = float(np.median(seconds))
    mean_flops = float(np.mean([flops[b["note_tokens"].shape[1]] for b in batches[:-1]]))
    real_flops = (float(np.mean([real_work(b["note_tokens"]) for b in batches[:-1]]))
                  if real_work is not None else float("nan"))
    real_tokens = [feature_converters.longest_note_tokens(row[None])
                   for b in batches[:-1] for row in b["note_tokens"]]
    return BenchmarkResult(
        name=name,
        batch_size=batch_size,
        steps=steps,
        buckets=buckets,
        dtype=cfg.dtype,
        note_tokens=tuple(sorted({b["note_tokens"].shape[1] for b in batches[:-1]})),
        mean_real_tokens=float(np.mean(real_tokens)),
        compile_seconds=compile_seconds,
        compilations=len(compiled),
        seconds_per_step=per_step,
        examples_per_second=batch_size / per_step,
        flops_per_step=mean_flops,
        real_flops_per_step=real_flops,
        flops_per_second=mean_flops / per_step,
        real_flops_per_second=real_flops / per_step,
        probe_flops_per_second=float(np.median(probes)),
        probe_bf16_flops_per_second=bf16_rate,
        fraction_of_probe=float(np.median(ratios)),
        real_fraction_of_probe=float(np.median(real_ratios)) if real_ratios else float("nan"),
        load_average=(load_before, os.getloadavg()[0]),
        device_kind=jax.devices()[0].device_kind,
    )


def lowered_step_cost(
    model: SpectrogramModel,
    source: trainer.BatchSource,
    *,
    batch_size: int,
    seed: int = 0,
    optimizer: optimizers.OptimizerConfig = optimizers.OptimizerConfig(),
) -> Callable[[int], float]:
    """note-token length -> XLA's cost of ``model``'s train step at ``batch_size`` (lowered
    only: an abstract state, nothing computed or compiled)."""
    from music_spectrogram_diffusion.models.layers import frozen_param_mask

    batch = source.get_batch(0, batch_size, seed=seed)
    params = nn.unbox(abstract_boxed_params(model, jax.random.key(seed),
                                            {k: v[:1] for k, v in batch.items()}))
    tx = optimizers.make_optimizer(optimizer, frozen_param_mask(params))
    state = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                       opt_state=jax.eval_shape(tx.init, params))
    step = jax.jit(trainer.make_train_step(model, tx))
    key = jax.random.key(seed)

    def cost(length: int) -> float:
        return _flops(step.lower(state, dict(batch, note_tokens=batch["note_tokens"][:, :length]),
                                 key))

    return cost


def make_real_work_counter(model: SpectrogramModel, source: trainer.BatchSource, *,
                           batch_size: int, seed: int = 0) -> RealWorkCounter:
    """A ``RealWorkCounter`` of ``model``'s float32 step; share it with the other dtypes'
    settings (the work is the same, and a bfloat16 step adds only conversions)."""
    if model.network_config.dtype != "float32":
        raise ValueError("count real work on the float32 model: the same work in any dtype")
    return RealWorkCounter(lowered_step_cost(model, source, batch_size=batch_size, seed=seed))


@dataclasses.dataclass(frozen=True)
class Setting:
    """One benchmarked setting of a model size."""

    name: str
    buckets: tuple[int, ...]
    dtype: str


PADDED = Setting("padded", (), "float32")  # today's training: 2048 note tokens, float32
BUCKETED = (
    Setting("buckets", feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS, "float32"),
    Setting("buckets+bf16", feature_converters.DEFAULT_NOTE_TOKEN_BUCKETS, "bfloat16"),
)
TASK = "synthesis_with_context_embedded_notes_ties_melgan_vb1_train"


def run_training_benchmarks(
    *,
    data_dir: str,
    sizes: Sequence[str] = ("tiny", "small"),
    batch_sizes: Sequence[int] = (2, 4),
    steps: int = 3,
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Benchmarks the context diffusion model of each size on batches of the embedded
    dataset's train split (``data_dir``): ``PADDED`` at the first batch size (the small
    model's padded step needs ~9 GB at batch 2), the ``BUCKETED`` settings at every batch size.
    Each row's ``speedup`` is its examples/s over the padded row's.
    """
    from music_spectrogram_diffusion.data import tasks
    from music_spectrogram_diffusion.models.config import T5Config
    from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel

    source = tasks.get_batch_source(TASK, data_dir=data_dir)
    rows = []
    for size in sizes:
        model = DiffusionModel(network_config=T5Config.named(size), with_context=True)
        padded = None
        for batch_size in batch_sizes:
            real_work = make_real_work_counter(model, source, batch_size=batch_size)
            for setting in ((PADDED,) if padded is None else ()) + BUCKETED:
                name = f"{size}/{setting.name}/b{batch_size}"
                progress(f"benchmarking {name} ({steps} timed steps)")
                config = T5Config.named(size, dtype=setting.dtype)
                result = benchmark_training(
                    dataclasses.replace(model, network_config=config), source, name=name,
                    batch_size=batch_size, steps=steps, buckets=setting.buckets,
                    real_work=real_work)
                padded = padded or result
                rows.append(dict(dataclasses.asdict(result),
                                 speedup=result.examples_per_second / padded.examples_per_second))
    return rows


TABLE_COLUMNS = (
    ("name", "setting", "{}"),
    ("note_tokens", "tokens", "{}"),
    ("mean_real_tokens", "real tok", "{:.0f}"),
    ("seconds_per_step", "s/step", "{:.3g}"),
    ("examples_per_second", "ex/s", "{:.3g}"),
    ("speedup", "speed-up", "{:.2f}x"),
    ("flops_per_step", "GFLOP/step", "{:.4g}", 1e-9),
    ("real_flops_per_step", "real GFLOP/step", "{:.4g}", 1e-9),
    ("flops_per_second", "GFLOP/s", "{:.3g}", 1e-9),
    ("real_flops_per_second", "real GFLOP/s", "{:.3g}", 1e-9),
    ("probe_flops_per_second", "probe f32", "{:.3g}", 1e-9),
    ("probe_bf16_flops_per_second", "probe bf16", "{:.3g}", 1e-9),
    ("fraction_of_probe", "of probe", "{:.0%}"),
    ("real_fraction_of_probe", "real of probe", "{:.0%}"),
    ("load_average", "load", "{0[0]:.1f}-{0[1]:.1f}"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A markdown table of ``run_training_benchmarks`` rows (GFLOP/s from the probe columns on)."""
    header = [column[1] for column in TABLE_COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for key, _, fmt, *scale in TABLE_COLUMNS:
            value = row[key]
            if key == "note_tokens":
                value = "/".join(map(str, value))
            elif scale:
                value = value * scale[0]
            cells.append(fmt.format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
