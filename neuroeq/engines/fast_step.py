"""The torch engine's closed-form Euler map, built once per network and step size.

For every state variable ``v`` of the model the update

    ``G_v(s) = v + dt · rhs_v(s, I_syn, bias, ρ, ρ')``

is formed symbolically (sympy) with the model's parameters substituted as numbers and
``I_syn + bias`` folded into one input ``I`` (the constant part ``Σ W x + b`` is computed
once per relaxation; each step adds ``Σ_edges ρ(s_pre) Mᵀ`` with ``addmm``). Constants
fold (``s + ½(-s + ρ'·I)`` becomes ``½s + ½ρ'·I`` for the Hopfield neuron), so each step
runs a handful of elementwise kernels per layer instead of one per operator of the
equation, without autograd and without concatenating the layers: the new state is written
into a second buffer (double buffering), then projected into its bounds in place.

The map is ``Π(G(s) - dt·(β/τ) c(s) + dt·f(s))``: exactly the engine's Euler step with the
nudge ``c = ∂C/∂s`` and an optional extra force ``f``.

Projected states. When the coupled variable has bounds ``[lo, hi]``, every state the map
returns lies in them, and on that interval ``ρ`` and ``ρ'`` often simplify exactly
(:func:`~neuroeq.expressions.restrict_to_interval`: the hard sigmoid ``clip(s, 0, 1)`` is
``s``, its derivative ``int(0 ≤ s ≤ 1)`` is 1). A second set of updates with those forms
substituted (Hopfield: ``G(s) = ½s + ½I``, two kernels) is used when the step's input is
the map's own last output (the same tensor, unmodified since); any other input takes the
general updates. A layer whose update is affine, ``a·v + b·I + c`` (Hopfield on its
bounds), is written straight into the output: ``a·v + (b·base + c)``, then ``b·ρ Mᵀ``
added by ``addmm_`` per incoming edge, two kernels besides the matmuls. An edge with a
narrow output and a wide input (the readout layer) is computed as ``(M ρᵀ)ᵀ`` into a kept
buffer and added: BLAS is slow on products with few outputs per row. Off the bounds,
``ρ`` and ``ρ'`` are evaluated together with their common terms once
(:meth:`~neuroeq.compiled_model.CompiledModel.rho_and_prime`: FHN's ``½(1 + tanh v)`` and
``½(1 - tanh² v)`` share one ``tanh``, the costliest kernel of its step).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TypeVar

import sympy
import torch

from neuroeq.expressions import compile_expression, parse_expression, restrict_to_interval
from neuroeq.network import Network, Params

_TOTAL_INPUT = "_I_total"
T = TypeVar("T")
# an edge's ρ_pre Mᵀ is computed as (M ρ_preᵀ)ᵀ when it has at most NARROW_OUTPUTS outputs
# and NARROW_RATIO times as many inputs (and the batch is at least twice the outputs)
NARROW_OUTPUTS = 16
NARROW_RATIO = 16
# a wide edge's matrix is kept as a contiguous (n_pre, n_post) Mᵀ, so that ρ_pre Mᵀ is a
# plain product, while it takes less than this many bytes; larger ones are used through
# the transpose of the contiguous (n_post, n_pre) M (MKL on the reference machine, batch
# 32-256: 3-19 % faster the first way up to 1000 × 1000 in float32, 8-20 % slower at
# 1024 × 1024 and 2048 × 2048; bench/RESULTS.md)
PLAIN_PRODUCT_BYTES = 4 * 2**20


def _is_narrow(n_post: int, n_pre: int) -> bool:
    """True for an edge whose product is computed as ``(M ρᵀ)ᵀ`` (few outputs, many inputs)."""
    return n_post <= NARROW_OUTPUTS and n_pre >= NARROW_RATIO * n_post


def _transposed_operand(matrix: torch.Tensor) -> torch.Tensor:
    """``Mᵀ`` of an ``(n_post, n_pre)`` edge matrix in the layout its product runs fastest
    in (:data:`PLAIN_PRODUCT_BYTES`): a contiguous ``(n_pre, n_post)`` tensor, or the
    transposed view of a contiguous ``M`` (narrow and large edges, batched matrices)."""
    if matrix.dim() == 2 and not _is_narrow(*matrix.shape) \
            and matrix.numel() * matrix.element_size() < PLAIN_PRODUCT_BYTES:
        return matrix.transpose(-1, -2).contiguous()
    return matrix.contiguous().transpose(-1, -2)


def _projected_rates(network: Network) -> dict[str, sympy.Expr] | None:
    """``ρ`` and ``ρ'`` of the coupled variable restricted to its bounds, when that removes
    something (``None`` without bounds, with extra channels, or when nothing simplifies)."""
    model, compiled = network.model, network.compiled
    bounds = compiled.bounds.get(compiled.coupled)
    if bounds is None or compiled.channels:
        return None
    forms = {}
    for key, code in (("rho", model.rho_code), ("rho_prime", model.rho_prime_code)):
        general = parse_expression(code, f"model {model.name!r}: {key}")
        forms[key] = restrict_to_interval(general, compiled.coupled, *bounds)
        forms[f"{key}_general"] = general
    if all(forms[k] == forms[f"{k}_general"] for k in ("rho", "rho_prime")):
        return None
    return {"rho": forms["rho"], "rho_prime": forms["rho_prime"]}


def _identity_on_bounds(network: Network) -> bool:
    """True when ``ρ`` restricted to the bounds is the coupled variable itself (the hard
    sigmoid: ``clip(s, 0, 1) = s`` on ``[0, 1]``), so that a step on the bounds reads the
    state as its rates (cached)."""
    cache = _network_cache(network)
    key = "identity on the bounds"
    if key not in cache:
        rates = _projected_rates(network)
        rho = None if rates is None else rates["rho"]
        cache[key] = isinstance(rho, sympy.Symbol) and rho.name == network.compiled.coupled
    return cache[key]


def _network_cache(network: Network) -> dict:
    """What this module derives from ``network``'s model (compiled updates, forms on the
    bounds), kept on the network itself so that it lives and dies with it."""
    return network.__dict__.setdefault("_fast_step_cache", {})


def _same(value: torch.Tensor) -> torch.Tensor:
    return value


def _cached(cache: dict[int, tuple[torch.Tensor, T]], tensor: torch.Tensor,
            make: Callable[[torch.Tensor], T]) -> T:
    """``make(tensor)`` (views of it), made once for each of the few tensors a relaxation
    alternates between (its step buffers, their layer views, its constant offsets) and
    kept in ``cache``, which holds the last four (and the tensors, so an ``id`` is never
    reused while cached)."""
    entry = cache.get(id(tensor))
    if entry is not None and entry[0] is tensor:
        return entry[1]
    if len(cache) >= 4:
        cache.pop(next(iter(cache)))
    value = make(tensor)
    cache[id(tensor)] = (tensor, value)
    return value


def _as_columns(offset: torch.Tensor) -> torch.Tensor:
    """A ``(batch, n)`` or ``(n,)`` offset as the ``(n, batch)`` or ``(n, 1)`` columns of a
    transposed product."""
    return offset.t() if offset.dim() == 2 else offset.unsqueeze(-1)


def _affine(update: sympy.Expr, variable: str) -> tuple[float, float, float] | None:
    """``(a, b, c)`` when ``update = a·v + b·I + c`` with numbers ``a, b, c`` (``I`` the
    total input), else ``None``."""
    terms = sympy.expand(update).as_coefficients_dict()
    coefficients = {variable: 0.0, _TOTAL_INPUT: 0.0, "1": 0.0}
    for term, coefficient in terms.items():
        key = "1" if term == 1 else getattr(term, "name", None)
        if key not in coefficients or not coefficient.is_number:
            return None
        coefficients[key] += float(coefficient)
    return coefficients[variable], coefficients[_TOTAL_INPUT], coefficients["1"]


def _projected_map(network: Network, dt: float) -> tuple[dict, dict[str, Callable]] | None:
    """The updates with ``ρ``, ``ρ'`` restricted to the bounds and those two compiled
    (cached per network and step; ``None`` when nothing simplifies)."""
    cache = _network_cache(network)
    key = (float(dt), "projected")
    if key not in cache:
        rates = _projected_rates(network)
        where = f"model {network.model.name!r}: {{}} on the bounds"
        cache[key] = None if rates is None else (
            _update_expressions(network, dt, rates),
            {k: compile_expression(v, where.format(k)) for k, v in rates.items()})
    return cache[key]


def _update_expressions(network: Network, dt: float, rates: dict[str, sympy.Expr] | None = None
                        ) -> dict[str, tuple[Callable, set[str], tuple | None]]:
    """Per state variable: the compiled ``v + dt·rhs``, the names it reads and its affine
    coefficients ``(a, b, c)`` when it is ``a·v + b·I + c`` (cached); ``rates``: forms of
    ``ρ``, ``ρ'`` substituted into it (those restricted to the bounds)."""
    cache = _network_cache(network)
    key = ("updates", float(dt), rates is not None)
    if key in cache:
        return cache[key]
    model = network.model
    compiled: dict[str, tuple[Callable, set[str], tuple | None]] = {}
    for equation in model.state:
        expr = equation.expr
        symbols = {symbol.name: symbol for symbol in expr.free_symbols}
        substitutions = {symbols[name]: sympy.Float(value)
                         for name, value in model.parameters.items() if name in symbols}
        if "I_syn" in symbols:
            total = sympy.Symbol(_TOTAL_INPUT, real=True)
            bias = symbols.get("bias", sympy.Symbol("bias", real=True))
            substitutions[symbols["I_syn"]] = total - bias
        if rates is not None:
            for name, form in rates.items():
                if name in symbols:
                    substitutions[symbols[name]] = form.subs(
                        {symbol: sympy.Float(model.parameters[symbol.name])
                         for symbol in form.free_symbols if symbol.name in model.parameters})
        variable = symbols.get(equation.variable, sympy.Symbol(equation.variable, real=True))
        update = variable + sympy.Float(dt) * expr.subs(substitutions)
        candidates = [update, sympy.expand(update)]
        update = min(candidates, key=sympy.count_ops)
        names = {symbol.name for symbol in update.free_symbols}
        where = f"model {model.name!r}: Euler update of {equation.variable}"
        compiled[equation.variable] = (compile_expression(update, where), names,
                                       _affine(update, equation.variable))
    cache[key] = compiled
    return compiled


def supports(network: Network, state: torch.Tensor, params: Params | None) -> bool:
    """True when the fast map applies: a plain ``(batch, N)`` state and unstacked params."""
    if state.dim() != 2 or params is None:
        return state.dim() == 2
    reference = network.dynamics_parameters()
    return all(params[name].shape == value.shape for name, value in reference.items()
               if name in params)


def sweep_applies(network: Network, force: object | None) -> bool:
    """True when :class:`EulerMap` can sweep the layers in order (block Gauss-Seidel): no
    extra force (it reads the whole old state) and no extra synaptic channels."""
    return force is None and not network.compiled.channels


def _constant_rate_slope(network: Network, bounded: bool) -> float | None:
    """``dρ/ds`` of the coupled variable when it is one number on the states' domain (the
    bounds, where there are any; the hard sigmoid's is 1 there), else ``None`` (cached)."""
    cache = _network_cache(network)
    key = ("rate slope", bounded)
    if key not in cache:
        cache[key] = _rate_slope(network, bounded)
    return cache[key]


def _rate_slope(network: Network, bounded: bool) -> float | None:
    model, compiled = network.model, network.compiled
    rates = _projected_rates(network) if bounded else None
    rho = rates["rho"] if rates is not None else parse_expression(
        model.rho_code, f"model {model.name!r}: rho")
    symbols = {symbol.name: symbol for symbol in rho.free_symbols}
    variable = symbols.get(compiled.coupled, sympy.Symbol(compiled.coupled, real=True))
    slope = sympy.diff(rho, variable).subs(
        {symbols[name]: sympy.Float(value) for name, value in model.parameters.items()
         if name in symbols})
    return float(slope) if slope.is_number and slope.is_real else None


def certifying_sweep(step: EulerMap) -> EulerMap | None:
    """A layer sweep whose linearisation contracts at a fixed point of the plain map
    ``step`` exactly where the dynamics are stable, or ``None`` where that cannot be shown.

    It applies where every layer is one variable with the affine update
    ``v + dt·F = a·v + b·I + c`` (numbers, ``a < 1``, one ``b`` for all layers), ``ρ`` has a
    constant slope ``α`` on the states' domain, the coupling is symmetric, no edge is
    lateral and nothing else acts (no nudge, no extra force, no extra channel): Hopfield
    on its bounds, the linear neuron. Then, on the units inside the bounds, the flow's
    Jacobian is ``J = (d·1 + g·α·M)`` with ``d = (a - 1)/dt``, ``g = b/dt`` and ``M``
    symmetric, and ``A = -h·J = 1 - hgα·M`` (``h = -1/d``) is symmetric. The sweep with
    step ``h`` sets each layer to ``hgα·(M e)`` from the new layers below it (``a = 0``): it
    is block Gauss-Seidel on ``A``, the splitting ``A = (1 - hgαL) - hgαLᵀ`` (``L`` the part
    of ``M`` below the layer diagonal), whose ``M_s + M_sᵀ - A = 1`` is positive definite.
    By the Householder-John theorem its linearisation then contracts iff ``A ≻ 0``, i.e.
    iff every eigenvalue of ``J`` is negative: the dynamics settle there. Its rate is
    about the square of the plain map's at ``dt = h`` (Hopfield 784-500-10 on MNIST:
    perturbations shrink by 0.19-0.22 per sweep against 0.71-0.73 per Euler step), so a power
    iteration reaches its certificate in a third of the products. It decides the
    stability of the dynamics, not of the Euler integrator at ``dt``: an eigenvalue of
    ``J`` below ``-2/dt`` makes Euler steps at ``dt`` oscillate away from a point that the
    flow settles at, and the sweep passes such a point.
    """
    if not isinstance(step, EulerMap):
        return None
    network = step.network
    if step.sweep or step.nudge != 0.0 \
            or not sweep_applies(network, step.force) or network.coupling != "symmetric" \
            or any(edge.kind == "lateral" for edge in network.edges) \
            or any(len(step.blocks[l]) != 1 for l in step.layers):
        return None
    bounded = bool(network.compiled.bounds)
    updates = step.projected[0] if bounded and step.projected is not None else step.updates
    forms = {updates[step.blocks[l][0].variable][2] for l in step.layers}
    if len(forms) != 1 or None in forms or _constant_rate_slope(network, bounded) is None:
        return None
    a, _, _ = forms.pop()
    if not a < 1.0:
        return None
    return EulerMap(network, step.dt / (1.0 - a), step.drive, step.params, sweep=True)


class EulerMap:
    """``s ↦ Π(s + dt·[F(s) - (β/τ) c(s) + f(s)])`` for a ``(batch, N)`` state, closed form.

    Args:
        network: the network (weights read once: they are constant during a relaxation).
        dt: the Euler step (seconds).
        drive: ``Σ W x`` per receiving layer, from :meth:`Network.drive`.
        params: parameter overrides (same shapes as the network's), or ``None``.
        nudge: ``β/τ``; ``y`` the targets when it is not zero.
        force: an extra force ``f(s)`` (e.g. AsymEP's correction), or ``None``.
        sweep: update the layers in order, each from the new states of the layers before
            it (block Gauss-Seidel; same fixed points). Needs no ``force`` and no extra
            synaptic channels (:func:`sweep_applies`).
    """

    def __init__(self, network: Network, dt: float, drive: dict[int, torch.Tensor],
                 params: Params | None = None, nudge: float = 0.0,
                 y: torch.Tensor | None = None,
                 force: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 sweep: bool = False):
        if sweep and not sweep_applies(network, force):
            raise ValueError("a layer sweep needs a network without extra synaptic channels "
                             "and no extra force")
        self.sweep = sweep
        self.default_params = params is None  # the network's own parameters
        params = network.dynamics_parameters() if params is None else params
        self.network, self.dt, self.nudge, self.force = network, dt, nudge, force
        self.y = self._targets(y)
        self.drive, self.params = drive, params  # (the stability check linearises at them)
        self.updates = _update_expressions(network, dt)
        compiled = network.compiled
        self.compiled = compiled
        self.parameters = compiled.parameters
        self.channels = tuple(compiled.channels)
        self.layers = range(1, network.n_layers + 1)
        self.blocks = {l: [b for b in network.blocks if b.layer == l] for l in self.layers}
        self.coupled = {l: network.block(l) for l in self.layers}
        self.bias = {l: params[f"b{l}"].detach() for l in self.layers}
        # I = (Σ W x + b) + Σ_edges ρ(pre) Mᵀ: the constant part once, transposes once.
        self.base: dict[int, torch.Tensor] = {}
        for l in self.layers:
            bias = self.bias[l]
            self.base[l] = drive[l] + bias if l in drive else bias
        self.incoming: dict[int, list[tuple[int, torch.Tensor]]] = {l: [] for l in self.layers}
        for edge in network.edges:
            if edge.pre == 0:
                continue
            # Mᵀ in the layout of its fastest product (narrow outputs: the transpose of a
            # contiguous M, which MKL runs up to 2.7× faster than a contiguous Mᵀ)
            matrix = network.matrix(edge, params).detach()
            self.incoming[edge.post].append((edge.pre, _transposed_operand(matrix)))
        # (post, pre) edges whose product is computed as (M ρᵀ)ᵀ (decided once, by shape),
        # with their contiguous (n_post, n_pre) matrix M
        self._narrow_edges = {(post, pre): transposed.t() for post, edges in self.incoming.items()
                              for pre, transposed in edges
                              if transposed.dim() == 2 and _is_narrow(*transposed.t().shape)}
        # (post, pre) -> the kept (n_post, batch) buffer and its (batch, n_post) transpose
        self._narrow_products: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        names = set().union(*(needed for _, needed, _ in self.updates.values()))
        self.needs_rho_prime = "rho_prime" in names
        self.needs_bias = "bias" in names
        self.needs_rho = "rho" in names
        # on projected states: the updates with the restricted ρ, ρ', and those two
        self.projected = _projected_map(network, dt)
        self.identity_on_bounds = self.projected is not None and _identity_on_bounds(network)
        self._last_output: tuple[torch.Tensor, int] | None = None
        self._view_cache: dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]] = {}
        self._transposes: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # one bounded variable per layer: the layer view is all the projection needs
        self._layer_bounds = {l: compiled.bounds.get(self.blocks[l][0].variable)
                              for l in self.layers if len(self.blocks[l]) == 1}
        self.lean = self._lean()
        self._affine_forms: dict[bool, dict] = {}  # built on first use (a map often needs one)

    def _lean(self) -> bool:
        """True when the lean affine step may apply: no extra channel, no extra force, one
        bounded variable per layer."""
        return (not self.channels and self.force is None
                and len(self._layer_bounds) == len(self.blocks))

    def with_nudge(self, nudge: float, y: torch.Tensor | None,
                   force: Callable[[torch.Tensor], torch.Tensor] | None = None) -> EulerMap:
        """The same map with nudge ``β/τ`` towards ``y`` and the extra force ``force``
        instead of this map's: it shares the constant parts (base currents ``Σ W x + b``,
        the matrices, the compiled updates), so a nudged phase of the same batch and
        weights does not rebuild them. Its own buffers and its own last output."""
        if self.sweep:
            raise ValueError("with_nudge is for the plain map, not a layer sweep")
        other = copy.copy(self)
        other.nudge, other.force = nudge, force
        other.y = other._targets(y)
        other.lean = other._lean()
        other._last_output = None
        other.release_buffers()
        other._affine_forms = dict(self._affine_forms)
        return other

    def _targets(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The nudge's targets, one-hot once here rather than at every step."""
        return self.network.targets(y) if self.nudge != 0.0 and y is not None else y

    def release_buffers(self) -> None:
        """Drop the cached layer views of the step buffers and the narrow products' buffers
        (a relaxation's dead spare state among them): called once a relaxation is done with
        the map, which its result keeps for a later phase (:meth:`with_nudge`)."""
        self._view_cache = {}
        self._transposes = {}
        self._narrow_products = {}

    def produced(self, state: torch.Tensor) -> bool:
        """True when ``state`` is this map's last output, unmodified since (or the state
        given to :meth:`mark_in_bounds`): it lies in the bounds."""
        last = self._last_output
        return last is not None and state is last[0] and state._version == last[1]

    @property
    def affine(self) -> dict[int, tuple[float, float, torch.Tensor]]:
        """The affine layers of the general updates (see :meth:`_affine_layers`)."""
        return self._affine_for(projected=False)

    @property
    def affine_projected(self) -> dict[int, tuple[float, float, torch.Tensor]]:
        """The affine layers of the on-the-bounds updates (none without bounds)."""
        return self._affine_for(projected=True)

    def _affine_for(self, projected: bool) -> dict[int, tuple[float, float, torch.Tensor]]:
        forms = self._affine_forms.get(projected)
        if forms is None:
            if projected:
                forms = self._affine_layers(self.projected[0]) if self.projected else {}
            else:
                forms = self._affine_layers(self.updates)
            self._affine_forms[projected] = forms
        return forms

    def mark_in_bounds(self, state: torch.Tensor) -> None:
        """Declare that ``state`` (as it is now) lies in the bounds, like the map's own
        outputs: a step from it takes the on-the-bounds forms of ``ρ``, ``ρ'`` (any later
        in-place write to ``state`` withdraws this)."""
        self._last_output = (state, state._version)

    def _affine_layers(self, updates: dict) -> dict[int, tuple[float, float, torch.Tensor]]:
        """Layers of one variable whose update is ``a·v + b·I + c``: ``(a, b, b·base + c)``.
        Their step is written straight into the output, ``out = a·v + (b·base + c)`` then
        ``out += b·ρ_pre Mᵀ`` per incoming edge (Hopfield on its bounds: ``½v + ½I``)."""
        if self.channels:
            return {}
        layers = {}
        for l in self.layers:
            blocks = self.blocks[l]
            form = updates[blocks[0].variable][2] if len(blocks) == 1 else None
            if form is not None:
                a, b, c = form
                base = self.base[l]  # read only: b = 1, c = 0 (Hopfield at dt = τ) shares it
                offset = base if (b == 1.0 and c == 0.0) else base * b + c
                layers[l] = (a, b, offset)
        return layers

    def _currents(self, rates: list[torch.Tensor | None], base: dict[int, torch.Tensor] | None,
                  skip: dict | None = None, only: int | None = None
                  ) -> dict[int, torch.Tensor | float]:
        """``base + Σ_edges ρ(pre) Mᵀ`` per free layer (``0.0`` where nothing arrives)
        except the layers in ``skip``; only layer ``only`` when given."""
        currents: dict[int, torch.Tensor | float] = {}
        for l in (self.layers if only is None else (only,)):
            if skip and l in skip:
                continue
            current = base[l] if base is not None else None
            owned = False
            for pre, transposed in self.incoming[l]:
                narrow = self._narrow_product(l, pre, rates[pre])
                if current is None:
                    current, owned = (rates[pre] @ transposed if narrow is None
                                      else narrow.clone()), True
                elif narrow is not None:
                    current, owned = (current.add_(narrow) if owned
                                      else current + narrow), True
                elif not owned:
                    current, owned = torch.addmm(current, rates[pre], transposed), True
                else:
                    current.addmm_(rates[pre], transposed)
            currents[l] = current if current is not None else 0.0
        return currents

    def _narrow_product(self, post: int, pre: int, rates: torch.Tensor,
                        offset: torch.Tensor | None = None, alpha: float = 1.0
                        ) -> torch.Tensor | None:
        """``ρ_pre Mᵀ`` as ``(M ρ_preᵀ)ᵀ`` (a view of a kept ``(n_post, batch)`` buffer) when
        the output is narrow and the input wide (the readout layer's ``n_post = 10`` from 500
        hidden units), else ``None``. MKL runs a product with ``n_post`` outputs per row
        1.2-2.4× slower than the same product with ``batch`` outputs (batch 128-1024,
        float32 and float64; ``bench/RESULTS.md``). With ``offset`` (``(batch, n_post)`` or
        ``(n_post,)``): ``offset + α·ρ_pre Mᵀ`` in the same ``addmm``."""
        matrix = self._narrow_edges.get((post, pre))
        if matrix is None or rates.dim() != 2 or rates.dtype != matrix.dtype \
                or rates.shape[0] < 2 * matrix.shape[0]:
            return None
        kept = self._narrow_products.get((post, pre))
        if kept is None or kept[0].shape[1] != rates.shape[0] or kept[0].dtype != rates.dtype:
            buffer = rates.new_empty(matrix.shape[0], rates.shape[0])
            kept = self._narrow_products[(post, pre)] = (buffer, buffer.t())
        buffer, product = kept
        # the views of the buffer, of the rates and of a constant offset are made once (the
        # rates alternate between the step buffers' layer views): 1.4 µs a step of 15.6
        # on 784-40-2 at batch 4 (bench/RESULTS.md)
        rates_t = _cached(self._transposes, rates, torch.Tensor.t)
        if offset is None:
            torch.mm(matrix, rates_t, out=buffer)
        else:
            columns = _cached(self._transposes, offset, _as_columns)
            torch.addmm(columns, matrix, rates_t, alpha=alpha, out=buffer)
        return product

    def __call__(self, state: torch.Tensor, out: torch.Tensor | None = None, *,
                 in_bounds: bool = False) -> torch.Tensor:
        """One step from ``state`` (not modified); written into ``out`` when given.
        ``in_bounds``: the caller guarantees that ``state`` lies in the bounds (as the
        map's own outputs do), so the on-the-bounds forms of ``ρ``, ``ρ'`` apply.

        With ``sweep`` the layers are updated in order (block Gauss-Seidel): layer ``l``
        reads the new states of the layers before it, ``ρ(s_k^new)`` for ``k < l``."""
        out = torch.empty_like(state) if out is None else out
        compiled = self.compiled
        updates, rho, rho_prime = self.updates, compiled.rho, compiled.rho_prime
        affine = self.affine
        if self.projected is not None and (in_bounds or self.produced(state)):
            updates, restricted = self.projected
            affine = self.affine_projected
            parameters = self.parameters
            rho = _same if self.identity_on_bounds else (
                lambda c: restricted["rho"]({**parameters, compiled.coupled: c}))

            def rho_prime(c: torch.Tensor) -> torch.Tensor | float:
                return restricted["rho_prime"]({**parameters, compiled.coupled: c})
        if self.lean and len(affine) == len(self.blocks):
            return self._affine_step(state, out, rho, rho_prime, affine)
        coupled = {l: state[:, b.start:b.stop] for l, b in self.coupled.items()}
        slopes: dict[int, torch.Tensor] = {}  # ρ'(s) of the old state, where it is read
        if updates is self.updates and (self.needs_rho_prime or self.nudge != 0.0):
            # the general forms: ρ and ρ' together, their shared terms once (FHN: one tanh)
            pairs = {l: compiled.rho_and_prime(coupled[l]) for l in self.layers}
            rates: list[torch.Tensor | None] = [None] + [pairs[l][0] for l in self.layers]
            slopes = {l: pairs[l][1] for l in self.layers}
        else:
            rates = [None] + [rho(coupled[l]) for l in self.layers]
        forms = (updates, affine, rho_prime, slopes)
        if self.sweep:
            for l in self.layers:
                currents = self._currents(rates, self.base, skip=affine, only=l)
                self._update_layer(l, state, out, rates, currents, {}, forms)
                if l == self.network.n_layers:
                    self._nudge(out, rates, coupled, rho_prime, slopes)
                if compiled.bounds:
                    self._project_layer(out, l)
                rates[l] = rho(out[:, self.coupled[l].start:self.coupled[l].stop])
        else:
            currents = self._currents(rates, self.base, skip=affine)
            channel_currents = {}
            for name in self.channels:
                channel_rates = [None] + [compiled.channel_rho(name, coupled[l])
                                          for l in self.layers]
                channel_currents[f"I_syn_{name}"] = self._currents(channel_rates, None)
            for l in self.layers:
                self._update_layer(l, state, out, rates, currents, channel_currents, forms)
            self._nudge(out, rates, coupled, rho_prime, slopes)
            if self.force is not None:
                out.add_(self.force(state), alpha=self.dt)
            if compiled.bounds:
                self.network.project(out)
        if compiled.bounds:
            # the same tensor object, unmodified since (every in-place write bumps _version)
            self._last_output = (out, out._version)
        return out

    def _update_layer(self, l: int, state: torch.Tensor, out: torch.Tensor,
                      rates: list, currents: dict, channel_currents: dict, forms: tuple
                      ) -> None:
        """Write layer ``l``'s Euler update (before the nudge and the projection) into
        ``out``."""
        updates, affine, rho_prime, slopes = forms
        if l in affine:
            block = self.blocks[l][0]
            self._affine_update(l, state[:, block.start:block.stop],
                                out[:, block.start:block.stop], rates, affine[l])
            return
        env = dict(self.parameters)
        env.update({b.variable: state[:, b.start:b.stop] for b in self.blocks[l]})
        env[_TOTAL_INPUT] = currents[l]
        env["rho"] = rates[l]
        if self.needs_rho_prime:
            block = self.coupled[l]
            env["rho_prime"] = slopes[l] if l in slopes else rho_prime(
                state[:, block.start:block.stop])
        if self.needs_bias:
            env["bias"] = self.bias[l]
        for key, value in channel_currents.items():
            env[key] = value[l]
        for block in self.blocks[l]:
            update, _, _ = updates[block.variable]
            value = update(env)
            target = out[:, block.start:block.stop]
            if isinstance(value, torch.Tensor):
                target.copy_(value)
            else:
                target.fill_(float(value))

    def _affine_update(self, l: int, current: torch.Tensor, target: torch.Tensor,
                       rates: list, form: tuple[float, float, torch.Tensor],
                       defer: bool = False) -> torch.Tensor | None:
        """``target = a·v + (b·base + c) + b·Σ ρ_pre Mᵀ`` for an affine layer ``l``.

        ``defer``: a layer whose one incoming edge is narrow with ``a = 0`` (the readout
        layer at ``dt = τ``) returns ``(b·M ρᵀ + offsetᵀ)ᵀ``, one ``addmm`` into the kept
        buffer, for the caller's next kernel to write into ``target`` (``None`` otherwise:
        ``target`` holds the update)."""
        a, b, offset = form
        edges = self.incoming[l]
        if defer and b != 0.0 and len(edges) == 1 and (l, edges[0][0]) in self._narrow_edges \
                and offset.dim() in (1, 2):
            pre = edges[0][0]
            fused = self._narrow_product(l, pre, rates[pre], offset=offset, alpha=b)
            if fused is not None:
                if a == 0.0:
                    return fused
                torch.add(fused, current, alpha=a, out=target)
                return None
        edges = edges if b != 0.0 else []
        if a == 0.0 and edges and (l, edges[0][0]) not in self._narrow_edges:
            # the offset and the first product in one addmm (no copy of its own)
            pre, transposed = edges[0]
            torch.addmm(offset, rates[pre], transposed, alpha=b, out=target)
            edges = edges[1:]
        elif a == 0.0:
            target.copy_(offset)
        else:
            torch.add(offset, current, alpha=a, out=target)
        for pre, transposed in edges:
            narrow = self._narrow_product(l, pre, rates[pre])
            if narrow is None:
                target.addmm_(rates[pre], transposed, alpha=b)
            else:
                target.add_(narrow, alpha=b)

    def _layer_views(self, tensor: torch.Tensor) -> dict[int, torch.Tensor]:
        """``{layer: tensor[:, layer's columns]}``, cached (:func:`_cached`)."""
        return _cached(self._view_cache, tensor, lambda t: {l: t[:, b.start:b.stop]
                                                            for l, b in self.coupled.items()})

    def _affine_step(self, state: torch.Tensor, out: torch.Tensor, rho: Callable,
                     rho_prime: Callable, affine: dict) -> torch.Tensor:
        """The step when every layer is one affine variable (Hopfield on its bounds): the
        same operations as the general loop, with the layer views cached. Each layer is
        finished (nudged, projected) before the next: a sweep reads it from there, Jacobi
        reads only the old ``rates``, so one loop serves both."""
        inputs, outputs = self._layer_views(state), self._layer_views(out)
        rates: list = [None] + [rho(inputs[l]) for l in self.layers]
        for l in self.layers:
            # a deferred update lands in the layer's output through the next kernel (the
            # nudge or the projection) instead of a copy of its own
            source = self._affine_update(l, inputs[l], outputs[l], rates, affine[l],
                                         defer=True)
            if l == self.network.n_layers:
                source = self._nudge(out, rates, inputs, rho_prime, source=source)
            bounds = self._layer_bounds[l]
            if source is not None:
                if bounds is not None:
                    torch.clamp(source, *bounds, out=outputs[l])
                else:
                    outputs[l].copy_(source)
            elif bounds is not None:
                outputs[l].clamp_(*bounds)
            if self.sweep:
                rates[l] = rho(outputs[l])
        if self.compiled.bounds:
            self._last_output = (out, out._version)
        return out

    def _nudge(self, out: torch.Tensor, rates: list, coupled: dict, rho_prime: Callable,
               slopes: dict[int, torch.Tensor] | None = None,
               source: torch.Tensor | None = None) -> torch.Tensor | None:
        """``out_output -= dt·(β/τ)·ρ'·∂C/∂r`` at the old output rates (when nudged);
        ``slopes``: ``ρ'`` of the old state where already computed. ``source``: the output
        layer's update not yet written into ``out``; the nudged value is written there and
        ``None`` returned (without a nudge ``source`` is returned as it is)."""
        if self.nudge == 0.0:
            return source
        n = self.network.n_layers
        block = self.network.output_block
        grad = self.network.readout.cost_gradient(rates[n], self.y)
        slope = slopes[n] if slopes and n in slopes else rho_prime(coupled[n])
        if not (isinstance(slope, float) and slope == 1.0):  # 1 on the bounds (Hopfield)
            grad = grad * slope
        target = out[:, block.start:block.stop]
        if source is None:
            target.sub_(grad, alpha=self.dt * self.nudge)
        else:
            torch.sub(source, grad, alpha=self.dt * self.nudge, out=target)
        return None

    def _project_layer(self, out: torch.Tensor, l: int) -> None:
        """Clamp layer ``l``'s bounded variables in ``out`` into their box (in place)."""
        for block in self.blocks[l]:
            bounds = self.compiled.bounds.get(block.variable)
            if bounds is not None:
                out[:, block.start:block.stop].clamp_(*bounds)
