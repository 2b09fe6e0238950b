"""Runs the real trainer on the fake model in a separate process (for kill / signal tests).

Usage: python train_worker.py MODEL_DIR TRAIN_STEPS PERIOD [SECONDS_PER_BATCH] [NUM_PARTITIONS]
"""

import logging
import sys
import time

from music_spectrogram_diffusion.testing import fake_models
from music_spectrogram_diffusion.training import checkpoints, partitioning, trainer


class SlowSource(fake_models.FakeBatchSource):
    """The fake source, slowed down so a test can interrupt training mid-run."""

    def __init__(self, seconds: float):
        super().__init__()
        object.__setattr__(self, "seconds", seconds)

    def get_batch(self, index, batch_size, *, seed, rows=None):
        time.sleep(self.seconds)
        return super().get_batch(index, batch_size, seed=seed, rows=rows)


def run(model_dir: str, steps: int, period: int, seconds: float = 0.0, partitions: int = 1):
    return trainer.train(
        model=fake_models.FakeSpectrogramModel(),
        train_data=SlowSource(seconds),
        model_dir=model_dir,
        train_steps=steps,
        batch_size=8,
        seed=3,
        partition=partitioning.PartitionConfig(num_partitions=partitions),
        checkpoint=checkpoints.CheckpointConfig(period=period, keep=None),
        log_period=1,
        frozen_param_mask_fn=fake_models.frozen_param_mask,
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    args = sys.argv[1:]
    result = run(args[0], int(args[1]), int(args[2]), float(args[3]) if len(args) > 3 else 0.0,
                 int(args[4]) if len(args) > 4 else 1)
    print(f"DONE step={result.step} signal={result.stopped_by_signal}", flush=True)
