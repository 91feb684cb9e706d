from .classifier import DigitClassifier, accuracy, train_classifier
from .grids import save_image_grid
from .kl import KLEstimate, diffusion_kl, estimate_kl, monte_carlo_kl, probability_flow_log_prob, score_error
from .metrics import class_consistency, frechet_distance

__all__ = [
    "DigitClassifier",
    "KLEstimate",
    "accuracy",
    "diffusion_kl",
    "estimate_kl",
    "monte_carlo_kl",
    "probability_flow_log_prob",
    "score_error",
    "class_consistency",
    "frechet_distance",
    "save_image_grid",
    "train_classifier",
]
