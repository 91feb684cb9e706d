"""normflows layers for a `FlowSpec`, and the check that every transforming layer reads the context."""

import numpy as np
import normflows as nf
import torch
from normflows.utils.splines import DEFAULT_MIN_DERIVATIVE
from torch import nn

from .spec import FlowSpec

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}

# Layers with no parameter network: fixed or unconditional invertible maps that mix dimensions. They
# carry no condition, but they need none: the context reaches the density through the other layers.
MIXING_LAYERS = (nf.flows.Permute, nf.flows.LULinearPermute, nf.flows.InvertibleAffine, nf.flows.ActNorm)


class InverseFlow(nf.flows.Flow):
    """A normflows layer with its two directions swapped, passing the context to both.

    normflows' `MaskedAffineAutoregressive` runs its MADE once in `forward` (latent to data) and once per
    dimension in `inverse` (data to latent), which is the direction `log_prob` takes. Swapping the
    directions makes the density, and so training, one network pass per layer, at the price of a
    sampling loop over the dimensions: the masked autoregressive flow of Papamakarios et al.
    (arXiv:1705.07057). normflows' own `Reverse` does the same swap but drops the context.

    Args:
        flow (`nf.flows.Flow`): the layer to invert.
    """

    def __init__(self, flow: nf.flows.Flow):
        super().__init__()
        self.flow = flow

    def forward(self, z, context=None):
        return self.flow.inverse(z, context=context)

    def inverse(self, z, context=None):
        return self.flow(z, context=context)


def _context_width(layer: nn.Module) -> int | None:
    """Return the context width a layer's parameter networks read, or None if none reads a context."""
    for module in layer.modules():
        width = getattr(module, "context_features", None)
        if width is not None:
            return int(width)
        # normflows' MADE keeps no `context_features` attribute; its context enters through `context_layer`.
        context_layer = getattr(module, "context_layer", None)
        if isinstance(context_layer, nn.Linear):
            return context_layer.in_features
    return None


def check_context_layers(flows, context_dim: int) -> None:
    """Raise `ValueError` unless every transforming layer of `flows` reads a context of width `context_dim`.

    A transforming layer whose parameters do not depend on the context (for example normflows' `Planar`,
    `MaskedAffineFlow`, `GlowBlock`, or a spline layer built without `num_context_channels`) cannot carry the
    shared embedding: a flow built from such layers alone silently ignores the condition. Mixing layers
    without a parameter network (`Permute`, `LULinearPermute`, `InvertibleAffine`, `ActNorm`) are allowed
    between conditioned layers.

    Args:
        flows: the normflows layers, in latent-to-data order.
        context_dim (`int`): the width of the shared embedding h(z).
    """
    flows = list(flows)
    conditioned = 0
    for index, layer in enumerate(flows):
        if not isinstance(layer, nf.flows.Flow):
            raise TypeError(f"Flow layer {index} is a {type(layer).__name__}, not a normflows Flow.")
        if isinstance(layer, MIXING_LAYERS):
            continue
        width = _context_width(layer)
        if width is None:
            raise ValueError(
                f"Flow layer {index} ({type(layer).__name__}) ignores its context, so it cannot carry the shared "
                "embedding h(z) and the flow would silently ignore the condition. Use a layer with a context "
                "input (CoupledRationalQuadraticSpline or AutoregressiveRationalQuadraticSpline with "
                f"num_context_channels={context_dim}, MaskedAffineAutoregressive with context_features={context_dim})."
            )
        if width != context_dim:
            raise ValueError(
                f"Flow layer {index} ({type(layer).__name__}) reads a context of width {width}, but the shared "
                f"embedding has width {context_dim}; build the layer with a context width of {context_dim}."
            )
        conditioned += 1
    if conditioned == 0:
        raise ValueError(
            "The flow has no layer that reads the context, so it cannot carry the shared embedding h(z); "
            "add at least one conditioned layer."
        )


def _zero_output_layer(linear: nn.Module) -> None:
    """Zero a spline network's output layer, so that its spline starts as the identity.

    With zero weights every bin has the same width and height, and the bias makes each knot's derivative
    softplus(bias) + min_derivative = 1 (the same constant normflows uses for its autoregressive splines).
    """
    nn.init.zeros_(linear.weight)
    nn.init.constant_(linear.bias, float(np.log(np.exp(1 - DEFAULT_MIN_DERIVATIVE) - 1)))


def build_layer(spec: FlowSpec, index: int) -> nf.flows.Flow:
    """Build the `index`-th conditioned layer of `spec`."""
    activation = _ACTIVATIONS[spec.activation]
    if spec.flow_type == "spline_coupling":
        layer = nf.flows.CoupledRationalQuadraticSpline(
            spec.data_dim,
            spec.hidden_layers,
            spec.hidden_units,
            num_context_channels=spec.context_dim,
            num_bins=spec.num_bins,
            tail_bound=spec.tail_bound,
            activation=activation,
            dropout_probability=spec.dropout,
            # Alternate which half is transformed, so that every dimension is transformed every two layers.
            reverse_mask=index % 2 == 1,
        )
        if spec.init_identity:
            _zero_output_layer(layer.prqct.transform_net.final_layer)
        return layer
    if spec.flow_type == "spline_autoregressive":
        # normflows' wrapper already runs its MADE once in `inverse`, the density direction.
        return nf.flows.AutoregressiveRationalQuadraticSpline(
            spec.data_dim,
            spec.hidden_layers,
            spec.hidden_units,
            num_context_channels=spec.context_dim,
            num_bins=spec.num_bins,
            tail_bound=spec.tail_bound,
            activation=activation,
            dropout_probability=spec.dropout,
            init_identity=spec.init_identity,
        )
    if spec.flow_type == "masked_autoregressive":
        layer = nf.flows.MaskedAffineAutoregressive(
            spec.data_dim,
            spec.hidden_units,
            context_features=spec.context_dim,
            num_blocks=spec.hidden_layers,
            activation=activation(),
            dropout_probability=spec.dropout,
        )
        if spec.init_identity:
            # normflows interleaves (unconstrained scale, shift) per dimension and uses the scale
            # sigmoid(u + 2) + 1e-3; u = logit(1 - 1e-3) - 2 makes it 1, and a zero shift makes the identity.
            final_layer = layer.autoregressive_net.final_layer
            nn.init.zeros_(final_layer.weight)
            nn.init.zeros_(final_layer.bias)
            with torch.no_grad():
                final_layer.bias[0::2] = float(np.log((1 - 1e-3) / 1e-3)) - 2.0
        return InverseFlow(layer)
    raise ValueError(f"Unknown flow_type {spec.flow_type!r}.")


def build_mixing(spec: FlowSpec) -> nf.flows.Flow | None:
    if spec.mixing == "permute":
        return nf.flows.Permute(spec.data_dim, mode="shuffle")
    if spec.mixing == "lu":
        return nf.flows.LULinearPermute(spec.data_dim)
    return None


def build_base(spec: FlowSpec) -> nf.distributions.BaseDistribution:
    if spec.base_distribution == "standard_normal":
        return nf.distributions.DiagGaussian(spec.data_dim, trainable=False)
    if spec.base_distribution == "diag_gaussian":
        return nf.distributions.DiagGaussian(spec.data_dim, trainable=True)
    # Mean and log-scale linear in the context; zero weights start it as the standard normal.
    encoder = nn.Linear(spec.context_dim, 2 * spec.data_dim)
    if spec.init_identity:
        nn.init.zeros_(encoder.weight)
        nn.init.zeros_(encoder.bias)
    return nf.distributions.base.ConditionalDiagGaussian(spec.data_dim, encoder)


def build_flow(spec: FlowSpec) -> nf.ConditionalNormalizingFlow:
    """Build the normflows `ConditionalNormalizingFlow` that `spec` describes, checked for context use."""
    flows: list[nf.flows.Flow] = []
    for index in range(spec.num_layers):
        flows.append(build_layer(spec, index))
        mixing = build_mixing(spec) if index < spec.num_layers - 1 else None
        if mixing is not None:
            flows.append(mixing)
    check_context_layers(flows, spec.context_dim)
    return nf.ConditionalNormalizingFlow(q0=build_base(spec), flows=flows)


def parameter_networks(flow: nn.Module) -> list[nn.Module]:
    """Return the parameter networks (normflows ResidualNet or MADE) inside `flow`."""
    kinds = (nf.nets.ResidualNet, nf.nets.MADE)
    return [module for module in flow.modules() if isinstance(module, kinds)]


__all__ = ["InverseFlow", "MIXING_LAYERS", "build_flow", "check_context_layers", "parameter_networks"]
