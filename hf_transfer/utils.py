"""Small helpers shared by the whole package: the warning class, input checks and versioned configs."""

import dataclasses
import logging
import warnings

import torch

logger = logging.getLogger("hf_transfer")


class HfTransferWarning(UserWarning):
    """Warning class for hf_transfer, so users can filter the library's warnings alone."""


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise `ValueError` if `tensor` contains NaN or infinite values."""
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        bad = (~torch.isfinite(tensor)).sum().item()
        raise ValueError(
            f"`{name}` contains {bad} NaN or infinite values; clean or clip the data before passing it."
        )


def dataclass_from_dict(cls, values: dict, version: int, name: str, stacklevel: int = 3):
    """Build the config dataclass `cls` from a saved dict that carries a `format_version` key.

    Keys that `cls` does not know, as written by a newer version of the library, are dropped with an
    `HfTransferWarning` that recommends upgrading.

    Args:
        cls: the dataclass to build.
        values (`dict`): the saved fields, with an optional `format_version`.
        version (`int`): the newest format version this library reads.
        name (`str`): the config's name in the warning, such as `"transfer config"`.
        stacklevel (`int`, defaults to 3): the warning's stack level, pointing at the caller's caller.
    """
    values = dict(values)
    saved_version = values.pop("format_version", version)
    known = {item.name for item in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown or saved_version > version:
        warnings.warn(
            f"Ignoring unknown {name} keys {unknown} (format version {saved_version}, this library reads up to "
            f"{version}); upgrade hf_transfer to use them.",
            HfTransferWarning,
            stacklevel=stacklevel,
        )
    return cls(**{key: value for key, value in values.items() if key in known})
