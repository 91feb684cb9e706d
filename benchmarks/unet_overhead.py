"""Time the shared-embedding UNet adapter against the bare `UNet2DModel` of the same size, side by side.

Both models get the same batch; the adapter additionally embeds class labels and projects them
into the time embedding. Rounds alternate between the two, and the script reports the ratio of
median times (adapter / bare) for a training step and for sampling. Target: at most 1.05x.

    python benchmarks/unet_overhead.py --rounds 20
"""

import argparse
import statistics
import time

import torch
from diffusers import DDIMScheduler, UNet2DModel

from hf_transfer import ClassLabelEmbedding, ConditionalDiffusionModel, SharedEmbeddingUNet2DModel


def build(sample_size: int, channels: tuple[int, ...]) -> tuple[UNet2DModel, ConditionalDiffusionModel]:
    torch.manual_seed(0)
    bare = UNet2DModel(
        sample_size=sample_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=channels,
        down_block_types=("DownBlock2D",) * len(channels),
        up_block_types=("UpBlock2D",) * len(channels),
        layers_per_block=1,
        norm_num_groups=8,
    )
    adapter = SharedEmbeddingUNet2DModel.from_unet(bare, embedding_dim=32)
    model = ConditionalDiffusionModel(ClassLabelEmbedding(10, 32), adapter, condition_dropout=0.1)
    return bare, model


def time_call(function, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        function()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="Alternating measurement rounds per model.")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per training step and per sampling batch.")
    parser.add_argument("--sample-size", type=int, default=8, help="Image height and width in pixels.")
    parser.add_argument("--sampling-steps", type=int, default=20, help="DDIM steps per sampling call.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 makes timings steadier).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bare, model = build(args.sample_size, (32, 64))
    scheduler = model.noise_scheduler
    images = torch.randn(args.batch_size, 1, args.sample_size, args.sample_size)
    labels = torch.arange(args.batch_size) % 10
    bare_optimizer = torch.optim.AdamW(bare.parameters(), lr=1e-4)
    model_optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def bare_step():
        noise = torch.randn_like(images)
        timesteps = torch.randint(0, 1000, (args.batch_size,))
        prediction = bare(scheduler.add_noise(images, noise, timesteps), timesteps).sample
        loss = torch.nn.functional.mse_loss(prediction, noise)
        loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    def adapter_step():
        loss = model(images, labels)
        loss.backward()
        model_optimizer.step()
        model_optimizer.zero_grad(set_to_none=True)

    ddim = DDIMScheduler.from_config(scheduler.config)
    pipeline = model.to_pipeline(ddim)
    pipeline.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def bare_sampling():
        sample = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        ddim.set_timesteps(args.sampling_steps)
        for timestep in ddim.timesteps:
            sample = ddim.step(bare(sample, timestep).sample, timestep, sample).prev_sample

    def adapter_sampling():
        pipeline(labels, num_inference_steps=args.sampling_steps, guidance_scale=1.0, generator=torch.Generator().manual_seed(0), output_type="pt")

    def adapter_sampling_guided():
        pipeline(labels, num_inference_steps=args.sampling_steps, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt")

    pairs = {
        "training step": (bare_step, adapter_step, 5),
        "sampling (no guidance)": (bare_sampling, adapter_sampling, 1),
    }
    print(f"batch {args.batch_size}, {args.sample_size}x{args.sample_size} images, UNet channels (32, 64), {args.threads} thread(s)")
    print("| measurement | bare UNet2DModel (ms) | adapter (ms) | ratio |")
    print("|---|---|---|---|")
    for name, (bare_function, adapter_function, repeats) in pairs.items():
        bare_function(), adapter_function()  # warm-up
        bare_times, adapter_times = [], []
        for _ in range(args.rounds):
            bare_times.append(time_call(bare_function, repeats))
            adapter_times.append(time_call(adapter_function, repeats))
        bare_median, adapter_median = statistics.median(bare_times), statistics.median(adapter_times)
        print(f"| {name} | {1000 * bare_median:.1f} | {1000 * adapter_median:.1f} | {adapter_median / bare_median:.3f}x |")
    guided = statistics.median(time_call(adapter_sampling_guided, 1) for _ in range(max(3, args.rounds // 4)))
    print(f"Classifier-free guidance (scale 2.0) doubles the batch: guided adapter sampling takes {1000 * guided:.1f} ms.")


if __name__ == "__main__":
    main()
