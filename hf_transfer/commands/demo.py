"""`hf-transfer demo`: watch a digits model transfer to a k-shot target task."""

import argparse
import logging
import os
import statistics

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Train on digits, transfer to a k-shot target domain, compare strategies.",
        description=(
            "Trains a class-conditional diffusion model on sklearn's digits (the source task), transfers it to "
            "a few digits per class in another domain under each strategy, and scores every strategy on "
            "held-out target images."
        ),
    )
    parser.add_argument("--output-dir", default="outputs/demo", help="Folder for metrics, sample grids and the pipeline.")
    parser.add_argument("--quick", action="store_true", help="Run a small version (about a minute) for smoke tests.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the k-shot draw, the weights and the sampling.")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="Run several seeds and report the mean and standard deviation."
    )
    parser.add_argument("--shots-per-class", "-k", type=int, default=10, help="Target training images per class.")
    parser.add_argument(
        "--target-domain",
        default=None,
        choices=["rotate90", "invert", "mirror"],
        help="Transformation that makes the target domain (default: invert for diffusion, rotate90 for flows).",
    )
    parser.add_argument(
        "--model",
        default="diffusion",
        choices=["diffusion", "flow"],
        help="Model family: a diffusion UNet, or a normalizing flow scored by exact held-out NLL.",
    )
    parser.add_argument(
        "--dataset",
        default="digits",
        choices=["digits", "diabetes"],
        help="Data of the flow demo (--model flow only): dequantised digits, or sklearn's diabetes table.",
    )
    parser.add_argument(
        "--condition",
        default="label",
        choices=["label", "text"],
        help="Condition of the diffusion demo: the class id, or short descriptions encoded by MiniLM "
        "(needs the `text` extra), with target phrasings never seen in source training.",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        help="Target strategies to compare (diffusion demo): frozen_embedding, frozen_embedding:fresh, lora, "
        "full_finetune, from_scratch. Default: all five.",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="Folder of cached source models (default: ~/.cache/hf_transfer).",
    )
    parser.set_defaults(func=run)


def format_table(rows: dict[str, dict], spread: dict[str, dict] | None = None) -> str:
    """Format per-strategy metrics as a Markdown table."""
    lines = [
        "| strategy | class consistency (higher is better) | Frechet distance (lower is better) | trainable params |",
        "|---|---|---|---|",
    ]
    for label, row in rows.items():
        consistency = f"{row['class_consistency']:.3f}"
        distance = f"{row['frechet_distance']:.1f}"
        if spread:
            consistency += f" ± {spread[label]['class_consistency']:.3f}"
            distance += f" ± {spread[label]['frechet_distance']:.1f}"
        share = 100 * row["trainable_parameters"] / row["total_parameters"]
        lines.append(f"| {label} | {consistency} | {distance} | {row['trainable_parameters']:,} ({share:.2f}%) |")
    return "\n".join(lines)


def summarize_seeds(runs: list[dict]) -> tuple[dict, dict]:
    """Return the per-strategy mean and standard deviation of the metrics over several runs."""
    means, spreads = {}, {}
    for label in runs[0]["strategies"]:
        rows = [run["strategies"][label] for run in runs]
        means[label] = dict(rows[0])
        spreads[label] = {}
        for metric in ("class_consistency", "frechet_distance"):
            values = [row[metric] for row in rows]
            means[label][metric] = statistics.fmean(values)
            spreads[label][metric] = statistics.stdev(values) if len(values) > 1 else 0.0
    return means, spreads


def run(args: argparse.Namespace) -> int:
    from ..demo import DemoSettings, run_demo

    seeds = args.seeds or [args.seed]
    if args.model == "flow":
        return run_flow(args, seeds)
    if args.condition == "text":
        return run_text(args, seeds)
    runs = []
    for seed in seeds:
        factory = DemoSettings.quick if args.quick else DemoSettings
        overrides = {"target_domain": args.target_domain} if args.target_domain else {}
        if args.strategies:
            overrides["strategies"] = args.strategies
        settings = factory(shots_per_class=args.shots_per_class, seed=seed, **overrides)
        output_dir = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed{seed}")
        metrics = run_demo(settings, output_dir, cache_dir=args.cache_dir)
        runs.append(metrics)
        print(f"\nSeed {seed}, k={args.shots_per_class}, target domain {settings.target_domain} ({metrics['seconds']:.0f} s):")
        print(format_table(metrics["strategies"]))
        print(f"Outputs in {output_dir}: metrics.json, samples_*.png, pipeline/")
    if len(runs) > 1:
        means, spreads = summarize_seeds(runs)
        print(f"\nMean ± standard deviation over seeds {seeds}:")
        print(format_table(means, spreads))
    return 0


def run_flow(args: argparse.Namespace, seeds: list[int]) -> int:
    """Run the flow demo for each seed and print the held-out target NLL per strategy."""
    from ..flows.demo import format_flow_table, run_flow_demo

    runs = []
    for seed in seeds:
        output_dir = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed{seed}")
        metrics = run_flow_demo(
            output_dir,
            shots_per_class=args.shots_per_class,
            seed=seed,
            quick=args.quick,
            dataset=args.dataset,
            target_domain=args.target_domain or "rotate90",
        )
        runs.append(metrics)
        print(f"\nFlow on {args.dataset}, seed {seed}, k={args.shots_per_class} ({metrics['seconds']:.0f} s):")
        print(format_flow_table([metrics]))
        print(f"Metrics in {os.path.join(output_dir, 'flow_metrics.json')}")
    if len(runs) > 1:
        print(f"\nMean ± standard deviation over seeds {seeds}:")
        print(format_flow_table(runs))
    return 0


def run_text(args: argparse.Namespace, seeds: list[int]) -> int:
    """Run the text-conditioned demo for each seed and print its table."""
    from ..text_demo import run_text_demo

    for seed in seeds:
        output_dir = args.output_dir if len(seeds) == 1 else os.path.join(args.output_dir, f"seed{seed}")
        metrics = run_text_demo(output_dir, quick=args.quick, seed=seed, shots_per_class=args.shots_per_class)
        print(f"\nText conditions, seed {seed}, k={args.shots_per_class} ({metrics['seconds']:.0f} s):")
        print(format_table(metrics["arms"]))
        print(f"Outputs in {output_dir}: text_metrics.json, text_samples_*.png")
    return 0
