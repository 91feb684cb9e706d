"""The (h, g) pair of a conditional diffusion model and its denoising objective."""

import copy

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from ..embeddings import SharedEmbedding
from .unet import SharedEmbeddingUNet2DModel
from .unet_condition import SharedEmbeddingUNet2DConditionModel


class ConditionalDiffusionModel(nn.Module):
    """A shared embedding h and a UNet generator g trained together by denoising score matching.

    Calling the model on a batch returns the denoising loss, so that accelerate's wrappers
    (DDP among them) see the whole training computation in `forward`.

    Args:
        shared_embedding (`SharedEmbedding`): h, mapping conditions to vectors of width `embedding_dim`.
        generator (`SharedEmbeddingUNet2DModel` or `SharedEmbeddingUNet2DConditionModel`): g, the UNet that takes h(z).
        noise_scheduler (`SchedulerMixin`, *optional*): the training noise scheduler; a 1000-step
            `DDPMScheduler` by default.
        condition_dropout (`float`, defaults to 0.1): probability of replacing h(z) by zeros during
            training, which teaches the unconditional model that classifier-free guidance needs
            (Ho and Salimans, arXiv:2207.12598).
    """

    def __init__(
        self,
        shared_embedding: SharedEmbedding,
        generator: SharedEmbeddingUNet2DModel,
        noise_scheduler: SchedulerMixin | None = None,
        condition_dropout: float = 0.1,
    ):
        super().__init__()
        if not isinstance(shared_embedding, SharedEmbedding):
            raise TypeError(f"`shared_embedding` must be a SharedEmbedding, got {type(shared_embedding).__name__}.")
        if not isinstance(generator, (SharedEmbeddingUNet2DModel, SharedEmbeddingUNet2DConditionModel)):
            raise TypeError(
                f"`generator` must be a SharedEmbeddingUNet2DModel or SharedEmbeddingUNet2DConditionModel, got "
                f"{type(generator).__name__}; wrap a UNet2DModel with SharedEmbeddingUNet2DModel.from_unet(unet, "
                "embedding_dim)."
            )
        if shared_embedding.embedding_dim != generator.config.embedding_dim:
            raise ValueError(
                f"The shared embedding has width {shared_embedding.embedding_dim} but the UNet expects "
                f"{generator.config.embedding_dim}; build the UNet with "
                f"embedding_dim={shared_embedding.embedding_dim}."
            )
        if not 0.0 <= condition_dropout < 1.0:
            raise ValueError(f"`condition_dropout` must lie in [0, 1), got {condition_dropout}.")
        self.shared_embedding = shared_embedding
        self.generator = generator
        self.noise_scheduler = noise_scheduler or DDPMScheduler(num_train_timesteps=1000)
        self.condition_dropout = condition_dropout

    def forward(self, pixel_values: torch.Tensor, condition) -> torch.Tensor:
        """Return the denoising loss of a batch.

        Args:
            pixel_values (`torch.Tensor` of shape `(batch_size, channels, height, width)`): clean images in [-1, 1].
            condition: the batch of conditions in the form the shared embedding takes.
        """
        batch_size = pixel_values.shape[0]
        device = pixel_values.device

        # 1. Noise the clean images at uniformly drawn timesteps.
        noise = torch.randn_like(pixel_values)
        num_timesteps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_timesteps, (batch_size,), device=device, dtype=torch.long)
        noisy = self.noise_scheduler.add_noise(pixel_values, noise, timesteps)

        # 2. Embed the condition, dropping some rows for classifier-free guidance.
        embedding = self.shared_embedding(condition)
        if embedding.shape[0] != batch_size:
            raise ValueError(
                f"Got {embedding.shape[0]} conditions for {batch_size} images; pass one condition per image."
            )
        if self.training and self.condition_dropout > 0:
            keep = torch.rand(batch_size, device=device) >= self.condition_dropout
            embedding = embedding * keep.unsqueeze(1).to(embedding.dtype)

        # 3. Regress the target that the scheduler's prediction type defines.
        prediction = self.generator(noisy, timesteps, embedding).sample
        prediction_type = self.noise_scheduler.config.prediction_type
        if prediction_type == "epsilon":
            target = noise
        elif prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(pixel_values, noise, timesteps)
        elif prediction_type == "sample":
            target = pixel_values
        else:
            raise ValueError(f"Unsupported prediction_type {prediction_type!r} in the noise scheduler config.")
        return F.mse_loss(prediction.float(), target.float())

    def to_pipeline(self, scheduler: SchedulerMixin | None = None):
        """Build a `TransferDiffusionPipeline` from this model.

        The pipeline shares this model's modules, except that a generator with LoRA adapters is
        replaced by a merged copy. The copy has the plain UNet's parameter names, so the saved
        pipeline loads without peft, and later training of this model does not reach the pipeline.
        """
        from ..transfer.lora import has_lora_adapters, merge_lora_adapters
        from .pipeline import TransferDiffusionPipeline

        generator = self.generator
        if has_lora_adapters(generator):
            generator = merge_lora_adapters(copy.deepcopy(generator))
        return TransferDiffusionPipeline(
            unet=generator,
            scheduler=scheduler or self.noise_scheduler,
            shared_embedding=self.shared_embedding,
        )
