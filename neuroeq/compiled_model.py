"""A :class:`~neuroeq.neuron_model.NeuronModel` compiled to torch closures (closed form).

The per-neuron right-hand sides ``d<var>/dt``, ``ρ`` and ``ρ'`` become functions of
tensors; no autograd is involved when they are evaluated.
"""

from __future__ import annotations

import torch

from neuroeq.expressions import compile_expression, compile_expressions, parse_expression
from neuroeq.neuron_model import NeuronModel


class CompiledModel:
    """Torch evaluation of one neuron model's equations (SI parameter values)."""

    def __init__(self, model: NeuronModel):
        self.model = model
        where = f"model {model.name!r}" + (f" ({model.source})" if model.source else "")
        self.variables = model.state_variables
        self.coupled = model.coupled_variable
        self.rhs = {eq.variable: compile_expression(eq.expr, f"{where}: d{eq.variable}/dt")
                    for eq in model.state}
        rho = parse_expression(model.rho_code, f"{where}: rho")
        rho_prime = parse_expression(model.rho_prime_code, f"{where}: rho_prime")
        self._rho = compile_expression(rho, f"{where}: rho")
        self._rho_prime = compile_expression(rho_prime, f"{where}: rho_prime")
        self._rho_and_prime = compile_expressions({"rho": rho, "rho_prime": rho_prime},
                                                  f"{where}: rho, rho_prime")
        self.channels = {
            name: tuple(compile_expression(parse_expression(code, f"{where}: channels.{name}"),
                                           f"{where}: channels.{name}") for code in pair)
            for name, pair in model.channels.items()}
        self.parameters = dict(model.parameters)
        self.tau = model.tau
        self.bounds = dict(model.bounds)
        if model.energy_code is not None:
            self._energy = compile_expression(parse_expression(model.energy_code, where), where)
        else:
            self._energy = None

    def rho(self, coupled: torch.Tensor) -> torch.Tensor:
        """``ρ(s)`` of the coupled variable, elementwise."""
        return _like(self._rho({**self.parameters, self.coupled: coupled}), coupled)

    def rho_prime(self, coupled: torch.Tensor) -> torch.Tensor:
        """``ρ'(s)`` of the coupled variable, elementwise."""
        return _like(self._rho_prime({**self.parameters, self.coupled: coupled}), coupled)

    def rho_and_prime(self, coupled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ρ(s), ρ'(s))`` in one pass, their common subexpressions computed once."""
        values = self._rho_and_prime({**self.parameters, self.coupled: coupled})
        return _like(values["rho"], coupled), _like(values["rho_prime"], coupled)

    def channel_rho(self, name: str, coupled: torch.Tensor) -> torch.Tensor:
        """``ρ_NAME(s)`` of an extra coupling channel (``[channels.NAME]``), elementwise."""
        return _like(self.channels[name][0]({**self.parameters, self.coupled: coupled}), coupled)

    def velocity(self, variables: dict[str, torch.Tensor], I_syn: torch.Tensor,
                 bias: torch.Tensor, rho: torch.Tensor, rho_prime: torch.Tensor,
                 channel_inputs: dict[str, torch.Tensor] | None = None
                 ) -> dict[str, torch.Tensor]:
        """``d<var>/dt`` for every state variable of one layer, shape ``(..., batch, n)``.

        ``channel_inputs`` maps ``I_syn_NAME`` to the input of each extra channel.
        """
        env = {**self.parameters, **variables, "I_syn": I_syn, "bias": bias, "rho": rho,
               "rho_prime": rho_prime, **(channel_inputs or {})}
        reference = variables[self.coupled]
        return {name: _like(f(env), reference) for name, f in self.rhs.items()}

    def unit_energy(self, variables: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's per-neuron energy term (without coupling), elementwise."""
        if self._energy is None:
            raise ValueError(f"model {self.model.name!r} declares no energy")
        reference = variables[self.coupled]
        return _like(self._energy({**self.parameters, **variables}), reference)


def _like(value: torch.Tensor | float, reference: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if value.dtype != reference.dtype:
            value = value.to(reference.dtype)
        if value.shape != reference.shape:
            value = value.expand(torch.broadcast_shapes(value.shape, reference.shape))
        return value
    return torch.full_like(reference, float(value))
