"""The `lora` strategy: peft adapters on the generator, frozen embedding, merging and pipeline saving."""

import pytest
import torch
from conftest import make_tiny_diffusion_model
from peft.tuners.lora import LoraLayer
from torch import nn

from hf_transfer import TransferConfig, TransferDiffusionPipeline, count_trainable_parameters, get_transfer_model
from hf_transfer.training import TrainingConfig, train
from hf_transfer.transfer.lora import add_lora_adapters, find_lora_target_names, has_lora_adapters, merge_lora_adapters


def _inputs(model):
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 1, 8, 8, generator=generator)
    timestep = torch.tensor([5, 40, 90])
    embedding = model.shared_embedding(torch.tensor([0, 1, 2]))
    return sample, timestep, embedding


def _perturb_adapters(model, scale=0.05, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))


def test_lora_trains_only_adapters():
    source = make_tiny_diffusion_model()
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    adapter_parameters = {
        f"{module_name}.{name}"
        for module_name, module in model.named_modules()
        if isinstance(module, LoraLayer)
        for name, _ in list(module.lora_A.named_parameters(prefix="lora_A")) + list(module.lora_B.named_parameters(prefix="lora_B"))
    }
    layer_count = sum(isinstance(module, (nn.Linear, nn.Conv2d)) for module in source.generator.modules())
    assert trainable == adapter_parameters
    assert sum(isinstance(module, LoraLayer) for module in model.modules()) == layer_count
    assert not any(parameter.requires_grad for parameter in model.shared_embedding.parameters())
    assert not has_lora_adapters(source)


def test_lora_starts_as_source_model():
    source = make_tiny_diffusion_model()
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    sample, timestep, embedding = _inputs(source)
    with torch.no_grad():
        assert torch.equal(model.generator(sample, timestep, embedding).sample, source.generator(sample, timestep, embedding).sample)


def test_lora_trainable_fraction_grows_with_rank():
    source = make_tiny_diffusion_model()
    fractions = []
    for rank in (1, 4):
        trainable, total = count_trainable_parameters(get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=rank)))
        fractions.append(trainable / total)
    assert 0 < fractions[0] < fractions[1] < 1


def test_lora_training_leaves_base_unchanged(tiny_data):
    source = make_tiny_diffusion_model()
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, lora_alpha=2, seed=0))
    frozen_before = {name: parameter.clone() for name, parameter in model.named_parameters() if not parameter.requires_grad}
    adapters_before = {name: parameter.clone() for name, parameter in model.named_parameters() if parameter.requires_grad}
    result = train(model, tiny_data, TrainingConfig(max_steps=5, batch_size=8, learning_rate=1e-2, ema_decay=None, progress_bar=False))
    frozen_after = dict(model.named_parameters())
    assert result.global_step == 5
    assert all(torch.equal(frozen_after[name], value) for name, value in frozen_before.items())
    assert any(not torch.equal(frozen_after[name], value) for name, value in adapters_before.items())


def test_lora_target_modules_select_layers():
    source = make_tiny_diffusion_model()
    names = find_lora_target_names(source.generator, ["conv1", "unet.conv_out"])
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_target_modules=["conv1", "unet.conv_out"]))
    wrapped = [name for name, module in model.generator.named_modules() if isinstance(module, LoraLayer)]
    assert wrapped == names
    assert "unet.conv_out" in names
    assert all(name.endswith(("conv1", "conv_out")) for name in names)


def test_lora_unknown_target_module_raises():
    source = make_tiny_diffusion_model()
    with pytest.raises(ValueError, match="'proj_nothing' matches no plain nn.Linear or nn.Conv2d layer"):
        get_transfer_model(source, TransferConfig(strategy="lora", lora_target_modules=["proj_nothing"]))


def test_lora_twice_raises():
    model = get_transfer_model(make_tiny_diffusion_model(), TransferConfig(strategy="lora", lora_rank=2))
    with pytest.raises(ValueError, match="already has peft adapters"):
        add_lora_adapters(model.generator, TransferConfig(strategy="lora"))
    with pytest.raises(TypeError, match="TransferConfig"):
        add_lora_adapters(make_tiny_diffusion_model().generator, {"strategy": "lora"})


def test_lora_seed_fixes_adapters():
    source = make_tiny_diffusion_model()
    first = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=7))
    second = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=7))
    first_adapters = [parameter for parameter in first.parameters() if parameter.requires_grad]
    second_adapters = [parameter for parameter in second.parameters() if parameter.requires_grad]
    assert all(torch.equal(a, b) for a, b in zip(first_adapters, second_adapters))


def test_merge_keeps_outputs_and_plain_keys():
    source = make_tiny_diffusion_model()
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    _perturb_adapters(model)
    sample, timestep, embedding = _inputs(model)
    with torch.no_grad():
        adapted = model.generator(sample, timestep, embedding).sample
        merge_lora_adapters(model.generator)
        merged = model.generator(sample, timestep, embedding).sample
    assert not has_lora_adapters(model)
    assert set(model.generator.state_dict()) == set(source.generator.state_dict())
    assert not torch.equal(adapted, source.generator(sample, timestep, embedding).sample)
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)


def test_lora_pipeline_samples_and_saves(tmp_path):
    source = make_tiny_diffusion_model()
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    _perturb_adapters(model)
    model.eval()
    pipeline = model.to_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    condition = torch.tensor([0, 1, 2])
    adapted = pipeline(condition, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert adapted.shape == (3, 1, 8, 8)

    merge_lora_adapters(model.generator)
    model.to_pipeline().save_pretrained(tmp_path / "merged")
    reloaded = TransferDiffusionPipeline.from_pretrained(tmp_path / "merged", use_safetensors=True)
    reloaded.set_progress_bar_config(disable=True)
    images = reloaded(condition, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    torch.testing.assert_close(images, adapted, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("flow_type", ["spline_coupling", "masked_autoregressive"])
def test_lora_flow_keeps_exact_log_prob(flow_type):
    from normflows.nets.made import MaskedLinear

    from hf_transfer import MLPEmbedding
    from hf_transfer.flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec

    torch.manual_seed(0)
    spec = FlowSpec(data_dim=2, context_dim=2, num_layers=2, hidden_units=8, flow_type=flow_type)
    source = ConditionalFlowModel(MLPEmbedding(input_dim=3, embedding_dim=2, hidden_dims=(8,)), ConditionalFlowGenerator.from_spec(spec))
    model = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=2, seed=0))
    _perturb_adapters(model, scale=0.1)
    wrapped_masked = [module for module in model.modules() if isinstance(module, LoraLayer) and isinstance(module.get_base_layer(), MaskedLinear)]
    condition = torch.randn(6, 3)
    with torch.no_grad():
        sample, log_prob = model.sample(6, condition, return_log_prob=True)
        recomputed = model.log_prob(sample, condition)
    # An adapter beside a MaskedLinear would ignore its autoregressive mask, so none may wrap one.
    assert wrapped_masked == []
    assert has_lora_adapters(model)
    torch.testing.assert_close(recomputed, log_prob, rtol=1e-4, atol=1e-4)
