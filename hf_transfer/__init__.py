"""hf_transfer: knowledge transfer for conditional generative models through a shared condition embedding."""

from .diffusion import ConditionalDiffusionModel, ConditionProjection, SharedEmbeddingUNet2DModel, TransferDiffusionPipeline
from .embeddings import (
    ClassLabelEmbedding,
    EncoderOutputCache,
    ImageEncoderEmbedding,
    MLPEmbedding,
    PretrainedEncoderEmbedding,
    SharedEmbedding,
    TextEncoderEmbedding,
)
from .training import TrainingConfig, TrainingResult, train
from .transfer import TransferConfig, count_trainable_parameters, get_transfer_model, print_trainable_parameters
from .utils import HfTransferWarning

__version__ = "0.1.0"

__all__ = [
    "ClassLabelEmbedding",
    "ConditionProjection",
    "ConditionalDiffusionModel",
    "EncoderOutputCache",
    "HfTransferWarning",
    "ImageEncoderEmbedding",
    "MLPEmbedding",
    "PretrainedEncoderEmbedding",
    "SharedEmbedding",
    "SharedEmbeddingUNet2DModel",
    "TextEncoderEmbedding",
    "TrainingConfig",
    "TrainingResult",
    "TransferConfig",
    "TransferDiffusionPipeline",
    "count_trainable_parameters",
    "get_transfer_model",
    "print_trainable_parameters",
    "train",
]
