"""Loading source checkpoints by hub id (offline, from a hub-layout cache) and by path."""

import json
import shutil

import huggingface_hub
import pytest
import torch
from conftest import make_tiny_diffusion_model, make_tiny_unet
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DConditionModel
from hub_cache import fill_hub_cache

from hf_transfer import ClassLabelEmbedding, ConditionalDiffusionModel
from hf_transfer.hub import load_source_model, load_unet, resolve_checkpoint


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub uses by default, in offline mode."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints on disk: a UNet, a DDPM pipeline, a DDIM pipeline, a transfer pipeline."""
    root = tmp_path_factory.mktemp("checkpoints")
    unet = make_tiny_unet(seed=3)
    unet.save_pretrained(root / "unet")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=100)).save_pretrained(root / "ddpm")
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=100)).save_pretrained(root / "ddim")
    make_tiny_diffusion_model(seed=5).to_pipeline().save_pretrained(root / "transfer")
    return root, unet


def _inputs():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, 1, 8, 8, generator=generator), torch.tensor([3, 70])


def test_unet_by_hub_id_keeps_outputs(hub_cache, checkpoints):
    root, unet = checkpoints
    commit = fill_hub_cache(hub_cache, "org/tiny-unet", root / "unet")
    model = load_source_model("org/tiny-unet", ClassLabelEmbedding(num_classes=3, embedding_dim=4))
    sample, timestep = _inputs()
    embedding = model.shared_embedding(torch.tensor([0, 2]))
    with torch.no_grad():
        expected = unet(sample, timestep).sample
        actual = model.generator(sample, timestep, embedding).sample
    assert isinstance(model, ConditionalDiffusionModel)
    assert torch.equal(actual, expected)
    assert model.pretrained_checkpoint.revision == commit


@pytest.mark.parametrize("pipeline, scheduler_class", [("ddpm", DDPMScheduler), ("ddim", DDIMScheduler)])
def test_pipeline_by_hub_id_keeps_scheduler(hub_cache, checkpoints, pipeline, scheduler_class):
    root, unet = checkpoints
    fill_hub_cache(hub_cache, f"org/tiny-{pipeline}", root / pipeline)
    model = load_source_model(f"org/tiny-{pipeline}", ClassLabelEmbedding(num_classes=3, embedding_dim=4))
    sample, timestep = _inputs()
    with torch.no_grad():
        actual = model.generator(sample, timestep, torch.randn(2, 4)).sample
    assert type(model.noise_scheduler) is scheduler_class
    assert model.noise_scheduler.config.num_train_timesteps == 100
    assert torch.equal(actual, unet(sample, timestep).sample)


def test_revision_and_subfolder_by_hub_id(hub_cache, tmp_path, checkpoints):
    root, _ = checkpoints
    # One repo whose main branch holds another UNet and whose tag v1 holds the pipeline in a subfolder.
    main_tree = tmp_path / "main_tree"
    shutil.copytree(root / "unet", main_tree / "models" / "unet")
    tagged_tree = tmp_path / "tagged_tree"
    shutil.copytree(root / "ddpm", tagged_tree / "models" / "ddpm")
    other = make_tiny_unet(seed=11)
    shutil.rmtree(main_tree / "models" / "unet")
    other.save_pretrained(main_tree / "models" / "unet")
    main_commit = fill_hub_cache(hub_cache, "org/multi", main_tree)
    tagged_commit = fill_hub_cache(hub_cache, "org/multi", tagged_tree, refs=("v1",))

    from_tag = load_unet("org/multi", revision="v1", subfolder="models/ddpm")
    from_commit = load_unet("org/multi", revision=tagged_commit, subfolder="models/ddpm/unet")
    from_main = load_unet("org/multi", subfolder="models/unet")
    _, unet = checkpoints
    sample, timestep = _inputs()
    with torch.no_grad():
        assert torch.equal(from_tag(sample, timestep).sample, unet(sample, timestep).sample)
        assert torch.equal(from_commit(sample, timestep).sample, unet(sample, timestep).sample)
        assert torch.equal(from_main(sample, timestep).sample, other(sample, timestep).sample)
    resolved = resolve_checkpoint("org/multi", revision="v1", subfolder="models/ddpm")
    assert resolved.revision == tagged_commit
    assert main_commit != tagged_commit


def test_own_transfer_pipeline_by_hub_id(hub_cache, checkpoints):
    root, _ = checkpoints
    commit = fill_hub_cache(hub_cache, "org/tiny-transfer", root / "transfer")
    model = load_source_model("org/tiny-transfer")
    original = make_tiny_diffusion_model(seed=5)
    sample, timestep = _inputs()
    condition = torch.tensor([1, 2])
    with torch.no_grad():
        expected = original.generator(sample, timestep, original.shared_embedding(condition)).sample
        actual = model.generator(sample, timestep, model.shared_embedding(condition)).sample
    assert torch.equal(actual, expected)
    assert model.source_checkpoint.name_or_path == "org/tiny-transfer"
    assert model.source_checkpoint.revision == commit


def test_local_path_with_subfolder(checkpoints):
    root, unet = checkpoints
    model = load_source_model(root, ClassLabelEmbedding(num_classes=3, embedding_dim=4), subfolder="ddim")
    sample, timestep = _inputs()
    with torch.no_grad():
        assert torch.equal(model.generator(sample, timestep, torch.zeros(2, 4)).sample, unet(sample, timestep).sample)
    assert model.pretrained_checkpoint.revision is None


def test_invalid_repo_id_raises(hub_cache):
    with pytest.raises(ValueError, match="not a valid hub repo id|neither a local folder nor a valid hub repo id"):
        load_source_model("bad id with spaces!", ClassLabelEmbedding(num_classes=3))
    with pytest.raises(FileNotFoundError, match="No folder"):
        load_source_model("./no/such/folder", ClassLabelEmbedding(num_classes=3))


def test_absent_repo_offline_raises(hub_cache):
    with pytest.raises(FileNotFoundError, match="'org/absent'.*not in the hub cache.*offline mode: True.*hf download"):
        load_source_model("org/absent", ClassLabelEmbedding(num_classes=3))


def test_absent_revision_or_subfolder_raises(hub_cache, checkpoints):
    root, _ = checkpoints
    fill_hub_cache(hub_cache, "org/tiny-unet", root / "unet")
    with pytest.raises(FileNotFoundError, match="revision 'v9'"):
        load_unet("org/tiny-unet", revision="v9")
    with pytest.raises(FileNotFoundError, match="No subfolder 'missing'"):
        load_unet("org/tiny-unet", subfolder="missing")
    with pytest.raises(ValueError, match="relative path"):
        load_unet("org/tiny-unet", subfolder="../escape")


def test_revision_with_local_folder_raises(checkpoints):
    root, _ = checkpoints
    with pytest.raises(ValueError, match="applies to hub ids only"):
        load_unet(root / "unet", revision="main")


def test_missing_files_raise(tmp_path, checkpoints):
    root, _ = checkpoints
    no_weights = tmp_path / "no_weights"
    shutil.copytree(root / "unet", no_weights)
    (no_weights / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="Missing diffusion_pytorch_model.safetensors"):
        load_unet(no_weights)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No model_index.json, config.json"):
        load_unet(empty)
    no_scheduler = tmp_path / "no_scheduler"
    shutil.copytree(root / "ddpm", no_scheduler)
    shutil.rmtree(no_scheduler / "scheduler")
    with pytest.raises(FileNotFoundError, match="Missing scheduler_config.json"):
        load_source_model(no_scheduler, ClassLabelEmbedding(num_classes=3))


def test_other_architecture_raises(tmp_path):
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=8,
        attention_head_dim=2,
    )
    unet.save_pretrained(tmp_path / "condition_unet")
    with pytest.raises(ValueError, match="UNet2DConditionModel checkpoint, not a UNet2DModel"):
        load_source_model(tmp_path / "condition_unet", ClassLabelEmbedding(num_classes=3))
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="StableDiffusionPipeline checkpoint"):
        load_source_model(tmp_path / "pipeline", ClassLabelEmbedding(num_classes=3))


def test_pickle_weights_never_unpickled(tmp_path, hub_cache, checkpoints, monkeypatch):
    root, unet = checkpoints
    pickled = tmp_path / "pickled"
    shutil.copytree(root / "ddpm", pickled)
    (pickled / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    torch.save(unet.state_dict(), pickled / "unet" / "diffusion_pytorch_model.bin")
    fill_hub_cache(hub_cache, "org/pickled", pickled)

    def refuse_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called on a pickle file")

    monkeypatch.setattr(torch, "load", refuse_unpickling)
    for name in (pickled, "org/pickled"):
        with pytest.raises(ValueError, match=r"pickle weights \['diffusion_pytorch_model.bin'\].*does not unpickle"):
            load_source_model(name, ClassLabelEmbedding(num_classes=3))


def test_embedding_argument_checked(checkpoints):
    root, _ = checkpoints
    with pytest.raises(TypeError, match="needs a shared embedding"):
        load_source_model(root / "unet")
    with pytest.raises(ValueError, match="brings its own shared embedding"):
        load_source_model(root / "transfer", ClassLabelEmbedding(num_classes=3))
