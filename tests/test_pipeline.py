import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from hf_transfer import TransferDiffusionPipeline


@pytest.mark.parametrize("scheduler_class", [DDPMScheduler, DDIMScheduler])
def test_pipeline_round_trip_gives_identical_samples(tiny_model, scheduler_class, tmp_path):
    with torch.no_grad():
        tiny_model.generator.condition_projection.linear_2.weight.normal_(std=0.1)
    scheduler = scheduler_class.from_config(tiny_model.noise_scheduler.config)
    pipeline = tiny_model.to_pipeline(scheduler)
    pipeline.set_progress_bar_config(disable=True)
    labels = torch.tensor([0, 1, 2])

    def sample(pipe):
        return pipe(labels, num_inference_steps=5, guidance_scale=2.0, generator=torch.Generator().manual_seed(0), output_type="pt").images

    before = sample(pipeline)
    pipeline.save_pretrained(tmp_path)
    reloaded = TransferDiffusionPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.scheduler) is scheduler_class
    assert before.shape == (3, 1, 8, 8)
    assert torch.equal(sample(reloaded), before)


def test_pipeline_output_types(tiny_model):
    pipeline = tiny_model.to_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(torch.tensor([0, 2]), num_inference_steps=2, output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    assert images.min() >= 0
    assert images.max() <= 1
    pil = pipeline(torch.tensor([1]), num_inference_steps=2).images
    assert pil[0].size == (8, 8)
    assert isinstance(np.asarray(pil[0]), np.ndarray)


def test_guidance_changes_samples(tiny_model):
    with torch.no_grad():
        tiny_model.generator.condition_projection.linear_2.weight.normal_(std=0.1)
    pipeline = tiny_model.to_pipeline(DDIMScheduler.from_config(tiny_model.noise_scheduler.config))
    pipeline.set_progress_bar_config(disable=True)

    def sample(scale):
        return pipeline(torch.tensor([1]), num_inference_steps=3, guidance_scale=scale, generator=torch.Generator().manual_seed(0), output_type="pt").images

    assert not torch.allclose(sample(1.0), sample(4.0))


def test_pipeline_rejects_bad_condition_and_options(tiny_model):
    pipeline = tiny_model.to_pipeline()
    with pytest.raises(ValueError, match="Class label 7 is out of range"):
        pipeline(torch.tensor([7]), num_inference_steps=1)
    with pytest.raises(ValueError, match="Unknown output_type 'tensor'"):
        pipeline(torch.tensor([0]), num_inference_steps=1, output_type="tensor")
    with pytest.raises(ValueError, match="finite non-negative number, got nan"):
        pipeline(torch.tensor([0]), num_inference_steps=1, guidance_scale=float("nan"))
    with pytest.raises(ValueError, match="`condition` is empty"):
        pipeline(torch.tensor([], dtype=torch.long), num_inference_steps=1)


def test_lora_target_pipeline_saves_and_reloads(tiny_model, tiny_data, tmp_path):
    from hf_transfer import TrainingConfig, TransferConfig, get_transfer_model, train

    target = get_transfer_model(tiny_model, TransferConfig(strategy="lora", lora_rank=2))
    train(target, tiny_data, TrainingConfig(max_steps=3, batch_size=8, learning_rate=1e-2, progress_bar=False))
    pipeline = target.to_pipeline()
    pipeline.set_progress_bar_config(disable=True)
    pipeline.save_pretrained(tmp_path)

    reloaded = TransferDiffusionPipeline.from_pretrained(tmp_path)
    reloaded.set_progress_bar_config(disable=True)
    labels = torch.tensor([0, 1])

    def sample(pipe):
        return pipe(labels, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt").images

    assert torch.allclose(sample(reloaded), sample(pipeline), atol=1e-5)
