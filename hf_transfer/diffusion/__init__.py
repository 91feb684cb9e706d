from .model import ConditionalDiffusionModel
from .pipeline import TransferDiffusionPipeline
from .unet import ConditionProjection, SharedEmbeddingUNet2DModel
from .unet_condition import SharedEmbeddingUNet2DConditionModel
from .vector import ConditionalVectorDiffusionModel, VectorNoisePredictor

__all__ = ["ConditionalDiffusionModel", "ConditionalVectorDiffusionModel", "VectorNoisePredictor", "ConditionProjection", "SharedEmbeddingUNet2DConditionModel", "SharedEmbeddingUNet2DModel", "TransferDiffusionPipeline"]
