"""Gradient estimators behind one interface: EP variants, baselines and oracles."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from neuroeq.checks import did_you_mean
from neuroeq.errors import ConfigError
from neuroeq.rules.asym_ep import AsymEP
from neuroeq.rules.base import Estimate, GradientEstimator, write_gradients
from neuroeq.rules.dyadic_ep import DyadicEP
from neuroeq.rules.ep import CenteredEP, CenteredSkewGradientEP, ClassicEP, SkewGradientEP
from neuroeq.rules.finite_nudge import FiniteNudgeEP, PathIntegralEP, SampledEstimate
from neuroeq.rules.holomorphic import HolomorphicEP
from neuroeq.rules.oracles import BPTT, FiniteDifferences, ImplicitDifferentiation
from neuroeq.rules.stochastic_ep import StochasticEP
from neuroeq.rules.vector_field import VectorFieldEP

if TYPE_CHECKING:
    from neuroeq.engines import Engine

#: CLI names of the rules that take a nudge strength ``beta``.
NUDGED_RULES: dict[str, type[GradientEstimator]] = {
    "ep": ClassicEP, "centered": CenteredEP, "vf": VectorFieldEP, "asym": AsymEP,
    "dyadic": DyadicEP, "skew_ep": SkewGradientEP, "skew_centered": CenteredSkewGradientEP,
    # beta is the radius r of the complex nudges for holomorphic EP, and the nudge (<= 1) of
    # the Gibbs objective (A(beta) - A(0))/beta for the noisy-network rules
    "holomorphic": HolomorphicEP, "finite_nudge": FiniteNudgeEP, "path_integral": PathIntegralEP,
    # stochastic EP needs the spiking engine (neuroeq.engines.brian2_spiking.SpikingEngine)
    "stoch_ep": StochasticEP,
}
#: CLI names of the oracles (no ``beta``).
ORACLES: dict[str, type[GradientEstimator]] = {
    "implicit": ImplicitDifferentiation, "bptt": BPTT, "fd": FiniteDifferences,
}
RULE_NAMES = tuple(NUDGED_RULES) + tuple(ORACLES)


def make_rule(name: str, *, beta: float = 1e-3,
              engine: Engine | None = None,
              model_class: str | None = None, **options: Any) -> GradientEstimator:
    """Build a rule from its CLI name. For skew-gradient models ``ep``/``centered`` mean
    skew-gradient EP."""
    if model_class == "skew_gradient" and name in ("ep", "centered"):
        name = {"ep": "skew_ep", "centered": "skew_centered"}[name]
    rule = rule_class(name)
    _check_options(name, rule, options)
    if name in NUDGED_RULES:
        return rule(beta=beta, engine=engine, **options)
    return rule(engine=engine, **options)


def rule_class(name: str) -> type[GradientEstimator]:
    """The rule (or oracle) class of a CLI name; an unknown name is a :class:`ConfigError`
    that suggests the closest known one."""
    found = NUDGED_RULES.get(name) or ORACLES.get(name)
    if found is None:
        raise ConfigError(f"unknown rule {name!r}{did_you_mean(name, RULE_NAMES)}; known: "
                          f"{', '.join(RULE_NAMES)}")
    return found


def rule_options(rule: type[GradientEstimator] | str) -> list[str]:
    """The keyword options a rule's constructor takes (a rule class or its CLI name), with
    those it passes on to its parent class (``**options``)."""
    if isinstance(rule, str):
        rule = rule_class(rule)
    names: list[str] = []
    for cls in rule.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.name not in names
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


def _check_options(name: str, rule: type[GradientEstimator], options: dict) -> None:
    known = rule_options(rule)
    unknown = [key for key in options if key not in known]
    if unknown:
        raise ConfigError(f"rule {name!r} has no option {unknown[0]!r}; its options: "
                          f"{', '.join(known)}")


__all__ = [
    "AsymEP", "BPTT", "CenteredEP", "CenteredSkewGradientEP", "ClassicEP", "DyadicEP",
    "Estimate", "FiniteDifferences", "FiniteNudgeEP", "HolomorphicEP", "PathIntegralEP",
    "SampledEstimate", "GradientEstimator", "ImplicitDifferentiation", "StochasticEP",
    "NUDGED_RULES", "ORACLES", "RULE_NAMES", "SkewGradientEP", "VectorFieldEP", "make_rule",
    "rule_class", "rule_options", "write_gradients",
]
