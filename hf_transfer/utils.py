"""Small helpers shared by the whole package: the warning class and input checks."""

import logging

import torch

logger = logging.getLogger("hf_transfer")


class HfTransferWarning(UserWarning):
    """Warning class for hf_transfer, so users can filter the library's warnings alone."""


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise `ValueError` if `tensor` holds NaN or infinite values."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(
            f"`{name}` contains {bad} NaN or infinite values; clean or clip the data before passing it."
        )
