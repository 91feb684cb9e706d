"""A cache of a frozen encoder's pooled outputs, so that a fixed data set is encoded once."""

import logging
from collections.abc import Hashable, Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _weights_version(module: nn.Module) -> int:
    """Sum of the parameters' in-place modification counters; it changes whenever a weight is written."""
    return sum(parameter._version for parameter in module.parameters())


def _weights_checksum(module: nn.Module) -> float:
    """Sum every parameter in float64, to tell a real weight change from a write of the same values."""
    with torch.no_grad():
        return float(sum(parameter.double().sum().item() for parameter in module.parameters()))


class EncoderOutputCache:
    """Pooled encoder outputs of one frozen encoder, keyed by condition (a text, or a hash of an image).

    The cache belongs to one encoder and records a checksum of its weights when it is made. PyTorch's
    per-tensor version counters, which cost nothing to read, show when a weight has been written
    since; the checksum is then computed again. If the weights changed, the cache empties itself
    and logs it, so it never serves outputs of other weights.

    Features are stored on the CPU in the dtype the encoder produced them, and are the exact tensors
    a live pass produced in its batch. A live pass over a different batch pads the texts to another
    length, so a recomputed row can differ from the cached one by float rounding (about 1e-7 for
    float32 encoders); every other step is the same.

    Args:
        encoder (`nn.Module`): the frozen encoder whose outputs are stored.
    """

    def __init__(self, encoder: nn.Module):
        self._features: dict[Hashable, torch.Tensor] = {}
        self._encoder_version = _weights_version(encoder)
        self._encoder_checksum = _weights_checksum(encoder)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._features)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._features

    def check_encoder(self, encoder: nn.Module) -> None:
        """Empty the cache if `encoder`'s weights differ from the ones the cache was filled with."""
        version = _weights_version(encoder)
        if version == self._encoder_version:
            return
        checksum = _weights_checksum(encoder)
        self._encoder_version = version
        if checksum != self._encoder_checksum:
            logger.info("The encoder weights changed; dropping %d cached encoder outputs.", len(self._features))
            self._features.clear()
            self._encoder_checksum = checksum

    def lookup(self, keys: Sequence[Hashable]) -> tuple[dict[int, torch.Tensor], list[int]]:
        """Split a batch into cached rows and the positions that still need the encoder.

        Returns:
            `(found, missing)`: `found` maps a batch position to its cached feature of shape
            `(hidden_size,)`; `missing` lists the other positions in batch order.
        """
        found: dict[int, torch.Tensor] = {}
        missing: list[int] = []
        for position, key in enumerate(keys):
            feature = self._features.get(key)
            if feature is None:
                missing.append(position)
            else:
                found[position] = feature
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def store(self, keys: Sequence[Hashable], features: torch.Tensor) -> None:
        """Store `features` (shape `(len(keys), hidden_size)`) under `keys`."""
        if features.shape[0] != len(keys):
            raise ValueError(f"Got {features.shape[0]} feature rows for {len(keys)} keys; pass one row per key.")
        features = features.detach().to("cpu")
        for key, feature in zip(keys, features):
            self._features[key] = feature.clone()
