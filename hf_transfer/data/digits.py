"""sklearn's bundled handwritten digits as a source task and a k-shot target task in another domain."""

from dataclasses import dataclass

import numpy as np
from datasets import Dataset, Features, Value, Array3D
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
MAX_PIXEL = 16.0

# Target domains: fixed transformations of the 8x8 images that keep the class readable.
TARGET_DOMAINS = {
    # A scanner fed the page sideways: the digit turns a quarter turn counter-clockwise.
    "rotate90": lambda images: np.rot90(images, k=1, axes=(-2, -1)),
    # A photographic negative: dark ink on a light background.
    "invert": lambda images: MAX_PIXEL - images,
    # A mirror image, as seen through the back of the page.
    "mirror": lambda images: images[..., ::-1],
}


@dataclass
class DigitsTransferTask:
    """The four splits of the digits transfer task, as `datasets.Dataset`s in torch format.

    Every split has a `pixel_values` column (float32, shape `(1, 8, 8)`, in [-1, 1]) and a
    `condition` column (the int64 class label). `pixels` contains the raw integer intensities
    0..16, for models that dequantise, such as flows.

    Attributes:
        source: untransformed digits, the plentiful source task.
        target_train: `shots_per_class` transformed digits per class, the scarce target data.
        target_pool: all transformed digits of the target's training part; only the evaluation
            classifier trains on it, and `target_train` is drawn from it.
        target_test: held-out transformed digits that neither a generator nor the classifier sees.
    """

    source: Dataset
    target_train: Dataset
    target_pool: Dataset
    target_test: Dataset
    target_domain: str
    shots_per_class: int


def _to_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    images = np.ascontiguousarray(images, dtype=np.float32)
    features = Features(
        {
            "pixel_values": Array3D(shape=(1, 8, 8), dtype="float32"),
            "pixels": Array3D(shape=(1, 8, 8), dtype="float32"),
            "condition": Value("int64"),
        }
    )
    dataset = Dataset.from_dict(
        {
            "pixel_values": (images / MAX_PIXEL * 2.0 - 1.0)[:, None],
            "pixels": images[:, None],
            "condition": labels.astype(np.int64),
        },
        features=features,
    )
    return dataset.with_format("torch")


def make_digits_task(
    shots_per_class: int = 10,
    seed: int = 0,
    target_domain: str = "rotate90",
    source_fraction: float = 0.6,
) -> DigitsTransferTask:
    """Split the 1,797 digits into a source task and a k-shot target task in `target_domain`.

    The split into source, target pool and target test does not depend on `seed`, so every seed
    is evaluated on the same held-out images. `seed` draws the k shots.

    Args:
        shots_per_class (`int`, defaults to 10): target training examples per class, k.
        seed (`int`, defaults to 0): seed of the k-shot draw.
        target_domain (`str`, defaults to `"rotate90"`): one of `rotate90`, `invert`, `mirror`.
        source_fraction (`float`, defaults to 0.6): share of the digits in the source task; the rest
            splits evenly into target pool and target test.
    """
    if target_domain not in TARGET_DOMAINS:
        raise ValueError(f"Unknown target_domain {target_domain!r}; choose one of {sorted(TARGET_DOMAINS)}.")
    if not 0.1 <= source_fraction <= 0.9:
        raise ValueError(f"`source_fraction` must lie in [0.1, 0.9], got {source_fraction}.")
    digits = load_digits()
    images = digits.images.astype(np.float32)
    labels = digits.target

    indices = np.arange(len(labels))
    source_idx, rest_idx = train_test_split(indices, train_size=source_fraction, stratify=labels, random_state=0)
    pool_idx, test_idx = train_test_split(rest_idx, train_size=0.5, stratify=labels[rest_idx], random_state=0)

    smallest_class = np.bincount(labels[pool_idx], minlength=NUM_CLASSES).min()
    if not 1 <= shots_per_class <= smallest_class:
        raise ValueError(
            f"`shots_per_class` must lie in [1, {smallest_class}] (the smallest class of the target pool), "
            f"got {shots_per_class}."
        )

    transform = TARGET_DOMAINS[target_domain]
    target_images = transform(images)

    rng = np.random.default_rng(seed)
    shot_idx = np.concatenate(
        [rng.choice(pool_idx[labels[pool_idx] == label], size=shots_per_class, replace=False) for label in range(NUM_CLASSES)]
    )
    return DigitsTransferTask(
        source=_to_dataset(images[source_idx], labels[source_idx]),
        target_train=_to_dataset(target_images[shot_idx], labels[shot_idx]),
        target_pool=_to_dataset(target_images[pool_idx], labels[pool_idx]),
        target_test=_to_dataset(target_images[test_idx], labels[test_idx]),
        target_domain=target_domain,
        shots_per_class=shots_per_class,
    )
