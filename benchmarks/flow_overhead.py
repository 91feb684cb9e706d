"""Time the flow adapter against the raw normflows flow it wraps, side by side in one run.

Three pairs, each on the same weights and the same context tensor h = h(z):

| row | adapter | raw normflows |
|---|---|---|
| `log_prob` | `generator.log_prob(x, h)` | `generator.flow.log_prob(x, context=h)` |
| `generator_training_step` | `-generator.log_prob(x, h).mean()`, backward, AdamW | `flow.forward_kld(x, context=h)`, backward, AdamW |
| `model_training_step` | `model(x, condition)` (embeds z), backward, AdamW | `flow.forward_kld(x, context=embedding.embed(z))`, backward, AdamW |

The adapter adds input checks (shape, dtype, NaN and inf) and the condition-count check. Rounds
alternate which variant runs first. The script prints the median time of each and the ratio
adapter / raw (target: at most 1.05), both in wall-clock time and in the process's CPU time. On a
machine shared with other jobs the CPU time is the steadier measure; run with OMP_NUM_THREADS=1
so that it counts one thread's work.

    python benchmarks/flow_overhead.py --rounds 50
"""

import argparse
import copy
import json
import statistics
import time

import torch

from hf_transfer import ClassLabelEmbedding
from hf_transfer.flows import ConditionalFlowGenerator, ConditionalFlowModel, FlowSpec


def time_call(function) -> tuple[float, float]:
    """Run `function` and return its (wall-clock, process CPU) time in seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50, help="Timed calls per variant and row.")
    parser.add_argument("--batch-size", type=int, default=256, help="Data points per call.")
    parser.add_argument("--flow-type", default="spline_coupling", help="FlowSpec flow_type.")
    parser.add_argument("--data-dim", type=int, default=64, help="Dimension of x (64: the digits).")
    parser.add_argument("--num-layers", type=int, default=4, help="Flow layers.")
    parser.add_argument("--hidden-units", type=int, default=64, help="Width of the parameter networks.")
    args = parser.parse_args()

    torch.manual_seed(0)
    spec = FlowSpec(
        data_dim=args.data_dim, context_dim=16, flow_type=args.flow_type, num_layers=args.num_layers, hidden_units=args.hidden_units
    )
    adapter = ConditionalFlowModel(ClassLabelEmbedding(num_classes=10, embedding_dim=16), ConditionalFlowGenerator.from_spec(spec))
    raw = copy.deepcopy(adapter)
    models = {"adapter": adapter, "raw": raw}
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in models.items()}

    def log_prob(name, x, condition, context):
        with torch.no_grad():
            if name == "adapter":
                return adapter.generator.log_prob(x, context)
            return raw.generator.flow.log_prob(x, context=context)

    def generator_step(name, x, condition, context):
        if name == "adapter":
            loss = -adapter.generator.log_prob(x, context).mean()
        else:
            loss = raw.generator.flow.forward_kld(x, context=context)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad()

    def model_step(name, x, condition, context):
        if name == "adapter":
            loss = adapter(x, condition)
        else:
            loss = raw.generator.flow.forward_kld(x, context=raw.shared_embedding.embed(condition))
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad()

    rows = {"log_prob": log_prob, "generator_training_step": generator_step, "model_training_step": model_step}
    clocks = ("wall", "cpu")
    times = {(row, clock): {name: [] for name in models} for row in rows for clock in clocks}
    data = torch.Generator().manual_seed(1)
    for round_index in range(args.rounds + 1):
        x = torch.randn(args.batch_size, args.data_dim, generator=data)
        condition = torch.randint(0, 10, (args.batch_size,), generator=data)
        # The same context tensor for both variants; detached, as a frozen shared embedding gives it.
        with torch.no_grad():
            context = adapter.shared_embedding(condition)
        order = ("adapter", "raw") if round_index % 2 == 0 else ("raw", "adapter")
        for row, function in rows.items():
            for name in order:
                seconds = time_call(lambda: function(name, x, condition, context))
                if round_index > 0:  # the first round warms up both variants
                    for clock, value in zip(clocks, seconds):
                        times[row, clock][name].append(value)

    report = {
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "flow_spec": spec.to_dict(),
        "torch_threads": torch.get_num_threads(),
    }
    for (row, clock), samples in times.items():
        adapter_median = statistics.median(samples["adapter"])
        raw_median = statistics.median(samples["raw"])
        report[f"{row}_{clock}_ms_adapter"] = 1000 * adapter_median
        report[f"{row}_{clock}_ms_raw"] = 1000 * raw_median
        report[f"{row}_{clock}_ratio"] = adapter_median / raw_median
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
