"""Training throughput of the diffusion recipe against a bare PyTorch loop on the same model and data.

The bare loop is the least a training run does: a shuffled DataLoader, forward, backward, AdamW step.
The recipe adds accelerate, the data transform, gradient clipping, EMA, the learning-rate schedule,
tensorboard logging and checkpoints every `--checkpointing_steps` steps. Each side runs twice, with
the two step counts of `--steps`, and the throughput is the extra samples over the extra time, so
that start-up (imports, data and model building, the final save) cancels out. The runs alternate
and repeat; the medians are reported. The target is a ratio of at least 0.95.

    python benchmarks/recipe_throughput.py --steps 100 300 --repeats 3
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch
from torch.utils.data import DataLoader

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO_ROOT, "recipes"))

import train_diffusion  # noqa: E402

from hf_transfer.data import make_digits_task  # noqa: E402


def recipe_arguments(steps: int, batch_size: int, output_dir: str, checkpointing_steps: int) -> list[str]:
    return [
        "--dataset_name", "digits", "--digits_split", "source", "--max_train_steps", str(steps),
        "--train_batch_size", str(batch_size), "--checkpointing_steps", str(checkpointing_steps),
        "--checkpoints_total_limit", "1", "--report_to", "tensorboard", "--progress_bar", "false",
        "--output_dir", output_dir, "--cpu",
    ]


def time_recipe(steps: int, batch_size: int, checkpointing_steps: int) -> float:
    with tempfile.TemporaryDirectory() as output_dir:
        start = time.perf_counter()
        train_diffusion.main(recipe_arguments(steps, batch_size, output_dir, checkpointing_steps))
        return time.perf_counter() - start


def time_bare_loop(steps: int, batch_size: int) -> float:
    config = train_diffusion.parse_recipe_config(
        train_diffusion.DiffusionRecipeConfig, recipe_arguments(steps, batch_size, "unused", 1000)
    )
    start = time.perf_counter()
    torch.manual_seed(0)
    dataset = make_digits_task().source.select_columns(["pixel_values", "condition"])
    model = train_diffusion.build_source_model(config, train_diffusion.load_training_data(config)[1])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    done = 0
    while done < steps:
        for batch in loader:
            loss = model(**batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            done += 1
            if done == steps:
                break
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs=2, default=[100, 300], help="Short and long run, in optimizer steps.")
    parser.add_argument("--batch_size", type=int, default=64, help="Batch size of both loops.")
    parser.add_argument("--checkpointing_steps", type=int, default=100, help="Checkpoint interval of the recipe.")
    parser.add_argument("--repeats", type=int, default=3, help="Alternating repeats of each measurement.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both loops.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    short, long = args.steps
    if long <= short:
        parser.error(f"--steps needs a short and a longer run, got {short} and {long}.")

    extra_samples = (long - short) * args.batch_size
    rates = {"bare_loop": [], "recipe": []}
    for _ in range(args.repeats):
        bare = time_bare_loop(long, args.batch_size) - time_bare_loop(short, args.batch_size)
        recipe = time_recipe(long, args.batch_size, args.checkpointing_steps) - time_recipe(short, args.batch_size, args.checkpointing_steps)
        rates["bare_loop"].append(extra_samples / bare)
        rates["recipe"].append(extra_samples / recipe)

    bare_rate = statistics.median(rates["bare_loop"])
    recipe_rate = statistics.median(rates["recipe"])
    report = {
        "bare_loop_samples_per_second": round(bare_rate, 1),
        "recipe_samples_per_second": round(recipe_rate, 1),
        "ratio": round(recipe_rate / bare_rate, 3),
        "target_ratio": 0.95,
        "all_runs": {name: [round(rate, 1) for rate in values] for name, values in rates.items()},
        "settings": vars(args),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
