"""The accelerate training loop shared by source and target learning, for diffusion and flows."""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, cast_training_params
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpointing import TrainingState, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data_position import EpochShuffleSampler, iterate_batches
from .early_stopping import EarlyStopping
from .launch import MIXED_PRECISION_CHOICES, check_mixed_precision, make_accelerator

logger = logging.getLogger(__name__)


@dataclass
class TrainingConfig:
    """Options of `train`."""

    max_steps: int = field(default=1000, metadata={"help": "Number of optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Batch size per process; capped at the data set size."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    lr_scheduler: str = field(
        default="cosine", metadata={"help": "diffusers learning-rate schedule name: constant, linear, cosine, ..."}
    )
    lr_warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps of the learning rate."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping norm; None turns clipping off."})
    ema_decay: float | None = field(
        default=0.995, metadata={"help": "Maximum decay of the exponential moving average of the weights; None turns EMA off."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Batches per optimizer step."})
    mixed_precision: str | None = field(
        default="no",
        metadata={
            "help": "accelerate mixed precision: no, fp16 (GPU only) or bf16 (GPU or CPU); None takes the value "
            "of `accelerate launch --mixed_precision`. Trainable parameters stay float32 either way."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of the weights' noise, the data order and the loss's noise."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a tqdm progress bar with the loss."})
    description: str = field(default="training", metadata={"help": "Label of the progress bar."})
    eval_steps: int = field(
        default=50, metadata={"help": "Optimizer steps between validation losses (only when `train` gets an eval_dataset)."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={
            "help": "Stop after this many validation losses without improvement; None trains for max_steps. "
            "Needs an eval_dataset. With an eval_dataset, train returns the weights of the best validation loss."
        },
    )
    output_dir: str | None = field(
        default=None, metadata={"help": "Folder of the checkpoints and tracker logs; None writes nothing."}
    )
    checkpointing_steps: int | None = field(
        default=None, metadata={"help": "Save a checkpoint every this many optimizer steps; None saves none."}
    )
    checkpoints_total_limit: int | None = field(
        default=None, metadata={"help": "Keep at most this many checkpoints, deleting the oldest; None keeps all."}
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "'latest' (the newest checkpoint in output_dir, or a fresh start if there is none) or the "
            "path of a checkpoint folder to resume from."
        },
    )
    validation_steps: int | None = field(
        default=None,
        metadata={"help": "Call train's validation_fn every this many optimizer steps and at the end; None never calls it."},
    )
    log_with: str | None = field(
        default=None, metadata={"help": "accelerate tracker, such as 'tensorboard'; its logs go to output_dir/logs."}
    )
    tracker_project_name: str = field(default="hf_transfer", metadata={"help": "Run name given to the trackers."})

    def __post_init__(self):
        if self.max_steps < 1:
            raise ValueError(f"`max_steps` must be at least 1, got {self.max_steps}.")
        if self.batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {self.batch_size}.")
        if self.learning_rate <= 0:
            raise ValueError(f"`learning_rate` must be positive, got {self.learning_rate}.")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"`gradient_accumulation_steps` must be at least 1, got {self.gradient_accumulation_steps}.")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"`ema_decay` must lie in (0, 1) or be None, got {self.ema_decay}.")
        if self.eval_steps < 1:
            raise ValueError(f"`eval_steps` must be at least 1, got {self.eval_steps}.")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"`early_stopping_patience` must be at least 1 or None, got {self.early_stopping_patience}.")
        self._check_run_options()

    def _check_run_options(self):
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"`mixed_precision` must be one of {MIXED_PRECISION_CHOICES} or None, got {self.mixed_precision!r}.")
        for name in ("checkpointing_steps", "checkpoints_total_limit", "validation_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be at least 1 or None, got {value}.")
        needs_folder = {
            "checkpointing_steps": self.checkpointing_steps,
            "resume_from_checkpoint": self.resume_from_checkpoint,
            "log_with": self.log_with,
        }
        for name, value in needs_folder.items():
            if value is not None and self.output_dir is None:
                raise ValueError(f"`{name}={value!r}` needs `output_dir`, the folder where the run writes its files.")


@dataclass
class TrainingResult:
    """Result of `train`: the per-step losses and the number of optimizer steps taken.

    With an `eval_dataset`, also the validation losses (one per `eval_steps`) and the step whose weights
    were returned.
    """

    losses: list[float]
    global_step: int
    eval_losses: list[float] = field(default_factory=list)
    best_step: int | None = None


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def set_train_mode(model: nn.Module) -> None:
    """Put `model` in train mode but keep fully frozen submodules in eval mode."""
    model.train()
    for module in model.modules():
        parameters = list(module.parameters())
        if parameters and not any(parameter.requires_grad for parameter in parameters):
            module.eval()


def _scalar_values(values: dict) -> dict:
    """Keep the entries trackers can store (numbers, strings, booleans); turn lists into strings."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        if isinstance(value, (int, float, str, bool)):
            kept[key] = value
    return kept


def _run_validation(validation_fn, model, parameters, ema, accelerator, global_step: int) -> None:
    """Call `validation_fn` on the main process with the EMA weights, then put the training weights back."""
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if ema is not None:
            ema.store(parameters)
            ema.copy_to(parameters)
        unwrapped.eval()
        # Forking the random state keeps validation sampling from changing the training's noise draws.
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            validation_fn(unwrapped, global_step)
        if ema is not None:
            ema.restore(parameters)
        set_train_mode(model)
    accelerator.wait_for_everyone()


def train(
    model: nn.Module,
    dataset,
    config: TrainingConfig,
    accelerator: Accelerator | None = None,
    collate_fn=None,
    eval_dataset=None,
    validation_fn: Callable[[nn.Module, int], None] | None = None,
    tracker_config: dict | None = None,
) -> TrainingResult:
    """Train the trainable parameters of `model` on `dataset` with AdamW, clipping and EMA.

    `model(**batch)` must return a scalar loss, as `ConditionalDiffusionModel` and
    `ConditionalFlowModel` do. Frozen parameters (`requires_grad=False`) are left bit-identical:
    the optimizer and the EMA only see the trainable ones. When EMA is on, the averaged weights
    are copied into the model at the end.

    Args:
        model (`nn.Module`): the model to train in place.
        dataset: a `torch.utils.data.Dataset` or `datasets.Dataset` (in torch format) whose items
            are dicts of `model.forward` arguments.
        config (`TrainingConfig`): the options.
        accelerator (`Accelerator`, *optional*): the accelerate handle; one is made from `config` if None.
        collate_fn (*optional*): a DataLoader collate function.
        eval_dataset (*optional*): held-out examples in the form of `dataset`. If given, the loss on them is
            computed every `config.eval_steps` steps and at the last step. Training stops early after
            `config.early_stopping_patience` evaluations without improvement, and the trainable weights of
            the lowest validation loss are returned in place of the last ones.
        validation_fn (*optional*): `validation_fn(model, global_step)` runs every `config.validation_steps`
            steps and at the last step, on the main process only, with the unwrapped model in eval mode,
            the EMA weights swapped in and the random state forked, so it does not change the training.
            Recipes use it to save sample images.
        tracker_config (`dict`, *optional*): hyperparameters stored by the trackers of `config.log_with`.

    With `config.checkpointing_steps`, the loop saves the models, optimizer, LR scheduler, EMA, random
    states, step and data position every that many steps; with `config.resume_from_checkpoint` it
    restores them, and the resumed run ends with the same weights as an uninterrupted one.
    NOTE: the early-stopping state of an `eval_dataset` run is not in the checkpoints.
    """
    accelerator = accelerator or make_accelerator(config)
    check_mixed_precision(accelerator)
    if config.log_with is not None and not accelerator.log_with:
        raise ValueError(
            f"`log_with={config.log_with!r}` is set but the given Accelerator has no trackers; build it with "
            "hf_transfer.training.make_accelerator(config) or pass log_with to Accelerator yourself."
        )
    # device_specific adds the process index to the seed, so each process draws its own noise; one process is unchanged.
    set_seed(config.seed, device_specific=True)
    if accelerator.mixed_precision != "no":
        # Autocast computes in half precision; the weights the optimizer updates stay float32.
        cast_training_params(model, dtype=torch.float32)
    parameters = trainable_parameters(model)
    if not parameters:
        raise ValueError("The model has no trainable parameters; check the transfer strategy.")
    if len(dataset) == 0:
        raise ValueError("The training data set is empty.")
    if validation_fn is not None and config.validation_steps is None:
        raise ValueError("`validation_fn` is given but `config.validation_steps` is None; set how often it runs.")
    if config.early_stopping_patience is not None and eval_dataset is None:
        raise ValueError(
            "`early_stopping_patience` is set but no `eval_dataset` was given; pass held-out examples as "
            "`eval_dataset` or set `early_stopping_patience=None`."
        )
    early_stopping = None
    if eval_dataset is not None:
        early_stopping = EarlyStopping(
            eval_dataset, config.batch_size, config.early_stopping_patience, config.seed, collate_fn=collate_fn
        )

    # The sampler's order depends on (seed, epoch) only, so a resumed run can rebuild it. The loader's own
    # generator only seeds workers; without one, each new iterator would draw from the global torch RNG.
    loader = DataLoader(
        dataset,
        batch_size=min(config.batch_size, len(dataset)),
        sampler=EpochShuffleSampler(len(dataset), config.seed),
        generator=torch.Generator().manual_seed(config.seed),
        collate_fn=collate_fn,
    )
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=min(config.lr_warmup_steps, config.max_steps // 2),
        num_training_steps=config.max_steps,
    )
    ema = EMAModel(parameters, decay=config.ema_decay) if config.ema_decay else None

    model, optimizer, loader, lr_scheduler = accelerator.prepare(model, optimizer, loader, lr_scheduler)
    set_train_mode(model)

    saves_state = config.checkpointing_steps is not None or config.resume_from_checkpoint is not None
    if saves_state and ema is not None:
        accelerator.register_for_checkpointing(ema)
    resumed = None
    if config.resume_from_checkpoint is not None:
        checkpoint = resolve_checkpoint(config.output_dir, config.resume_from_checkpoint)
        if checkpoint is None:
            logger.info("No checkpoint in %s yet; starting a new run.", config.output_dir)
        else:
            resumed = load_checkpoint(accelerator, checkpoint)
    if config.log_with is not None:
        accelerator.init_trackers(config.tracker_project_name, config=_scalar_values(tracker_config or {}))

    losses: list[float] = list(resumed.losses) if resumed else []
    global_step = resumed.global_step if resumed else 0
    epoch, batch_index = (resumed.epoch, resumed.batches_in_epoch) if resumed else (0, 0)
    progress = tqdm(
        total=config.max_steps,
        initial=global_step,
        desc=config.description,
        disable=not (config.progress_bar and accelerator.is_local_main_process),
        leave=False,
    )
    batches = iterate_batches(loader, accelerator, start_epoch=epoch, skip_batches=batch_index)
    for epoch, batch_index, batch in batches:
        if global_step >= config.max_steps:
            break
        with accelerator.accumulate(model):
            loss = model(**batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The loss became {loss.item()} at step {global_step}; lower the learning rate "
                    f"(now {config.learning_rate}) or check the data for extreme values."
                )
            accelerator.backward(loss)
            if accelerator.sync_gradients and config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)

        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(parameters)
        global_step += 1
        if accelerator.num_processes > 1:
            loss = accelerator.reduce(loss.detach(), reduction="mean")
        losses.append(loss.detach().item())
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        is_last_step = global_step >= config.max_steps
        if config.log_with is not None:
            accelerator.log({"train/loss": losses[-1], "train/lr": lr_scheduler.get_last_lr()[0]}, step=global_step)
        if config.checkpointing_steps is not None and global_step % config.checkpointing_steps == 0:
            position = TrainingState(global_step, epoch, batch_index + 1, accelerator.num_processes, list(losses))
            save_checkpoint(accelerator, config.output_dir, position, config.checkpoints_total_limit)
        if validation_fn is not None and config.validation_steps is not None:
            if global_step % config.validation_steps == 0 or is_last_step:
                _run_validation(validation_fn, model, parameters, ema, accelerator, global_step)
        if early_stopping is not None and (global_step % config.eval_steps == 0 or is_last_step):
            if early_stopping.step(model, parameters, ema, global_step, accelerator.device):
                logger.info("%s: early stop at step %d, best validation loss at step %d.", config.description, global_step, early_stopping.best_step)
                break
        if is_last_step:
            break
    progress.close()
    if config.log_with is not None:
        # Not `accelerator.end_training()`: it also destroys the process group, which the caller may still need.
        for tracker in accelerator.trackers:
            tracker.finish()

    if early_stopping is not None and early_stopping.best_weights is not None:
        early_stopping.restore(parameters)
    elif ema is not None:
        ema.copy_to(parameters)
    model = accelerator.unwrap_model(model)
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    logger.info("%s: %d steps, final loss %.4f (mean of the last %d steps).", config.description, global_step, sum(tail) / len(tail), len(tail))
    if early_stopping is None:
        return TrainingResult(losses=losses, global_step=global_step)
    return TrainingResult(
        losses=losses, global_step=global_step, eval_losses=early_stopping.losses, best_step=early_stopping.best_step
    )


def steps_for_epochs(num_examples: int, batch_size: int, epochs: float, min_steps: int = 1, max_steps: int | None = None) -> int:
    """Return the optimizer steps that cover `epochs` passes over `num_examples`, clipped to [min_steps, max_steps]."""
    steps = math.ceil(epochs * num_examples / max(1, min(batch_size, num_examples)))
    steps = max(min_steps, steps)
    return min(steps, max_steps) if max_steps is not None else steps
