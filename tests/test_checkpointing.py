"""Checkpoints, exact resume, atomic saves, pruning and the mixed-precision rules of `train`."""

import os

import pytest
import torch
from accelerate.state import AcceleratorState

from hf_transfer.data import make_digits_task
from hf_transfer.training import TrainingConfig, list_checkpoints, make_accelerator, train
from hf_transfer.training import checkpointing
from hf_transfer.training.checkpointing import TRAINING_STATE_NAME, resolve_checkpoint
from hf_transfer.training.data_position import EpochShuffleSampler

from conftest import make_tiny_diffusion_model


class SimulatedCrash(RuntimeError):
    """Raised inside training to stop a run the way a killed job stops."""


@pytest.fixture(scope="module")
def digits():
    # 20 examples at batch 6: 4 batches per epoch, the last one short, so runs cross epoch boundaries mid-accumulation.
    return make_digits_task().target_train.select(range(20)).select_columns(["pixel_values", "condition"])


@pytest.fixture
def one_thread():
    # Small models run faster on one thread, and a busy machine makes multi-threaded steps much slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_accelerator_state():
    # AcceleratorState is a process-wide singleton that rejects a second mixed-precision setting.
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run_config(output_dir, **options) -> TrainingConfig:
    values = {
        "max_steps": 6,
        "batch_size": 6,
        "gradient_accumulation_steps": 2,
        "lr_warmup_steps": 2,
        "output_dir": str(output_dir),
        "checkpointing_steps": 2,
        "checkpoints_total_limit": 1,
        "progress_bar": False,
    }
    values.update(options)
    return TrainingConfig(**values)


def crash_at(step: int):
    def validate(model, global_step):
        if global_step == step:
            raise SimulatedCrash(f"simulated crash at step {global_step}")

    return validate


def test_resume_after_crash_matches_uninterrupted(tmp_path, digits, one_thread):
    uninterrupted = make_tiny_diffusion_model(num_classes=10)
    expected = train(uninterrupted, digits, run_config(tmp_path / "uninterrupted"))

    crashed = make_tiny_diffusion_model(num_classes=10)
    with pytest.raises(SimulatedCrash):
        train(crashed, digits, run_config(tmp_path / "resumed", validation_steps=1), validation_fn=crash_at(5))
    # Pruned to the limit of one: step 2 is gone, step 4 is the latest.
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path / "resumed")] == ["checkpoint-4"]

    resumed = make_tiny_diffusion_model(num_classes=10)
    result = train(resumed, digits, run_config(tmp_path / "resumed", resume_from_checkpoint="latest"))
    assert result.global_step == 6
    assert result.losses == expected.losses
    for (name, expected_tensor), tensor in zip(uninterrupted.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(tensor, expected_tensor), name
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path / "resumed")] == ["checkpoint-6"]


def test_crash_during_save_leaves_no_complete_checkpoint(tmp_path, digits, one_thread, monkeypatch):
    write = checkpointing._write_json_atomically
    calls = []

    def failing_write(data, path):
        calls.append(path)
        if len(calls) == 2:
            raise SimulatedCrash("simulated crash while saving")
        write(data, path)

    monkeypatch.setattr(checkpointing, "_write_json_atomically", failing_write)
    options = {"max_steps": 3, "checkpointing_steps": 1, "checkpoints_total_limit": None}
    with pytest.raises(SimulatedCrash):
        train(make_tiny_diffusion_model(num_classes=10), digits, run_config(tmp_path, **options))

    unfinished = tmp_path / ".tmp-checkpoint-2"
    assert (unfinished / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint-2").exists()
    assert resolve_checkpoint(tmp_path, "latest") == str(tmp_path / "checkpoint-1")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        resolve_checkpoint(tmp_path, str(unfinished))

    monkeypatch.setattr(checkpointing, "_write_json_atomically", write)
    result = train(make_tiny_diffusion_model(num_classes=10), digits, run_config(tmp_path, resume_from_checkpoint="latest", **options))
    assert result.global_step == 3
    assert len(result.losses) == 3
    assert not unfinished.exists()
    assert [os.path.basename(path) for path in list_checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_resolve_checkpoint_cases(tmp_path):
    assert resolve_checkpoint(tmp_path, "latest") is None
    with pytest.raises(FileNotFoundError, match="checkpoint-7"):
        resolve_checkpoint(tmp_path, "checkpoint-7")
    folder = tmp_path / "checkpoint-7"
    folder.mkdir()
    with pytest.raises(ValueError, match=TRAINING_STATE_NAME):
        resolve_checkpoint(tmp_path, "checkpoint-7")
    with pytest.raises(ValueError, match="output_dir"):
        resolve_checkpoint(None, "latest")


def test_training_config_rejects_bad_run_options():
    with pytest.raises(ValueError, match="output_dir"):
        TrainingConfig(checkpointing_steps=10)
    with pytest.raises(ValueError, match="output_dir"):
        TrainingConfig(log_with="tensorboard")
    with pytest.raises(ValueError, match="checkpoints_total_limit"):
        TrainingConfig(output_dir="out", checkpoints_total_limit=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")


def test_fp16_rejected_on_cpu(fresh_accelerator_state):
    with pytest.raises(ValueError, match="bf16"):
        make_accelerator(TrainingConfig(mixed_precision="fp16"), cpu=True)


def test_bf16_on_cpu_keeps_float32_weights(digits, one_thread, fresh_accelerator_state):
    model = make_tiny_diffusion_model(num_classes=10).to(torch.bfloat16)
    config = TrainingConfig(max_steps=2, batch_size=10, lr_warmup_steps=0, mixed_precision="bf16", progress_bar=False)
    accelerator = make_accelerator(config, cpu=True)
    assert accelerator.mixed_precision == "bf16"
    result = train(model, digits, config, accelerator=accelerator)
    assert all(torch.isfinite(torch.tensor(result.losses)))
    for name, parameter in model.named_parameters():
        assert parameter.dtype == torch.float32, name


def test_epoch_order_rebuilt_from_seed_and_epoch():
    sampler = EpochShuffleSampler(50, seed=3)
    sampler.set_epoch(1)
    first = list(sampler)
    again = EpochShuffleSampler(50, seed=3)
    again.set_epoch(1)
    assert list(again) == first
    assert sorted(first) == list(range(50))
    sampler.set_epoch(2)
    assert list(sampler) != first
    other_seed = EpochShuffleSampler(50, seed=4)
    other_seed.set_epoch(1)
    assert list(other_seed) != first
