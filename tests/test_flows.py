"""Flow model tests: every flow type at tiny size, exact densities, bad input, save/load and transfer."""

import json
import math

import huggingface_hub
import normflows as nf
import pytest
import torch
from hub_cache import fill_hub_cache

from hf_transfer import ClassLabelEmbedding, MLPEmbedding, TrainingConfig, TransferConfig, get_transfer_model, train
from hf_transfer.flows import (
    FLOW_TYPES,
    ConditionalFlowGenerator,
    ConditionalFlowModel,
    FlowSpec,
    InverseFlow,
    check_context_layers,
)
from hf_transfer.flows.layers import parameter_networks

DATA_DIM, CONTEXT_DIM, NUM_CLASSES = 4, 3, 3


def make_model(flow_type: str = "spline_coupling", seed: int = 0, **spec_fields) -> ConditionalFlowModel:
    torch.manual_seed(seed)
    spec = FlowSpec(data_dim=DATA_DIM, context_dim=CONTEXT_DIM, flow_type=flow_type, num_layers=2, hidden_units=8, **spec_fields)
    embedding = ClassLabelEmbedding(num_classes=NUM_CLASSES, embedding_dim=CONTEXT_DIM)
    return ConditionalFlowModel(embedding, ConditionalFlowGenerator.from_spec(spec))


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Move every weight off its identity initialisation, so that tests see a non-trivial flow."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


def tiny_data(count: int = 24, seed: int = 0) -> list[dict]:
    """Class c shifts every coordinate by 2c, so that the condition matters."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % NUM_CLASSES
    x = torch.randn(count, DATA_DIM, generator=generator) + 2.0 * labels[:, None]
    return [{"x": x[index], "condition": labels[index]} for index in range(count)]


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


# ---- FlowSpec ----


def test_spec_json_round_trip():
    spec = FlowSpec(data_dim=5, context_dim=2, flow_type="masked_autoregressive", mixing="lu", dropout=0.1)
    restored = FlowSpec.from_json(spec.to_json())
    assert restored == spec
    assert json.loads(spec.to_json())["format_version"] == 1


@pytest.mark.parametrize("flow_type", ["planar", "radial", "real_nvp", "glow"])
def test_spec_rejects_context_blind_types(flow_type):
    with pytest.raises(ValueError, match="ignore their context"):
        FlowSpec(data_dim=4, context_dim=2, flow_type=flow_type)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"flow_type": "spline"}, "Unknown flow_type"),
        ({"data_dim": 0}, "data_dim"),
        ({"context_dim": 2.5}, "context_dim"),
        ({"data_dim": 1}, "data_dim >= 2"),
        ({"num_bins": 1}, "num_bins"),
        ({"tail_bound": 0.0}, "tail_bound"),
        ({"mixing": "shuffle"}, "mixing"),
        ({"base_distribution": "uniform"}, "base_distribution"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_spec_rejects_invalid_values(fields, message):
    values = {"data_dim": 4, "context_dim": 2, **fields}
    with pytest.raises(ValueError, match=message):
        FlowSpec(**values)


def test_spec_from_newer_version_warns():
    values = FlowSpec(data_dim=3, context_dim=2).to_dict()
    values["format_version"] = 99
    values["future_option"] = True
    with pytest.warns(UserWarning, match="future_option"):
        spec = FlowSpec.from_dict(values)
    assert spec.data_dim == 3


def test_generator_config_matches_spec_fields():
    spec = FlowSpec(data_dim=3, context_dim=2, num_layers=1, hidden_units=4)
    generator = ConditionalFlowGenerator.from_spec(spec)
    assert generator.spec == spec
    assert generator.config.context_dim == 2


# ---- every flow type: shapes, gradients, inversion ----


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
@pytest.mark.parametrize("mixing", ["permute", "lu"])
def test_flow_type_shapes_gradients_inversion(flow_type, mixing):
    model = make_model(flow_type, mixing=mixing, base_distribution="conditional_diag_gaussian")
    randomize(model)
    x = torch.randn(6, DATA_DIM)
    condition = torch.tensor([0, 1, 2, 0, 1, 2])

    log_prob = model.log_prob(x, condition)
    assert log_prob.shape == (6,)
    (-log_prob.mean()).backward()
    assert model.shared_embedding.table.weight.grad.abs().sum() > 0
    assert all(parameter.grad is not None for parameter in model.generator.parameters() if parameter.requires_grad)

    flow = model.generator.flow
    context = model.shared_embedding(condition).detach()
    with torch.no_grad():
        z = flow.inverse(x, context=context)
        assert torch.allclose(flow.forward(z, context=context), x, atol=1e-4)
        samples, sample_log_prob = model.sample(6, condition, return_log_prob=True)
        assert samples.shape == (6, DATA_DIM)
        assert torch.allclose(model.log_prob(samples, condition), sample_log_prob, atol=1e-3)


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
def test_log_prob_is_one_network_pass_per_layer(flow_type):
    model = make_model(flow_type, mixing="none")
    calls = []
    for network in parameter_networks(model.generator.flow):
        network.register_forward_hook(lambda *args: calls.append(1))
    model.log_prob(torch.randn(5, DATA_DIM), torch.tensor([0, 1, 2, 0, 1]))
    assert len(calls) == model.generator.config.num_layers


def test_inverse_flow_swaps_directions_with_context():
    layer = nf.flows.MaskedAffineAutoregressive(DATA_DIM, 8, context_features=CONTEXT_DIM)
    randomize(layer)
    inverted = InverseFlow(layer)
    x, context = torch.randn(3, DATA_DIM), torch.randn(3, CONTEXT_DIM)
    with torch.no_grad():
        expected, expected_log_det = layer(x, context=context)
        output, log_det = inverted.inverse(x, context=context)
    assert torch.equal(output, expected)
    assert torch.equal(log_det, expected_log_det)


# ---- closed-form densities ----


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
def test_identity_layers_give_base_density(flow_type):
    model = make_model(flow_type, mixing="lu")
    x = 2.0 * torch.randn(7, DATA_DIM)
    log_prob = model.log_prob(x, torch.tensor([0, 1, 2, 0, 1, 2, 0]))
    assert torch.allclose(log_prob, standard_normal_log_prob(x), atol=1e-4)


def test_conditional_gaussian_base_matches_closed_form():
    # No permutation between the identity layers: the base density is not symmetric under one.
    model = make_model("spline_coupling", mixing="none", base_distribution="conditional_diag_gaussian")
    encoder = model.generator.flow.q0.context_encoder
    randomize(encoder, seed=3)
    randomize(model.shared_embedding, seed=4)
    x = torch.randn(5, DATA_DIM)
    condition = torch.tensor([2, 0, 1, 1, 2])
    with torch.no_grad():
        mean, log_scale = encoder(model.shared_embedding(condition)).chunk(2, dim=1)
        expected = torch.distributions.Normal(mean, log_scale.exp()).log_prob(x).sum(1)
        log_prob = model.log_prob(x, condition)
    assert torch.allclose(log_prob, expected, atol=1e-4)
    assert not torch.allclose(log_prob, model.log_prob(x, torch.tensor([0, 1, 2, 2, 0])))


def test_affine_layer_matches_change_of_variables():
    # A masked affine autoregressive layer with zero weights maps data to latent by z = s * x + b,
    # elementwise, with s = sigmoid(u + 2) + 1e-3 from normflows' parametrisation: p(x) = N(s * x + b) * prod(s).
    model = make_model("masked_autoregressive", mixing="none")
    model.generator.flow.flows = model.generator.flow.flows[:1]
    final_layer = model.generator.flow.flows[0].flow.autoregressive_net.final_layer
    u, b = torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([1.0, -2.0, 0.5, 0.0])
    with torch.no_grad():
        final_layer.bias[0::2] = u
        final_layer.bias[1::2] = b
    s = torch.sigmoid(u + 2.0) + 1e-3
    x = torch.randn(6, DATA_DIM)
    expected = standard_normal_log_prob(s * x + b) + torch.log(s).sum()
    assert torch.allclose(model.log_prob(x, torch.zeros(6, dtype=torch.long)), expected, atol=1e-4)


# ---- context-blind layers ----


def test_context_blind_layer_rejected():
    with pytest.raises(ValueError, match=r"layer 0 \(Planar\) ignores its context"):
        check_context_layers([nf.flows.Planar((DATA_DIM,))], CONTEXT_DIM)


def test_spline_without_context_rejected():
    layer = nf.flows.CoupledRationalQuadraticSpline(DATA_DIM, 1, 8)
    with pytest.raises(ValueError, match="num_context_channels=3"):
        check_context_layers([layer], CONTEXT_DIM)


def test_context_width_mismatch_rejected():
    layer = nf.flows.AutoregressiveRationalQuadraticSpline(DATA_DIM, 1, 8, num_context_channels=5)
    with pytest.raises(ValueError, match="width 5"):
        check_context_layers([layer], CONTEXT_DIM)


def test_mixing_layers_alone_rejected():
    with pytest.raises(ValueError, match="no layer that reads the context"):
        check_context_layers([nf.flows.Permute(DATA_DIM), nf.flows.LULinearPermute(DATA_DIM)], CONTEXT_DIM)


# ---- bad input ----


@pytest.mark.parametrize(
    "x, condition, error, message",
    [
        (torch.randn(3, DATA_DIM + 1), torch.tensor([0, 1, 2]), ValueError, r"shape \(batch_size, 4\)"),
        (torch.randn(DATA_DIM), torch.tensor([0]), ValueError, r"shape \(batch_size, 4\)"),
        (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), torch.tensor([0]), ValueError, "NaN or infinite"),
        (torch.tensor([[0.0, float("inf"), 0.0, 0.0]]), torch.tensor([0]), ValueError, "NaN or infinite"),
        (torch.zeros(3, DATA_DIM, dtype=torch.long), torch.tensor([0, 1, 2]), TypeError, "floating-point"),
        (torch.randn(3, DATA_DIM), torch.tensor([0, 1]), ValueError, "Got 2 conditions for 3 samples"),
    ],
)
def test_bad_input_raises(x, condition, error, message):
    model = make_model()
    with pytest.raises(error, match=message):
        model.log_prob(x, condition)
    with pytest.raises(error, match=message):
        model(x, condition)


def test_sample_condition_count_mismatch_raises():
    model = make_model()
    with pytest.raises(ValueError, match="Got 2 conditions for 3 samples"):
        model.sample(3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0, torch.tensor([0]))


def test_generator_context_errors():
    generator = make_model().generator
    x = torch.randn(2, DATA_DIM)
    with pytest.raises(ValueError, match=r"shape \(batch_size, 3\)"):
        generator.log_prob(x, torch.randn(2, CONTEXT_DIM + 1))
    with pytest.raises(ValueError, match="NaN or infinite"):
        generator.log_prob(x, torch.full((2, CONTEXT_DIM), float("nan")))
    with pytest.raises(TypeError, match="floating-point"):
        generator.log_prob(x, [[0.0] * CONTEXT_DIM] * 2)


def test_mismatched_widths_raise():
    embedding = ClassLabelEmbedding(num_classes=2, embedding_dim=5)
    generator = ConditionalFlowGenerator.from_spec(FlowSpec(data_dim=2, context_dim=3, num_layers=1))
    with pytest.raises(ValueError, match="context_dim=5"):
        ConditionalFlowModel(embedding, generator)


# ---- condition broadcasting ----


def test_one_condition_broadcasts_to_all_samples():
    model = make_model(base_distribution="conditional_diag_gaussian")
    randomize(model)
    torch.manual_seed(7)
    broadcast = model.sample(5, torch.tensor([2]))
    torch.manual_seed(7)
    repeated = model.sample(5, torch.tensor([2] * 5))
    assert torch.equal(broadcast, repeated)
    x = torch.randn(5, DATA_DIM)
    assert torch.equal(model.log_prob(x, torch.tensor([1])), model.log_prob(x, torch.tensor([1] * 5)))


def test_one_condition_per_sample():
    model = make_model(base_distribution="conditional_diag_gaussian")
    randomize(model)
    condition = torch.tensor([0, 1, 2])
    samples, log_prob = model.sample(3, condition, return_log_prob=True)
    assert torch.allclose(model.log_prob(samples, condition), log_prob, atol=1e-4)
    # Each sample's density depends on its own condition.
    other = model.log_prob(samples, torch.tensor([1, 2, 0]))
    assert not torch.allclose(other, log_prob)


def test_vector_conditions():
    torch.manual_seed(0)
    embedding = MLPEmbedding(input_dim=2, embedding_dim=CONTEXT_DIM, hidden_dims=(8,))
    generator = ConditionalFlowGenerator.from_spec(FlowSpec(data_dim=DATA_DIM, context_dim=CONTEXT_DIM, num_layers=1, hidden_units=8))
    model = ConditionalFlowModel(embedding, generator)
    assert model.sample(4, torch.randn(1, 2)).shape == (4, DATA_DIM)
    assert model.log_prob(torch.randn(4, DATA_DIM), torch.randn(4, 2)).shape == (4,)


# ---- save and load ----


@pytest.mark.parametrize("flow_type", FLOW_TYPES)
def test_save_load_round_trip(tmp_path, flow_type):
    model = make_model(flow_type, mixing="lu", base_distribution="conditional_diag_gaussian")
    randomize(model)
    model.eval()
    model.save_pretrained(tmp_path / "flow")
    assert (tmp_path / "flow" / "generator" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "flow" / "shared_embedding" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = ConditionalFlowModel.from_pretrained(tmp_path / "flow")
    x, condition = torch.randn(8, DATA_DIM), torch.arange(8) % NUM_CLASSES
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x, condition), model.log_prob(x, condition))
    assert loaded.generator.spec == model.generator.spec


def test_round_trip_keeps_transfer_config(tmp_path):
    target = get_transfer_model(make_model(), TransferConfig(strategy="frozen_embedding", head_init="fresh", seed=3))
    target.save_pretrained(tmp_path)
    loaded = ConditionalFlowModel.from_pretrained(tmp_path)
    assert loaded.transfer_config == target.transfer_config


def test_load_by_hub_id_with_subfolder_and_revision(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = make_model("masked_autoregressive")
    randomize(model)
    model.save_pretrained(tmp_path / "tree" / "flows" / "digits")
    fill_hub_cache(cache, "org/tiny-flow", tmp_path / "tree", refs=("v1",))
    loaded = ConditionalFlowModel.from_pretrained("org/tiny-flow", revision="v1", subfolder="flows/digits")
    x, condition = torch.randn(4, DATA_DIM), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        assert torch.equal(loaded.log_prob(x, condition), model.log_prob(x, condition))


def test_load_missing_folder_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="flow_model.json"):
        ConditionalFlowModel.from_pretrained(tmp_path)


# ---- transfer strategies ----


def _train(model, steps: int = 6):
    config = TrainingConfig(max_steps=steps, batch_size=8, learning_rate=1e-2, ema_decay=None, progress_bar=False, lr_warmup_steps=0)
    return train(model, tiny_data(), config)


def test_training_lowers_nll():
    model = make_model()
    data = tiny_data()
    x = torch.stack([item["x"] for item in data])
    condition = torch.stack([item["condition"] for item in data])
    before = model(x, condition).item()
    _train(model, steps=30)
    assert model(x, condition).item() < before


@pytest.mark.parametrize("head_init", ["warm", "fresh"])
def test_frozen_embedding_is_bit_identical_after_target_training(head_init):
    source = make_model()
    _train(source)
    target = get_transfer_model(source, TransferConfig(strategy="frozen_embedding", head_init=head_init, seed=0))
    embedding_before = {name: tensor.clone() for name, tensor in target.shared_embedding.state_dict().items()}
    generator_before = {name: tensor.clone() for name, tensor in target.generator.state_dict().items()}
    _train(target)
    for name, tensor in target.shared_embedding.state_dict().items():
        assert torch.equal(tensor, embedding_before[name]), name
    assert any(not torch.equal(tensor, generator_before[name]) for name, tensor in target.generator.state_dict().items())
    warm = all(torch.equal(a, b) for a, b in zip(source.generator.state_dict().values(), generator_before.values()))
    assert warm == (head_init == "warm")


@pytest.mark.parametrize("strategy", ["full_finetune", "from_scratch"])
def test_other_strategies_train_the_embedding(strategy):
    source = make_model()
    _train(source)
    target = get_transfer_model(source, TransferConfig(strategy=strategy, seed=0))
    start = target.shared_embedding.table.weight.clone()
    assert torch.equal(start, source.shared_embedding.table.weight) == (strategy == "full_finetune")
    _train(target)
    assert not torch.equal(target.shared_embedding.table.weight, start)


def test_target_generator_of_other_width_rejected():
    other = ConditionalFlowGenerator.from_spec(FlowSpec(data_dim=DATA_DIM, context_dim=CONTEXT_DIM + 1, num_layers=1))
    with pytest.raises(ValueError, match="embedding width 3"):
        get_transfer_model(make_model(), TransferConfig(), generator=other)


def test_load_pickle_only_generator_raises(tmp_path):
    make_model().save_pretrained(tmp_path)
    weights = tmp_path / "generator" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(ValueError, match="pickle weights"):
        ConditionalFlowModel.from_pretrained(tmp_path)
