"""The training recipes on the bundled digits, an image folder and tables, and their data adapters and options."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hf_transfer.data.folders import load_image_folder, load_table, set_image_transform, set_table_transform
from hf_transfer.diffusion import TransferDiffusionPipeline
from hf_transfer.flows import ConditionalFlowModel
from hf_transfer.transfer import TransferConfig

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
sys.path.insert(0, RECIPES_DIR)

import train_diffusion  # noqa: E402
import train_flow  # noqa: E402
from recipe_utils import parse_recipe_config  # noqa: E402

TINY_UNET = ["--block_out_channels", "8", "16", "--norm_num_groups", "4", "--embedding_dim", "4"]
TINY_FLOW = ["--num_layers", "2", "--hidden_units", "8", "--hidden_layers", "1", "--embedding_dim", "4"]
QUIET = ["--progress_bar", "false", "--report_to", "none", "--lr_warmup_steps", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_image_folder(root, classes=("0", "1", "2"), per_class=3, mode="RGB", size=(12, 10)):
    """Write `per_class` random images of `size` (width, height) into one sub-folder per class."""
    rng = np.random.default_rng(0)
    for name in classes:
        os.makedirs(root / name, exist_ok=True)
        for index in range(per_class):
            gray = (rng.random(size[::-1]) * 255).astype(np.uint8)
            Image.fromarray(gray, mode="L").convert(mode).save(root / name / f"{index}.png")
    return root


def test_diffusion_recipe_digits_then_image_folder(tmp_path):
    config_file = tmp_path / "source.yaml"
    config_file.write_text(
        "dataset_name: digits\ndigits_split: source\nmax_train_samples: 40\nmax_train_steps: 50\n"
        "train_batch_size: 8\nlearning_rate: 1e-3\noutput_dir: unused\n"
    )
    source_dir = tmp_path / "source"
    # The command line overrides the file: 2 steps into source_dir.
    source = train_diffusion.main(
        ["--config", str(config_file), "--max_train_steps", "2", "--output_dir", str(source_dir), *TINY_UNET, *QUIET]
    )
    assert source["global_step"] == 2
    assert (source_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    saved_options = json.loads((source_dir / "recipe_config.json").read_text())
    assert saved_options["learning_rate"] == 1e-3
    assert saved_options["max_train_samples"] == 40

    images = make_image_folder(tmp_path / "images")
    target_dir = tmp_path / "target"
    target = train_diffusion.main(
        [
            "--train_data_dir", str(images), "--source_model_name_or_path", str(source_dir),
            "--strategy", "frozen_embedding", "--max_train_steps", "2", "--train_batch_size", "4",
            "--checkpointing_steps", "1", "--checkpoints_total_limit", "1",
            "--validation_steps", "2", "--validation_inference_steps", "2", "--output_dir", str(target_dir), *QUIET,
        ]
    )
    assert target["global_step"] == 2
    assert TransferConfig.from_pretrained(target_dir).strategy == "frozen_embedding"
    assert sorted(path.name for path in target_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert Image.open(target_dir / "samples" / "step-000002.png").size == (8 * 3, 8)

    source_pipeline = TransferDiffusionPipeline.from_pretrained(source_dir)
    target_pipeline = TransferDiffusionPipeline.from_pretrained(target_dir)
    for name, tensor in source_pipeline.shared_embedding.state_dict().items():
        assert torch.equal(target_pipeline.shared_embedding.state_dict()[name], tensor), name
    source_unet = source_pipeline.unet.state_dict()
    assert any(not torch.equal(source_unet[name], tensor) for name, tensor in target_pipeline.unet.state_dict().items())


def test_flow_recipe_digits_and_tables(tmp_path):
    source_dir = tmp_path / "flow-source"
    source = train_flow.main(
        ["--dataset_name", "digits", "--max_train_samples", "40", "--max_train_steps", "2", "--train_batch_size", "20",
         "--validation_steps", "2", "--num_validation_samples", "3", "--output_dir", str(source_dir), *TINY_FLOW, *QUIET]
    )
    assert np.isfinite(source["final_loss"])
    assert np.load(source_dir / "samples" / "step-000002.npy").shape == (10, 3, 64)

    target_dir = tmp_path / "flow-target"
    train_flow.main(
        ["--dataset_name", "digits", "--digits_split", "target_train", "--shots_per_class", "2",
         "--source_model_name_or_path", str(source_dir), "--max_train_steps", "2", "--train_batch_size", "10",
         "--output_dir", str(target_dir), *QUIET]
    )
    source_model = ConditionalFlowModel.from_pretrained(source_dir)
    target_model = ConditionalFlowModel.from_pretrained(target_dir)
    assert torch.equal(target_model.shared_embedding.table.weight, source_model.shared_embedding.table.weight)

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"x1": rng.normal(size=30), "x2": rng.normal(size=30), "group": ["a", "b", "c"] * 10, "dose": rng.random(30)})
    for name, write in (("table.csv", table.to_csv), ("table.parquet", table.to_parquet)):
        write(tmp_path / name, index=False)
    labels = train_flow.main(
        ["--train_file", str(tmp_path / "table.csv"), "--feature_columns", "x1", "x2", "--condition_columns", "group",
         "--max_train_steps", "2", "--train_batch_size", "10", "--output_dir", str(tmp_path / "flow-csv"), *TINY_FLOW, *QUIET]
    )
    assert labels["global_step"] == 2
    vectors = train_flow.main(
        ["--train_file", str(tmp_path / "table.parquet"), "--feature_columns", "x1", "x2", "--condition_columns", "dose",
         "--max_train_steps", "2", "--train_batch_size", "10", "--output_dir", str(tmp_path / "flow-parquet"), *TINY_FLOW, *QUIET]
    )
    assert np.isfinite(vectors["final_loss"])
    assert json.loads((tmp_path / "flow-parquet" / "shared_embedding" / "config.json").read_text())["_class_name"] == "MLPEmbedding"


def test_config_file_and_overrides(tmp_path):
    config_file = tmp_path / "options.yaml"
    config_file.write_text("dataset_name: digits\nlearning_rate: 3e-4\nuse_ema: false\nblock_out_channels: [16, 32]\n")
    config = parse_recipe_config(train_diffusion.DiffusionRecipeConfig, ["--config", str(config_file), "--use_ema", "--max_grad_norm", "none"])
    assert config.learning_rate == 3e-4
    assert config.use_ema is True
    assert config.max_grad_norm is None
    assert config.block_out_channels == [16, 32]

    config_file.write_text("dataset_name: digits\nlearning_rat: 3e-4\n")
    with pytest.raises(ValueError, match="learning_rat"):
        parse_recipe_config(train_diffusion.DiffusionRecipeConfig, ["--config", str(config_file)])
    with pytest.raises(ValueError, match="train_data_dir"):
        parse_recipe_config(train_diffusion.DiffusionRecipeConfig, [])
    with pytest.raises(ValueError, match="hub_model_id"):
        parse_recipe_config(train_diffusion.DiffusionRecipeConfig, ["--dataset_name", "digits", "--push_to_hub"])
    with pytest.raises(ValueError, match="Unknown strategy"):
        parse_recipe_config(train_flow.FlowRecipeConfig, ["--dataset_name", "digits", "--strategy", "freeze"])


def test_image_folder_metadata_columns(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=2)
    rows = [f"{label}/{index}.png,{index * 0.5},{label}.0" for label in ("0", "1", "2") for index in range(2)]
    (root / "metadata.csv").write_text("file_name,brightness,size\n" + "\n".join(rows) + "\n")
    dataset = load_image_folder(root)
    assert {"label", "brightness", "size"} <= set(dataset.column_names)

    labelled, info = set_image_transform(dataset, "image", ["label"], resolution=8, image_mode="L")
    assert info.kind == "class_label"
    assert info.class_names == ["0", "1", "2"]
    batch = labelled[:4]
    assert batch["pixel_values"].shape == (4, 1, 8, 8)
    assert batch["pixel_values"].min() >= -1.0
    assert batch["pixel_values"].max() <= 1.0

    vectors, info = set_image_transform(load_image_folder(root), "image", ["brightness", "size"], resolution=4, image_mode="RGB")
    assert info.kind == "vector"
    assert info.dim == 2
    batch = vectors[:3]
    assert batch["pixel_values"].shape == (3, 3, 4, 4)
    assert batch["condition"].dtype == torch.float32
    assert batch["condition"].shape == (3, 2)


def test_image_folder_errors_name_file_or_column(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")

    root = make_image_folder(tmp_path / "images", classes=("a", "b"), per_class=1)
    dataset = load_image_folder(root)
    with pytest.raises(ValueError, match="'caption'.*label"):
        set_image_transform(dataset, "image", ["caption"], resolution=8)
    with pytest.raises(ValueError, match="'picture'"):
        set_image_transform(dataset, "picture", ["label"], resolution=8)

    deep = np.full((8, 8), 40000, dtype=np.uint16)
    Image.fromarray(deep).save(root / "a" / "deep.png")
    dataset, _ = set_image_transform(load_image_folder(root), "image", ["label"], resolution=8)
    with pytest.raises(ValueError, match=r"deep\.png.*mode 'I;16'"):
        dataset[: len(dataset)]

    (root / "a" / "deep.png").unlink()
    (root / "b" / "broken.png").write_bytes(b"not an image at all")
    dataset, _ = set_image_transform(load_image_folder(root), "image", ["label"], resolution=8)
    with pytest.raises(ValueError, match=r"broken\.png"):
        dataset[: len(dataset)]


def test_table_errors_name_column(tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x1": [0.1, np.nan, 0.3], "x2": [1.0, 2.0, 3.0], "label": [0, 1, 1]}).to_csv(path, index=False)
    table = load_table(str(path))
    with pytest.raises(ValueError, match="'x3'"):
        set_table_transform(table, ["x1", "x3"], ["label"])
    with pytest.raises(ValueError, match="both features and conditions"):
        set_table_transform(table, ["x1", "label"], ["label"])
    dataset, info = set_table_transform(table, ["x1", "x2"], ["label"], source=repr(str(path)))
    assert info.num_classes == 2
    with pytest.raises(ValueError, match="'x1'.*NaN"):
        dataset[:3]
    assert dataset[2:3]["x"].shape == (1, 2)
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        load_table(str(tmp_path / "absent.parquet"))
