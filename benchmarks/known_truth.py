"""Known-truth transfer benchmark: KL to the true target distribution against target sample size, per strategy.

Each seed draws a known-truth task (`hf_transfer.data.known_truth`), fits a source model on a large
source sample and, for every target sample size, fits one target model per arm:

| arm | shared embedding h | generator g |
|---|---|---|
| `from_scratch` | trained on target only | trained on target only |
| `frozen_embedding_fresh` | source-learned, frozen | fresh, trained on target |
| `frozen_embedding_warm` | source-learned, frozen | warm from the source, trained on target |
| `full_finetune` | warm, trained on target | warm, trained on target |
| `oracle` | the true h*, fixed | fresh, trained on target |
| `negative_control` | learned on a source with an unrelated embedding, frozen | warm, trained on target |

Every arm goes through the library's API (`MLPEmbedding`, `TransferConfig`, `get_transfer_model`, `train`).
Flows are scored by Monte Carlo KL(p_target || model) over fresh test pairs with exact log-densities;
diffusion models by the probability-flow ODE KL and the score error against the exact noised score.

Run it with `hf-transfer benchmark --output-dir DIR` (see `hf_transfer/commands/benchmark.py`) or call
`run_benchmark(BenchmarkSettings(...), output_dir)`.
"""

import csv
import dataclasses
import json
import logging
import math
import multiprocessing
import os
import statistics
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from hf_transfer import MLPEmbedding, TrainingConfig, TransferConfig, get_transfer_model, train
from hf_transfer.data.known_truth import KnownTruthDataset, TrueEmbedding, make_known_truth_task
from hf_transfer.diffusion.vector import ConditionalVectorDiffusionModel, VectorNoisePredictor
from hf_transfer.evaluation.kl import diffusion_kl, estimate_kl, score_error
from hf_transfer.flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec

logger = logging.getLogger(__name__)

ARMS = (
    "from_scratch",
    "frozen_embedding_fresh",
    "frozen_embedding_warm",
    "full_finetune",
    "oracle",
    "negative_control",
)
MODELS = ("flow", "diffusion")
TRANSFER_ARMS = {
    "from_scratch": ("from_scratch", "fresh"),
    "frozen_embedding_fresh": ("frozen_embedding", "fresh"),
    "frozen_embedding_warm": ("frozen_embedding", "warm"),
    "full_finetune": ("full_finetune", "warm"),
    "negative_control": ("frozen_embedding", "warm"),
}
RESULTS_NAME = "known_truth_runs.csv"
SUMMARY_NAME = "known_truth_summary.csv"
PLOT_NAME = "known_truth_kl.png"
SETTINGS_NAME = "known_truth_settings.json"


@dataclass
class BenchmarkSettings:
    """Grid and training options of the known-truth benchmark. The defaults are the full flow grid."""

    model: str = field(default="flow", metadata={"help": "Model family: 'flow' (exact KL) or 'diffusion' (ODE KL)."})
    target_sizes: tuple[int, ...] = field(
        default=(32, 100, 316, 1000, 3162), metadata={"help": "Target sample sizes n, validation split included."}
    )
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "Seeds; each draws its own task, data and initial weights."}
    )
    arms: tuple[str, ...] = field(default=ARMS, metadata={"help": f"Arms to run, from {', '.join(ARMS)}."})
    source_size: int = field(default=20000, metadata={"help": "Source sample size (validation split included)."})
    condition_dim: int = field(default=16, metadata={"help": "Width of the condition z."})
    embedding_dim: int = field(default=2, metadata={"help": "Width of the true and the learned shared embedding."})
    data_dim: int = field(default=2, metadata={"help": "Width of x."})
    embedding_hidden_dims: tuple[int, ...] = field(default=(64, 64), metadata={"help": "Hidden widths of the MLPEmbedding."})
    embedding_output_activation: str = field(
        default="tanh", metadata={"help": "Output activation of the learned embedding: 'tanh' (bounded) or 'none'."}
    )
    flow_layers: int = field(default=4, metadata={"help": "Flow layers (model 'flow')."})
    flow_hidden_units: int = field(default=32, metadata={"help": "Width of each flow layer's network (model 'flow')."})
    diffusion_hidden_dims: tuple[int, ...] = field(
        default=(128, 128, 128), metadata={"help": "Hidden widths of the noise predictor (model 'diffusion')."}
    )
    source_steps: int = field(default=2000, metadata={"help": "Maximum optimizer steps of source learning."})
    target_steps: int = field(default=1500, metadata={"help": "Maximum optimizer steps of target learning."})
    source_batch_size: int = field(default=256, metadata={"help": "Batch size of source learning."})
    target_batch_size: int = field(default=128, metadata={"help": "Batch size of target learning (capped at n)."})
    learning_rate: float = field(default=5e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    early_stopping: bool = field(
        default=True,
        metadata={
            "help": "Hold out `validation_fraction` of each sample, stop after `early_stopping_patience` "
            "evaluations without improvement and keep the best weights; if False, train on all of it for the "
            "full step budget."
        },
    )
    validation_fraction: float = field(default=0.2, metadata={"help": "Share of each sample held out for validation."})
    min_validation_size: int = field(default=4, metadata={"help": "Smallest validation split."})
    max_validation_size: int = field(
        default=1000, metadata={"help": "Largest validation split; it bounds the cost of each evaluation on the source."}
    )
    early_stopping_patience: int = field(default=8, metadata={"help": "Evaluations without improvement before stopping."})
    eval_steps: int = field(default=25, metadata={"help": "Optimizer steps between validation losses."})
    num_test_samples: int = field(default=20000, metadata={"help": "Fresh test pairs per KL estimate (flows, score error)."})
    num_ode_samples: int = field(default=1000, metadata={"help": "Test pairs of the probability-flow ODE KL (diffusion)."})
    ode_steps: int = field(default=50, metadata={"help": "RK4 steps of the probability-flow ODE (diffusion)."})
    blow_up_factor: float = field(default=10.0, metadata={"help": "A run blows up when its KL exceeds this times its arm's median."})
    workers: int = field(default=1, metadata={"help": "Worker processes, each with one torch thread; 1 runs in this process."})

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"Unknown model {self.model!r}; choose one of {', '.join(MODELS)}.")
        self.target_sizes = tuple(int(size) for size in self.target_sizes)
        self.seeds = tuple(int(seed) for seed in self.seeds)
        self.arms = tuple(self.arms)
        unknown = sorted(set(self.arms) - set(ARMS))
        if unknown:
            raise ValueError(f"Unknown arms {unknown}; choose from {', '.join(ARMS)}.")
        if not self.arms or not self.seeds or not self.target_sizes:
            raise ValueError("`arms`, `seeds` and `target_sizes` must each name at least one value.")

        smallest = 2 * self.min_validation_size if self.early_stopping else 2
        if min(self.target_sizes) < smallest:
            raise ValueError(
                f"Target sizes must be at least {smallest} to leave training and validation points, got "
                f"{min(self.target_sizes)}; raise the size or lower `min_validation_size`."
            )
        if self.max_validation_size < self.min_validation_size:
            raise ValueError(
                f"`max_validation_size` ({self.max_validation_size}) must be at least `min_validation_size` "
                f"({self.min_validation_size})."
            )
        if not 0.0 < self.validation_fraction < 0.5:
            raise ValueError(f"`validation_fraction` must lie in (0, 0.5), got {self.validation_fraction}.")

        if self.embedding_output_activation not in ("tanh", "none"):
            raise ValueError(f"`embedding_output_activation` must be 'tanh' or 'none', got {self.embedding_output_activation!r}.")
        for name in ("source_size", "source_steps", "target_steps", "num_test_samples", "num_ode_samples", "ode_steps", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        if self.blow_up_factor <= 1:
            raise ValueError(f"`blow_up_factor` must exceed 1, got {self.blow_up_factor}.")


def quick_settings(**overrides) -> BenchmarkSettings:
    """Return the CI-sized flow grid: one seed, two sizes, short training, fewer test pairs."""
    values = dict(
        target_sizes=(32, 1000),
        seeds=(0,),
        arms=("from_scratch", "frozen_embedding_fresh", "oracle", "negative_control"),
        source_size=4000,
        source_steps=800,
        target_steps=600,
        learning_rate=3e-3,
        num_test_samples=5000,
        early_stopping_patience=6,
    )
    values.update(overrides)
    return BenchmarkSettings(**values)


# ---------------------------------------------------------------------------------------------------------
# Models


def _make_embedding(settings: BenchmarkSettings) -> MLPEmbedding:
    return MLPEmbedding(
        input_dim=settings.condition_dim,
        embedding_dim=settings.embedding_dim,
        hidden_dims=settings.embedding_hidden_dims,
        output_activation=settings.embedding_output_activation,
    )


def _make_generator(settings: BenchmarkSettings):
    if settings.model == "flow":
        spec = FlowSpec(
            data_dim=settings.data_dim,
            context_dim=settings.embedding_dim,
            flow_type="masked_autoregressive",
            num_layers=settings.flow_layers,
            hidden_units=settings.flow_hidden_units,
            hidden_layers=1,
            base_distribution="conditional_diag_gaussian",
        )
        return ConditionalFlowGenerator.from_spec(spec)
    return VectorNoisePredictor(
        data_dim=settings.data_dim, embedding_dim=settings.embedding_dim, hidden_dims=settings.diffusion_hidden_dims
    )


def _make_model(settings: BenchmarkSettings, shared_embedding, generator):
    if settings.model == "flow":
        return ConditionalFlowModel(shared_embedding, generator)
    return ConditionalVectorDiffusionModel(shared_embedding, generator)


def _make_source_model(settings: BenchmarkSettings, seed: int):
    torch.manual_seed(seed)
    return _make_model(settings, _make_embedding(settings), _make_generator(settings))


def _split(x: torch.Tensor, condition: torch.Tensor, settings: BenchmarkSettings):
    """Split a sample into training and validation sets; without early stopping, all of it is for training."""
    if not settings.early_stopping:
        return KnownTruthDataset(x, condition), None
    num_validation = round(settings.validation_fraction * len(x))
    num_validation = min(settings.max_validation_size, max(settings.min_validation_size, num_validation))
    return (
        KnownTruthDataset(x[num_validation:], condition[num_validation:]),
        KnownTruthDataset(x[:num_validation], condition[:num_validation]),
    )


def _fit(model, x, condition, settings: BenchmarkSettings, seed: int, max_steps: int, batch_size: int, description: str):
    train_set, eval_set = _split(x, condition, settings)
    config = TrainingConfig(
        max_steps=max_steps,
        batch_size=batch_size,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        seed=seed,
        progress_bar=False,
        description=description,
        eval_steps=settings.eval_steps,
        early_stopping_patience=settings.early_stopping_patience if settings.early_stopping else None,
    )
    return train(model, train_set, config, eval_dataset=eval_set)


def _evaluate(model, task, settings: BenchmarkSettings, seed: int) -> dict:
    test_seed = 1_000_003 + seed
    if settings.model == "flow":
        kl = estimate_kl(task, model.log_prob, num_samples=settings.num_test_samples, seed=test_seed)
        return {"kl": kl.value, "kl_standard_error": kl.standard_error}
    kl = diffusion_kl(model, task, num_samples=settings.num_ode_samples, seed=test_seed, num_steps=settings.ode_steps)
    error = score_error(model, task, num_samples=settings.num_test_samples, seed=test_seed)
    return {
        "kl": kl.value,
        "kl_standard_error": kl.standard_error,
        "score_error": error.value,
        "score_error_standard_error": error.standard_error,
    }


# ---------------------------------------------------------------------------------------------------------
# Jobs: source learning per seed, then every arm per (seed, size). Both run in worker processes.


def _train_source(settings: BenchmarkSettings, seed: int, unrelated: bool) -> dict:
    torch.set_num_threads(1)
    task = make_known_truth_task(settings.condition_dim, settings.embedding_dim, settings.data_dim, seed=seed)
    source_task = task.unrelated_source if unrelated else task.source
    x, condition = source_task.sample_pairs(settings.source_size, torch.Generator().manual_seed(seed))
    model = _make_source_model(settings, seed)
    start = time.perf_counter()
    cpu_start = time.process_time()
    _fit(model, x, condition, settings, seed, settings.source_steps, settings.source_batch_size, f"source seed {seed}")
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    name = "unrelated source" if unrelated else "source"
    logger.info("Seed %d: %s learning took %.1f s.", seed, name, seconds)
    return {"seed": seed, "unrelated": unrelated, "state_dict": model.state_dict(), "seconds": seconds, "cpu_seconds": cpu_seconds}


def _target_model(arm: str, settings: BenchmarkSettings, task, seed: int, sources: dict):
    if arm == "oracle":
        torch.manual_seed(seed + 1)
        return _make_model(settings, TrueEmbedding.from_task(task.target), _make_generator(settings))
    strategy, head_init = TRANSFER_ARMS[arm]
    source = _make_source_model(settings, seed)
    source.load_state_dict(sources["unrelated" if arm == "negative_control" else "shared"])
    return get_transfer_model(source, TransferConfig(strategy=strategy, head_init=head_init, seed=seed))


def _run_size(settings: BenchmarkSettings, seed: int, size: int, sources: dict) -> list[dict]:
    torch.set_num_threads(1)
    task = make_known_truth_task(settings.condition_dim, settings.embedding_dim, settings.data_dim, seed=seed)
    # Nested target samples: the first n of one pool, so sizes differ only by the added points.
    pool_x, pool_condition = task.target.sample_pairs(max(settings.target_sizes), torch.Generator().manual_seed(10_000 + seed))
    x, condition = pool_x[:size], pool_condition[:size]
    rows = []
    for arm in settings.arms:
        model = _target_model(arm, settings, task, seed, sources)
        start = time.perf_counter()
        cpu_start = time.process_time()
        row = {"model": settings.model, "seed": seed, "target_size": size, "arm": arm}
        try:
            result = _fit(model, x, condition, settings, seed, settings.target_steps, settings.target_batch_size, f"{arm} n={size}")
        except FloatingPointError as error:
            # A diverged run is a blow-up, recorded with an infinite KL instead of stopping the grid.
            logger.warning("Seed %d, n=%d, %s: training diverged (%s); recording KL = inf.", seed, size, arm, error)
            row.update(kl=math.inf, kl_standard_error=math.inf, steps=None, best_step=None)
        else:
            row.update(_evaluate(model, task.target, settings, seed))
            row.update(steps=result.global_step, best_step=result.best_step)
        row["seconds"] = round(time.perf_counter() - start, 2)
        # CPU time of this process: unlike wall time, it does not grow when other programs share the cores.
        row["cpu_seconds"] = round(time.process_time() - cpu_start, 2)
        rows.append(row)
    return rows


def _call(job):
    function, arguments = job
    return function(*arguments)


def _map(jobs: list, workers: int, description: str):
    """Yield the results of `jobs` in completion order, in this process or in a pool of spawned workers."""
    progress = tqdm(total=len(jobs), desc=description)
    if workers == 1:
        for job in jobs:
            yield _call(job)
            progress.update(1)
    else:
        # spawn, not fork: a forked child inherits torch's thread pools in an undefined state.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for result in pool.imap_unordered(_call, jobs):
                yield result
                progress.update(1)
    progress.close()


# ---------------------------------------------------------------------------------------------------------
# Summary, files and plot


def summarize(rows: list[dict], arms: tuple[str, ...], blow_up_factor: float = 10.0) -> list[dict]:
    """Aggregate runs per (arm, target size): mean, median, spread across seeds and the blow-up count.

    A run is blown up when its KL exceeds `blow_up_factor` times the median KL of its arm at its size
    (or is infinite).
    """
    summary = []
    sizes = sorted({row["target_size"] for row in rows})
    for arm in arms:
        for size in sizes:
            values = [row["kl"] for row in rows if row["arm"] == arm and row["target_size"] == size]
            if not values:
                continue
            median = statistics.median(values)
            finite = [value for value in values if math.isfinite(value)]
            mean = statistics.fmean(finite) if len(finite) == len(values) else math.inf
            spread = statistics.stdev(finite) / math.sqrt(len(finite)) if len(finite) > 1 else math.nan
            blow_ups = sum(1 for value in values if not math.isfinite(value) or value > blow_up_factor * abs(median))
            entry = {
                "arm": arm,
                "target_size": size,
                "runs": len(values),
                "kl_mean": mean,
                "kl_mean_standard_error": spread,
                "kl_median": median,
                "kl_min": min(values),
                "kl_max": max(values),
                "blow_ups": blow_ups,
            }
            score_errors = [row["score_error"] for row in rows if row["arm"] == arm and row["target_size"] == size and "score_error" in row]
            if score_errors:
                entry["score_error_median"] = statistics.median(score_errors)
            summary.append(entry)
    return summary


def check_targets(summary: list[dict]) -> list[str]:
    """Compare the summary with the benchmark's targets and return one line per check (medians across seeds)."""
    median = {(entry["arm"], entry["target_size"]): entry["kl_median"] for entry in summary}
    sizes = sorted({entry["target_size"] for entry in summary})
    lines = []
    frozen_arms = [arm for arm in ("frozen_embedding_fresh", "frozen_embedding_warm") if (arm, sizes[0]) in median]
    for frozen in frozen_arms:
        for size in sizes:
            scratch = median.get(("from_scratch", size))
            oracle = median.get(("oracle", size))
            if scratch:
                lines.append(f"n={size}: {frozen} / from_scratch = {median[(frozen, size)] / scratch:.3f}")
            if oracle:
                lines.append(f"n={size}: {frozen} / oracle = {median[(frozen, size)] / oracle:.3f}")
    total = sum(entry["blow_ups"] for entry in summary)
    lines.append(f"blown-up runs in all arms: {total}")
    return lines


def negative_control_gains(rows: list[dict]) -> list[str]:
    """Return a message for every size where the negative control beats `from_scratch` by more than 2 standard errors.

    The comparison is paired by seed: both arms see the same target sample and the same test pairs.
    """
    messages = []
    for size in sorted({row["target_size"] for row in rows}):
        pairs = {}
        for row in rows:
            if row["target_size"] == size and row["arm"] in ("negative_control", "from_scratch"):
                pairs.setdefault(row["seed"], {})[row["arm"]] = row
        for seed, arms in sorted(pairs.items()):
            if len(arms) < 2:
                continue
            control, scratch = arms["negative_control"], arms["from_scratch"]
            noise = 2 * math.hypot(control["kl_standard_error"], scratch["kl_standard_error"])
            if control["kl"] < scratch["kl"] - noise:
                messages.append(
                    f"n={size}, seed {seed}: the negative control's KL {control['kl']:.4f} is below from_scratch's "
                    f"{scratch['kl']:.4f} by more than twice the standard error ({noise:.4f})"
                )
    return messages


def format_summary(summary: list[dict]) -> str:
    """Return the summary as a Markdown table: one row per arm, median KL (mean, blow-ups) per target size."""
    sizes = sorted({entry["target_size"] for entry in summary})
    arms = list(dict.fromkeys(entry["arm"] for entry in summary))
    by_key = {(entry["arm"], entry["target_size"]): entry for entry in summary}
    lines = [
        "| arm | " + " | ".join(f"n={size}" for size in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for arm in arms:
        cells = []
        for size in sizes:
            entry = by_key.get((arm, size))
            if entry is None:
                cells.append("")
                continue
            cell = f"{entry['kl_median']:.3f} ({entry['kl_mean']:.3f}"
            cell += f", {entry['blow_ups']} blown up)" if entry["blow_ups"] else ")"
            cells.append(cell)
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if any("score_error_median" in entry for entry in summary):
        lines += ["", "Median score error E||eps - eps*||^2:", "", lines[0], lines[1]]
        for arm in arms:
            cells = [f"{by_key[(arm, size)]['score_error_median']:.4f}" if (arm, size) in by_key else "" for size in sizes]
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_csv(path: str, rows: list[dict]) -> None:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    temporary = path + ".tmp"
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def plot_kl(summary: list[dict], rows: list[dict], path: str, title: str) -> None:
    """Write a log-log plot of the median KL (line) and each seed's KL (dots) against target sample size per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    arms = list(dict.fromkeys(entry["arm"] for entry in summary))
    for index, arm in enumerate(arms):
        color = f"C{index}"
        entries = [entry for entry in summary if entry["arm"] == arm and math.isfinite(entry["kl_median"]) and entry["kl_median"] > 0]
        axes.plot([e["target_size"] for e in entries], [e["kl_median"] for e in entries], "-o", color=color, label=arm)
        runs = [row for row in rows if row["arm"] == arm and math.isfinite(row["kl"]) and row["kl"] > 0]
        axes.scatter([r["target_size"] for r in runs], [r["kl"] for r in runs], color=color, alpha=0.3, s=12)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("target sample size n")
    axes.set_ylabel("KL(p_target || model) [nats]")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    temporary = path + ".tmp.png"
    figure.savefig(temporary, dpi=120)
    plt.close(figure)
    os.replace(temporary, path)


def run_benchmark(settings: BenchmarkSettings, output_dir: str) -> dict:
    """Run the grid and write the per-run CSV, the summary CSV, the settings JSON and the plot into `output_dir`.

    Returns:
        dict with `rows` (one per run), `summary` (per arm and size), `checks` (target ratios),
        `negative_control_gains` (messages, empty when the control gains nothing), `seconds` (wall time),
        `cpu_seconds` (training and evaluation CPU time over all jobs) and `paths`.
    """
    if not isinstance(settings, BenchmarkSettings):
        raise TypeError(f"`settings` must be a BenchmarkSettings, got {type(settings).__name__}.")
    os.makedirs(output_dir, exist_ok=True)
    start = time.perf_counter()
    workers = settings.workers

    # 1. Source learning: the shared-embedding source and, for the negative control, the unrelated one.
    kinds = [False] + ([True] if "negative_control" in settings.arms else [])
    source_jobs = [(_train_source, (settings, seed, unrelated)) for seed in settings.seeds for unrelated in kinds]
    sources: dict[int, dict] = {seed: {} for seed in settings.seeds}
    source_cpu_seconds = 0.0
    for result in _map(source_jobs, workers, f"{settings.model} sources"):
        sources[result["seed"]]["unrelated" if result["unrelated"] else "shared"] = result["state_dict"]
        source_cpu_seconds += result["cpu_seconds"]

    # 2. Target learning: every arm at every size.
    target_jobs = [(_run_size, (settings, seed, size, sources[seed])) for seed in settings.seeds for size in settings.target_sizes]
    rows = []
    partial_path = os.path.join(output_dir, f"{settings.model}_{RESULTS_NAME}").replace(".csv", ".partial.csv")
    for result in _map(target_jobs, workers, f"{settings.model} targets"):
        rows += result
        # The runs so far, under a name that says they are incomplete, for a grid stopped before the end.
        _write_csv(partial_path, rows)
    rows.sort(key=lambda row: (settings.arms.index(row["arm"]), row["target_size"], row["seed"]))
    seconds = time.perf_counter() - start

    # 3. Summaries, files and plot.
    summary = summarize(rows, settings.arms, settings.blow_up_factor)
    checks = check_targets(summary)
    gains = negative_control_gains(rows)
    for message in gains:
        logger.warning("NEGATIVE CONTROL GAINS: %s. The transfer benchmark is not measuring what it claims.", message)
    paths = {
        "runs": os.path.join(output_dir, f"{settings.model}_{RESULTS_NAME}"),
        "summary": os.path.join(output_dir, f"{settings.model}_{SUMMARY_NAME}"),
        "plot": os.path.join(output_dir, f"{settings.model}_{PLOT_NAME}"),
        "settings": os.path.join(output_dir, f"{settings.model}_{SETTINGS_NAME}"),
    }
    _write_csv(paths["runs"], rows)
    os.remove(partial_path)
    _write_csv(paths["summary"], summary)
    plot_kl(summary, rows, paths["plot"], f"Known-truth transfer benchmark ({settings.model})")
    record = {
        "settings": dataclasses.asdict(settings),
        "seconds": round(seconds, 1),
        # Training and evaluation CPU time summed over all jobs, each with one torch thread. Divided by
        # the number of workers, it estimates the wall time on as many otherwise idle cores.
        "cpu_seconds": round(source_cpu_seconds + sum(row["cpu_seconds"] for row in rows), 1),
        "torch_threads_per_worker": 1,
        "cpu_count": os.cpu_count(),
        "checks": checks,
        "negative_control_gains": gains,
    }
    with open(paths["settings"] + ".tmp", "w", encoding="utf-8") as handle:
        json.dump(record, handle, indent=2)
        handle.write("\n")
    os.replace(paths["settings"] + ".tmp", paths["settings"])
    for name, path in paths.items():
        logger.info("Wrote the %s to %s.", name, path)
    return {
        "rows": rows,
        "summary": summary,
        "checks": checks,
        "negative_control_gains": gains,
        "seconds": seconds,
        "cpu_seconds": record["cpu_seconds"],
        "paths": paths,
    }
