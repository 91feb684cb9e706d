"""LoRA learning-rate sweep on the digits demo's UNet (target domain rotate90, 10 shots per class).

Trains a digits source model with the demo's settings but 1,200 source steps, or loads it from
`--cache-dir`. Then for each rank and learning rate it trains LoRA adapters on the target with the
demo's target budget and prints one JSON line per run, with the demo's class consistency and
Frechet distance on 20 samples per class. A frozen_embedding run at learning rate 1e-3 comes first
as the reference unless `--no-reference` is given.

Example:
    python benchmarks/lora_learning_rate.py --ranks 4 8 --learning-rates 1e-3 3e-3 1e-2
"""

import argparse
import json
import logging
import time

from hf_transfer.data import make_digits_task
from hf_transfer.demo import DemoSettings, load_or_train_source, sample_images, target_budget
from hf_transfer.evaluation import class_consistency, frechet_distance, train_classifier
from hf_transfer.training import TrainingConfig, train
from hf_transfer.transfer import TransferConfig, count_trainable_parameters, get_transfer_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 8], help="LoRA ranks r; alpha is set equal to r.")
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2], help="Target learning rates.")
    parser.add_argument("--no-reference", action="store_true", help="Skip the frozen_embedding reference run.")
    parser.add_argument("--cache-dir", default="/tmp/lora_exp/cache", help="Folder of the cached source model.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    settings = DemoSettings(samples_per_class=20, num_inference_steps=25, source_steps=1200)
    task = make_digits_task(settings.shots_per_class, seed=settings.seed, target_domain=settings.target_domain)
    pool, test = task.target_pool[:], task.target_test[:]
    classifier = train_classifier(pool["pixel_values"], pool["condition"], seed=0)
    source = load_or_train_source(settings, task, args.cache_dir)
    steps = target_budget(settings, len(task.target_train))

    runs = [] if args.no_reference else [TransferConfig(strategy="frozen_embedding", seed=0)]
    learning_rates = [] if args.no_reference else [1e-3]
    for rank in args.ranks:
        for learning_rate in args.learning_rates:
            runs.append(TransferConfig(strategy="lora", lora_rank=rank, lora_alpha=rank, seed=0))
            learning_rates.append(learning_rate)

    for config, learning_rate in zip(runs, learning_rates):
        model = get_transfer_model(source, config)
        trainable, total = count_trainable_parameters(model)
        started = time.perf_counter()
        training = TrainingConfig(max_steps=steps, batch_size=64, learning_rate=learning_rate, seed=1, progress_bar=False)
        result = train(model, task.target_train.select_columns(["pixel_values", "condition"]), training)
        images, labels = sample_images(model, settings, seed=100)
        row = {
            "strategy": config.strategy,
            "rank": config.lora_rank if config.strategy == "lora" else None,
            "learning_rate": learning_rate,
            "steps": steps,
            "trainable": trainable,
            "total": total,
            "final_loss": sum(result.losses[-20:]) / 20,
            "seconds": time.perf_counter() - started,
            "class_consistency": class_consistency(classifier, images, labels),
            "frechet_distance": frechet_distance(classifier, test["pixel_values"], images),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
