#!/usr/bin/env python
"""Decoder step of our JAX model vs the PyTorch (diffusers) port, measured side by side.

Both implementations time one decoder step of the same config (batch 1, no guidance: the port
applies none, spec §9.2) on the same segment (the port's synthetic benchmark MIDI). Each
measurement runs in its own process, alternating torch / JAX for ``--rounds`` rounds, so slow
drift of a shared machine hits both alike; the ratio of medians is reported.

Set-up of the port (its own virtual environment, torch from the CPU wheel + diffusers):
  bash ../shared/bench/setup_venv.sh /tmp/torchbench_venv
Usage:
  .venv/bin/python scripts/compare_torch_port.py --config small \
      --torch_python /tmp/torchbench_venv/bin/python --bench_dir ../shared/bench --out results/vs_torch.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

from music_spectrogram_diffusion import file_io

# Runs inside the port's venv: builds the pipeline with random weights and times decode().
_TORCH_STEP = r"""
import json, statistics, sys, time
sys.path.insert(0, sys.argv[1])
import torch
import diffusers_port_bench as b
pipe, _ = b.build(sys.argv[2])
tokens, info = b.make_tokens()
cont = pipe.scale_features(torch.zeros(1, b.TARGET_LEN, b.N_MELS), output_range=[-1.0, 1.0], clip=True)
x = torch.randn(1, b.TARGET_LEN, b.N_MELS, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    enc = pipe.encode(input_tokens=torch.IntTensor([tokens[0]]), continuous_inputs=cont,
                      continuous_mask=torch.ones((1, b.TARGET_LEN), dtype=bool))
    step = lambda: pipe.decode(encodings_and_masks=enc, input_tokens=x, noise_time=torch.tensor(0.5))
    for _ in range(2):
        step()
    times = []
    for _ in range(int(sys.argv[3])):
        start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
print(json.dumps({"median": statistics.median(times), "min": min(times), "threads": torch.get_num_threads()}))
"""

# Runs in our venv: the conditional (w = 1) step with cached cross-attention keys/values.
_JAX_STEP = r"""
import json, statistics, sys, time
import jax, jax.numpy as jnp, numpy as np
from music_spectrogram_diffusion.models import sampling_benchmark as sb
from music_spectrogram_diffusion.models.config import T5Config
from music_spectrogram_diffusion.models.diffusion_model import DiffusionModel, trim_note_tokens
from music_spectrogram_diffusion.models.contract import make_batch
cfg = T5Config.named(sys.argv[1]); model = DiffusionModel(network_config=cfg)
tokens = sb.benchmark_note_tokens(cfg.note_tokens_length)
ctx = np.full((1, cfg.context_frames, cfg.num_mels), -11.5, np.float32); mask = np.ones((1, cfg.context_frames), np.float32)
batch = make_batch(tokens, network_config=cfg, context_frames=ctx, context_mask=mask)
params = jax.jit(model.init)(jax.random.key(0), batch)
encoding = jax.jit(model.encode)(params, dict(batch, note_tokens=trim_note_tokens(tokens, model.diffusion_config.token_bucket)))
step = jax.jit(lambda p, e, z, t: model.denoise_fn(p, e, 1.0)(z, t))
z = jax.random.normal(jax.random.key(1), (1, cfg.target_frames, cfg.num_mels)); t = jnp.full((1,), 0.5)
for _ in range(2):
    jax.block_until_ready(step(params, encoding, z, t))
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter(); jax.block_until_ready(step(params, encoding, z, t)); times.append(time.perf_counter() - start)
print(json.dumps({"median": statistics.median(times), "min": min(times)}))
"""


def _run(cmd: list[str]) -> dict:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=("small", "base"), default="small")
    parser.add_argument("--torch_python", required=True, help="python of the port's venv")
    parser.add_argument("--bench_dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=7, help="timed decoder steps per process")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    bench_dir = os.path.abspath(args.bench_dir)
    if not os.path.isfile(os.path.join(bench_dir, "diffusers_port_bench.py")):
        parser.error(f"{bench_dir}: diffusers_port_bench.py not found (pass --bench_dir)")
    if not os.access(args.torch_python, os.X_OK):
        parser.error(f"{args.torch_python}: not an executable python (run ../shared/bench/setup_venv.sh first)")

    rounds = []
    for i in range(args.rounds):
        torch_step = _run([args.torch_python, "-c", _TORCH_STEP, bench_dir, args.config, str(args.steps)])
        jax_step = _run([sys.executable, "-c", _JAX_STEP, args.config, str(args.steps)])
        rounds.append({"torch": torch_step, "jax": jax_step})
        print(f"round {i + 1}: torch {torch_step['median']:.3f} s/step, jax {jax_step['median']:.3f} s/step",
              file=sys.stderr, flush=True)
    torch_median = statistics.median(r["torch"]["median"] for r in rounds)
    jax_median = statistics.median(r["jax"]["median"] for r in rounds)
    result = {
        "config": args.config, "batch_size": 1, "guidance": "none (w = 1) in both",
        "torch_decoder_step_seconds": torch_median, "jax_decoder_step_seconds": jax_median,
        "speedup": torch_median / jax_median, "rounds": rounds, "load_average": os.getloadavg(),
    }
    print(f"| config | torch port s/step | ours s/step | speed-up |\n|---|---|---|---|\n"
          f"| {args.config} | {torch_median:.3f} | {jax_median:.3f} | {result['speedup']:.2f}x |")
    file_io.write_json_atomic(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
