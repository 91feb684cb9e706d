from .model import ConditionalDiffusionModel
from .pipeline import TransferDiffusionPipeline
from .unet import ConditionProjection, SharedEmbeddingUNet2DModel
from .unet_condition import SharedEmbeddingUNet2DConditionModel

__all__ = ["ConditionalDiffusionModel", "ConditionProjection", "SharedEmbeddingUNet2DConditionModel", "SharedEmbeddingUNet2DModel", "TransferDiffusionPipeline"]
