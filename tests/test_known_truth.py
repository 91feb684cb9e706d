"""Known-truth Gaussian tasks, exact-truth metrics, the vector diffusion model and the CI-sized benchmark."""

import csv
import math

import pytest
import torch
from diffusers import DDPMScheduler

from hf_transfer import MLPEmbedding, TransferConfig, get_transfer_model
from hf_transfer.cli import main
from hf_transfer.data.known_truth import KnownTruthDataset, TrueEmbedding, make_known_truth_task
from hf_transfer.diffusion.vector import (
    ConditionalVectorDiffusionModel,
    VectorNoisePredictor,
    VectorNoisePredictorOutput,
)
from hf_transfer.evaluation.kl import ContinuousSchedule, diffusion_kl, estimate_kl, monte_carlo_kl, score_error


@pytest.fixture(scope="module")
def task():
    return make_known_truth_task(seed=3)


class ExactNoisePredictor(VectorNoisePredictor):
    """The noise prediction of the exact score of a Gaussian task, given h = h*(z) as the embedding."""

    def attach(self, gaussian_task, schedule: ContinuousSchedule):
        self.gaussian_task = gaussian_task
        self.schedule = schedule
        return self

    def forward(self, sample, timestep, embedding, return_dict=True):
        timestep = torch.as_tensor(timestep, dtype=torch.float64).expand(sample.shape[0])
        alpha_bar = torch.empty(sample.shape[0], dtype=sample.dtype)
        for value in timestep.unique():
            time = (value.item() + 1) / self.schedule.num_train_timesteps
            alpha_bar[timestep == value] = self.schedule.alpha_bar(time)
        mean = alpha_bar.sqrt().unsqueeze(1) * self.gaussian_task.mean(embedding)
        identity = torch.eye(sample.shape[1])
        covariance = alpha_bar.reshape(-1, 1, 1) * self.gaussian_task.covariance + (1 - alpha_bar).reshape(-1, 1, 1) * identity
        noise = (1 - alpha_bar).sqrt().unsqueeze(1) * torch.linalg.solve(covariance, (sample - mean).unsqueeze(-1)).squeeze(-1)
        return VectorNoisePredictorOutput(sample=noise)


def _exact_diffusion_model(gaussian_task):
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    generator = ExactNoisePredictor(data_dim=gaussian_task.data_dim, embedding_dim=gaussian_task.embedding_dim)
    generator.attach(gaussian_task, ContinuousSchedule(scheduler))
    return ConditionalVectorDiffusionModel(TrueEmbedding.from_task(gaussian_task), generator, scheduler)


# Gaussian tasks


def test_task_log_prob_matches_gaussian(task):
    x, condition = task.target.sample_pairs(64, torch.Generator().manual_seed(0))
    mean = task.target.mean(task.target.embed(condition))
    expected = torch.distributions.MultivariateNormal(mean, scale_tril=task.target.scale_tril).log_prob(x)
    torch.testing.assert_close(task.target.log_prob(x, condition), expected)


def test_task_score_is_gradient_of_noised_log_prob(task):
    x, condition = task.source.sample_pairs(16, torch.Generator().manual_seed(1))
    alpha_bar = torch.linspace(0.05, 0.99, 16)
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(task.source.log_prob(x, condition, alpha_bar).sum(), x)
    torch.testing.assert_close(task.source.score(x.detach(), condition, alpha_bar), gradient)


def test_task_sample_moments_match_truth(task):
    generator = torch.Generator().manual_seed(2)
    condition = task.target.sample_conditions(1, generator).expand(20000, -1)
    x = task.target.sample(condition, generator)
    torch.testing.assert_close(x.mean(0), task.target.mean(task.target.embed(condition[:1]))[0], atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), task.target.covariance, atol=0.01, rtol=0)


def test_task_embeddings_shared_and_unrelated(task):
    assert torch.equal(task.source.embedding_weight, task.target.embedding_weight)
    overlap = task.unrelated_source.embedding_weight @ task.target.embedding_weight.T
    assert overlap.abs().max() < 1e-5
    assert not torch.equal(task.source.mean_linear, task.target.mean_linear)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"embedding_dim": 9}, "half of `condition_dim`"), ({"data_dim": 0}, "data_dim"), ({"noise_scale": 0.0}, "positive")],
)
def test_make_task_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_known_truth_task(**kwargs)


def test_true_embedding_round_trip(task, tmp_path):
    oracle = TrueEmbedding.from_task(task.target)
    assert list(oracle.parameters()) == []
    oracle.save_pretrained(tmp_path)
    loaded = TrueEmbedding.from_pretrained(tmp_path)
    condition = torch.randn(5, task.target.condition_dim)
    torch.testing.assert_close(loaded(condition), task.target.embed(condition))
    with pytest.raises(ValueError, match="shape"):
        oracle(torch.randn(5, 3))


def test_dataset_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="one row per pair"):
        KnownTruthDataset(torch.zeros(4, 2), torch.zeros(3, 16))


# Metrics


def test_monte_carlo_kl_matches_closed_form():
    generator = torch.Generator().manual_seed(0)
    p, q = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(0.5, 1.5)
    x = torch.randn(20000, generator=generator)
    estimate = monte_carlo_kl(p.log_prob(x), q.log_prob(x))
    exact = torch.distributions.kl_divergence(p, q).item()
    assert abs(estimate.value - exact) < 4 * estimate.standard_error
    assert estimate.standard_error < 0.01


def test_monte_carlo_kl_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal length"):
        monte_carlo_kl(torch.zeros(4), torch.zeros(5))


def test_estimate_kl_of_truth_is_zero(task):
    estimate = estimate_kl(task.target, task.target.log_prob, num_samples=1000)
    assert estimate.value == pytest.approx(0.0, abs=1e-5)


def test_estimate_kl_of_wrong_task_is_positive(task):
    estimate = estimate_kl(task.target, task.source.log_prob, num_samples=2000)
    assert estimate.value > 10 * estimate.standard_error


def test_probability_flow_recovers_exact_log_prob(task):
    model = _exact_diffusion_model(task.target)
    estimate = diffusion_kl(model, task.target, num_samples=100, num_steps=20)
    assert abs(estimate.value) < 0.01
    assert abs(estimate.value) < 4 * estimate.standard_error + 0.002


def test_score_error_of_exact_and_zero_predictor(task):
    model = _exact_diffusion_model(task.target)
    assert score_error(model, task.target, num_samples=2000).value < 1e-6

    zero = ConditionalVectorDiffusionModel(TrueEmbedding.from_task(task.target), VectorNoisePredictor(data_dim=2, embedding_dim=2))
    torch.nn.init.zeros_(zero.generator.mlp[-1].weight)
    torch.nn.init.zeros_(zero.generator.mlp[-1].bias)
    assert score_error(zero, task.target, num_samples=2000).value > 0.1


# Vector diffusion model


def test_vector_diffusion_trains_and_transfers(task):
    torch.manual_seed(0)
    model = ConditionalVectorDiffusionModel(MLPEmbedding(input_dim=16, embedding_dim=2, hidden_dims=(16,)), VectorNoisePredictor(data_dim=2, embedding_dim=2, hidden_dims=(16,)))
    x, condition = task.source.sample_pairs(8)
    loss = model(x, condition)
    loss.backward()
    assert torch.isfinite(loss)
    assert model.shared_embedding.mlp[0].weight.grad is not None

    target = get_transfer_model(model, TransferConfig(strategy="frozen_embedding", head_init="fresh", seed=0))
    assert not any(parameter.requires_grad for parameter in target.shared_embedding.parameters())
    assert all(parameter.requires_grad for parameter in target.generator.parameters())


def test_vector_noise_predictor_rejects_bad_shapes():
    generator = VectorNoisePredictor(data_dim=2, embedding_dim=3, hidden_dims=(8,))
    with pytest.raises(ValueError, match="sample"):
        generator(torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="embedding"):
        generator(torch.zeros(4, 2), torch.zeros(4), torch.zeros(4, 2))


def test_vector_diffusion_rejects_mismatched_width():
    with pytest.raises(ValueError, match="embedding_dim=2"):
        ConditionalVectorDiffusionModel(MLPEmbedding(input_dim=16, embedding_dim=2), VectorNoisePredictor(data_dim=2, embedding_dim=3))


# CI-sized benchmark through the command line


def _read_runs(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_quick_benchmark_orders_arms(tmp_path):
    assert main(["benchmark", "--output-dir", str(tmp_path), "--quick"]) == 0

    for name in ("flow_known_truth_runs.csv", "flow_known_truth_summary.csv", "flow_known_truth_kl.png", "flow_known_truth_settings.json"):
        assert (tmp_path / name).stat().st_size > 0
    runs = {(row["arm"], int(row["target_size"])): row for row in _read_runs(tmp_path / "flow_known_truth_runs.csv")}
    sizes = sorted({size for _, size in runs})
    assert len(sizes) == 2

    def kl(arm, size):
        return float(runs[(arm, size)]["kl"]), float(runs[(arm, size)]["kl_standard_error"])

    small = sizes[0]
    frozen, frozen_error = kl("frozen_embedding_fresh", small)
    scratch, scratch_error = kl("from_scratch", small)
    assert frozen + 2 * math.hypot(frozen_error, scratch_error) < scratch

    for size in sizes:
        control, control_error = kl("negative_control", size)
        scratch, scratch_error = kl("from_scratch", size)
        assert control > scratch - 2 * math.hypot(control_error, scratch_error)
