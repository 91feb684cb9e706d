"""Conditional Gaussian families with a known shared embedding, exact densities and exact noised scores.

A condition z in R^condition_dim is standard normal. The true shared embedding is
h*(z) = tanh(W z) in [-1, 1]^embedding_dim, and x | z is Gaussian with a smooth nonlinear mean
m(h*(z)) = B h + C sin(pi h) + c and a fixed full covariance S = L L^T. Source and target share W
but have their own (B, C, c, L). A third task, the negative control, has the source's mean map and
covariance on an embedding W' whose rows are orthogonal to W's, so it shares nothing with the target.

Because every p(x | z) is Gaussian, `log_prob` is exact, and so are the densities and scores of the
variance-preserving noised data x_t = sqrt(a) x + sqrt(1 - a) eps: x_t | z is Gaussian with mean
sqrt(a) m and covariance a S + (1 - a) I.
"""

import math
from dataclasses import dataclass

import torch
from diffusers.configuration_utils import register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch.utils.data import Dataset

from ..embeddings import SharedEmbedding
from ..utils import check_finite


@dataclass
class GaussianTask:
    """One conditional Gaussian task p(x | z) = N(m(h(z)), S) with h(z) = tanh(W z).

    Attributes:
        embedding_weight (`torch.Tensor` of shape `(embedding_dim, condition_dim)`): W.
        mean_linear (`torch.Tensor` of shape `(data_dim, embedding_dim)`): B.
        mean_sine (`torch.Tensor` of shape `(data_dim, embedding_dim)`): C.
        mean_bias (`torch.Tensor` of shape `(data_dim,)`): c.
        scale_tril (`torch.Tensor` of shape `(data_dim, data_dim)`): L, the Cholesky factor of S.
    """

    embedding_weight: torch.Tensor
    mean_linear: torch.Tensor
    mean_sine: torch.Tensor
    mean_bias: torch.Tensor
    scale_tril: torch.Tensor

    @property
    def condition_dim(self) -> int:
        return self.embedding_weight.shape[1]

    @property
    def embedding_dim(self) -> int:
        return self.embedding_weight.shape[0]

    @property
    def data_dim(self) -> int:
        return self.mean_bias.shape[0]

    @property
    def covariance(self) -> torch.Tensor:
        return self.scale_tril @ self.scale_tril.T

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        """Return h*(z) = tanh(W z) of shape `(batch_size, embedding_dim)` for `condition` of shape `(batch_size, condition_dim)`."""
        return torch.tanh(condition @ self.embedding_weight.T)

    def mean(self, embedding: torch.Tensor) -> torch.Tensor:
        """Return m(h) of shape `(batch_size, data_dim)` for `embedding` of shape `(batch_size, embedding_dim)`."""
        return embedding @ self.mean_linear.T + torch.sin(math.pi * embedding) @ self.mean_sine.T + self.mean_bias

    def sample_conditions(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw `num_samples` conditions z ~ N(0, I), shape `(num_samples, condition_dim)`."""
        return torch.randn(num_samples, self.condition_dim, generator=generator)

    def sample(self, condition: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw one x ~ p(x | z) per row of `condition`; returns shape `(batch_size, data_dim)`."""
        noise = torch.randn(condition.shape[0], self.data_dim, generator=generator)
        return self.mean(self.embed(condition)) + noise @ self.scale_tril.T

    def sample_pairs(self, num_samples: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw `num_samples` pairs; returns `(x, z)` of shapes `(n, data_dim)` and `(n, condition_dim)`."""
        condition = self.sample_conditions(num_samples, generator)
        return self.sample(condition, generator), condition

    def noised_distribution(self, condition: torch.Tensor, alpha_bar: torch.Tensor | float = 1.0):
        """Return the exact law of x_t = sqrt(a) x + sqrt(1 - a) eps given z, as a `MultivariateNormal`.

        Args:
            condition (`torch.Tensor` of shape `(batch_size, condition_dim)`): z.
            alpha_bar (`float` or `torch.Tensor` of shape `(batch_size,)`): the cumulative signal level a
                in (0, 1]; 1 gives p(x | z) itself.
        """
        alpha_bar = torch.as_tensor(alpha_bar, dtype=condition.dtype).reshape(-1, 1, 1)
        mean = alpha_bar.reshape(-1, 1).sqrt() * self.mean(self.embed(condition))
        identity = torch.eye(self.data_dim, dtype=condition.dtype)
        covariance = alpha_bar * self.covariance + (1 - alpha_bar) * identity
        return torch.distributions.MultivariateNormal(mean, covariance_matrix=covariance.expand(mean.shape[0], -1, -1))

    def log_prob(self, x: torch.Tensor, condition: torch.Tensor, alpha_bar: torch.Tensor | float = 1.0) -> torch.Tensor:
        """Return the exact log p_t(x | z), shape `(batch_size,)`; `alpha_bar=1` (default) is the clean density."""
        return self.noised_distribution(condition, alpha_bar).log_prob(x)

    def score(self, x: torch.Tensor, condition: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
        """Return the exact score grad_x log p_t(x | z) of the noised data, shape `(batch_size, data_dim)`."""
        distribution = self.noised_distribution(condition, alpha_bar)
        residual = (x - distribution.mean).unsqueeze(-1)
        return -torch.linalg.solve(distribution.covariance_matrix, residual).squeeze(-1)


@dataclass
class KnownTruthTask:
    """A source, a target sharing its embedding, and a negative-control source sharing nothing with the target."""

    source: GaussianTask
    target: GaussianTask
    unrelated_source: GaussianTask


def _random_mean_map(data_dim: int, embedding_dim: int, generator: torch.Generator):
    mean_linear = torch.randn(data_dim, embedding_dim, generator=generator)
    mean_sine = 0.7 * torch.randn(data_dim, embedding_dim, generator=generator)
    mean_bias = 0.5 * torch.randn(data_dim, generator=generator)
    return mean_linear, mean_sine, mean_bias


def _random_scale_tril(data_dim: int, noise_scale: float, generator: torch.Generator) -> torch.Tensor:
    # Lower-triangular factor with positive diagonal in noise_scale * [0.6, 1.4] and small correlations.
    diagonal = noise_scale * (0.6 + 0.8 * torch.rand(data_dim, generator=generator))
    off_diagonal = 0.3 * noise_scale * torch.randn(data_dim, data_dim, generator=generator)
    return torch.tril(off_diagonal, diagonal=-1) + torch.diag(diagonal)


def make_known_truth_task(
    condition_dim: int = 16,
    embedding_dim: int = 2,
    data_dim: int = 2,
    noise_scale: float = 0.3,
    embedding_scale: float = 1.5,
    seed: int = 0,
) -> KnownTruthTask:
    """Draw a source, a target and a negative-control source from one seed.

    Args:
        condition_dim (`int`, defaults to 16): width of z.
        embedding_dim (`int`, defaults to 2): width of h*(z); must be at most `condition_dim // 2`, so
            that an embedding orthogonal to h* exists for the negative control.
        data_dim (`int`, defaults to 2): width of x.
        noise_scale (`float`, defaults to 0.3): rough standard deviation of x | z per coordinate.
        embedding_scale (`float`, defaults to 1.5): standard deviation of each coordinate of W z before the
            tanh; larger values push h* towards +-1.
        seed (`int`, defaults to 0): seed of every drawn parameter.

    Example:
        >>> from hf_transfer.data.known_truth import make_known_truth_task
        >>> task = make_known_truth_task(seed=0)
        >>> x, z = task.target.sample_pairs(4)
        >>> task.target.log_prob(x, z).shape
        torch.Size([4])
    """
    for name, value in (("condition_dim", condition_dim), ("embedding_dim", embedding_dim), ("data_dim", data_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if 2 * embedding_dim > condition_dim:
        raise ValueError(
            f"`embedding_dim` ({embedding_dim}) must be at most half of `condition_dim` ({condition_dim}) so the "
            "negative control can use an embedding orthogonal to the true one; raise `condition_dim`."
        )
    if not noise_scale > 0 or not embedding_scale > 0:
        raise ValueError(f"`noise_scale` and `embedding_scale` must be positive, got {noise_scale} and {embedding_scale}.")

    generator = torch.Generator().manual_seed(seed)
    # Orthonormal rows: the first embedding_dim span h*, the next embedding_dim span the unrelated embedding.
    basis, _ = torch.linalg.qr(torch.randn(condition_dim, 2 * embedding_dim, generator=generator))
    scale = embedding_scale
    shared_weight = scale * basis[:, :embedding_dim].T.contiguous()
    unrelated_weight = scale * basis[:, embedding_dim:].T.contiguous()

    source_map = _random_mean_map(data_dim, embedding_dim, generator)
    source_tril = _random_scale_tril(data_dim, noise_scale, generator)
    target_map = _random_mean_map(data_dim, embedding_dim, generator)
    target_tril = _random_scale_tril(data_dim, noise_scale, generator)
    return KnownTruthTask(
        source=GaussianTask(shared_weight, *source_map, source_tril),
        target=GaussianTask(shared_weight, *target_map, target_tril),
        unrelated_source=GaussianTask(unrelated_weight, *source_map, source_tril),
    )


class KnownTruthDataset(Dataset):
    """Pairs `(x, z)` as a torch data set whose items are `{"x": x_i, "condition": z_i}`.

    Args:
        x (`torch.Tensor` of shape `(num_samples, data_dim)`): the data.
        condition (`torch.Tensor` of shape `(num_samples, condition_dim)`): the conditions.
    """

    def __init__(self, x: torch.Tensor, condition: torch.Tensor):
        if x.ndim != 2 or condition.ndim != 2 or x.shape[0] != condition.shape[0]:
            raise ValueError(
                f"`x` and `condition` must be 2-D with one row per pair, got shapes {tuple(x.shape)} and "
                f"{tuple(condition.shape)}."
            )
        check_finite("x", x)
        check_finite("condition", condition)
        self.x = x.float()
        self.condition = condition.float()

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, index: int) -> dict:
        return {"x": self.x[index], "condition": self.condition[index]}


class TrueEmbedding(SharedEmbedding):
    """The true shared embedding h*(z) = tanh(W z) as a fixed module with no trainable parameters (the oracle arm).

    Args:
        embedding_weight (`list[list[float]]`): W as nested lists of shape `(embedding_dim, condition_dim)`,
            so it goes into `config.json`.
        embedding_dim (`int`): width of h*(z); must equal `len(embedding_weight)`.

    Example:
        >>> import torch
        >>> from hf_transfer.data.known_truth import TrueEmbedding, make_known_truth_task
        >>> task = make_known_truth_task(seed=0)
        >>> oracle = TrueEmbedding.from_task(task.target)
        >>> z = torch.randn(3, 16)
        >>> torch.allclose(oracle(z), task.target.embed(z))
        True
    """

    @register_to_config
    def __init__(self, embedding_weight: list[list[float]], embedding_dim: int):
        super().__init__()
        tensor = torch.tensor(embedding_weight, dtype=torch.float32)
        if tensor.ndim != 2 or tensor.shape[0] != embedding_dim:
            raise ValueError(
                f"`embedding_weight` must have shape (embedding_dim={embedding_dim}, condition_dim), got {tuple(tensor.shape)}."
            )
        self.register_buffer("matrix", tensor)

    @classmethod
    def from_task(cls, task: GaussianTask) -> "TrueEmbedding":
        """Build the oracle embedding of a `GaussianTask`."""
        return cls(embedding_weight=task.embedding_weight.tolist(), embedding_dim=task.embedding_dim)

    def validate_condition(self, condition) -> torch.Tensor:
        if not torch.is_tensor(condition):
            condition = torch.as_tensor(condition, dtype=torch.float32)
        condition_dim = self.matrix.shape[1]
        if condition.ndim != 2 or condition.shape[1] != condition_dim:
            raise ValueError(
                f"Condition vectors must have shape (batch_size, {condition_dim}), got shape {tuple(condition.shape)}."
            )
        return condition.to(device=self.matrix.device, dtype=self.matrix.dtype)

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        return torch.tanh(condition @ self.matrix.T)
