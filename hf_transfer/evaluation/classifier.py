"""A small CNN classifier of target-domain digits, the feature network of the evaluation."""

import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class DigitClassifier(nn.Module):
    """A two-convolution CNN for 8x8 single-channel images in [-1, 1].

    `features` returns the penultimate activations (width `num_features`), the space in which
    the Frechet distance is measured; `forward` returns class logits.
    """

    def __init__(self, num_classes: int = 10, num_features: int = 64):
        super().__init__()
        self.num_features = num_features
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(64 * 4 * 4, num_features), nn.ReLU())
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate activations, shape `(batch_size, num_features)`, for images of shape `(batch_size, 1, 8, 8)`."""
        return self.fc(self.conv(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int = 10,
    epochs: int = 40,
    seed: int = 0,
) -> DigitClassifier:
    """Train a `DigitClassifier` on `images` of shape `(n, 1, 8, 8)` and int `labels` of shape `(n,)`.

    Training uses small random shifts, so the classifier does not hinge on exact pixel positions.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        classifier = DigitClassifier(num_classes)
        optimizer = torch.optim.Adam(classifier.parameters(), lr=2e-3)
        order = torch.Generator().manual_seed(seed)
        classifier.train()
        for _ in range(epochs):
            permutation = torch.randperm(len(images), generator=order)
            for start in range(0, len(images), 64):
                index = permutation[start : start + 64]
                batch = images[index]
                shift = torch.randint(-1, 2, (2,), generator=order).tolist()
                batch = torch.roll(batch, shifts=shift, dims=(-2, -1))
                loss = F.cross_entropy(classifier(batch), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    classifier.eval()
    classifier.requires_grad_(False)
    return classifier


@torch.no_grad()
def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of `images` that `classifier` assigns to their `labels`."""
    predictions = classifier(images).argmax(dim=1)
    return (predictions == labels).float().mean().item()
