"""Training checkpoints: accelerate's `save_state` written atomically, pruned to a limit, found again for resume.

A checkpoint is a folder `checkpoint-<step>` in the output folder. Every process first writes into a
hidden temporary folder `.tmp-checkpoint-<step>`. Only when all of them are done does the main process
add `training_state.json` and rename the folder with `os.replace`. A crash during a save therefore
leaves a temporary folder, which resume ignores, and never a `checkpoint-<step>` that looks complete.

The folder contains what `Accelerator.save_state` writes (the models as safetensors, the optimizer, the
learning-rate scheduler, the objects registered with `register_for_checkpointing` such as the EMA,
and one random-number-generator file per process) plus `training_state.json`: the optimizer step,
the data position (epoch and batches consumed in it) and the losses so far.

NOTE: every process writes its own random-state file into the checkpoint, as `save_state` does, so
on several nodes the output folder must be on a file system that all nodes share.
"""

import json
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, field

from accelerate import Accelerator
from accelerate.logging import get_logger

from ..utils import HfTransferWarning

logger = get_logger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
TEMPORARY_PREFIX = ".tmp-"
TRAINING_STATE_NAME = "training_state.json"
TRAINING_STATE_VERSION = 1
_CHECKPOINT_PATTERN = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


@dataclass
class TrainingState:
    """The position of the training loop stored beside accelerate's state in a checkpoint."""

    global_step: int = field(metadata={"help": "Optimizer steps taken."})
    epoch: int = field(metadata={"help": "Epoch of the data order that the next batch comes from."})
    batches_in_epoch: int = field(metadata={"help": "Batches each process has consumed in `epoch`."})
    num_processes: int = field(metadata={"help": "Number of processes of the run that wrote the checkpoint."})
    losses: list[float] = field(default_factory=list, metadata={"help": "Loss of every optimizer step so far."})

    def to_dict(self) -> dict:
        return {"format_version": TRAINING_STATE_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict, path: str) -> "TrainingState":
        values = dict(values)
        version = values.pop("format_version", None)
        if version is None or version > TRAINING_STATE_VERSION:
            raise ValueError(
                f"{path} has format version {version!r}, but this library reads up to version "
                f"{TRAINING_STATE_VERSION}; upgrade hf_transfer to resume from it."
            )
        missing = sorted({"global_step", "epoch", "batches_in_epoch", "num_processes"} - set(values))
        if missing:
            raise ValueError(f"{path} is missing the keys {missing}; it was not written by hf_transfer.")
        return cls(**{key: values[key] for key in ("global_step", "epoch", "batches_in_epoch", "num_processes", "losses") if key in values})


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """Return the step of a folder named `checkpoint-<step>`, or None for any other name."""
    match = _CHECKPOINT_PATTERN.match(os.path.basename(os.path.normpath(path)))
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: str | os.PathLike) -> bool:
    """Tell whether `path` is a finished checkpoint: the right name and a `training_state.json` inside."""
    return checkpoint_step(path) is not None and os.path.isfile(os.path.join(path, TRAINING_STATE_NAME))


def list_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """Return the complete checkpoints in `output_dir`, oldest step first; temporary folders are left out."""
    if not os.path.isdir(output_dir):
        return []
    paths = [os.path.join(output_dir, name) for name in os.listdir(output_dir)]
    checkpoints = [path for path in paths if is_complete_checkpoint(path)]
    return sorted(checkpoints, key=checkpoint_step)


def resolve_checkpoint(output_dir: str | os.PathLike | None, resume_from_checkpoint: str) -> str | None:
    """Turn a `--resume_from_checkpoint` value into a checkpoint folder.

    `"latest"` picks the complete checkpoint with the highest step in `output_dir` and returns None
    when there is none yet (so the same command starts a run or continues it). Any other value is a
    path to a checkpoint folder, or the name of one inside `output_dir`.

    Raises:
        FileNotFoundError: the named checkpoint does not exist.
        ValueError: the named folder is not a complete checkpoint.
    """
    if resume_from_checkpoint == "latest":
        if output_dir is None:
            raise ValueError("resume_from_checkpoint='latest' needs `output_dir`, the folder that contains the checkpoints.")
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None

    path = os.fspath(resume_from_checkpoint)
    if not os.path.isdir(path) and output_dir is not None and os.path.isdir(os.path.join(output_dir, path)):
        path = os.path.join(output_dir, path)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"Checkpoint folder {resume_from_checkpoint!r} not found; pass 'latest' or the path of a "
            f"{CHECKPOINT_PREFIX}<step> folder."
        )
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"{path!r} is not a complete checkpoint: it needs the name {CHECKPOINT_PREFIX}<step> and a "
            f"{TRAINING_STATE_NAME} file. A folder without one is left over from a save that did not finish."
        )
    return path


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[str]:
    """Delete the oldest complete checkpoints beyond `total_limit` and leftover temporary folders; return what was deleted."""
    deleted = []
    for name in os.listdir(output_dir):
        if name.startswith(TEMPORARY_PREFIX + CHECKPOINT_PREFIX):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
            deleted.append(os.path.join(output_dir, name))
    if total_limit is not None:
        checkpoints = list_checkpoints(output_dir)
        for path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
            shutil.rmtree(path)
            deleted.append(path)
    if deleted:
        logger.info("Deleted old checkpoints and unfinished saves: %s", ", ".join(deleted))
    return deleted


def _write_json_atomically(data: dict, path: str) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str | os.PathLike,
    state: TrainingState,
    total_limit: int | None = None,
) -> str:
    """Save the accelerate state and `state` as `output_dir/checkpoint-<step>`, atomically; call it on every process.

    Args:
        accelerator (`Accelerator`): the handle whose prepared objects and registered objects are saved.
        output_dir (`str`): the folder of the checkpoints.
        state (`TrainingState`): the loop position to store.
        total_limit (`int`, *optional*): keep at most this many checkpoints, deleting the oldest.

    Returns:
        The path of the new checkpoint folder.
    """
    if accelerator.project_configuration.automatic_checkpoint_naming:
        raise ValueError(
            "The Accelerator uses automatic_checkpoint_naming, which makes save_state ignore the folder it is "
            "given; build it without that option, because hf_transfer names and prunes checkpoints itself."
        )
    output_dir = os.fspath(output_dir)
    name = f"{CHECKPOINT_PREFIX}{state.global_step}"
    final_path = os.path.join(output_dir, name)
    temporary_path = os.path.join(output_dir, TEMPORARY_PREFIX + name)

    # 1. The main process makes an empty temporary folder, deleting one left over from a crash at this step.
    if accelerator.is_main_process:
        shutil.rmtree(temporary_path, ignore_errors=True)
        os.makedirs(temporary_path)
    accelerator.wait_for_everyone()

    # 2. Every process writes its part (the main process writes the models, each process its RNG file).
    accelerator.save_state(temporary_path)
    accelerator.wait_for_everyone()

    # 3. The main process marks the checkpoint complete and renames it in one step.
    if accelerator.is_main_process:
        _write_json_atomically(state.to_dict(), os.path.join(temporary_path, TRAINING_STATE_NAME))
        if os.path.exists(final_path):
            # os.replace cannot overwrite a non-empty folder: move the old one aside, then delete it.
            stale_path = os.path.join(output_dir, TEMPORARY_PREFIX + name + ".old")
            shutil.rmtree(stale_path, ignore_errors=True)
            os.replace(final_path, stale_path)
            os.replace(temporary_path, final_path)
            shutil.rmtree(stale_path)
        else:
            os.replace(temporary_path, final_path)
        logger.info("Saved checkpoint %s", final_path)
        prune_checkpoints(output_dir, total_limit)
    accelerator.wait_for_everyone()
    return final_path


def load_checkpoint(accelerator: Accelerator, checkpoint_dir: str | os.PathLike) -> TrainingState:
    """Restore the accelerate state saved by `save_checkpoint` and return the stored loop position.

    Call it on every process, after `accelerator.prepare` and after registering the same objects for
    checkpointing as the run that saved it.

    NOTE: accelerate loads the optimizer, scheduler and RNG files with `torch.load(weights_only=True)`,
    but it loads the registered objects (the EMA) with `weights_only=False`, which unpickles. Resume
    only from checkpoints that your own runs wrote.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    if not is_complete_checkpoint(checkpoint_dir):
        raise ValueError(f"{checkpoint_dir!r} is not a complete checkpoint: no {TRAINING_STATE_NAME} inside.")
    state_path = os.path.join(checkpoint_dir, TRAINING_STATE_NAME)
    with open(state_path, encoding="utf-8") as handle:
        state = TrainingState.from_dict(json.load(handle), state_path)
    if state.num_processes != accelerator.num_processes:
        warnings.warn(
            f"{checkpoint_dir} was written by {state.num_processes} processes and is resumed by "
            f"{accelerator.num_processes}; the weights and optimizer resume exactly, but the data order and the "
            "random draws after the checkpoint differ from an uninterrupted run.",
            HfTransferWarning,
            stacklevel=2,
        )
    accelerator.load_state(checkpoint_dir)
    logger.info("Resumed from %s at step %d (epoch %d, batch %d).", checkpoint_dir, state.global_step, state.epoch, state.batches_in_epoch)
    return state
