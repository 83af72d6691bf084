"""The stability check's layer sweep on symmetric affine networks: it contracts exactly
where the flow's Jacobian is negative definite (Householder-John), on the units inside the
bounds, and it is only taken where that theorem applies."""

import pytest
import torch

from neuroeq import Network, TorchEngine
from neuroeq.engines import fast_step
from neuroeq.neuron_model import model_from_dict
from tests.conftest import make_problem


def coupling_matrix(network: Network) -> torch.Tensor:
    """The dense recurrent matrix ``M`` (one variable per layer), ``M[post, pre]``."""
    params = network.dynamics_parameters()
    matrix = torch.zeros(network.state_size, network.state_size, dtype=torch.float64)
    for edge in network.edges:
        if edge.pre != 0:
            post, pre = network.block(edge.post), network.block(edge.pre)
            matrix[post.start:post.stop, pre.start:pre.stop] += \
                network.matrix(edge, params).detach()
    return matrix


def layers_of_units(network: Network) -> torch.Tensor:
    layer = torch.empty(network.state_size, dtype=torch.long)
    for l in range(1, network.n_layers + 1):
        block = network.block(l)
        layer[block.start:block.stop] = l
    return layer


def planted_fixed_points(network: Network, free: torch.Tensor, generator: torch.Generator
                         ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """States ``s*`` (one per row of ``free``) and drives that make each an exact fixed point
    of the Hopfield map: free units at values inside ``(0, 1)``, the others at 0 or 1 with
    an input that pushes them outward (``s = clip(M s + drive + b)``)."""
    matrix = coupling_matrix(network)
    samples, width = free.shape
    inside = 0.2 + 0.6 * torch.rand(samples, width, generator=generator, dtype=torch.float64)
    edge = (torch.rand(samples, width, generator=generator) < 0.5).to(torch.float64)
    state = torch.where(free, inside, edge)
    target = torch.where(free, state, torch.where(edge > 0, 1.5, -0.5))  # I on clipped units
    bias = torch.cat([network.biases[f"b{l}"].detach() for l in range(1, network.n_layers + 1)])
    current = target - state @ matrix.T - bias
    drive = {l: current[:, network.block(l).start:network.block(l).stop]
             for l in range(1, network.n_layers + 1)}
    return state, drive


def check(network, step, point):
    engine = TorchEngine(solver="gauss_seidel", stability_iterations=200)
    project = network.project if network.compiled.bounds else None
    return engine._unstable(network, step, point, point.shape, project, str)


@pytest.mark.parametrize("gain", [0.5, 0.95, 1.2, 3.0])
def test_the_sweep_is_stable_exactly_where_the_flow_is(gain):
    """Hopfield 4-9-7-5 with a skip edge (its spectrum is not symmetric about 0), at planted
    fixed points with some units clipped: a sample is reported iff ``M`` restricted to its
    free units has an eigenvalue above 1 (``J = (M - 1)/τ`` there), with the sweep's
    growth equal to the spectral radius of its Gauss-Seidel iteration matrix."""
    network = Network("hopfield", (4, 9, 7, 5), seed=3, gain=gain, skip=True,
                      dtype=torch.float64)
    generator = torch.Generator().manual_seed(7)
    free = torch.rand(12, network.state_size, generator=generator) < 0.7
    point, drive = planted_fixed_points(network, free, generator)
    with torch.no_grad():
        step = fast_step.EulerMap(network, network.tau / 2, drive)
        torch.testing.assert_close(step(point), point, rtol=0, atol=1e-12)
        sweep = fast_step.certifying_sweep(step)
        assert sweep is not None and sweep.dt == pytest.approx(network.tau)
        unstable, evaluations = check(network, step, point)
    matrix = coupling_matrix(network)
    lower = layers_of_units(network)[:, None] > layers_of_units(network)[None, :]
    expected, radius = [], []
    for sample in range(len(point)):
        units = free[sample].nonzero().squeeze(1)
        block = matrix[units][:, units]
        if float(torch.linalg.eigvalsh(block).max()) > 1.0:
            expected.append(sample)
        low = torch.where(lower[units][:, units], block, 0.0)
        iteration = torch.linalg.solve(torch.eye(len(units), dtype=torch.float64) - low,
                                       block - low)
        radius.append(float(torch.linalg.eigvals(iteration).abs().max()))
    if not expected:
        assert unstable is None and evaluations < 60
        return
    assert unstable is not None
    failure, _, mask = unstable
    assert mask.nonzero().flatten().tolist() == expected
    assert failure.samples == expected and "layer sweep" in str(failure)
    assert failure.residual == pytest.approx(max(radius), rel=1e-3)


def test_a_frustrated_triangle_is_stable_although_plain_sweeps_of_it_grow():
    """Three one-unit layers coupled pairwise by -0.8 (a skip edge closes the triangle):
    ``M`` has the eigenvalues -1.6, 0.8, 0.8, so the flow (``J = (M - 1)/τ``) is stable
    while Jacobi updates at ``h = τ`` (the Euler map at ``dt = τ``) grow by 1.6 per step.
    The Gauss-Seidel sweep contracts, as the theorem says, and the check passes it; the
    check of the Euler map at ``dt = τ`` reports it (the integrator, not the flow)."""
    network = Network("hopfield", (1, 1, 1, 1), skip=True, dtype=torch.float64)
    with torch.no_grad():
        for name in ("W2", "W3", "S3"):
            network.weights[name].fill_(-0.8)
        matrix = coupling_matrix(network)
    spectrum = torch.linalg.eigvalsh(matrix)
    torch.testing.assert_close(spectrum, torch.tensor([-1.6, 0.8, 0.8], dtype=torch.float64))
    point = torch.full((2, 3), 0.5, dtype=torch.float64)
    bias = torch.cat([network.biases[f"b{l}"] for l in (1, 2, 3)]).detach()
    current = point - point @ matrix.T - bias
    drive = {l: current[:, l - 1:l] for l in (1, 2, 3)}
    with torch.no_grad():
        half = fast_step.EulerMap(network, network.tau / 2, drive)
        whole = fast_step.EulerMap(network, network.tau, drive)
        torch.testing.assert_close(half(point), point, rtol=0, atol=1e-12)
        unstable, _ = check(network, half, point)
        assert unstable is None
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(fast_step, "certifying_sweep", lambda step: None)
            jacobi, _ = check(network, whole, point)
    assert jacobi is not None and jacobi[0].residual == pytest.approx(1.6, rel=1e-3)


def test_the_linear_network_unbounded_agrees_with_its_spectrum():
    """The linear neuron (no bounds, ``ρ = s``): at its fixed point ``(1 - M)⁻¹(drive + b)``
    the check takes the sweep, passes a stable net in a few products and reports a
    saddle of a strong one (every sample: ``J`` does not depend on the state)."""
    for gain, unstable_expected in ((0.6, False), (3.0, True)):
        network, (x, _) = make_problem("linear", (6, 8, 5), batch=3, gain=gain)
        matrix = coupling_matrix(network)
        with torch.no_grad():
            drive = network.drive(x)
            step = fast_step.EulerMap(network, network.tau / 2, drive)
            bias = torch.cat([network.biases["b1"], network.biases["b2"]]).detach()
            current = torch.cat([drive[1], torch.zeros(3, 5, dtype=torch.float64)], -1) + bias
            point = torch.linalg.solve(torch.eye(13, dtype=torch.float64) - matrix,
                                       current.T).T
            torch.testing.assert_close(step(point), point, rtol=0, atol=1e-10)
            assert fast_step.certifying_sweep(step) is not None
            unstable, evaluations = check(network, step, point)
        assert bool(torch.linalg.eigvalsh(matrix).max() > 1) == unstable_expected
        if unstable_expected:
            assert unstable is not None and unstable[0].samples == [0, 1, 2]
        else:
            assert unstable is None and evaluations <= 15


TANH_RATE = model_from_dict({  # an affine update, but a rate whose slope varies
    "name": "tanh_rate", "structural_class": "general", "coupled_variable": "s",
    "time_constant": "tau", "equations": "ds/dt = (-s + I_syn + bias) / tau : 1",
    "rho": "tanh(s)", "rho_prime": "1 - tanh(s)**2",
    "parameters": {"tau": {"value": 1, "unit": "ms"}}})


@pytest.mark.parametrize("case", ["fhn", "hopfield_smooth", "tanh_rate", "asymmetric",
                                  "feedforward", "lateral", "nudged", "forced", "sweep"])
def test_the_sweep_is_taken_only_where_the_theorem_applies(case):
    """Not for non-affine or non-symmetric dynamics, nor a rate of varying slope (its
    ``J`` is ``M`` scaled by ``ρ'`` on one side only), lateral edges (their block would need
    its own bound), a nudge or an extra force (terms outside the closed forms), nor for a
    map that is itself a sweep; and Hopfield's plain map does take it."""
    model = {"fhn": "fhn", "hopfield_smooth": "hopfield_smooth",
             "tanh_rate": TANH_RATE}.get(case, "hopfield")
    coupling = case if case in ("asymmetric", "feedforward") else "symmetric"
    network, (x, y) = make_problem(model, (6, 8, 5), coupling, lateral=case == "lateral")
    with torch.no_grad():
        drive = network.drive(x)
        options = {"nudged": {"nudge": 0.5, "y": y},
                   "forced": {"force": lambda s: 0.1 * s},
                   "sweep": {"sweep": True}}.get(case, {})
        step = fast_step.EulerMap(network, 0.5 * network.tau, drive, **options)
        hopfield, (x, _) = make_problem("hopfield", (6, 8, 5))
        plain = fast_step.EulerMap(hopfield, 0.5 * hopfield.tau, hopfield.drive(x))
    assert fast_step.certifying_sweep(step) is None
    assert fast_step.certifying_sweep(plain) is not None


def test_gauss_seidel_on_hopfield_certifies_its_fixed_point_in_fewer_products(monkeypatch):
    """The whole relaxation: the same state and verdict as with the Euler map's check, and
    fewer evaluations (the sweep's perturbations shrink about as the square of Euler's)."""
    network, (x, _) = make_problem("hopfield", (30, 24, 24, 6), batch=8)
    engine = TorchEngine(tol=1e-9, max_steps=50_000, solver="gauss_seidel",
                         over_relaxation=2.0)
    with torch.no_grad():
        swept = engine.relax(network, x)
        monkeypatch.setattr(fast_step, "certifying_sweep", lambda step: None)
        euler = engine.relax(network, x)
    assert swept.failure is None and euler.failure is None
    assert torch.equal(swept.state, euler.state)
    assert swept.n_steps < euler.n_steps
