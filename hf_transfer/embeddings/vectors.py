"""Shared embedding for real-valued condition vectors."""

import torch
from diffusers.configuration_utils import register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn

from ..utils import check_finite
from .base import SharedEmbedding

_ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
_OUTPUT_ACTIVATIONS = {"none": nn.Identity, "tanh": nn.Tanh}


class MLPEmbedding(SharedEmbedding):
    """Shared embedding of condition vectors z in R^input_dim by a multilayer perceptron.

    Args:
        input_dim (`int`): width of the condition vectors.
        embedding_dim (`int`, defaults to 8): width of h(z).
        hidden_dims (`tuple[int, ...]`, defaults to `(64, 64)`): widths of the hidden layers.
        activation (`str`, defaults to `"silu"`): one of `silu`, `relu`, `tanh`, `gelu`.
        output_activation (`str`, defaults to `"none"`): `"tanh"` bounds h(z) to [-1, 1], which keeps a
            downstream head from extrapolating on conditions far from the training data.

    Example:
        >>> import torch
        >>> from hf_transfer import MLPEmbedding
        >>> embedding = MLPEmbedding(input_dim=5, embedding_dim=2)
        >>> embedding(torch.randn(4, 5)).shape
        torch.Size([4, 2])
    """

    @register_to_config
    def __init__(
        self,
        input_dim: int,
        embedding_dim: int = 8,
        hidden_dims: tuple[int, ...] = (64, 64),
        activation: str = "silu",
        output_activation: str = "none",
    ):
        super().__init__()
        if input_dim < 1 or embedding_dim < 1:
            raise ValueError(
                f"`input_dim` and `embedding_dim` must be at least 1, got {input_dim} and {embedding_dim}."
            )
        if activation not in _ACTIVATIONS:
            raise ValueError(f"Unknown `activation` {activation!r}; choose one of {sorted(_ACTIVATIONS)}.")
        if output_activation not in _OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"Unknown `output_activation` {output_activation!r}; choose one of {sorted(_OUTPUT_ACTIVATIONS)}."
            )
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), _ACTIVATIONS[activation]()]
            width = hidden
        layers += [nn.Linear(width, embedding_dim), _OUTPUT_ACTIVATIONS[output_activation]()]
        self.mlp = nn.Sequential(*layers)

    def validate_condition(self, condition) -> torch.Tensor:
        if not torch.is_tensor(condition):
            condition = torch.as_tensor(condition, dtype=torch.float32)
        if not condition.is_floating_point():
            raise TypeError(
                f"Condition vectors must be a floating-point tensor, got dtype {condition.dtype}; "
                "convert them with `condition.float()`."
            )
        input_dim = self.config.input_dim
        if condition.ndim != 2 or condition.shape[1] != input_dim:
            raise ValueError(
                f"Condition vectors must have shape (batch_size, {input_dim}), got shape {tuple(condition.shape)}."
            )
        check_finite("condition", condition)
        weight = self.mlp[0].weight
        return condition.to(device=weight.device, dtype=weight.dtype)

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        return self.mlp(condition)
