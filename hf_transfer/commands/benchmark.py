"""`hf-transfer benchmark`: the known-truth transfer benchmark (KL against target sample size per strategy)."""

import argparse
import dataclasses
import importlib
import logging
import os
import sys

logger = logging.getLogger(__name__)


def _load_benchmark_module():
    """Import `benchmarks.known_truth`, which ships with the source checkout, not with the installed package."""
    try:
        return importlib.import_module("benchmarks.known_truth")
    except ModuleNotFoundError as error:
        if error.name not in ("benchmarks", "benchmarks.known_truth"):
            raise
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, "benchmarks", "known_truth.py")):
        raise SystemExit(
            "hf-transfer benchmark needs benchmarks/known_truth.py from the hf_transfer source checkout; "
            "install the package from a clone with `pip install -e .`."
        )
    sys.path.insert(0, root)
    return importlib.import_module("benchmarks.known_truth")


def _sizes(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(item) for item in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas or spaces, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark",
        help="Run the known-truth transfer benchmark and write a CSV and a log-log KL plot.",
        description=(
            "Fit every transfer strategy, an oracle with the true shared embedding and a negative control on "
            "Gaussian tasks with exact densities, for several target sample sizes and seeds, and write the KL "
            "to the true target distribution per run (CSV), per arm and size (summary CSV) and as a log-log plot."
        ),
    )
    parser.add_argument("--output-dir", required=True, help="Folder for the CSV files, the plot and the settings JSON.")
    parser.add_argument("--quick", action="store_true", help="Run the CI-sized flow grid: one seed, two sizes, short training.")
    parser.add_argument("--model", choices=("flow", "diffusion"), default="flow", help="Model family (default: flow).")
    parser.add_argument("--seeds", type=_sizes, default=None, help="Seeds, e.g. '0,1,2,3' (default: 0,1,2,3; quick: 0).")
    parser.add_argument(
        "--sizes", type=_sizes, default=None, help="Target sample sizes, e.g. '32,316,3162' (default: 32,100,316,1000,3162)."
    )
    parser.add_argument("--arms", default=None, help="Comma-separated arms to run (default: all).")
    parser.add_argument("--workers", type=int, default=1, help="Worker processes with one torch thread each (default: 1).")
    parser.add_argument(
        "--no-early-stopping",
        action="store_true",
        help="Train on the whole sample for the full step budget instead of holding out a validation split.",
    )
    parser.add_argument(
        "--embedding-output-activation",
        choices=("tanh", "none"),
        default=None,
        help="Output activation of the learned shared embedding (default: tanh).",
    )
    parser.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default: 0).")
    parser.add_argument("--learning-rate", type=float, default=None, help="Peak AdamW learning rate (default: 5e-3).")
    parser.add_argument("--source-steps", type=int, default=None, help="Maximum optimizer steps of source learning (default: 2000).")
    parser.add_argument("--target-steps", type=int, default=None, help="Maximum optimizer steps of target learning (default: 1500).")
    parser.add_argument("--eval-steps", type=int, default=None, help="Optimizer steps between validation losses (default: 25).")
    parser.add_argument(
        "--patience", type=int, default=None, help="Validation losses without improvement before stopping (default: 8)."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = _load_benchmark_module()
    overrides = {"model": args.model, "workers": args.workers}
    if args.seeds is not None:
        overrides["seeds"] = args.seeds
    if args.sizes is not None:
        overrides["target_sizes"] = args.sizes
    if args.arms is not None:
        overrides["arms"] = tuple(arm.strip() for arm in args.arms.split(",") if arm.strip())
    if args.no_early_stopping:
        overrides["early_stopping"] = False
    if args.embedding_output_activation is not None:
        overrides["embedding_output_activation"] = args.embedding_output_activation
    optional = {
        "weight_decay": args.weight_decay,
        "learning_rate": args.learning_rate,
        "source_steps": args.source_steps,
        "target_steps": args.target_steps,
        "eval_steps": args.eval_steps,
        "early_stopping_patience": args.patience,
    }
    overrides.update({name: value for name, value in optional.items() if value is not None})
    try:
        settings = module.quick_settings(**overrides) if args.quick else module.BenchmarkSettings(**overrides)
    except ValueError as error:
        raise SystemExit(f"hf-transfer benchmark: {error}") from None
    logger.info("Known-truth benchmark settings: %s", dataclasses.asdict(settings))
    result = module.run_benchmark(settings, args.output_dir)

    print(module.format_summary(result["summary"]))
    for line in result["checks"]:
        print(line)
    for message in result["negative_control_gains"]:
        print(f"WARNING: negative control gains: {message}")
    print(
        f"Finished in {result['seconds']:.0f} s wall time, {result['cpu_seconds']:.0f} s CPU time over "
        f"{settings.workers} worker(s); files in {args.output_dir}"
    )
    return 0
