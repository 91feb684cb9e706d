"""Shared embeddings that wrap a pretrained transformers encoder, for text and image conditions."""

import contextlib
import contextvars
import hashlib
import logging
import os
import warnings
from collections.abc import Hashable, Iterable

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
# diffusers' pipeline loader finds a custom component's load method by looking up `ModelMixin`
# in the module that defines the component's class (diffusers 0.42, `get_class_obj_and_candidates`).
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from huggingface_hub import snapshot_download
from torch import nn
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer, PretrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from ..utils import HfTransferWarning, check_finite
from .base import SharedEmbedding
from .cache import EncoderOutputCache

logger = logging.getLogger(__name__)

# A saved encoder embedding is one folder: diffusers' config.json and safetensors weights (encoder
# and projection), plus the encoder's transformers config and its tokenizer or image processor.
ENCODER_FOLDER = "encoder"
PROCESSOR_FOLDER = "processor"
POOLINGS = ("mean", "cls")

# Set by `from_pretrained` while it builds the module: the local folder whose `encoder/` config and
# `processor/` files replace `encoder_name_or_path`, because the weights come from the saved file.
_saved_folder: contextvars.ContextVar[str | None] = contextvars.ContextVar("_saved_folder", default=None)


def load_encoder_config(encoder_name_or_path: str | os.PathLike, revision: str | None = None) -> PretrainedConfig:
    """Load a transformers config and raise `ValueError` unless it describes an encoder.

    Rejected: folders of diffusers models (a UNet, a VAE), configs without a transformers
    `model_type`, encoder-decoder (seq2seq) models, decoder-only (causal) models and two-tower
    models such as CLIP, whose `AutoModel` needs text and images at once.
    """
    name = os.fspath(encoder_name_or_path)
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(name, revision=revision)
    except OSError as error:
        raise OSError(
            f"Could not read a transformers config from {name!r}: {error}. Pass the hub id or the local folder "
            "of a transformers encoder, with its config.json."
        ) from error
    check_encoder_config_dict(config_dict, name)
    return AutoConfig.from_pretrained(name, revision=revision)


def check_encoder_config_dict(config_dict: dict, name: str) -> None:
    """Raise `ValueError` if the raw `config.json` contents of `name` do not describe a transformers encoder."""
    if "_class_name" in config_dict or "_diffusers_version" in config_dict:
        raise ValueError(
            f"{name!r} is a diffusers model ({config_dict.get('_class_name', 'unknown class')}), not a transformers "
            "encoder; pass a text or image encoder such as a BERT, MiniLM or ViT checkpoint."
        )
    model_type = config_dict.get("model_type")
    if model_type is None:
        raise ValueError(
            f"The config of {name!r} has no `model_type`, so it is not a transformers model; pass a transformers "
            "encoder checkpoint."
        )
    if config_dict.get("is_encoder_decoder"):
        raise ValueError(
            f"{name!r} is an encoder-decoder model (model_type {model_type!r}); this embedding takes encoder-only "
            "checkpoints. Save the encoder half alone (for T5, `T5EncoderModel.from_pretrained(...).save_pretrained(dir)`) "
            "or pass an encoder such as BERT or MiniLM."
        )
    is_causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    if config_dict.get("is_decoder") or is_causal:
        raise ValueError(
            f"{name!r} is a decoder-only model (model_type {model_type!r}): each position sees only the tokens "
            "before it, so its pooled states do not summarise the text. Pass an encoder such as BERT or MiniLM."
        )
    if "text_config" in config_dict and "vision_config" in config_dict:
        raise ValueError(
            f"{name!r} is a two-tower text-image model (model_type {model_type!r}); save the tower you need alone "
            "(for CLIP, `CLIPTextModel` or `CLIPVisionModel`) and pass that folder."
        )


def _resolve_folder(name_or_path: str | os.PathLike, subfolder: str | None, **download_kwargs) -> str:
    """Return a local folder for a saved embedding: the path itself, or the hub snapshot (offline if cached)."""
    name = os.fspath(name_or_path)
    if os.path.isdir(name):
        folder = name
    else:
        allow_patterns = [f"{subfolder}/**"] if subfolder else None
        folder = snapshot_download(name, allow_patterns=allow_patterns, **download_kwargs)
    if subfolder:
        folder = os.path.join(folder, subfolder)
    if not os.path.isdir(os.path.join(folder, ENCODER_FOLDER)):
        raise ValueError(
            f"{folder!r} has no {ENCODER_FOLDER}/ folder, so it was not saved by an encoder embedding's "
            "save_pretrained; to wrap a transformers encoder checkpoint, pass its id as `encoder_name_or_path` "
            "to the constructor instead."
        )
    return folder


class PretrainedEncoderEmbedding(SharedEmbedding):
    """Base class of shared embeddings h(z) = projection(pool(encoder(preprocess(z)))).

    The encoder is a transformers model loaded with `AutoModel`. Its last hidden states are pooled
    into one vector per condition: `"mean"` averages the positions the attention mask keeps and
    `"cls"` takes the first position. An optional trainable linear projection maps the pooled vector
    to `embedding_dim`.

    Which parts train:
        - `train_encoder=False` (default): the encoder is frozen under every strategy and runs in eval
          mode, so only the projection is learned. Source learning fits the projection.
          `frozen_embedding` and `lora` then freeze it too, and `full_finetune` trains it further.
          `from_scratch` rebuilds the module with `from_config`: it reloads the *pretrained* encoder
          from `encoder_name_or_path` and draws a new projection.
        - `train_encoder=True`: the encoder is trained wherever the strategy trains h.

    Saving: `save_pretrained` writes config.json and one safetensors file with the encoder and
    projection weights, plus `encoder/config.json` and `processor/` (the tokenizer or image
    processor), so `from_pretrained` restores the module from that folder alone. `from_config`
    needs `encoder_name_or_path` to be reachable, because it reloads the pretrained weights.

    Subclasses set `processor_attribute` and implement `validate_condition`, `preprocess` and
    `condition_keys`.
    """

    processor_attribute: str = ""

    def _build(
        self,
        encoder_name_or_path: str,
        embedding_dim: int | None,
        pooling: str,
        normalize: bool,
        train_encoder: bool,
        encoder_revision: str | None,
    ) -> None:
        """Load the encoder and its processor and build the projection; subclasses call it from `__init__`."""
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown `pooling` {pooling!r}; choose one of {', '.join(POOLINGS)}.")
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be at least 1 or None (no projection), got {embedding_dim}.")

        saved_folder = _saved_folder.get()
        if saved_folder is not None:
            # The weights come from the saved safetensors file, so build the encoder from its config alone.
            encoder_folder = os.path.join(saved_folder, ENCODER_FOLDER)
            encoder_config = load_encoder_config(encoder_folder)
            self.encoder = AutoModel.from_config(encoder_config)
            processor_source, processor_revision = os.path.join(saved_folder, PROCESSOR_FOLDER), None
        else:
            encoder_config = load_encoder_config(encoder_name_or_path, revision=encoder_revision)
            self.encoder = AutoModel.from_pretrained(
                encoder_name_or_path, config=encoder_config, revision=encoder_revision, use_safetensors=True
            )
            processor_source, processor_revision = encoder_name_or_path, encoder_revision
        setattr(self, self.processor_attribute, self.load_processor(processor_source, processor_revision))

        self.hidden_size = _hidden_size(encoder_config, encoder_name_or_path)
        self.projection = nn.Linear(self.hidden_size, embedding_dim) if embedding_dim is not None else None
        if not train_encoder:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self._encoder_cache: EncoderOutputCache | None = None

    # -- subclass hooks -------------------------------------------------------------------------

    @classmethod
    def load_processor(cls, name_or_path: str, revision: str | None):
        """Load the tokenizer or image processor that turns conditions into encoder inputs."""
        raise NotImplementedError

    def preprocess(self, conditions: list) -> dict[str, torch.Tensor]:
        """Turn validated conditions into the encoder's keyword inputs, on the encoder's device."""
        raise NotImplementedError

    def condition_keys(self, conditions: list) -> list[Hashable]:
        """Cache keys of validated conditions: equal keys must mean equal encoder outputs."""
        raise NotImplementedError

    @property
    def processor(self):
        return getattr(self, self.processor_attribute)

    # -- shape and freezing -----------------------------------------------------------------------

    @property
    def embedding_dim(self) -> int:
        """Width of h(z): `embedding_dim` with a projection, else the encoder's hidden size."""
        return self.config.embedding_dim if self.projection is not None else self.hidden_size

    @property
    def always_frozen_modules(self) -> list[nn.Module]:
        """Submodules that stay frozen under every strategy: the encoder unless `train_encoder` is set."""
        return [] if self.config.train_encoder else [self.encoder]

    @property
    def encoder_is_frozen(self) -> bool:
        return not any(parameter.requires_grad for parameter in self.encoder.parameters())

    def train(self, mode: bool = True):
        """Set train mode, but keep a frozen encoder in eval mode so that its dropout stays off."""
        super().train(mode)
        if self.encoder_is_frozen:
            self.encoder.eval()
        return self

    # -- computing h(z) ---------------------------------------------------------------------------

    def pool(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Pool the encoder's last hidden states into one vector per condition.

        Args:
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): the last
                hidden states; convolutional encoders give `(batch_size, hidden_size, height, width)`,
                which is flattened to positions first.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 1 for
                positions to keep, 0 for padding; None keeps every position.

        Returns:
            `torch.Tensor` of shape `(batch_size, hidden_size)`.
        """
        if hidden_states.ndim == 4:
            if self.config.pooling == "cls":
                raise ValueError(
                    "CLS pooling needs a token sequence, but this encoder returns a feature map of shape "
                    f"{tuple(hidden_states.shape)}; build the embedding with pooling='mean'."
                )
            # NOTE: convolutional encoders are not covered by the tests; only ViT-style ones are.
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if self.config.pooling == "cls":
            return hidden_states[:, 0]
        if attention_mask is None:
            return hidden_states.mean(dim=1)
        mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
        return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def encode_live(self, conditions: list) -> torch.Tensor:
        """Run the encoder and pooling on validated conditions, bypassing the cache.

        Returns:
            `torch.Tensor` of shape `(batch_size, hidden_size)`, normalised to unit length if `normalize` is set.
        """
        inputs = self.preprocess(conditions)
        # A frozen encoder needs no autograd graph; skipping it saves the activations' memory.
        context = torch.no_grad() if self.encoder_is_frozen else contextlib.nullcontext()
        with context:
            outputs = self.encoder(**inputs)
            hidden_states = getattr(outputs, "last_hidden_state", None)
            if hidden_states is None:
                raise ValueError(
                    f"The encoder {type(self.encoder).__name__} returned no `last_hidden_state`; wrap an encoder "
                    "whose AutoModel output has one (BERT, MiniLM, ViT and most encoders do)."
                )
            features = self.pool(hidden_states, inputs.get("attention_mask"))
            if self.config.normalize:
                features = nn.functional.normalize(features, dim=-1)
        return features

    def encode(self, conditions: list) -> torch.Tensor:
        """Pooled encoder features of validated conditions, served from the cache where it has them.

        Returns:
            `torch.Tensor` of shape `(batch_size, hidden_size)`.
        """
        cache = self._encoder_cache
        if cache is None:
            return self.encode_live(conditions)
        if not self.encoder_is_frozen:
            raise ValueError(
                "The encoder output cache is on but the encoder is trainable, so cached outputs would carry no "
                "gradient; call `disable_encoder_cache()` before training the encoder."
            )
        cache.check_encoder(self.encoder)
        keys = self.condition_keys(conditions)
        found, missing = cache.lookup(keys)
        if missing:
            computed = self.encode_live([conditions[position] for position in missing])
            cache.store([keys[position] for position in missing], computed)
            for position, feature in zip(missing, computed):
                found[position] = feature
        device = self.encoder.device
        return torch.stack([found[position].to(device) for position in range(len(conditions))])

    def embed(self, condition: list) -> torch.Tensor:
        """Compute h(z) for a validated batch of conditions.

        Returns:
            `torch.Tensor` of shape `(batch_size, embedding_dim)`.
        """
        features = self.encode(condition)
        if self.projection is None:
            return features
        # The pooled features come in the encoder's dtype; the projection may be kept in another one.
        return self.projection(features.to(self.projection.weight.dtype))

    # -- cache ------------------------------------------------------------------------------------

    def enable_encoder_cache(self, conditions=None, batch_size: int = 64, progress_bar: bool = True) -> EncoderOutputCache:
        """Cache the pooled outputs of the frozen encoder, optionally filling the cache for a fixed data set.

        Every later call to the embedding looks conditions up first and runs the encoder only on
        the ones the cache lacks, which it then stores. The projection is not cached, so it keeps training.

        Args:
            conditions (*optional*): conditions to encode now, in the form `forward` takes; duplicates
                are encoded once.
            batch_size (`int`, defaults to 64): conditions per encoder pass while filling.
            progress_bar (`bool`, defaults to `True`): show a tqdm bar while filling.

        Returns:
            The `EncoderOutputCache`, whose `hits` and `misses` count lookups.
        """
        if not self.encoder_is_frozen:
            raise ValueError(
                "Only a frozen encoder's outputs can be cached, but this encoder is trainable "
                "(train_encoder=True, or a strategy that trains it); train without the cache."
            )
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        cache = EncoderOutputCache(self.encoder)
        self._encoder_cache = cache
        if conditions is None:
            return cache

        validated = self.validate_condition(conditions)
        unique: dict[Hashable, object] = {}
        for key, condition in zip(self.condition_keys(validated), validated):
            unique.setdefault(key, condition)
        keys, values = list(unique), list(unique.values())
        starts = range(0, len(values), batch_size)
        for start in tqdm(starts, desc="encoding conditions", disable=not progress_bar, leave=False):
            chunk = values[start : start + batch_size]
            cache.store(keys[start : start + batch_size], self.encode_live(chunk))
        logger.info("Cached the encoder outputs of %d distinct conditions (of %d given).", len(cache), len(validated))
        return cache

    def disable_encoder_cache(self) -> None:
        """Drop the encoder output cache; later calls run the encoder every time."""
        self._encoder_cache = None

    @property
    def encoder_cache(self) -> EncoderOutputCache | None:
        return self._encoder_cache

    # -- saving and loading -----------------------------------------------------------------------

    def save_pretrained(self, save_directory: str | os.PathLike, is_main_process: bool = True, **kwargs) -> None:
        """Save the encoder config and processor into `save_directory`, then the weights and config as diffusers does.

        Args:
            save_directory (`str` or `os.PathLike`): the folder to write.
            is_main_process (`bool`, defaults to `True`): only the main process writes files.
            kwargs: passed to `ModelMixin.save_pretrained` (`safe_serialization`, `variant`, `push_to_hub`, ...).
        """
        if kwargs.get("safe_serialization") is False:
            raise ValueError("Encoder embeddings are saved as safetensors only; drop `safe_serialization=False`.")
        if is_main_process:
            # The subfolders are written first, so that `push_to_hub=True` in the base call uploads them too.
            self.encoder.config.save_pretrained(os.path.join(save_directory, ENCODER_FOLDER))
            self.processor.save_pretrained(os.path.join(save_directory, PROCESSOR_FOLDER))
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        """Load an embedding saved with `save_pretrained`, from a local folder or a hub id.

        The encoder is rebuilt from the saved `encoder/config.json` and gets its weights from the
        saved safetensors file; the processor comes from `processor/`. `encoder_name_or_path` is
        not read, so the folder loads where the original encoder checkpoint is missing.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): the folder or hub id.
            kwargs: as for `ModelMixin.from_pretrained`; `subfolder`, `revision`, `cache_dir`, `token`
                and `local_files_only` also select the files to fetch from the hub.
        """
        subfolder = kwargs.pop("subfolder", None)
        download_kwargs = {key: kwargs.pop(key) for key in ("revision", "cache_dir", "token", "local_files_only") if key in kwargs}
        if kwargs.get("use_safetensors") is False:
            raise ValueError("Encoder embeddings load from safetensors only; drop `use_safetensors=False`.")
        kwargs["use_safetensors"] = True
        folder = _resolve_folder(pretrained_model_name_or_path, subfolder, **download_kwargs)
        token = _saved_folder.set(folder)
        try:
            return super().from_pretrained(folder, **kwargs)
        finally:
            _saved_folder.reset(token)


def _hidden_size(config: PretrainedConfig, name: str) -> int:
    """Width of the encoder's last hidden states."""
    hidden_size = getattr(config, "hidden_size", None)
    if hidden_size is None and getattr(config, "hidden_sizes", None):
        hidden_size = config.hidden_sizes[-1]
    if hidden_size is None:
        raise ValueError(
            f"Could not find the hidden size in the config of {name!r} (model_type {config.model_type!r}); "
            "pass an encoder whose config has `hidden_size`."
        )
    return int(hidden_size)


class TextEncoderEmbedding(PretrainedEncoderEmbedding):
    """Shared embedding of text conditions by a pretrained transformers text encoder and its tokenizer.

    Over-long texts are truncated to `max_length` tokens with an `HfTransferWarning`.

    Args:
        encoder_name_or_path (`str`): hub id or local folder of an encoder-only transformers
            checkpoint with a tokenizer, such as a BERT or MiniLM sentence encoder.
        embedding_dim (`int`, *optional*): width of h(z); a trainable linear projection maps the pooled
            features to it. None uses the pooled features as they are (width `hidden_size`).
        pooling (`str`, defaults to `"mean"`): `"mean"` over the tokens the attention mask keeps, or
            `"cls"` for the first token.
        normalize (`bool`, defaults to `False`): scale the pooled features to unit length, as
            sentence-transformers does for its MiniLM models.
        train_encoder (`bool`, defaults to `False`): whether the strategy may train the encoder; with
            False only the projection is ever trained.
        max_length (`int`, *optional*): tokens kept per text, special tokens included; None uses the
            smaller of the tokenizer's `model_max_length` and the encoder's `max_position_embeddings`.
        encoder_revision (`str`, *optional*): hub revision of the encoder checkpoint.

    Example:
        >>> from hf_transfer import TextEncoderEmbedding
        >>> embedding = TextEncoderEmbedding("sentence-transformers/all-MiniLM-L6-v2", embedding_dim=32)  # doctest: +SKIP
        >>> embedding(["the digit seven", "a handwritten 3"]).shape  # doctest: +SKIP
        torch.Size([2, 32])
    """

    processor_attribute = "tokenizer"

    @register_to_config
    def __init__(
        self,
        encoder_name_or_path: str,
        embedding_dim: int | None = None,
        pooling: str = "mean",
        normalize: bool = False,
        train_encoder: bool = False,
        max_length: int | None = None,
        encoder_revision: str | None = None,
    ):
        super().__init__()
        self._build(encoder_name_or_path, embedding_dim, pooling, normalize, train_encoder, encoder_revision)
        limit = _token_limit(self.tokenizer, self.encoder.config)
        if max_length is not None and not 1 <= max_length <= limit:
            raise ValueError(f"`max_length` must lie in [1, {limit}] for this encoder and tokenizer, got {max_length}.")
        self.max_length = max_length or limit

    @classmethod
    def load_processor(cls, name_or_path: str, revision: str | None):
        try:
            return AutoTokenizer.from_pretrained(name_or_path, revision=revision)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(
                f"Could not load a tokenizer from {name_or_path!r} ({error}); a text encoder embedding needs a "
                "checkpoint that ships its tokenizer files."
            ) from error

    def validate_condition(self, condition) -> list[str]:
        """Check a batch of texts: a list or tuple of non-empty strings, or one string (a batch of one)."""
        if isinstance(condition, str):
            condition = [condition]
        # Other sequences of strings, such as a `datasets` column, are taken as they iterate.
        if isinstance(condition, (torch.Tensor, np.ndarray, bytes, dict)) or not isinstance(condition, Iterable):
            raise TypeError(f"Text conditions must be a list of strings, got {type(condition).__name__}.")
        condition = list(condition)
        if not condition:
            raise ValueError("Got an empty batch of text conditions; pass at least one text.")
        for position, text in enumerate(condition):
            if not isinstance(text, str):
                raise TypeError(
                    f"Text condition {position} is a {type(text).__name__} ({text!r}), not a string; "
                    "pass a list of strings."
                )
            if not text.strip():
                raise ValueError(
                    f"Text condition {position} is empty ({text!r}); give every sample a non-empty description."
                )
        return condition

    def condition_keys(self, conditions: list[str]) -> list[Hashable]:
        return list(conditions)

    def preprocess(self, conditions: list[str]) -> dict[str, torch.Tensor]:
        lengths = [len(ids) for ids in self.tokenizer(conditions, truncation=False, verbose=False)["input_ids"]]
        too_long = [position for position, length in enumerate(lengths) if length > self.max_length]
        if too_long:
            longest = max(too_long, key=lambda position: lengths[position])
            warnings.warn(
                f"{len(too_long)} of {len(conditions)} texts are longer than max_length={self.max_length} tokens and "
                f"are truncated to their first {self.max_length} tokens; the longest has {lengths[longest]} tokens "
                f"(text {longest}: {conditions[longest][:60]!r}...). Shorten the texts to keep all of them.",
                HfTransferWarning,
                stacklevel=4,
            )
        encoded = self.tokenizer(
            conditions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {key: value.to(self.encoder.device) for key, value in encoded.items()}


def _token_limit(tokenizer, encoder_config: PretrainedConfig) -> int:
    """Return the maximum number of tokens the encoder takes: the smaller of the tokenizer's and the position table's limits."""
    limits = []
    # Tokenizers without a recorded limit report a huge placeholder (transformers' VERY_LARGE_INTEGER).
    if 0 < tokenizer.model_max_length < 1_000_000:
        limits.append(int(tokenizer.model_max_length))
    positions = getattr(encoder_config, "max_position_embeddings", None)
    if positions:
        limits.append(int(positions))
    if not limits:
        raise ValueError("Neither the tokenizer nor the encoder config gives a maximum length; pass `max_length`.")
    return min(limits)


class ImageEncoderEmbedding(PretrainedEncoderEmbedding):
    """Shared embedding of image conditions by a pretrained transformers vision encoder and its image processor.

    Args:
        encoder_name_or_path (`str`): hub id or local folder of a transformers vision encoder (ViT,
            DINOv2, ...) with a `preprocessor_config.json`.
        embedding_dim (`int`, *optional*): width of h(z) through a trainable linear projection; None
            uses the pooled features (width `hidden_size`).
        pooling (`str`, defaults to `"cls"`): `"cls"` takes the first token; `"mean"` averages all
            tokens, or all positions of a convolutional feature map.
        normalize (`bool`, defaults to `False`): scale the pooled features to unit length.
        train_encoder (`bool`, defaults to `False`): whether the strategy may train the encoder.
        encoder_revision (`str`, *optional*): hub revision of the encoder checkpoint.

    Conditions are a list of PIL images, `numpy` arrays or tensors, one image each, or one batched
    array or tensor of shape `(batch_size, channels, height, width)`. Arrays and tensors must be in
    the layout and value range the image processor expects, which is 0-255 unless its `do_rescale` is off.
    """

    processor_attribute = "image_processor"

    @register_to_config
    def __init__(
        self,
        encoder_name_or_path: str,
        embedding_dim: int | None = None,
        pooling: str = "cls",
        normalize: bool = False,
        train_encoder: bool = False,
        encoder_revision: str | None = None,
    ):
        super().__init__()
        self._build(encoder_name_or_path, embedding_dim, pooling, normalize, train_encoder, encoder_revision)

    @classmethod
    def load_processor(cls, name_or_path: str, revision: str | None):
        try:
            return AutoImageProcessor.from_pretrained(name_or_path, revision=revision)
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(
                f"Could not load an image processor from {name_or_path!r} ({error}); an image encoder embedding "
                "needs a checkpoint with a preprocessor_config.json."
            ) from error

    def validate_condition(self, condition) -> list:
        """Check a batch of images and return it as a list with one image per condition."""
        if isinstance(condition, (torch.Tensor, np.ndarray)):
            if condition.ndim != 4:
                raise ValueError(
                    "A batched image condition must have shape (batch_size, channels, height, width), "
                    f"got shape {tuple(condition.shape)}; pass a list for images of different sizes."
                )
            condition = list(condition)
        if not isinstance(condition, (list, tuple)):
            raise TypeError(
                f"Image conditions must be a list of images or a 4-D tensor, got {type(condition).__name__}."
            )
        if not condition:
            raise ValueError("Got an empty batch of image conditions; pass at least one image.")
        for position, image in enumerate(condition):
            if isinstance(image, np.ndarray):
                image = torch.from_numpy(image)
            if isinstance(image, torch.Tensor):
                if image.ndim not in (2, 3):
                    raise ValueError(
                        f"Image condition {position} has shape {tuple(image.shape)}; one image must have 2 or 3 dimensions."
                    )
                check_finite(f"image condition {position}", image)
            elif not hasattr(image, "tobytes") or not hasattr(image, "mode"):
                raise TypeError(
                    f"Image condition {position} is a {type(image).__name__}; pass PIL images, numpy arrays or tensors."
                )
        return list(condition)

    def condition_keys(self, conditions: list) -> list[Hashable]:
        keys = []
        for image in conditions:
            if isinstance(image, torch.Tensor):
                image = image.detach().cpu().numpy()
            if isinstance(image, np.ndarray):
                header = f"{image.dtype}{image.shape}"
                data = np.ascontiguousarray(image).tobytes()
            else:
                header = f"{image.mode}{image.size}"
                data = image.tobytes()
            keys.append(hashlib.sha256(header.encode() + data).hexdigest())
        return keys

    def preprocess(self, conditions: list) -> dict[str, torch.Tensor]:
        encoded = self.image_processor(images=conditions, return_tensors="pt")
        pixel_values = encoded["pixel_values"].to(device=self.encoder.device, dtype=self.encoder.dtype)
        return {"pixel_values": pixel_values}
