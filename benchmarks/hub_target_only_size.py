"""Size of target-only saves against the full pipeline, on the digits demo's UNet.

Builds a source model of the demo's shape (UNet2DModel, sample_size 8, block_out_channels
(32, 64), layers_per_block 1, DownBlock2D, shared embedding of width 32) and saves it as a full
pipeline. For each strategy, it moves the trainable weights at random in place of training,
saves the target-only folder and reloads it onto the base. Prints the size ratio of the safetensors
files and whether the reloaded outputs are bit-identical. Sizes do not depend on the machine.

Run: python benchmarks/hub_target_only_size.py
"""

import tempfile
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel

from hf_transfer import (
    ClassLabelEmbedding,
    ConditionalDiffusionModel,
    SharedEmbeddingUNet2DModel,
    TransferConfig,
    get_transfer_model,
    load_source_model,
    load_target_weights,
    save_target_weights,
)


def build_source() -> ConditionalDiffusionModel:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
    )
    generator = SharedEmbeddingUNet2DModel.from_unet(unet, embedding_dim=32)
    return ConditionalDiffusionModel(ClassLabelEmbedding(num_classes=10, embedding_dim=32), generator, DDPMScheduler())


def safetensors_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*.safetensors"))


def outputs(model) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(10, 1, 8, 8, generator=generator)
    with torch.no_grad():
        embedding = model.shared_embedding(torch.arange(10))
        return model.generator(sample, torch.arange(10) * 90, embedding).sample


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="target_only_"))
    build_source().to_pipeline().save_pretrained(root / "source")
    source = load_source_model(root / "source")
    full_bytes = safetensors_bytes(root / "source")
    print(f"full pipeline: {full_bytes:,d} bytes of safetensors")
    print("| strategy | trainable fraction | target-only bytes | target-only / full | reload bit-identical |")
    print("|---|---|---|---|---|")
    configs = [TransferConfig(strategy="lora", lora_rank=rank, lora_alpha=rank, seed=0) for rank in (1, 4, 8)]
    configs.append(TransferConfig(strategy="frozen_embedding", seed=0))
    for config in configs:
        target = get_transfer_model(source, config)
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in target.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator))
        target.eval()
        folder = root / f"target_{config.strategy}_{config.lora_rank}"
        save_target_weights(target, folder)
        reloaded = load_target_weights(folder)
        trainable = sum(p.numel() for p in target.parameters() if p.requires_grad)
        total = sum(p.numel() for p in target.parameters())
        target_bytes = safetensors_bytes(folder)
        label = f"lora r={config.lora_rank}" if config.strategy == "lora" else config.label
        identical = torch.equal(outputs(reloaded), outputs(target))
        print(f"| {label} | {trainable / total:.4f} | {target_bytes:,d} | {target_bytes / full_bytes:.3f} | {identical} |")


if __name__ == "__main__":
    main()
