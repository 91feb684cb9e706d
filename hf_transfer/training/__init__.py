from .checkpointing import TrainingState, list_checkpoints, load_checkpoint, save_checkpoint
from .launch import make_accelerator
from .loop import TrainingConfig, TrainingResult, set_train_mode, steps_for_epochs, train, trainable_parameters

__all__ = ["TrainingState", "list_checkpoints", "load_checkpoint", "make_accelerator", "save_checkpoint", "TrainingConfig", "TrainingResult", "set_train_mode", "steps_for_epochs", "train", "trainable_parameters"]
