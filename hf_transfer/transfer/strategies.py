"""Turn a source model into a target model under a `TransferConfig` strategy."""

import copy
import logging

import torch
from torch import nn

from .config import TransferConfig

logger = logging.getLogger(__name__)


def _fresh_copy(module: nn.Module, seed: int | None) -> nn.Module:
    """Build a new module of the same class and config with freshly drawn weights."""
    parameter = next(module.parameters(), None)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        fresh = type(module).from_config(module.config)
    if parameter is not None:
        fresh = fresh.to(parameter.device)
        # diffusers warns on every dtype cast, so cast only when the dtype really differs.
        if next(fresh.parameters()).dtype != parameter.dtype:
            fresh = fresh.to(dtype=parameter.dtype)
    return fresh


def freeze(module: nn.Module) -> None:
    """Stop gradients for every parameter of `module` and put it in eval mode."""
    module.requires_grad_(False)
    module.eval()


def count_trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """Return `(trainable, total)` parameter counts of `model`."""
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)
    total = sum(parameter.numel() for parameter in model.parameters())
    return trainable, total


def print_trainable_parameters(model: nn.Module) -> None:
    """Print the trainable and total parameter counts in the format peft uses."""
    trainable, total = count_trainable_parameters(model)
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")


def get_transfer_model(source_model: nn.Module, config: TransferConfig, generator: nn.Module | None = None) -> nn.Module:
    """Return a target model built from `source_model` under `config.strategy`; the source is not modified.

    `source_model` is a `ConditionalDiffusionModel` or a `ConditionalFlowModel`: any module with a
    `shared_embedding` and a `generator` attribute, whose parts are diffusers-style config models.

    Args:
        source_model (`nn.Module`): the trained source model.
        config (`TransferConfig`): the strategy and its options.
        generator (`nn.Module`, *optional*): a target generator to use instead of the source's one,
            for a target of another size. It must take an embedding of the same width, and it is
            trained from its current weights.

    Returns:
        A deep copy of `source_model` with frozen parts set, carrying `config` as `transfer_config`.
    """
    if not isinstance(config, TransferConfig):
        raise TypeError(f"`config` must be a TransferConfig, got {type(config).__name__}.")
    for name in ("shared_embedding", "generator"):
        if not isinstance(getattr(source_model, name, None), nn.Module):
            raise TypeError(
                f"{type(source_model).__name__} has no `{name}` module; pass a ConditionalDiffusionModel "
                "or a ConditionalFlowModel."
            )

    model = copy.deepcopy(source_model)
    if generator is not None:
        source_width = model.shared_embedding.embedding_dim
        target_width = getattr(generator.config, "embedding_dim", None) or getattr(generator.config, "context_dim", None)
        if target_width != source_width:
            raise ValueError(
                f"The source shared embedding has width {source_width} but the target generator expects "
                f"{target_width}; build the target generator with embedding width {source_width}."
            )
        model.generator = copy.deepcopy(generator)

    # 1. Initialise: from_scratch redraws everything, a fresh head redraws g.
    if config.strategy == "from_scratch":
        model.shared_embedding = _fresh_copy(model.shared_embedding, config.seed)
    if config.fresh_generator and generator is None:
        seed = None if config.seed is None else config.seed + 1
        model.generator = _fresh_copy(model.generator, seed)

    # 2. Freeze.
    model.requires_grad_(True)
    if config.freezes_embedding:
        freeze(model.shared_embedding)
    # A shared embedding can hold parts that no strategy trains, such as a pretrained encoder
    # built with `train_encoder=False`; it lists them in `always_frozen_modules`.
    for module in getattr(model.shared_embedding, "always_frozen_modules", ()):
        freeze(module)
    if config.strategy == "lora":
        from .lora import add_lora_adapters

        model.generator = add_lora_adapters(model.generator, config)

    model.transfer_config = config
    trainable, total = count_trainable_parameters(model)
    logger.info("Strategy %s: %d of %d parameters trainable (%.2f%%).", config.label, trainable, total, 100 * trainable / total)
    return model
