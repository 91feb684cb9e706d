"""Target-only saves: size against the full model, bit-identical reload, and loading onto a wrong base."""

import json
import os

import huggingface_hub
import pytest
import torch
from conftest import make_tiny_diffusion_model
from hub_cache import fill_hub_cache
from safetensors import safe_open

from hf_transfer import TransferConfig, get_transfer_model
from hf_transfer.hub import load_source_model
from hf_transfer.transfer import TRANSFER_CONFIG_NAME
from hf_transfer.transfer.saving import TARGET_WEIGHTS_NAME, load_target_weights, save_target_weights


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def source_on_hub(tmp_path, hub_cache):
    """A source model saved as a pipeline and cached as hub repo `org/source`, loaded back by id."""
    make_tiny_diffusion_model(seed=0).to_pipeline().save_pretrained(tmp_path / "source")
    commit = fill_hub_cache(hub_cache, "org/source", tmp_path / "source")
    return load_source_model("org/source"), commit


def _perturb_trainable(model, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def _outputs(model):
    generator = torch.Generator().manual_seed(1)
    sample = torch.randn(3, 1, 8, 8, generator=generator)
    with torch.no_grad():
        embedding = model.shared_embedding(torch.tensor([0, 1, 2]))
        return model.generator(sample, torch.tensor([2, 30, 77]), embedding).sample


def _folder_size(folder):
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


@pytest.mark.parametrize(
    "strategy, head_init", [("lora", "warm"), ("frozen_embedding", "warm"), ("frozen_embedding", "fresh"), ("from_scratch", "warm")]
)
def test_target_only_reload_is_bit_identical(tmp_path, source_on_hub, strategy, head_init):
    source, commit = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy=strategy, head_init=head_init, lora_rank=1, seed=0))
    _perturb_trainable(target)
    target.eval()
    save_target_weights(target, tmp_path / "target")

    saved_config = json.loads((tmp_path / "target" / TRANSFER_CONFIG_NAME).read_text())
    reloaded = load_target_weights(tmp_path / "target")
    assert saved_config["base_model_name_or_path"] == "org/source"
    assert saved_config["base_model_revision"] == commit
    assert torch.equal(_outputs(reloaded), _outputs(target))
    assert not torch.equal(_outputs(reloaded), _outputs(source))


def test_lora_target_only_is_small(tmp_path, source_on_hub):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    _perturb_trainable(target)
    save_target_weights(target, tmp_path / "target")
    source.to_pipeline().save_pretrained(tmp_path / "full")
    ratio = _folder_size(tmp_path / "target") / _folder_size(tmp_path / "full")
    print(f"target-only / full safetensors size: {ratio:.3f}")
    # The adapters are a small fraction of the weights; the safetensors header adds a few KiB.
    assert ratio < 0.25


def test_target_only_loads_by_hub_id(tmp_path, hub_cache, source_on_hub):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    _perturb_trainable(target)
    target.eval()
    save_target_weights(target, tmp_path / "target")
    fill_hub_cache(hub_cache, "org/target", tmp_path / "target")
    by_loader = load_target_weights("org/target")
    by_source_loader = load_source_model("org/target")
    assert torch.equal(_outputs(by_loader), _outputs(target))
    assert torch.equal(_outputs(by_source_loader), _outputs(target))


def test_wrong_base_weights_raise(tmp_path, source_on_hub):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    _perturb_trainable(target)
    save_target_weights(target, tmp_path / "target")
    other = make_tiny_diffusion_model(seed=4)  # same architecture, other weights, no recorded origin
    with pytest.raises(ValueError, match="frozen weights of base 'org/source'.*differ"):
        load_target_weights(tmp_path / "target", base_model=other)


def test_wrong_base_shapes_raise(tmp_path, source_on_hub):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    save_target_weights(target, tmp_path / "target")
    wider = make_tiny_diffusion_model(seed=0, embedding_dim=6)
    with pytest.raises(ValueError, match="generator config differs"):
        load_target_weights(tmp_path / "target", base_model=wider)
    # Without the recorded generator config, the tensor shapes catch the mismatch.
    with safe_open(os.fspath(tmp_path / "target" / TARGET_WEIGHTS_NAME), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    del metadata["generator_config"]
    from safetensors.torch import save_file

    save_file(tensors, os.fspath(tmp_path / "target" / TARGET_WEIGHTS_NAME), metadata=metadata)
    with pytest.raises(ValueError, match="has shape .* in the target weights but .* in base"):
        load_target_weights(tmp_path / "target", base_model=wider)


def test_wrong_base_id_or_revision_raise(tmp_path, hub_cache, source_on_hub):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    save_target_weights(target, tmp_path / "target")
    with pytest.raises(ValueError, match="trained on base 'org/source', not 'org/other'"):
        load_target_weights(tmp_path / "target", base_model="org/other")

    make_tiny_diffusion_model(seed=0).to_pipeline().save_pretrained(tmp_path / "copy")
    fill_hub_cache(hub_cache, "org/source", tmp_path / "copy", refs=("v2",), commit="f" * 40)
    newer = load_source_model("org/source", revision="v2")
    with pytest.raises(ValueError, match="at revision '[0-9a-f]{40}', but the base model passed was loaded from 'org/source' at revision 'f{40}'"):
        load_target_weights(tmp_path / "target", base_model=newer)


def test_pickle_target_weights_raise(tmp_path, source_on_hub, monkeypatch):
    source, _ = source_on_hub
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0))
    save_target_weights(target, tmp_path / "target")
    os.remove(tmp_path / "target" / TARGET_WEIGHTS_NAME)
    torch.save({}, tmp_path / "target" / "target_weights.bin")

    def refuse_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle file")

    monkeypatch.setattr(torch, "load", refuse_unpickling)
    with pytest.raises(ValueError, match=r"pickle weights \['target_weights.bin'\]"):
        load_target_weights(tmp_path / "target")
    with pytest.raises(ValueError, match=r"pickle weights \['target_weights.bin'\]"):
        load_source_model(tmp_path / "target")


def test_save_without_base_raises(tmp_path):
    target = get_transfer_model(make_tiny_diffusion_model(), TransferConfig(strategy="lora", lora_rank=1))
    with pytest.raises(ValueError, match="names no base checkpoint"):
        save_target_weights(target, tmp_path / "target")
    with pytest.raises(TypeError, match="carries no TransferConfig"):
        save_target_weights(make_tiny_diffusion_model(), tmp_path / "target")
    assert not (tmp_path / "target" / TARGET_WEIGHTS_NAME).exists()
