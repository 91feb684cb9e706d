"""Time text-conditioned training steps with and without the encoder output cache, side by side.

The model is the text demo's source model: a frozen MiniLM sentence encoder with a learned
projection, and a small digits UNet. Both variants get the same batches of digit phrasings, and
rounds alternate between them. The script reports the median time per training step and per
embedding call, their ratios (uncached / cached), and the largest difference between cached and
recomputed embeddings.

    python benchmarks/encoder_cache.py --rounds 20
"""

import argparse
import copy
import json
import statistics
import time

import torch

from hf_transfer.data import make_digits_task
from hf_transfer.text_demo import SOURCE_TEMPLATES, TextDemoSettings, build_source_model, default_text_encoder, with_text_conditions


def time_call(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="Timed training steps per variant.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images and phrasings per step.")
    parser.add_argument("--text-encoder", default=None, help="Text encoder id or folder; the bundled MiniLM by default.")
    args = parser.parse_args()

    settings = TextDemoSettings(batch_size=args.batch_size)
    encoder = args.text_encoder or default_text_encoder()
    data = with_text_conditions(make_digits_task().source, SOURCE_TEMPLATES)
    uncached = build_source_model("text_encoder", settings, encoder)
    cached = copy.deepcopy(uncached)
    fill_seconds = time_call(lambda: cached.shared_embedding.enable_encoder_cache(data["condition"], progress_bar=False))

    optimizers = {
        name: torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for name, model in (("uncached", uncached), ("cached", cached))
    }
    models = {"uncached": uncached, "cached": cached}
    step_times = {name: [] for name in models}
    embed_times = {name: [] for name in models}
    order = torch.Generator().manual_seed(0)
    largest_difference = 0.0
    for round_index in range(args.rounds + 1):
        rows = torch.randint(0, len(data), (args.batch_size,), generator=order).tolist()
        batch = data[rows]
        for name in (("uncached", "cached") if round_index % 2 == 0 else ("cached", "uncached")):
            model, optimizer = models[name], optimizers[name]
            model.train()

            def step():
                loss = model(batch["pixel_values"], batch["condition"])
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()

            step_seconds = time_call(step)
            with torch.no_grad():
                embed_seconds = time_call(lambda: model.shared_embedding(batch["condition"]))
            if round_index > 0:  # the first round warms up both variants
                step_times[name].append(step_seconds)
                embed_times[name].append(embed_seconds)
        with torch.no_grad():
            cached.shared_embedding.projection.load_state_dict(uncached.shared_embedding.projection.state_dict())
            difference = (cached.shared_embedding(batch["condition"]) - uncached.shared_embedding(batch["condition"])).abs().max()
        largest_difference = max(largest_difference, difference.item())

    report = {
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "distinct_phrasings": len(cached.shared_embedding.encoder_cache),
        "cache_fill_seconds": fill_seconds,
        "torch_threads": torch.get_num_threads(),
    }
    for label, times in (("training_step", step_times), ("embedding", embed_times)):
        uncached_median = statistics.median(times["uncached"])
        cached_median = statistics.median(times["cached"])
        report[f"{label}_ms_uncached"] = 1000 * uncached_median
        report[f"{label}_ms_cached"] = 1000 * cached_median
        report[f"{label}_speedup"] = uncached_median / cached_median
    report["max_abs_difference_cached_vs_recomputed"] = largest_difference
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
