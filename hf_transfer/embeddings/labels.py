"""Shared embedding for class-label conditions."""

import torch
from diffusers.configuration_utils import register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn

from .base import SharedEmbedding


class ClassLabelEmbedding(SharedEmbedding):
    """Shared embedding of integer class labels: a learned table followed by an optional MLP.

    Args:
        num_classes (`int`): number of classes; labels run from 0 to `num_classes - 1`.
        embedding_dim (`int`, defaults to 32): width of h(z).
        hidden_dim (`int`, *optional*): if set, the table has this width and a two-layer MLP
            (SiLU) maps it to `embedding_dim`; otherwise the table has width `embedding_dim`.

    Example:
        >>> import torch
        >>> from hf_transfer import ClassLabelEmbedding
        >>> embedding = ClassLabelEmbedding(num_classes=10, embedding_dim=16)
        >>> embedding(torch.tensor([0, 3, 9])).shape
        torch.Size([3, 16])
    """

    @register_to_config
    def __init__(self, num_classes: int, embedding_dim: int = 32, hidden_dim: int | None = None):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be at least 1, got {num_classes}.")
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be at least 1, got {embedding_dim}.")
        table_dim = hidden_dim or embedding_dim
        self.table = nn.Embedding(num_classes, table_dim)
        if hidden_dim:
            self.mlp = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.SiLU(), nn.Linear(hidden_dim, embedding_dim))
        else:
            self.mlp = None

    def validate_condition(self, condition) -> torch.Tensor:
        if not torch.is_tensor(condition):
            condition = torch.as_tensor(condition)
        if condition.is_floating_point() or condition.is_complex() or condition.dtype == torch.bool:
            raise TypeError(
                f"Class labels must be an integer tensor, got dtype {condition.dtype}; "
                "convert them with `labels.long()`."
            )
        if condition.ndim != 1:
            raise ValueError(
                f"Class labels must have shape (batch_size,), got shape {tuple(condition.shape)}."
            )
        num_classes = self.config.num_classes
        if condition.numel() and (condition.min() < 0 or condition.max() >= num_classes):
            bad = condition[(condition < 0) | (condition >= num_classes)][0].item()
            raise ValueError(
                f"Class label {bad} is out of range for an embedding of {num_classes} classes; "
                f"labels must lie in [0, {num_classes - 1}]."
            )
        return condition.to(device=self.table.weight.device, dtype=torch.long)

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        hidden = self.table(condition)
        return self.mlp(hidden) if self.mlp is not None else hidden
