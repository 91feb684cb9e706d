import os

# Nothing in the suite may reach the Hub; set this before huggingface_hub reads its constants.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from hf_transfer import ClassLabelEmbedding, ConditionalDiffusionModel, SharedEmbeddingUNet2DModel  # noqa: E402


def make_tiny_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=4,
    )


def make_tiny_diffusion_model(seed: int = 0, embedding_dim: int = 4, num_classes: int = 3) -> ConditionalDiffusionModel:
    generator = SharedEmbeddingUNet2DModel.from_unet(make_tiny_unet(seed), embedding_dim=embedding_dim)
    torch.manual_seed(seed + 1)
    embedding = ClassLabelEmbedding(num_classes=num_classes, embedding_dim=embedding_dim)
    return ConditionalDiffusionModel(embedding, generator, DDPMScheduler(num_train_timesteps=100))


def make_tiny_image_data(count: int = 32, num_classes: int = 3, seed: int = 0) -> list[dict]:
    """Class-dependent blobs: class c lights up row band c, so a conditional model can learn them."""
    generator = torch.Generator().manual_seed(seed)
    data = []
    for index in range(count):
        label = index % num_classes
        image = torch.full((1, 8, 8), -1.0)
        image[:, 2 * label : 2 * label + 3, :] = 1.0
        image = (image + 0.1 * torch.randn(image.shape, generator=generator)).clamp(-1, 1)
        data.append({"pixel_values": image, "condition": torch.tensor(label)})
    return data


@pytest.fixture
def tiny_unet() -> UNet2DModel:
    return make_tiny_unet()


@pytest.fixture
def tiny_model() -> ConditionalDiffusionModel:
    return make_tiny_diffusion_model()


@pytest.fixture
def tiny_data() -> list[dict]:
    return make_tiny_image_data()
