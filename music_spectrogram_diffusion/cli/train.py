"""msd-train: train a model with gin configs, t5x style.

    msd-train --gin_file=gin/models/diffusion_context/tiny.gin \\
              --gin_file=gin/tasks/context_embedded.gin --gin_file=gin/train.gin \\
              --gin.MODEL_DIR="'/tmp/msd_run'" --gin.TRAIN_STEPS=1000

Flags follow t5x (``cli/gin_flags.py``): repeated ``--gin_file``, ``--gin_search_paths``
(comma-separated; the current directory and the shipped gin folder's parent are always searched,
so ``include 'gin/...'`` works from anywhere), and ``--gin.NAME=VALUE`` bindings applied after
the files. The script parses flags
and gin, then calls ``training.trainer.train`` as configured (train.gin binds it). Re-running
the same command resumes from the newest checkpoint in MODEL_DIR. Exits 2 with one message on
bad input (a gin file, binding or missing model/task gin, a dataset, a batch that does not fit
into device memory), 1 when training itself fails (a non-finite loss).

Multi-process runs (one process per host, t5x's flags): every process runs the same command with

    --coordinator_address=HOST0:PORT --process_count=N --process_index=I

(or $JAX_COORDINATOR_ADDRESS / $JAX_NUM_PROCESSES / $JAX_PROCESS_ID; ``--multiprocess`` lets
jax.distributed read a cluster launcher's environment instead: TPU pods, SLURM, Open MPI). CPU
processes use gloo collectives, so this also runs on one machine over 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import sys

from music_spectrogram_diffusion import gin_config
from music_spectrogram_diffusion.cli import flags as cli_flags
from music_spectrogram_diffusion.cli import gin_flags

PROG = "msd-train"
# The macros train.gin uses and the gin file that defines each: named when one is missing.
MACRO_HINTS = {
    "MODEL": "a model gin file, e.g. --gin_file=gin/models/diffusion_context/tiny.gin",
    "TRAIN_DATA": "a task gin file, e.g. --gin_file=gin/tasks/context_embedded.gin",
    "TRAIN_EVAL_DATA": "a task gin file, e.g. --gin_file=gin/tasks/context_embedded.gin",
}

# trainer.train's arguments the messages name, as the bindings that set them.
GIN_NAMES = {"batch_size": "BATCH_SIZE (--gin.BATCH_SIZE)",
             "num_microbatches": "--gin.trainer.train.num_microbatches"}


def _parser() -> argparse.ArgumentParser:
    parser = cli_flags.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    gin_flags.add_gin_flags(parser, required_macros=("MODEL_DIR",))
    group = parser.add_argument_group("multi-process runs (t5x flags)")
    group.add_argument("--coordinator_address", "--coordinator-address", default=None,
                       metavar="HOST:PORT", help="process 0's address, the same for every process")
    group.add_argument("--process_count", "--process-count", type=int, default=None, metavar="N",
                       help="number of processes (one per host)")
    group.add_argument("--process_index", "--process-index", type=int, default=None, metavar="I",
                       help="this process's index, 0 .. N-1")
    group.add_argument("--multiprocess", "--multiprocess_gpu", action="store_true",
                       help="join the run described by the cluster launcher's environment")
    return parser


def _initialize_distributed(flags) -> None:
    from music_spectrogram_diffusion.training import partitioning

    partitioning.initialize_distributed(partitioning.DistributedConfig.from_env(
        flags.coordinator_address, flags.process_count, flags.process_index,
        auto=flags.multiprocess))


def main(argv: list[str] | None = None) -> int:
    import gin

    flags, bindings = gin_flags.parse_flags(_parser(), sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes
    try:
        _initialize_distributed(flags)
    except ValueError as e:
        return cli_flags.fail(PROG, e)
    try:
        config_text = gin_flags.parse_gin_flags(flags, bindings, macro_hints=MACRO_HINTS)
        from music_spectrogram_diffusion.training import trainer

        train_fn = gin.get_configurable(trainer.train)
    except gin_config.GinConfigError as e:
        return cli_flags.fail(PROG, e)
    return _run(train_fn, config_text)


def _out_of_memory_message(error: Exception) -> str:
    """What to change when the train step does not fit into device memory."""
    import gin

    def binding(name: str):
        try:
            return gin.query_parameter(name)
        except ValueError:
            return None

    batch_size = binding("%BATCH_SIZE")
    microbatches = binding("trainer.train.num_microbatches") or 1
    detail = cli_flags.one_line(error).split(": ", 1)[-1][:160]
    return (f"out of device memory at BATCH_SIZE={batch_size} with num_microbatches="
            f"{microbatches} ({detail}); lower --gin.BATCH_SIZE (e.g. --gin.BATCH_SIZE=4 on a CPU) "
            f"or raise --gin.trainer.train.num_microbatches")


def _run(train_fn, config_text: str) -> int:
    import jax

    from music_spectrogram_diffusion.data.embedded_dataset import DatasetError
    from music_spectrogram_diffusion.data.piece_store import StoreError
    from music_spectrogram_diffusion.training.trainer import NonFiniteLossError

    try:
        result = train_fn(config_text=config_text)
    except (DatasetError, StoreError) as e:
        return cli_flags.fail(PROG, e)
    except NonFiniteLossError as e:
        cli_flags.fail(PROG, e)
        return 1
    except jax.errors.JaxRuntimeError as e:
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        return cli_flags.fail(PROG, _out_of_memory_message(e))
    except ValueError as e:
        # The configs' own checks (validated dataclasses, batch_size vs num_microbatches, a
        # missing REQUIRED macro): bad values from the gin files or bindings.
        logging.getLogger(__name__).debug("training refused its configuration", exc_info=True)
        return cli_flags.fail(PROG, e, GIN_NAMES)
    state = {None: "done", "signal": "stopped by SIGTERM", "deadline": "stopped at its deadline",
             "should_stop": "stopped"}[result.stop_reason]
    loss = result.metrics.get("loss")
    print(f"{PROG}: {state} at step {result.step}; loss {loss}; checkpoints in "
          f"{result.model_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
