"""Exact-truth metrics: Monte Carlo KL with its standard error, probability-flow ODE likelihoods, score error.

All three need a reference task with exact densities, such as `hf_transfer.data.known_truth.GaussianTask`:
anything with `sample_pairs(n, generator)`, `log_prob(x, z, alpha_bar=1)` and `score(x, z, alpha_bar)`.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..diffusion.vector import ConditionalVectorDiffusionModel


@dataclass
class KLEstimate:
    """A Monte Carlo estimate of KL(p || q) in nats.

    Attributes:
        value (`float`): the mean of log p - log q over the test pairs.
        standard_error (`float`): the standard deviation of log p - log q over sqrt(num_samples).
        num_samples (`int`): number of test pairs.
    """

    value: float
    standard_error: float
    num_samples: int


def monte_carlo_kl(log_prob_true: torch.Tensor, log_prob_model: torch.Tensor) -> KLEstimate:
    """Estimate KL(p || q) from log-densities of samples drawn from p.

    Args:
        log_prob_true (`torch.Tensor` of shape `(num_samples,)`): log p(x_i | z_i) for (x_i, z_i) ~ p.
        log_prob_model (`torch.Tensor` of shape `(num_samples,)`): log q(x_i | z_i) of the same pairs.

    Returns:
        `KLEstimate`; the value is infinite when q gives some sample zero density.
    """
    if log_prob_true.shape != log_prob_model.shape or log_prob_true.ndim != 1:
        raise ValueError(
            f"`log_prob_true` and `log_prob_model` must be 1-D of equal length, got shapes "
            f"{tuple(log_prob_true.shape)} and {tuple(log_prob_model.shape)}."
        )
    if log_prob_true.numel() < 2:
        raise ValueError(f"A standard error needs at least 2 samples, got {log_prob_true.numel()}.")
    difference = (log_prob_true.double() - log_prob_model.double()).detach().cpu()
    if torch.isnan(difference).any():
        raise ValueError("The log-densities contain NaN; check the model for NaN weights.")
    num_samples = difference.numel()
    if torch.isinf(difference).any():
        return KLEstimate(math.inf, math.inf, num_samples)
    return KLEstimate(difference.mean().item(), (difference.std() / math.sqrt(num_samples)).item(), num_samples)


@torch.no_grad()
def estimate_kl(
    task,
    model_log_prob: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_samples: int = 20000,
    seed: int = 0,
    batch_size: int = 4096,
) -> KLEstimate:
    """Estimate E_z KL(p(. | z) || q(. | z)) over fresh pairs (x, z) ~ p.

    Args:
        task: the true distribution p, with `sample_pairs` and `log_prob` (a `GaussianTask`).
        model_log_prob (`Callable`): maps `x` of shape `(batch, data_dim)` and `z` of shape
            `(batch, condition_dim)` to log q(x | z) of shape `(batch,)`, e.g. `ConditionalFlowModel.log_prob`.
        num_samples (`int`, defaults to 20000): number of test pairs.
        seed (`int`, defaults to 0): seed of the test pairs, independent of the training data's seeds.
        batch_size (`int`, defaults to 4096): pairs per model call.
    """
    x, condition = task.sample_pairs(num_samples, torch.Generator().manual_seed(seed))
    log_prob_model = torch.cat(
        [model_log_prob(x_batch, z_batch).detach().cpu() for x_batch, z_batch in zip(x.split(batch_size), condition.split(batch_size))]
    )
    return monte_carlo_kl(task.log_prob(x, condition), log_prob_model)


class ContinuousSchedule:
    """The continuous-time variance-preserving schedule behind a discrete diffusers noise scheduler.

    Discrete training timestep i (0 <= i < N) sits at time t_i = (i + 1) / N; log alpha_bar(t) is the
    linear interpolation of the scheduler's `log(alphas_cumprod)` between those times, and
    beta(t) = -d log alpha_bar / dt. The network takes the fractional timestep t * N - 1.

    Args:
        noise_scheduler: a diffusers scheduler with `alphas_cumprod` and `config.num_train_timesteps`.
    """

    def __init__(self, noise_scheduler):
        self.num_train_timesteps = noise_scheduler.config.num_train_timesteps
        log_alpha_bar = torch.log(noise_scheduler.alphas_cumprod.double())
        self.times = torch.arange(1, self.num_train_timesteps + 1, dtype=torch.float64) / self.num_train_timesteps
        self.log_alpha_bar = log_alpha_bar
        # beta on each segment [t_{i-1}, t_i], evaluated at the segment's midpoint for a continuous interpolant.
        slopes = -torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), log_alpha_bar])) * self.num_train_timesteps
        self.beta_times = self.times - 0.5 / self.num_train_timesteps
        self.beta_values = slopes

    @property
    def t_min(self) -> float:
        """Time of the first discrete training timestep, 1 / N."""
        return 1.0 / self.num_train_timesteps

    def alpha_bar(self, t: float) -> float:
        return math.exp(_interpolate(t, self.times, self.log_alpha_bar))

    def beta(self, t: float) -> float:
        return _interpolate(t, self.beta_times, self.beta_values)

    def timestep(self, t: float) -> float:
        """Return the fractional network timestep of time t."""
        return t * self.num_train_timesteps - 1


def _interpolate(t: float, times: torch.Tensor, values: torch.Tensor) -> float:
    index = int(torch.searchsorted(times, torch.tensor(t, dtype=times.dtype)).clamp(1, len(times) - 1))
    left, right = times[index - 1].item(), times[index].item()
    weight = min(max((t - left) / (right - left), 0.0), 1.0)
    return (1 - weight) * values[index - 1].item() + weight * values[index].item()


def _drift_and_divergence(model, schedule, sample, t, embedding):
    """Return the probability-flow drift f(x, t) and its exact divergence, one backward pass per dimension."""
    beta = schedule.beta(t)
    sigma = math.sqrt(1.0 - schedule.alpha_bar(t))
    with torch.enable_grad():
        sample = sample.detach().requires_grad_(True)
        timestep = torch.full((sample.shape[0],), schedule.timestep(t), dtype=sample.dtype)
        noise = model.generator(sample, timestep, embedding).sample
        trace = torch.zeros(sample.shape[0], dtype=sample.dtype)
        for dimension in range(sample.shape[1]):
            (gradient,) = torch.autograd.grad(noise[:, dimension].sum(), sample, retain_graph=dimension + 1 < sample.shape[1])
            trace += gradient[:, dimension]
    # f = -beta / 2 (x + score) with score = -eps / sigma.
    drift = -0.5 * beta * (sample.detach() - noise.detach() / sigma)
    divergence = -0.5 * beta * (sample.shape[1] - trace / sigma)
    return drift, divergence


@torch.no_grad()
def probability_flow_log_prob(
    model: ConditionalVectorDiffusionModel, x: torch.Tensor, condition, num_steps: int = 100
) -> torch.Tensor:
    """Compute log q_{t_min}(x | z) of a vector diffusion model by its probability-flow ODE.

    The ODE dx/dt = -beta(t) / 2 (x - eps(x, t, h(z)) / sigma(t)) is integrated with classical RK4 from
    t_min = 1 / N (the first training timestep) to t = 1, together with the exact divergence of its
    drift (one backward pass per data dimension, so only for low-dimensional x), and
    log q_{t_min}(x) = log N(x(1); 0, I) + integral of the divergence (Song et al., "Score-Based
    Generative Modeling through Stochastic Differential Equations", arXiv:2011.13456, appendix D).

    Args:
        model (`ConditionalVectorDiffusionModel`): the trained model.
        x (`torch.Tensor` of shape `(batch_size, data_dim)`): points, as noised to t_min.
        condition: `batch_size` conditions in the form the shared embedding takes.
        num_steps (`int`, defaults to 100): RK4 steps.

    Returns:
        `torch.Tensor` of shape `(batch_size,)` in nats.
    """
    if not isinstance(model, ConditionalVectorDiffusionModel):
        raise TypeError(f"`model` must be a ConditionalVectorDiffusionModel, got {type(model).__name__}.")
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be at least 1, got {num_steps}.")
    schedule = ContinuousSchedule(model.noise_scheduler)
    embedding = model.shared_embedding(condition)
    sample = x.float()
    log_det = torch.zeros(x.shape[0])
    step = (1.0 - schedule.t_min) / num_steps
    t = schedule.t_min
    for _ in range(num_steps):
        k1, d1 = _drift_and_divergence(model, schedule, sample, t, embedding)
        k2, d2 = _drift_and_divergence(model, schedule, sample + 0.5 * step * k1, t + 0.5 * step, embedding)
        k3, d3 = _drift_and_divergence(model, schedule, sample + 0.5 * step * k2, t + 0.5 * step, embedding)
        k4, d4 = _drift_and_divergence(model, schedule, sample + step * k3, t + step, embedding)
        sample = sample + step / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        log_det = log_det + step / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
        t += step
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(sample).sum(dim=1)
    return prior + log_det


@torch.no_grad()
def diffusion_kl(
    model: ConditionalVectorDiffusionModel, task, num_samples: int = 2000, seed: int = 0, num_steps: int = 100
) -> KLEstimate:
    """Estimate E_z KL(p_{t_min}(. | z) || q_{t_min}(. | z)) with probability-flow ODE likelihoods.

    Both densities are taken at t_min = 1 / N, the first training timestep, where alpha_bar is close to 1
    (1 - 1e-4 for diffusers' default linear DDPM schedule): the ODE is not integrated down to t = 0,
    where the learned score is least reliable. The true p_{t_min} is exact because the task is Gaussian.

    Args:
        model (`ConditionalVectorDiffusionModel`): the trained model.
        task: the true distribution, a `GaussianTask`.
        num_samples (`int`, defaults to 2000): number of test pairs.
        seed (`int`, defaults to 0): seed of the test pairs and their noise.
        num_steps (`int`, defaults to 100): RK4 steps of the ODE.
    """
    generator = torch.Generator().manual_seed(seed)
    x, condition = task.sample_pairs(num_samples, generator)
    alpha_bar = ContinuousSchedule(model.noise_scheduler).alpha_bar(1.0 / model.num_train_timesteps)
    noised = math.sqrt(alpha_bar) * x + math.sqrt(1 - alpha_bar) * torch.randn(x.shape, generator=generator)
    log_prob_model = probability_flow_log_prob(model, noised, condition, num_steps=num_steps)
    return monte_carlo_kl(task.log_prob(noised, condition, alpha_bar), log_prob_model)


@torch.no_grad()
def score_error(model: ConditionalVectorDiffusionModel, task, num_samples: int = 20000, seed: int = 0) -> KLEstimate:
    """Estimate E ||eps_model(x_t, t, h(z)) - eps*(x_t, t, z)||^2 over uniform training timesteps.

    eps* = -sigma(t) * grad log p_t(x_t | z) is the noise prediction of the exact score of the noised
    Gaussian, so this is the denoising loss minus its irreducible part. The result reuses `KLEstimate`
    for the mean and its standard error.

    Args:
        model (`ConditionalVectorDiffusionModel`): the trained model.
        task: the true distribution, a `GaussianTask`.
        num_samples (`int`, defaults to 20000): number of test triples (x, z, t).
        seed (`int`, defaults to 0): seed of the test pairs, timesteps and noise.
    """
    generator = torch.Generator().manual_seed(seed)
    x, condition = task.sample_pairs(num_samples, generator)
    timesteps = torch.randint(0, model.num_train_timesteps, (num_samples,), generator=generator)
    noise = torch.randn(x.shape, generator=generator)
    alpha_bar = model.noise_scheduler.alphas_cumprod[timesteps].float()
    noised = alpha_bar.sqrt().unsqueeze(1) * x + (1 - alpha_bar).sqrt().unsqueeze(1) * noise
    true_noise = -(1 - alpha_bar).sqrt().unsqueeze(1) * task.score(noised, condition, alpha_bar)
    predicted = model.predict_noise(noised, timesteps, condition)
    squared_error = ((predicted - true_noise) ** 2).sum(dim=1).double()
    return KLEstimate(
        squared_error.mean().item(), (squared_error.std() / math.sqrt(num_samples)).item(), num_samples
    )
