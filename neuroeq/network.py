"""Layered network specification: layers, projections, couplings, weights as torch tensors.

Layer 0 is the clamped input (its rates are the data ``x``); layers ``1..L`` are free
and made of the model's neurons. Each neuron ``i`` of layer ``l`` receives
``I_syn,i = Σ_edges Σ_j M_ij ρ(s_j)`` where the edges are:

- forward ``W_l`` (layer ``l-1 → l``), always present;
- backward: ``W_lᵀ`` (``symmetric``), an independent ``B_l`` initialised as
  ``(1-α)·W_lᵀ + α·R`` (``asymmetric``), or none (``feedforward``);
- lateral ``L_l`` inside a free layer (symmetrised, zero diagonal, when symmetric);
- skip ``S_l`` (layer ``l-2 → l``) with the same feedback rule as forward weights.

The flat state ``s`` of shape ``(..., batch, N)`` stacks every free layer's state
variables (layer by layer, variables in model order). The weights (``nn.Parameter``)
are the single source of truth; every engine reads them from here.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import torch
from torch import nn

from neuroeq.checks import (
    available_device,
    did_you_mean,
    flag,
    fraction,
    positive_number,
    real_number,
    whole_number,
)
from neuroeq.compiled_model import CompiledModel
from neuroeq.errors import ConfigError, sample_list, short
from neuroeq.neuron_model import NeuronModel, load_model
from neuroeq.readout import READOUT_KINDS, Readout
from neuroeq.seeds import check_seed

COUPLINGS = ("symmetric", "asymmetric", "feedforward")
#: the asymmetry of an asymmetric network given no ``alpha``: independent backward weights
DEFAULT_ALPHA = 1.0
#: why the couplings other than ``asymmetric`` have no use for ``alpha``
_NO_ALPHA = {"symmetric": "its backward weights are the forward ones transposed",
             "feedforward": "it has no backward weights"}
Params = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class Edge:
    """One projection ``pre → post`` whose matrix is a parameter (or its transpose)."""

    param: str
    pre: int
    post: int
    kind: str
    transpose: bool = False
    primary: bool = True


@dataclass(frozen=True)
class Block:
    """Where one state variable of one free layer lives in the flat state."""

    layer: int
    variable: str
    start: int
    stop: int


class Network(nn.Module):
    """A layered network of one neuron model, with its readout.

    Args:
        model: a :class:`NeuronModel`, or the name or path of a model file (``"fhn"``).
        sizes: units per layer, input first, e.g. ``(784, 500, 10)``.
        coupling: ``symmetric``, ``asymmetric`` (tunable ``alpha``) or ``feedforward``.
        alpha: asymmetry in ``[0, 1]`` of an asymmetric network's initial backward weights,
            ``B = (1-α)Wᵀ + αR`` (default 1: independent of ``W``). The other couplings
            have none (``self.alpha`` is ``None``): an ``alpha`` given with them is a
            :class:`ConfigError`.
        lateral, skip: add lateral (within-layer) and skip (``l-2 → l``) projections
            (``True`` or ``False``).
        readout: a :class:`~neuroeq.readout.Readout` of the output rates, or ``None`` for
            the identity readout with MSE.
        seed: seeds the weight initialisation (reproducible).
        gain: scale of the initial weights (uniform ``±gain/√fan_in``).
        bias_init: the initial value of every bias.
        dtype: ``torch.float32`` or ``torch.float64``.
        device: a device this machine has (``"cpu"``, ``"cuda"``, ``"cuda:1"``).

    Every argument is checked here: a string where a number or a bool is needed, a
    readout that is not a ``Readout``, or a device that is not available is a
    :class:`ConfigError` naming the argument.
    """

    def __init__(self, model: NeuronModel | str | os.PathLike, sizes: Sequence[int], *,
                 coupling: str = "symmetric", alpha: float | None = None, lateral: bool = False,
                 skip: bool = False, readout: Readout | None = None, seed: int = 0,
                 gain: float = 1.0, bias_init: float = 0.0, dtype: torch.dtype = torch.float64,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.model = _neuron_model(model)
        sizes = _layer_sizes(sizes)
        coupling = _coupling(coupling)
        alpha = _alpha(alpha, coupling)
        gain = positive_number(gain, "gain")
        bias_init = real_number(bias_init, "bias_init")
        _check_dtype(dtype)
        device = available_device(device, "device") if device is not None else None
        if not abs(bias_init) <= torch.finfo(dtype).max:
            raise ConfigError(f"bias_init {bias_init:g} lies beyond the range of {dtype}")
        lateral, skip = flag(lateral, "lateral"), flag(skip, "skip")
        self.sizes, self.coupling, self.alpha = sizes, coupling, alpha
        seed = check_seed(seed, "network seed")
        self.lateral, self.skip, self.seed, self.gain = lateral, skip, seed, gain
        self.compiled = CompiledModel(self.model)
        self.layer_names = ["input"] + [f"hidden{l}" for l in range(1, len(sizes) - 1)] + ["output"]
        self.n_layers = len(sizes) - 1  # free layers
        generator = torch.Generator().manual_seed(int(seed))
        self.weights = nn.ParameterDict()
        self.biases = nn.ParameterDict()
        self.edges: list[Edge] = []

        def uniform(shape: tuple[int, int], fan_in: int) -> torch.Tensor:
            bound = gain / math.sqrt(fan_in)
            if not bound * 2 <= torch.finfo(dtype).max:  # (the draws span ±bound)
                raise ConfigError(f"gain {gain:g} gives initial weights beyond the range of "
                                  f"{dtype}; use a gain of order 1")
            return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound

        def add_feedforward(name: str, pre: int, post: int, kind: str) -> None:
            forward = uniform((sizes[post], sizes[pre]), sizes[pre])
            self.weights[name] = nn.Parameter(forward)
            self.edges.append(Edge(name, pre, post, kind))
            if pre == 0 or coupling == "feedforward":
                return
            if coupling == "symmetric":
                self.edges.append(Edge(name, post, pre, "backward", transpose=True, primary=False))
            else:
                independent = uniform((sizes[pre], sizes[post]), sizes[post])
                backward = (1 - self.alpha) * forward.T + self.alpha * independent
                self.weights["B" + name] = nn.Parameter(backward)
                self.edges.append(Edge("B" + name, post, pre, "backward"))

        for l in range(1, len(sizes)):
            add_feedforward(f"W{l}", l - 1, l, "forward")
        if skip:
            for l in range(2, len(sizes)):
                add_feedforward(f"S{l}", l - 2, l, "skip")
        if lateral:
            for l in range(1, len(sizes)):
                matrix = uniform((sizes[l], sizes[l]), sizes[l])
                self.weights[f"L{l}"] = nn.Parameter(matrix)
                self.edges.append(Edge(f"L{l}", l, l, "lateral"))
        for l in range(1, len(sizes)):
            self.biases[f"b{l}"] = nn.Parameter(torch.full((sizes[l],), float(bias_init),
                                                           dtype=torch.float64))
        self.readout = _readout(readout, sizes, dtype)
        self.blocks: list[Block] = []
        offset = 0
        for l in range(1, len(sizes)):
            for variable in self.compiled.variables:
                self.blocks.append(Block(l, variable, offset, offset + sizes[l]))
                offset += sizes[l]
        self.state_size = offset
        self.bounded_spans = self._bounded_spans()
        self.to(dtype=dtype, device=device)

    # ----------------------------------------------------------------- basic facts
    # The parameters are read from the ParameterDicts' own tables (``_parameters``, where
    # ``nn.Module`` registers them): ``ParameterDict.items()`` and ``[key]`` go through
    # ``Module.__getattr__`` per entry, ~5 µs for a 2-layer net, read a dozen times per
    # training step.
    @property
    def dtype(self) -> torch.dtype:
        return self.biases._parameters["b1"].dtype

    @property
    def device(self) -> torch.device:
        return self.biases._parameters["b1"].device

    @property
    def tau(self) -> float:
        return self.compiled.tau

    def describe(self) -> dict:
        """Plain description for dataset attributes and logs."""
        return {"model": self.model.name, "sizes": list(self.sizes), "coupling": self.coupling,
                "alpha": self.alpha, "lateral": self.lateral, "skip": self.skip,
                "seed": self.seed, "gain": self.gain, "readout": self.readout.kind,
                "cost": self.readout.cost_name}

    def block(self, layer: int, variable: str | None = None) -> Block:
        variable = variable or self.compiled.coupled
        for block in self.blocks:
            if block.layer == layer and block.variable == variable:
                return block
        raise KeyError((layer, variable))

    @property
    def output_block(self) -> Block:
        return self.block(self.n_layers)

    def dynamics_parameters(self) -> dict[str, torch.Tensor]:
        """The weights and biases of the dynamics (readout excluded), by short name."""
        return {**self.weights._parameters, **self.biases._parameters}

    def layer_of_index(self, index: int) -> str:
        """The layer name (and variable) owning a flat state index, for error messages."""
        for block in self.blocks:
            if block.start <= index < block.stop:
                return f"{self.layer_names[block.layer]}.{block.variable}"
        return "?"

    # ----------------------------------------------------------------- state
    def initial_state(self, batch: int, leading: tuple[int, ...] = ()) -> torch.Tensor:
        """The model's initial values for every unit, shape ``(*leading, batch, N)``."""
        shape, dtype, device = (*leading, batch, self.state_size), self.dtype, self.device
        values = {float(self.model.initial[block.variable]) for block in self.blocks}
        if len(values) == 1:  # one value for every variable (Hopfield: 0): one fill
            return torch.full(shape, values.pop(), dtype=dtype, device=device)
        state = torch.empty(shape, dtype=dtype, device=device)
        for block in self.blocks:
            state[..., block.start:block.stop] = self.model.initial[block.variable]
        return state

    def variables(self, state: torch.Tensor, layer: int) -> dict[str, torch.Tensor]:
        """Views of one layer's state variables."""
        return {b.variable: state[..., b.start:b.stop] for b in self.blocks if b.layer == layer}

    def coupled(self, state: torch.Tensor, layer: int) -> torch.Tensor:
        block = self.block(layer)
        return state[..., block.start:block.stop]

    def rates(self, state: torch.Tensor) -> list[torch.Tensor]:
        """``ρ`` of the coupled variable for each free layer (index 0 is unused: ``None``)."""
        return [None] + [self.compiled.rho(self.coupled(state, l))
                         for l in range(1, self.n_layers + 1)]

    def channel_rates(self, state: torch.Tensor, name: str) -> list[torch.Tensor]:
        """``ρ_NAME`` of an extra coupling channel per free layer (index 0 unused: the
        clamped input feeds only the primary channel)."""
        return [None] + [self.compiled.channel_rho(name, self.coupled(state, l))
                         for l in range(1, self.n_layers + 1)]

    def output_rates(self, state: torch.Tensor) -> torch.Tensor:
        return self.compiled.rho(self.coupled(state, self.n_layers))

    def within_bounds(self, state: torch.Tensor) -> bool:
        """True when every bounded state variable lies in its box (``False`` with NaN, and
        for complex states, which have no order)."""
        if state.is_complex():
            return not self.compiled.bounds
        for start, stop, (low, high) in self.bounded_spans:
            smallest, largest = torch.aminmax(state[..., start:stop])
            if not (float(smallest) >= low and float(largest) <= high):
                return False
        return True

    def initial_within_bounds(self) -> bool:
        """True when the model's initial values (:meth:`initial_state`) lie in the bounds:
        decided from the numbers, without building or reducing a state."""
        bounds = self.compiled.bounds
        return all(bounds[v][0] <= float(value) <= bounds[v][1]
                   for v, value in self.model.initial.items() if v in bounds)

    def _bounded_spans(self) -> list[tuple[int, int, tuple[float, float]]]:
        """``(start, stop, (low, high))`` of the bounded columns, adjacent blocks with the
        same bounds merged (Hopfield: one span), so that a check is one reduction each
        (built once, as :attr:`bounded_spans`)."""
        spans: list[tuple[int, int, tuple[float, float]]] = []
        for block in self.blocks:
            bounds = self.compiled.bounds.get(block.variable)
            if bounds is None:
                continue
            bounds = (float(bounds[0]), float(bounds[1]))
            if spans and spans[-1][1] == block.start and spans[-1][2] == bounds:
                spans[-1] = (spans[-1][0], block.stop, bounds)
            else:
                spans.append((block.start, block.stop, bounds))
        return spans

    def project(self, state: torch.Tensor) -> torch.Tensor:
        """Clamp bounded state variables into their box (in place); returns ``state``."""
        for block in self.blocks:
            if block.variable in self.compiled.bounds:
                low, high = self.compiled.bounds[block.variable]
                state[..., block.start:block.stop].clamp_(low, high)
        return state

    # ----------------------------------------------------------------- dynamics
    def matrix(self, edge: Edge, params: Params) -> torch.Tensor:
        """The effective ``(n_post, n_pre)`` matrix of an edge."""
        weight = params[edge.param]
        if edge.kind == "lateral":
            mask = 1 - torch.eye(weight.shape[-1], dtype=weight.dtype, device=weight.device)
            if self.coupling == "symmetric":
                weight = 0.5 * (weight + weight.transpose(-1, -2))
            return weight * mask
        return weight.transpose(-1, -2) if edge.transpose else weight

    def matrix_vjp(self, edge: Edge, cotangent: torch.Tensor, params: Params | None = None
                   ) -> torch.Tensor:
        """``∂⟨cotangent, matrix(edge)⟩/∂θ_edge``: a ``(n_post, n_pre)`` cotangent of the edge's
        matrix pulled back to its parameter (a transpose, or autograd through the symmetrised,
        masked lateral map)."""
        if edge.kind != "lateral":
            return cotangent.transpose(-1, -2) if edge.transpose else cotangent
        params = self.dynamics_parameters() if params is None else params
        param = params[edge.param].detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(self.matrix(edge, {edge.param: param}), param,
                                          grad_outputs=cotangent)
        return grad

    def clamped_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the clamped layer's rates ``(batch, n_in)``, in the network's dtype and
        on its device; a :class:`ConfigError` for another shape or a complex ``x``."""
        if x.dim() != 2:
            single = ": a single sample is x[None]" if x.dim() < 2 else ""
            raise ConfigError(f"the input x of shape {tuple(x.shape)} must be (batch, "
                              f"{self.sizes[0]}){single}")
        if x.shape[-1] != self.sizes[0]:
            raise ConfigError(f"input has {x.shape[-1]} features, the network expects "
                              f"{self.sizes[0]} (sizes {self.sizes})")
        if x.is_complex():
            raise ConfigError(f"the input x is complex ({x.dtype}): inputs are real rates")
        return x.to(device=self.device, dtype=self.dtype)

    def drive(self, x: torch.Tensor, params: Params | None = None) -> dict[int, torch.Tensor]:
        """Input currents from the clamped layer, ``Σ W x`` per receiving layer (constant)."""
        params = self.dynamics_parameters() if params is None else params
        x = self.clamped_input(x)
        _check_input(x)
        currents: dict[int, torch.Tensor] = {}
        for edge in self.edges:
            if edge.pre == 0:
                current = x @ self.matrix(edge, params).transpose(-1, -2)
                currents[edge.post] = currents[edge.post] + current if edge.post in currents \
                    else current
        return currents

    def synaptic_input(self, rates: list[torch.Tensor], drive: dict[int, torch.Tensor],
                       params: Params) -> list[torch.Tensor | float]:
        """``I_syn`` per free layer: the drive plus ``Σ M ρ(pre)`` over recurrent edges."""
        currents: list[torch.Tensor | float] = [0.0] * (self.n_layers + 1)
        for layer, current in drive.items():
            currents[layer] = current
        for edge in self.edges:
            if edge.pre == 0:
                continue
            contribution = rates[edge.pre] @ self.matrix(edge, params).transpose(-1, -2)
            currents[edge.post] = currents[edge.post] + contribution
        return currents

    def velocity(self, state: torch.Tensor, drive: dict[int, torch.Tensor],
                 params: Params | None = None) -> torch.Tensor:
        """``F(s) = ds/dt`` (closed form, no autograd), shape like ``state``."""
        params = self.dynamics_parameters() if params is None else params
        rates = self.rates(state)
        currents = self.synaptic_input(rates, drive, params)
        channel_currents = {
            f"I_syn_{name}": self.synaptic_input(self.channel_rates(state, name), {}, params)
            for name in self.compiled.channels}
        pieces = []
        for l in range(1, self.n_layers + 1):
            variables = self.variables(state, l)
            coupled = variables[self.compiled.coupled]
            velocity = self.compiled.velocity(
                variables, I_syn=_as_tensor(currents[l], coupled), bias=params[f"b{l}"],
                rho=rates[l], rho_prime=self.compiled.rho_prime(coupled),
                channel_inputs={key: _as_tensor(value[l], coupled)
                                for key, value in channel_currents.items()})
            pieces.extend(velocity[v] for v in self.compiled.variables)
        shape = torch.broadcast_shapes(*(p.shape[:-1] for p in pieces))
        return torch.cat([p.expand(*shape, p.shape[-1]) for p in pieces], dim=-1)

    def cost(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-sample cost ``C(ρ(s_out), y)``, shape ``(..., batch)``, for a state
        (..., batch, state_size) and class labels ``y`` (…, batch) or float targets
        (…, batch, n_classes) of the same batch (others are refused by the readout)."""
        return self.readout.cost(self.output_rates(state), y)

    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """The readout's targets for labels (or float targets) ``y``, in the network's dtype
        and device: build them once per batch, not at every step (targets pass through)."""
        if y.is_floating_point() and y.dtype == self.dtype and y.device == self.device:
            return self.readout.targets(y, y)  # (targets already: the readout checks them)
        like = torch.empty(0, dtype=self.dtype, device=self.device)
        return self.readout.targets(y.to(self.device), like)

    def output_cost_gradient(self, coupled: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``∂C/∂c_out = ρ'(c_out) ∂C/∂r_out`` from the output's coupled variable alone."""
        rates = self.compiled.rho(coupled)
        return self.readout.cost_gradient(rates, y) * self.compiled.rho_prime(coupled)

    def cost_gradient(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``c = ∂C/∂s`` over the flat state (non-zero on the output's coupled variable)."""
        block = self.output_block
        grad_out = self.output_cost_gradient(state[..., block.start:block.stop], y)
        full = torch.zeros(*grad_out.shape[:-1], self.state_size, dtype=grad_out.dtype,
                           device=grad_out.device)
        full[..., block.start:block.stop] = grad_out
        return full

    def hebbian_energy(self, state: torch.Tensor, x: torch.Tensor,
                       params: Params | None = None,
                       drive: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Coupling part of the energy, per sample:
        ``-Σ_edges ρ_postᵀ M ρ_pre - Σ_l b_lᵀ ρ_l`` (each symmetric edge counted once;
        symmetrised lateral weights with a factor ½; extra channels add their own
        ``-ρ_c,postᵀ M ρ_c,pre`` on the recurrent edges). Its θ-derivatives are the Hebbian
        terms of EP (``∂/∂W_l = -ρ_l ρ_{l-1}ᵀ``), for any coupling.

        ``drive`` (:meth:`drive` of the same ``x`` and ``params``, shaped like the state's
        batch) replaces the input edges' ``x Mᵀ``: a sampler that evaluates many states of
        one input computes those products once.
        """
        params = self.dynamics_parameters() if params is None else params
        rates = self.rates(state)
        # complex states (holomorphic EP) take the input as complex too
        rates[0] = x.to(state.dtype if state.is_complex() else self.dtype)
        all_rates = [rates] + [self.channel_rates(state, name) for name in self.compiled.channels]
        energy = 0.0
        for edge in self.edges:
            if not edge.primary or (edge.pre == 0 and drive is not None):
                continue
            factor = 0.5 if (edge.kind == "lateral" and self.coupling == "symmetric") else 1.0
            for channel in all_rates:
                if channel[edge.pre] is None:
                    continue
                post_current = channel[edge.pre] @ self.matrix(edge, params).transpose(-1, -2)
                energy = energy - factor * (channel[edge.post] * post_current).sum(-1)
        for layer, current in (drive or {}).items():  # the input enters the primary channel
            energy = energy - (rates[layer] * current).sum(-1)
        for l in range(1, self.n_layers + 1):
            energy = energy - (rates[l] * params[f"b{l}"]).sum(-1)
        return energy

    def energy(self, state: torch.Tensor, x: torch.Tensor, params: Params | None = None,
               drive: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Full energy ``E = Σ e(s_i) + hebbian`` (gradient / skew-gradient models only;
        ``drive`` as in :meth:`hebbian_energy`)."""
        total = self.hebbian_energy(state, x, params, drive)
        for l in range(1, self.n_layers + 1):
            total = total + self.compiled.unit_energy(self.variables(state, l)).sum(-1)
        return total


def _neuron_model(model: object) -> NeuronModel:
    """``model`` as a :class:`NeuronModel`: a name or path is loaded, others refused."""
    if isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if not isinstance(model, NeuronModel):
        raise ConfigError(f"model must be a NeuronModel or the name or path of a model file "
                          f"(such as 'fhn'), got {model!r}")
    return model


def _layer_sizes(sizes: object) -> tuple[int, ...]:
    """``sizes`` as a tuple of positive whole numbers, at least two (input and output);
    a string, a set or a mapping (no order of layers) is refused."""
    if isinstance(sizes, (str, bytes, Set, Mapping)) or not hasattr(sizes, "__iter__"):
        raise ConfigError(f"sizes {sizes!r} must be a sequence of layer sizes, input first, "
                          "such as (784, 500, 10)")
    sizes = tuple(sizes)
    sizes = tuple(whole_number(n, f"sizes {sizes}: a layer size") for n in sizes)
    if len(sizes) < 2:
        raise ConfigError(f"sizes {sizes} needs at least an input and an output layer")
    if any(n <= 0 for n in sizes):
        raise ConfigError(f"sizes {sizes}: every layer needs a positive number of units")
    return sizes


def _coupling(coupling: object) -> str:
    """``coupling`` if it is one of :data:`COUPLINGS`, else a :class:`ConfigError`."""
    if not isinstance(coupling, str) or coupling not in COUPLINGS:
        hint = did_you_mean(coupling, COUPLINGS) if isinstance(coupling, str) else ""
        raise ConfigError(f"coupling {coupling!r} must be one of {', '.join(COUPLINGS)}{hint}")
    return coupling


def _alpha(alpha: object, coupling: str) -> float | None:
    """The asymmetry of a ``coupling`` network: ``alpha`` in ``[0, 1]`` (``None``:
    :data:`DEFAULT_ALPHA`) for ``asymmetric``; ``None`` for the other couplings, for which
    a given ``alpha`` is a :class:`ConfigError` (it would be silently ignored)."""
    if coupling == "asymmetric":
        return DEFAULT_ALPHA if alpha is None else fraction(alpha, "alpha")
    if alpha is not None:
        raise ConfigError(f"alpha={alpha!r} sets the asymmetry of coupling 'asymmetric' "
                          f"(initial backward weights B = (1-α)Wᵀ + αR); coupling "
                          f"{coupling!r} has no use for it ({_NO_ALPHA[coupling]}): leave "
                          "alpha out, or use coupling='asymmetric'")
    return None


def _check_dtype(dtype: object) -> None:
    """Refuse a ``dtype`` other than ``torch.float32`` and ``torch.float64``."""
    if dtype not in (torch.float32, torch.float64):
        hint = " (a torch dtype, not a string)" if isinstance(dtype, str) else ""
        raise ConfigError(f"dtype {dtype!r} must be torch.float32 or torch.float64{hint}")


def _readout(readout: object, sizes: tuple[int, ...], dtype: torch.dtype) -> Readout:
    """``readout`` checked against the output layer (``None``: identity readout, MSE)."""
    if readout is None:
        return Readout(sizes[-1], dtype=dtype)
    if not isinstance(readout, Readout):
        kind = f", kind={readout!r}" if isinstance(readout, str) and readout in READOUT_KINDS \
            else ""
        raise ConfigError(f"readout must be a neuroeq.readout.Readout or None (the identity "
                          f"readout with MSE), got {readout!r}; pass "
                          f"Readout({sizes[-1]}, n_classes{kind})")
    if readout.n_out != sizes[-1]:
        raise ConfigError(f"the readout reads {readout.n_out} output units; the "
                          f"network's output layer has {sizes[-1]} (sizes {sizes})")
    return readout


def _check_input(x: torch.Tensor) -> None:
    """Raise a :class:`ConfigError` for an empty batch or an input that is not finite,
    naming the samples (one reduction when the input is good)."""
    if x.numel() == 0:
        raise ConfigError(f"the input x of shape {tuple(x.shape)} holds no samples "
                          "(an empty batch)")
    detached = x.detach()  # real: the network's dtype is float32 or float64
    low, high = torch.aminmax(detached)  # NaN propagates through the min and max
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        samples = sample_list((~torch.isfinite(detached)).any(-1))
        raise ConfigError(f"the input x holds NaN or inf values in samples {short(samples)}: "
                          "clean or rescale the data")


def _as_tensor(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.zeros_like(like)
