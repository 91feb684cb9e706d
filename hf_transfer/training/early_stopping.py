"""Validation-based early stopping for `train`: evaluate on held-out data, keep the best weights."""

import logging
import math

import torch
from accelerate.utils import send_to_device
from torch import nn
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


class EarlyStopping:
    """Track the validation loss during training and keep a copy of the trainable weights where it was lowest.

    Every evaluation runs over the whole validation set in eval mode. The torch random state is forked
    and seeded the same way each time, so a stochastic loss (the denoising loss draws noise and
    timesteps) is compared on the same draws at every evaluation. Averaging over the whole set and fixing
    those draws is what makes the comparison usable with a handful of validation points. When the
    training keeps an EMA of the weights, the EMA weights are evaluated and kept, because they are the
    weights `train` returns.

    Args:
        eval_dataset: a torch or `datasets` data set of `model.forward` argument dicts.
        batch_size (`int`): evaluation batch size.
        patience (`int`, *optional*): stop after this many evaluations without improvement; None
            evaluates until `max_steps` and only restores the best weights.
        seed (`int`): seed of the evaluation's random draws.
        collate_fn (*optional*): a DataLoader collate function.
    """

    def __init__(self, eval_dataset, batch_size: int, patience: int | None, seed: int, collate_fn=None):
        if len(eval_dataset) == 0:
            raise ValueError("The validation data set `eval_dataset` is empty; pass at least one example or None.")
        self.loader = DataLoader(eval_dataset, batch_size=min(batch_size, len(eval_dataset)), shuffle=False, collate_fn=collate_fn)
        self.patience = patience
        self.seed = seed
        self.best_loss = math.inf
        self.best_step = 0
        self.best_weights: list[torch.Tensor] | None = None
        self.evaluations_without_improvement = 0
        self.losses: list[float] = []

    @torch.no_grad()
    def evaluate(self, model: nn.Module, device: torch.device) -> float:
        """Return the mean loss of `model` over the validation set, weighting each batch by its size."""
        total, count = 0.0, 0
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            for batch in self.loader:
                batch = send_to_device(batch, device)
                size = len(next(iter(batch.values())))
                total += model(**batch).item() * size
                count += size
        return total / count

    def step(self, model: nn.Module, parameters: list[nn.Parameter], ema, global_step: int, device: torch.device) -> bool:
        """Evaluate, remember the weights if the loss improved, and return True when training should stop.

        Args:
            model (`nn.Module`): the (possibly accelerate-wrapped) model; left in its training mode afterwards.
            parameters (`list[nn.Parameter]`): the trainable parameters, the ones saved and restored.
            ema (`EMAModel`, *optional*): the EMA of `parameters`, whose weights are evaluated if given.
            global_step (`int`): the optimizer step, recorded with the best loss.
            device (`torch.device`): where the validation batches go.
        """
        was_training = [module.training for module in model.modules()]
        model.eval()
        if ema is not None:
            ema.store(parameters)
            ema.copy_to(parameters)
        loss = self.evaluate(model, device)
        self.losses.append(loss)
        # A NaN validation loss never counts as an improvement.
        improved = loss < self.best_loss
        if improved:
            self.best_loss = loss
            self.best_step = global_step
            self.best_weights = [parameter.detach().clone() for parameter in parameters]
            self.evaluations_without_improvement = 0
        else:
            self.evaluations_without_improvement += 1
        if ema is not None:
            ema.restore(parameters)
        for module, training in zip(model.modules(), was_training):
            module.training = training
        return self.patience is not None and self.evaluations_without_improvement >= self.patience

    @torch.no_grad()
    def restore(self, parameters: list[nn.Parameter]) -> None:
        """Copy the best weights back into `parameters`; does nothing if no evaluation ran."""
        if self.best_weights is None:
            return
        for parameter, weight in zip(parameters, self.best_weights):
            parameter.copy_(weight)
        logger.info("Restored the weights of step %d (validation loss %.4f).", self.best_step, self.best_loss)
