"""Turn Brian2 expression strings into torch functions, without executing them.

Expressions are parsed by Brian2's own parser (``str_to_sympy``, which walks the
Python AST and never calls ``eval``) and the resulting sympy tree is compiled into
a closure over torch operations. Only a fixed set of functions is accepted.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from functools import reduce

import sympy
import torch

from neuroeq.brian2_import import import_brian2
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
    import_brian2()
    from brian2.parsing.sympytools import str_to_sympy

    if not isinstance(code, str) or not code.strip():
        raise ModelError(f"{where}: expected a non-empty expression string, got {code!r}")
    check_expression(code, where)
    try:
        expr = str_to_sympy(code)
    except Exception as exc:  # Brian2 raises SyntaxError, ValueError, TypeError, ...
        raise ModelError(f"{where}: cannot parse expression {_short(code)}: {exc}") from None
    if expr.has(sympy.oo, -sympy.oo, sympy.zoo, sympy.nan):
        raise ModelError(f"{where}: expression {_short(code)} contains an infinite or "
                         "undefined constant (e.g. 1/0 or 1e400)")
    return expr


#: the longest expression a model file may hold, and the largest constant (in decimal
#: digits) it may spell out; sympy evaluates constant powers exactly, so ``9**9**9**9``
#: would otherwise never finish
MAX_EXPRESSION_CHARS = 10_000
MAX_CONSTANT_DIGITS = 10_000


def check_expression(code: str, where: str, *, parsed_again: bool = False) -> None:
    """Refuse, before any parser sees them, expressions that are too long, that spell out
    constants too large to evaluate, or that hold anything but names, numbers, operators and
    calls of named functions. Strings matter most: Brian2 hands a call's arguments to sympy,
    and sympy *evaluates* string arguments, so ``tanh("__import__('os')...")`` would run
    code. The check reads Python's syntax tree; nothing is run. Code that is not one Python
    expression is refused too: some of it is pasted into larger Brian2 code (a spiking
    model's ``draw``), where ``rho)`` and a new line would open a statement of its own;
    ``parsed_again``: the caller's parser reads the code as a whole and names such an error
    itself (Brian2's equations)."""
    if len(code) > MAX_EXPRESSION_CHARS:
        raise ModelError(f"{where}: expression is {len(code):,} characters long; at most "
                         f"{MAX_EXPRESSION_CHARS:,} are allowed")
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except SyntaxError as error:
        if parsed_again:
            return
        raise ModelError(f"{where}: cannot parse expression {_short(code)} ({error.msg})"
                         ) from None
    except (ValueError, RecursionError, MemoryError):
        raise ModelError(f"{where}: cannot parse expression {_short(code)} (null bytes, or "
                         "nested too deeply)") from None
    for node in ast.walk(tree):
        allowed = isinstance(node, _ALLOWED_NODES) and not (
            isinstance(node, ast.Constant) and not isinstance(node.value, (int, float))
        ) and not (isinstance(node, ast.Call)
                   and (not isinstance(node.func, ast.Name) or node.keywords))
        if not allowed:
            raise ModelError(f"{where}: expression {_short(code)} contains "
                             f"{type(node).__name__.lower()} syntax; only names, numbers, "
                             "arithmetic, comparisons and calls such as tanh(v) are allowed")
    digits: dict[int, float | None] = {}  # node -> log10 bound of a constant subtree
    stack: list[tuple[ast.AST, bool]] = [(tree.body, False)]
    while stack:  # post-order without recursion (a long sum is a very deep tree)
        node, visited = stack.pop()
        if not visited:
            stack.append((node, True))
            stack.extend((child, False) for child in ast.iter_child_nodes(node))
            continue
        digits[id(node)] = value = _constant_digits(node, digits)
        if value is not None and value > MAX_CONSTANT_DIGITS:
            raise ModelError(f"{where}: expression {_short(code)} spells out a constant "
                             f"with more than {MAX_CONSTANT_DIGITS:,} digits")


_ALLOWED_NODES = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call, ast.Name,
    ast.Constant, ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop,
)


def _constant_digits(node: ast.AST, digits: dict[int, float | None]) -> float | None:
    """An upper bound on log10(1 + |value|) of a constant subtree, ``None`` if not constant."""
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float, complex)):
            return None
        if not abs(node.value) < math.inf:
            return None  # 1e400: sympy reads it as oo, which parse_expression refuses
        return math.log10(1.0 + abs(node.value))
    if isinstance(node, ast.UnaryOp):
        return digits.get(id(node.operand))
    if not isinstance(node, ast.BinOp):
        return None
    left, right = digits.get(id(node.left)), digits.get(id(node.right))
    if left is None or right is None:
        return None
    if isinstance(node.op, (ast.Add, ast.Sub)):
        return max(left, right) + 1.0
    if isinstance(node.op, ast.Pow):
        return math.inf if right > 6 else left * 10.0 ** right
    return left + right


def _short(code: str) -> str:
    return repr(code) if len(code) <= 80 else repr(code[:77] + "...")


def _fold(op: Callable, args: list[TorchExpr]) -> TorchExpr:
    """``args[0] op args[1] op ...`` evaluated left to right; the two- and three-term forms
    (most of a model's sums and products) without a generator per call: a tiny network's
    step is bound by the Python overhead of its expression trees."""
    if len(args) == 2:
        first, second = args
        return lambda env: op(first(env), second(env))
    if len(args) == 3:
        first, second, third = args
        return lambda env: op(op(first(env), second(env)), third(env))
    return lambda env: reduce(op, [f(env) for f in args])


def _fusable(*values: torch.Tensor | float) -> bool:
    """Tensors of one floating or complex dtype: the fused kernels take them as they are."""
    first = values[0]
    return all(isinstance(v, torch.Tensor) and v.dtype == first.dtype for v in values) and (
        first.dtype.is_floating_point or first.dtype.is_complex)


def _linear_combination(expr: sympy.Add, where: str) -> TorchExpr | None:
    """``c₀ + Σ_k c_k t_k`` as a chain of fused kernels: ``add(acc, t, alpha=c)`` per term and
    ``addcmul(acc, a, b, value=c)`` per term ``c·a·b`` (one kernel each, where the plain
    tree runs two and three). FHN's ``v`` update takes 5 kernels instead of 9. Values that
    are not tensors of one dtype take plain arithmetic. ``None`` for a complex coefficient.
    """
    constant = 0.0
    terms: list[tuple] = []
    for arg in expr.args:
        coefficient, rest = arg.as_coeff_Mul()
        if not coefficient.is_real:
            return None
        if rest == 1:
            constant += float(coefficient)
        elif isinstance(rest, sympy.Mul) and len(rest.args) == 2:
            first, second = (compile_expression(a, where) for a in rest.args)
            terms.append((float(coefficient), first, second))
        else:
            terms.append((float(coefficient), compile_expression(rest, where)))

    def evaluate(env: Env) -> torch.Tensor | float:
        total: torch.Tensor | float | None = None
        for term in terms:
            coefficient = term[0]
            if len(term) == 3:
                a, b = term[1](env), term[2](env)
                if total is not None and _fusable(total, a, b):
                    total = torch.addcmul(total, a, b, value=coefficient)
                    continue
                value = a * b
            else:
                value = term[1](env)
            if total is None:
                total = value if coefficient == 1.0 else value * coefficient
            elif _fusable(total, value):
                total = torch.add(total, value, alpha=coefficient)
            else:
                total = total + coefficient * value
        return total + constant if constant != 0.0 else total

    return evaluate


def compile_expression(expr: sympy.Expr, where: str) -> TorchExpr:
    """Compile a sympy expression into ``f(env) -> tensor`` over torch operations."""
    if isinstance(expr, sympy.Symbol):
        name = expr.name
        return lambda env: env[name]
    if isinstance(expr, (sympy.Integer, sympy.Rational, sympy.Float)) or expr.is_Number or (
            expr.is_number and expr.is_real):
        # a constant subtree (exp(-1), tanh(1), pi) as one Python float: it then takes the
        # state's dtype (a torch scalar would be float32, and round float64 models)
        value = float(expr.evalf(30))
        if not math.isfinite(value):
            raise ModelError(f"{where}: the constant {expr} is not a finite number")
        return lambda env: value
    if expr in (sympy.true, sympy.false):
        value = 1.0 if expr == sympy.true else 0.0
        return lambda env: value
    if isinstance(expr, sympy.Add):
        combination = _linear_combination(expr, where)
        if combination is not None:
            return combination
    args = [compile_expression(arg, where) for arg in expr.args]
    if isinstance(expr, (sympy.Add, sympy.Mul)):
        return _fold(operator.add if isinstance(expr, sympy.Add) else operator.mul, args)
    if isinstance(expr, sympy.Pow):
        base, exponent = args
        if expr.args[1] == -1:
            return lambda env: 1.0 / base(env)
        if expr.args[1].is_Integer and abs(int(expr.args[1])) <= 1_000_000:
            power = int(expr.args[1])
            return lambda env: _power(base(env), power)
        return lambda env: _power(base(env), exponent(env))
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
    arity = 3 if name == "clip" else 1
    if (name in ("int_", "int", "clip") or name in _UNARY) and len(args) != arity:
        raise ModelError(f"{where}: {name}() takes {arity} argument(s), got {len(args)}")
    if name in ("int_", "int"):
        (inner,) = args
        symbols = sorted(free_symbols(expr.args[0]))

        def to_float(env: Env) -> torch.Tensor:
            value = _tensor(inner(env))
            if value.dtype != torch.bool:
                return value.trunc()
            for symbol in symbols:  # a condition on the state: 1.0 / 0.0 in its dtype
                reference = env.get(symbol)
                if isinstance(reference, torch.Tensor) and reference.is_floating_point():
                    return value.to(reference.dtype)
            return value.to(torch.get_default_dtype())

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
        f"(supported: {', '.join(sorted([*(n.lower() for n in _UNARY), 'clip', 'int']))})"
    )


def compile_expressions(exprs: Mapping[str, sympy.Expr], where: str
                        ) -> Callable[[Env], dict[str, torch.Tensor | float]]:
    """Compile expressions that are evaluated together into ``f(env) -> {name: value}``,
    their common subexpressions (``sympy.cse``) computed once per call: ``ρ = ½(1 + tanh v)``
    and ``ρ' = ½(1 - tanh² v)`` share one ``tanh``, which costs as much on CPU as a dozen
    elementwise products."""
    names = list(exprs)
    replacements, reduced = sympy.cse([exprs[name] for name in names],
                                      symbols=sympy.numbered_symbols("_common"))
    shared = [(symbol.name, compile_expression(value, where)) for symbol, value in replacements]
    finals = [(name, compile_expression(value, where))
              for name, value in zip(names, reduced, strict=True)]

    def evaluate(env: Env) -> dict[str, torch.Tensor | float]:
        if shared:
            env = dict(env)
            for name, function in shared:
                env[name] = function(env)
        return {name: function(env) for name, function in finals}

    return evaluate


def restrict_to_interval(expr: sympy.Expr, name: str, low: float, high: float) -> sympy.Expr:
    """``expr`` for values of the variable ``name`` in ``[low, high]``, simplified exactly.

    Comparisons of ``name`` with a constant that hold (fail) on the whole interval become
    ``True`` (``False``); ``clip(name, a, b)`` with ``[low, high] ⊆ [a, b]`` becomes ``name``;
    ``int(True)`` becomes 1 and ``int(False)`` 0. On a projected state the hard sigmoid
    ``ρ = clip(s, 0, 1)`` is then ``s`` and ``ρ' = int(s >= 0 and s <= 1)`` is 1: the same
    values without their elementwise kernels. Other terms are left as they are."""

    def is_variable(node: sympy.Basic) -> bool:
        return isinstance(node, sympy.Symbol) and node.name == name

    def number(node: sympy.Basic) -> float | None:
        return float(node) if node.is_number and node.is_real else None

    def decide(relation: sympy.Basic) -> sympy.Basic:
        left, right = relation.lhs, relation.rhs
        if not is_variable(left) and is_variable(right):
            relation = relation.reversed
            left, right = relation.lhs, relation.rhs
        value = number(right)
        if not is_variable(left) or value is None:
            return relation
        holds = {sympy.GreaterThan: (low >= value, high < value),
                 sympy.StrictGreaterThan: (low > value, high <= value),
                 sympy.LessThan: (high <= value, low > value),
                 sympy.StrictLessThan: (high < value, low >= value)}.get(type(relation))
        if holds is None:
            return relation
        always, never = holds
        return sympy.true if always else sympy.false if never else relation

    def rewrite(node: sympy.Basic) -> sympy.Basic:
        if not node.args:
            return node
        args = [rewrite(arg) for arg in node.args]
        if args != list(node.args):
            node = node.func(*args)
        if isinstance(node, sympy.core.relational.Relational):
            return decide(node)
        function = getattr(node.func, "__name__", "")
        if function == "clip" and len(node.args) == 3 and is_variable(node.args[0]):
            a, b = number(node.args[1]), number(node.args[2])
            if a is not None and b is not None and a <= low and high <= b:
                return node.args[0]
        if function in ("int", "int_") and len(node.args) == 1:
            if node.args[0] is sympy.true:
                return sympy.Integer(1)
            if node.args[0] is sympy.false:
                return sympy.Integer(0)
        return node

    return rewrite(expr)


def _power(base: torch.Tensor | float, exponent: torch.Tensor | float) -> torch.Tensor | float:
    """``base ** exponent``; a power of two parameters that overflows a float is ``inf``
    (as a tensor's would be) rather than an ``OverflowError``."""
    try:
        return base ** exponent
    except OverflowError:
        return math.inf


def _tensor(value: torch.Tensor | float | bool) -> torch.Tensor:
    """``value`` as a tensor; a number as a float64 0-dim tensor, which keeps its digits
    and, being 0-dim, does not change the dtype of the state it meets (``s >= 0.1`` holds
    at a float64 ``s = 0.1``, against 0.1 rounded to float32 by ``torch.tensor(0.1)``)."""
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(value) if isinstance(value, bool) else torch.tensor(value,
                                                                             dtype=torch.float64)


def free_symbols(expr: sympy.Expr) -> set[str]:
    """Names of the free symbols of an expression."""
    return {symbol.name for symbol in expr.free_symbols}
