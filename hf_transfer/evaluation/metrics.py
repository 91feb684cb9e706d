"""Sample-quality metrics in a target-domain classifier's feature space."""

import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from .classifier import DigitClassifier, accuracy


class _FeatureExtractor(nn.Module):
    """Adapter exposing a classifier's penultimate features in the form torchmetrics' FID expects."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images)


@torch.no_grad()
def frechet_distance(classifier: DigitClassifier, real: torch.Tensor, generated: torch.Tensor) -> float:
    """Frechet distance between `real` and `generated` images in the classifier's feature space.

    Both are float tensors of shape `(n, 1, 8, 8)` in [-1, 1]. The formula is torchmetrics'
    `FrechetInceptionDistance` with the classifier as its feature network (Heusel et al.,
    arXiv:1706.08500), computed in float64.
    """
    if real.shape[1:] != generated.shape[1:]:
        raise ValueError(f"Real images have shape {tuple(real.shape[1:])} but generated ones {tuple(generated.shape[1:])}.")
    metric = FrechetInceptionDistance(feature=_FeatureExtractor(classifier), normalize=True, reset_real_features=True)
    metric.update(real.float(), real=True)
    metric.update(generated.float(), real=False)
    return metric.compute().item()


def class_consistency(classifier: DigitClassifier, generated: torch.Tensor, conditions: torch.Tensor) -> float:
    """Share of generated images that the target-domain classifier assigns to the class they were sampled for."""
    return accuracy(classifier, generated.float(), conditions)
