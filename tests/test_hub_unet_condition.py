"""SharedEmbeddingUNet2DConditionModel: h(z) as cross-attention tokens of a UNet2DConditionModel."""

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel

from hf_transfer import ClassLabelEmbedding, TransferDiffusionPipeline
from hf_transfer.diffusion.unet_condition import SharedEmbeddingUNet2DConditionModel


def make_condition_unet(**overrides) -> UNet2DConditionModel:
    torch.manual_seed(0)
    config = dict(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=12,
        attention_head_dim=2,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)


def test_tokens_reach_cross_attention():
    unet = make_condition_unet()
    model = SharedEmbeddingUNet2DConditionModel.from_unet(unet, embedding_dim=4, num_tokens=3)
    sample, timestep = torch.randn(2, 1, 8, 8), torch.tensor([4, 9])
    embedding = torch.randn(2, 4)
    tokens = model.token_projection(embedding)
    with torch.no_grad():
        actual = model(sample, timestep, embedding).sample
        expected = unet(sample, timestep, encoder_hidden_states=tokens).sample
        other = model(sample, timestep, torch.randn(2, 4)).sample
    assert tokens.shape == (2, 3, 12)
    assert torch.equal(actual, expected)
    assert not torch.equal(actual, other)


def test_zero_embedding_gives_zero_tokens():
    model = SharedEmbeddingUNet2DConditionModel.from_unet(make_condition_unet(), embedding_dim=4, num_tokens=2)
    assert torch.count_nonzero(model.token_projection(torch.zeros(3, 4))) == 0


def test_gradient_reaches_projection():
    model = SharedEmbeddingUNet2DConditionModel.from_unet(make_condition_unet(), embedding_dim=4)
    embedding = torch.randn(2, 4, requires_grad=True)
    model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), embedding).sample.square().mean().backward()
    assert model.token_projection.linear.weight.grad.abs().sum() > 0
    assert embedding.grad.abs().sum() > 0


def test_bad_inputs_raise():
    model = SharedEmbeddingUNet2DConditionModel.from_unet(make_condition_unet(), embedding_dim=4)
    with pytest.raises(ValueError, match=r"`embedding` must have shape \(2, 4\)"):
        model(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"`sample` must have shape \(batch_size, 1, height, width\)"):
        model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="addition_embed_type='text'"):
        SharedEmbeddingUNet2DConditionModel(dict(make_condition_unet().config, addition_embed_type="text"), embedding_dim=4)
    with pytest.raises(ValueError, match="one integer for all blocks"):
        SharedEmbeddingUNet2DConditionModel(dict(make_condition_unet().config, cross_attention_dim=[12, 12]), embedding_dim=4)
    with pytest.raises(TypeError, match="UNet2DConditionModel"):
        SharedEmbeddingUNet2DConditionModel.from_unet(torch.nn.Linear(2, 2), embedding_dim=4)


def test_pipeline_samples_saves_and_reloads(tmp_path):
    torch.manual_seed(1)
    unet = SharedEmbeddingUNet2DConditionModel.from_unet(make_condition_unet(), embedding_dim=4, num_tokens=2)
    pipeline = TransferDiffusionPipeline(unet, DDPMScheduler(num_train_timesteps=50), ClassLabelEmbedding(num_classes=3, embedding_dim=4))
    pipeline.set_progress_bar_config(disable=True)
    condition = torch.tensor([0, 1, 2])
    images = pipeline(condition, num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipeline.save_pretrained(tmp_path / "pipeline")
    reloaded = TransferDiffusionPipeline.from_pretrained(tmp_path / "pipeline", use_safetensors=True)
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(condition, num_inference_steps=2, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert isinstance(reloaded.unet, SharedEmbeddingUNet2DConditionModel)
    assert reloaded.unet.config.num_tokens == 2
    assert images.shape == (3, 1, 8, 8)
    assert torch.equal(images, again)


def test_conditional_model_trains_and_transfers(tiny_data):
    from hf_transfer import ConditionalDiffusionModel, TransferConfig, get_transfer_model
    from hf_transfer.training import TrainingConfig, train

    unet = SharedEmbeddingUNet2DConditionModel.from_unet(make_condition_unet(), embedding_dim=4)
    source = ConditionalDiffusionModel(ClassLabelEmbedding(num_classes=3, embedding_dim=4), unet, DDPMScheduler(num_train_timesteps=50))
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    projection_before = target.generator.token_projection.linear.base_layer.weight.clone()
    result = train(target, tiny_data, TrainingConfig(max_steps=3, batch_size=8, ema_decay=None, progress_bar=False))
    assert result.global_step == 3
    assert torch.equal(target.generator.token_projection.linear.base_layer.weight, projection_before)
    assert target.generator.token_projection.linear.lora_B["default"].weight.abs().sum() > 0
