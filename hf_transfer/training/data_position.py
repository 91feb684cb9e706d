"""A data order that can be rebuilt at any batch, so that a resumed run gets the same batches as an uninterrupted one."""

from collections.abc import Iterator

import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import Sampler


class EpochShuffleSampler(Sampler[int]):
    """Shuffle the indices with a permutation drawn from `(seed, epoch)` alone.

    Unlike `RandomSampler` with a generator, whose order depends on how many epochs the generator has
    already drawn, any epoch's order here is rebuilt from its number, on every process and after a
    resume. accelerate shards it across processes through the batch sampler, so every process draws
    the same permutation and takes its own batches of it.

    Args:
        num_examples (`int`): the data set size.
        seed (`int`): seed of the permutations.
    """

    def __init__(self, num_examples: int, seed: int):
        if num_examples < 1:
            raise ValueError(f"`num_examples` must be at least 1, got {num_examples}.")
        self.num_examples = num_examples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # SeedSequence mixes both numbers, so seed 0 epoch 1 and seed 1 epoch 0 give different orders.
        epoch_seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(epoch_seed)
        yield from torch.randperm(self.num_examples, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_examples


def iterate_batches(loader, accelerator: Accelerator, start_epoch: int = 0, skip_batches: int = 0):
    """Yield `(epoch, batch_index, batch)` from a prepared loader without end, starting at a saved position.

    The first epoch skips `skip_batches` batches with `accelerator.skip_first_batches`, which skips
    them in the batch sampler without loading them. `batch_index` counts this process's batches in
    the epoch, skipped ones included, which is the position a checkpoint stores.
    """
    epoch = start_epoch
    while True:
        epoch_loader = loader
        if skip_batches:
            epoch_loader = accelerator.skip_first_batches(loader, skip_batches)
        # accelerate's loaders call set_epoch(self.iteration) when iterated, so set it on the loader in use.
        if hasattr(epoch_loader, "set_epoch"):
            epoch_loader.set_epoch(epoch)
        for batch_index, batch in enumerate(epoch_loader, start=skip_batches):
            yield epoch, batch_index, batch
        epoch += 1
        skip_batches = 0
