"""Validation-based early stopping in the shared training loop."""

import pytest
import torch
from torch import nn

from hf_transfer import TrainingConfig, train
from hf_transfer.data.known_truth import KnownTruthDataset


class NoisyRegression(nn.Module):
    """A linear model whose loss is the mean squared error to `x`; trainable and easy to overfit."""

    def __init__(self, condition_dim: int, data_dim: int):
        super().__init__()
        self.linear = nn.Linear(condition_dim, data_dim)

    def forward(self, x, condition):
        return ((self.linear(condition) - x) ** 2).mean()


def _split(num_train: int, num_eval: int, condition_dim: int = 30, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    condition = torch.randn(num_train + num_eval, condition_dim, generator=generator)
    # Pure noise targets: every step of fitting the training points is overfitting.
    x = torch.randn(num_train + num_eval, 1, generator=generator)
    train_set = KnownTruthDataset(x[:num_train], condition[:num_train])
    eval_set = KnownTruthDataset(x[num_train:], condition[num_train:])
    return train_set, eval_set


def test_early_stopping_stops_and_restores_best():
    train_set, eval_set = _split(num_train=20, num_eval=4)
    model = NoisyRegression(30, 1)
    config = TrainingConfig(
        max_steps=2000, batch_size=20, learning_rate=0.05, lr_warmup_steps=0, ema_decay=None,
        eval_steps=10, early_stopping_patience=5, progress_bar=False,
    )
    result = train(model, train_set, config, eval_dataset=eval_set)

    assert result.global_step < config.max_steps
    assert len(result.eval_losses) == result.global_step // config.eval_steps
    assert result.best_step == config.eval_steps * (1 + result.eval_losses.index(min(result.eval_losses)))
    with torch.no_grad():
        restored = model(eval_set.x, eval_set.condition).item()
    assert restored == pytest.approx(min(result.eval_losses), rel=1e-5)


def test_eval_dataset_with_ema_returns_best_ema_weights():
    train_set, eval_set = _split(num_train=20, num_eval=3, seed=1)
    model = NoisyRegression(30, 1)
    config = TrainingConfig(max_steps=200, batch_size=8, learning_rate=0.05, eval_steps=25, ema_decay=0.9, progress_bar=False)
    result = train(model, train_set, config, eval_dataset=eval_set)

    assert result.global_step == config.max_steps
    assert len(result.eval_losses) == config.max_steps // config.eval_steps
    with torch.no_grad():
        restored = model(eval_set.x, eval_set.condition).item()
    assert restored == pytest.approx(min(result.eval_losses), rel=1e-5)


def test_without_eval_dataset_keeps_last_weights():
    train_set, _ = _split(num_train=16, num_eval=0)
    model = NoisyRegression(30, 1)
    result = train(model, train_set, TrainingConfig(max_steps=30, batch_size=16, ema_decay=None, progress_bar=False))
    assert result.global_step == 30
    assert result.eval_losses == []
    assert result.best_step is None


def test_patience_without_eval_dataset_raises():
    train_set, _ = _split(num_train=8, num_eval=0)
    config = TrainingConfig(max_steps=5, early_stopping_patience=2, progress_bar=False)
    with pytest.raises(ValueError, match="eval_dataset"):
        train(NoisyRegression(30, 1), train_set, config)


@pytest.mark.parametrize("field, value", [("eval_steps", 0), ("early_stopping_patience", 0)])
def test_invalid_early_stopping_config(field, value):
    with pytest.raises(ValueError, match=field):
        TrainingConfig(**{field: value})
