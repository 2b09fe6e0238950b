"""CPU/accelerator timing of spectrogram sampling: encoders, one decoder step, whole segments.

``run_benchmark`` builds a ``DiffusionModel`` with random weights (timing does not depend on
them), encodes one 5.12 s segment and times:

- the encoders plus the cross-attention key/value projection (once per segment), with the note
  tokens trimmed to a 256-token bucket (our default) and untrimmed (2048, the PyTorch port);
- one decoder step: guided (w = 2, one batched call of 2B rows) and conditional only (w = 1,
  the PyTorch port's setting: it applies no guidance, spec §9.2);
- FLOPs of the compiled decoder step from XLA's cost analysis (``Compiled.cost_analysis``;
  counts 2 FLOPs per multiply-add plus element-wise work), hence achieved GFLOP/s;
- real-time factors (audio seconds per wall second, batch 1) of 1000-step DDPM with guidance and
  20-/50-step DPM-Solver++ with guidance. Fast samplers are timed end to end as one jitted
  call unless ``quick``; 1000-step DDPM (and everything in ``quick`` mode) is extrapolated as
  encoder + steps x decoder step, and the JSON says which.

The note tokens are the PyTorch baseline's (/work/shared/bench/diffusers_port_bench.py
``make_tokens``): a synthetic 5 s piano MIDI, three-note chords every 0.25 s, tokenised here
with our tokenizer, so both implementations see the same segment.
"""

from __future__ import annotations

import io
import math
import platform
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from music_spectrogram_diffusion.diffusion import samplers
from music_spectrogram_diffusion.features import DEFAULT_FEATURES
from music_spectrogram_diffusion.models import layers
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.contract import make_batch
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel
from music_spectrogram_diffusion.models.diffusion_model import trim_note_tokens

BENCHMARK_SIZES = ("tiny", "small", "base")
GUIDANCE_WEIGHT = 2.0
FAST_STEPS = (20, 50)
DDPM_STEPS = 1000


def benchmark_midi_bytes() -> bytes:
    """The PyTorch baseline's synthetic MIDI: C-major-scale triads every 0.25 s for 5 s."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    t, i = 0.0, 0
    while t < 5.0:
        for chord_offset in (0, 4, 7):
            piano.notes.append(pretty_midi.Note(
                velocity=90, pitch=pitches[i % 8] + chord_offset, start=t, end=min(t + 0.45, 5.1)))
        t += 0.25
        i += 1
    pm.instruments.append(piano)
    buffer = io.BytesIO()
    pm.write(buffer)
    return buffer.getvalue()


def benchmark_note_tokens(length: int = DEFAULT_FEATURES.max_note_tokens) -> np.ndarray:
    """int32 [1, length]: the first segment of ``benchmark_midi_bytes``, 0-padded."""
    from music_spectrogram_diffusion.data import tokenizer

    segment = tokenizer.tokenize_midi(benchmark_midi_bytes())[0]
    return tokenizer.pad_tokens(segment.tokens, length)[None].astype(np.int32)


def _time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median / min wall seconds of ``fn`` after one warm-up (compile) call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return {"median": statistics.median(times), "min": min(times), "runs": len(times)}


def _flops(jitted: Any, *args: Any) -> float:
    analysis = jitted.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax returned one dict per device
        analysis = analysis[0]
    return float(analysis.get("flops", math.nan)) if analysis else math.nan


def matmul_probe_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Median GFLOP/s of an n x n float32 matmul: how busy/fast the machine is right now.

    The same probe as the PyTorch baseline's machine-state column, so runs taken on a loaded
    machine can be recognised and compared as ratios.
    """
    a = jax.random.normal(jax.random.key(0), (n, n))
    matmul = jax.jit(jnp.dot)
    seconds = _time(lambda: matmul(a, a), repeats)["median"]
    return 2 * n**3 / seconds / 1e9


def run_benchmark(
    size: str, *, quick: bool = False, seed: int = 0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Times sampling for the ``size`` network ('tiny', 'small' or 'base'); returns a JSON dict."""
    if size not in BENCHMARK_SIZES:
        raise ValueError(f"Unknown benchmark config {size!r}; valid: {', '.join(BENCHMARK_SIZES)}.")
    network_config = T5Config.named(size)
    model = DiffusionModel(network_config=network_config)
    segment_seconds = network_config.target_frames / DEFAULT_FEATURES.frames_per_second
    repeats = 2 if quick else 5

    tokens_full = benchmark_note_tokens(network_config.note_tokens_length)
    tokens_trimmed = trim_note_tokens(tokens_full, model.diffusion_config.token_bucket)
    frames_shape = (1, network_config.context_frames, network_config.num_mels)
    # A later segment: a full previous segment as context (mask all ones).
    batch = make_batch(tokens_full, network_config=network_config,
                       context_frames=np.full(frames_shape, DEFAULT_FEATURES.min_log_mel, np.float32))
    log(f"[{size}] initialising random weights")
    probe_before = matmul_probe_gflops()
    params = jax.jit(model.init)(jax.random.key(seed), batch)
    result: dict[str, Any] = {
        "config": size,
        "network_config": {k: getattr(network_config, k) for k in network_config.__dataclass_fields__},
        "params_trainable": layers.count_parameters(params),
        "params_frozen": layers.count_parameters(params, include_frozen=True) - layers.count_parameters(params),
        "note_tokens_real": int(np.count_nonzero(tokens_full)),
        "note_tokens_encoded": int(tokens_trimmed.shape[1]),
        "note_tokens_untrimmed": int(tokens_full.shape[1]),
        "token_source": "benchmark_midi_bytes() (the torch baseline's synthetic MIDI), our tokenizer",
        "batch_size": 1,
        "quick": quick,
        "device": str(jax.devices()[0].device_kind),
        "platform": platform.platform(),
        "jax": jax.__version__,
        "segment_seconds": segment_seconds,
    }

    encode = jax.jit(model.encode)
    conditioning = {k: batch[k] for k in ("note_tokens", "context_frames", "context_mask")}
    trimmed_batch = dict(conditioning, note_tokens=tokens_trimmed)
    log(f"[{size}] timing encoders ({result['note_tokens_encoded']} and 2048 tokens)")
    result["encoder_seconds"] = _time(lambda: encode(params, trimmed_batch), repeats)["median"]
    result["encoder_seconds_untrimmed"] = _time(lambda: encode(params, conditioning), repeats)["median"]
    encoding = encode(params, trimmed_batch)
    encoding_full = encode(params, conditioning)

    z = jax.random.normal(jax.random.key(seed + 1), batch["target_frames"].shape)
    t = jnp.full((1,), 0.5)
    steps: dict[str, Any] = {}
    for name, weight, enc in (
        ("guided", GUIDANCE_WEIGHT, encoding),
        ("conditional", 1.0, encoding),
        ("conditional_untrimmed", 1.0, encoding_full),
    ):
        step = jax.jit(lambda p, e, z, t, w=weight: model.denoise_fn(p, e, w)(z, t))
        log(f"[{size}] timing one decoder step ({name})")
        timing = _time(lambda: step(params, enc, z, t), repeats * 2)
        flops = _flops(step, params, enc, z, t)
        steps[name] = {**timing, "flops": flops, "gflops_per_second": flops / timing["median"] / 1e9}
    result["decoder_steps"] = steps
    result["decoder_step_seconds"] = steps["guided"]["median"]
    result["decoder_step_flops"] = steps["guided"]["flops"]
    result["decoder_step_gflops_per_second"] = steps["guided"]["gflops_per_second"]
    result["decoder_step_seconds_conditional"] = steps["conditional"]["median"]
    result["flops_method"] = "XLA cost_analysis of the compiled step (2 FLOPs per multiply-add)"

    rtf: dict[str, Any] = {}
    estimate = lambda n: result["encoder_seconds"] + n * steps["guided"]["median"]  # noqa: E731
    rtf[f"ddpm_{DDPM_STEPS}_w{GUIDANCE_WEIGHT:g}"] = {
        "seconds": estimate(DDPM_STEPS), "rtf": segment_seconds / estimate(DDPM_STEPS),
        "method": "extrapolated: encoder + steps x guided decoder step"}
    for n in FAST_STEPS:
        key = f"dpm++_{n}_w{GUIDANCE_WEIGHT:g}"
        if quick:
            seconds, method = estimate(n), "extrapolated: encoder + steps x guided decoder step"
        else:
            sampler = samplers.SamplerConfig(name="dpm++", num_steps=n, guidance_weight=GUIDANCE_WEIGHT)
            log(f"[{size}] timing a whole {n}-step DPM-Solver++ segment")
            run = lambda: model.predict(params, batch, jax.random.key(seed), sampler=sampler)  # noqa: E731
            seconds = _time(run, 1)["median"]
            method = "measured: one jitted predict (encoders + scan), after a compile run"
        rtf[key] = {"seconds": seconds, "rtf": segment_seconds / seconds, "method": method}
    result["rtf"] = rtf
    result["matmul_probe_gflops"] = {"before": probe_before, "after": matmul_probe_gflops()}
    return result


def format_table(result: dict[str, Any]) -> str:
    """A human-readable summary of ``run_benchmark``'s result."""
    s = result["decoder_steps"]
    lines = [
        f"config {result['config']}: {result['params_trainable'] / 1e6:.2f} M trainable parameters "
        f"(+{result['params_frozen'] / 1e6:.2f} M frozen), device {result['device']}, batch 1",
        f"note tokens: {result['note_tokens_real']} real, encoded {result['note_tokens_encoded']} "
        f"(untrimmed {result['note_tokens_untrimmed']})",
        "1024^3 matmul probe (GFLOP/s, before/after): "
        f"{result['matmul_probe_gflops']['before']:.0f} / {result['matmul_probe_gflops']['after']:.0f}",
        f"encoders + cross K/V:    {result['encoder_seconds']:.3f} s/segment "
        f"(untrimmed {result['encoder_seconds_untrimmed']:.3f} s)",
        f"{'decoder step':<24} {'seconds':>9} {'GFLOP':>9} {'GFLOP/s':>9}",
    ]
    for name, v in s.items():
        lines.append(f"  {name:<22} {v['median']:>9.4f} {v['flops'] / 1e9:>9.2f} {v['gflops_per_second']:>9.1f}")
    lines.append(f"{'sampler':<24} {'seconds':>9} {'RTF':>9}  method")
    for name, v in result["rtf"].items():
        lines.append(f"  {name:<22} {v['seconds']:>9.2f} {v['rtf']:>9.4f}  {v['method']}")
    return "\n".join(lines)
