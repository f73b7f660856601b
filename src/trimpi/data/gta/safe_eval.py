"""A safe arithmetic evaluator: an AST whitelist, never Python eval/exec.

Accepted: int/float literals, + - * / // % **, unary + and -, parentheses. Rejected:
names, calls, attributes, subscripts, comparisons, strings, and any operation whose
result would be huge (large exponents or big integers).
"""

from __future__ import annotations

import ast
import math
import operator

MAX_CHARS = 1000
MAX_INT_BITS = 4096
MAX_EXPONENT = 1000

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_REPLACE = {"×": "*", "÷": "/", "−": "-", "^": "**", "\u00b7": "*"}


class UnsafeExpression(ValueError):
    """The expression is not plain arithmetic, or evaluating it would be unsafe."""


def _check_size(value: int | float) -> int | float:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise UnsafeExpression("integer result too large")
    if isinstance(value, float) and not math.isfinite(value):
        raise UnsafeExpression("result is not finite")
    return value


def _pow(base: int | float, exp: int | float) -> int | float:
    if abs(exp) > MAX_EXPONENT:
        raise UnsafeExpression("exponent too large")
    big = isinstance(base, int) and isinstance(exp, int) and max(abs(base), 1).bit_length() * exp > MAX_INT_BITS
    if big:
        raise UnsafeExpression("power too large")
    try:
        result = base**exp
    except OverflowError:
        raise UnsafeExpression("power overflows") from None
    except ZeroDivisionError:  # 0 ** -1
        raise UnsafeExpression("division by zero") from None
    if isinstance(result, complex):
        raise UnsafeExpression("complex result")
    return result


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise UnsafeExpression(f"literal {node.value!r} is not a number")
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_pow(left, right))
        try:
            return _check_size(_BINOPS[type(node.op)](left, right))
        except (ZeroDivisionError, OverflowError) as e:
            raise UnsafeExpression(str(e)) from None
    raise UnsafeExpression(f"{type(node).__name__} is not allowed")


def normalize_expression(text: str) -> str:
    """Map common math symbols to Python operators (× ÷ − ^) and drop a trailing '='."""
    for old, new in _REPLACE.items():
        text = text.replace(old, new)
    return text.strip().rstrip("=").strip()


def safe_eval(text: str) -> int | float:
    """Evaluate plain arithmetic; raise UnsafeExpression for anything else."""
    if not isinstance(text, str):
        raise UnsafeExpression("expression must be a string")
    if len(text) > MAX_CHARS:
        raise UnsafeExpression("expression too long")
    try:
        tree = ast.parse(normalize_expression(text), mode="eval")
        return _eval(tree)
    except UnsafeExpression:
        raise
    except (SyntaxError, ValueError, RecursionError, MemoryError, TypeError) as e:
        raise UnsafeExpression(f"cannot evaluate: {type(e).__name__}") from None


def numbers_equal(a: int | float, b: int | float, rel: float = 1e-6, abs_tol: float = 1e-9) -> bool:
    """Numeric equality with a small relative tolerance (0.1 + 0.2 == 0.3)."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=rel, abs_tol=abs_tol)
    except OverflowError:
        return False
