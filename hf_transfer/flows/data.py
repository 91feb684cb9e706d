"""Flow-ready views of the real data sets: dequantised digits and the diabetes table."""

import math

import torch
from torch.utils.data import Dataset

DIGITS_LEVELS = 17  # sklearn's digits have integer intensities 0..16.
DIGITS_DIM = 64


class DequantizedDigits(Dataset):
    """Digits as continuous vectors x = (pixels + u) * scale - bound, with u uniform on [0, 1)^64.

    Adding uniform noise to the integer intensities gives a continuous density whose negative
    log-likelihood, in pixel units, bounds the discrete one from above (Theis, van den Oord and
    Bethge, "A note on the evaluation of generative models", arXiv:1511.01844). The affine map to
    [-bound, bound) has the constant log-Jacobian `log_jacobian` = 64 log(scale) per image, which
    `nll_in_pixel_units` adds back.

    Args:
        dataset: a digits split from `make_digits_task` (columns `pixels` and `condition`).
        noise_seed (`int`, *optional*): draw the noise once with this seed (a fixed evaluation set);
            None draws fresh noise at every access from the global torch generator (training).
        bound (`float`, defaults to 2.0): half-width of the interval the data is mapped to.
    """

    def __init__(self, dataset, noise_seed: int | None = None, bound: float = 2.0):
        if bound <= 0:
            raise ValueError(f"`bound` must be positive, got {bound}.")
        columns = dataset.with_format("torch")[:]
        self.pixels = columns["pixels"].reshape(len(dataset), DIGITS_DIM).float()
        self.condition = columns["condition"].long()
        self.scale = 2.0 * bound / DIGITS_LEVELS
        self.bound = bound
        self.noise = None
        if noise_seed is not None:
            self.noise = torch.rand(self.pixels.shape, generator=torch.Generator().manual_seed(noise_seed))

    @property
    def log_jacobian(self) -> float:
        """log |det dx/d(pixels + u)| per image, in nats."""
        return DIGITS_DIM * math.log(self.scale)

    def __len__(self) -> int:
        return len(self.condition)

    def __getitem__(self, index: int) -> dict:
        noise = self.noise[index] if self.noise is not None else torch.rand(DIGITS_DIM)
        return {"x": (self.pixels[index] + noise) * self.scale - self.bound, "condition": self.condition[index]}


def nll_in_pixel_units(nll: float, log_jacobian: float) -> float:
    """Turn a negative log-likelihood of the transformed data into one of the original units (nats)."""
    return nll - log_jacobian


def bits_per_dim(nll_nats: float, data_dim: int) -> float:
    """Convert a negative log-likelihood in nats per example into bits per dimension."""
    return nll_nats / (data_dim * math.log(2.0))
