"""A deterministic, resumable stream of training batches over ShardedExamples.

Epoch e visits the examples in the order of a permutation drawn from (seed, e) alone, so the whole
stream is a pure function of (seed, batch_size, dataset size) and two integers are enough to
resume it exactly: the epoch and how many examples of that epoch's permutation were consumed.
Every process computes the same global batch and keeps its own contiguous slice, so multi-host
training needs no communication to agree on the data.
"""

from __future__ import annotations

import numpy as np

from bertlab.data.pretraining.shards import ShardedExamples


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """(N,) the visiting order of epoch `epoch`; independent of every other epoch.

    Shuffled in place as int32 (when N allows): half the memory of permutation()'s int64, which
    matters at hundreds of millions of examples."""
    order = np.arange(num_examples, dtype=np.int32 if num_examples < 2**31 else np.int64)
    np.random.default_rng([seed, epoch]).shuffle(order)
    return order


class BatchIterator:
    """Yields the take() dict of batch_size // process_count examples per call, forever.

    batch_size is the global batch. Each epoch drops its incomplete tail batch, then the next
    epoch starts with a new permutation. `position` counts examples (a multiple of batch_size),
    not batches, so a run may resume with another batch size from the same point in the data."""

    def __init__(self, examples: ShardedExamples, batch_size: int, seed: int, *, epoch: int = 0,
                 position: int = 0, process_index: int = 0, process_count: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} must be in [0, {process_count})")
        if batch_size % process_count:
            raise ValueError(f"global batch_size {batch_size} is not divisible by "
                             f"process_count {process_count}")
        if len(examples) < batch_size:
            raise ValueError(f"{getattr(examples, 'split_dir', 'dataset')} holds {len(examples)} "
                             f"examples, fewer than one batch of {batch_size}")
        if epoch < 0 or position < 0:
            raise ValueError(f"epoch {epoch} and position {position} must be >= 0")
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.process_index = process_index
        self.process_count = process_count
        self.per_process = batch_size // process_count
        self.epoch = epoch
        self.position = position
        self._permutation: np.ndarray | None = None
        self._permutation_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        return len(self.examples) // self.batch_size

    def __iter__(self) -> "BatchIterator":
        return self

    def _order(self) -> np.ndarray:
        if self._permutation_epoch != self.epoch:
            self._permutation = epoch_permutation(len(self.examples), self.seed, self.epoch)
            self._permutation_epoch = self.epoch
        return self._permutation

    def next_global_indices(self) -> np.ndarray:
        """Every process's example indices of the next batch, process slices in process order
        (advances the iterator). Packed pretraining packs the global batch on every host, so
        the rows are the same whatever the process count."""
        if self.position + self.batch_size > len(self.examples):  # incomplete tail: next epoch
            self.epoch += 1
            self.position = 0
        indices = self._order()[self.position:self.position + self.batch_size]  # (B,)
        self.position += self.batch_size
        return indices

    def next_indices(self) -> np.ndarray:
        """This process's example indices of the next batch (advances the iterator)."""
        start = self.process_index * self.per_process
        return self.next_global_indices()[start:start + self.per_process]  # (B / process_count,)

    def __next__(self) -> dict[str, np.ndarray]:
        return self.examples.take(self.next_indices())

    def state(self) -> dict:
        """What a checkpoint stores to resume this stream: JSON-serialisable."""
        return {"epoch": int(self.epoch), "position": int(self.position)}

    @classmethod
    def from_state(cls, examples: ShardedExamples, batch_size: int, seed: int, state: dict,
                   **kw) -> "BatchIterator":
        missing = {"epoch", "position"} - set(state)
        if missing:
            raise ValueError(f"iterator state {state!r} lacks {sorted(missing)}")
        return cls(examples, batch_size, seed, epoch=int(state["epoch"]),
                   position=int(state["position"]), **kw)
