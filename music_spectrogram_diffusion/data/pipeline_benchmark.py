"""Input pipeline benchmark: loader throughput, and memory and start-up of a tiny training run.

``scripts/benchmark_input_pipeline.py`` is the command; everything it measures is here:

* ``measure_loader``: examples per second of ``BatchLoader`` over a task's train windows, in
  this process (``num_workers=0``) and with N Grain workers, as wall-clock rate and per CPU
  second of the processes that did the work (on a shared machine wall rates depend on the
  other jobs; CPU seconds much less).
* ``measure_data_startup``: a fresh process opens the task's batch sources (train and
  train-eval, as the trainer does) and reads one batch: seconds and peak RSS.
* ``measure_training``: a fresh process runs ``msd-train``'s configuration for a few steps:
  seconds from launch to the end of the first step, in all, and peak RSS.

A ``pythonpath`` runs the subprocess measurements against another checkout of the package
(e.g. the main branch, for a before/after table).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

CONTEXT_TRAIN = "synthesis_with_context_embedded_notes_ties_melgan_vb1_train"
TRAIN_GIN_FILES = ("gin/models/diffusion_context/tiny.gin", "gin/tasks/context_embedded.gin",
                   "gin/train.gin")
_RESULT_PREFIX = "PIPELINE_BENCHMARK_RESULT "
_REPO_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def measure_loader(data_dir: str, *, num_workers: int, batch_size: int = 128, steps: int = 10,
                   repeats: int = 5, task: str = CONTEXT_TRAIN, seed: int = 0) -> dict:
    """Steady-state examples/s of BatchLoader: ``repeats`` timings of ``steps`` batches after
    two warm-up batches; best and median (the best is the least disturbed by other jobs)."""
    import psutil

    from music_spectrogram_diffusion.data import tasks
    from music_spectrogram_diffusion.data.loader import BatchLoader

    source = tasks.get_batch_source(task, data_dir=data_dir)
    me = psutil.Process()

    def worker_cpu() -> float:
        total = 0.0
        for child in me.children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    rates, cpu_rates = [], []
    with BatchLoader(source, batch_size=batch_size, seed=seed, num_workers=num_workers,
                     prefetch=2) as batches:
        for _ in range(2):
            next(batches)
        for _ in range(repeats):
            wall, own, workers = time.perf_counter(), time.process_time(), worker_cpu()
            for _ in range(steps):
                next(batches)
            wall = time.perf_counter() - wall
            own, workers = time.process_time() - own, worker_cpu() - workers
            rates.append(steps * batch_size / wall)
            cpu_rates.append(steps * batch_size / (workers if num_workers else own))
    return {"num_workers": num_workers, "batch_size": batch_size, "steps": steps,
            "repeats": repeats, "examples_per_second": max(rates),
            "examples_per_second_median": statistics.median(rates),
            "examples_per_worker_cpu_second": max(cpu_rates),
            "examples_per_worker_cpu_second_median": statistics.median(cpu_rates)}


def _run_child(code: str, args: dict, pythonpath: str | None) -> dict:
    """Runs ``code`` (reads ARGS, prints one result line with ``_result``) in a fresh process;
    adds its wall seconds from launch. Peak RSS is the child's own VmHWM: the rusage of a
    forked child also counts the parent's pages at the fork."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
    # `python -c` puts its working directory first on sys.path: run in the measured checkout.
    cwd = pythonpath or _REPO_DIR
    env["PYTHONPATH"] = cwd
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        launched = time.time()
        process = subprocess.Popen(
            [sys.executable, "-c", f"{_CHILD_PRELUDE}\n{code}", json.dumps(args)],
            env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        process.wait()
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"benchmark child failed (exit {process.returncode}):\n"
                           f"{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    result = json.loads(lines[-1][len(_RESULT_PREFIX):])
    result["process_seconds"] = time.time() - launched
    if "first_step_time" in result:
        result["first_step_seconds"] = result.pop("first_step_time") - launched
    return result


_CHILD_PRELUDE = """
import json, re, sys, time
ARGS = json.loads(sys.argv[1])
def _result(values):
    with open("/proc/self/status") as f:
        hwm = int(re.search(r"VmHWM:\\s+(\\d+) kB", f.read()).group(1))
    print("%s" + json.dumps(dict(values, peak_rss_mb=hwm / 1024)), flush=True)
""" % _RESULT_PREFIX

_DATA_STARTUP = """
start = time.perf_counter()
from music_spectrogram_diffusion.data import tasks
imported = time.perf_counter()
train = tasks.get_batch_source(ARGS["task"], data_dir=ARGS["data_dir"], split="train")
train_eval = tasks.get_batch_source(ARGS["task"], data_dir=ARGS["data_dir"], split="eval")
opened = time.perf_counter()
train.get_batch(0, ARGS["batch_size"], seed=0)
train_eval.get_batch(0, ARGS["batch_size"], seed=0)
done = time.perf_counter()
_result({"import_seconds": imported - start, "open_seconds": opened - imported,
         "first_batch_seconds": done - opened})
"""


def measure_data_startup(data_dir: str, *, task: str = CONTEXT_TRAIN, batch_size: int = 4,
                         pythonpath: str | None = None) -> dict:
    """A fresh process: import, open train and train-eval sources, read a batch of each."""
    return _run_child(_DATA_STARTUP, {"data_dir": os.path.abspath(data_dir), "task": task,
                                      "batch_size": batch_size}, pythonpath)


_TRAINING = """
import gin
from music_spectrogram_diffusion.cli import gin_flags, train
flags, bindings = gin_flags.parse_flags(train._parser(), ARGS["argv"])
config_text = gin_flags.parse_gin_flags(flags, bindings)
from music_spectrogram_diffusion.training import trainer
first = []
def should_stop(step):
    if not first:
        first.append(time.time())
    return False
result = gin.get_configurable(trainer.train)(config_text=config_text, should_stop=should_stop)
_result({"first_step_time": first[0], "steps": result.step, "loss": result.metrics.get("loss"),
         "data_wait_fraction": result.metrics.get("data_wait_fraction"),
         "steps_per_second": result.metrics.get("steps_per_second")})
"""


def measure_training(data_dir: str, *, steps: int = 5, batch_size: int = 4,
                     gin_files: Sequence[str] = TRAIN_GIN_FILES, bindings: Sequence[str] = (),
                     pythonpath: str | None = None) -> dict:
    """A fresh process trains ``steps`` steps (msd-train's gin set-up) into a temporary
    MODEL_DIR: seconds from launch to the end of step 1, in all, and peak RSS."""
    repo_dir = pythonpath or _REPO_DIR
    with tempfile.TemporaryDirectory(prefix="msd_bench_") as model_dir:
        argv = [f"--gin_file={os.path.join(repo_dir, f)}" for f in gin_files] + [
            f"--gin.DATA_DIR='{os.path.abspath(data_dir)}'", f"--gin.MODEL_DIR='{model_dir}'",
            f"--gin.TRAIN_STEPS={steps}", f"--gin.BATCH_SIZE={batch_size}"] + [
            f"--gin.{binding}" for binding in bindings]
        return _run_child(_TRAINING, {"argv": argv}, pythonpath)


# Model size -> (steps, batch size) of the data-wait runs; the reading is the trainer's
# data_wait_fraction over the last of three log periods (no compilation in it).
DATA_WAIT_RUNS = {"tiny": (90, 8), "small": (15, 4)}


def measure_data_wait(data_dir: str, *, size: str, steps: int, batch_size: int,
                      pythonpath: str | None = None) -> dict:
    """A CPU training run of the context diffusion model of ``size`` (msd-train's set-up,
    default loader settings, no train-eval): the fraction of wall time the loop spent waiting
    for data in its last log period (the trainer's ``data_wait_fraction``: steps/3 steps after
    two periods, so the first step's compilation is not in it) and the steps per second."""
    gin_files = (f"gin/models/diffusion_context/{size}.gin",) + TRAIN_GIN_FILES[1:]
    run = measure_training(data_dir, steps=steps, batch_size=batch_size, gin_files=gin_files,
                           pythonpath=pythonpath,
                           bindings=("trainer.train.eval_data=None",
                                     f"trainer.train.log_period={max(1, steps // 3)}"))
    return dict(run, size=size, batch_size=batch_size)


def run_benchmark(small_dir: str, large_dir: str, *, workers: Sequence[int] = (1, 2),
                  batch_size: int = 128, steps: int = 10, train_steps: int = 5,
                  baseline_pythonpath: str | None = None, log=print,
                  data_wait_runs: dict[str, tuple[int, int]] | None = None) -> dict:
    """Everything ``format_table`` shows: throughput on ``large_dir``; start-up and memory on
    both; data-wait fractions of tiny and small training runs on ``large_dir``; the same
    subprocess measurements for ``baseline_pythonpath`` if given."""
    result: dict = {"small_dir": os.path.abspath(small_dir),
                    "large_dir": os.path.abspath(large_dir), "loader": [], "runs": {},
                    "data_wait": []}
    for size, (wait_steps, wait_batch) in (DATA_WAIT_RUNS if data_wait_runs is None
                                           else data_wait_runs).items():
        log(f"data wait: {size} model, {wait_steps} steps at batch {wait_batch} ...")
        result["data_wait"].append(measure_data_wait(large_dir, size=size, steps=wait_steps,
                                                     batch_size=wait_batch))
    for num_workers in (0, *workers):
        log(f"loader, {num_workers} workers ...")
        result["loader"].append(measure_loader(large_dir, num_workers=num_workers,
                                               batch_size=batch_size, steps=steps))
    checkouts = {"this": None}
    if baseline_pythonpath:
        checkouts["baseline"] = baseline_pythonpath
    for checkout, pythonpath in checkouts.items():
        for size, data_dir in (("small", small_dir), ("large", large_dir)):
            log(f"{checkout}: data start-up and {train_steps}-step training on {data_dir} ...")
            measure_data_startup(data_dir, pythonpath=pythonpath)  # builds a missing cache/store
            result["runs"][f"{checkout}/{size}"] = {
                "data": measure_data_startup(data_dir, pythonpath=pythonpath),
                "training": measure_training(data_dir, steps=train_steps,
                                             pythonpath=pythonpath)}
    return result


def format_table(result: dict) -> str:
    lines = ["| loader workers | examples/s (wall) | examples per worker CPU-second |",
             "|---|---|---|"]
    for row in result["loader"]:
        lines.append(f"| {row['num_workers'] or 'in process'} | "
                     f"{row['examples_per_second']:.0f} | "
                     f"{row['examples_per_worker_cpu_second']:.0f} |")
    lines += ["", "| code / dataset | data open + first batches (s) | data-only peak RSS (MB) | "
                  "training: launch to step 1 (s) | training peak RSS (MB) |",
              "|---|---|---|---|---|"]
    for name, run in result["runs"].items():
        data, training = run["data"], run["training"]
        lines.append(f"| {name} | {data['open_seconds'] + data['first_batch_seconds']:.2f} | "
                     f"{data['peak_rss_mb']:.0f} | {training['first_step_seconds']:.1f} | "
                     f"{training['peak_rss_mb']:.0f} |")
    if result.get("data_wait"):
        lines += ["", "| training run (large dataset) | steps | batch | steps/s | "
                      "data wait (% of wall) |", "|---|---|---|---|---|"]
        for row in result["data_wait"]:
            lines.append(f"| {row['size']} context diffusion | {row['steps']} | "
                         f"{row['batch_size']} | {row['steps_per_second']:.2f} | "
                         f"{100 * row['data_wait_fraction']:.1f} |")
    for checkout in ("this", "baseline"):
        small, large = result["runs"].get(f"{checkout}/small"), result["runs"].get(
            f"{checkout}/large")
        if small and large:
            lines.append(f"{checkout}: training peak RSS large - small = "
                         f"{large['training']['peak_rss_mb'] - small['training']['peak_rss_mb']:+.0f}"
                         f" MB; data-only = "
                         f"{large['data']['peak_rss_mb'] - small['data']['peak_rss_mb']:+.0f} MB")
    return "\n".join(lines)
