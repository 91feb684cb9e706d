from .base import SharedEmbedding
from .cache import EncoderOutputCache
from .encoders import ImageEncoderEmbedding, PretrainedEncoderEmbedding, TextEncoderEmbedding
from .labels import ClassLabelEmbedding
from .vectors import MLPEmbedding

__all__ = [
    "SharedEmbedding",
    "ClassLabelEmbedding",
    "EncoderOutputCache",
    "ImageEncoderEmbedding",
    "MLPEmbedding",
    "PretrainedEncoderEmbedding",
    "TextEncoderEmbedding",
]
