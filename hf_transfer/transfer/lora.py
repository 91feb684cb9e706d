"""The `lora` strategy: low-rank adapters on a frozen source generator, injected through peft.

Reference: E. J. Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", arXiv:2106.09685.

diffusers' `UNet2DModel` has no `add_adapter` method, so the adapters go in through peft's
model-agnostic `inject_adapter_in_model`, which replaces each targeted `nn.Linear` and `nn.Conv2d`
by a peft LoRA layer that wraps the original one as its `base_layer`.
"""

import logging

import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from .config import TransferConfig
from .strategies import count_trainable_parameters

logger = logging.getLogger(__name__)

ADAPTER_NAME = "default"
# Layer types that get adapters when `lora_target_modules` is None.
LORA_LAYER_TYPES = (nn.Linear, nn.Conv2d)


def has_lora_adapters(module: nn.Module) -> bool:
    """Return whether any submodule of `module` is a peft tuner layer."""
    return any(isinstance(submodule, BaseTunerLayer) for submodule in module.modules())


def find_lora_target_names(generator: nn.Module, target_modules: list[str] | None = None) -> list[str]:
    """List the full names of the generator's layers that get adapters.

    Args:
        generator (`nn.Module`): the generator g.
        target_modules (`list[str]`, *optional*): layer names. An entry selects every `nn.Linear` or
            `nn.Conv2d` whose full name equals it or ends with `"." + entry`, as peft matches
            `target_modules`. None selects every `nn.Linear` and `nn.Conv2d`. Subclasses of these
            types are never selected.

    Returns:
        The selected full module names, in the generator's module order.
    """
    # Exact types: a subclass may change `forward`, as normflows' MaskedLinear does with its autoregressive
    # mask, and an adapter added beside it would ignore that change (breaking a flow's triangular Jacobian).
    layers = {name: module for name, module in generator.named_modules() if type(module) in LORA_LAYER_TYPES}
    if not layers:
        raise ValueError(
            f"{type(generator).__name__} has no plain nn.Linear or nn.Conv2d layer to put LoRA adapters on; "
            "use another strategy, such as frozen_embedding."
        )
    if target_modules is None:
        return list(layers)

    selected: list[str] = []
    for entry in target_modules:
        matches = [name for name in layers if name == entry or name.endswith("." + entry)]
        if not matches:
            examples = ", ".join(list(layers)[:5])
            raise ValueError(
                f"`lora_target_modules` entry {entry!r} matches no plain nn.Linear or nn.Conv2d layer of "
                f"{type(generator).__name__}; use full or trailing layer names such as {examples}."
            )
        selected += [name for name in matches if name not in selected]
    return [name for name in layers if name in selected]


def add_lora_adapters(generator: nn.Module, config: TransferConfig) -> nn.Module:
    """Inject LoRA adapters into `generator` in place and freeze everything else in it.

    Each targeted layer W becomes W + (alpha / r) * B A with A of rank r drawn at random and B
    zero, so the generator's outputs are unchanged until training moves B. Only A and B are
    trainable afterwards.

    Args:
        generator (`nn.Module`): the generator g, for example a `SharedEmbeddingUNet2DModel`.
        config (`TransferConfig`): supplies `lora_rank`, `lora_alpha`, `lora_dropout`,
            `lora_target_modules` and `seed` (which seeds the draw of A).

    Returns:
        `generator`, modified in place.
    """
    if not isinstance(config, TransferConfig):
        raise TypeError(f"`config` must be a TransferConfig, got {type(config).__name__}.")
    if has_lora_adapters(generator):
        raise ValueError(
            f"{type(generator).__name__} already has peft adapters; build the LoRA target from a generator "
            "without adapters, or merge them first with merge_lora_adapters."
        )
    target_names = find_lora_target_names(generator, config.lora_target_modules)
    lora_config = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=target_names,
        bias="none",
    )
    with torch.random.fork_rng(devices=[]):
        if config.seed is not None:
            torch.manual_seed(config.seed + 2)
        generator = inject_adapter_in_model(lora_config, generator, adapter_name=ADAPTER_NAME)

    # Train the adapters alone: select them by module type, not by parameter name.
    generator.requires_grad_(False)
    for module in generator.modules():
        if isinstance(module, LoraLayer):
            module.lora_A.requires_grad_(True)
            module.lora_B.requires_grad_(True)

    trainable, total = count_trainable_parameters(generator)
    logger.info(
        "LoRA (r=%d, alpha=%d) on %d layers: %d of %d generator parameters trainable (%.2f%%).",
        config.lora_rank,
        config.lora_alpha,
        len(target_names),
        trainable,
        total,
        100 * trainable / total,
    )
    return generator


def merge_lora_adapters(module: nn.Module) -> nn.Module:
    """Fold every LoRA adapter of `module` into its base layer and remove the peft wrappers, in place.

    Afterwards `module` has the parameter names of the model the adapters were injected into, so
    diffusers' `save_pretrained` writes a checkpoint that loads without peft. The merged weights
    W + (alpha / r) * B A equal the adapted layer up to float rounding, not bit for bit.

    Returns:
        `module`, modified in place (or the base layer itself if `module` is a tuner layer).
    """
    if isinstance(module, BaseTunerLayer):
        return _merge_tuner_layer(module)
    tuner_names = [name for name, submodule in module.named_modules() if isinstance(submodule, BaseTunerLayer)]
    for name in tuner_names:
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, _merge_tuner_layer(getattr(parent, child_name)))
    if hasattr(module, "peft_config"):
        del module.peft_config
    if tuner_names:
        logger.info("Merged %d LoRA layers into their base layers.", len(tuner_names))
    return module


def _merge_tuner_layer(layer: BaseTunerLayer) -> nn.Module:
    # safe_merge checks the merged weights for NaN before it writes them into the base layer.
    layer.merge(safe_merge=True)
    return layer.get_base_layer()
