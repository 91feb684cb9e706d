"""Shared-embedding normalizing flows on normflows, with exact log-densities.

The flow's context is the shared embedding h(z): p(x | z) = g(x; h(z)), with g a normflows
`ConditionalNormalizingFlow`. Source learning fits h and g by maximum likelihood; target learning freezes
h (`TransferConfig(strategy="frozen_embedding")`) and fits a new g.

Public API (stable):

- `FlowSpec(data_dim, context_dim, flow_type="spline_coupling", num_layers=4, hidden_units=64,
  hidden_layers=2, num_bins=8, tail_bound=3.0, mixing="permute", base_distribution="standard_normal",
  activation="relu", dropout=0.0, init_identity=True)`: JSON-serialisable dataclass (`to_dict`,
  `from_dict`, `to_json`, `from_json`). `flow_type` is one of `spline_coupling` (default),
  `spline_autoregressive`, `masked_autoregressive`; context-blind families (`planar`, `radial`,
  `real_nvp`, `glow`, ...) raise `ValueError`. `base_distribution` is one of `standard_normal`,
  `diag_gaussian`, `conditional_diag_gaussian`. `mixing` is one of `permute`, `lu`, `none`.
- `ConditionalFlowGenerator(ModelMixin, ConfigMixin)`: g. Built with `ConditionalFlowGenerator.from_spec(spec)`
  or with the spec's fields as keyword arguments; `.spec`, `.flow` (the normflows model),
  `.config.context_dim` (= the shared embedding's width), `.config.data_dim`,
  `log_prob(x, context) -> (batch,)`, `sample(num_samples, context, return_log_prob=False)`. The context
  has one row per sample or one row for all. `save_pretrained` / `from_pretrained` as in diffusers.
- `ConditionalFlowModel(shared_embedding, generator)` (`nn.Module`): attributes `shared_embedding`
  and `generator`. `forward(x, condition)` returns the mean NLL in nats, so `hf_transfer.training.train`
  and `get_transfer_model` work unchanged; dataset items are dicts `{"x": ..., "condition": ...}`.
  `log_prob(x, condition) -> (batch,)` in nats. `sample(num_samples, condition, return_log_prob=False)`
  takes one condition (broadcast) or one per sample. `save_pretrained(dir)` writes `flow_model.json`,
  `shared_embedding/` and `generator/` (each config + safetensors), plus `transfer_config.json` when the
  model carries a `transfer_config`; `from_pretrained(dir_or_hub_id, revision=None, subfolder=None)`
  reads them back.
- `check_context_layers(flows, context_dim)`: raises `ValueError` for a normflows layer that ignores its
  context. `InverseFlow(layer)`: swaps a normflows layer's directions and keeps the context.
- `hf_transfer.flows.demo.run_flow_demo(output_dir, shots_per_class=10, seed=0, quick=False,
  dataset="digits" | "diabetes") -> dict`: source training, transfer strategies, held-out target NLL,
  written to `flow_metrics.json`.

Bad input raises `ValueError` or `TypeError` naming the argument: a wrong data dimension, NaN or inf in
x or the context, or a condition count that is neither 1 nor the number of samples.
"""

from .generator import ConditionalFlowGenerator
from .layers import InverseFlow, check_context_layers
from .model import ConditionalFlowModel
from .spec import FLOW_TYPES, FlowSpec

__all__ = [
    "FLOW_TYPES",
    "ConditionalFlowGenerator",
    "ConditionalFlowModel",
    "FlowSpec",
    "InverseFlow",
    "check_context_layers",
]
