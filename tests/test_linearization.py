"""The closed-form ``J u`` / ``Jᵀ u`` equal the autograd products (torch.func)."""

import pytest
import torch

from neuroeq.linearization import EulerJacobian, Linearization, elementwise_partials
from neuroeq.rules.asym_ep import linearize_autograd
from tests.conftest import make_problem


@pytest.mark.parametrize("model", ["hopfield", "hopfield_smooth", "fhn", "spiking_rate"])
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric", "feedforward"])
def test_closed_form_products_match_autograd(model, coupling):
    network, (x, _) = make_problem(model, (12, 9, 7, 4), coupling, lateral=True, skip=True)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(4, network.state_size, generator=generator, dtype=torch.float64)
    state = network.initial_state(4) + 0.3 * noise
    u = torch.randn(state.shape, generator=generator, dtype=torch.float64)
    jvp, vjp = linearize_autograd(network, state, x)
    linear = Linearization(network, state, network.drive(x))
    scale = 1.0 / network.tau
    with torch.no_grad():
        torch.testing.assert_close(linear.jvp(u), jvp(u).detach(), rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(linear.vjp(u), vjp(u).detach(), rtol=0, atol=1e-12 * scale)
        torch.testing.assert_close(linear.velocity, network.velocity(state, network.drive(x)),
                                   rtol=0, atol=1e-12 * scale)


@pytest.mark.parametrize("model", ["hopfield_smooth", "fhn", "spiking_rate", "oscillator"])
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric", "feedforward"])
def test_euler_jacobian_is_the_derivative_of_the_euler_map(model, coupling):
    """``(I + dt·J) u`` with the folded coefficients equals autograd's ``u + dt·J u`` and the
    central difference of the closed-form Euler map itself (the stability check's map)."""
    from neuroeq.engines.fast_step import EulerMap

    network, (x, _) = make_problem(model, (12, 9, 7, 4), coupling, lateral=True, skip=True)
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(4, network.state_size, generator=generator, dtype=torch.float64)
    state = network.initial_state(4) + 0.3 * noise
    u = torch.randn(state.shape, generator=generator, dtype=torch.float64)
    dt = 0.3 * network.tau
    jvp, _ = linearize_autograd(network, state, x)
    with torch.no_grad():
        exact = EulerJacobian(Linearization(network, state, network.drive(x)), dt)
        found = exact(u, torch.full_like(u, float("nan")))  # every entry written
        torch.testing.assert_close(found, u + dt * jvp(u).detach(), rtol=0, atol=1e-12)
        euler, h = EulerMap(network, dt, network.drive(x)), 1e-5
        difference = (euler(state + h * u) - euler(state - h * u)) / (2 * h)
        torch.testing.assert_close(found, difference, rtol=0, atol=1e-7)
        assert torch.equal(exact(u), found)  # u is not modified, out is optional


def test_products_are_transposes_of_each_other():
    network, (x, _) = make_problem("fhn", (10, 8, 6, 3), "asymmetric", lateral=True)
    state = network.initial_state(4) + 0.2
    linear = Linearization(network, state, network.drive(x))
    generator = torch.Generator().manual_seed(5)
    u = torch.randn(state.shape, generator=generator, dtype=torch.float64)
    v = torch.randn(state.shape, generator=generator, dtype=torch.float64)
    left = (v * linear.jvp(u)).sum(-1)
    right = (linear.vjp(v) * u).sum(-1)
    torch.testing.assert_close(left, right, rtol=1e-12, atol=1e-9)
    tracked = u.clone().requires_grad_()  # J u stays differentiable in u: d(vᵀJu)/du = Jᵀv
    (v * linear.jvp(tracked)).sum().backward()
    torch.testing.assert_close(tracked.grad, linear.vjp(v), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("model", ["hopfield", "fhn", "oscillator"])
@pytest.mark.parametrize("coupling", ["symmetric", "asymmetric"])
def test_closed_form_hebbian_difference_matches_autograd(model, coupling):
    from neuroeq.rules.phases import difference, hebbian_difference, hebbian_gradient

    network, (x, _) = make_problem(model, (12, 9, 7, 4), coupling, lateral=True, skip=True)
    generator = torch.Generator().manual_seed(7)
    a = network.initial_state(4) + 0.4 * torch.rand(4, network.state_size, generator=generator,
                                                    dtype=torch.float64)
    b = network.initial_state(4) + 0.4 * torch.rand(4, network.state_size, generator=generator,
                                                    dtype=torch.float64)
    expected = difference(hebbian_gradient(network, a, x), hebbian_gradient(network, b, x), 3.0)
    found = hebbian_difference(network, a, b, x, 3.0)
    assert set(found) == set(expected)
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("model", ["hopfield", "fhn", "oscillator"])
@pytest.mark.parametrize("coupling", ["symmetric", "feedforward"])
def test_adjoint_contraction_with_a_reused_drive_matches_autograd(model, coupling):
    """``velocity_vjp`` given the phase's input currents (closed-form input edges) equals
    the full autograd contraction, skip connections from the input included."""
    from neuroeq.rules.phases import velocity_vjp

    network, (x, _) = make_problem(model, (12, 9, 7, 4), coupling, lateral=True, skip=True)
    generator = torch.Generator().manual_seed(8)
    state = network.initial_state(4) + 0.4 * torch.rand(4, network.state_size,
                                                        generator=generator,
                                                        dtype=torch.float64)
    vector = torch.randn(state.shape, generator=generator, dtype=torch.float64)
    assert sum(edge.pre == 0 for edge in network.edges) >= 2  # the input feeds two layers
    expected = velocity_vjp(network, state, x, vector)
    found = velocity_vjp(network, state, x, vector, network.drive(x))
    assert set(found) == set(expected)
    for name in expected:
        torch.testing.assert_close(found[name], expected[name], rtol=1e-12, atol=1e-13)


def test_elementwise_partials_match_forward_mode():
    """Reverse-mode partials of an elementwise map equal torch.func.jvp's columns, with
    zeros for an input an output does not read and for a constant output; complex inputs
    give the holomorphic derivative."""
    generator = torch.Generator().manual_seed(7)
    for dtype in (torch.float64, torch.complex128):
        v, w, current = (torch.randn(3, 5, generator=generator, dtype=dtype) for _ in range(3))

        def neuron(v, w, current):
            return 0.5 * v - v ** 3 / 3 - w + current, 0.08 * (v + 0.7 - 0.8 * w), 0 * v + 2.0

        values, partials = elementwise_partials(neuron, (v, w, current))
        primals = (v, w, current)
        for k in range(3):
            tangents = tuple(torch.ones_like(p) if i == k else torch.zeros_like(p)
                             for i, p in enumerate(primals))
            reference_values, column = torch.func.jvp(neuron, primals, tangents)
            for a in range(3):
                torch.testing.assert_close(partials[a][k], column[a], rtol=0, atol=1e-14)
                torch.testing.assert_close(values[a], reference_values[a], rtol=0, atol=0)
        assert not partials[1][2].any() and not partials[2][0].any()


def test_elementwise_partials_refuse_inputs_of_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        elementwise_partials(lambda a, b: a * b, (torch.ones(2, 3), torch.ones(3)))
