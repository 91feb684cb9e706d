"""The base class of every shared embedding h(z)."""

import inspect

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin


class SharedEmbedding(ModelMixin, ConfigMixin):
    """Base class of a shared embedding h, which maps a batch of conditions z to vectors of width `embedding_dim`.

    Subclasses register their constructor arguments with `@register_to_config`, so that
    `save_pretrained` writes `config.json` plus `diffusion_pytorch_model.safetensors` and
    `from_pretrained` rebuilds the same module. Subclasses implement `validate_condition`,
    which raises a clear error for a condition of the wrong type, shape or range, and
    `embed`, which computes h(z) on a validated condition.
    """

    config_name = "config.json"

    def register_to_config(self, **kwargs):
        # diffusers 0.42's `@register_to_config` lists arguments passed by position under
        # `_use_default_values`, and `from_config` and `from_pretrained` then drop them, so
        # `ClassLabelEmbedding(10)` could not be rebuilt from its config. Keep only the arguments
        # that really equal their default.
        used_defaults = kwargs.get("_use_default_values")
        if used_defaults:
            parameters = inspect.signature(type(self).__init__).parameters
            kwargs["_use_default_values"] = [
                key for key in used_defaults if key in parameters and kwargs.get(key) == parameters[key].default
            ]
        super().register_to_config(**kwargs)

    @property
    def embedding_dim(self) -> int:
        """Width of the vectors h(z)."""
        return self.config.embedding_dim

    def validate_condition(self, condition) -> torch.Tensor:
        """Check a batch of conditions and return it as a tensor on this module's device."""
        raise NotImplementedError

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        """Compute h(z) for a validated batch of conditions."""
        raise NotImplementedError

    def forward(self, condition) -> torch.Tensor:
        """Embed a batch of conditions.

        Args:
            condition: a batch of conditions in the form the subclass documents.

        Returns:
            `torch.Tensor` of shape `(batch_size, embedding_dim)`.
        """
        return self.embed(self.validate_condition(condition))
