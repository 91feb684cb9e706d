import json
import warnings

import pytest
import torch
from conftest import make_tiny_unet

from hf_transfer import (
    HfTransferWarning,
    SharedEmbeddingUNet2DModel,
    TrainingConfig,
    TransferConfig,
    count_trainable_parameters,
    get_transfer_model,
    train,
)


def parameter_count(module):
    return sum(parameter.numel() for parameter in module.parameters())


@pytest.mark.parametrize(
    "config, embedding_trainable, generator_trainable",
    [
        (TransferConfig(strategy="frozen_embedding"), False, True),
        (TransferConfig(strategy="frozen_embedding", head_init="fresh"), False, True),
        (TransferConfig(strategy="full_finetune"), True, True),
        (TransferConfig(strategy="from_scratch"), True, True),
    ],
)
def test_trainable_parameter_counts_per_strategy(tiny_model, config, embedding_trainable, generator_trainable):
    target = get_transfer_model(tiny_model, config)
    trainable, total = count_trainable_parameters(target)
    expected = embedding_trainable * parameter_count(target.shared_embedding)
    expected += generator_trainable * parameter_count(target.generator)
    assert total == parameter_count(tiny_model)
    assert trainable == expected
    # The source is never modified.
    assert count_trainable_parameters(tiny_model) == (total, total)


def test_strategies_start_from_the_right_weights(tiny_model):
    source_table = tiny_model.shared_embedding.table.weight
    source_conv = tiny_model.generator.unet.conv_in.weight

    warm = get_transfer_model(tiny_model, TransferConfig(strategy="frozen_embedding"))
    assert torch.equal(warm.shared_embedding.table.weight, source_table)
    assert torch.equal(warm.generator.unet.conv_in.weight, source_conv)
    assert warm.shared_embedding.table.weight.data_ptr() != source_table.data_ptr()

    fresh = get_transfer_model(tiny_model, TransferConfig(strategy="frozen_embedding", head_init="fresh", seed=3))
    assert torch.equal(fresh.shared_embedding.table.weight, source_table)
    assert not torch.equal(fresh.generator.unet.conv_in.weight, source_conv)

    scratch = get_transfer_model(tiny_model, TransferConfig(strategy="from_scratch", seed=3))
    assert not torch.equal(scratch.shared_embedding.table.weight, source_table)
    assert not torch.equal(scratch.generator.unet.conv_in.weight, source_conv)

    again = get_transfer_model(tiny_model, TransferConfig(strategy="from_scratch", seed=3))
    assert torch.equal(again.generator.unet.conv_in.weight, scratch.generator.unet.conv_in.weight)


def test_frozen_parameters_unchanged_after_target_training(tiny_model, tiny_data):
    target = get_transfer_model(tiny_model, TransferConfig(strategy="frozen_embedding"))
    frozen_before = {name: tensor.clone() for name, tensor in target.shared_embedding.state_dict().items()}
    generator_before = target.generator.unet.conv_in.weight.clone()

    train(target, tiny_data, TrainingConfig(max_steps=5, batch_size=8, progress_bar=False))

    for name, tensor in target.shared_embedding.state_dict().items():
        assert torch.equal(tensor, frozen_before[name]), name
    assert not torch.equal(target.generator.unet.conv_in.weight, generator_before)


def test_target_generator_of_other_width_is_rejected(tiny_model):
    other = SharedEmbeddingUNet2DModel.from_unet(make_tiny_unet(), embedding_dim=6)
    with pytest.raises(ValueError, match="width 4 but the target generator expects 6"):
        get_transfer_model(tiny_model, TransferConfig(), generator=other)


def test_target_generator_of_same_width_is_used(tiny_model):
    other = SharedEmbeddingUNet2DModel.from_unet(make_tiny_unet(seed=5), embedding_dim=4)
    target = get_transfer_model(tiny_model, TransferConfig(), generator=other)
    assert torch.equal(target.generator.unet.conv_in.weight, other.unet.conv_in.weight)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"strategy": "freeze_all"}, "Unknown strategy 'freeze_all'"),
        ({"head_init": "cold"}, "Unknown head_init 'cold'"),
        ({"strategy": "full_finetune", "head_init": "fresh"}, "does not go with strategy 'full_finetune'"),
        ({"lora_rank": 0}, "lora_rank"),
    ],
)
def test_transfer_config_rejects_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TransferConfig(**values)


def test_transfer_config_json_round_trip(tmp_path):
    config = TransferConfig(strategy="frozen_embedding", head_init="fresh", seed=7)
    path = config.save_pretrained(tmp_path)
    assert json.loads(open(path).read())["format_version"] == 1
    assert TransferConfig.from_pretrained(tmp_path) == config


def test_transfer_config_drops_unknown_keys_with_warning(tmp_path):
    values = TransferConfig().to_dict()
    values["future_option"] = 1
    (tmp_path / "transfer_config.json").write_text(json.dumps(values))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = TransferConfig.from_pretrained(tmp_path)
    assert config == TransferConfig()
    assert any(issubclass(item.category, HfTransferWarning) and "future_option" in str(item.message) for item in caught)


def test_get_transfer_model_rejects_models_without_parts():
    with pytest.raises(TypeError, match="no `shared_embedding` module"):
        get_transfer_model(torch.nn.Linear(2, 2), TransferConfig())
