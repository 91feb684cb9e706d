"""Diffusion on low-dimensional vectors: an MLP noise predictor eps(x_t, t, h(z)) and its (h, g) model."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..embeddings import SharedEmbedding
from ..utils import check_finite


@dataclass
class VectorNoisePredictorOutput(BaseOutput):
    """Output of `VectorNoisePredictor`.

    Args:
        sample (`torch.Tensor` of shape `(batch_size, data_dim)`): the predicted noise.
    """

    sample: torch.Tensor


class VectorNoisePredictor(ModelMixin, ConfigMixin):
    """The generator g of a vector diffusion model: an MLP that predicts the noise from (x_t, t, h(z)).

    The timestep goes through diffusers' sinusoidal `Timesteps` and a `TimestepEmbedding`; the result is
    concatenated with x_t and h(z) and fed to a SiLU MLP. Timesteps may be fractional, which the
    probability-flow ODE needs.

    The arguments are keyword-only because diffusers 0.42's `register_to_config` marks positional
    arguments as defaults, so `from_config` (used by `get_transfer_model` for a fresh head) would drop them.

    Args:
        data_dim (`int`): width of x.
        embedding_dim (`int`): width of the shared embedding h(z) it takes.
        hidden_dims (`tuple[int, ...]`, defaults to `(128, 128, 128)`): widths of the hidden layers.
        time_embedding_dim (`int`, defaults to 32): width of the timestep embedding.

    Example:
        >>> import torch
        >>> from hf_transfer.diffusion.vector import VectorNoisePredictor
        >>> generator = VectorNoisePredictor(data_dim=2, embedding_dim=3)
        >>> generator(torch.zeros(4, 2), torch.tensor([0, 10, 500, 999]), torch.zeros(4, 3)).sample.shape
        torch.Size([4, 2])
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        *,
        data_dim: int,
        embedding_dim: int,
        hidden_dims: tuple[int, ...] = (128, 128, 128),
        time_embedding_dim: int = 32,
    ):
        super().__init__()
        for name, value in (("data_dim", data_dim), ("embedding_dim", embedding_dim), ("time_embedding_dim", time_embedding_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if time_embedding_dim % 2:
            raise ValueError(f"`time_embedding_dim` must be even for the sinusoidal embedding, got {time_embedding_dim}.")
        self.time_proj = Timesteps(time_embedding_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_embedding_dim, time_embedding_dim)
        layers: list[nn.Module] = []
        width = data_dim + embedding_dim + time_embedding_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, data_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor, embedding: torch.Tensor, return_dict: bool = True
    ) -> VectorNoisePredictorOutput | tuple:
        """Predict the noise in `sample`.

        Args:
            sample (`torch.Tensor` of shape `(batch_size, data_dim)`): the noised data x_t.
            timestep (`torch.Tensor` of shape `(batch_size,)` or a number): training timesteps, integer or fractional.
            embedding (`torch.Tensor` of shape `(batch_size, embedding_dim)`): h(z).
            return_dict (`bool`, defaults to True): return a `VectorNoisePredictorOutput` instead of a tuple.
        """
        data_dim, embedding_dim = self.config.data_dim, self.config.embedding_dim
        if sample.ndim != 2 or sample.shape[1] != data_dim:
            raise ValueError(f"`sample` must have shape (batch_size, {data_dim}), got {tuple(sample.shape)}.")
        if embedding.shape != (sample.shape[0], embedding_dim):
            raise ValueError(
                f"`embedding` must have shape ({sample.shape[0]}, {embedding_dim}), got {tuple(embedding.shape)}."
            )
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep.expand(sample.shape[0])
        # Timesteps returns float32 features; cast to the MLP's dtype for half-precision runs.
        time_features = self.time_embedding(self.time_proj(timestep).to(sample.dtype))
        prediction = self.mlp(torch.cat([sample, embedding.to(sample.dtype), time_features], dim=1))
        if not return_dict:
            return (prediction,)
        return VectorNoisePredictorOutput(sample=prediction)


class ConditionalVectorDiffusionModel(nn.Module):
    """A shared embedding h and a `VectorNoisePredictor` g trained together by denoising score matching.

    Calling the model on a batch returns the epsilon-prediction loss (Ho et al., "Denoising Diffusion
    Probabilistic Models", arXiv:2006.11239), so it trains with `hf_transfer.train` and turns into a
    target model with `get_transfer_model`.

    Args:
        shared_embedding (`SharedEmbedding`): h, mapping conditions to vectors of width `embedding_dim`.
        generator (`VectorNoisePredictor`): g.
        noise_scheduler (`SchedulerMixin`, *optional*): the training noise scheduler, with
            `prediction_type="epsilon"`; a 1000-step `DDPMScheduler` by default.
    """

    def __init__(
        self,
        shared_embedding: SharedEmbedding,
        generator: VectorNoisePredictor,
        noise_scheduler: SchedulerMixin | None = None,
    ):
        super().__init__()
        if not isinstance(shared_embedding, SharedEmbedding):
            raise TypeError(f"`shared_embedding` must be a SharedEmbedding, got {type(shared_embedding).__name__}.")
        if not isinstance(generator, VectorNoisePredictor):
            raise TypeError(f"`generator` must be a VectorNoisePredictor, got {type(generator).__name__}.")
        if shared_embedding.embedding_dim != generator.config.embedding_dim:
            raise ValueError(
                f"The shared embedding has width {shared_embedding.embedding_dim} but the generator expects "
                f"{generator.config.embedding_dim}; build it with embedding_dim={shared_embedding.embedding_dim}."
            )
        noise_scheduler = noise_scheduler or DDPMScheduler(num_train_timesteps=1000)
        if noise_scheduler.config.prediction_type != "epsilon":
            raise ValueError(
                f"ConditionalVectorDiffusionModel trains epsilon prediction, but the noise scheduler has "
                f"prediction_type={noise_scheduler.config.prediction_type!r}; pass a scheduler with "
                "prediction_type='epsilon'."
            )
        self.shared_embedding = shared_embedding
        self.generator = generator
        self.noise_scheduler = noise_scheduler

    @property
    def num_train_timesteps(self) -> int:
        return self.noise_scheduler.config.num_train_timesteps

    def predict_noise(self, sample: torch.Tensor, timestep: torch.Tensor, condition) -> torch.Tensor:
        """Return eps(x_t, t, h(z)) of shape `(batch_size, data_dim)` for noised `sample` at `timestep`."""
        return self.generator(sample, timestep, self.shared_embedding(condition)).sample

    def forward(self, x: torch.Tensor, condition) -> torch.Tensor:
        """Return the mean denoising loss of a batch.

        Args:
            x (`torch.Tensor` of shape `(batch_size, data_dim)`): clean data.
            condition: the batch of conditions in the form the shared embedding takes.
        """
        check_finite("x", x)
        noise = torch.randn_like(x)
        timesteps = torch.randint(0, self.num_train_timesteps, (x.shape[0],), device=x.device, dtype=torch.long)
        noisy = self.noise_scheduler.add_noise(x, noise, timesteps)
        prediction = self.predict_noise(noisy, timesteps, condition)
        return F.mse_loss(prediction.float(), noise.float())
