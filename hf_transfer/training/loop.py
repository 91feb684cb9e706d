"""The accelerate training loop shared by source and target learning, for diffusion and flows."""

import logging
import math
from dataclasses import dataclass, field

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .early_stopping import EarlyStopping

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
    mixed_precision: str = field(default="no", metadata={"help": "accelerate mixed precision: no, fp16 or bf16."})
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


@dataclass
class TrainingResult:
    """What `train` returns: the per-step losses and the number of optimizer steps taken.

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


def _endless(loader):
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def train(
    model: nn.Module,
    dataset,
    config: TrainingConfig,
    accelerator: Accelerator | None = None,
    collate_fn=None,
    eval_dataset=None,
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
            computed every `config.eval_steps` steps (and at the last step), training stops early after
            `config.early_stopping_patience` evaluations without improvement, and the trainable weights of
            the lowest validation loss are returned in place of the last ones.
    """
    accelerator = accelerator or Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps
    )
    set_seed(config.seed)
    parameters = trainable_parameters(model)
    if not parameters:
        raise ValueError("The model has no trainable parameters; check the transfer strategy.")
    if len(dataset) == 0:
        raise ValueError("The training data set is empty.")
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

    data_order = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        dataset,
        batch_size=min(config.batch_size, len(dataset)),
        shuffle=True,
        generator=data_order,
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

    losses: list[float] = []
    progress = tqdm(
        total=config.max_steps,
        desc=config.description,
        disable=not (config.progress_bar and accelerator.is_local_main_process),
        leave=False,
    )
    global_step = 0
    for batch in _endless(loader):
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
        losses.append(loss.detach().item())
        progress.update(1)
        progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        is_last_step = global_step >= config.max_steps
        if early_stopping is not None and (global_step % config.eval_steps == 0 or is_last_step):
            if early_stopping.step(model, parameters, ema, global_step, accelerator.device):
                logger.info("%s: early stop at step %d, best validation loss at step %d.", config.description, global_step, early_stopping.best_step)
                break
        if is_last_step:
            break
    progress.close()

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
