"""Text and image encoder shared embeddings on tiny transformers models saved in a local hub cache."""

import json
import os
import warnings

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from datasets import Dataset
from diffusers import DDPMScheduler, UNet2DModel
from transformers import BartConfig, BertConfig, BertModel, BertTokenizer, GPT2Config, ViTConfig, ViTModel

try:  # transformers 5 names the image processor that needs no torchvision this way
    from transformers import ViTImageProcessorPil as ViTImageProcessor
except ImportError:
    from transformers import ViTImageProcessor

from hf_transfer import (
    ConditionalDiffusionModel,
    HfTransferWarning,
    ImageEncoderEmbedding,
    SharedEmbeddingUNet2DModel,
    TextEncoderEmbedding,
    TrainingConfig,
    TransferConfig,
    TransferDiffusionPipeline,
    get_transfer_model,
    train,
)

from conftest import make_tiny_unet

TEXT_REPO = "hf-transfer-tests/tiny-bert"
IMAGE_REPO = "hf-transfer-tests/tiny-vit"
WORDS = ["the", "digit", "a", "handwritten", "number", "zero", "one", "two", "three", "picture", "of", "long"]
MAX_TOKENS = 12


def _snapshot(cache: str, repo_id: str, commit: str = "0" * 40) -> str:
    """Create the hub cache layout of `repo_id` under `cache` and return its snapshot folder."""
    repo_folder = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    os.makedirs(os.path.join(repo_folder, "refs"), exist_ok=True)
    with open(os.path.join(repo_folder, "refs", "main"), "w", encoding="utf-8") as handle:
        handle.write(commit)
    snapshot = os.path.join(repo_folder, "snapshots", commit)
    os.makedirs(snapshot, exist_ok=True)
    return snapshot


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache holding a tiny BERT with a WordPiece tokenizer and a tiny ViT with its image processor."""
    cache = str(tmp_path_factory.mktemp("hub"))

    text_folder = _snapshot(cache, TEXT_REPO)
    vocab_folder = str(tmp_path_factory.mktemp("vocab"))
    with open(os.path.join(vocab_folder, "vocab.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer.from_pretrained(vocab_folder, model_max_length=MAX_TOKENS).save_pretrained(text_folder)
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(bert_config).save_pretrained(text_folder, safe_serialization=True)

    image_folder = _snapshot(cache, IMAGE_REPO)
    vit_config = ViTConfig(
        image_size=8, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    ViTModel(vit_config, add_pooling_layer=False).save_pretrained(image_folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 8, "width": 8}).save_pretrained(image_folder)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", cache)
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", cache)
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture
def text_embedding(hub_cache) -> TextEncoderEmbedding:
    torch.manual_seed(0)
    return TextEncoderEmbedding(TEXT_REPO, embedding_dim=4)


def _pretrained_bert(hub_cache) -> BertModel:
    return BertModel.from_pretrained(TEXT_REPO, use_safetensors=True).eval()


# -- shapes, pooling, freezing ---------------------------------------------------------------------


def test_text_embedding_loads_from_hub_id(text_embedding, hub_cache):
    output = text_embedding(["the digit one", "a handwritten two", "zero"])
    assert output.shape == (3, 4)
    assert text_embedding.embedding_dim == 4
    assert text_embedding.max_length == MAX_TOKENS
    reference = _pretrained_bert(hub_cache)
    for name, parameter in reference.state_dict().items():
        assert torch.equal(text_embedding.encoder.state_dict()[name], parameter), name


def test_mean_pooling_ignores_padding(text_embedding):
    short = text_embedding(["one"])
    padded = text_embedding(["one", "a picture of the handwritten number two"])
    torch.testing.assert_close(padded[0], short[0], atol=1e-5, rtol=1e-5)

    inputs = text_embedding.tokenizer(["one", "the digit two"], padding=True, return_tensors="pt")
    hidden = text_embedding.encoder(**inputs).last_hidden_state
    expected = hidden[1, :5].mean(dim=0)  # [CLS] the digit two [SEP], no padding
    torch.testing.assert_close(text_embedding.encode(["one", "the digit two"])[1], expected)


def test_cls_pooling_and_no_projection(hub_cache):
    embedding = TextEncoderEmbedding(TEXT_REPO, pooling="cls", normalize=True)
    assert embedding.projection is None
    assert embedding.embedding_dim == 16
    inputs = embedding.tokenizer(["the digit two"], return_tensors="pt")
    expected = embedding.encoder(**inputs).last_hidden_state[:, 0]
    output = embedding(["the digit two"])
    torch.testing.assert_close(output, torch.nn.functional.normalize(expected, dim=-1))
    assert torch.allclose(output.norm(dim=-1), torch.ones(1))


def test_frozen_encoder_gets_no_gradient(text_embedding):
    text_embedding.train()
    assert not text_embedding.encoder.training
    text_embedding(["the digit one", "two"]).sum().backward()
    assert text_embedding.projection.weight.grad is not None
    assert all(parameter.grad is None for parameter in text_embedding.encoder.parameters())


def test_trainable_encoder_gets_gradient(hub_cache):
    embedding = TextEncoderEmbedding(TEXT_REPO, embedding_dim=4, train_encoder=True)
    embedding.train()
    assert embedding.encoder.training
    embedding(["the digit one", "two"]).sum().backward()
    gradient = embedding.encoder.embeddings.word_embeddings.weight.grad
    assert gradient is not None
    assert gradient.abs().sum() > 0


# -- strategies ------------------------------------------------------------------------------------


def _text_model(hub_cache, train_encoder: bool = False) -> ConditionalDiffusionModel:
    torch.manual_seed(0)
    embedding = TextEncoderEmbedding(TEXT_REPO, embedding_dim=4, train_encoder=train_encoder)
    generator = SharedEmbeddingUNet2DModel.from_unet(make_tiny_unet(), embedding_dim=4)
    return ConditionalDiffusionModel(embedding, generator, DDPMScheduler(num_train_timesteps=100))


def _trainable(module: torch.nn.Module) -> bool:
    return any(parameter.requires_grad for parameter in module.parameters())


def test_strategies_freeze_encoder_parts(hub_cache):
    source = _text_model(hub_cache)

    frozen = get_transfer_model(source, TransferConfig(strategy="frozen_embedding"))
    assert not _trainable(frozen.shared_embedding)
    assert _trainable(frozen.generator)

    finetuned = get_transfer_model(source, TransferConfig(strategy="full_finetune"))
    assert _trainable(finetuned.shared_embedding.projection)
    assert not _trainable(finetuned.shared_embedding.encoder)

    trained_encoder = get_transfer_model(_text_model(hub_cache, train_encoder=True), TransferConfig(strategy="full_finetune"))
    assert _trainable(trained_encoder.shared_embedding.encoder)


def test_from_scratch_reloads_pretrained_encoder(hub_cache):
    source = _text_model(hub_cache)
    with torch.no_grad():
        source.shared_embedding.encoder.pooler.dense.weight.add_(1.0)
    scratch = get_transfer_model(source, TransferConfig(strategy="from_scratch", seed=3))
    reference = _pretrained_bert(hub_cache)
    assert torch.equal(scratch.shared_embedding.encoder.pooler.dense.weight, reference.pooler.dense.weight)
    assert not torch.equal(scratch.shared_embedding.projection.weight, source.shared_embedding.projection.weight)
    assert _trainable(scratch.shared_embedding.projection)
    assert not _trainable(scratch.shared_embedding.encoder)


# -- saving and loading ----------------------------------------------------------------------------


def test_save_load_round_trip_without_original(text_embedding, hub_cache, tmp_path, monkeypatch):
    texts = ["the digit one", "a handwritten number three"]
    with torch.no_grad():
        text_embedding.projection.weight.mul_(2.0)
        expected = text_embedding(texts)
    text_embedding.save_pretrained(tmp_path / "saved")
    assert sorted(os.listdir(tmp_path / "saved")) == ["config.json", "diffusion_pytorch_model.safetensors", "encoder", "processor"]

    # An empty cache makes the original checkpoint unreachable: the folder must load on its own.
    empty = str(tmp_path / "empty-cache")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", empty)
    loaded = TextEncoderEmbedding.from_pretrained(tmp_path / "saved")
    assert loaded.config.encoder_name_or_path == TEXT_REPO
    assert loaded.max_length == text_embedding.max_length
    assert not _trainable(loaded.encoder)
    with torch.no_grad():
        assert torch.equal(loaded(texts), expected)


def test_load_saved_embedding_by_hub_id(text_embedding, hub_cache):
    texts = ["zero", "the number two"]
    snapshot = _snapshot(hub_cache, "hf-transfer-tests/saved-text-embedding")
    text_embedding.save_pretrained(snapshot)
    loaded = TextEncoderEmbedding.from_pretrained("hf-transfer-tests/saved-text-embedding")
    with torch.no_grad():
        assert torch.equal(loaded(texts), text_embedding(texts))


def test_pipeline_round_trip_with_text(hub_cache, tmp_path):
    model = _text_model(hub_cache)
    with torch.no_grad():
        model.generator.condition_projection.linear_2.weight.normal_()
    pipeline = model.to_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    texts = ["the digit one", "two"]
    expected = pipeline(texts, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    pipeline.save_pretrained(tmp_path / "pipeline")

    loaded = TransferDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.shared_embedding, TextEncoderEmbedding)
    images = loaded(texts, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert images.shape == (2, 1, 8, 8)
    torch.testing.assert_close(images, expected)


# -- cache -----------------------------------------------------------------------------------------


def test_cache_matches_recomputation(text_embedding):
    texts = ["the digit one", "two", "a handwritten number three", "two", "zero"]
    with torch.no_grad():
        expected = text_embedding(texts)
    cache = text_embedding.enable_encoder_cache(texts, batch_size=2, progress_bar=False)
    assert len(cache) == 4

    calls = []
    handle = text_embedding.encoder.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        cached = text_embedding(texts)
    handle.remove()
    assert calls == []
    assert cache.hits == 5
    torch.testing.assert_close(cached, expected, atol=1e-6, rtol=0)

    with torch.no_grad():
        text_embedding(["the picture of one"])
    assert "the picture of one" in cache


def test_cache_drops_outputs_of_changed_encoder(text_embedding):
    texts = ["the digit one", "two"]
    text_embedding.enable_encoder_cache(texts, progress_bar=False)
    with torch.no_grad():
        text_embedding.encoder.embeddings.word_embeddings.weight.mul_(3.0)
        changed = text_embedding(texts)
        text_embedding.disable_encoder_cache()
        recomputed = text_embedding(texts)
    torch.testing.assert_close(changed, recomputed, atol=1e-6, rtol=0)


def test_cache_rejects_trainable_encoder(hub_cache):
    embedding = TextEncoderEmbedding(TEXT_REPO, embedding_dim=4, train_encoder=True)
    with pytest.raises(ValueError, match="frozen encoder"):
        embedding.enable_encoder_cache(["one"])


def test_training_on_text_dataset_with_cache(hub_cache):
    model = _text_model(hub_cache)
    phrases = ["the digit zero", "the digit one", "the digit two"]
    images = torch.zeros(12, 1, 8, 8)
    for index in range(12):
        images[index, :, 2 * (index % 3) : 2 * (index % 3) + 3] = 1.0
    dataset = Dataset.from_dict({"pixel_values": images.numpy(), "condition": [phrases[i % 3] for i in range(12)]}).with_format("torch")
    model.shared_embedding.enable_encoder_cache(dataset["condition"], progress_bar=False)
    encoder_before = {name: value.clone() for name, value in model.shared_embedding.encoder.state_dict().items()}
    projection_before = model.shared_embedding.projection.weight.detach().clone()

    result = train(model, dataset, TrainingConfig(max_steps=3, batch_size=4, progress_bar=False, ema_decay=None))
    assert len(result.losses) == 3
    assert all(np.isfinite(result.losses))
    assert not torch.equal(model.shared_embedding.projection.weight, projection_before)
    for name, value in model.shared_embedding.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[name]), name


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "error", "message"),
    [
        ([], ValueError, "empty batch"),
        (["one", ""], ValueError, "Text condition 1 is empty"),
        (["   "], ValueError, "Text condition 0 is empty"),
        (["one", 2], TypeError, "Text condition 1 is a int"),
        (torch.tensor([1, 2]), TypeError, "list of strings"),
    ],
)
def test_bad_text_conditions(text_embedding, condition, error, message):
    with pytest.raises(error, match=message):
        text_embedding(condition)


def test_single_string_is_batch_of_one(text_embedding):
    with torch.no_grad():
        assert torch.equal(text_embedding("the digit one"), text_embedding(["the digit one"]))


def test_long_text_truncated_with_warning(text_embedding):
    long_text = " ".join(["one"] * 30)
    with pytest.warns(HfTransferWarning, match=r"truncated to their first 12 tokens; the longest has 32 tokens"):
        with torch.no_grad():
            output = text_embedding([long_text])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            # 10 words plus [CLS] and [SEP] fill the 12 tokens exactly.
            expected = text_embedding([" ".join(["one"] * 10)])
    torch.testing.assert_close(output, expected)


def test_diffusers_checkpoint_rejected(hub_cache, tmp_path):
    make_tiny_unet().save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="is a diffusers model \\(UNet2DModel\\), not a transformers encoder"):
        TextEncoderEmbedding(str(tmp_path / "unet"))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (GPT2Config(n_layer=1, n_embd=16, n_head=2), "decoder-only model \\(model_type 'gpt2'\\)"),
        (BertConfig(is_decoder=True), "decoder-only model \\(model_type 'bert'\\)"),
        (BartConfig(encoder_layers=1, decoder_layers=1, d_model=16), "encoder-decoder model \\(model_type 'bart'\\)"),
    ],
)
def test_non_encoder_checkpoint_rejected(hub_cache, tmp_path, config, message):
    config.save_pretrained(tmp_path / "model")
    with pytest.raises(ValueError, match=message):
        TextEncoderEmbedding(str(tmp_path / "model"))


def test_missing_checkpoint_rejected(hub_cache, tmp_path):
    with pytest.raises(OSError, match="Could not read a transformers config"):
        TextEncoderEmbedding(str(tmp_path / "missing"))


def test_checkpoint_without_tokenizer_rejected(hub_cache):
    with pytest.raises(ValueError, match="Could not load a tokenizer"):
        TextEncoderEmbedding(IMAGE_REPO)


def test_bad_constructor_arguments(hub_cache):
    with pytest.raises(ValueError, match="Unknown `pooling` 'max'"):
        TextEncoderEmbedding(TEXT_REPO, pooling="max")
    with pytest.raises(ValueError, match="`max_length` must lie in \\[1, 12\\]"):
        TextEncoderEmbedding(TEXT_REPO, max_length=100)
    with pytest.raises(ValueError, match="`embedding_dim` must be at least 1"):
        TextEncoderEmbedding(TEXT_REPO, embedding_dim=0)


def test_width_mismatch_with_adapter(hub_cache):
    embedding = TextEncoderEmbedding(TEXT_REPO)
    generator = SharedEmbeddingUNet2DModel.from_unet(make_tiny_unet(), embedding_dim=4)
    with pytest.raises(ValueError, match="shared embedding has width 16 but the UNet expects 4"):
        ConditionalDiffusionModel(embedding, generator)


def test_not_a_saved_embedding_folder_rejected(hub_cache, tmp_path):
    UNet2DModel(sample_size=8, block_out_channels=(8,), down_block_types=("DownBlock2D",), up_block_types=("UpBlock2D",), norm_num_groups=4).save_pretrained(tmp_path / "unet")
    with pytest.raises(ValueError, match="has no encoder/ folder"):
        TextEncoderEmbedding.from_pretrained(tmp_path / "unet")


# -- images ----------------------------------------------------------------------------------------


def _images(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, 3, 8, 8), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_image_embedding_shapes_cache_and_round_trip(hub_cache, tmp_path):
    torch.manual_seed(0)
    embedding = ImageEncoderEmbedding(IMAGE_REPO, embedding_dim=4)
    images = _images(3)
    with torch.no_grad():
        output = embedding(images)
    assert output.shape == (3, 4)
    with torch.no_grad():
        torch.testing.assert_close(embedding(list(images.numpy())), output)

    keys = embedding.condition_keys(list(torch.cat([images, images[:1]])))
    assert keys[3] == keys[0]
    assert len(set(keys)) == 3
    embedding.enable_encoder_cache(images, progress_bar=False)
    with torch.no_grad():
        torch.testing.assert_close(embedding(images), output, atol=1e-6, rtol=0)

    embedding.save_pretrained(tmp_path / "image")
    assert os.path.isfile(tmp_path / "image" / "processor" / "preprocessor_config.json")
    loaded = ImageEncoderEmbedding.from_pretrained(tmp_path / "image")
    embedding.disable_encoder_cache()
    with torch.no_grad():
        assert torch.equal(loaded(images), embedding(images))


@pytest.mark.parametrize(
    ("condition", "error", "message"),
    [
        ([], ValueError, "empty batch"),
        (torch.zeros(3, 8, 8), ValueError, "must have shape \\(batch_size, channels, height, width\\)"),
        (["not an image"], TypeError, "Image condition 0 is a str"),
        ([torch.full((3, 8, 8), float("nan"))], ValueError, "NaN or infinite"),
    ],
)
def test_bad_image_conditions(hub_cache, condition, error, message):
    embedding = ImageEncoderEmbedding(IMAGE_REPO, embedding_dim=4)
    with pytest.raises(error, match=message):
        embedding(condition)


def test_saved_config_records_encoder(text_embedding, tmp_path):
    text_embedding.save_pretrained(tmp_path / "saved")
    with open(tmp_path / "saved" / "config.json", encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["_class_name"] == "TextEncoderEmbedding"
    assert config["encoder_name_or_path"] == TEXT_REPO
    assert config["embedding_dim"] == 4


# -- text demo -------------------------------------------------------------------------------------


def test_demo_target_phrasings_unseen_in_source():
    from hf_transfer.text_demo import SOURCE_TEMPLATES, TARGET_TEMPLATES, phrasings

    source, target = phrasings(SOURCE_TEMPLATES), phrasings(TARGET_TEMPLATES)
    assert len(set(source)) == 10 * len(SOURCE_TEMPLATES)
    assert len(set(target)) == 10 * len(TARGET_TEMPLATES)
    assert not set(source) & set(target)


def test_demo_phrase_table_maps_unseen_text_to_unknown_row():
    from hf_transfer.text_demo import PhraseTableEmbedding

    embedding = PhraseTableEmbedding(["the digit one", "the digit two"], embedding_dim=3)
    rows = embedding.validate_condition(["the digit two", "the numeral 2", "the digit one"])
    assert rows.tolist() == [2, 0, 1]
    assert embedding(["the numeral 2"]).shape == (1, 3)


def test_demo_runs_end_to_end_on_tiny_encoder(hub_cache, tmp_path):
    from hf_transfer.text_demo import ARMS, TextDemoSettings, run_text_demo

    settings = TextDemoSettings.quick(
        text_encoder=TEXT_REPO, block_out_channels=(8, 16), embedding_dim=4, source_steps=2, target_steps=2,
        batch_size=8, num_inference_steps=2, samples_per_class=1, classifier_epochs=1,
    )
    metrics = run_text_demo(str(tmp_path), settings=settings)
    assert set(metrics["arms"]) == set(ARMS)
    for arm, result in metrics["arms"].items():
        assert 0.0 <= result["class_consistency"] <= 1.0, arm
        assert result["frechet_distance"] >= 0.0, arm
        assert os.path.isfile(tmp_path / f"text_samples_{arm}.png"), arm
    assert metrics["arms"]["text_encoder"]["trainable_parameters"] < metrics["arms"]["text_encoder_from_scratch"]["trainable_parameters"]
    with open(tmp_path / "text_metrics.json", encoding="utf-8") as handle:
        assert json.load(handle)["target_phrasings"] == metrics["target_phrasings"]


def test_positional_arguments_survive_from_config(tmp_path):
    from hf_transfer import ClassLabelEmbedding

    embedding = ClassLabelEmbedding(10, 16)
    rebuilt = ClassLabelEmbedding.from_config(embedding.config)
    assert rebuilt.config.num_classes == 10
    assert rebuilt.embedding_dim == 16
    embedding.save_pretrained(tmp_path / "labels")
    loaded = ClassLabelEmbedding.from_pretrained(tmp_path / "labels")
    assert torch.equal(loaded.table.weight, embedding.table.weight)
