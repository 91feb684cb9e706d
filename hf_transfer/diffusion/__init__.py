from .model import ConditionalDiffusionModel
from .pipeline import TransferDiffusionPipeline
from .unet import ConditionProjection, SharedEmbeddingUNet2DModel

__all__ = ["ConditionalDiffusionModel", "ConditionProjection", "SharedEmbeddingUNet2DModel", "TransferDiffusionPipeline"]
