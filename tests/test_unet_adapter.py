import pytest
import torch
from diffusers import UNet2DModel

from hf_transfer import ConditionalDiffusionModel, ClassLabelEmbedding, SharedEmbeddingUNet2DModel


def test_zero_init_identity_on_reloaded_unet(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "unet")
    pretrained = UNet2DModel.from_pretrained(tmp_path / "unet")
    adapter = SharedEmbeddingUNet2DModel.from_unet(pretrained, embedding_dim=4)

    sample = torch.randn(3, 1, 8, 8)
    timestep = torch.tensor([1, 50, 99])
    embedding = torch.randn(3, 4)
    expected = pretrained(sample, timestep).sample
    assert torch.equal(adapter(sample, timestep, embedding).sample, expected)

    adapter.save_pretrained(tmp_path / "adapter")
    reloaded = SharedEmbeddingUNet2DModel.from_pretrained(tmp_path / "adapter")
    assert torch.equal(reloaded(sample, timestep, embedding).sample, expected)


def test_projection_gets_gradients_and_changes_output(tiny_unet):
    adapter = SharedEmbeddingUNet2DModel.from_unet(tiny_unet, embedding_dim=4)
    sample, timestep = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    adapter(sample, timestep, torch.randn(2, 4)).sample.square().mean().backward()
    assert adapter.condition_projection.linear_2.weight.grad.abs().sum() > 0

    with torch.no_grad():
        adapter.condition_projection.linear_2.weight.normal_()
    first = adapter(sample, timestep, torch.zeros(2, 4)).sample
    second = adapter(sample, timestep, torch.ones(2, 4)).sample
    assert not torch.allclose(first, second)


def test_adapter_rejects_image_size_it_cannot_take(tiny_unet):
    adapter = SharedEmbeddingUNet2DModel.from_unet(tiny_unet, embedding_dim=4)
    with pytest.raises(ValueError, match="Image size 7x8 is not divisible by 2"):
        adapter(torch.randn(1, 1, 7, 8), 1, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="shape \\(batch_size, 1, height, width\\)"):
        adapter(torch.randn(1, 3, 8, 8), 1, torch.zeros(1, 4))


def test_adapter_rejects_wrong_embedding_shape(tiny_unet):
    adapter = SharedEmbeddingUNet2DModel.from_unet(tiny_unet, embedding_dim=4)
    with pytest.raises(ValueError, match="must have shape \\(2, 4\\)"):
        adapter(torch.randn(2, 1, 8, 8), 1, torch.zeros(2, 5))


def test_adapter_rejects_class_conditional_unet():
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=4, num_class_embeds=10,
    )
    with pytest.raises(ValueError, match="num_class_embeds=10"):
        SharedEmbeddingUNet2DModel.from_unet(unet, embedding_dim=4)


def test_model_rejects_embedding_width_mismatch(tiny_unet):
    adapter = SharedEmbeddingUNet2DModel.from_unet(tiny_unet, embedding_dim=4)
    with pytest.raises(ValueError, match="width 6 but the UNet expects 4"):
        ConditionalDiffusionModel(ClassLabelEmbedding(num_classes=3, embedding_dim=6), adapter)


def test_model_rejects_condition_count_mismatch(tiny_model):
    with pytest.raises(ValueError, match="Got 3 conditions for 2 images"):
        tiny_model(torch.randn(2, 1, 8, 8), torch.tensor([0, 1, 2]))
