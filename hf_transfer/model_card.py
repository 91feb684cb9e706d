"""Model cards for transferred models, filled from `model_cards/` templates through huggingface_hub's `ModelCard`."""

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import nn

from .transfer import TRANSFER_CONFIG_NAME, TransferConfig

logger = logging.getLogger(__name__)

# NOTE: the templates sit in the source checkout, outside the package, so a wheel install lacks them
# and `make_model_card` then needs `ModelCardInfo(template_path=...)`.
TEMPLATE_FOLDER = Path(__file__).resolve().parent.parent / "model_cards"
DEFAULT_TEMPLATE = "transfer_model.md"
SAMPLE_GRID_NAME = "samples.png"


@dataclass
class ModelCardInfo:
    """Model card content beyond what the saved files record."""

    source_data: str | None = field(default=None, metadata={"help": "Description of the source data set."})
    target_data: str | None = field(
        default=None, metadata={"help": "Description of the target data set, with its number of samples."}
    )
    datasets: list[str] | None = field(
        default=None, metadata={"help": "Hub ids of the data sets, for the card's metadata."}
    )
    evaluation: list[dict] | None = field(
        default=None,
        metadata={"help": "Evaluation table: one dict per row, for example one per strategy, with metric columns."},
    )
    sample_grid: object = field(
        default=None, metadata={"help": "A PIL image or the path of a PNG file with a grid of samples."}
    )
    limitations: str | None = field(default=None, metadata={"help": "Further limitations, one sentence or more."})
    license: str = field(default="apache-2.0", metadata={"help": "License id of the model weights."})
    model_name: str | None = field(default=None, metadata={"help": "Title of the card; the repo name by default."})
    template_path: str | None = field(
        default=None, metadata={"help": f"Jinja template of the card; model_cards/{DEFAULT_TEMPLATE} by default."}
    )

    def __post_init__(self):
        if self.evaluation is not None:
            if not isinstance(self.evaluation, list) or not all(isinstance(row, dict) for row in self.evaluation):
                raise TypeError("`evaluation` must be a list of dicts, one per table row.")


def format_table(rows: list[dict]) -> str:
    """Render rows of dicts as a markdown table, columns in first-seen order, floats with 4 significant digits."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]

    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(column)) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _is_repo_id(name: str | None) -> bool:
    if not name or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _load_snippet(kind: str, repo_id: str) -> str:
    if kind == "target_weights":
        return (
            "from hf_transfer.transfer.saving import load_target_weights\n\n"
            f'model = load_target_weights("{repo_id}")  # loads the recorded base, then the target weights\n'
            "pipeline = model.to_pipeline()"
        )
    if kind == "flow_model":
        return (
            "from hf_transfer.flows import ConditionalFlowModel\n\n"
            f'model = ConditionalFlowModel.from_pretrained("{repo_id}")'
        )
    return (
        "import torch\n"
        "from hf_transfer import TransferDiffusionPipeline\n\n"
        f'pipeline = TransferDiffusionPipeline.from_pretrained("{repo_id}", use_safetensors=True)\n'
        "images = pipeline(torch.arange(10), num_inference_steps=50).images"
    )


def _describe(component: str, folder: Path, model: nn.Module | None) -> str:
    module = getattr(model, component, None) if model is not None else None
    if module is not None:
        config = dict(getattr(module, "config", {}))
        width = config.get("embedding_dim")
        return f"{type(module).__name__}" + (f" (width {width})" if width else "")
    for subfolder in ((component,) if component == "shared_embedding" else ("unet", "generator")):
        path = folder / subfolder / "config.json"
        if path.is_file():
            with open(path, encoding="utf-8") as handle:
                config = json.load(handle)
            width = config.get("embedding_dim")
            return f"{config.get('_class_name', 'unknown')}" + (f" (width {width})" if width else "")
    return "as in the base checkpoint"


def make_model_card(folder: str | os.PathLike, *, repo_id: str, model: nn.Module | None = None, card_info: ModelCardInfo | None = None) -> ModelCard:
    """Fill the model card of a saved model; a sample grid is written into `folder` as `samples.png`.

    Args:
        folder (`str` or `os.PathLike`): the saved model (full pipeline, flow model or target-only save).
        repo_id (`str`): the repo the card is for; used in the title and the loading example.
        model (`nn.Module`, *optional*): the model the folder was saved from; supplies the trainable
            fraction when the files do not record it.
        card_info (`ModelCardInfo`, *optional*): data descriptions, evaluation table, sample grid and limitations.

    Returns:
        A `huggingface_hub.ModelCard`; write it with `card.save(folder / "README.md")`.
    """
    from .hub import detect_checkpoint_kind
    from .transfer.saving import TARGET_WEIGHTS_NAME

    folder = Path(folder)
    info = card_info or ModelCardInfo()
    kind = detect_checkpoint_kind(folder)
    config = TransferConfig.from_pretrained(folder) if (folder / TRANSFER_CONFIG_NAME).is_file() else None
    if config is None and model is not None:
        config = getattr(model, "transfer_config", None)

    # 1. Base model, from the transfer config or from where the model was loaded.
    checkpoint = getattr(model, "source_checkpoint", None) or getattr(model, "pretrained_checkpoint", None)
    base_name = config.base_model_name_or_path if config and config.base_model_name_or_path else None
    base_revision = config.base_model_revision if base_name else None
    if base_name is None and checkpoint is not None:
        base_name, base_revision = checkpoint.name_or_path, checkpoint.revision
    base_line = "none recorded"
    if base_name:
        base_line = f"`{base_name}`" + (f" at revision `{base_revision}`" if base_revision else "")

    # 2. Trainable fraction, from the target-only metadata or from the model.
    trainable_line = "not recorded"
    if kind == "target_weights" and (folder / TARGET_WEIGHTS_NAME).is_file():
        from safetensors import safe_open

        with safe_open(os.fspath(folder / TARGET_WEIGHTS_NAME), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if "total_parameters" in metadata:
            saved, total = int(metadata["saved_parameters"]), int(metadata["total_parameters"])
            trainable_line = f"{saved:,d} of {total:,d} ({100 * saved / total:.2f}%)"
    elif model is not None and config is not None:
        from .transfer import count_trainable_parameters

        trainable, total = count_trainable_parameters(model)
        trainable_line = f"{trainable:,d} of {total:,d} ({100 * trainable / total:.2f}%)"

    # 3. Sample grid, copied next to the card.
    sample_grid = None
    if info.sample_grid is not None:
        destination = folder / SAMPLE_GRID_NAME
        if isinstance(info.sample_grid, (str, os.PathLike)):
            if not os.path.isfile(info.sample_grid):
                raise FileNotFoundError(f"No sample grid image at {os.fspath(info.sample_grid)!r}.")
            shutil.copyfile(info.sample_grid, destination)
        elif hasattr(info.sample_grid, "save"):
            info.sample_grid.save(destination, format="PNG")
        else:
            raise TypeError(f"`sample_grid` must be a PIL image or a file path, got {type(info.sample_grid).__name__}.")
        sample_grid = SAMPLE_GRID_NAME

    strategy_line = "none (source model)"
    if config is not None:
        strategy_line = f"`{config.strategy}`"
        if config.strategy == "frozen_embedding":
            strategy_line += f", {config.head_init} head"
        if config.strategy == "lora":
            strategy_line += f", rank {config.lora_rank}, alpha {config.lora_alpha}"

    card_data = ModelCardData(
        license=info.license,
        library_name="hf_transfer",
        base_model=base_name if _is_repo_id(base_name) else None,
        datasets=info.datasets,
        tags=["hf-transfer", "knowledge-transfer", "diffusers"] + ([config.strategy] if config else []),
    )
    template_path = info.template_path or os.fspath(TEMPLATE_FOLDER / DEFAULT_TEMPLATE)
    if not os.path.isfile(template_path):
        raise FileNotFoundError(
            f"No model card template at {template_path!r}; pass ModelCardInfo(template_path=...) or install "
            "hf_transfer from a source checkout, which has the model_cards folder."
        )
    return ModelCard.from_template(
        card_data,
        template_path=template_path,
        model_name=info.model_name or repo_id.split("/")[-1],
        checkpoint_kind=kind.replace("_", " "),
        base_model_line=base_line,
        strategy_line=strategy_line,
        shared_embedding_line=_describe("shared_embedding", folder, model),
        generator_line=_describe("generator", folder, model),
        trainable_line=trainable_line,
        source_data=info.source_data,
        target_data=info.target_data,
        evaluation_table=format_table(info.evaluation) if info.evaluation else None,
        sample_grid=sample_grid,
        load_snippet=_load_snippet(kind, repo_id),
        target_only=kind == "target_weights",
        limitations=info.limitations,
    )
