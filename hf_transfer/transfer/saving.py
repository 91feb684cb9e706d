"""Save a transferred model as only the weights target learning changed, and load it back onto its base.

A target-only save is a folder with two files:

- `target_weights.safetensors`: the parameters the strategy leaves trainable (the LoRA adapters
  for `lora`, the generator for `frozen_embedding`, everything for `full_finetune` and
  `from_scratch`). Its header metadata records a SHA-256 fingerprint of the frozen parameters and
  the generator's config, so that loading onto another base fails instead of silently mixing weights.
- `transfer_config.json`: the `TransferConfig`, naming the base checkpoint by hub id or path,
  revision (the commit hash for hub ids) and subfolder.

Loading rebuilds the target on the base with `get_transfer_model` and copies the saved tensors in,
so the frozen weights come from the base and the outputs match the saved model bit for bit.
"""

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .config import TRANSFER_CONFIG_NAME, TransferConfig
from .strategies import get_transfer_model

logger = logging.getLogger(__name__)

TARGET_WEIGHTS_NAME = "target_weights.safetensors"
TARGET_WEIGHTS_FORMAT_VERSION = 1


def target_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the trainable parameters of `model` by name: the weights target learning changes."""
    return {name: parameter.detach() for name, parameter in model.named_parameters() if parameter.requires_grad}


def frozen_fingerprint(model: nn.Module) -> str:
    """Return the SHA-256 hex digest of the names, shapes, dtypes and bytes of the frozen parameters of `model`."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            continue
        tensor = parameter.detach().cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        # Viewing the storage as bytes covers every dtype, bfloat16 included, without a numpy round trip.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _generator_config(model: nn.Module) -> dict:
    config = getattr(model.generator, "config", {})
    return {key: value for key, value in dict(config).items() if not key.startswith("_")}


def _fill_base(config: TransferConfig, model: nn.Module) -> TransferConfig:
    """Fill the base checkpoint fields of `config` from the model's `source_checkpoint` where unset."""
    checkpoint = getattr(model, "source_checkpoint", None)
    if config.base_model_name_or_path is None and checkpoint is not None:
        config = dataclasses.replace(
            config,
            base_model_name_or_path=checkpoint.name_or_path,
            base_model_revision=checkpoint.revision,
            base_model_subfolder=checkpoint.subfolder,
        )
    if config.base_model_name_or_path is None:
        raise ValueError(
            "The transfer config names no base checkpoint, so a target-only save could not be loaded back. "
            "Save the source model first and set TransferConfig(base_model_name_or_path=..., "
            "base_model_revision=...), or load the source with hf_transfer.hub.load_source_model, which records it."
        )
    return config


def save_target_weights(model: nn.Module, save_directory: str | os.PathLike, config: TransferConfig | None = None) -> Path:
    """Write the target-specific weights of a transferred model and its `transfer_config.json`.

    Args:
        model (`nn.Module`): a model returned by `get_transfer_model` (and trained), with
            `shared_embedding` and `generator`.
        save_directory (`str` or `os.PathLike`): the folder to write; created if missing.
        config (`TransferConfig`, *optional*): the strategy; `model.transfer_config` by default. Unset base
            fields are filled from `model.source_checkpoint` (set by `load_source_model`).

    Returns:
        The path of `target_weights.safetensors`.
    """
    config = config or getattr(model, "transfer_config", None)
    if not isinstance(config, TransferConfig):
        raise TypeError(
            f"{type(model).__name__} carries no TransferConfig; build it with get_transfer_model or pass `config`."
        )
    config = _fill_base(config, model)
    tensors = {name: tensor.cpu().contiguous() for name, tensor in target_state_dict(model).items()}
    if not tensors:
        raise ValueError(f"{type(model).__name__} has no trainable parameters, so there is nothing target-specific to save.")
    metadata = {
        "format": "pt",
        "hf_transfer_format_version": str(TARGET_WEIGHTS_FORMAT_VERSION),
        "strategy": config.strategy,
        "frozen_fingerprint": frozen_fingerprint(model),
        "generator_class": type(model.generator).__name__,
        "generator_config": json.dumps(_generator_config(model), sort_keys=True, default=str),
        "saved_parameters": str(sum(tensor.numel() for tensor in tensors.values())),
        "total_parameters": str(sum(parameter.numel() for parameter in model.parameters())),
    }

    directory = Path(save_directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TARGET_WEIGHTS_NAME
    temporary = directory / (TARGET_WEIGHTS_NAME + ".tmp")
    save_file(tensors, os.fspath(temporary), metadata=metadata)
    os.replace(temporary, path)
    # The config goes last: a folder without it is plainly incomplete.
    config.save_pretrained(directory)
    saved, total = int(metadata["saved_parameters"]), int(metadata["total_parameters"])
    logger.info("Saved %d of %d parameters (%.2f%%) to %s.", saved, total, 100 * saved / total, path)
    return path


def _load_base(config: TransferConfig, base_model, *, cache_dir, local_files_only, token) -> nn.Module:
    from ..hub import load_source_model

    recorded = config.base_model_name_or_path
    if isinstance(base_model, nn.Module):
        checkpoint = getattr(base_model, "source_checkpoint", None)
        if checkpoint is not None and recorded is not None:
            if checkpoint.name_or_path != recorded or (
                config.base_model_revision is not None and checkpoint.revision != config.base_model_revision
            ):
                raise ValueError(
                    f"This target was trained on base {recorded!r} at revision {config.base_model_revision!r}, "
                    f"but the base model passed was loaded from {checkpoint.name_or_path!r} at revision "
                    f"{checkpoint.revision!r}; pass base_model={recorded!r} or leave base_model unset."
                )
        return base_model
    if base_model is not None and not isinstance(base_model, (str, os.PathLike)):
        raise TypeError(f"`base_model` must be a model, a hub id, a path or None, got {type(base_model).__name__}.")
    if base_model is not None and os.fspath(base_model) != recorded:
        raise ValueError(
            f"This target was trained on base {recorded!r}, not {os.fspath(base_model)!r}; pass "
            f"base_model={recorded!r}, or load the base yourself and pass the model to skip the id check."
        )
    if recorded is None:
        raise ValueError(
            f"{TRANSFER_CONFIG_NAME} names no base checkpoint; pass the base model as `base_model`."
        )
    return load_source_model(
        recorded,
        revision=config.base_model_revision,
        subfolder=config.base_model_subfolder,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )


def load_target_weights(
    pretrained_model_name_or_path,
    base_model: nn.Module | str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> nn.Module:
    """Rebuild a transferred model from a target-only save and its base.

    Args:
        pretrained_model_name_or_path: folder or hub id of the target-only save (or a
            `ResolvedCheckpoint`).
        base_model (*optional*): the base as a loaded model, or its hub id or path. By default the
            base recorded in `transfer_config.json` is loaded at the recorded revision and subfolder.
        revision, subfolder, cache_dir, local_files_only, token: where to find the target-only save, as in
            `hf_transfer.hub.resolve_checkpoint`; `cache_dir`, `local_files_only` and `token` also apply to the base.

    Returns:
        The transferred model in eval mode, carrying its `transfer_config`.

    Raises:
        ValueError: the base does not match the recorded id or revision, the saved tensors do not fit
            its shapes, or its frozen weights differ from those the target was trained on.
    """
    from ..hub import ResolvedCheckpoint, check_safetensors_weights, resolve_checkpoint

    if isinstance(pretrained_model_name_or_path, ResolvedCheckpoint):
        checkpoint = pretrained_model_name_or_path
    else:
        checkpoint = resolve_checkpoint(
            pretrained_model_name_or_path,
            revision=revision,
            subfolder=subfolder,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
    folder = checkpoint.folder
    check_safetensors_weights(folder, weights_name=TARGET_WEIGHTS_NAME.removesuffix(".safetensors"))
    config = TransferConfig.from_pretrained(folder)

    with safe_open(os.fspath(folder / TARGET_WEIGHTS_NAME), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    version = int(metadata.get("hf_transfer_format_version", TARGET_WEIGHTS_FORMAT_VERSION))
    if version > TARGET_WEIGHTS_FORMAT_VERSION:
        raise ValueError(
            f"{TARGET_WEIGHTS_NAME} in {os.fspath(folder)!r} has format version {version}, but this library reads "
            f"up to {TARGET_WEIGHTS_FORMAT_VERSION}; upgrade hf_transfer."
        )

    base = _load_base(config, base_model, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    base_name = config.base_model_name_or_path
    recorded_generator = metadata.get("generator_config")
    if recorded_generator is not None:
        base_generator = json.dumps(_generator_config(base), sort_keys=True, default=str)
        if base_generator != recorded_generator:
            raise ValueError(
                f"The base's generator config differs from the one this target was saved with (base {base_name!r}); "
                "load the target onto the base it was trained from, or save the target as a full model."
            )

    model = get_transfer_model(base, config)
    expected = target_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"The target weights do not fit base {base_name!r}: missing {missing[:5]}, unexpected {unexpected[:5]}; "
            "load the target onto the base it was trained from."
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(
                f"Tensor {name!r} has shape {tuple(tensor.shape)} in the target weights but "
                f"{tuple(expected[name].shape)} in base {base_name!r}; load the target onto the base it was trained from."
            )
    recorded_fingerprint = metadata.get("frozen_fingerprint")
    if recorded_fingerprint is not None and frozen_fingerprint(model) != recorded_fingerprint:
        raise ValueError(
            f"The frozen weights of base {base_name!r} (revision {config.base_model_revision!r}) differ from those "
            "this target was trained on, so the target would not reproduce its outputs; load it onto the exact "
            "source checkpoint it was trained from."
        )

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name in tensors:
                # A dtype cast would break bit-identical outputs, so a mismatch is an error, not a cast.
                if tensors[name].dtype != parameter.dtype:
                    raise ValueError(
                        f"Tensor {name!r} is {tensors[name].dtype} in the target weights but {parameter.dtype} in the "
                        "base; load the base in the dtype the target was saved in."
                    )
                parameter.copy_(tensors[name])
    model.eval()
    logger.info("Loaded %d target tensors from %s onto base %s.", len(tensors), checkpoint.name_or_path, base_name)
    return model
