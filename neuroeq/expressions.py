"""Turn Brian2 expression strings into torch functions, without executing them.

Expressions are parsed by Brian2's own parser (``str_to_sympy``, which walks the
Python AST and never calls ``eval``) and the resulting sympy tree is compiled into
a closure over torch operations. Only a fixed set of functions is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import reduce

import sympy
import torch

from neuroeq.errors import ModelError

Env = Mapping[str, torch.Tensor | float]
TorchExpr = Callable[[Env], torch.Tensor | float]

_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "exp": torch.exp,
    "log": torch.log,
    "tanh": torch.tanh,
    "sin": torch.sin,
    "cos": torch.cos,
    "sqrt": torch.sqrt,
    "Abs": torch.abs,
    "sign": torch.sign,
    "sinh": torch.sinh,
    "cosh": torch.cosh,
}
_COMPARISONS = {
    sympy.StrictGreaterThan: torch.gt,
    sympy.GreaterThan: torch.ge,
    sympy.StrictLessThan: torch.lt,
    sympy.LessThan: torch.le,
}


def parse_expression(code: str, where: str) -> sympy.Expr:
    """Parse a Brian2 expression string into sympy, naming ``where`` on failure."""
    from brian2.parsing.sympytools import str_to_sympy

    if not isinstance(code, str) or not code.strip():
        raise ModelError(f"{where}: expected a non-empty expression string, got {code!r}")
    try:
        return str_to_sympy(code)
    except Exception as exc:  # Brian2 raises SyntaxError, ValueError, TypeError, ...
        raise ModelError(f"{where}: cannot parse expression {code!r}: {exc}") from None


def compile_expression(expr: sympy.Expr, where: str) -> TorchExpr:
    """Compile a sympy expression into ``f(env) -> tensor`` over torch operations."""
    if isinstance(expr, sympy.Symbol):
        name = expr.name
        return lambda env: env[name]
    if isinstance(expr, (sympy.Integer, sympy.Rational, sympy.Float)) or expr.is_Number:
        value = float(expr)
        return lambda env: value
    if expr in (sympy.true, sympy.false):
        value = 1.0 if expr == sympy.true else 0.0
        return lambda env: value
    args = [compile_expression(arg, where) for arg in expr.args]
    if isinstance(expr, sympy.Add):
        return lambda env: reduce(lambda a, b: a + b, (f(env) for f in args))
    if isinstance(expr, sympy.Mul):
        return lambda env: reduce(lambda a, b: a * b, (f(env) for f in args))
    if isinstance(expr, sympy.Pow):
        base, exponent = args
        if expr.args[1] == -1:
            return lambda env: 1.0 / base(env)
        if expr.args[1].is_Integer:
            power = int(expr.args[1])
            return lambda env: base(env) ** power
        return lambda env: base(env) ** exponent(env)
    if type(expr) in _COMPARISONS:
        compare = _COMPARISONS[type(expr)]
        left, right = args
        return lambda env: compare(_tensor(left(env)), _tensor(right(env)))
    if isinstance(expr, sympy.And):
        return lambda env: reduce(torch.logical_and, (_tensor(f(env)) for f in args))
    if isinstance(expr, sympy.Or):
        return lambda env: reduce(torch.logical_or, (_tensor(f(env)) for f in args))
    if isinstance(expr, sympy.Not):
        (inner,) = args
        return lambda env: torch.logical_not(_tensor(inner(env)))
    name = getattr(expr.func, "__name__", str(expr.func))
    if name in ("int_", "int"):
        (inner,) = args

        def to_float(env: Env) -> torch.Tensor:
            value = _tensor(inner(env))
            return value.to(torch.int8) if value.dtype == torch.bool else value.trunc()

        return to_float
    if name == "clip":
        value, low, high = args
        return lambda env: torch.clamp(_tensor(value(env)), low(env), high(env))
    if name in _UNARY:
        op = _UNARY[name]
        (inner,) = args
        return lambda env: op(_tensor(inner(env)))
    raise ModelError(
        f"{where}: function {name!r} is not supported by the torch engine "
        f"(supported: {', '.join(sorted([*_UNARY, 'clip', 'int']))})"
    )


def _tensor(value: torch.Tensor | float) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.tensor(value)


def free_symbols(expr: sympy.Expr) -> set[str]:
    """Names of the free symbols of an expression."""
    return {symbol.name for symbol in expr.free_symbols}
