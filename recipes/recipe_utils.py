"""Parts shared by the training recipes: options from a config file plus command-line overrides, and saving.

A recipe's options form a dataclass whose fields carry `help` metadata. `parse_recipe_config` turns the
fields into command-line options. `--config FILE` (YAML or JSON) supplies values first, and options
given on the command line override them, as in diffusers' training examples.
"""

import argparse
import dataclasses
import json
import logging
import os
import types
import typing
from dataclasses import dataclass, field

from accelerate.logging import get_logger

from hf_transfer.training import TrainingConfig
from hf_transfer.transfer import STRATEGIES, TransferConfig

logger = get_logger(__name__)

DIGITS_SPLITS = ("source", "target_train", "target_pool", "target_test")


@dataclass
class RecipeConfig:
    """Options every recipe shares: data, source checkpoint and strategy, optimisation, checkpoints, outputs."""

    # Data.
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "'digits' for the bundled digits task, a folder written by Dataset.save_to_disk, or a hub "
            "data set id."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a saved or hub data set."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Revision of a hub data set."})
    digits_split: str = field(
        default="source", metadata={"help": f"Split of the digits task: {', '.join(DIGITS_SPLITS)}."}
    )
    digits_target_domain: str = field(default="rotate90", metadata={"help": "Target domain of the digits task."})
    shots_per_class: int = field(default=10, metadata={"help": "Target examples per class of the digits task."})
    condition_columns: list[str] = field(
        default_factory=lambda: ["label"],
        metadata={
            "help": "One class-label column, numeric columns that form a vector condition, or (diffusion recipe, "
            "with --condition_type text) one column of strings."
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training examples."})

    # Source checkpoint and transfer strategy.
    source_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or folder of a source model; given, the recipe does target learning from it."},
    )
    source_revision: str | None = field(default=None, metadata={"help": "Revision of the source checkpoint."})
    strategy: str = field(default="frozen_embedding", metadata={"help": f"Transfer strategy: {', '.join(STRATEGIES)}."})
    head_init: str = field(default="warm", metadata={"help": "'warm' or 'fresh' generator for frozen_embedding."})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r for the lora strategy."})
    embedding_dim: int = field(default=16, metadata={"help": "Width of the shared embedding h(z) of a new source model."})

    # Optimisation.
    max_train_steps: int = field(default=1000, metadata={"help": "Number of optimizer steps."})
    train_batch_size: int = field(default=64, metadata={"help": "Batch size per process."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    adam_weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "diffusers schedule: constant, linear, cosine, ..."})
    lr_warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps of the learning rate."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; none turns it off."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    mixed_precision: str | None = field(
        default=None,
        metadata={"help": "no, fp16 (GPU only) or bf16; unset takes `accelerate launch --mixed_precision`."},
    )
    use_ema: bool = field(default=True, metadata={"help": "Keep an exponential moving average of the weights."})
    ema_decay: float = field(default=0.995, metadata={"help": "Maximum EMA decay."})
    seed: int = field(default=0, metadata={"help": "Seed of the weights, the data order and the noise."})
    cpu: bool = field(
        default=False,
        metadata={"help": "Train on the CPU even where a GPU exists (needed for several CPU processes)."},
    )

    # Checkpoints, validation and outputs.
    output_dir: str = field(default="hf-transfer-output", metadata={"help": "Folder of the model, checkpoints, samples and logs."})
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a checkpoint every N optimizer steps."})
    checkpoints_total_limit: int | None = field(default=None, metadata={"help": "Keep at most this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None, metadata={"help": "'latest' or a checkpoint folder to resume from."}
    )
    validation_steps: int | None = field(default=None, metadata={"help": "Save validation samples every N optimizer steps."})
    report_to: str = field(default="tensorboard", metadata={"help": "accelerate tracker ('tensorboard') or 'none'."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the trained model to the hub at the end."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repo id for --push_to_hub."})
    hub_private: bool = field(default=False, metadata={"help": "Create the hub repo as private."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a progress bar."})

    def __post_init__(self):
        if self.dataset_name == "digits" and self.digits_split not in DIGITS_SPLITS:
            raise ValueError(f"`digits_split` must be one of {DIGITS_SPLITS}, got {self.digits_split!r}.")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"`max_train_samples` must be at least 1, got {self.max_train_samples}.")
        if self.embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be at least 1, got {self.embedding_dim}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id, the repo to upload to, such as 'user/digits-target'.")
        if self.report_to not in ("tensorboard", "none"):
            raise ValueError(f"`report_to` must be 'tensorboard' or 'none', got {self.report_to!r}.")
        # Build the derived configs once here, so that their checks run before any data or model is loaded.
        self.training_config()
        self.transfer_config()

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(
            max_steps=self.max_train_steps,
            batch_size=self.train_batch_size,
            learning_rate=self.learning_rate,
            weight_decay=self.adam_weight_decay,
            lr_scheduler=self.lr_scheduler,
            lr_warmup_steps=self.lr_warmup_steps,
            max_grad_norm=self.max_grad_norm,
            ema_decay=self.ema_decay if self.use_ema else None,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            mixed_precision=self.mixed_precision,
            seed=self.seed,
            progress_bar=self.progress_bar,
            output_dir=self.output_dir,
            checkpointing_steps=self.checkpointing_steps,
            checkpoints_total_limit=self.checkpoints_total_limit,
            resume_from_checkpoint=self.resume_from_checkpoint,
            validation_steps=self.validation_steps,
            log_with=None if self.report_to == "none" else self.report_to,
            description="target learning" if self.source_model_name_or_path else "source learning",
        )

    def transfer_config(self) -> TransferConfig:
        return TransferConfig(
            strategy=self.strategy,
            head_init=self.head_init,
            seed=self.seed,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_rank,
            base_model_name_or_path=self.source_model_name_or_path,
            base_model_revision=self.source_revision,
        )


def _field_type(annotation) -> tuple[type, bool, bool]:
    """Return `(element type, is_list, is_optional)` of a field annotation such as `list[str] | None`."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        arguments = [argument for argument in typing.get_args(annotation) if argument is not type(None)]
        optional = len(arguments) < len(typing.get_args(annotation))
        annotation = arguments[0]
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True, optional
    return annotation, False, optional


def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _converter(element_type: type, optional: bool):
    base = _parse_bool if element_type is bool else element_type

    def convert(text):
        if optional and isinstance(text, str) and text.lower() in ("none", "null"):
            return None
        return base(text)

    return convert


def build_parser(config_class: type, description: str) -> argparse.ArgumentParser:
    """Build an argparse parser with one option per field of `config_class`, plus `--config`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML or JSON file of option values; command-line options override it.")
    hints = typing.get_type_hints(config_class)
    for item in dataclasses.fields(config_class):
        element_type, is_list, optional = _field_type(hints[item.name])
        options = {"default": argparse.SUPPRESS, "help": item.metadata.get("help", ""), "type": _converter(element_type, optional)}
        if is_list:
            options["nargs"] = "+"
        elif element_type is bool:
            # `--flag` alone means true; `--flag false` turns off a value set in the config file.
            options.update(nargs="?", const=True)
        parser.add_argument(f"--{item.name}", **options)
    return parser


def read_config_file(path: str, config_class: type) -> dict:
    """Read a YAML or JSON file of option values, checking each key against the fields of `config_class`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Config file {path!r} not found.")
    with open(path, encoding="utf-8") as handle:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(handle) or {}
        elif path.endswith(".json"):
            values = json.load(handle)
        else:
            raise ValueError(f"Config file {path!r} must end in .yaml, .yml or .json.")
    if not isinstance(values, dict):
        raise ValueError(f"Config file {path!r} must hold a mapping of option names to values, got {type(values).__name__}.")
    hints = typing.get_type_hints(config_class)
    known = {item.name for item in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"Unknown options {unknown} in {path!r}; see --help for the option names.")
    converted = {}
    for name, value in values.items():
        element_type, is_list, optional = _field_type(hints[name])
        convert = _converter(element_type, optional)
        # YAML reads `1e-3` as a string and JSON has no tuples, so values go through the command-line converters.
        if is_list and isinstance(value, str):
            value = [value]
        if is_list and isinstance(value, list):
            value = [convert(item) if isinstance(item, str) else item for item in value]
        elif isinstance(value, str):
            value = convert(value)
        converted[name] = value
    return converted


def parse_recipe_config(config_class: type, argv: list[str] | None = None, description: str = ""):
    """Return a `config_class` built from its defaults, then `--config FILE`, then the command-line options."""
    parser = build_parser(config_class, description)
    namespace = vars(parser.parse_args(argv))
    config_file = namespace.pop("config")
    values = read_config_file(config_file, config_class) if config_file else {}
    values.update(namespace)
    return config_class(**values)


def setup_logging(accelerator) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not accelerator.is_main_process:
        logging.getLogger("hf_transfer").setLevel(logging.WARNING)


def save_recipe_config(config, path: str) -> None:
    """Write the resolved options as JSON, so that a run can be repeated exactly."""
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(dataclasses.asdict(config), handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.replace(temporary, path)


def load_source(config: RecipeConfig, shared_embedding=None):
    """Load the source model named by `config.source_model_name_or_path` (hub id or folder)."""
    from hf_transfer.hub import load_source_model

    return load_source_model(config.source_model_name_or_path, shared_embedding, revision=config.source_revision)


def save_model(model, output_dir: str) -> None:
    """Save the trained model into `output_dir` (a full pipeline or flow model, plus the transfer config of a target)."""
    from hf_transfer.hub import save_for_upload

    save_for_upload(model, output_dir)
    logger.info("Saved the trained model in %s", output_dir)


def push_model(config: RecipeConfig, output_dir: str) -> None:
    """Upload the saved model folder with hf_transfer.hub.push_to_hub, which leaves the checkpoints out and adds a card."""
    from hf_transfer.hub import push_to_hub

    url = push_to_hub(output_dir, config.hub_model_id, private=config.hub_private)
    logger.info("Pushed %s to %s", output_dir, url)
