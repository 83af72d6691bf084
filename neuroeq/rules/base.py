"""One interface for every gradient estimator: EP variants and oracles are peers.

``rule.estimate(network, (x, y))`` returns an :class:`Estimate` whose ``grads`` are keyed
by ``network.named_parameters()`` names and, unless ``write_grad=False``, writes them into
``param.grad`` so that any ``torch.optim`` optimizer applies them. The estimated quantity
is the gradient of the batch-mean cost at the free stationary state,
``L(θ) = mean_b C(s*_b(θ))``.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch

from neuroeq.checks import whole_number, within_dtype
from neuroeq.engines.torch_engine import RelaxResult, TorchEngine
from neuroeq.errors import ConfigError, sample_list, short
from neuroeq.network import Network
from neuroeq.seeds import check_seed

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Estimate:
    """A gradient estimate with the phases that produced it.

    ``grads``: parameter name → tensor shaped like the parameter; ``loss``: batch-mean
    cost at the free state; ``free``: the free phase; ``nudged``: the other phases by
    label (``"+beta"``, ``"-beta"``, ``"dyadic"``, ...); ``diagnostics``: what a rule
    reports about its own accuracy by name (holomorphic EP's ``"aliasing"`` figure; for a
    rule run on a coupling where it is not exact, ``"not_exact"``: the reason, as warned).
    """

    grads: dict[str, torch.Tensor]
    loss: float
    free: RelaxResult | None = None
    nudged: dict[str, RelaxResult] = field(default_factory=dict)
    diagnostics: dict[str, float | str] = field(default_factory=dict)

    def flat(self, names: list[str] | None = None) -> torch.Tensor:
        """All gradients concatenated (in ``names`` order, default: sorted)."""
        names = sorted(self.grads) if names is None else names
        return torch.cat([self.grads[n].reshape(-1) for n in names])


class GradientEstimator(ABC):
    """Base class of every rule. Subclasses implement :meth:`compute`.

    The class attributes say what the rule is and needs; the protocol schema, the builders,
    the CLI and the classifier read them instead of keeping lists of rule names. ``engine``
    (an instance attribute) is the relaxation engine; one the rule cannot run on is a
    :class:`ConfigError` when the rule is made (:meth:`check_engine`).
    """

    #: the CLI and protocol name
    name: str = ""
    #: the structural classes / couplings for which the rule is exact in its limit
    exact_for: str = ""
    #: ``(structural class, condition)`` pairs: the classes of model (symmetric coupling)
    #: on which the rule is exact, and in which limit (``neuroeq classify`` reports them;
    #: ``piecewise_gradient``: a general model whose ``diag ρ'(u) J`` is symmetric with
    #: ``ρ' ∈ {0, 1}``, listed before the rules exact for any general model). A subclass
    #: that changes the estimate says its own.
    exact_in: tuple[tuple[str, str], ...] = ()
    #: the couplings to which :attr:`exact_in` is restricted, for a rule that still runs on
    #: the others as an approximate baseline: there :meth:`estimate` warns and reports it in
    #: ``Estimate.diagnostics["not_exact"]`` (:meth:`inexact_note`). ``None``: no restriction
    #: declared (the rule is exact on any coupling, refuses the couplings it cannot use, or,
    #: as vector-field EP, is the biased baseline for non-reciprocal networks by design)
    exact_couplings: tuple[str, ...] | None = None
    #: whether the rule nudges with a strength ``beta`` (the oracles do not)
    takes_beta: bool = True
    #: whether the rule samples a noisy network's Gibbs distribution (Langevin chains; its
    #: ``beta`` weighs the loss in the Gibbs objective, so ``0 < beta <= 1``)
    samples_gibbs: bool = False
    #: whether the rule estimates from spike statistics (an engine that samples them)
    uses_spike_statistics: bool = False
    #: whether the Brian2 engine runs the rule's phases (the model's own state, plus AsymEP's
    #: correction; no autograd, no extended state, no complex nudges, no sampling): a rule
    #: without it refuses a Brian2 engine (:meth:`check_engine`)
    runs_on_brian2: bool = False
    #: whether the rule needs analytic (holomorphic) dynamics
    needs_analytic_dynamics: bool = False
    #: the rule's float settings (attribute names; ``None`` values are skipped) that the
    #: network's dtype must hold, checked by :meth:`check_range`
    dtype_bounded: tuple[str, ...] = ("beta",)

    def __init__(self, engine: TorchEngine | None = None, nudged_steps: int | None = None):
        self.engine = engine if engine is not None else TorchEngine()
        self.check_engine(self.engine)
        self.nudged_steps = (None if nudged_steps is None
                             else whole_number(nudged_steps, "nudged_steps", 1))

    def check_engine(self, engine: object) -> None:
        """Refuse an engine the rule cannot run on, by what the engine declares: a ``relax``
        method (a relaxation engine at all), ``samples_statistics`` (the spiking engine:
        the rules that :attr:`uses_spike_statistics` only, and those only there) and
        ``brian2_rules_only`` (the Brian2 engine: the rules that :attr:`runs_on_brian2`).
        Called when the rule is made and by every :meth:`estimate` (``rule.engine`` may be
        replaced in between)."""
        from neuroeq.rules import RULES  # (the package imports this module)

        what = f"the {getattr(engine, 'name', '?')} engine ({type(engine).__name__})"
        if not callable(getattr(engine, "relax", None)):
            sampler = ("; it makes its own Langevin sampler from its options (temperature, "
                       "chains, ...) and starts the chains from the engine's free phase"
                       if self.samples_gibbs else "")
            raise ConfigError(f"rule {self.name!r}: engine must be a relaxation engine "
                              "(TorchEngine, Brian2Engine or SpikingEngine), got "
                              f"{type(engine).__name__}{sampler}")
        if bool(getattr(engine, "samples_statistics", False)) != self.uses_spike_statistics:
            if self.uses_spike_statistics:
                raise ConfigError(f"rule {self.name!r} estimates from spike statistics: give "
                                  f"it a SpikingEngine, not {what}")
            relaxing = "TorchEngine or Brian2Engine" if self.runs_on_brian2 else "TorchEngine"
            spiking = [name for name, rule in RULES.items() if rule.uses_spike_statistics]
            raise ConfigError(f"rule {self.name!r} needs an engine that relaxes to rest "
                              f"({relaxing}); {what} samples spike statistics, for rule "
                              f"{' or '.join(spiking)}")
        if getattr(engine, "brian2_rules_only", False) and not self.runs_on_brian2:
            runs = [name for name, rule in RULES.items() if rule.runs_on_brian2]
            raise ConfigError(f"rule {self.name!r} ({type(self).__name__}) does not run on "
                              f"{what}, which simulates the model's own state with AsymEP's "
                              "correction only (no autograd, doubled state, complex nudges, "
                              "batched parameters or sampling): give the rule a TorchEngine, "
                              f"or use a rule that runs there: {', '.join(runs)}")

    @classmethod
    def inexact_note(cls, coupling: str, model: str) -> str | None:
        """Why the rule's estimate is not the gradient on a network of ``model`` (its name)
        with ``coupling``: ``None`` where :attr:`exact_couplings` holds it. The note names
        the rule, the coupling and the rules exact there (those exact for general models
        on any coupling); :meth:`estimate` warns with it, and the protocols log it."""
        if cls.exact_couplings is None or coupling in cls.exact_couplings:
            return None
        from neuroeq.rules import RULES  # (the package imports this module)

        exact = [f"{name} ({rule.__name__})" for name, rule in RULES.items()
                 if rule.takes_beta and rule.exact_couplings is None
                 and "general" in dict(rule.exact_in)]
        return (f"rule {cls.name!r} ({cls.__name__}) is exact only with "
                f"{' or '.join(cls.exact_couplings)} coupling, and this {model} network's "
                f"coupling is {coupling!r}: its estimate is not the gradient there (it runs "
                "as an approximate baseline, biased by the non-reciprocal coupling); for the "
                f"gradient use {' or '.join(exact)}")

    def check_range(self, network: Network) -> None:
        """Refuse, before any computation, a setting beyond the range of the network's dtype
        (:attr:`dtype_bounded`; the engine's step and the nudge ``dt·β/τ`` too): an
        overflow there would crash the step or fill the states with inf and NaN."""
        for name in self.dtype_bounded:
            if (value := getattr(self, name, None)) is not None:
                within_dtype(value, name, network.dtype)
        engine_check = getattr(self.engine, "check_range", None)
        if engine_check is not None:
            engine_check(network, getattr(self, "beta", 0.0) if self.takes_beta else 0.0)

    def estimate(self, network: Network, batch: Batch, *, free: RelaxResult | None = None,
                 init: torch.Tensor | None = None, write_grad: bool = True) -> Estimate:
        """Estimate ``dL/dθ`` on ``batch = (x, y)``; optionally reuse a free phase.

        ``free``: a free phase of this network on this ``x`` at the current parameters
        (the rules reuse its state and its input currents ``RelaxResult.drive``).
        ``init`` warm-starts the free phase (persistent particles). Frozen parameters
        (``requires_grad=False``) are left out: no estimate, their ``.grad`` untouched.
        """
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            what = (f"a tensor of shape {tuple(batch.shape)}" if isinstance(batch, torch.Tensor)
                    else f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(
                        batch, (tuple, list)) else ""))
            raise ConfigError(f"the batch must be a pair (x, y) of inputs and labels or "
                              f"targets, got {what}")
        self.check_engine(self.engine)
        self.check_range(network)
        x, y = batch
        x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
        labels = not (y.is_floating_point() or y.is_complex())
        if not labels and y.dim() == 1 and x.dim() == 2 and x.shape[0] == y.shape[0]:
            raise ConfigError(f"y of shape {tuple(y.shape)} holds {y.dtype} values: class "
                              "labels must be integers (y.long()), float targets have shape "
                              "(batch, outputs)")
        if x.dim() != 2 or y.dim() != (1 if labels else 2) or x.shape[0] != y.shape[0]:
            raise ConfigError(f"batch shapes x {tuple(x.shape)} and y {tuple(y.shape)} must be "
                              "(batch, features) and (batch,) for class labels or (batch, "
                              "outputs) for float targets")
        if x.is_complex() or y.is_complex():
            raise ConfigError("x and y must be real; got complex "
                              f"{'x' if x.is_complex() else 'y'}")
        if not labels and not bool(torch.isfinite(y).all()):
            raise ConfigError(f"the targets y hold NaN or inf values in samples "
                              f"{short(sample_list(~torch.isfinite(y).all(-1)))}")
        x = network.clamped_input(x)
        # class labels become the readout's targets here, once per batch: the phases, the
        # cost and the readout gradient read them as they are (one-hot float targets pass
        # through), instead of checking and one-hot encoding the labels two to four times
        y = network.targets(y)
        if free is None:
            with torch.no_grad():
                free = self.engine.relax(network, x, init=init)
        elif free.state.dim() < 2 or free.state.shape[-2:] != (x.shape[0], network.state_size):
            raise ConfigError(f"the free phase given has states of shape "
                              f"{tuple(free.state.shape)}, not (batch {x.shape[0]}, "
                              f"{network.state_size} state variables) of this network and x: "
                              "pass the free phase of this batch")
        estimate = self.compute(network, x, y, free)
        note = self.inexact_note(network.coupling, network.model.name)
        if note is not None:  # (said once per call site by Python's default filter)
            estimate.diagnostics["not_exact"] = note
            warnings.warn(f"{note} (Estimate.diagnostics['not_exact'])", RuntimeWarning,
                          stacklevel=2)
        frozen = {name for name, param in network.named_parameters() if not param.requires_grad}
        if frozen:  # a frozen parameter is not estimated (some rules' closed forms had it)
            estimate.grads = {k: v for k, v in estimate.grads.items() if k not in frozen}
        if write_grad:
            write_gradients(network, estimate.grads)
        return estimate

    __call__ = estimate

    @abstractmethod
    def compute(self, network: Network, x: torch.Tensor, y: torch.Tensor,
                free: RelaxResult) -> Estimate:
        """The rule itself, given the free phase; ``y`` holds the readout's targets
        (:meth:`Network.targets`: one-hot rows for class labels)."""

    def describe(self) -> dict:
        return {"rule": self.name, "class": type(self).__name__}

    def random_state(self) -> dict[str, torch.Tensor]:
        """The rule's own random state (for exact resume); empty for deterministic rules."""
        return {}

    def set_random_state(self, state: dict[str, torch.Tensor]) -> None:  # noqa: B027
        """Restore what :meth:`random_state` returned (nothing for deterministic rules)."""

    def reseed(self, seed: int) -> None:
        """Restart the rule's random streams (its engine's and sampler's too) from ``seed``,
        as a new rule made with that seed starts them: :func:`~neuroeq.training.train`
        calls it with ``training.seed`` at the start of every run, so that a run does not
        depend on what the rule drew before. The default restarts what
        :meth:`random_state` reports: each generator state (a ``uint8`` tensor) becomes
        that of a generator seeded with ``seed``, each counter (an integer scalar, such as
        the spiking engine's phase count) 0; a rule whose streams are otherwise overrides
        it. Nothing for deterministic rules."""
        seed = check_seed(seed, f"rule {self.name!r}: seed")
        state = self.random_state()
        if state:
            self.set_random_state({key: _restarted(value, seed, f"rule {self.name!r}'s "
                                                   f"random state {key!r}")
                                   for key, value in state.items()})


def _restarted(value: torch.Tensor, seed: int, where: str) -> torch.Tensor:
    """A generator state (``uint8``) seeded with ``seed``, or a counter at 0."""
    if isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
        fresh = torch.Generator().manual_seed(seed).get_state()  # (states are on the CPU)
        if fresh.shape == value.shape:
            return fresh
    elif isinstance(value, torch.Tensor) and value.dim() == 0 \
            and not (value.is_floating_point() or value.is_complex()):
        return torch.zeros_like(value)
    raise TypeError(f"{where} is neither a torch generator's state nor a counter "
                    f"({type(value).__name__}): the rule must override reseed() to restart it")


def _as_tensor(value: object, name: str) -> torch.Tensor:
    """A batch part as a tensor (arrays and lists converted; anything else refused)."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ConfigError(f"batch part {name} must be a tensor or an array of numbers, got "
                          f"{type(value).__name__} ({error})") from None


def write_gradients(network: Network, grads: dict[str, torch.Tensor]) -> None:
    """Write estimates into ``param.grad`` (replacing what was there).

    An estimate the rule computed on its own becomes the gradient itself, not a copy (a copy
    of every weight matrix cost ~10 % of a 784-500-10 training step); one that shares memory
    with its parameter or with an estimate already written is copied. So after
    ``estimate()`` the returned ``Estimate.grads`` and ``param.grad`` are the same tensors
    until the optimizer's ``zero_grad()`` replaces the gradients.
    """
    taken: set[int] = set()
    for name, param in network.named_parameters():
        if name not in grads or not param.requires_grad:  # frozen: autograd leaves it too
            continue
        value = grads[name].detach().to(param.dtype)
        storage = value.untyped_storage().data_ptr()
        if storage in taken or storage == param.untyped_storage().data_ptr():
            value = value.clone()
            storage = value.untyped_storage().data_ptr()
        taken.add(storage)
        param.grad = value
