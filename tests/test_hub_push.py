"""push_to_hub and `hf-transfer push`, with the Hub's servers replaced at HfApi's client boundary."""

import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import make_tiny_diffusion_model
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import OfflineModeIsEnabled
from PIL import Image

from hf_transfer import TransferConfig, TransferDiffusionPipeline, get_transfer_model
from hf_transfer.cli import main
from hf_transfer.hub import load_source_model, push_to_hub
from hf_transfer.model_card import ModelCardInfo
from hf_transfer.transfer.saving import TARGET_WEIGHTS_NAME


class FakeHub:
    """Records the calls that would reach the Hub and copies each staged folder before it is deleted."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path / "uploads"
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, api, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self, api, repo_id, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, api, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        destination = self.root / str(len(self.calls))
        shutil.copytree(kwargs["folder_path"], destination)
        return destination

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path)
    # The suite runs offline; pushing needs online mode, and the fake methods keep every call local.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kwargs: hub.create_repo(api, repo_id, **kwargs))
    monkeypatch.setattr(HfApi, "create_branch", lambda api, repo_id, **kwargs: hub.create_branch(api, repo_id, **kwargs))
    monkeypatch.setattr(HfApi, "upload_folder", lambda api, **kwargs: hub.upload_folder(api, **kwargs))
    return hub


@pytest.fixture
def trained_target():
    source = make_tiny_diffusion_model()
    target = get_transfer_model(source, TransferConfig(strategy="lora", lora_rank=1, seed=0, base_model_name_or_path="org/source"))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in target.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return target.eval()


def _sample(pipeline):
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(torch.tensor([0, 2]), num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="pt").images


def test_push_model_stages_complete_pipeline(fake_hub, trained_target):
    card_info = ModelCardInfo(
        source_data="sklearn digits, 1,437 images",
        target_data="digits turned a quarter turn, 10 per class",
        evaluation=[{"strategy": "lora", "Frechet distance": 12.5}, {"strategy": "frozen_embedding", "Frechet distance": 10.25}],
        sample_grid=Image.new("L", (16, 8)),
        limitations="Only 8x8 grayscale images.",
    )
    push_to_hub(trained_target, "org/target", private=True, card_info=card_info)

    assert fake_hub.names == ["create_repo", "upload_folder"]
    assert fake_hub.calls[0][1]["private"] is True
    assert fake_hub.calls[1][1]["repo_id"] == "org/target"
    staged = fake_hub.root / "2"
    assert {"model_index.json", "README.md", "samples.png", "transfer_config.json"} <= {path.name for path in staged.iterdir()}
    assert (staged / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (staged / "shared_embedding" / "diffusion_pytorch_model.safetensors").is_file()

    card = ModelCard.load(staged / "README.md")
    assert card.data.base_model == "org/source"
    assert "lora" in card.data.tags
    for text in ("sklearn digits", "quarter turn", "| lora | 12.5 |", "samples.png", "TransferDiffusionPipeline.from_pretrained", "8x8 grayscale"):
        assert text in card.text
    assert "trainable parameters | " in card.text
    assert "%)" in card.text

    reloaded = TransferDiffusionPipeline.from_pretrained(staged, use_safetensors=True)
    torch.testing.assert_close(_sample(reloaded), _sample(trained_target.to_pipeline()), rtol=1e-4, atol=1e-4)


def test_push_target_only(fake_hub, trained_target):
    push_to_hub(trained_target, "org/target-lora", target_only=True, revision="experiment")
    assert fake_hub.names == ["create_repo", "create_branch", "upload_folder"]
    assert fake_hub.calls[1][1]["branch"] == "experiment"
    assert fake_hub.calls[2][1]["revision"] == "experiment"
    staged = fake_hub.root / "3"
    assert sorted(path.name for path in staged.iterdir()) == ["README.md", TARGET_WEIGHTS_NAME, "transfer_config.json"]
    card = ModelCard.load(staged / "README.md")
    assert "load_target_weights" in card.text
    assert "only the target-specific weights" in card.text


def test_push_folder_skips_checkpoints_and_caches(fake_hub, tmp_path):
    folder = tmp_path / "run"
    make_tiny_diffusion_model().to_pipeline().save_pretrained(folder)
    (folder / "checkpoint-500").mkdir()
    (folder / "checkpoint-500" / "optimizer.safetensors").write_bytes(b"0")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "upload.lock").write_text("")
    (folder / "unet" / "__pycache__").mkdir()
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# My own card\n")
    main(["push", str(folder), "org/run", "--revision", "main"])

    assert fake_hub.names == ["create_repo", "upload_folder"]
    staged = fake_hub.root / "2"
    staged_files = sorted(path.relative_to(staged).as_posix() for path in staged.rglob("*") if path.is_file())
    assert not any("checkpoint" in name or ".cache" in name or "__pycache__" in name for name in staged_files)
    assert "unet/diffusion_pytorch_model.safetensors" in staged_files
    assert (staged / "README.md").read_text().endswith("# My own card\n")
    assert isinstance(TransferDiffusionPipeline.from_pretrained(staged, use_safetensors=True), TransferDiffusionPipeline)


def test_push_folder_writes_card_when_missing(fake_hub, tmp_path):
    folder = tmp_path / "run"
    make_tiny_diffusion_model().to_pipeline().save_pretrained(folder)
    main(["push", str(folder), "org/run", "--private", "--target-data", "ten rotated digits per class"])
    staged = fake_hub.root / "2"
    card = ModelCard.load(staged / "README.md")
    assert fake_hub.calls[0][1]["private"] is True
    assert "ten rotated digits per class" in card.text
    assert "TransferDiffusionPipeline" in card.text


@pytest.mark.parametrize("repo_id", ["not a repo id", "a/b/c", "org/name--x", "", "-org/name"])
def test_invalid_repo_id_raises_before_network(fake_hub, trained_target, repo_id):
    with pytest.raises(ValueError, match="Invalid repo id"):
        push_to_hub(trained_target, repo_id)
    assert fake_hub.calls == []


def test_push_offline_raises_before_network(fake_hub, trained_target, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(OfflineModeIsEnabled, match="HF_HUB_OFFLINE is set"):
        push_to_hub(trained_target, "org/target")
    assert fake_hub.calls == []


def test_push_bad_folders_raise(fake_hub, tmp_path):
    with pytest.raises(FileNotFoundError, match="No folder"):
        push_to_hub(tmp_path / "absent", "org/x")
    pickled = tmp_path / "pickled"
    make_tiny_diffusion_model().to_pipeline().save_pretrained(pickled)
    torch.save({}, pickled / "unet" / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pickle files \['unet/diffusion_pytorch_model.bin'\]"):
        push_to_hub(pickled, "org/x")
    incomplete = tmp_path / "incomplete"
    shutil.copytree(pickled, incomplete)
    (incomplete / "unet" / "diffusion_pytorch_model.bin").unlink()
    (incomplete / "shared_embedding" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="Missing diffusion_pytorch_model.safetensors") as error_info:
        push_to_hub(incomplete, "org/x")
    assert str(incomplete) in str(error_info.value)
    assert "hf_transfer_push_" not in str(error_info.value)
    assert fake_hub.calls == []


def test_pushed_source_loads_as_base(fake_hub, tmp_path, monkeypatch):
    """A pushed source model, placed in the cache as the Hub would serve it, loads by id."""
    push_to_hub(make_tiny_diffusion_model(), "org/source")
    cache = tmp_path / "hub"
    from hub_cache import fill_hub_cache

    commit = fill_hub_cache(cache, "org/source", fake_hub.root / "2")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    model = load_source_model("org/source")
    assert model.source_checkpoint.revision == commit


def test_push_lora_pipeline_merges_adapters(fake_hub, trained_target):
    pipeline = trained_target.to_pipeline()
    push_to_hub(pipeline, "org/pipeline")
    staged = fake_hub.root / "2"
    reloaded = TransferDiffusionPipeline.from_pretrained(staged, use_safetensors=True)
    assert not any("lora" in name for name in reloaded.unet.state_dict())
    torch.testing.assert_close(_sample(reloaded), _sample(pipeline), rtol=1e-4, atol=1e-4)
