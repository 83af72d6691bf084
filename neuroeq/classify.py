"""Classify a neuron model: gradient, skew-gradient or general non-conservative dynamics.

The test is made on the dynamics themselves, not on what the model file claims. A small
coupled test network of the model (symmetric coupling) is built, and its Jacobian
``J = ∂F/∂s`` is taken with autograd at sampled states. The dynamics are

- **gradient** when ``F = -(1/τ) Q ∇E`` with a constant diagonal ``Q > 0``: then ``Q⁻¹J``
  is symmetric at every state (``J = -(1/τ) Q H``, ``H`` the Hessian of ``E``);
- **skew-gradient** when the same holds with a ``Q`` of mixed signs (FitzHugh-Nagumo:
  ``Q = diag(1, -ε)``, descent in the activator and ascent in the inhibitor);
- **general** (non-conservative) when no constant diagonal ``D = Q⁻¹`` makes ``DJ``
  symmetric at all sampled states; the size of the non-reciprocal part is reported as
  ``‖A‖/‖DJ‖`` with ``A = (DJ - (DJ)ᵀ)/2`` for the best ``D`` (least squares).

``D`` is one number per state variable, shared by every unit; it solves the homogeneous
system ``D_i J_ij - D_j J_ji = 0`` over all pairs and all sampled states (smallest right
singular vector). When the model declares an energy, ``τF = -Q∇E`` is also checked with
autograd on the same states (``Network.energy``), so a file whose energy string does not
generate its equations is flagged even if its Jacobian is symmetric.

The class decides which rules are exact (:data:`EXACT_RULES`). With a parameter grid the
report adds fixed-point stability (:func:`neuroeq.stability.stability_scan`): whether an
isolated unit and a small coupled net settle, and the eigenvalues of ``J`` at the fixed
point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import sympy
import torch
import xarray as xr

from neuroeq.errors import ModelError
from neuroeq.expressions import parse_expression
from neuroeq.network import Network
from neuroeq.neuron_model import NeuronModel, load_model
from neuroeq.rules import RULES
from neuroeq.rules.oracles import jacobian
from neuroeq.stability import stability_lines, stability_scan

#: Rules exact for each class (symmetric coupling), with the condition, for the report:
#: read off the rules' ``exact_in`` (in the order of :data:`neuroeq.rules.RULES`).
EXACT_RULES: dict[str, list[tuple[str, str]]] = {
    kind: [(name, dict(rule.exact_in)[kind]) for name, rule in RULES.items()
           if kind in dict(rule.exact_in)]
    for kind in ("gradient", "skew_gradient", "general")}
#: Rules that are biased for each class (and why), for the report.
BIASED_RULES: dict[str, str] = {
    "gradient": "vf is exact here too (J = -QH with H symmetric); finite_nudge/path_integral "
                "need Q = 1 (the Gibbs law the sampler draws); with asymmetric or feedforward "
                "coupling every model becomes non-conservative: use asym or dyadic",
    "skew_gradient": "finite_nudge/path_integral need a Gibbs distribution (gradient "
                     "dynamics); asymmetric coupling: use asym or dyadic",
    "general": "ep, centered and vf are biased by the non-reciprocal part of J; "
               "finite_nudge/path_integral and holomorphic need an energy",
    "piecewise_gradient": "ep and centered are exact only because rho' is 0 or 1 (a smooth "
                          "rate makes them biased); vf is biased; finite_nudge/path_integral "
                          "and holomorphic need an energy",
}
#: Exact rules added for a general model whose symmetriser is ``diag ρ'(u)``, ρ' ∈ {0, 1}.
PIECEWISE_GRADIENT_RULES = [(name, dict(rule.exact_in)["piecewise_gradient"])
                            for name, rule in RULES.items()
                            if "piecewise_gradient" in dict(rule.exact_in)]
_NON_ANALYTIC = {"clip", "int", "int_", "Abs", "sign", "floor", "ceil", "Max", "Min",
                 "Heaviside", "Piecewise"}
SYMMETRY_TOL = 1e-8
ENERGY_TOL = 1e-8


@dataclass
class Classification:
    """What :func:`classify` found for one model.

    ``found``: ``gradient``, ``skew_gradient`` or ``general``; ``Q``: the inferred diagonal
    per state variable (``None`` for general models); ``nonreciprocity``: mean
    ``‖A‖/‖DJ‖`` over sampled states for the best diagonal ``D`` (0 for conservative
    dynamics); ``raw_asymmetry``: the same for ``J`` itself; ``energy_residual``: max
    ``|τF + Q∇E| / max|τF|`` over the sampled states (``None`` without a declared energy);
    ``problems``: every disagreement between the file and the dynamics (empty: consistent);
    ``piecewise_gradient``: a general one-variable model whose state-dependent symmetriser
    ``diag ρ'(u)`` is a projection (``ρ' ∈ {0, 1}``, a piecewise-linear rate such as
    ``clip``) and makes ``J`` symmetric at every sampled state: the units off their linear
    range are slaved to the others, which follow gradient dynamics, so classic and centered
    EP are exact as ``β → 0``.
    """

    model: str
    declared: str
    found: str
    Q: dict[str, float] | None
    declared_q: dict[str, float]
    nonreciprocity: float
    raw_asymmetry: float
    energy: str | None
    energy_residual: float | None
    holomorphic: bool
    non_analytic: list[str]
    exact_rules: list[tuple[str, str]]
    problems: list[str] = field(default_factory=list)
    stability: xr.Dataset | None = None
    piecewise_gradient: bool = False

    @property
    def consistent(self) -> bool:
        return not self.problems

    def report(self) -> str:
        """A readable multi-line report (what ``neuroeq classify`` prints)."""
        lines = [f"model {self.model}: declared {self.declared}, found {self.found}"]
        if self.Q is not None:
            q_text = ", ".join(f"{k} = {v:.6g}" for k, v in self.Q.items())
            lines.append(f"  Q (F = -(1/tau) Q grad E): diag({q_text})")
        lines.append(f"  non-reciprocal part |A|/|DJ|: {self.nonreciprocity:.3g} "
                     f"(raw |J - J^T|/2|J|: {self.raw_asymmetry:.3g})")
        if self.energy is not None:
            lines.append(f"  energy E = {self.energy} + coupling: tau F = -Q grad E to "
                         f"{self.energy_residual:.2g} (relative)")
        else:
            lines.append("  energy: none declared")
        lines.append("  holomorphic (analytic) dynamics: " + (
            "yes" if self.holomorphic else f"no (non-analytic: {', '.join(self.non_analytic)})"))
        lines.append("  exact rules (symmetric coupling):")
        for rule, condition in self.exact_rules:
            lines.append(f"    {rule:<14} {condition}")
        if self.piecewise_gradient:
            lines.append("  diag rho'(u) J is symmetric at every sampled state (rho' is 0 or 1):")
            lines.append("    gradient dynamics on the units inside the rate's linear range")
        note = "piecewise_gradient" if self.piecewise_gradient else self.found
        lines.append(f"  note: {BIASED_RULES[note]}")
        if self.stability is not None:
            lines += stability_lines(self.stability)
        if self.problems:
            lines.append("  MISMATCH between the model file and its dynamics:")
            lines += [f"    - {problem}" for problem in self.problems]
        else:
            lines.append("  the model file's claims agree with its dynamics")
        return "\n".join(lines)


def classify(model: NeuronModel | str, *, grid: Mapping[str, Sequence[float]] | None = None,
             sizes: Sequence[int] = (3, 4, 3), n_states: int = 8, seed: int = 0,
             stability_sizes: Sequence[int] = (4, 6, 3), stability_batch: int = 4,
             max_steps: int | None = None) -> Classification:
    """Classify ``model`` (a :class:`NeuronModel`, name or path); see the module docstring.

    ``grid`` (e.g. ``{"b": [0.3, 0.5], "eps": [1, 6]}``, at most two parameters) adds the
    fixed-point stability scan; ``max_steps`` caps its relaxations (default: the model's).
    """
    model = load_model(model) if not isinstance(model, NeuronModel) else model
    network = Network(model, sizes, coupling="symmetric", seed=seed)
    states, x = _sample_states(network, n_states, seed)
    J = jacobian(network, states, x).detach() * network.tau  # (K, N, N), units of 1/τ
    if not bool(torch.isfinite(J).all()):
        raise ModelError(f"model {model.name!r}: its dynamics are not finite at ordinary "
                         "states (the Jacobian holds inf or NaN: a parameter or a power "
                         "that overflows?)")
    variables = network.compiled.variables
    index_variable = [next(b.variable for b in network.blocks if b.start <= i < b.stop)
                      for i in range(network.state_size)]
    d, nonreciprocity = _symmetrizer(J, index_variable, variables, model.coupled_variable)
    raw = _relative_asymmetry(J)
    problems: list[str] = []
    if d is not None and nonreciprocity < SYMMETRY_TOL:
        Q = {v: 1.0 / d[v] for v in variables}
        found = "gradient" if all(q > 0 for q in Q.values()) else "skew_gradient"
    else:
        Q, found = None, "general"
    declared_q = model.q_values() if model.structural_class != "general" else {}
    energy_residual = None
    if model.energy_code is not None:
        q_for_energy = Q if Q is not None else declared_q or {v: 1.0 for v in variables}
        energy_residual = _energy_residual(network, states, x, q_for_energy)
    if model.structural_class != found:
        problems.append(_class_problem(model.structural_class, found, nonreciprocity, Q))
    elif found != "general":
        mismatch = {v: (declared_q[v], Q[v]) for v in variables
                    if not math.isclose(declared_q[v], Q[v], rel_tol=1e-6, abs_tol=1e-9)}
        if mismatch:
            problems.append("declared Q " + ", ".join(
                f"{v} = {a:g}" for v, (a, _) in mismatch.items()) + " but the dynamics need "
                + ", ".join(f"{v} = {b:.6g}" for v, (_, b) in mismatch.items())
                + "; fix the [Q] table")
    if energy_residual is not None and found != "general" and energy_residual > ENERGY_TOL:
        problems.append(f"the declared energy does not generate the dynamics: tau F differs "
                        f"from -Q grad E by {energy_residual:.3g} (relative); fix 'energy' "
                        "(per-unit part only: the engine adds -rho^T W rho - bias rho)")
    piecewise = (found == "general" and _projection_symmetrised(network, states, J)
                 and _coupled_with_unit_gain(network, states, x))
    non_analytic = non_analytic_functions(model)
    stability = None
    if grid:
        stability = stability_scan(model, grid, sizes=stability_sizes, batch=stability_batch,
                                   seed=seed, max_steps=max_steps)
    return Classification(
        model=model.name, declared=model.structural_class, found=found, Q=Q,
        declared_q=declared_q, nonreciprocity=nonreciprocity, raw_asymmetry=raw,
        energy=model.energy_code, energy_residual=energy_residual,
        holomorphic=not non_analytic, non_analytic=non_analytic,
        exact_rules=(PIECEWISE_GRADIENT_RULES if piecewise else []) + [
            r for r in EXACT_RULES[found]  # the Gibbs rules sample the law drawn for Q = 1
            if not (RULES[r[0]].needs_analytic_dynamics and non_analytic)
            and (not RULES[r[0]].samples_gibbs or _unit_q(Q))],
        problems=problems, stability=stability, piecewise_gradient=piecewise)


def _class_problem(declared: str, found: str, nonreciprocity: float,
                   Q: dict[str, float] | None) -> str:
    if found == "general":
        return (f"declared {declared}, but no constant diagonal Q makes Q^-1 J symmetric "
                f"(non-reciprocal part |A|/|DJ| = {nonreciprocity:.3g}); declare "
                "structural_class = \"general\" and use asym or dyadic")
    q_text = ", ".join(f"{k} = {v:.6g}" for k, v in (Q or {}).items())
    return (f"declared {declared}, but the dynamics are {found} with Q = diag({q_text}); "
            f"declare structural_class = \"{found}\"")


def _sample_states(network: Network, n_states: int, seed: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """States spread over each variable's range (inside its bounds) and random inputs."""
    generator = torch.Generator().manual_seed(seed + 4242)
    states = torch.empty(n_states, network.state_size, dtype=network.dtype)
    for block in network.blocks:
        low, high = network.compiled.bounds.get(block.variable, (None, None))
        if low is None:
            centre = network.model.initial[block.variable]
            low, high = centre - 2.5, centre + 2.5
        margin = 0.01 * (high - low)
        width = block.stop - block.start
        states[:, block.start:block.stop] = low + margin + (high - low - 2 * margin) * torch.rand(
            n_states, width, generator=generator, dtype=network.dtype)
    x = torch.rand(n_states, network.sizes[0], generator=generator, dtype=network.dtype)
    return states, x


def _symmetrizer(J: torch.Tensor, index_variable: list[str], variables: Sequence[str],
                 coupled: str) -> tuple[dict[str, float] | None, float]:
    """Best constant diagonal ``D`` (one value per variable, ``D[coupled] = 1``) with
    ``DJ`` symmetric, and the remaining ``mean ‖A‖/‖DJ‖``; ``D = None`` if it has zeros."""
    position = {v: k for k, v in enumerate(variables)}
    n = J.shape[-1]
    rows = []
    upper = torch.triu_indices(n, n, offset=1)
    for k in range(J.shape[0]):
        scale = J[k].abs().max().clamp_min(1e-300)
        for i, j in zip(upper[0].tolist(), upper[1].tolist(), strict=True):
            if J[k, i, j] == 0 and J[k, j, i] == 0:
                continue
            row = np.zeros(len(variables))
            row[position[index_variable[i]]] += float(J[k, i, j] / scale)
            row[position[index_variable[j]]] -= float(J[k, j, i] / scale)
            rows.append(row)
    if not rows:
        return {v: 1.0 for v in variables}, 0.0
    _, _, vh = np.linalg.svd(np.asarray(rows))
    vector = vh[-1]
    reference = vector[position[coupled]]
    if abs(reference) < 1e-12 * np.abs(vector).max():
        return None, _relative_asymmetry(J)
    vector = vector / reference
    D = torch.tensor([vector[position[v]] for v in index_variable], dtype=J.dtype)
    nonreciprocity = _relative_asymmetry(D[:, None] * J)
    if np.abs(vector).min() < 1e-10:
        return None, max(nonreciprocity, 1.0)
    return {v: float(vector[position[v]]) for v in variables}, nonreciprocity


def _projection_symmetrised(network: Network, states: torch.Tensor, J: torch.Tensor) -> bool:
    """Whether ``diag ρ'(s) J`` is symmetric at every sampled state with ``ρ' ∈ {0, 1}``
    (one-variable models: ``ds/dt = -s + Wρ(s) + b`` with a piecewise-linear rate)."""
    if len(network.compiled.variables) != 1:
        return False
    slope = network.compiled.rho_prime(states)
    if not bool(((slope == 0) | (slope == 1)).all()) or not bool((slope == 1).any()):
        return False
    return _relative_asymmetry(slope[:, :, None] * J) < SYMMETRY_TOL


def _unit_q(Q: Mapping[str, float] | None) -> bool:
    return Q is not None and all(math.isclose(q, 1.0, rel_tol=1e-9) for q in Q.values())


def _coupled_with_unit_gain(network: Network, states: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether ``τ ∂F/∂I_syn = τ ∂F/∂bias = 1`` on every unit with ``ρ' = 1``, as in the
    energy EP contrasts (``-ρᵀWρ - bρ`` beside ``½s²``): a symmetric ``diag ρ' J`` with
    another gain (``ds/dt = -s + ½I_syn + b``) still biases ``ep`` and ``centered``."""
    params = network.dynamics_parameters()
    drive = network.drive(x)
    with torch.no_grad():
        base = network.velocity(states, drive) * network.tau
        active = network.compiled.rho_prime(states) == 1
        for layer in range(1, network.n_layers + 1):
            block = network.block(layer)
            units = slice(block.start, block.stop)
            bias = {**params, f"b{layer}": params[f"b{layer}"] + 1e-3}
            changes = [network.velocity(states, drive, bias)]
            if layer in drive:  # the layers the input feeds: their I_syn, pushed
                changes.append(network.velocity(states, {**drive, layer: drive[layer] + 1e-3},
                                                params))
            for changed in changes:
                gain = (changed * network.tau - base)[..., units] / 1e-3
                mask = active[..., units]
                if bool(mask.any()) and not torch.allclose(gain[mask], torch.ones_like(
                        gain[mask]), rtol=1e-4, atol=1e-6):
                    return False
    return True


def _relative_asymmetry(J: torch.Tensor) -> float:
    """Mean over samples of ``‖(J - Jᵀ)/2‖_F / ‖J‖_F``."""
    antisymmetric = 0.5 * (J - J.transpose(-1, -2))
    norms = torch.linalg.matrix_norm(J).clamp_min(1e-300)
    return float((torch.linalg.matrix_norm(antisymmetric) / norms).mean())


def _energy_residual(network: Network, states: torch.Tensor, x: torch.Tensor,
                     Q: Mapping[str, float]) -> float:
    """``max|τF + Q∇E| / max|τF|`` over the sampled states."""
    q = torch.cat([torch.full((b.stop - b.start,), Q[b.variable], dtype=states.dtype)
                   for b in network.blocks])
    with torch.enable_grad():
        s = states.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(network.energy(s, x).sum(), s)
    with torch.no_grad():
        velocity = network.velocity(states, network.drive(x)) * network.tau
    scale = float(velocity.abs().max().clamp_min(1e-300))
    return float((velocity + q * grad).abs().max()) / scale


def non_analytic_functions(model: NeuronModel) -> list[str]:
    """Names of non-analytic functions in the model's expressions (empty: holomorphic)."""
    codes = [eq.code for eq in model.state] + [model.rho_code, model.rho_prime_code]
    codes += [code for pair in model.channels.values() for code in pair]
    if model.energy_code:
        codes.append(model.energy_code)
    found: set[str] = set()
    for code in codes:
        expr = parse_expression(code, f"model {model.name!r}")
        for node in sympy.preorder_traversal(expr):
            name = getattr(node.func, "__name__", "")
            if isinstance(node, (sympy.core.relational.Relational,
                                 sympy.logic.boolalg.BooleanFunction)):
                found.add("comparison")
            elif name in _NON_ANALYTIC:
                found.add(name)
    return sorted(found)


__all__ = ["BIASED_RULES", "Classification", "EXACT_RULES", "classify"]
