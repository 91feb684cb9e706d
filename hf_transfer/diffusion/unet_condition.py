"""A `UNet2DConditionModel` that takes the shared embedding h(z) as cross-attention tokens.

Why cross-attention tokens and not an added embedding:

- A `UNet2DConditionModel` with cross-attention blocks needs `encoder_hidden_states` on every
  call, and in this library h(z) is the only condition, so the tokens must come from h(z) anyway.
  Adding h(z) to the time embedding as well would give the model two paths for one signal.
- Cross-attention is where pretrained text-to-image UNets read their condition, so LoRA and the
  other strategies adapt the same layers that carry the condition in those checkpoints.
- The time-embedding route already exists for `UNet2DModel` (`SharedEmbeddingUNet2DModel`); this
  class covers the other diffusers conditioning mechanism.

The cost: a pretrained UNet trained on text-encoder tokens receives new tokens, so its outputs
change before any training, unlike with the zero-initialised time-embedding projection.
"""

from typing import Any

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from .unet import check_embedding_shape, check_sample_channels, place_like, public_config


class TokenProjection(nn.Module):
    """Linear map from h(z) to `num_tokens` cross-attention tokens of width `cross_attention_dim`.

    The map has no bias, so an all-zero h(z) row (the unconditional row of classifier-free
    guidance) gives all-zero tokens. diffusers' attention layers project keys and values without
    bias by default (`attention_bias=False`), so zero tokens then contribute a fixed output.
    """

    def __init__(self, embedding_dim: int, cross_attention_dim: int, num_tokens: int):
        super().__init__()
        self.num_tokens = num_tokens
        self.cross_attention_dim = cross_attention_dim
        self.linear = nn.Linear(embedding_dim, num_tokens * cross_attention_dim, bias=False)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        tokens = self.linear(embedding)
        return tokens.view(embedding.shape[0], self.num_tokens, self.cross_attention_dim)


class SharedEmbeddingUNet2DConditionModel(ModelMixin, ConfigMixin):
    """A diffusers `UNet2DConditionModel` conditioned on a shared embedding h(z) through cross-attention.

    A `TokenProjection` turns h(z) of shape `(batch_size, embedding_dim)` into `num_tokens` tokens
    passed as `encoder_hidden_states`. It takes the place of `SharedEmbeddingUNet2DModel` in
    `ConditionalDiffusionModel` and `TransferDiffusionPipeline`: same `forward(sample, timestep,
    embedding)` and `config.embedding_dim`.

    Args:
        unet_config (`dict`): the `UNet2DConditionModel` config, as in `unet.config`. It must have a single
            integer `cross_attention_dim` and no class, addition or encoder-projection embedding, which
            would need inputs that h(z) does not provide.
        embedding_dim (`int`): width of h(z).
        num_tokens (`int`, defaults to 1): number of cross-attention tokens made from h(z).

    Example:
        >>> import torch
        >>> from diffusers import UNet2DConditionModel
        >>> from hf_transfer.diffusion.unet_condition import SharedEmbeddingUNet2DConditionModel
        >>> unet = UNet2DConditionModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        ...     down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ...     layers_per_block=1, norm_num_groups=4, cross_attention_dim=12, attention_head_dim=2)
        >>> model = SharedEmbeddingUNet2DConditionModel.from_unet(unet, embedding_dim=4, num_tokens=2)
        >>> model(torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3]), torch.randn(3, 4)).sample.shape
        torch.Size([3, 1, 8, 8])
    """

    @register_to_config
    def __init__(self, unet_config: dict[str, Any], embedding_dim: int, num_tokens: int = 1):
        super().__init__()
        unet_config = {key: value for key, value in dict(unet_config).items() if not key.startswith("_")}
        for key in ("class_embed_type", "num_class_embeds", "addition_embed_type", "encoder_hid_dim_type"):
            if unet_config.get(key) is not None:
                raise ValueError(
                    f"The UNet config sets {key}={unet_config[key]!r}, which needs inputs besides the cross-attention "
                    f"tokens; start from a UNet2DConditionModel config with {key}=None."
                )
        cross_attention_dim = unet_config.get("cross_attention_dim", 1280)
        if not isinstance(cross_attention_dim, int):
            raise ValueError(
                f"`cross_attention_dim` must be one integer for all blocks, got {cross_attention_dim!r}; "
                "per-block widths are not supported."
            )
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be at least 1, got {embedding_dim}.")
        if num_tokens < 1:
            raise ValueError(f"`num_tokens` must be at least 1, got {num_tokens}.")
        self.unet = UNet2DConditionModel.from_config(unet_config)
        self.token_projection = TokenProjection(embedding_dim, cross_attention_dim, num_tokens)

    @classmethod
    def from_unet(cls, unet: UNet2DConditionModel, embedding_dim: int, num_tokens: int = 1) -> "SharedEmbeddingUNet2DConditionModel":
        """Wrap a (possibly pretrained) `UNet2DConditionModel`, copying its weights."""
        if not isinstance(unet, UNet2DConditionModel):
            raise TypeError(
                f"`unet` must be a diffusers UNet2DConditionModel, got {type(unet).__name__}; "
                "use UNet2DConditionModel.from_pretrained(..., use_safetensors=True) to load one."
            )
        model = cls(unet_config=public_config(unet), embedding_dim=embedding_dim, num_tokens=num_tokens)
        model.unet.load_state_dict(unet.state_dict())
        return place_like(model, unet)

    @property
    def sample_size(self):
        return self.unet.config.sample_size

    def check_sample(self, sample: torch.Tensor) -> None:
        """Raise `ValueError` if the UNet cannot take `sample`."""
        check_sample_channels(sample, self.unet.config.in_channels)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        embedding: torch.Tensor,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple:
        """Predict the noise (or `v`, or the sample) for a noisy batch given h(z).

        Args:
            sample (`torch.Tensor` of shape `(batch_size, channels, height, width)`): the noisy images.
            timestep (`torch.Tensor` of shape `(batch_size,)` or a number): the diffusion timesteps.
            embedding (`torch.Tensor` of shape `(batch_size, embedding_dim)`): h(z). A zero row requests
                the unconditional prediction.
            return_dict (`bool`, defaults to `True`): return a `UNet2DConditionOutput` instead of a tuple.
        """
        self.check_sample(sample)
        check_embedding_shape(embedding, sample.shape[0], self.config.embedding_dim)
        # The projection runs in the UNet's dtype; h(z) may come from a module kept in float32.
        tokens = self.token_projection(embedding.to(dtype=self.unet.dtype))
        return self.unet(sample, timestep, encoder_hidden_states=tokens, return_dict=return_dict)
