from .digits import TARGET_DOMAINS, DigitsTransferTask, make_digits_task
from .known_truth import GaussianTask, KnownTruthDataset, KnownTruthTask, TrueEmbedding, make_known_truth_task

__all__ = [
    "TARGET_DOMAINS",
    "DigitsTransferTask",
    "GaussianTask",
    "KnownTruthDataset",
    "KnownTruthTask",
    "TrueEmbedding",
    "make_digits_task",
    "make_known_truth_task",
]
