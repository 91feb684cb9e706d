from .classifier import DigitClassifier, accuracy, train_classifier
from .grids import save_image_grid
from .metrics import class_consistency, frechet_distance

__all__ = ["DigitClassifier", "accuracy", "class_consistency", "frechet_distance", "save_image_grid", "train_classifier"]
