"""`TransferConfig`: which strategy turns a source model into a target model, saved as JSON."""

import dataclasses
import json
import os
from dataclasses import dataclass, field

from ..utils import dataclass_from_dict

TRANSFER_CONFIG_NAME = "transfer_config.json"
TRANSFER_CONFIG_VERSION = 1

STRATEGIES = ("frozen_embedding", "full_finetune", "from_scratch", "lora")
HEAD_INITS = ("warm", "fresh")


@dataclass
class TransferConfig:
    """Strategy of target learning: what happens to the shared embedding h and the generator g.

    | strategy | h | g |
    |---|---|---|
    | `frozen_embedding` | source-learned, frozen | trained, warm from the source or fresh |
    | `lora` | source-learned, frozen | source weights frozen, low-rank adapters trained |
    | `full_finetune` | trained, warm | trained, warm |
    | `from_scratch` | trained from a fresh start | trained from a fresh start (no transfer) |

    Reference: X. Tian and X. Shen, "Enhancing Accuracy in Generative Models via Knowledge
    Transfer", arXiv:2405.16837.
    """

    strategy: str = field(
        default="frozen_embedding",
        metadata={"help": f"Transfer strategy, one of {', '.join(STRATEGIES)}."},
    )
    head_init: str = field(
        default="warm",
        metadata={
            "help": "Start of the generator g for `frozen_embedding`: 'warm' copies the source generator, "
            "'fresh' draws new weights. Other strategies fix it: `full_finetune` and `lora` are warm, "
            "`from_scratch` is fresh."
        },
    )
    seed: int | None = field(
        default=None,
        metadata={"help": "Seed for freshly initialised weights; None uses the global torch generator."},
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r (strategy `lora` only)."})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA scaling alpha (strategy `lora` only)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA branch (strategy `lora` only)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Names of the generator's linear and convolution layers that get adapters (strategy `lora` "
            "only); None picks every nn.Linear and nn.Conv2d of the generator."
        },
    )
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or path of the source checkpoint the target was built from."}
    )
    base_model_revision: str | None = field(
        default=None, metadata={"help": "Revision (commit, branch or tag) of the source checkpoint."}
    )
    base_model_subfolder: str | None = field(
        default=None, metadata={"help": "Folder inside the source checkpoint's repo or path that holds the model."}
    )

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}.")
        if self.head_init not in HEAD_INITS:
            raise ValueError(f"Unknown head_init {self.head_init!r}; choose 'warm' or 'fresh'.")
        if self.head_init == "fresh" and self.strategy in ("full_finetune", "lora"):
            raise ValueError(
                f"head_init='fresh' does not go with strategy {self.strategy!r}, which fine-tunes the source "
                "generator; use strategy='frozen_embedding' for a fresh generator on a frozen embedding."
            )
        if self.lora_rank < 1:
            raise ValueError(f"`lora_rank` must be at least 1, got {self.lora_rank}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must lie in [0, 1), got {self.lora_dropout}.")

    @property
    def freezes_embedding(self) -> bool:
        return self.strategy in ("frozen_embedding", "lora")

    @property
    def fresh_generator(self) -> bool:
        return self.strategy == "from_scratch" or (self.strategy == "frozen_embedding" and self.head_init == "fresh")

    @property
    def label(self) -> str:
        """Short name for tables: the strategy, with the head start where it varies."""
        if self.strategy == "frozen_embedding":
            return f"frozen_embedding ({self.head_init} head)"
        return self.strategy

    def to_dict(self) -> dict:
        return {"format_version": TRANSFER_CONFIG_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "TransferConfig":
        return dataclass_from_dict(cls, values, TRANSFER_CONFIG_VERSION, "transfer config")

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write `transfer_config.json` into `save_directory` and return its path."""
        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, TRANSFER_CONFIG_NAME)
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
        return path

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "TransferConfig":
        """Read `transfer_config.json` from a local folder."""
        path = os.path.join(directory, TRANSFER_CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"No {TRANSFER_CONFIG_NAME} in {os.fspath(directory)!r}; save one with TransferConfig.save_pretrained.")
        with open(path, encoding="utf-8") as handle:
            return cls.from_dict(json.load(handle))
