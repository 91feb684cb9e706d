"""Train a conditional diffusion model with a shared embedding: source learning, or target learning from a source.

Without `--source_model_name_or_path` the recipe fits a new shared embedding h and UNet g on the data
(source learning). With it, the recipe loads that source model and fits the target under
`--strategy` (target learning; `frozen_embedding` keeps h fixed).

    accelerate launch recipes/train_diffusion.py --config recipes/configs/diffusion_digits_source.yaml
    accelerate launch recipes/train_diffusion.py --config recipes/configs/diffusion_digits_target.yaml \\
        --train_data_dir my_images --output_dir my-target

Every option can come from the config file and be overridden on the command line; run with `--help`.
"""

import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from diffusers import DDPMScheduler
from PIL import Image

from hf_transfer import ClassLabelEmbedding, ConditionalDiffusionModel, MLPEmbedding, SharedEmbeddingUNet2DModel
from hf_transfer.data import make_digits_task
from hf_transfer.data.folders import (
    IMAGE_MODE_CHANNELS,
    ConditionInfo,
    load_dataset_source,
    load_image_folder,
    set_image_transform,
)
from hf_transfer.training import make_accelerator, train
from hf_transfer.transfer import get_transfer_model

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recipe_utils import (  # noqa: E402
    RecipeConfig,
    load_source,
    parse_recipe_config,
    push_model,
    save_model,
    save_recipe_config,
    setup_logging,
)

logger = get_logger(__name__)


@dataclass
class DiffusionRecipeConfig(RecipeConfig):
    """Options of the diffusion recipe: the common ones plus images, UNet and noise scheduler."""

    train_data_dir: str | None = field(
        default=None, metadata={"help": "Image folder: one sub-folder per class, optional metadata.csv for extra columns."}
    )
    image_column: str = field(default="image", metadata={"help": "Column of the images."})
    image_mode: str = field(default="L", metadata={"help": "'L' (grayscale, 1 channel) or 'RGB' (3 channels)."})
    resolution: int = field(default=8, metadata={"help": "Side of the square images, in pixels."})
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64], metadata={"help": "UNet channels per block."})
    layers_per_block: int = field(default=1, metadata={"help": "ResNet layers per UNet block."})
    norm_num_groups: int = field(default=8, metadata={"help": "Groups of the UNet's group norms."})
    num_train_timesteps: int = field(default=1000, metadata={"help": "Diffusion timesteps of the DDPM noise scheduler."})
    prediction_type: str = field(default="epsilon", metadata={"help": "epsilon, v_prediction or sample."})
    condition_dropout: float = field(default=0.1, metadata={"help": "Share of conditions dropped for classifier-free guidance."})
    validation_inference_steps: int = field(default=50, metadata={"help": "Denoising steps of the validation samples."})
    guidance_scale: float = field(default=1.0, metadata={"help": "Classifier-free guidance weight of the validation samples."})

    def __post_init__(self):
        sources = [name for name in ("dataset_name", "train_data_dir") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"Pass exactly one of --dataset_name and --train_data_dir, got {sources or 'neither'}; "
                "use --dataset_name digits for the bundled digits."
            )
        if self.image_mode not in IMAGE_MODE_CHANNELS:
            raise ValueError(f"`image_mode` must be one of {sorted(IMAGE_MODE_CHANNELS)}, got {self.image_mode!r}.")
        if self.dataset_name == "digits" and (self.resolution != 8 or self.image_mode != "L"):
            raise ValueError("The digits are 8x8 grayscale; use --resolution 8 --image_mode L with --dataset_name digits.")
        if self.validation_inference_steps < 1:
            raise ValueError(f"`validation_inference_steps` must be at least 1, got {self.validation_inference_steps}.")
        super().__post_init__()


def load_training_data(config: DiffusionRecipeConfig):
    """Return the training data set with its transform set, and the `ConditionInfo` of its conditions."""
    if config.dataset_name == "digits":
        task = make_digits_task(shots_per_class=config.shots_per_class, seed=config.seed, target_domain=config.digits_target_domain)
        # The digits are already arrays in [-1, 1] in torch format, so they need no transform.
        dataset = getattr(task, config.digits_split).select_columns(["pixel_values", "condition"])
        if config.max_train_samples is not None:
            dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
        return dataset, ConditionInfo(kind="class_label", num_classes=10, class_names=[str(label) for label in range(10)])

    if config.train_data_dir is not None:
        source = repr(config.train_data_dir)
        dataset = load_image_folder(config.train_data_dir)
    else:
        source = repr(config.dataset_name)
        dataset = load_dataset_source(config.dataset_name, config.dataset_split, config.dataset_revision)
    if config.max_train_samples is not None:
        dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
    return set_image_transform(dataset, config.image_column, config.condition_columns, config.resolution, config.image_mode, source)


def build_shared_embedding(config: DiffusionRecipeConfig, info: ConditionInfo):
    if info.kind == "class_label":
        return ClassLabelEmbedding(num_classes=info.num_classes, embedding_dim=config.embedding_dim)
    return MLPEmbedding(input_dim=info.dim, embedding_dim=config.embedding_dim)


def build_source_model(config: DiffusionRecipeConfig, info: ConditionInfo) -> ConditionalDiffusionModel:
    """Build a new shared embedding, UNet and DDPM noise scheduler from the options."""
    num_blocks = len(config.block_out_channels)
    unet_config = {
        "sample_size": config.resolution,
        "in_channels": IMAGE_MODE_CHANNELS[config.image_mode],
        "out_channels": IMAGE_MODE_CHANNELS[config.image_mode],
        "block_out_channels": tuple(config.block_out_channels),
        "down_block_types": ("DownBlock2D",) * num_blocks,
        "up_block_types": ("UpBlock2D",) * num_blocks,
        "layers_per_block": config.layers_per_block,
        "norm_num_groups": config.norm_num_groups,
    }
    generator = SharedEmbeddingUNet2DModel(unet_config=unet_config, embedding_dim=config.embedding_dim)
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, prediction_type=config.prediction_type)
    return ConditionalDiffusionModel(build_shared_embedding(config, info), generator, scheduler, config.condition_dropout)


def build_model(config: DiffusionRecipeConfig, info: ConditionInfo):
    if config.source_model_name_or_path is None:
        return build_source_model(config, info)
    source = load_source(config)
    if not isinstance(source, ConditionalDiffusionModel):
        raise ValueError(
            f"{config.source_model_name_or_path!r} contains a {type(source).__name__}, not a diffusion model; "
            "use recipes/train_flow.py for flows."
        )
    source.condition_dropout = config.condition_dropout
    return get_transfer_model(source, config.transfer_config())


def validation_conditions(info: ConditionInfo, dataset) -> torch.Tensor:
    """Return one condition per class (up to 10), or the conditions of the first 8 training examples for vectors."""
    if info.kind == "class_label":
        return torch.arange(min(info.num_classes, 10))
    return dataset[: min(8, len(dataset))]["condition"]


def make_validation_fn(config: DiffusionRecipeConfig, accelerator, conditions: torch.Tensor):
    """Return a `validation_fn` that saves a row of samples as `samples/step-<step>.png` and logs them to the trackers."""
    samples_dir = os.path.join(config.output_dir, "samples")

    def validate(model, global_step: int) -> None:
        pipeline = model.to_pipeline()
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        images = pipeline(
            conditions.to(accelerator.device),
            num_inference_steps=config.validation_inference_steps,
            guidance_scale=config.guidance_scale,
            generator=generator,
            output_type="np",
        ).images
        row = np.concatenate(list(images), axis=1)
        os.makedirs(samples_dir, exist_ok=True)
        path = os.path.join(samples_dir, f"step-{global_step:06d}.png")
        row = row.squeeze(-1) if row.shape[-1] == 1 else row
        Image.fromarray(np.round(row * 255).astype(np.uint8)).save(path)
        logger.info("Saved validation samples %s", path)
        if config.report_to == "tensorboard":
            accelerator.get_tracker("tensorboard").log_images({"validation": images}, step=global_step, dataformats="NHWC")

    return validate


def main(argv: list[str] | None = None) -> dict:
    config = parse_recipe_config(DiffusionRecipeConfig, argv, description=__doc__.splitlines()[0])
    training_config = config.training_config()
    accelerator = make_accelerator(training_config, cpu=config.cpu)
    setup_logging(accelerator)
    # The same seed on every process gives every process the same initial weights.
    set_seed(config.seed)

    dataset, info = load_training_data(config)
    model = build_model(config, info)
    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
        save_recipe_config(config, os.path.join(config.output_dir, "recipe_config.json"))
    validation_fn = None
    if config.validation_steps is not None:
        validation_fn = make_validation_fn(config, accelerator, validation_conditions(info, dataset))

    result = train(
        model,
        dataset,
        training_config,
        accelerator=accelerator,
        validation_fn=validation_fn,
        tracker_config={key: value for key, value in vars(config).items()},
    )
    if accelerator.is_main_process:
        save_model(model, config.output_dir)
        if config.push_to_hub:
            push_model(config, config.output_dir)
    accelerator.wait_for_everyone()
    return {"losses": result.losses, "global_step": result.global_step, "output_dir": config.output_dir}


if __name__ == "__main__":
    main()
