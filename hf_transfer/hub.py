"""Load source checkpoints by hub id or local path, and push transferred models to the Hugging Face Hub.

Weights load from safetensors only. Every folder is checked before any loader runs, and a folder
with pickle weights (`.bin`, `.pt`, `.ckpt`) alone is rejected without being unpickled.
"""

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from diffusers import UNet2DModel
from huggingface_hub import HfApi, constants, snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from torch import nn

from .embeddings import SharedEmbedding

logger = logging.getLogger(__name__)

DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model"
SAFETENSORS_SUFFIXES = (".safetensors", ".safetensors.index.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# Files fetched from a hub repo: configs, safetensors weights, cards and images; never pickle weights.
DOWNLOAD_PATTERNS = ("*.json", "*.safetensors", "*.md", "*.txt", "*.png")
UNCONDITIONAL_PIPELINES = ("DDPMPipeline", "DDIMPipeline")
TRANSFER_PIPELINE = "TransferDiffusionPipeline"
FLOW_MODEL_INDEX = "flow_model.json"
# Folder and file names left out of an upload: training checkpoints, caches, version control and temp files.
UPLOAD_SKIP_PATTERNS = (
    "checkpoint-*",
    "checkpoints",
    ".cache",
    "__pycache__",
    ".ipynb_checkpoints",
    ".git",
    ".huggingface",
    "*.tmp",
    "*.lock",
    ".DS_Store",
)
MODEL_CARD_NAME = "README.md"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint found on disk: the folder that contains the model, and where it came from.

    Attributes:
        folder: local folder with the model's files, `subfolder` already applied.
        name_or_path: the hub id or local path as given.
        revision: the commit hash of a hub checkpoint; None for a local folder.
        subfolder: the folder inside the repo or path, or None.
    """

    folder: Path
    name_or_path: str
    revision: str | None
    subfolder: str | None

    @property
    def is_hub(self) -> bool:
        return self.revision is not None


def _check_subfolder(subfolder: str | None) -> str | None:
    if subfolder in (None, ""):
        return None
    parts = Path(subfolder).parts
    if Path(subfolder).is_absolute() or ".." in parts:
        raise ValueError(f"`subfolder` must be a relative path inside the checkpoint, got {subfolder!r}.")
    return Path(subfolder).as_posix()


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "")


def resolve_checkpoint(
    pretrained_model_name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ResolvedCheckpoint:
    """Find a checkpoint's folder on disk, downloading it from the Hub into the cache if needed.

    A local folder is used as it is. Anything else must be a valid hub repo id. Its configs,
    safetensors, cards and images (never pickle weights) come from the Hugging Face cache, and
    also from the Hub unless `HF_HUB_OFFLINE=1` or `local_files_only=True`.

    Args:
        pretrained_model_name_or_path (`str` or `os.PathLike`): a local folder or a hub id such as
            `"google/ddpm-cifar10-32"`.
        revision (`str`, *optional*): branch, tag or commit of a hub checkpoint; `main` by default.
        subfolder (`str`, *optional*): the folder inside the repo or local folder that contains the model.
        cache_dir (`str`, *optional*): the hub cache; `HF_HUB_CACHE` by default.
        local_files_only (`bool`, defaults to `False`): use the cache only.
        token (`str` or `bool`, *optional*): hub token for private or gated repos.

    Returns:
        A `ResolvedCheckpoint` whose `revision` is the commit hash of a hub checkpoint.
    """
    name = os.fspath(pretrained_model_name_or_path)
    subfolder = _check_subfolder(subfolder)

    # 1. A local folder.
    if os.path.isdir(name):
        if revision is not None:
            raise ValueError(
                f"`revision={revision!r}` applies to hub ids only, but {name!r} is a local folder; "
                "drop `revision` or pass the hub id."
            )
        folder = Path(name, subfolder or "")
        if not folder.is_dir():
            raise FileNotFoundError(f"No subfolder {subfolder!r} in {name!r}; check `subfolder`.")
        return ResolvedCheckpoint(folder=folder, name_or_path=name, revision=None, subfolder=subfolder)
    if os.path.exists(name):
        raise ValueError(f"{name!r} is a file; pass the folder that contains the model's config and weights.")

    # 2. A hub repo id, fetched through the cache.
    try:
        validate_repo_id(name)
    except HFValidationError as error:
        if _looks_like_path(name):
            raise FileNotFoundError(f"No folder {name!r}; check the path.") from error
        raise ValueError(
            f"{name!r} is neither a local folder nor a valid hub repo id ({error}); pass an existing folder or "
            "an id of the form 'namespace/name' made of letters, digits, '-', '_' and '.'."
        ) from error
    prefix = f"{subfolder}/" if subfolder else ""
    offline = constants.is_offline_mode() or local_files_only
    try:
        snapshot = snapshot_download(
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            allow_patterns=[prefix + pattern for pattern in DOWNLOAD_PATTERNS],
            token=token,
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as error:
        cache = os.fspath(cache_dir or constants.HF_HUB_CACHE)
        if offline:
            fix = (
                "download it once with network access (`hf download "
                f"{name}`), or unset HF_HUB_OFFLINE and pass local_files_only=False"
            )
        else:
            fix = "check the network connection and the id"
        raise FileNotFoundError(
            f"Repo {name!r} at revision {revision or 'main'!r} is not in the hub cache {cache!r} and the Hub "
            f"was not reached (offline mode: {offline}); {fix}."
        ) from error
    except RevisionNotFoundError as error:
        raise FileNotFoundError(
            f"Revision {revision!r} does not exist in repo {name!r}; pass an existing branch, tag or commit."
        ) from error
    except RepositoryNotFoundError as error:
        raise FileNotFoundError(
            f"Repo {name!r} was not found on the Hub; check the id, or log in with `hf auth login` if it is "
            "private or gated."
        ) from error

    snapshot_path = Path(snapshot)
    commit = snapshot_path.name if snapshot_path.parent.name == "snapshots" else revision
    folder = snapshot_path / (subfolder or "")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No subfolder {subfolder!r} in repo {name!r} at revision {revision or 'main'!r}; "
            f"the repo has {sorted(path.name for path in snapshot_path.iterdir())}."
        )
    return ResolvedCheckpoint(folder=folder, name_or_path=name, revision=commit, subfolder=subfolder)


def read_json(folder: Path, filename: str) -> dict:
    """Read `folder/filename`, raising `FileNotFoundError` or `ValueError` with the path."""
    path = Path(folder, filename)
    if not path.is_file():
        raise FileNotFoundError(f"Missing {filename} in {os.fspath(folder)!r}.")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(f"{os.fspath(path)!r} is not valid JSON ({error}); re-save or re-download it.") from error


def check_safetensors_weights(folder: Path, weights_name: str = DIFFUSERS_WEIGHTS_NAME) -> None:
    """Check that `folder` contains `weights_name` as safetensors. Pickle files are detected by name and never opened.

    Raises:
        ValueError: the folder has pickle weights (`.bin`, `.pt`, `.ckpt`, ...) but no safetensors.
        FileNotFoundError: the folder has no weights at all.
    """
    names = sorted(path.name for path in Path(folder).iterdir() if path.is_file())
    if any(weights_name + suffix in names for suffix in SAFETENSORS_SUFFIXES):
        return
    pickles = [name for name in names if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ValueError(
            f"{os.fspath(folder)!r} has pickle weights {pickles} but no {weights_name}.safetensors. "
            "hf_transfer loads safetensors only and does not unpickle files from outside. Convert the "
            "checkpoint once where you trust it (load it and call save_pretrained(..., safe_serialization=True)), "
            "or pass the revision of the Hub's safetensors conversion pull request (such as 'refs/pr/1')."
        )
    raise FileNotFoundError(
        f"Missing {weights_name}.safetensors in {os.fspath(folder)!r} (files: {names}); "
        "pass the folder of a complete checkpoint or check `subfolder`."
    )


def detect_checkpoint_kind(folder: Path) -> str:
    """Name the kind of checkpoint in `folder`.

    Returns:
        One of `"unet"` (a diffusers `UNet2DModel`), `"unconditional_pipeline"` (`DDPMPipeline` or
        `DDIMPipeline`), `"transfer_pipeline"` (`TransferDiffusionPipeline`), `"flow_model"`
        (`ConditionalFlowModel`) and `"target_weights"` (a target-only save).

    Raises:
        ValueError: the folder contains a checkpoint of another architecture.
        FileNotFoundError: the folder contains no known config file.
    """
    from .transfer import TRANSFER_CONFIG_NAME
    from .transfer.saving import TARGET_WEIGHTS_NAME

    folder = Path(folder)
    if (folder / TARGET_WEIGHTS_NAME).is_file():
        return "target_weights"
    if (folder / FLOW_MODEL_INDEX).is_file():
        return "flow_model"
    if (folder / "model_index.json").is_file():
        class_name = read_json(folder, "model_index.json").get("_class_name")
        if class_name in UNCONDITIONAL_PIPELINES:
            return "unconditional_pipeline"
        if class_name == TRANSFER_PIPELINE:
            return "transfer_pipeline"
        raise ValueError(
            f"{os.fspath(folder)!r} contains a {class_name} checkpoint; hf_transfer starts from UNet2DModel, "
            f"{', '.join(UNCONDITIONAL_PIPELINES)} and {TRANSFER_PIPELINE} checkpoints. Pass one of those, or the "
            "`subfolder` of a UNet2DModel inside a larger pipeline."
        )
    if (folder / "config.json").is_file():
        config = read_json(folder, "config.json")
        class_name = config.get("_class_name") or (config.get("architectures") or [None])[0]
        if class_name == UNet2DModel.__name__:
            return "unet"
        raise ValueError(
            f"{os.fspath(folder)!r} contains a {class_name or 'non-diffusers'} checkpoint, not a UNet2DModel; "
            "pass a UNet2DModel checkpoint (or its pipeline). For a UNet2DConditionModel, load it with diffusers "
            "and wrap it with SharedEmbeddingUNet2DConditionModel.from_unet."
        )
    if (folder / TRANSFER_CONFIG_NAME).is_file():
        # A target-only save whose weights file is missing or not safetensors; loading reports which.
        return "target_weights"
    raise FileNotFoundError(
        f"No model_index.json, config.json, {FLOW_MODEL_INDEX} or {TARGET_WEIGHTS_NAME} in "
        f"{os.fspath(folder)!r}; pass the folder of a saved model or check `subfolder`."
    )


def _load_unconditional_unet(folder: Path) -> UNet2DModel:
    check_safetensors_weights(folder)
    # use_safetensors=True stops diffusers from falling back to a pickle .bin.
    return UNet2DModel.from_pretrained(os.fspath(folder), use_safetensors=True)


def _load_scheduler(folder: Path):
    import diffusers
    from diffusers.schedulers.scheduling_utils import SchedulerMixin

    class_name = read_json(folder, "scheduler_config.json").get("_class_name")
    scheduler_class = getattr(diffusers, str(class_name), None)
    if not (isinstance(scheduler_class, type) and issubclass(scheduler_class, SchedulerMixin)):
        raise ValueError(f"Unknown noise scheduler class {class_name!r} in {os.fspath(folder)!r}.")
    return scheduler_class.from_pretrained(os.fspath(folder))


def _check_component_weights(folder: Path) -> None:
    """Check every weight-bearing component folder of a pipeline for safetensors."""
    index = read_json(folder, "model_index.json")
    for component in sorted(key for key in index if not key.startswith("_")):
        component_folder = folder / component
        if (component_folder / "config.json").is_file():
            check_safetensors_weights(component_folder)


def load_unet(
    pretrained_model_name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> UNet2DModel:
    """Load a pretrained unconditional `UNet2DModel` from a UNet, `DDPMPipeline` or `DDIMPipeline` checkpoint.

    Arguments as in `resolve_checkpoint`. A pipeline's UNet is read from its `unet` folder.
    """
    checkpoint = resolve_checkpoint(
        pretrained_model_name_or_path,
        revision=revision,
        subfolder=subfolder,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )
    kind = detect_checkpoint_kind(checkpoint.folder)
    if kind == "unet":
        return _load_unconditional_unet(checkpoint.folder)
    if kind == "unconditional_pipeline":
        return _load_unconditional_unet(checkpoint.folder / "unet")
    raise ValueError(
        f"{checkpoint.name_or_path!r} is a {kind} checkpoint, not an unconditional UNet; load it with load_source_model."
    )


def load_source_model(
    pretrained_model_name_or_path: str | os.PathLike,
    shared_embedding: SharedEmbedding | None = None,
    *,
    revision: str | None = None,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    condition_dropout: float = 0.1,
) -> nn.Module:
    """Start a source model from a hub id or local folder.

    | checkpoint | result |
    |---|---|
    | `UNet2DModel`, `DDPMPipeline`, `DDIMPipeline` (unconditional) | `ConditionalDiffusionModel` with `shared_embedding` attached through a zero-initialised projection, so its outputs equal the pretrained UNet's until training moves the projection; a pipeline's noise scheduler is kept |
    | `TransferDiffusionPipeline` saved by this library | `ConditionalDiffusionModel` with the saved shared embedding |
    | `ConditionalFlowModel` saved by this library | that `ConditionalFlowModel` |
    | target-only save (`target_weights.safetensors` + `transfer_config.json`) | the transferred model, rebuilt on its recorded base |

    Args:
        pretrained_model_name_or_path (`str` or `os.PathLike`): local folder or hub id.
        shared_embedding (`SharedEmbedding`, *optional*): the shared embedding h to attach to an
            unconditional UNet. It is required for those checkpoints and rejected for the others,
            because they bring their own.
        revision, subfolder, cache_dir, local_files_only, token: as in `resolve_checkpoint`.
        condition_dropout (`float`, defaults to 0.1): passed to `ConditionalDiffusionModel`.

    Returns:
        The model, with `source_checkpoint` (a `ResolvedCheckpoint`) set when the checkpoint is
        a complete model, so that target-only saves can name it as their base, and
        `pretrained_checkpoint` set in every case.
    """
    from .diffusion import ConditionalDiffusionModel, SharedEmbeddingUNet2DModel, TransferDiffusionPipeline

    checkpoint = resolve_checkpoint(
        pretrained_model_name_or_path,
        revision=revision,
        subfolder=subfolder,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
    )
    folder = checkpoint.folder
    kind = detect_checkpoint_kind(folder)
    if kind in ("unet", "unconditional_pipeline"):
        if not isinstance(shared_embedding, SharedEmbedding):
            raise TypeError(
                f"{checkpoint.name_or_path!r} is an unconditional {kind.replace('_', ' ')} checkpoint, so it needs a "
                f"shared embedding; pass shared_embedding=ClassLabelEmbedding(...) or another SharedEmbedding "
                f"(got {type(shared_embedding).__name__})."
            )
        unet = _load_unconditional_unet(folder if kind == "unet" else folder / "unet")
        scheduler = _load_scheduler(folder / "scheduler") if kind == "unconditional_pipeline" else None
        generator = SharedEmbeddingUNet2DModel.from_unet(unet, shared_embedding.embedding_dim)
        model = ConditionalDiffusionModel(shared_embedding, generator, scheduler, condition_dropout)
        model.pretrained_checkpoint = checkpoint
        logger.info("Attached a %s to the UNet of %s.", type(shared_embedding).__name__, checkpoint.name_or_path)
        return model

    if shared_embedding is not None:
        raise ValueError(
            f"{checkpoint.name_or_path!r} is a {kind} checkpoint that brings its own shared embedding; "
            "drop the `shared_embedding` argument."
        )
    if kind == "target_weights":
        from .transfer.saving import load_target_weights

        return load_target_weights(checkpoint)
    if kind == "transfer_pipeline":
        _check_component_weights(folder)
        pipeline = TransferDiffusionPipeline.from_pretrained(os.fspath(folder), use_safetensors=True)
        model = ConditionalDiffusionModel(
            pipeline.shared_embedding, pipeline.unet, pipeline.scheduler, condition_dropout
        )
    else:  # flow_model
        from .flows import ConditionalFlowModel

        for component in ("shared_embedding", "generator"):
            check_safetensors_weights(folder / component)
        model = ConditionalFlowModel.from_pretrained(os.fspath(folder))
    model.source_checkpoint = checkpoint
    model.pretrained_checkpoint = checkpoint
    logger.info("Loaded a %s from %s (revision %s).", type(model).__name__, checkpoint.name_or_path, checkpoint.revision)
    return model


def _skip_in_upload(name: str) -> bool:
    return any(fnmatch(name, pattern) for pattern in UPLOAD_SKIP_PATTERNS)


def copy_for_upload(source: Path, destination: Path) -> list[str]:
    """Copy `source` into `destination`, leaving out checkpoints, caches and temp files.

    Returns:
        The relative paths left out.
    """
    skipped: list[str] = []
    for root, directories, files in os.walk(source):
        relative_root = Path(root).relative_to(source)
        for directory in list(directories):
            if _skip_in_upload(directory):
                directories.remove(directory)
                skipped.append((relative_root / directory).as_posix() + "/")
        os.makedirs(destination / relative_root, exist_ok=True)
        for filename in files:
            if _skip_in_upload(filename):
                skipped.append((relative_root / filename).as_posix())
                continue
            shutil.copy2(Path(root, filename), destination / relative_root / filename)
    return skipped


def check_upload_folder(folder: Path) -> str:
    """Check that `folder` contains a loadable model in safetensors and return its kind.

    Raises:
        ValueError: a pickle file is present, or the folder contains no known model.
    """
    pickles = sorted(
        path.relative_to(folder).as_posix() for path in Path(folder).rglob("*") if path.name.endswith(PICKLE_SUFFIXES)
    )
    if pickles:
        raise ValueError(
            f"The folder to push contains pickle files {pickles}; hf_transfer publishes safetensors only. "
            "Re-save the model with save_pretrained (safetensors) or delete those files."
        )
    kind = detect_checkpoint_kind(folder)
    if kind in ("transfer_pipeline", "unconditional_pipeline"):
        _check_component_weights(folder)
    elif kind == "unet":
        check_safetensors_weights(folder)
    elif kind == "flow_model":
        for component in ("shared_embedding", "generator"):
            check_safetensors_weights(folder / component)
    return kind


def save_for_upload(model: nn.Module, folder: Path, target_only: bool = False) -> None:
    """Write `model` into `folder`: a full pipeline (LoRA adapters merged) or its target-only weights."""
    import copy

    from .diffusion import ConditionalDiffusionModel, TransferDiffusionPipeline
    from .transfer.lora import has_lora_adapters, merge_lora_adapters
    from .transfer.saving import save_target_weights

    if target_only:
        save_target_weights(model, folder)
        return
    if isinstance(model, TransferDiffusionPipeline):
        unet = model.unet
        if has_lora_adapters(unet):
            unet = merge_lora_adapters(copy.deepcopy(unet))
        TransferDiffusionPipeline(unet, model.scheduler, model.shared_embedding).save_pretrained(folder)
        return
    if has_lora_adapters(model):
        # A full save contains plain diffusers weights, so the adapters go into the base layers of a copy.
        model = copy.deepcopy(model)
        merge_lora_adapters(model)
    if isinstance(model, ConditionalDiffusionModel):
        model.to_pipeline().save_pretrained(folder)
        transfer_config = getattr(model, "transfer_config", None)
        if transfer_config is not None:
            transfer_config.save_pretrained(folder)
    elif hasattr(model, "save_pretrained"):
        model.save_pretrained(folder)
    else:
        raise TypeError(
            f"Cannot save a {type(model).__name__}; pass a ConditionalDiffusionModel, a ConditionalFlowModel, "
            "a TransferDiffusionPipeline or a folder."
        )


def push_to_hub(
    model_or_folder,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    commit_message: str | None = None,
    target_only: bool = False,
    card_info=None,
):
    """Push a transferred model, or a folder saved earlier, to a hub model repo with a model card.

    Steps:

    1. Validate `repo_id` and check offline mode, before any network call.
    2. Stage the files in a temporary folder: checkpoints and caches are left out, and LoRA
       adapters are merged for a full save. Check that the staged folder is a complete model in safetensors.
    3. Write the model card. A folder's own `README.md` is kept when `card_info` is None.
    4. Call `HfApi.create_repo` (`exist_ok=True`), `HfApi.create_branch` for a `revision` other
       than `main`, and `HfApi.upload_folder`.

    Args:
        model_or_folder: a `ConditionalDiffusionModel`, `ConditionalFlowModel`, `TransferDiffusionPipeline`,
            or a local folder saved by one of them (or by `save_target_weights`).
        repo_id (`str`): `"namespace/name"` or `"name"` (in the token's user namespace).
        private (`bool`, defaults to `False`): create the repo as private.
        revision (`str`, *optional*): branch to push to; created from `main` if missing.
        token (`str` or `bool`, *optional*): hub token; the logged-in one by default.
        commit_message (`str`, *optional*): message of the upload commit.
        target_only (`bool`, defaults to `False`): for a model, push only its target-specific weights
            plus `transfer_config.json` (see `save_target_weights`).
        card_info (`ModelCardInfo`, *optional*): source and target data, evaluation table, sample grid
            and limitations for the card.

    Returns:
        The `CommitInfo` of the upload.
    """
    from .model_card import ModelCardInfo, make_model_card

    # 1. Validate everything that needs no network.
    if not isinstance(repo_id, str):
        raise TypeError(f"`repo_id` must be a string such as 'namespace/name', got {type(repo_id).__name__}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(
            f"Invalid repo id {repo_id!r} ({error}); use 'namespace/name' with letters, digits, '-', '_' and '.'."
        ) from error
    if card_info is not None and not isinstance(card_info, ModelCardInfo):
        raise TypeError(f"`card_info` must be a ModelCardInfo, got {type(card_info).__name__}.")
    is_folder = isinstance(model_or_folder, (str, os.PathLike))
    if is_folder and not os.path.isdir(model_or_folder):
        raise FileNotFoundError(f"No folder {os.fspath(model_or_folder)!r} to push; check the path.")
    if is_folder and target_only:
        raise ValueError("`target_only` applies to models; a folder is pushed as it is.")
    if constants.is_offline_mode():
        raise OfflineModeIsEnabled(
            f"Cannot push to {repo_id!r} because HF_HUB_OFFLINE is set; unset it to upload."
        )

    with tempfile.TemporaryDirectory(prefix="hf_transfer_push_") as staging_root:
        staging = Path(staging_root, "model")
        # 2. Stage the files.
        if is_folder:
            staging.mkdir()
            skipped = copy_for_upload(Path(model_or_folder), staging)
            if skipped:
                logger.info("Left out of the upload: %s", ", ".join(skipped))
        else:
            save_for_upload(model_or_folder, staging, target_only=target_only)
        try:
            kind = check_upload_folder(staging)
        except (ValueError, FileNotFoundError) as error:
            if not is_folder:
                raise
            # Name the user's folder in the message, not the temporary staging copy.
            message = str(error).replace(str(staging), os.fspath(model_or_folder))
            raise type(error)(message) from error

        # 3. Write the card unless the folder brings one.
        card_path = staging / MODEL_CARD_NAME
        if card_info is not None or not card_path.is_file():
            card = make_model_card(
                staging,
                repo_id=repo_id,
                model=None if is_folder else model_or_folder,
                card_info=card_info or ModelCardInfo(),
            )
            card.save(card_path)

        # 4. Upload.
        api = HfApi(token=token)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload hf_transfer {kind}",
        )
    logger.info("Pushed a %s to %s (revision %s).", kind, repo_url, revision or "main")
    return commit
