import pytest
import torch

from hf_transfer import ClassLabelEmbedding, MLPEmbedding


@pytest.mark.parametrize(
    "embedding, condition",
    [
        (ClassLabelEmbedding(num_classes=5, embedding_dim=6), torch.tensor([0, 4, 2])),
        (ClassLabelEmbedding(num_classes=5, embedding_dim=6, hidden_dim=12), torch.tensor([1, 3, 3])),
        (MLPEmbedding(input_dim=4, embedding_dim=6), torch.randn(3, 4)),
        (MLPEmbedding(input_dim=4, embedding_dim=6, output_activation="tanh"), torch.randn(3, 4)),
    ],
)
def test_embedding_shape_gradient_round_trip(embedding, condition, tmp_path):
    output = embedding(condition)
    assert output.shape == (3, 6)

    output.sum().backward()
    assert all(parameter.grad is not None for parameter in embedding.parameters())

    embedding.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    reloaded = type(embedding).from_pretrained(tmp_path)
    assert torch.equal(reloaded(condition), output.detach())


def test_tanh_output_is_bounded():
    embedding = MLPEmbedding(input_dim=2, embedding_dim=3, output_activation="tanh")
    output = embedding(100 * torch.randn(50, 2))
    assert output.abs().max() <= 1.0


@pytest.mark.parametrize(
    "condition, error, message",
    [
        (torch.tensor([0.0, 1.0]), TypeError, "integer tensor"),
        (torch.tensor([[0, 1]]), ValueError, "shape \\(batch_size,\\)"),
        (torch.tensor([0, 5]), ValueError, "Class label 5 is out of range"),
        (torch.tensor([-1]), ValueError, "Class label -1 is out of range"),
    ],
)
def test_label_embedding_rejects_bad_condition(condition, error, message):
    embedding = ClassLabelEmbedding(num_classes=5, embedding_dim=2)
    with pytest.raises(error, match=message):
        embedding(condition)


@pytest.mark.parametrize(
    "condition, error, message",
    [
        (torch.ones(3, 4, dtype=torch.long), TypeError, "floating-point"),
        (torch.randn(3, 5), ValueError, "shape \\(batch_size, 4\\)"),
        (torch.randn(4), ValueError, "shape \\(batch_size, 4\\)"),
        (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), ValueError, "NaN or infinite"),
    ],
)
def test_vector_embedding_rejects_bad_condition(condition, error, message):
    embedding = MLPEmbedding(input_dim=4, embedding_dim=2)
    with pytest.raises(error, match=message):
        embedding(condition)


def test_embedding_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        ClassLabelEmbedding(num_classes=0)
    with pytest.raises(ValueError, match="Unknown `activation` 'swish'"):
        MLPEmbedding(input_dim=2, activation="swish")
