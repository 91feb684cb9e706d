"""Train a conditional normalizing flow with a shared embedding: source learning, or target learning from a source.

Without `--source_model_name_or_path` the recipe fits a new shared embedding h and flow g by maximum
likelihood (source learning). With it, the recipe loads that source flow model and fits the target
under `--strategy` (target learning; `frozen_embedding` keeps h fixed).

    accelerate launch recipes/train_flow.py --config recipes/configs/flow_digits_source.yaml
    accelerate launch recipes/train_flow.py --train_file data.csv --feature_columns x1 x2 \\
        --condition_columns label --output_dir my-flow

Every option can come from the config file and be overridden on the command line; run with `--help`.
"""

import math
import os
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
from accelerate.logging import get_logger
from accelerate.utils import set_seed

from hf_transfer import ClassLabelEmbedding, MLPEmbedding
from hf_transfer.data import make_digits_task
from hf_transfer.data.folders import ConditionInfo, load_table, set_table_transform
from hf_transfer.flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec
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

# sklearn's digits have integer intensities 0..16 over 64 pixels.
DIGITS_LEVELS = 17
DIGITS_DIM = 64


@dataclass
class FlowRecipeConfig(RecipeConfig):
    """Options of the flow recipe: the common ones plus the table columns and the flow architecture."""

    train_file: str | None = field(default=None, metadata={"help": "CSV, TSV, parquet or JSON(L) file of the training rows."})
    feature_columns: list[str] | None = field(
        default=None, metadata={"help": "Numeric columns that form the data x (not used with --dataset_name digits)."}
    )
    dequantization_bound: float = field(
        default=2.0, metadata={"help": "Digits only: dequantised pixels are mapped to [-bound, bound)."}
    )
    flow_type: str = field(default="spline_coupling", metadata={"help": "spline_coupling, spline_autoregressive or masked_autoregressive."})
    num_layers: int = field(default=4, metadata={"help": "Number of flow layers."})
    hidden_units: int = field(default=64, metadata={"help": "Width of each layer's parameter network."})
    hidden_layers: int = field(default=2, metadata={"help": "Residual blocks in each layer's parameter network."})
    num_bins: int = field(default=8, metadata={"help": "Spline bins."})
    tail_bound: float = field(default=3.0, metadata={"help": "Splines act on [-tail_bound, tail_bound]."})
    num_validation_samples: int = field(default=8, metadata={"help": "Samples per validation condition."})

    def __post_init__(self):
        sources = [name for name in ("dataset_name", "train_file") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError(
                f"Pass exactly one of --dataset_name and --train_file, got {sources or 'neither'}; "
                "use --dataset_name digits for the bundled digits."
            )
        if self.dataset_name != "digits" and not self.feature_columns:
            raise ValueError("--feature_columns is required for a table: name the numeric columns that form x.")
        if self.dequantization_bound <= 0:
            raise ValueError(f"`dequantization_bound` must be positive, got {self.dequantization_bound}.")
        if self.num_validation_samples < 1:
            raise ValueError(f"`num_validation_samples` must be at least 1, got {self.num_validation_samples}.")
        super().__post_init__()


def _digits_transform(bound: float):
    scale = 2.0 * bound / DIGITS_LEVELS

    def transform(batch: dict) -> dict:
        pixels = torch.as_tensor(np.asarray(batch["pixels"], dtype=np.float32)).reshape(-1, DIGITS_DIM)
        # Uniform dequantisation noise, fresh at every read, turns the integer pixels into a continuous density.
        # NOTE: accelerate reads one batch ahead, so after a resume this noise differs from an uninterrupted run.
        noise = torch.rand(pixels.shape)
        return {"x": (pixels + noise) * scale - bound, "condition": torch.as_tensor(batch["condition"], dtype=torch.long)}

    return transform


def load_training_data(config: FlowRecipeConfig):
    """Return the training data set with its transform set, and the `ConditionInfo` of its conditions."""
    if config.dataset_name == "digits":
        task = make_digits_task(shots_per_class=config.shots_per_class, seed=config.seed, target_domain=config.digits_target_domain)
        dataset = getattr(task, config.digits_split).with_format(None).select_columns(["pixels", "condition"])
        if config.max_train_samples is not None:
            dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
        dataset.set_transform(_digits_transform(config.dequantization_bound))
        return dataset, DIGITS_DIM, ConditionInfo(kind="class_label", num_classes=10)

    name = config.train_file or config.dataset_name
    dataset = load_table(name, config.dataset_split, config.dataset_revision)
    if config.max_train_samples is not None:
        dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
    dataset, info = set_table_transform(dataset, config.feature_columns, config.condition_columns, repr(name))
    return dataset, len(config.feature_columns), info


def build_model(config: FlowRecipeConfig, data_dim: int, info: ConditionInfo):
    if config.source_model_name_or_path is not None:
        source = load_source(config)
        if not isinstance(source, ConditionalFlowModel):
            raise ValueError(
                f"{config.source_model_name_or_path!r} contains a {type(source).__name__}, not a flow model; "
                "use recipes/train_diffusion.py for diffusion models."
            )
        if source.data_dim != data_dim:
            raise ValueError(f"The source flow models {source.data_dim} dimensions but the data has {data_dim}; pick matching --feature_columns.")
        return get_transfer_model(source, config.transfer_config())

    if info.kind == "class_label":
        embedding = ClassLabelEmbedding(num_classes=info.num_classes, embedding_dim=config.embedding_dim)
    else:
        embedding = MLPEmbedding(input_dim=info.dim, embedding_dim=config.embedding_dim)
    spec = FlowSpec(
        data_dim=data_dim,
        context_dim=config.embedding_dim,
        flow_type=config.flow_type,
        num_layers=config.num_layers,
        hidden_units=config.hidden_units,
        hidden_layers=config.hidden_layers,
        num_bins=config.num_bins,
        tail_bound=config.tail_bound,
    )
    return ConditionalFlowModel(embedding, ConditionalFlowGenerator.from_spec(spec))


def make_validation_fn(config: FlowRecipeConfig, accelerator, conditions: torch.Tensor):
    """Return a `validation_fn` that saves samples for each condition as `samples/step-<step>.npy`, shape `(conditions, samples, data_dim)`."""
    samples_dir = os.path.join(config.output_dir, "samples")

    def validate(model, global_step: int) -> None:
        torch.manual_seed(config.seed)
        batches = []
        for condition in conditions:
            sample = model.sample(config.num_validation_samples, condition.unsqueeze(0).to(accelerator.device))
            batches.append(sample.float().cpu().numpy())
        samples = np.stack(batches)
        os.makedirs(samples_dir, exist_ok=True)
        path = os.path.join(samples_dir, f"step-{global_step:06d}.npy")
        np.save(path, samples)
        logger.info("Saved validation samples %s", path)
        if config.report_to == "tensorboard" and np.isfinite(samples).all():
            accelerator.log({"validation/sample_std": float(samples.std())}, step=global_step)

    return validate


def main(argv: list[str] | None = None) -> dict:
    config = parse_recipe_config(FlowRecipeConfig, argv, description=__doc__.splitlines()[0])
    training_config = config.training_config()
    accelerator = make_accelerator(training_config, cpu=config.cpu)
    setup_logging(accelerator)
    # The same seed on every process gives every process the same initial weights.
    set_seed(config.seed)

    dataset, data_dim, info = load_training_data(config)
    model = build_model(config, data_dim, info)
    if accelerator.is_main_process:
        os.makedirs(config.output_dir, exist_ok=True)
        save_recipe_config(config, os.path.join(config.output_dir, "recipe_config.json"))
    validation_fn = None
    if config.validation_steps is not None:
        if info.kind == "class_label":
            conditions = torch.arange(min(info.num_classes, 10))
        else:
            conditions = dataset[: min(4, len(dataset))]["condition"]
        validation_fn = make_validation_fn(config, accelerator, conditions)

    result = train(
        model,
        dataset,
        training_config,
        accelerator=accelerator,
        validation_fn=validation_fn,
        tracker_config=dict(vars(config)),
    )
    if accelerator.is_main_process:
        save_model(model, config.output_dir)
        if config.push_to_hub:
            push_model(config, config.output_dir)
    accelerator.wait_for_everyone()
    final_loss = result.losses[-1] if result.losses else math.nan
    return {"losses": result.losses, "global_step": result.global_step, "final_loss": final_loss, "output_dir": config.output_dir}


if __name__ == "__main__":
    main()
