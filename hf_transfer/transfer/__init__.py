from .config import STRATEGIES, TRANSFER_CONFIG_NAME, TransferConfig
from .saving import TARGET_WEIGHTS_NAME, load_target_weights, save_target_weights
from .strategies import count_trainable_parameters, freeze, get_transfer_model, print_trainable_parameters

__all__ = [
    "STRATEGIES",
    "TARGET_WEIGHTS_NAME",
    "TRANSFER_CONFIG_NAME",
    "TransferConfig",
    "count_trainable_parameters",
    "freeze",
    "get_transfer_model",
    "load_target_weights",
    "print_trainable_parameters",
    "save_target_weights",
]
