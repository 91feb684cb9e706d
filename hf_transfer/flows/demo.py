"""The flow demo: source learning, then each transfer strategy on a few target shots, scored by held-out NLL."""

import json
import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..data.digits import NUM_CLASSES, make_digits_task
from ..data.tabular import make_diabetes_task
from ..embeddings import ClassLabelEmbedding, MLPEmbedding, SharedEmbedding
from ..training import TrainingConfig, train
from ..transfer import TransferConfig, get_transfer_model
from .data import DIGITS_DIM, DequantizedDigits, bits_per_dim, nll_in_pixel_units
from .generator import ConditionalFlowGenerator
from .model import ConditionalFlowModel
from .spec import FlowSpec

logger = logging.getLogger(__name__)

METRICS_FILE_NAME = "flow_metrics.json"
DATASETS = ("digits", "diabetes")
# (strategy, head_init) pairs the demo compares, in table order.
STRATEGY_RUNS = (
    ("frozen_embedding", "warm"),
    ("frozen_embedding", "fresh"),
    ("full_finetune", "warm"),
    ("from_scratch", "fresh"),
)
EVAL_NOISE_SEEDS = (1000, 1001, 1002, 1003)
# (source steps, target steps) of a full and a quick run; target training may stop earlier.
FULL_BUDGET = (1500, 600)
QUICK_BUDGET = (300, 200)


@dataclass
class FlowTask:
    """A source and few-shot target task in flow-ready form.

    Attributes:
        source, source_val: source training and validation examples (`{"x", "condition"}` dicts).
        target_train, target_val: the target shots, split for training and early stopping.
        target_test: held-out target examples, one data set per dequantisation draw.
        log_jacobian: log |det| of the map from the data's own units to x, in nats per example.
        data_dim: dimension of x.
        unit: `"bits/dim"` (images) or `"nats"` (tables), the unit of the reported NLL.
    """

    source: Dataset
    source_val: Dataset
    target_train: Dataset
    target_val: Dataset
    target_test: list
    log_jacobian: float
    data_dim: int
    unit: str


def _stratified_split(labels: np.ndarray, seed: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into train and validation parts, stratified by `labels`, with at least one of each per label."""
    rng = np.random.default_rng(seed)
    train_idx, val_idx = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        num_val = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        val_idx += members[:num_val].tolist()
        train_idx += members[num_val:].tolist()
    return np.sort(np.array(train_idx)), np.sort(np.array(val_idx))


def make_flow_task(
    dataset: str, shots_per_class: int, seed: int, val_fraction: float = 0.2, target_domain: str = "rotate90"
) -> FlowTask:
    """Build the digits or diabetes transfer task for flows.

    Args:
        dataset (`str`): `"digits"` (64-dimensional dequantised images given the class, target domain
            `target_domain`) or `"diabetes"` (nine measurements given disease progression, target the other sex).
        shots_per_class (`int`): target shots per class (digits) or per progression quartile (diabetes).
        seed (`int`): seed of the shot draw and of the train/validation split of the shots.
        val_fraction (`float`, defaults to 0.2): share of the shots held out for early stopping.
        target_domain (`str`, defaults to `"rotate90"`): the digits target domain (see `make_digits_task`).
    """
    if shots_per_class < 2:
        raise ValueError(
            f"`shots_per_class` must be at least 2, got {shots_per_class}: one shot per class is held out for "
            "early stopping and at least one is trained on."
        )
    if dataset == "digits":
        task = make_digits_task(shots_per_class=shots_per_class, seed=seed, target_domain=target_domain)
        source = DequantizedDigits(task.source)
        target = DequantizedDigits(task.target_train)
        source_labels, target_labels = source.condition.numpy(), target.condition.numpy()
        test = [DequantizedDigits(task.target_test, noise_seed=noise_seed) for noise_seed in EVAL_NOISE_SEEDS]
        log_jacobian, data_dim, unit = test[0].log_jacobian, DIGITS_DIM, "bits/dim"
    elif dataset == "diabetes":
        task = make_diabetes_task(shots_per_stratum=shots_per_class, seed=seed)
        source, target = task.source, task.target_train
        # The source split ignores progression. The target split is stratified by progression
        # quartile, the strata the shots were drawn from.
        source_labels = np.zeros(len(source), dtype=int)
        target_labels = np.repeat(np.arange(task.num_strata), shots_per_class)
        test = [task.target_test]
        log_jacobian, data_dim, unit = task.log_jacobian, len(task.target_test[0]["x"]), "nats"
    else:
        raise ValueError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}.")

    source_train_idx, source_val_idx = _stratified_split(source_labels, seed=0, val_fraction=0.1)
    target_train_idx, target_val_idx = _stratified_split(target_labels, seed=seed, val_fraction=val_fraction)
    return FlowTask(
        source=Subset(source, source_train_idx.tolist()),
        source_val=_fixed(Subset(source, source_val_idx.tolist())),
        target_train=Subset(target, target_train_idx.tolist()),
        target_val=_fixed(Subset(target, target_val_idx.tolist())),
        target_test=test,
        log_jacobian=log_jacobian,
        data_dim=data_dim,
        unit=unit,
    )


def _fixed(dataset: Dataset) -> list:
    """Materialise a data set once, so that every validation pass uses the same dequantisation noise."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return [dataset[index] for index in range(len(dataset))]


def build_flow_model(dataset: str) -> ConditionalFlowModel:
    """Build the demo's source model: a class or vector embedding and a spline coupling flow."""
    if dataset == "digits":
        embedding: SharedEmbedding = ClassLabelEmbedding(num_classes=NUM_CLASSES, embedding_dim=16)
        spec = FlowSpec(data_dim=DIGITS_DIM, context_dim=16, num_layers=4, hidden_units=64)
    else:
        embedding = MLPEmbedding(input_dim=1, embedding_dim=4, hidden_dims=(32, 32))
        spec = FlowSpec(data_dim=9, context_dim=4, num_layers=4, hidden_units=32)
    return ConditionalFlowModel(embedding, ConditionalFlowGenerator.from_spec(spec))


@torch.no_grad()
def held_out_nll(model: ConditionalFlowModel, test_sets: list, batch_size: int = 512) -> float:
    """Return the mean negative log-likelihood in nats of the transformed data, averaged over `test_sets`."""
    model.eval()
    totals = []
    for test in test_sets:
        total, count = 0.0, 0
        for start in range(0, len(test), batch_size):
            items = [test[index] for index in range(start, min(start + batch_size, len(test)))]
            x = torch.stack([item["x"] for item in items])
            condition = torch.stack([item["condition"] for item in items])
            total += -model.log_prob(x, condition).sum().item()
            count += len(items)
        totals.append(total / count)
    return float(np.mean(totals))


def _report(nll_x: float, task: FlowTask) -> float:
    nll = nll_in_pixel_units(nll_x, task.log_jacobian)
    return bits_per_dim(nll, task.data_dim) if task.unit == "bits/dim" else nll


def run_flow_demo(
    output_dir: str | os.PathLike,
    shots_per_class: int = 10,
    seed: int = 0,
    quick: bool = False,
    dataset: str = "digits",
    target_domain: str = "rotate90",
) -> dict:
    """Train a source flow, transfer it to a few target shots under each strategy and score held-out target NLL.

    Every strategy gets the same target shots, the same step budget and the same early stopping on a
    held-out fifth of the shots. Each strategy keeps the weights of its lowest validation NLL.

    Args:
        output_dir (`str` or `os.PathLike`): where `flow_metrics.json` is written.
        shots_per_class (`int`, defaults to 10): target shots per class (digits) or per progression
            quartile (diabetes).
        seed (`int`, defaults to 0): seed of the shot draw, the weights and the data order.
        quick (`bool`, defaults to False): short training budgets, for a smoke run.
        dataset (`str`, defaults to `"digits"`): `"digits"` or `"diabetes"`.
        target_domain (`str`, defaults to `"rotate90"`): the digits target domain; ignored for diabetes.

    Returns:
        The metrics dict written to `flow_metrics.json`: per strategy the held-out target NLL
        (`target_nll`, in `unit`), its value in nats per example, the steps trained and the best step.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    task = make_flow_task(dataset, shots_per_class, seed, target_domain=target_domain)
    source_steps, target_steps = QUICK_BUDGET if quick else FULL_BUDGET
    torch.manual_seed(seed)
    source_model = build_flow_model(dataset)

    # 1. Source learning: h and g_source together, early-stopped on a tenth of the source.
    source_config = TrainingConfig(
        max_steps=source_steps,
        batch_size=128,
        learning_rate=1e-3,
        seed=seed,
        eval_steps=max(source_steps // 10, 1),
        progress_bar=False,
        description=f"{dataset} source",
    )
    source_result = train(source_model, task.source, source_config, eval_dataset=task.source_val)
    source_nll = held_out_nll(source_model, task.target_test)
    logger.info("Source model: held-out target NLL %.4f %s before transfer.", _report(source_nll, task), task.unit)

    # 2. Target learning under each strategy, with the same budget and early stopping.
    strategies = {}
    for strategy, head_init in STRATEGY_RUNS:
        transfer_config = TransferConfig(strategy=strategy, head_init=head_init, seed=seed)
        target_model = get_transfer_model(source_model, transfer_config)
        frozen_before = [tensor.clone() for tensor in target_model.shared_embedding.state_dict().values()]
        target_config = TrainingConfig(
            max_steps=target_steps,
            batch_size=64,
            learning_rate=1e-3,
            seed=seed,
            eval_steps=max(target_steps // 40, 1),
            early_stopping_patience=10,
            progress_bar=False,
            description=f"{dataset} {transfer_config.label}",
        )
        result = train(target_model, task.target_train, target_config, eval_dataset=task.target_val)
        if transfer_config.freezes_embedding:
            unchanged = all(
                torch.equal(before, after)
                for before, after in zip(frozen_before, target_model.shared_embedding.state_dict().values())
            )
            if not unchanged:
                raise RuntimeError("The frozen shared embedding changed during target training.")
        nll = held_out_nll(target_model, task.target_test)
        strategies[transfer_config.label] = {
            "target_nll": _report(nll, task),
            "target_nll_nats": nll_in_pixel_units(nll, task.log_jacobian),
            "steps": result.global_step,
            "best_step": result.best_step,
        }
        logger.info("%s: held-out target NLL %.4f %s.", transfer_config.label, strategies[transfer_config.label]["target_nll"], task.unit)

    metrics = {
        "dataset": dataset,
        "target_domain": target_domain if dataset == "digits" else "other sex",
        "unit": task.unit,
        "shots_per_class": shots_per_class,
        "seed": seed,
        "quick": quick,
        "num_target_train": len(task.target_train),
        "num_target_val": len(task.target_val),
        "num_target_test": len(task.target_test[0]),
        "source": {
            "target_nll": _report(source_nll, task),
            "steps": source_result.global_step,
            "best_step": source_result.best_step,
        },
        "strategies": strategies,
        "flow_spec": asdict(source_model.generator.spec),
        "seconds": time.perf_counter() - start,
        # CPU time of this process: close to the wall time on an otherwise idle machine.
        "cpu_seconds": time.process_time() - cpu_start,
    }
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, METRICS_FILE_NAME)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(metrics, handle, indent=2)
        handle.write("\n")
    os.replace(path + ".tmp", path)
    logger.info("Wrote %s.", path)
    return metrics




def format_flow_table(runs: list[dict]) -> str:
    """Format the held-out target NLL of one or more `run_flow_demo` results as a Markdown table.

    With several runs (seeds), each cell is the mean ± sample standard deviation, followed by the per-seed values.
    """
    unit = runs[0]["unit"]
    lines = [f"| strategy | held-out target NLL ({unit}, lower is better) | per seed |", "|---|---|---|"]
    rows = [("source model, no target training", [run["source"]["target_nll"] for run in runs])]
    rows += [(label, [run["strategies"][label]["target_nll"] for run in runs]) for label in runs[0]["strategies"]]
    for label, values in rows:
        cell = f"{np.mean(values):.4f}"
        if len(values) > 1:
            cell += f" ± {np.std(values, ddof=1):.4f}"
        lines.append(f"| {label} | {cell} | {', '.join(f'{value:.4f}' for value in values)} |")
    return "\n".join(lines)


__all__ = ["DATASETS", "FlowTask", "build_flow_model", "format_flow_table", "held_out_nll", "make_flow_task", "run_flow_demo"]
