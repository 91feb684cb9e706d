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
from .flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec
from .hub import load_source_model, push_to_hub
from .model_card import ModelCardInfo
from .training import TrainingConfig, TrainingResult, train
from .transfer import (
    TransferConfig,
    count_trainable_parameters,
    get_transfer_model,
    load_target_weights,
    print_trainable_parameters,
    save_target_weights,
)
from .utils import HfTransferWarning

__version__ = "0.1.0"

__all__ = [
    "ClassLabelEmbedding",
    "ConditionProjection",
    "ConditionalDiffusionModel",
    "ConditionalFlowGenerator",
    "ConditionalFlowModel",
    "EncoderOutputCache",
    "FlowSpec",
    "HfTransferWarning",
    "ImageEncoderEmbedding",
    "MLPEmbedding",
    "ModelCardInfo",
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
    "load_source_model",
    "load_target_weights",
    "print_trainable_parameters",
    "push_to_hub",
    "save_target_weights",
    "train",
]
