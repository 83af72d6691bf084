"""Compiled expressions evaluate the equations they were parsed from."""

import pytest
import torch

from neuroeq import expressions
from neuroeq.expressions import compile_expression, compile_expressions, parse_expression


@pytest.mark.parametrize("code, expected", [
    # a product of two (one fused kernel) and a plain term
    ("0.5*a*b - 3*c + 2", lambda a, b, c, k: 0.5 * a * b - 3 * c + 2),
    ("a*b*c + 0.1*a - b/4", lambda a, b, c, k: a * b * c + 0.1 * a - b / 4),  # three factors
    ("k*a + b", lambda a, b, c, k: k * a + b),  # k a Python number in the environment
    ("int(a > 0)*0.5 + b", lambda a, b, c, k: (a > 0).double() * 0.5 + b),  # int8 among floats
    ("0.1*k + 0.2 + a", lambda a, b, c, k: 0.1 * k + 0.2 + a),
    ("tanh(a)**2 - 0.5*tanh(a) + 1", lambda a, b, c, k: a.tanh() ** 2 - 0.5 * a.tanh() + 1),
])
def test_sums_evaluate_the_expression(code, expected):
    generator = torch.Generator().manual_seed(0)
    env = {name: torch.randn(3, 4, generator=generator, dtype=torch.float64)
           for name in ("a", "b", "c")}
    env["k"] = 1.7
    found = compile_expression(parse_expression(code, "test"), "test")(env)
    torch.testing.assert_close(found, expected(**env), rtol=1e-14, atol=1e-14)


def test_a_sum_of_numbers_stays_a_number():
    value = compile_expression(parse_expression("0.1*k + 0.2*k2", "test"), "test")(
        {"k": 1.0, "k2": 2.0})
    assert isinstance(value, float) and value == pytest.approx(0.5)


def test_expressions_compiled_together_share_their_terms_and_agree(monkeypatch):
    generator = torch.Generator().manual_seed(1)
    env = {"v": torch.randn(5, 2, generator=generator, dtype=torch.float64)}
    forms = {"rho": "0.5*(1 + tanh(v))", "slope": "0.5*(1 - tanh(v)**2)", "plain": "v**3"}
    exprs = {k: parse_expression(c, "test") for k, c in forms.items()}
    together = compile_expressions(exprs, "test")(env)
    for name, expr in exprs.items():
        torch.testing.assert_close(together[name], compile_expression(expr, "test")(env),
                                   rtol=0, atol=1e-15)
    calls = []
    original = expressions._UNARY["tanh"]

    def counting(x):
        calls.append(1)
        return original(x)

    monkeypatch.setitem(expressions._UNARY, "tanh", counting)  # read when compiling
    compile_expressions(exprs, "test")(env)
    assert len(calls) == 1  # one tanh for both rho and slope


@pytest.mark.parametrize("code, expected", [
    ("0.1*int(s > 0)", lambda s: 0.1 * (s > 0).double()),
    ("exp(-1)*s", lambda s: s * 0.36787944117144233),
    ("tanh(s)/tanh(1)", lambda s: torch.tanh(s) / 0.7615941559557649),
    ("pi*s", lambda s: s * 3.141592653589793),
])
def test_constants_and_conditions_keep_the_states_float64(code, expected):
    """A constant subtree was a float32 torch scalar and int() of a condition an int8 that a
    float constant turned float32: a float64 model rounded to float32 (1e-8)."""
    s = torch.tensor([0.5, -0.3, 2.0], dtype=torch.float64)
    value = compile_expression(parse_expression(code, "x"), "x")({"s": s})
    assert value.dtype == torch.float64
    torch.testing.assert_close(value, expected(s), rtol=1e-15, atol=0)


@pytest.mark.parametrize("code, expected", [
    ("int(s >= 0.1)", [1.0, 1.0, 1.0]),  # at s = 0.1 itself: 0.1 rounded to float32 is above
    ("int(s > 0.1)", [0.0, 1.0, 1.0]),
    ("int(0.1 <= s and s < 0.1000000005)", [1.0, 1.0, 0.0]),
])
def test_comparisons_with_constants_keep_the_constants_digits(code, expected):
    s = torch.tensor([0.1, 0.1000000001, 0.10000000149], dtype=torch.float64)
    value = compile_expression(parse_expression(code, "x"), "x")({"s": s})
    assert value.tolist() == expected


def test_a_function_of_parameters_alone_keeps_their_float64_digits():
    import math

    f = compile_expression(parse_expression("tanh(a)*s", "x"), "x")
    value = f({"a": 0.3, "s": torch.ones(1, dtype=torch.float64)})
    assert value.dtype == torch.float64 and float(value) == math.tanh(0.3)
    assert f({"a": 0.3, "s": torch.ones(1)}).dtype == torch.float32  # and float32 stays so


def test_a_power_of_parameters_that_overflows_is_inf_not_an_error():
    value = compile_expression(parse_expression("s*k**2", "x"), "x")(
        {"s": torch.ones(2, dtype=torch.float64), "k": 1e200})
    assert torch.isinf(value).all()
