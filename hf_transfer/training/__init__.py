from .loop import TrainingConfig, TrainingResult, set_train_mode, steps_for_epochs, train, trainable_parameters

__all__ = ["TrainingConfig", "TrainingResult", "set_train_mode", "steps_for_epochs", "train", "trainable_parameters"]
