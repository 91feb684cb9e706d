"""User data through `datasets`: image folders, saved data sets, hub data sets and tables, preprocessed with `set_transform`.

Every loader returns a `datasets.Dataset`. `set_image_transform` and `set_table_transform` then attach
a transform that turns rows into the arguments of the models' `forward`. Those are `pixel_values` and
`condition` for diffusion, and `x` and `condition` for flows. The transform runs when a batch is read, so
images are decoded lazily and a bad file shows up with its path.
"""

import io
import os
from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Image, Sequence, Value, load_dataset, load_from_disk
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# Channels of the image modes a model can take.
IMAGE_MODE_CHANNELS = {"L": 1, "RGB": 3}
# Modes PIL converts to "L" or "RGB" without losing range: bilevel, 8-bit gray, palette and 8-bit colour, with or
# without alpha (alpha is dropped). 16- and 32-bit modes ("I;16", "I", "F") and CMYK are rejected instead.
CONVERTIBLE_IMAGE_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA")
TABLE_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}
# "auto" infers class labels or vectors from the column types; "text" keeps one column of strings as text.
CONDITION_TYPES = ("auto", "text")


@dataclass
class ConditionInfo:
    """What the condition columns hold, which decides the shared embedding a recipe builds.

    Attributes:
        kind: `"class_label"` (one integer column, for `ClassLabelEmbedding`), `"vector"` (numeric
            columns, for `MLPEmbedding`) or `"text"` (one column of strings, for `TextEncoderEmbedding`).
        num_classes: number of classes of a class-label condition.
        dim: width of a vector condition.
        class_names: names of the classes when the column is a `ClassLabel` or was encoded from strings.
    """

    kind: str
    num_classes: int | None = None
    dim: int | None = None
    class_names: list[str] | None = None


def _missing_column_error(column: str, dataset: Dataset, source: str, option: str) -> ValueError:
    return ValueError(
        f"Column {column!r} not found in {source}; its columns are {dataset.column_names}. "
        f"Set {option} to one of them."
    )


def require_columns(dataset: Dataset, columns: list[str], source: str, option: str) -> None:
    """Raise `ValueError` naming the first of `columns` that `dataset` lacks and the option that sets it."""
    for column in columns:
        if column not in dataset.column_names:
            raise _missing_column_error(column, dataset, source, option)


def _select_split(loaded, split: str, source: str) -> Dataset:
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"Split {split!r} not found in {source}; its splits are {sorted(loaded)}. Pass one of them as the split.")
        return loaded[split]
    return loaded


def load_image_folder(data_dir: str | os.PathLike) -> Dataset:
    """Load an image folder with `datasets`' `imagefolder` builder: labels from sub-folder names, extra columns from metadata.

    The layout is `data_dir/<class name>/<image file>`; the `label` column is the class of each
    image's folder. A `metadata.csv` or `metadata.jsonl` file with a `file_name` column (paths relative
    to `data_dir`) adds its other columns, which can serve as vector conditions. `imagefolder` drops
    the folder labels when a metadata file exists (datasets 5.2), so they are added back here unless
    the metadata has a `label` column of its own.

    Raises:
        FileNotFoundError: `data_dir` does not exist or contains no images.
    """
    data_dir = os.fspath(data_dir)
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(f"Image folder {data_dir!r} not found; pass the folder that contains one sub-folder per class.")
    try:
        dataset = load_dataset("imagefolder", data_dir=data_dir, split="train", drop_labels=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"No images found in {data_dir!r} ({error}); put .png or .jpg files in one sub-folder per class.") from error
    if len(dataset) == 0:
        raise FileNotFoundError(f"No images found in {data_dir!r}; put .png or .jpg files in one sub-folder per class.")
    if "label" not in dataset.column_names:
        dataset = _add_folder_labels(dataset, data_dir)
    return dataset


def _add_folder_labels(dataset: Dataset, data_dir: str) -> Dataset:
    """Add a `label` column from each image's sub-folder, which `imagefolder` leaves out when a metadata file exists."""
    paths = [cell["path"] for cell in dataset.cast_column("image", Image(decode=False))["image"]]
    folders = [os.path.relpath(path, data_dir).split(os.sep)[0] for path in paths]
    if any(folder == os.path.basename(path) for folder, path in zip(folders, paths)):
        return dataset  # Some images sit directly in data_dir, so there are no class folders to read.
    names = sorted(set(folders))
    labels = [names.index(folder) for folder in folders]
    return dataset.add_column("label", labels).cast_column("label", ClassLabel(names=names))


def load_dataset_source(name_or_path: str, split: str = "train", revision: str | None = None) -> Dataset:
    """Load a data set saved with `save_to_disk` (a local folder) or a hub data set id.

    Raises:
        ValueError: the split does not exist.
    """
    if os.path.isdir(name_or_path) and any(
        os.path.isfile(os.path.join(name_or_path, marker)) for marker in ("dataset_info.json", "dataset_dict.json", "state.json")
    ):
        return _select_split(load_from_disk(name_or_path), split, repr(name_or_path))
    return load_dataset(name_or_path, split=split, revision=revision)


def load_table(path_or_name: str, split: str = "train", revision: str | None = None) -> Dataset:
    """Load a table of numbers for flows: a CSV, TSV, parquet or JSON(L) file, a saved data set or a hub data set id.

    Raises:
        FileNotFoundError: a path with a table extension that does not exist.
    """
    extension = os.path.splitext(path_or_name)[1].lower()
    if extension in TABLE_EXTENSIONS:
        if not os.path.isfile(path_or_name):
            raise FileNotFoundError(f"Table file {path_or_name!r} not found.")
        builder = TABLE_EXTENSIONS[extension]
        options = {"delimiter": "\t"} if extension == ".tsv" else {}
        return load_dataset(builder, data_files={"train": path_or_name}, split="train", **options)
    return load_dataset_source(path_or_name, split=split, revision=revision)


def prepare_conditions(
    dataset: Dataset, condition_columns: list[str], source: str, condition_type: str = "auto"
) -> tuple[Dataset, ConditionInfo]:
    """Check the condition columns and describe them.

    With `condition_type="auto"`, one integer or `ClassLabel` column is a class-label condition, and
    a column of strings is encoded as class labels. One or more numeric columns, or one column of
    fixed-length number lists, are a vector condition. With `condition_type="text"`, one column of
    strings is kept as text, and every row must hold a non-empty string.

    Raises:
        ValueError: a missing column, a mix of labels and numbers, a column of another type, or a
            missing, empty or blank text.
    """
    if condition_type not in CONDITION_TYPES:
        raise ValueError(f"`condition_type` must be one of {CONDITION_TYPES}, got {condition_type!r}.")
    if not condition_columns:
        raise ValueError("`condition_columns` is empty; name at least one column that contains the condition.")
    require_columns(dataset, condition_columns, source, "--condition_columns")
    if condition_type == "text":
        return dataset, _prepare_text_condition(dataset, condition_columns, source)
    features = dataset.features

    if len(condition_columns) == 1:
        column = condition_columns[0]
        feature = features[column]
        if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
            dataset = dataset.class_encode_column(column)
            feature = dataset.features[column]
        if isinstance(feature, ClassLabel):
            return dataset, ConditionInfo(kind="class_label", num_classes=feature.num_classes, class_names=list(feature.names))
        if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
            labels = np.asarray(dataset[column])
            if labels.min() < 0:
                raise ValueError(f"Column {column!r} of {source} contains the negative label {labels.min()}; class labels start at 0.")
            return dataset, ConditionInfo(kind="class_label", num_classes=int(labels.max()) + 1)
        if isinstance(feature, (Sequence, list)) or getattr(feature, "_type", "") in ("List", "LargeList"):
            lengths = {len(row) for row in dataset[column]}
            if len(lengths) != 1:
                raise ValueError(f"Column {column!r} of {source} contains lists of lengths {sorted(lengths)}; a vector condition needs one length.")
            return dataset, ConditionInfo(kind="vector", dim=lengths.pop())

    for column in condition_columns:
        feature = features[column]
        if not (isinstance(feature, Value) and feature.dtype.startswith(("float", "int", "uint", "bool"))):
            raise ValueError(
                f"Column {column!r} of {source} has type {feature}, but a vector condition needs numeric columns; "
                "use a single label column for class conditions."
            )
    return dataset, ConditionInfo(kind="vector", dim=len(condition_columns))


def _prepare_text_condition(dataset: Dataset, condition_columns: list[str], source: str) -> ConditionInfo:
    """Check that `condition_columns` is one column of non-empty strings and return the text `ConditionInfo`."""
    if len(condition_columns) != 1:
        raise ValueError(
            f"A text condition comes from one column of strings, got the columns {condition_columns}; "
            "pass one column, such as --condition_columns caption."
        )
    column = condition_columns[0]
    feature = dataset.features[column]
    if not (isinstance(feature, Value) and feature.dtype in ("string", "large_string")):
        raise ValueError(
            f"Column {column!r} of {source} has type {feature}, but --condition_type text needs a column of strings; "
            "name a column of descriptions, or drop --condition_type text for label or vector conditions."
        )
    texts = list(dataset[column])
    bad_rows = [row for row, text in enumerate(texts) if text is None or not text.strip()]
    if bad_rows:
        first = bad_rows[0]
        raise ValueError(
            f"Column {column!r} of {source} contains {len(bad_rows)} missing or empty texts, the first in row {first} "
            f"({texts[first]!r}); give every example a non-empty description, or drop those rows with "
            f"`dataset.filter(lambda row: bool(row[{column!r}] and row[{column!r}].strip()))`."
        )
    return ConditionInfo(kind="text")


def _batch_conditions(batch: dict, condition_columns: list[str], info: ConditionInfo) -> torch.Tensor | list[str]:
    """Return the conditions of a batch: a list of strings for text, else a tensor."""
    if info.kind == "text":
        return list(batch[condition_columns[0]])
    if info.kind == "class_label":
        return torch.as_tensor(batch[condition_columns[0]], dtype=torch.long)
    if len(condition_columns) == 1:
        values = torch.as_tensor(np.asarray(batch[condition_columns[0]], dtype=np.float32))
        if values.ndim == 1:
            # One numeric column is a vector condition of width 1.
            values = values[:, None]
    else:
        values = torch.as_tensor(np.stack([np.asarray(batch[column], dtype=np.float32) for column in condition_columns], axis=1))
    if not torch.isfinite(values).all():
        raise ValueError(f"Condition columns {condition_columns} contain NaN, missing or infinite values; clean or drop those rows.")
    return values


def _open_image(value, column: str) -> PILImage.Image:
    """Open one cell of an image column stored as `{"path", "bytes"}`, naming the file on failure."""
    if isinstance(value, PILImage.Image):
        return value
    if not isinstance(value, dict):
        raise TypeError(f"Column {column!r} contains {type(value).__name__} values; it must be an image column.")
    path = value.get("path")
    name = repr(path) if path else f"an image stored as bytes in column {column!r}"
    try:
        if value.get("bytes") is not None:
            image = PILImage.open(io.BytesIO(value["bytes"]))
        elif path:
            image = PILImage.open(path)
        else:
            raise ValueError(f"Column {column!r} has an image with neither a path nor bytes.")
        image.load()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Image file {name} not found.") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"Cannot read image {name}: {error}. Replace or delete the file.") from error
    return image


def _to_pixel_values(image: PILImage.Image, name: str, resolution: int, image_mode: str) -> np.ndarray:
    """Convert one image to an array of shape `(channels, resolution, resolution)` in [-1, 1]."""
    if image.mode not in CONVERTIBLE_IMAGE_MODES:
        raise ValueError(
            f"Image {name} has mode {image.mode!r}, which does not convert to {image_mode!r} without losing range; "
            f"save it as 8-bit grayscale or RGB (modes {', '.join(CONVERTIBLE_IMAGE_MODES)})."
        )
    image = image.convert(image_mode)
    # Resize the shorter side to `resolution`, then crop the centre, as diffusers' training examples do.
    width, height = image.size
    scale = resolution / min(width, height)
    if (width, height) != (resolution, resolution):
        new_size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
        image = image.resize(new_size, PILImage.Resampling.BILINEAR)
        left = (image.size[0] - resolution) // 2
        top = (image.size[1] - resolution) // 2
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    if array.ndim == 2:
        array = array[:, :, None]
    return array.transpose(2, 0, 1)


def set_image_transform(
    dataset: Dataset,
    image_column: str,
    condition_columns: list[str],
    resolution: int,
    image_mode: str = "L",
    source: str = "the data set",
    condition_type: str = "auto",
) -> tuple[Dataset, ConditionInfo]:
    """Attach a transform yielding `pixel_values` `(channels, resolution, resolution)` in [-1, 1] and `condition`.

    Args:
        dataset (`Dataset`): rows with an image column and condition columns.
        image_column (`str`): the column of images (a `datasets.Image` feature, or paths).
        condition_columns (`list[str]`): one label column, numeric columns, or one text column; see
            `prepare_conditions`.
        resolution (`int`): side of the square images the model takes.
        image_mode (`str`, defaults to `"L"`): `"L"` (one channel) or `"RGB"` (three).
        source (`str`): name of the data for error messages, such as its path.
        condition_type (`str`, defaults to `"auto"`): `"auto"` infers labels or vectors from the column
            types; `"text"` yields `condition` as a list of strings.

    Returns:
        The data set with the transform set, and the `ConditionInfo` of its conditions.
    """
    if image_mode not in IMAGE_MODE_CHANNELS:
        raise ValueError(f"`image_mode` must be one of {sorted(IMAGE_MODE_CHANNELS)}, got {image_mode!r}.")
    if resolution < 1:
        raise ValueError(f"`resolution` must be at least 1, got {resolution}.")
    require_columns(dataset, [image_column], source, "--image_column")
    dataset, info = prepare_conditions(dataset, condition_columns, source, condition_type)
    feature = dataset.features[image_column]
    if isinstance(feature, Image):
        # Decode in the transform instead of in `datasets`, so an unreadable file is reported with its path.
        dataset = dataset.cast_column(image_column, Image(decode=False))
    elif not (isinstance(feature, Value) and feature.dtype == "string"):
        raise ValueError(f"Column {image_column!r} of {source} has type {feature}; it must hold images or image paths.")

    def transform(batch: dict) -> dict:
        pixel_values = []
        for value in batch[image_column]:
            if isinstance(value, str):
                value = {"path": value, "bytes": None}
            image = _open_image(value, image_column)
            name = repr(value.get("path")) if isinstance(value, dict) and value.get("path") else f"in column {image_column!r}"
            pixel_values.append(_to_pixel_values(image, name, resolution, image_mode))
        return {
            "pixel_values": torch.as_tensor(np.stack(pixel_values)),
            "condition": _batch_conditions(batch, condition_columns, info),
        }

    dataset.set_transform(transform)
    return dataset, info


def set_table_transform(
    dataset: Dataset,
    feature_columns: list[str],
    condition_columns: list[str],
    source: str = "the data set",
) -> tuple[Dataset, ConditionInfo]:
    """Attach a transform yielding `x` `(num_features,)` as float32 and `condition`, for flows.

    Raises:
        ValueError: a missing or non-numeric column, or NaN or infinite values in a batch.
    """
    if not feature_columns:
        raise ValueError("`feature_columns` is empty; name the numeric columns that form the data x.")
    require_columns(dataset, feature_columns, source, "--feature_columns")
    overlap = sorted(set(feature_columns) & set(condition_columns))
    if overlap:
        raise ValueError(f"Columns {overlap} are both features and conditions; a column can only be one of them.")
    for column in feature_columns:
        feature = dataset.features[column]
        if not (isinstance(feature, Value) and feature.dtype.startswith(("float", "int", "uint"))):
            raise ValueError(f"Column {column!r} of {source} has type {feature}; feature columns must be numeric.")
    dataset, info = prepare_conditions(dataset, condition_columns, source)

    def transform(batch: dict) -> dict:
        columns = []
        for column in feature_columns:
            values = np.asarray(batch[column], dtype=np.float32)
            if not np.isfinite(values).all():
                raise ValueError(f"Column {column!r} of {source} contains NaN, missing or infinite values; clean or drop those rows.")
            columns.append(values)
        return {"x": torch.as_tensor(np.stack(columns, axis=1)), "condition": _batch_conditions(batch, condition_columns, info)}

    dataset.set_transform(transform)
    return dataset, info
