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

#: Every rule and oracle by its CLI name (``cls.name``); what each needs is in its class
#: attributes (:class:`GradientEstimator`). Notes: ``beta`` is the radius ``r`` of the
#: complex nudges for holomorphic EP and the loss weight (<= 1) of the Gibbs objective
#: ``(A(beta) - A(0))/beta`` for the noisy-network rules; stochastic EP needs the spiking
#: engine (:class:`neuroeq.engines.brian2_spiking.SpikingEngine`).
RULES: dict[str, type[GradientEstimator]] = {rule.name: rule for rule in (
    ClassicEP, CenteredEP, SkewGradientEP, CenteredSkewGradientEP, VectorFieldEP, AsymEP,
    DyadicEP, HolomorphicEP, FiniteNudgeEP, PathIntegralEP, StochasticEP,
    ImplicitDifferentiation, BPTT, FiniteDifferences)}
#: CLI names of the rules that take a nudge strength ``beta``.
NUDGED_RULES: dict[str, type[GradientEstimator]] = {
    name: rule for name, rule in RULES.items() if rule.takes_beta}
#: CLI names of the oracles (no ``beta``).
ORACLES: dict[str, type[GradientEstimator]] = {
    name: rule for name, rule in RULES.items() if not rule.takes_beta}
RULE_NAMES = tuple(RULES)


def make_rule(name: str, *, beta: float = 1e-3,
              engine: Engine | None = None,
              model_class: str | None = None, **options: Any) -> GradientEstimator:
    """Build a rule from its CLI name. For skew-gradient models ``ep``/``centered`` mean
    skew-gradient EP."""
    rule = rule_for_model(name, model_class)
    _check_options(rule.name, rule, options)
    if rule.takes_beta:
        return rule(beta=beta, engine=engine, **options)
    return rule(engine=engine, **options)


def rule_for_model(name: str, model_class: str | None = None) -> type[GradientEstimator]:
    """The rule class :func:`make_rule` builds for ``name`` on a model of structural class
    ``model_class``: for skew-gradient models ``ep``/``centered`` mean ``skew_ep`` /
    ``skew_centered``."""
    if model_class == "skew_gradient" and name in ("ep", "centered"):
        name = {"ep": "skew_ep", "centered": "skew_centered"}[name]
    return rule_class(name)


def rule_class(name: str) -> type[GradientEstimator]:
    """The rule (or oracle) class of a CLI name; an unknown name is a :class:`ConfigError`
    that suggests the closest known one."""
    found = RULES.get(name)
    if found is None:
        raise ConfigError(f"unknown rule {name!r}{did_you_mean(name, RULE_NAMES)}; known: "
                          f"{', '.join(RULE_NAMES)}")
    return found


def rule_options(rule: type[GradientEstimator] | str) -> list[str]:
    """The keyword options a rule's constructor takes (a rule class or its CLI name), with
    those it passes on to its parent class (``**options``)."""
    return list(rule_option_defaults(rule))


def rule_option_defaults(rule: type[GradientEstimator] | str) -> dict[str, Any]:
    """Each keyword option of a rule's constructor with its default (``None`` where the
    option has none), in signature order, parents' ``**options`` included."""
    if isinstance(rule, str):
        rule = rule_class(rule)
    defaults: dict[str, Any] = {}
    for cls in rule.__mro__:
        init = cls.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        for p in parameters:
            if p.name != "self" and p.name not in defaults \
                    and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                defaults[p.name] = None if p.default is p.empty else p.default
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return defaults


def rules_with_option(option: str) -> tuple[str, ...]:
    """The CLI names of the rules whose constructor takes ``option``."""
    return tuple(name for name, rule in RULES.items() if option in rule_options(rule))


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
    "NUDGED_RULES", "ORACLES", "RULES", "RULE_NAMES", "SkewGradientEP", "VectorFieldEP",
    "make_rule", "rule_class", "rule_for_model", "rule_option_defaults", "rule_options",
    "rules_with_option", "write_gradients",
]
