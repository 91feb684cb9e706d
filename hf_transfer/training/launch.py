"""Build the `Accelerator` of a training run and enforce the mixed-precision rules."""

import os

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, parse_choice_from_env, parse_flag_from_env

MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")


def _fp16_on_cpu_error(where: str) -> ValueError:
    return ValueError(
        f"fp16 mixed precision was requested ({where}) but training runs on the CPU, where fp16 autocast is "
        "slow and unscaled fp16 gradients underflow; use mixed_precision='bf16' on a CPU, or run on a GPU."
    )


def make_accelerator(config, cpu: bool = False, **accelerator_kwargs) -> Accelerator:
    """Create the `Accelerator` for a `TrainingConfig`: mixed precision, gradient accumulation, trackers, project folder.

    Args:
        config (`TrainingConfig`): the run's options; `mixed_precision=None` takes the value of
            `accelerate launch --mixed_precision` (the `ACCELERATE_MIXED_PRECISION` variable).
        cpu (`bool`, defaults to `False`): force the CPU even where a GPU exists. `ACCELERATE_USE_CPU=true`
            does the same. Two CPU processes need `accelerate launch --multi_gpu --num_processes 2` and this
            flag, because `accelerate launch --cpu` starts a single process.
        accelerator_kwargs: passed on to `Accelerator`.

    Raises:
        ValueError: fp16 requested on a CPU.
    """
    mixed_precision = config.mixed_precision
    if mixed_precision is None:
        mixed_precision = parse_choice_from_env("ACCELERATE_MIXED_PRECISION", "no")
    forced_cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU")
    if mixed_precision == "fp16" and (forced_cpu or not torch.cuda.is_available()):
        raise _fp16_on_cpu_error(f"mixed_precision={mixed_precision!r}")
    project_configuration = None
    if config.output_dir is not None:
        project_configuration = ProjectConfiguration(
            project_dir=config.output_dir, logging_dir=os.path.join(config.output_dir, "logs")
        )
    return Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_config=project_configuration,
        cpu=cpu,
        **accelerator_kwargs,
    )


def check_mixed_precision(accelerator: Accelerator) -> None:
    """Raise `ValueError` if `accelerator` autocasts to fp16 on a CPU."""
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        raise _fp16_on_cpu_error("by the Accelerator")
