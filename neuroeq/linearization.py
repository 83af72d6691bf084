"""Closed-form Jacobian-vector products ``J u`` and ``Jᵀ u`` of a layered network.

For neuron ``i`` of layer ``l`` with state variables ``v`` the dynamics read
``F_{l,v} = f_v(s_l, I_syn, bias, ρ(s_l), ρ'(s_l), I_syn_c)`` with
``I_syn = Σ_edges M ρ(s_pre)`` (and ``I_syn_c = Σ_edges M ρ_c(s_pre)`` for extra channels).
So ``J = D + G M R``: ``D`` is block diagonal per neuron (``D_{vw} = ∂f_v/∂s_w``, through
``ρ`` and ``ρ'`` too), ``G = ∂f/∂I_syn`` is diagonal, ``R = diag(ρ'(s_pre))``:

    ``(J u)_{l,v}  = Σ_w D_{vw} u_{l,w} + G_v ⊙ Σ_{e: pre→l} (ρ'_pre ⊙ u_pre) M_eᵀ``
    ``(Jᵀ u)_{l,w} = Σ_v D_{vw} u_{l,v}``
    ``              + [w coupled] ρ'_l ⊙ Σ_{e: l→post} (Σ_v G_v u_{post,v}) M_e``

(plus the same terms per channel). The diagonal factors are elementwise derivatives,
taken once at the linearisation point by differentiating the neuron's own equation
(:func:`elementwise_partials`: no matmul, no graph over the network); every product after
that is two matmuls per edge and a few elementwise operations, with no autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from neuroeq.network import Network, Params, _as_tensor


def elementwise_partials(function: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
                         primals: tuple[torch.Tensor, ...]
                         ) -> tuple[tuple[torch.Tensor, ...], list[list[torch.Tensor]]]:
    """Values ``f_v`` and partials ``∂f_v/∂x_w`` of an elementwise function of same-shaped
    inputs (each output element reads only the same element of every input).

    One reverse pass per output: ``∂(Σ f_v)/∂x_w = ∂f_v/∂x_w`` element by element, since
    nothing couples the elements. Returns ``(values, partials)`` with
    ``partials[v][w] = ∂f_v/∂x_w`` (zeros where ``f_v`` does not read ``x_w``). Reverse mode,
    not ``torch.func.jvp``: torch 2.13's forward mode runs products with Python numbers
    through Python reference implementations, and a linearisation took 7-17× as long that
    way (``bench/model_kernels.py``). Complex inputs: the derivative of a holomorphic ``f``
    (torch's reverse mode gives its conjugate).
    """
    shape = primals[0].shape
    if any(p.shape != shape for p in primals):
        raise ValueError(f"elementwise_partials needs inputs of one shape, got "
                         f"{[tuple(p.shape) for p in primals]}")
    with torch.enable_grad():
        leaves = tuple(p.detach().requires_grad_() for p in primals)
        outputs = function(*leaves)
        single = isinstance(outputs, torch.Tensor)
        outputs = (outputs,) if single else tuple(outputs)
        values, partials = [], []
        for value in outputs:
            value = torch.as_tensor(value, dtype=primals[0].dtype,
                                    device=primals[0].device).expand(shape)
            values.append(value.detach())
            if not value.requires_grad:
                partials.append([torch.zeros_like(p) for p in primals])
                continue
            grads = torch.autograd.grad(value, leaves, grad_outputs=torch.ones_like(value),
                                        retain_graph=True, allow_unused=True)
            partials.append([torch.zeros_like(p) if g is None else
                             (g.conj() if g.is_complex() else g)
                             for p, g in zip(primals, grads, strict=True)])
    return tuple(values), partials


class Linearization:
    """``J = ∂F/∂s`` of ``network`` at ``state`` (batch, N), applied in closed form.

    Args:
        network: the network.
        state: the linearisation point, shape ``(batch, N)``.
        drive: ``Σ W x`` per receiving layer (:meth:`Network.drive`).
        params: parameter overrides, or ``None``.

    Attributes: ``velocity`` is ``F(state)`` (computed on the way).
    """

    def __init__(self, network: Network, state: torch.Tensor, drive: dict[int, torch.Tensor],
                 params: Params | None = None):
        params = network.dynamics_parameters() if params is None else params
        self.network = network
        compiled = network.compiled
        self.channels = tuple(compiled.channels)
        state = state.detach()
        self.layers = range(1, network.n_layers + 1)
        self.blocks = {l: [b for b in network.blocks if b.layer == l] for l in self.layers}
        self.coupled = {l: network.block(l) for l in self.layers}
        self.matrices = [(edge, network.matrix(edge, params).detach())
                         for edge in network.edges if edge.pre != 0]
        with torch.no_grad():
            rates = network.rates(state)
            currents = network.synaptic_input(rates, drive, params)
            channel_currents = {
                name: network.synaptic_input(network.channel_rates(state, name), {}, params)
                for name in self.channels}
        # derivatives of the rates: ρ'(s) for the primary and each extra channel
        self.rate_slope: dict[tuple[str, int], torch.Tensor] = {}
        for l in self.layers:
            coupled = state[..., self.coupled[l].start:self.coupled[l].stop]
            self.rate_slope[("", l)] = elementwise_partials(compiled.rho, (coupled,))[1][0][0]
            for name in self.channels:
                def channel(s: torch.Tensor, name: str = name) -> torch.Tensor:
                    return compiled.channel_rho(name, s)
                self.rate_slope[(name, l)] = elementwise_partials(channel, (coupled,))[1][0][0]
        # local partials D_{vw}, G_v = ∂f_v/∂I_syn, G_{v,c} = ∂f_v/∂I_syn_c per layer
        self.local: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        self.gain: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
        pieces = []
        for l in self.layers:
            names = [b.variable for b in self.blocks[l]]
            values = [state[..., b.start:b.stop] for b in self.blocks[l]]
            coupled_index = names.index(compiled.coupled)
            inputs = [_as_tensor(currents[l], values[coupled_index])]
            inputs += [_as_tensor(channel_currents[c][l], values[coupled_index])
                       for c in self.channels]
            bias = params[f"b{l}"].detach()

            def neuron(*args: torch.Tensor, names: list[str] = names, bias: torch.Tensor = bias,
                       coupled_index: int = coupled_index) -> tuple[torch.Tensor, ...]:
                variables = dict(zip(names, args[:len(names)], strict=True))
                coupled = args[coupled_index]
                extra = {f"I_syn_{c}": value
                         for c, value in zip(self.channels, args[len(names) + 1:], strict=True)}
                kwargs = {"channel_inputs": extra} if extra else {}
                out = compiled.velocity(variables, I_syn=args[len(names)], bias=bias,
                                        rho=compiled.rho(coupled),
                                        rho_prime=compiled.rho_prime(coupled), **kwargs)
                return tuple(out[name] for name in names)

            velocity, rows = elementwise_partials(neuron, tuple(values + inputs))
            pieces.extend(velocity)
            self.local[l] = {v: {w: rows[i][j] for j, w in enumerate(names)}
                             for i, v in enumerate(names)}
            channel_keys = [""] + list(self.channels)
            self.gain[l] = {v: {c: rows[i][len(names) + k] for k, c in enumerate(channel_keys)}
                            for i, v in enumerate(names)}
        self.velocity = torch.cat(pieces, dim=-1)
        self._jvp: JacobianProduct | None = None

    def _split(self, u: torch.Tensor) -> dict[int, dict[str, torch.Tensor]]:
        return {l: {b.variable: u[..., b.start:b.stop] for b in self.blocks[l]}
                for l in self.layers}

    def _join(self, parts: dict[int, dict[str, torch.Tensor]], like: torch.Tensor
              ) -> torch.Tensor:
        out = torch.empty_like(like)
        for l in self.layers:
            for b in self.blocks[l]:
                out[..., b.start:b.stop] = parts[l][b.variable]
        return out

    def jvp(self, u: torch.Tensor) -> torch.Tensor:
        """``J u``, shape like ``u`` (batch, N) (:class:`JacobianProduct`, built once)."""
        if self._jvp is None:
            self._jvp = JacobianProduct(self)
        return self._jvp(u)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """``Jᵀ u``, shape like ``u`` (batch, N)."""
        parts = self._split(u)
        coupled = self.network.compiled.coupled
        result: dict[int, dict[str, torch.Tensor]] = {}
        for l in self.layers:
            result[l] = {}
            names = list(self.local[l])
            for w in names:
                result[l][w] = sum(self.local[l][v][w] * parts[l][v] for v in names)
        for key in [""] + list(self.channels):
            weighted = {l: sum(self.gain[l][v][key] * parts[l][v] for v in self.local[l])
                        for l in self.layers}
            back: dict[int, torch.Tensor] = {}
            for edge, matrix in self.matrices:
                term = weighted[edge.post] @ matrix
                back[edge.pre] = back[edge.pre] + term if edge.pre in back else term
            for l, value in back.items():
                result[l][coupled] = result[l][coupled] + self.rate_slope[(key, l)] * value
        return self._join(result, u)


class JacobianProduct:
    """``u ↦ (shift·I + scale·J) u`` at a linearisation point, in closed form.

    Per layer and state variable ``v``:
    ``out_v = Σ_w C_{vw} ⊙ u_w + Σ_c scale·G_{v,c} ⊙ Σ_{e: pre→l} (ρ'_{c,pre} ⊙ u_pre) M_eᵀ``
    with ``C_{vw} = shift·δ_{vw} + scale·D_{vw}`` folded once. Factors that vanish at the
    point are dropped (FHN's inhibitor reads no synaptic current), and each row is written
    into ``out`` by fused kernels: two matmuls per edge and a few elementwise kernels per
    product, no transcendental function. Differentiable when ``u`` requires grad.
    """

    def __init__(self, linearization: Linearization, scale: float = 1.0, shift: float = 0.0):
        coupled = linearization.coupled
        self.edges: dict[tuple[str, int], list[tuple[slice, torch.Tensor, torch.Tensor]]] = {}
        for key in [""] + list(linearization.channels):
            for edge, matrix in linearization.matrices:
                slope = linearization.rate_slope[(key, edge.pre)]
                if not bool(slope.any()):
                    continue
                block = coupled[edge.pre]
                self.edges.setdefault((key, edge.post), []).append(
                    (slice(block.start, block.stop), slope, matrix.transpose(-1, -2)))
        self.rows: dict[tuple[int, str], tuple[slice, list, list]] = {}
        for l in linearization.layers:
            where = {b.variable: slice(b.start, b.stop) for b in linearization.blocks[l]}
            for v, row in linearization.local[l].items():
                terms = []
                for w, partial in row.items():
                    coefficient = partial * scale + shift if w == v else partial * scale
                    if bool(coefficient.any()):
                        terms.append((where[w], coefficient))
                gains = [(key, gain * scale) for key, gain in linearization.gain[l][v].items()
                         if (key, l) in self.edges and bool(gain.any())]
                self.rows[(l, v)] = (where[v], terms, gains)

    def __call__(self, u: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """The product for ``u`` of the point's shape (..., batch, N), written into ``out``
        (a new tensor when ``None``); ``u`` is not modified."""
        out = torch.empty_like(u) if out is None else out
        tracked = u.requires_grad and torch.is_grad_enabled()  # (``mul(out=)`` is not)
        synaptic: dict[tuple[str, int], torch.Tensor] = {}
        for index, edges in self.edges.items():
            total = None
            for columns, slope, transposed in edges:
                scaled = slope * u[..., columns]
                total = scaled @ transposed if total is None else total.addmm_(scaled,
                                                                                 transposed)
            synaptic[index] = total
        for (l, _), (columns, terms, gains) in self.rows.items():
            target = out[..., columns]
            if not terms:
                target.zero_()
            for k, (source, coefficient) in enumerate(terms):
                if k > 0:
                    target.addcmul_(coefficient, u[..., source])
                elif tracked:
                    target.copy_(coefficient * u[..., source])
                else:
                    torch.mul(coefficient, u[..., source], out=target)
            for key, gain in gains:
                target.addcmul_(gain, synaptic[(key, l)])
        return out


class EulerJacobian(JacobianProduct):
    """``u ↦ (I + dt·J) u``: the Jacobian of the Euler map ``G(s) = s + dt·F(s)`` at the
    linearisation point. The stability check iterates it: the Euler map of FHN evaluates
    ``tanh``, this product does not, and it needs no finite-difference step."""

    def __init__(self, linearization: Linearization, dt: float):
        super().__init__(linearization, scale=dt, shift=1.0)
