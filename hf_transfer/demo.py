"""The digits transfer demo: source training, four target strategies, evaluation, pictures."""

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch
from datasets import concatenate_datasets
from diffusers import DDPMScheduler, UNet2DModel

from .data import TARGET_DOMAINS, make_digits_task
from .diffusion import ConditionalDiffusionModel, SharedEmbeddingUNet2DModel, TransferDiffusionPipeline
from .embeddings import ClassLabelEmbedding
from .evaluation import accuracy, class_consistency, frechet_distance, save_image_grid, train_classifier
from .training import TrainingConfig, steps_for_epochs, train
from .transfer import TransferConfig, count_trainable_parameters, get_transfer_model

logger = logging.getLogger(__name__)

NUM_CLASSES = 10


@dataclass
class DemoSettings:
    """Sizes and budgets of the digits demo; `quick()` returns the CI-sized variant."""

    shots_per_class: int = 10
    seed: int = 0
    target_domain: str = "invert"
    embedding_dim: int = 32
    block_out_channels: tuple[int, ...] = (32, 64)
    source_steps: int = 2500
    batch_size: int = 64
    learning_rate: float = 2e-3
    source_seed: int = 0
    # Every strategy gets the same target budget: `target_epochs` passes over the k-shot training
    # shots, clipped to [target_min_steps, target_max_steps]. Within it, each strategy keeps the
    # weights of its lowest denoising loss on held-out validation shots, evaluated every
    # `eval_steps` steps, so no strategy is judged after it has memorised its few examples.
    target_epochs: float = 400.0
    target_min_steps: int = 200
    target_max_steps: int = 800
    validation_shots_per_class: int = 2
    validation_repeats: int = 16
    eval_steps: int = 25
    # Learning rates by start. Generators that start from the source fine-tune below the source
    # rate, and new weights use the source rate. LoRA adapters start at zero and need a higher
    # rate; benchmarks/lora_learning_rate.py sweeps 1e-3 to 3e-2.
    target_learning_rate: float = 1e-3
    lora_learning_rate: float = 1e-2
    condition_dropout: float = 0.1
    guidance_scale: float = 2.0
    num_inference_steps: int = 50
    samples_per_class: int = 50
    strategies: list[str] = field(
        default_factory=lambda: ["frozen_embedding", "frozen_embedding:fresh", "lora", "full_finetune", "from_scratch"]
    )

    def __post_init__(self):
        if not self.validation_shots_per_class < self.shots_per_class:
            raise ValueError(
                f"`shots_per_class` must be larger than `validation_shots_per_class` "
                f"({self.validation_shots_per_class}), got {self.shots_per_class}; use at least "
                f"{self.validation_shots_per_class + 1} shots per class."
            )
        # Parse every strategy name now, so a typo fails before any training starts.
        for name in self.strategies:
            parse_strategy(name)
        if len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"`strategies` lists a strategy twice: {self.strategies}; name each one once.")
        if self.target_domain not in TARGET_DOMAINS:
            raise ValueError(f"Unknown target_domain {self.target_domain!r}; choose one of {sorted(TARGET_DOMAINS)}.")

    @classmethod
    def quick(cls, **overrides) -> "DemoSettings":
        values = dict(
            source_steps=300,
            target_epochs=20.0,
            target_min_steps=60,
            target_max_steps=100,
            num_inference_steps=10,
            samples_per_class=10,
        )
        values.update(overrides)
        return cls(**values)

    def source_key(self) -> str:
        """Hash of every setting that changes the source model, the name of its cache entry."""
        relevant = {
            "target_domain": None,
            "embedding_dim": self.embedding_dim,
            "block_out_channels": list(self.block_out_channels),
            "source_steps": self.source_steps,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "condition_dropout": self.condition_dropout,
            "seed": self.source_seed,
            "version": 1,
        }
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:12]


def parse_strategy(name: str) -> TransferConfig:
    """Turn `strategy` or `strategy:fresh` into a `TransferConfig`."""
    strategy, _, head = name.partition(":")
    try:
        return TransferConfig(strategy=strategy, head_init=head or ("fresh" if strategy == "from_scratch" else "warm"))
    except ValueError as error:
        raise ValueError(
            f"Invalid demo strategy {name!r}: {error} The demo also takes 'frozen_embedding:fresh' for a fresh generator."
        ) from error


def file_stem(config: TransferConfig) -> str:
    """File-name form of a strategy: `frozen_embedding`, `frozen_embedding_fresh`, `lora`, ..."""
    if config.strategy == "frozen_embedding" and config.head_init == "fresh":
        return "frozen_embedding_fresh"
    return config.strategy


def build_source_model(settings: DemoSettings) -> ConditionalDiffusionModel:
    """Build a class-conditional UNet for 8x8 digits with a label shared embedding, freshly initialised."""
    torch.manual_seed(settings.source_seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(settings.block_out_channels),
        down_block_types=("DownBlock2D",) * len(settings.block_out_channels),
        up_block_types=("UpBlock2D",) * len(settings.block_out_channels),
        layers_per_block=1,
        norm_num_groups=8,
    )
    generator = SharedEmbeddingUNet2DModel.from_unet(unet, embedding_dim=settings.embedding_dim)
    shared_embedding = ClassLabelEmbedding(num_classes=NUM_CLASSES, embedding_dim=settings.embedding_dim)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    return ConditionalDiffusionModel(shared_embedding, generator, scheduler, condition_dropout=settings.condition_dropout)


def load_or_train_source(settings: DemoSettings, task, cache_dir: str) -> ConditionalDiffusionModel:
    """Train the source model, or load it from `cache_dir` when these settings trained one before."""
    folder = os.path.join(cache_dir, f"digits-source-{settings.source_key()}")
    if os.path.isfile(os.path.join(folder, "model_index.json")):
        logger.info("Loading the cached source model from %s", folder)
        pipeline = TransferDiffusionPipeline.from_pretrained(folder)
        model = ConditionalDiffusionModel(
            pipeline.shared_embedding, pipeline.unet, pipeline.scheduler, settings.condition_dropout
        )
        return model

    model = build_source_model(settings)
    config = TrainingConfig(
        max_steps=settings.source_steps,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.source_seed,
        description="source",
    )
    train(model, task.source.select_columns(["pixel_values", "condition"]), config)
    # Save into a temporary folder and rename it, so an interrupted save never looks like a cache hit.
    temporary = folder + ".tmp"
    model.to_pipeline().save_pretrained(temporary)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.replace(temporary, folder)
    logger.info("Saved the source model to %s", folder)
    return model


def sample_guided(
    model: ConditionalDiffusionModel, conditions, num_inference_steps: int, guidance_scale: float, seed: int
) -> torch.Tensor:
    """Sample one image per condition with classifier-free guidance; returns images in [-1, 1].

    The sampler is DDPM on a shortened timestep grid. On one source model (measured with 200
    samples, guidance scale 2), DDIM with the inherited `clip_sample=True` gave digits a classifier
    labelled correctly 35% of the time, DDIM with `clip_sample=False` 99%, and 50-step DDPM 99.5%.
    """
    scheduler = DDPMScheduler.from_config(model.noise_scheduler.config)
    pipeline = model.to_pipeline(scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(
        conditions,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="pt",
    ).images


def sample_images(model: ConditionalDiffusionModel, settings: DemoSettings, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `samples_per_class` images per class; returns the images and their labels."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(settings.samples_per_class)
    images = sample_guided(model, labels, settings.num_inference_steps, settings.guidance_scale, seed)
    return images, labels


def split_validation_shots(shots, settings: DemoSettings):
    """Hold out `validation_shots_per_class` of the k shots per class for validation.

    The held-out images are repeated `validation_repeats` times, so each validation pass averages the
    denoising loss over that many noise and timestep draws per image.
    """
    columns = shots.select_columns(["pixel_values", "condition"])
    if settings.validation_shots_per_class == 0:
        return columns, None
    if settings.validation_shots_per_class >= settings.shots_per_class:
        raise ValueError(
            f"`validation_shots_per_class` ({settings.validation_shots_per_class}) must be smaller than "
            f"`shots_per_class` ({settings.shots_per_class}); lower it or set it to 0 to train on every shot."
        )
    labels = shots[:]["condition"].tolist()
    seen: dict[int, int] = {}
    validation_index, train_index = [], []
    for index, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        (validation_index if seen[label] <= settings.validation_shots_per_class else train_index).append(index)
    validation = concatenate_datasets([columns.select(validation_index)] * settings.validation_repeats)
    return columns.select(train_index), validation


def target_learning_rate(settings: DemoSettings, config: TransferConfig) -> float:
    """Return the learning rate for a strategy's start (see `DemoSettings`)."""
    if config.strategy == "lora":
        return settings.lora_learning_rate
    if config.fresh_generator:
        return settings.learning_rate
    return settings.target_learning_rate


def target_budget(settings: DemoSettings, num_examples: int) -> int:
    return steps_for_epochs(
        num_examples,
        settings.batch_size,
        settings.target_epochs,
        min_steps=settings.target_min_steps,
        max_steps=settings.target_max_steps,
    )


def run_demo(settings: DemoSettings, output_dir: str, cache_dir: str | None = None, save_pipeline: bool = True) -> dict:
    """Run the whole demo and write metrics, sample grids and the transferred pipeline to `output_dir`.

    Returns the metrics dictionary that is also written to `output_dir/metrics.json`.
    """
    started = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    # Remove the outputs of an earlier run first, so a folder never mixes two runs' files.
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name == "metrics.json" or (name.startswith("samples_") and name.endswith(".png")):
            os.remove(path)
        elif name == "pipeline" and os.path.isdir(path):
            shutil.rmtree(path)
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "hf_transfer")
    task = make_digits_task(settings.shots_per_class, seed=settings.seed, target_domain=settings.target_domain)

    # 1. The judge: a classifier of target-domain digits trained on the target pool.
    pool, test = task.target_pool[:], task.target_test[:]
    # The judge's seed is fixed, so Frechet distances of different seeds share one feature space.
    classifier = train_classifier(pool["pixel_values"], pool["condition"], seed=0)
    classifier_accuracy = accuracy(classifier, test["pixel_values"], test["condition"])
    logger.info("Target-domain classifier: %.3f accuracy on the held-out target split.", classifier_accuracy)

    # 2. Source learning.
    source = load_or_train_source(settings, task, cache_dir)

    # 3. Target learning under each strategy, with one budget and one validation split for all.
    train_shots, validation_shots = split_validation_shots(task.target_train, settings)
    steps = target_budget(settings, len(train_shots))
    results = {}
    saved_model, saved_config = None, None
    for name in settings.strategies:
        config = parse_strategy(name)
        config.seed = settings.seed
        model = get_transfer_model(source, config)
        trainable, total = count_trainable_parameters(model)
        training = TrainingConfig(
            max_steps=steps,
            batch_size=settings.batch_size,
            learning_rate=target_learning_rate(settings, config),
            seed=settings.seed + 1,
            description=config.label,
            eval_steps=settings.eval_steps,
        )
        result = train(model, train_shots, training, eval_dataset=validation_shots)
        images, labels = sample_images(model, settings, seed=settings.seed + 100)
        results[config.label] = {
            "strategy": config.strategy,
            "head_init": config.head_init,
            "class_consistency": class_consistency(classifier, images, labels),
            "frechet_distance": frechet_distance(classifier, test["pixel_values"], images),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "target_steps": steps,
            "best_step": result.best_step,
        }
        # Up to ten samples per class, one class per column.
        per_class = images.view(NUM_CLASSES, settings.samples_per_class, *images.shape[1:])[:, :10]
        grid = per_class.transpose(0, 1).reshape(-1, *images.shape[1:])
        save_image_grid(grid, os.path.join(output_dir, f"samples_{file_stem(config)}.png"))
        if saved_model is None:
            saved_model, saved_config = model, config
        logger.info("%s: %s", config.label, results[config.label])

    # 4. References: the k-shot images themselves and real held-out images.
    shots = task.target_train[:]
    metrics = {
        "settings": asdict(settings),
        "classifier_accuracy": classifier_accuracy,
        "reference_frechet_distance": {
            "k_shot_training_images": frechet_distance(classifier, test["pixel_values"], shots["pixel_values"]),
            "target_pool_images": frechet_distance(classifier, test["pixel_values"], pool["pixel_values"]),
        },
        "strategies": results,
        "seconds": time.perf_counter() - started,
    }
    if save_pipeline and saved_model is not None:
        # The first strategy's model, written under a temporary name and renamed when complete.
        folder = os.path.join(output_dir, "pipeline")
        temporary = folder + ".tmp"
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        saved_model.to_pipeline().save_pretrained(temporary)
        saved_config.save_pretrained(temporary)
        os.replace(temporary, folder)
        metrics["pipeline"] = folder
    path = os.path.join(output_dir, "metrics.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    os.replace(path + ".tmp", path)
    metrics["seconds"] = time.perf_counter() - started
    return metrics
