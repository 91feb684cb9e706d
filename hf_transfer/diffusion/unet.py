"""A `UNet2DModel` that takes the shared embedding h(z) through its time embedding."""

from typing import Any

import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn


def public_config(unet: ModelMixin) -> dict[str, Any]:
    """Return a UNet's config without private keys such as `_name_or_path`, which describe where it came from."""
    return {key: value for key, value in unet.config.items() if not key.startswith("_")}


def place_like(model: ModelMixin, unet: ModelMixin) -> ModelMixin:
    """Move `model` to the device and dtype of `unet`, casting the dtype only when it differs.

    diffusers logs a float32 warning on every dtype cast, even one that changes nothing.
    """
    model = model.to(unet.device)
    if unet.dtype != model.dtype:
        model = model.to(dtype=unet.dtype)
    return model


def check_sample_channels(sample: torch.Tensor, in_channels: int) -> None:
    """Raise `ValueError` unless `sample` has shape `(batch_size, in_channels, height, width)`."""
    if sample.ndim != 4 or sample.shape[1] != in_channels:
        raise ValueError(
            f"`sample` must have shape (batch_size, {in_channels}, height, width), got shape {tuple(sample.shape)}."
        )


def check_embedding_shape(embedding: torch.Tensor, batch_size: int, embedding_dim: int) -> None:
    """Raise `ValueError` unless `embedding` has shape `(batch_size, embedding_dim)`."""
    if embedding.ndim != 2 or embedding.shape != (batch_size, embedding_dim):
        raise ValueError(
            f"`embedding` must have shape ({batch_size}, {embedding_dim}) to match the batch, "
            f"got shape {tuple(embedding.shape)}."
        )


class ConditionProjection(nn.Module):
    """Two-layer MLP from h(z) to the UNet's time-embedding width, with a zero-initialised last layer.

    The zero last layer (as in ControlNet's zero convolutions, arXiv:2302.05543) makes the
    projection output exactly zero before training, so a wrapped UNet starts as the unmodified one.
    """

    def __init__(self, embedding_dim: int, time_embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(embedding_dim, time_embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(time_embed_dim, time_embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(embedding)))


class SharedEmbeddingUNet2DModel(ModelMixin, ConfigMixin):
    """A diffusers `UNet2DModel` conditioned on a shared embedding h(z) through its time embedding.

    A `ConditionProjection` maps h(z) to the width of the UNet's time embedding and is added to it,
    in the slot `UNet2DModel` reserves for class embeddings. Its last layer starts at zero, so
    before training the outputs equal those of the unmodified UNet. An all-zero embedding row
    marks an unconditional sample, which classifier-free guidance uses.

    Args:
        unet_config (`dict`): the `UNet2DModel` config, as in `unet.config`. It must not define a class
            embedding (`num_class_embeds` or `class_embed_type`) of its own.
        embedding_dim (`int`): width of h(z).

    Example:
        >>> import torch
        >>> from diffusers import UNet2DModel
        >>> from hf_transfer import SharedEmbeddingUNet2DModel
        >>> unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        ...     down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        ...     layers_per_block=1, norm_num_groups=4)
        >>> model = SharedEmbeddingUNet2DModel.from_unet(unet, embedding_dim=4)
        >>> x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 20])
        >>> torch.equal(model(x, t, torch.randn(2, 4)).sample, unet(x, t).sample)
        True
    """

    @register_to_config
    def __init__(self, unet_config: dict[str, Any], embedding_dim: int):
        super().__init__()
        unet_config = {key: value for key, value in dict(unet_config).items() if not key.startswith("_")}
        if unet_config.get("num_class_embeds") is not None or unet_config.get("class_embed_type") is not None:
            raise ValueError(
                "The UNet config already defines a class embedding "
                f"(num_class_embeds={unet_config.get('num_class_embeds')!r}, "
                f"class_embed_type={unet_config.get('class_embed_type')!r}); start from an unconditional "
                "UNet, because the shared embedding takes that slot."
            )
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be at least 1, got {embedding_dim}.")
        self.unet = UNet2DModel.from_config(unet_config)
        time_embed_dim = self.unet.time_embedding.linear_2.out_features
        # UNet2DModel adds `class_embedding(class_labels)` to the time embedding. The projection of
        # h(z) takes that slot, so the UNet's own forward does the conditioning with no extra pass.
        self.unet.class_embedding = ConditionProjection(embedding_dim, time_embed_dim)

    @classmethod
    def from_unet(cls, unet: UNet2DModel, embedding_dim: int) -> "SharedEmbeddingUNet2DModel":
        """Wrap a (possibly pretrained) unconditional `UNet2DModel`, copying its weights."""
        if not isinstance(unet, UNet2DModel):
            raise TypeError(
                f"`unet` must be a diffusers UNet2DModel, got {type(unet).__name__}; "
                "use UNet2DModel.from_pretrained(...) to load one."
            )
        model = cls(unet_config=public_config(unet), embedding_dim=embedding_dim)
        missing, unexpected = model.unet.load_state_dict(unet.state_dict(), strict=False)
        projection_keys = {key for key in missing if key.startswith("class_embedding.")}
        if set(missing) - projection_keys or unexpected:
            raise ValueError(
                f"Could not copy the UNet weights: missing {sorted(set(missing) - projection_keys)}, "
                f"unexpected {sorted(unexpected)}."
            )
        return place_like(model, unet)

    @property
    def condition_projection(self) -> ConditionProjection:
        return self.unet.class_embedding

    @property
    def sample_size(self):
        return self.unet.config.sample_size

    def check_sample(self, sample: torch.Tensor) -> None:
        """Raise `ValueError` if the UNet cannot take `sample`."""
        config = self.unet.config
        check_sample_channels(sample, config.in_channels)
        # Every down block but the last halves the resolution, and the up path must meet the skips.
        factor = 2 ** (len(config.down_block_types) - 1)
        height, width = sample.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(
                f"Image size {height}x{width} is not divisible by {factor}, which this UNet's "
                f"{len(config.down_block_types)} down blocks need; resize or pad the images to a multiple of {factor}."
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        embedding: torch.Tensor,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple:
        """Predict the noise (or `v`, or the sample) for a noisy batch given h(z).

        Args:
            sample (`torch.Tensor` of shape `(batch_size, channels, height, width)`): the noisy images.
            timestep (`torch.Tensor` of shape `(batch_size,)` or a number): the diffusion timesteps.
            embedding (`torch.Tensor` of shape `(batch_size, embedding_dim)`): h(z); a zero row requests
                the unconditional prediction.
            return_dict (`bool`, defaults to `True`): return a `UNet2DOutput` instead of a tuple.
        """
        self.check_sample(sample)
        check_embedding_shape(embedding, sample.shape[0], self.config.embedding_dim)
        # The projection runs in the UNet's dtype; h(z) may come from a module kept in float32.
        embedding = embedding.to(dtype=self.unet.dtype)
        return self.unet(sample, timestep, class_labels=embedding, return_dict=return_dict)
