"""`FlowSpec`: the JSON-serialisable description of a conditional normalizing flow."""

import dataclasses
import json
from dataclasses import dataclass, field

from ..utils import dataclass_from_dict

FLOW_SPEC_VERSION = 1

# Flow types built from normflows layers whose parameter networks take the context h(z).
FLOW_TYPES = ("spline_coupling", "spline_autoregressive", "masked_autoregressive")
# normflows layer families whose transforms ignore the context: they cannot carry h(z).
CONTEXT_BLIND_FLOW_TYPES = {
    "real_nvp": "MaskedAffineFlow",
    "affine_coupling": "AffineCouplingBlock",
    "glow": "GlowBlock",
    "planar": "Planar",
    "radial": "Radial",
    "residual": "Residual",
}
MIXINGS = ("none", "permute", "lu")
BASE_DISTRIBUTIONS = ("standard_normal", "diag_gaussian", "conditional_diag_gaussian")
ACTIVATIONS = ("relu", "silu", "tanh", "gelu")


@dataclass
class FlowSpec:
    """Architecture of a conditional flow g(x; h) on `data_dim` dimensions with a context of width `context_dim`.

    Every layer's parameter network takes the context, so the flow's density depends on the condition
    only through h(z). The spec round-trips through JSON (`to_json`, `from_json`) and is the config of
    `ConditionalFlowGenerator`.

    | `flow_type` | normflows layer | `log_prob` cost | `sample` cost |
    |---|---|---|---|
    | `spline_coupling` (default) | `CoupledRationalQuadraticSpline` | one pass per layer | one pass per layer |
    | `spline_autoregressive` | `AutoregressiveRationalQuadraticSpline` | one pass per layer | `data_dim` passes per layer |
    | `masked_autoregressive` | `MaskedAffineAutoregressive`, inverted | one pass per layer | `data_dim` passes per layer |

    References: C. Durkan et al., "Neural Spline Flows", arXiv:1906.04057; G. Papamakarios et al.,
    "Masked Autoregressive Flow for Density Estimation", arXiv:1705.07057.

    Example:
        >>> from hf_transfer.flows import FlowSpec
        >>> spec = FlowSpec(data_dim=2, context_dim=4, num_layers=2)
        >>> FlowSpec.from_json(spec.to_json()) == spec
        True
    """

    data_dim: int = field(metadata={"help": "Dimension of the data x."})
    context_dim: int = field(metadata={"help": "Width of the context, equal to the shared embedding's width."})
    flow_type: str = field(default="spline_coupling", metadata={"help": f"Layer family, one of {', '.join(FLOW_TYPES)}."})
    num_layers: int = field(default=4, metadata={"help": "Number of flow layers."})
    hidden_units: int = field(default=64, metadata={"help": "Width of each layer's parameter network."})
    hidden_layers: int = field(default=2, metadata={"help": "Residual blocks in each layer's parameter network."})
    num_bins: int = field(default=8, metadata={"help": "Spline bins (spline flow types only)."})
    tail_bound: float = field(
        default=3.0,
        metadata={"help": "Splines act on [-tail_bound, tail_bound] and are the identity outside (spline types only)."},
    )
    mixing: str = field(
        default="permute",
        metadata={
            "help": "Layer put between flow layers: 'permute' (a fixed random permutation), 'lu' (a learned "
            "LU-parametrised linear map) or 'none'."
        },
    )
    base_distribution: str = field(
        default="standard_normal",
        metadata={
            "help": "Base density: 'standard_normal' (fixed), 'diag_gaussian' (learned mean and scale) or "
            "'conditional_diag_gaussian' (mean and log-scale linear in the context)."
        },
    )
    activation: str = field(default="relu", metadata={"help": f"Activation of the parameter networks: {', '.join(ACTIVATIONS)}."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout probability inside the parameter networks."})
    init_identity: bool = field(
        default=True, metadata={"help": "Zero the parameter networks' output layers, so every layer starts as the identity."}
    )

    def __post_init__(self):
        if self.flow_type in CONTEXT_BLIND_FLOW_TYPES:
            raise ValueError(
                f"flow_type {self.flow_type!r} builds normflows {CONTEXT_BLIND_FLOW_TYPES[self.flow_type]} layers, "
                "which ignore their context and so cannot carry the shared embedding h(z); choose one of "
                f"{', '.join(FLOW_TYPES)}."
            )
        if self.flow_type not in FLOW_TYPES:
            raise ValueError(f"Unknown flow_type {self.flow_type!r}; choose one of {', '.join(FLOW_TYPES)}.")
        for name in ("data_dim", "context_dim", "num_layers", "hidden_units", "hidden_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if self.flow_type == "spline_coupling" and self.data_dim < 2:
            raise ValueError(
                f"flow_type 'spline_coupling' needs data_dim >= 2 to split the dimensions, got {self.data_dim}; "
                "use 'spline_autoregressive' or 'masked_autoregressive' for one-dimensional data."
            )
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, int) or self.num_bins < 2:
            raise ValueError(f"`num_bins` must be an integer of at least 2, got {self.num_bins!r}.")
        if not self.tail_bound > 0:
            raise ValueError(f"`tail_bound` must be positive, got {self.tail_bound}.")
        if self.mixing not in MIXINGS:
            raise ValueError(f"Unknown mixing {self.mixing!r}; choose one of {', '.join(MIXINGS)}.")
        if self.base_distribution not in BASE_DISTRIBUTIONS:
            raise ValueError(
                f"Unknown base_distribution {self.base_distribution!r}; choose one of {', '.join(BASE_DISTRIBUTIONS)}."
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"`dropout` must lie in [0, 1), got {self.dropout}.")
        self.tail_bound = float(self.tail_bound)

    def to_dict(self) -> dict:
        """Return the spec as a plain dict, with its format version."""
        return {"format_version": FLOW_SPEC_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> "FlowSpec":
        """Build a spec from `to_dict` output; unknown keys from a newer version are dropped with a warning."""
        return dataclass_from_dict(cls, values, FLOW_SPEC_VERSION, "flow spec")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FlowSpec":
        return cls.from_dict(json.loads(text))
