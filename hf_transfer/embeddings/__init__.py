from .base import SharedEmbedding
from .labels import ClassLabelEmbedding
from .vectors import MLPEmbedding

__all__ = ["SharedEmbedding", "ClassLabelEmbedding", "MLPEmbedding"]
