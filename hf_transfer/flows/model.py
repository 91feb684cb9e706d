"""`ConditionalFlowModel`: a shared embedding h and a flow generator g, trained by exact likelihood."""

import json
import os

import torch
from torch import nn

from ..embeddings import SharedEmbedding
from ..hub import check_safetensors_weights, read_json, resolve_checkpoint
from ..transfer.config import TransferConfig
from .generator import ConditionalFlowGenerator

FLOW_MODEL_CONFIG_NAME = "flow_model.json"
FLOW_MODEL_FORMAT_VERSION = 1
SHARED_EMBEDDING_FOLDER = "shared_embedding"
GENERATOR_FOLDER = "generator"


def _shared_embedding_classes() -> dict[str, type]:
    """Return every imported `SharedEmbedding` subclass by name, so that loading imports no named module."""
    found, pending = {}, [SharedEmbedding]
    while pending:
        for subclass in pending.pop().__subclasses__():
            found[subclass.__name__] = subclass
            pending.append(subclass)
    return found


class ConditionalFlowModel(nn.Module):
    """A shared embedding h and a conditional flow g(x; h(z)) with exact log-densities.

    Calling the model on a batch returns its mean negative log-likelihood in nats, so that
    `hf_transfer.training.train` and `get_transfer_model` work on it as on `ConditionalDiffusionModel`.
    The model saves as three parts: `flow_model.json` (the classes and format version),
    `shared_embedding/` and `generator/` (each a diffusers-style `config.json` plus safetensors weights).

    Args:
        shared_embedding (`SharedEmbedding`): h, mapping conditions to vectors of width `embedding_dim`.
        generator (`ConditionalFlowGenerator`): g, whose `context_dim` equals h's `embedding_dim`.

    Example:
        >>> import torch
        >>> from hf_transfer import ClassLabelEmbedding
        >>> from hf_transfer.flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec
        >>> model = ConditionalFlowModel(
        ...     ClassLabelEmbedding(num_classes=3, embedding_dim=4),
        ...     ConditionalFlowGenerator.from_spec(FlowSpec(data_dim=2, context_dim=4, num_layers=2)),
        ... )
        >>> model.sample(5, torch.tensor([1])).shape
        torch.Size([5, 2])
    """

    def __init__(self, shared_embedding: SharedEmbedding, generator: ConditionalFlowGenerator):
        super().__init__()
        if not isinstance(shared_embedding, SharedEmbedding):
            raise TypeError(f"`shared_embedding` must be a SharedEmbedding, got {type(shared_embedding).__name__}.")
        if not isinstance(generator, ConditionalFlowGenerator):
            raise TypeError(
                f"`generator` must be a ConditionalFlowGenerator, got {type(generator).__name__}; build one with "
                "ConditionalFlowGenerator.from_spec(FlowSpec(...))."
            )
        if shared_embedding.embedding_dim != generator.context_dim:
            raise ValueError(
                f"The shared embedding has width {shared_embedding.embedding_dim} but the flow expects a context of "
                f"width {generator.context_dim}; build the flow with context_dim={shared_embedding.embedding_dim}."
            )
        self.shared_embedding = shared_embedding
        self.generator = generator

    @property
    def data_dim(self) -> int:
        return self.generator.data_dim

    def embed(self, condition, batch_size: int) -> torch.Tensor:
        """Compute h(z) for one condition or for `batch_size` conditions.

        Returns:
            `torch.Tensor` of shape `(1, embedding_dim)` or `(batch_size, embedding_dim)`.
        """
        context = self.shared_embedding(condition)
        if context.shape[0] not in (1, batch_size):
            raise ValueError(
                f"Got {context.shape[0]} conditions for {batch_size} samples; pass one condition for all samples "
                "or one per sample."
            )
        return context

    def log_prob(self, x: torch.Tensor, condition) -> torch.Tensor:
        """Compute the exact log-density log p(x | z) = log g(x; h(z)) in nats.

        Args:
            x (`torch.Tensor` of shape `(batch_size, data_dim)`): data points.
            condition: `batch_size` conditions, or one condition for all points, in the form the shared
                embedding takes (class labels of shape `(batch_size,)` for `ClassLabelEmbedding`).

        Returns:
            `torch.Tensor` of shape `(batch_size,)`.
        """
        # Validate once here and call the normflows model directly, so the data is not checked twice.
        x = self.generator.validate_x(x)
        context = self.generator.validate_context(self.embed(condition, x.shape[0]), x.shape[0])
        return self.generator.flow.log_prob(x, context=context)

    def forward(self, x: torch.Tensor, condition) -> torch.Tensor:
        """Return the mean negative log-likelihood of a batch in nats, the training loss."""
        return -self.log_prob(x, condition).mean()

    @torch.no_grad()
    def sample(self, num_samples: int, condition, return_log_prob: bool = False):
        """Draw samples from p(x | z).

        Args:
            num_samples (`int`): number of samples.
            condition: one condition, broadcast to all samples, or `num_samples` conditions, one per sample.
            return_log_prob (`bool`, defaults to `False`): also return each sample's log-density.

        Returns:
            `torch.Tensor` of shape `(num_samples, data_dim)`, and its log-densities of shape `(num_samples,)`
            if `return_log_prob` is True.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"`num_samples` must be a positive integer, got {num_samples!r}.")
        return self.generator.sample(num_samples, self.embed(condition, num_samples), return_log_prob=return_log_prob)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write the model (and its `transfer_config`, if it has one) into `save_directory`."""
        os.makedirs(save_directory, exist_ok=True)
        self.shared_embedding.save_pretrained(os.path.join(save_directory, SHARED_EMBEDDING_FOLDER))
        self.generator.save_pretrained(os.path.join(save_directory, GENERATOR_FOLDER))
        transfer_config = getattr(self, "transfer_config", None)
        if transfer_config is not None:
            transfer_config.save_pretrained(save_directory)
        index = {
            "format_version": FLOW_MODEL_FORMAT_VERSION,
            "shared_embedding_class": type(self.shared_embedding).__name__,
            "generator_class": type(self.generator).__name__,
            "has_transfer_config": transfer_config is not None,
        }
        path = os.path.join(save_directory, FLOW_MODEL_CONFIG_NAME)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(index, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(path + ".tmp", path)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, revision: str | None = None, subfolder: str | None = None
    ) -> "ConditionalFlowModel":
        """Load a model saved by `save_pretrained` from a local folder or a hub repository id.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): a folder, or a hub id such as `"user/digits-flow"`.
            revision (`str`, *optional*): the hub commit, branch or tag (hub ids only).
            subfolder (`str`, *optional*): the folder inside the repository or directory that contains the model.
        """
        folder = resolve_checkpoint(pretrained_model_name_or_path, revision=revision, subfolder=subfolder).folder
        index = read_json(folder, FLOW_MODEL_CONFIG_NAME)
        version = index.get("format_version", FLOW_MODEL_FORMAT_VERSION)
        if version > FLOW_MODEL_FORMAT_VERSION:
            raise ValueError(
                f"{FLOW_MODEL_CONFIG_NAME} in {os.fspath(folder)!r} has format version {version}, but this library "
                f"reads up to {FLOW_MODEL_FORMAT_VERSION}; upgrade hf_transfer."
            )
        embedding_name = index.get("shared_embedding_class")
        embedding_class = _shared_embedding_classes().get(embedding_name)
        if embedding_class is None:
            raise ValueError(
                f"Unknown shared embedding class {embedding_name!r} in {os.fspath(folder)!r}; import the module that "
                "defines it before loading."
            )
        generator_name = index.get("generator_class")
        if generator_name != ConditionalFlowGenerator.__name__:
            raise ValueError(
                f"Unknown generator class {generator_name!r} in {os.fspath(folder)!r}; expected ConditionalFlowGenerator."
            )

        for part in (SHARED_EMBEDDING_FOLDER, GENERATOR_FOLDER):
            check_safetensors_weights(folder / part)
        shared_embedding = embedding_class.from_pretrained(folder / SHARED_EMBEDDING_FOLDER)
        generator = ConditionalFlowGenerator.from_pretrained(folder / GENERATOR_FOLDER)
        model = cls(shared_embedding, generator)
        if index.get("has_transfer_config"):
            model.transfer_config = TransferConfig.from_pretrained(folder)
        model.eval()
        return model
