"""The diffusion recipe with text conditions, on a tiny BERT saved in an offline hub-layout cache."""

import json
import os
import sys

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from transformers import BertConfig, BertModel, BertTokenizer

from hf_transfer.data.folders import load_image_folder, prepare_conditions, set_image_transform
from hf_transfer.diffusion import TransferDiffusionPipeline
from hf_transfer.text_demo import SOURCE_TEMPLATES, TARGET_TEMPLATES, phrasings
from hf_transfer.transfer import TransferConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "recipes"))

import train_diffusion  # noqa: E402
from recipe_utils import parse_recipe_config  # noqa: E402

SOURCE_CONFIG = os.path.join(ROOT, "recipes", "configs", "diffusion_digits_text_source.yaml")
TARGET_CONFIG = os.path.join(ROOT, "recipes", "configs", "diffusion_digits_text_target.yaml")
TEXT_REPO = "hf-transfer-tests/tiny-recipe-bert"
# Every word of the digits' source and target phrasings, so that no phrasing is all [UNK] tokens.
WORDS = [
    "the", "digit", "a", "handwritten", "number", "numeral", "drawn", "by", "hand", "scribbled", "with", "pen", ",",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    *[str(digit) for digit in range(10)],
]
TINY_UNET = ["--block_out_channels", "8", "16", "--norm_num_groups", "4", "--embedding_dim", "4"]
QUICK = [
    "--progress_bar", "false", "--report_to", "none", "--lr_warmup_steps", "0", "--max_train_steps", "2",
    "--checkpointing_steps", "none", "--validation_steps", "2", "--validation_inference_steps", "2",
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A hub cache holding a tiny BERT with a WordPiece tokenizer, read with the hub offline."""
    cache = tmp_path_factory.mktemp("hub")
    commit = "0" * 40
    repo_folder = cache / ("models--" + TEXT_REPO.replace("/", "--"))
    (repo_folder / "refs").mkdir(parents=True)
    (repo_folder / "refs" / "main").write_text(commit)
    snapshot = repo_folder / "snapshots" / commit
    snapshot.mkdir(parents=True)

    vocab_folder = tmp_path_factory.mktemp("vocab")
    (vocab_folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizer.from_pretrained(str(vocab_folder), model_max_length=16).save_pretrained(snapshot)
    torch.manual_seed(0)
    bert_config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    BertModel(bert_config).save_pretrained(snapshot, safe_serialization=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        yield cache


@pytest.fixture(scope="module")
def text_source(hub_cache, tmp_path_factory):
    """Run source learning from the text source config, with the tiny BERT in place of MiniLM."""
    output_dir = tmp_path_factory.mktemp("runs") / "text-source"
    result = train_diffusion.main(
        [
            "--config", SOURCE_CONFIG, "--text_encoder_name_or_path", TEXT_REPO, "--max_train_samples", "40",
            "--train_batch_size", "8", "--output_dir", str(output_dir), *TINY_UNET, *QUICK,
        ]
    )
    return output_dir, result


def test_text_source_recipe_saves_text_pipeline(text_source):
    output_dir, result = text_source
    assert result["global_step"] == 2
    assert all(np.isfinite(result["losses"]))
    embedding_config = json.loads((output_dir / "shared_embedding" / "config.json").read_text())
    assert embedding_config["_class_name"] == "TextEncoderEmbedding"
    assert embedding_config["encoder_name_or_path"] == TEXT_REPO
    assert embedding_config["normalize"] is True
    options = json.loads((output_dir / "recipe_config.json").read_text())
    assert options["condition_type"] == "text"
    assert options["max_train_steps"] == 2
    # One validation sample per class, each 8 pixels wide, side by side.
    assert Image.open(output_dir / "samples" / "step-000002.png").size == (8 * 10, 8)


def test_text_target_recipe_keeps_embedding(text_source, tmp_path):
    source_dir, _ = text_source
    target_dir = tmp_path / "text-target"
    result = train_diffusion.main(
        [
            "--config", TARGET_CONFIG, "--source_model_name_or_path", str(source_dir), "--shots_per_class", "2",
            "--train_batch_size", "10", "--output_dir", str(target_dir), *QUICK,
        ]
    )
    assert result["global_step"] == 2
    assert TransferConfig.from_pretrained(target_dir).strategy == "frozen_embedding"
    assert Image.open(target_dir / "samples" / "step-000002.png").size == (8 * 10, 8)

    source_pipeline = TransferDiffusionPipeline.from_pretrained(source_dir)
    target_pipeline = TransferDiffusionPipeline.from_pretrained(target_dir)
    source_embedding = source_pipeline.shared_embedding.state_dict()
    target_embedding = target_pipeline.shared_embedding.state_dict()
    assert sorted(target_embedding) == sorted(source_embedding)
    for name, tensor in source_embedding.items():
        assert torch.equal(target_embedding[name], tensor), name
    source_unet = source_pipeline.unet.state_dict()
    assert any(not torch.equal(source_unet[name], tensor) for name, tensor in target_pipeline.unet.state_dict().items())

    target_pipeline.set_progress_bar_config(disable=True)
    images = target_pipeline(
        ["the numeral 7", "seven, scribbled with a pen"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 8, 8, 1)
    assert np.isfinite(images).all()


def test_digits_phrasings_follow_learning_step():
    source_config = parse_recipe_config(
        train_diffusion.DiffusionRecipeConfig, ["--config", SOURCE_CONFIG, "--text_encoder_name_or_path", TEXT_REPO]
    )
    source_data, info = train_diffusion.load_training_data(source_config)
    assert info.kind == "text"
    source_texts = set(source_data["condition"])
    assert source_texts == set(phrasings(SOURCE_TEMPLATES))

    target_config = parse_recipe_config(
        train_diffusion.DiffusionRecipeConfig,
        ["--config", TARGET_CONFIG, "--digits_phrasings", "auto", "--source_model_name_or_path", "any-source"],
    )
    target_data, _ = train_diffusion.load_training_data(target_config)
    target_texts = set(target_data["condition"])
    assert target_texts <= set(phrasings(TARGET_TEMPLATES))
    assert len(target_data) == 10 * target_config.shots_per_class
    assert not target_texts & source_texts


def test_label_data_on_text_source_rejected(text_source, tmp_path):
    source_dir, _ = text_source
    with pytest.raises(ValueError, match="TextEncoderEmbedding.*--condition_type text"):
        train_diffusion.main(
            [
                "--dataset_name", "digits", "--digits_split", "target_train", "--shots_per_class", "1",
                "--source_model_name_or_path", str(source_dir), "--output_dir", str(tmp_path / "labels"), *QUICK,
            ]
        )
    assert not (tmp_path / "labels").exists()


def test_text_options_checked():
    config_class = train_diffusion.DiffusionRecipeConfig
    digits = ["--dataset_name", "digits"]
    with pytest.raises(ValueError, match="needs --text_encoder_name_or_path"):
        parse_recipe_config(config_class, [*digits, "--condition_type", "text"])
    with pytest.raises(ValueError, match="add --condition_type text"):
        parse_recipe_config(config_class, [*digits, "--text_encoder_name_or_path", TEXT_REPO])
    with pytest.raises(ValueError, match="drop --text_encoder_name_or_path"):
        parse_recipe_config(
            config_class,
            [*digits, "--condition_type", "text", "--text_encoder_name_or_path", TEXT_REPO, "--source_model_name_or_path", "src"],
        )
    with pytest.raises(ValueError, match="'caption'"):
        parse_recipe_config(config_class, [*digits, "--condition_type", "caption"])
    with pytest.raises(ValueError, match="--digits_phrasings target applies"):
        parse_recipe_config(config_class, [*digits, "--digits_phrasings", "target"])


def make_captioned_folder(root, captions: list[str]):
    """Write one random 8x8 image per caption into class folder `a`, with the captions in metadata.jsonl."""
    rng = np.random.default_rng(0)
    (root / "a").mkdir(parents=True)
    rows = []
    for index, caption in enumerate(captions):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8), mode="L").save(root / "a" / f"{index}.png")
        rows.append(json.dumps({"file_name": f"a/{index}.png", "caption": caption}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_caption_column_kept_as_text(tmp_path):
    root = make_captioned_folder(tmp_path / "captioned", ["a handwritten two", "the digit one", "seven"])
    dataset, info = set_image_transform(load_image_folder(root), "image", ["caption"], resolution=8, condition_type="text")
    assert info.kind == "text"
    batch = dataset[:3]
    assert sorted(batch["condition"]) == ["a handwritten two", "seven", "the digit one"]
    assert batch["pixel_values"].shape == (3, 1, 8, 8)

    # Without --condition_type text a column of strings still becomes class labels.
    _, labels = set_image_transform(load_image_folder(root), "image", ["caption"], resolution=8)
    assert labels.kind == "class_label"
    assert labels.num_classes == 3


def test_empty_caption_rejected(tmp_path):
    root = make_captioned_folder(tmp_path / "captioned", ["the digit one", "", "seven"])
    with pytest.raises(ValueError, match=r"'caption'.* 1 missing or empty texts, the first in row \d \(''\)"):
        train_diffusion.main(
            [
                "--train_data_dir", str(root), "--condition_type", "text", "--condition_columns", "caption",
                "--text_encoder_name_or_path", TEXT_REPO, "--output_dir", str(tmp_path / "out"), *QUICK,
            ]
        )

    table = Dataset.from_dict({"caption": ["one", "   ", None], "size": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"2 missing or empty texts, the first in row 1 \('   '\)"):
        prepare_conditions(table, ["caption"], "the table", condition_type="text")
    with pytest.raises(ValueError, match="'size'.*needs a column of strings"):
        prepare_conditions(table, ["size"], "the table", condition_type="text")
    with pytest.raises(ValueError, match="one column of strings"):
        prepare_conditions(table, ["caption", "size"], "the table", condition_type="text")
