import pytest
import torch

from hf_transfer import TrainingConfig, train
from hf_transfer.training import steps_for_epochs


def test_loss_falls_on_tiny_run(tiny_model, tiny_data):
    result = train(tiny_model, tiny_data, TrainingConfig(max_steps=60, batch_size=16, learning_rate=3e-3, progress_bar=False))
    assert result.global_step == 60
    assert len(result.losses) == 60
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.7 * first


def test_training_is_reproducible(tiny_data):
    from conftest import make_tiny_diffusion_model

    weights = []
    for _ in range(2):
        model = make_tiny_diffusion_model()
        train(model, tiny_data, TrainingConfig(max_steps=4, batch_size=8, progress_bar=False))
        weights.append(model.generator.unet.conv_out.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_ema_weights_end_in_model(tiny_data):
    from conftest import make_tiny_diffusion_model

    with_ema, without_ema = make_tiny_diffusion_model(), make_tiny_diffusion_model()
    train(with_ema, tiny_data, TrainingConfig(max_steps=6, batch_size=8, ema_decay=0.9, progress_bar=False))
    train(without_ema, tiny_data, TrainingConfig(max_steps=6, batch_size=8, ema_decay=None, progress_bar=False))
    assert not torch.equal(with_ema.generator.unet.conv_out.weight, without_ema.generator.unet.conv_out.weight)


def test_training_rejects_model_without_trainable_parameters(tiny_model, tiny_data):
    tiny_model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        train(tiny_model, tiny_data, TrainingConfig(max_steps=1, progress_bar=False))


@pytest.mark.parametrize("values", [{"max_steps": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"ema_decay": 1.0}])
def test_training_config_rejects_bad_values(values):
    with pytest.raises(ValueError):
        TrainingConfig(**values)


def test_steps_for_epochs():
    assert steps_for_epochs(100, 64, epochs=10) == 16
    assert steps_for_epochs(100, 64, epochs=10, max_steps=5) == 5
    assert steps_for_epochs(10, 64, epochs=3, min_steps=20) == 20
