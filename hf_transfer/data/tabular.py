"""scikit-learn's bundled diabetes table as a source task and a few-shot target task for vector data.

The table ships inside scikit-learn (no download): 442 patients, ten baseline measurements (age, sex,
body mass index, blood pressure and six blood serum measurements s1..s6) and a measure of disease
progression one year later. The transfer task models the nine measurements other than sex, x in R^9,
given the progression z in R. The source task is one sex (235 patients). The target task is the other
(207 patients), split into a pool of k-shot draws and a held-out test part. The shared-embedding
assumption reads: how the measurements depend on progression is summarised by the same h(z) for both
sexes, while the distribution around it (the generator) differs.

Reference: B. Efron, T. Hastie, I. Johnstone and R. Tibshirani, "Least Angle Regression", Annals of
Statistics 32(2), 2004 (the source of the table).
"""

from dataclasses import dataclass

import numpy as np
from datasets import Dataset, Features, Sequence, Value
from sklearn.datasets import load_diabetes
from sklearn.model_selection import train_test_split

SEX_COLUMN = 1
SOURCE_SEX = 1.0
TARGET_SEX = 2.0
FEATURE_NAMES = ("age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")


@dataclass
class DiabetesTransferTask:
    """The splits of the diabetes transfer task, as `datasets.Dataset`s in torch format.

    Every split has an `x` column (float32, shape `(9,)`: the measurements other than sex, standardised
    with the source task's mean and standard deviation) and a `condition` column (float32, shape `(1,)`:
    the disease progression, standardised the same way).

    Attributes:
        source: every patient of the source sex.
        target_train: `shots_per_stratum` patients of the target sex from each progression quartile.
        target_pool: the target patients that `target_train` is drawn from.
        target_test: held-out target patients.
        log_jacobian: log |det| of the standardisation, in nats per example; add it to a log-density of
            the standardised `x` to get the log-density in the table's units.
    """

    source: Dataset
    target_train: Dataset
    target_pool: Dataset
    target_test: Dataset
    shots_per_stratum: int
    num_strata: int
    log_jacobian: float


def _to_dataset(x: np.ndarray, condition: np.ndarray) -> Dataset:
    features = Features(
        {"x": Sequence(Value("float32"), length=x.shape[1]), "condition": Sequence(Value("float32"), length=1)}
    )
    dataset = Dataset.from_dict(
        {"x": x.astype(np.float32), "condition": condition.astype(np.float32)[:, None]}, features=features
    )
    return dataset.with_format("torch")


def make_diabetes_task(shots_per_stratum: int = 10, seed: int = 0, num_strata: int = 4) -> DiabetesTransferTask:
    """Split the diabetes table into a source sex and a few-shot target sex.

    The target patients split in half into a pool and a test part, the same for every `seed`. The
    `seed` draws `shots_per_stratum` pool patients from each of `num_strata` quantile bins of progression.

    Args:
        shots_per_stratum (`int`, defaults to 10): target training patients per progression bin.
        seed (`int`, defaults to 0): seed of the k-shot draw.
        num_strata (`int`, defaults to 4): number of progression quantile bins.
    """
    if num_strata < 1:
        raise ValueError(f"`num_strata` must be at least 1, got {num_strata}.")
    table = load_diabetes(scaled=False)
    data, progression = table.data.astype(np.float64), table.target.astype(np.float64)
    features = np.delete(data, SEX_COLUMN, axis=1)
    source_rows = data[:, SEX_COLUMN] == SOURCE_SEX
    target_rows = np.flatnonzero(data[:, SEX_COLUMN] == TARGET_SEX)

    # Standardise with source statistics alone: the target's few shots must not leak through the scaling.
    mean, std = features[source_rows].mean(0), features[source_rows].std(0)
    z_mean, z_std = progression[source_rows].mean(), progression[source_rows].std()
    x = (features - mean) / std
    z = (progression - z_mean) / z_std

    edges = np.quantile(progression[target_rows], np.linspace(0, 1, num_strata + 1)[1:-1])
    strata = np.searchsorted(edges, progression, side="right")
    pool_idx, test_idx = train_test_split(target_rows, train_size=0.5, stratify=strata[target_rows], random_state=0)
    smallest = np.bincount(strata[pool_idx], minlength=num_strata).min()
    if not 1 <= shots_per_stratum <= smallest:
        raise ValueError(
            f"`shots_per_stratum` must lie in [1, {smallest}] (the smallest progression bin of the target pool), "
            f"got {shots_per_stratum}."
        )
    rng = np.random.default_rng(seed)
    shot_idx = np.concatenate(
        [rng.choice(pool_idx[strata[pool_idx] == stratum], size=shots_per_stratum, replace=False) for stratum in range(num_strata)]
    )
    return DiabetesTransferTask(
        source=_to_dataset(x[source_rows], z[source_rows]),
        target_train=_to_dataset(x[shot_idx], z[shot_idx]),
        target_pool=_to_dataset(x[pool_idx], z[pool_idx]),
        target_test=_to_dataset(x[test_idx], z[test_idx]),
        shots_per_stratum=shots_per_stratum,
        num_strata=num_strata,
        log_jacobian=float(-np.log(std).sum()),
    )
