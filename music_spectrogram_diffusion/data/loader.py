"""The trainer's input pipeline: batches by step, read ahead in Grain worker processes.

A batch source (``data/tasks.py`` ``TaskBatchSource``, ``data/sources/registry.py``
``MixtureBatchSource``, or any object with ``get_batch(index, batch_size, *, seed, rows)``)
defines batch ``s`` as a pure function of (seed, s). ``BatchLoader`` reads those batches in
order, ``start_step, start_step + 1, ...``::

    with BatchLoader(source, batch_size=256, seed=0, start_step=step, rows=rows,
                     num_workers=8) as loader:
        for step, host_batch in loader:        # host_batch == source.get_batch(step, ...)
            ...
            checkpoint_metadata["data"] = loader.get_state()   # {"next_step": ..., ...}

    loader = BatchLoader.from_state(source, metadata["data"], rows=rows, num_workers=8)

* **Workers.** ``num_workers=0`` reads each batch in this process when it is asked for
  (deterministic, what the tests use). ``num_workers=N`` uses Grain's ``mp_prefetch``: N spawned
  processes each hold a pickled copy of the source (a ``TaskBatchSource`` pickles as its store
  index, not its data: workers memory-map the same shard files, so the page cache holds one copy),
  worker i computes steps ``start + i, start + i + N, ...`` and keeps up to ``prefetch`` of them
  ready; Grain interleaves them back into step order. Either way the batches are identical.
* **Hosts.** ``rows`` is this host's slice of the global batch (``host_rows``): each host reads
  only its rows of batch s, and all hosts step through the same s.
* **Resuming.** ``get_state()`` is the next step to deliver plus the seed and batch size;
  because batch s depends on (seed, s) only, ``from_state`` resumes with exactly the batches an
  uninterrupted run would see, whatever the number of workers or hosts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np

_NO_END = 2**62  # an unbounded run: Grain's range needs a stop
STATE_KEYS = ("next_step", "seed", "batch_size")


class BatchSource(Protocol):
    """Model batches by index; batch ``index`` is a pure function of (seed, index)."""

    def get_batch(self, index: int, batch_size: int, *, seed: int,
                  rows: slice | None = None) -> dict[str, np.ndarray]: ...


def host_rows(batch_size: int, *, process_index: int, process_count: int) -> slice | None:
    """Rows of the global batch that host ``process_index`` of ``process_count`` reads.

    None for a single host (all rows). The split is the trainer's (t5x per-host sharding):
    host h gets rows [h B / H, (h + 1) B / H).
    """
    if process_count == 1:
        return None
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} hosts")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in 0..{process_count - 1}")
    per_host = batch_size // process_count
    return slice(process_index * per_host, (process_index + 1) * per_host)


@dataclasses.dataclass(frozen=True)
class _ReadBatch:
    """step -> (step, batch): the one function the workers run (pickled with its source)."""

    source: BatchSource
    batch_size: int
    seed: int
    rows: slice | None

    def __call__(self, step: int) -> tuple[int, dict[str, np.ndarray]]:
        step = int(step)
        return step, self.source.get_batch(step, self.batch_size, seed=self.seed,
                                           rows=self.rows)


class BatchLoader:
    """Iterates ``(step, host_batch)`` from ``start_step`` on; see the module docstring.

    Args:
      source: any ``BatchSource``.
      batch_size: the global batch size.
      seed: the data seed (batch s depends on (seed, s) only).
      start_step: the first step to deliver.
      rows: this host's rows of each global batch (``host_rows``); None for all rows.
      num_workers: Grain worker processes; 0 reads in this process.
      prefetch: batches each worker keeps ready (ignored for num_workers=0).
      end_step: stop before this step; None runs without end.
    """

    def __init__(self, source: BatchSource, *, batch_size: int, seed: int, start_step: int = 0,
                 rows: slice | None = None, num_workers: int = 0, prefetch: int = 2,
                 end_step: int | None = None):
        if batch_size < 1 or start_step < 0 or num_workers < 0 or prefetch < 1:
            raise ValueError(f"BatchLoader: batch_size={batch_size} (>= 1), start_step="
                             f"{start_step} (>= 0), num_workers={num_workers} (>= 0), "
                             f"prefetch={prefetch} (>= 1)")
        self.source = source
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rows = rows
        self.num_workers = int(num_workers)
        self.prefetch = int(prefetch)
        self.end_step = _NO_END if end_step is None else int(end_step)
        self.next_step = int(start_step)
        self._iterator: Any = None

    def _make_iterator(self):
        import grain

        steps = grain.MapDataset.range(self.next_step, max(self.next_step, self.end_step))
        dataset = steps.map(_ReadBatch(self.source, self.batch_size, self.seed, self.rows))
        # No reader threads: batch reading is Python-bound; parallelism comes from processes.
        dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0))
        if self.num_workers:
            from absl import flags

            # Grain's workers read absl flags; our commands parse their flags with argparse.
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.num_workers, per_worker_buffer_size=self.prefetch))
        return iter(dataset)

    def start_prefetch(self) -> None:
        """Starts the workers now (e.g. before compiling the model) instead of at the first
        batch; a no-op for num_workers=0."""
        if self._iterator is None:
            self._iterator = self._make_iterator()
            if self.num_workers:
                self._iterator.start_prefetch()

    def __iter__(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        return self

    def __next__(self) -> tuple[int, dict[str, np.ndarray]]:
        if self.next_step >= self.end_step:
            raise StopIteration
        self.start_prefetch()
        step, batch = next(self._iterator)
        if step != self.next_step:  # Grain's interleave keeps order; never silently skip.
            raise RuntimeError(f"BatchLoader: got step {step}, expected {self.next_step}")
        self.next_step = step + 1
        return step, batch

    def get_state(self) -> dict[str, int]:
        """JSON-serialisable position: ``{"next_step", "seed", "batch_size"}``."""
        return {"next_step": self.next_step, "seed": self.seed, "batch_size": self.batch_size}

    @classmethod
    def from_state(cls, source: BatchSource, state: dict[str, Any], *,
                   rows: slice | None = None, num_workers: int = 0, prefetch: int = 2,
                   end_step: int | None = None) -> BatchLoader:
        """The loader that continues where the one that gave ``state`` stopped."""
        if not isinstance(state, dict) or sorted(state) != sorted(STATE_KEYS) or not all(
                isinstance(state[k], int) and not isinstance(state[k], bool) for k in STATE_KEYS):
            raise ValueError(f"BatchLoader state must be {{{', '.join(STATE_KEYS)}}} integers "
                             f"(from get_state()), got {state!r}")
        return cls(source, batch_size=state["batch_size"], seed=state["seed"],
                   start_step=state["next_step"], rows=rows, num_workers=num_workers,
                   prefetch=prefetch, end_step=end_step)

    def close(self) -> None:
        """Stops the worker processes (idempotent); the loader can be iterated again after."""
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
