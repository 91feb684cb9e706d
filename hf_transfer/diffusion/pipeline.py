"""A diffusers pipeline that samples images given conditions through a shared embedding."""

import inspect
import math

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from ..embeddings import SharedEmbedding
from .unet import SharedEmbeddingUNet2DModel


class TransferDiffusionPipeline(DiffusionPipeline):
    """Conditional image sampling with a shared embedding h, a UNet g and a noise scheduler.

    Any diffusers scheduler with `set_timesteps` and `step` works; DDPM and DDIM are tested.
    Save with `save_pretrained` and load with `TransferDiffusionPipeline.from_pretrained`.

    Args:
        unet (`SharedEmbeddingUNet2DModel`): the generator g.
        scheduler (`SchedulerMixin`): the noise scheduler used for sampling.
        shared_embedding (`SharedEmbedding`): the shared embedding h.
    """

    model_cpu_offload_seq = "shared_embedding->unet"

    def __init__(self, unet: SharedEmbeddingUNet2DModel, scheduler: SchedulerMixin, shared_embedding: SharedEmbedding):
        super().__init__()
        if shared_embedding.embedding_dim != unet.config.embedding_dim:
            raise ValueError(
                f"The shared embedding has width {shared_embedding.embedding_dim} but the UNet expects "
                f"{unet.config.embedding_dim}."
            )
        self.register_modules(unet=unet, scheduler=scheduler, shared_embedding=shared_embedding)

    @torch.no_grad()
    def __call__(
        self,
        condition,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        """Sample one image per condition.

        Args:
            condition: a batch of conditions in the form `shared_embedding` takes, for example an integer
                tensor of shape `(batch_size,)` for class labels.
            num_inference_steps (`int`, defaults to 50): number of denoising steps.
            guidance_scale (`float`, defaults to 1.0): classifier-free guidance weight w; the prediction is
                `uncond + w * (cond - uncond)`, so 1.0 turns guidance off and values above 1 strengthen
                the condition.
            generator (`torch.Generator`, *optional*): makes sampling deterministic.
            eta (`float`, defaults to 0.0): DDIM's eta; ignored by schedulers without it.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (floats in [0, 1]) or `"pt"` (a tensor in [-1, 1]).
            return_dict (`bool`, defaults to `True`): return an `ImagePipelineOutput` instead of a tuple.

        Example:
            >>> images = pipeline(torch.arange(10), num_inference_steps=25, guidance_scale=2.0).images  # doctest: +SKIP
        """
        if output_type not in {"pil", "np", "pt"}:
            raise ValueError(f"Unknown output_type {output_type!r}; choose 'pil', 'np' or 'pt'.")
        if num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be at least 1, got {num_inference_steps}.")
        if not (math.isfinite(guidance_scale) and guidance_scale >= 0):
            raise ValueError(f"`guidance_scale` must be a finite non-negative number, got {guidance_scale}.")

        # 1. Embed the conditions; a zero embedding is the unconditional branch for guidance.
        embedding = self.shared_embedding(condition).to(device=self.device, dtype=self.unet.dtype)
        batch_size = embedding.shape[0]
        if batch_size == 0:
            raise ValueError("`condition` is empty; pass at least one condition, one per image to sample.")
        use_guidance = guidance_scale != 1.0
        if use_guidance:
            embedding = torch.cat([torch.zeros_like(embedding), embedding])

        # 2. Start from Gaussian noise.
        config = self.unet.unet.config
        size = config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        shape = (batch_size, config.in_channels, height, width)
        image = randn_tensor(shape, generator=generator, device=self.device, dtype=self.unet.dtype)

        # 3. Denoise.
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        step_kwargs = {}
        step_parameters = inspect.signature(self.scheduler.step).parameters
        if "generator" in step_parameters:
            step_kwargs["generator"] = generator
        if "eta" in step_parameters:
            step_kwargs["eta"] = eta
        for timestep in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([image, image]) if use_guidance else image
            model_input = self.scheduler.scale_model_input(model_input, timestep)
            prediction = self.unet(model_input, timestep, embedding).sample
            if use_guidance:
                unconditional, conditional = prediction.chunk(2)
                prediction = unconditional + guidance_scale * (conditional - unconditional)
            image = self.scheduler.step(prediction, timestep, image, **step_kwargs).prev_sample

        # 4. Convert to the requested output type.
        image = image.clamp(-1, 1)
        if output_type == "pt":
            output = image
        else:
            array = ((image + 1) / 2).cpu().permute(0, 2, 3, 1).float().numpy()
            output = self.numpy_to_pil(array) if output_type == "pil" else np.asarray(array)
        if not return_dict:
            return (output,)
        return ImagePipelineOutput(images=output)
