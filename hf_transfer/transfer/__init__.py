from .config import STRATEGIES, TRANSFER_CONFIG_NAME, TransferConfig
from .strategies import count_trainable_parameters, freeze, get_transfer_model, print_trainable_parameters

__all__ = [
    "STRATEGIES",
    "TRANSFER_CONFIG_NAME",
    "TransferConfig",
    "count_trainable_parameters",
    "freeze",
    "get_transfer_model",
    "print_trainable_parameters",
]
