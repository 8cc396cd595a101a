"""Safe arithmetic: evaluate "12 * (3 + 4)" without ``eval``.

The text is parsed with :mod:`ast` and only numbers, ``+ - * / // % **``, unary signs and
parentheses are evaluated; anything else (names, calls, attributes) is refused, and every
result is bounded, so a model cannot make the server run code or compute ``9**9**9``.

Models (the offline one in particular) often pass the user's whole sentence, so
:func:`extract` first pulls the one arithmetic expression out of the surrounding words:
"What is 12 * (3 + 4)?" and "计算 (2+3)*4" both work.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import unicodedata
from collections.abc import Callable

Number = int | float

MAX_LENGTH = 500  # characters of input: a question, not a program
MAX_BITS = 10_000  # about 3,000 digits: bounds every integer result (and its printing)

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}
# Symbols people type that Python spells differently; NFKC already maps full-width forms.
_SYMBOLS = str.maketrans({"×": "*", "÷": "/", "−": "-", "–": "-", "^": "**"})
# Operators in words, only between two operands: "12 times 7", "3 x 4", "3加4".
_WORD_OPERATORS = {
    "times": "*", "x": "*", "multiplied by": "*", "divided by": "/", "plus": "+",
    "minus": "-", "乘以": "*", "除以": "/", "加上": "+", "减去": "-", "加": "+", "减": "-",
}  # fmt: skip
_SPELLED = re.compile(
    r"(?<=[\d)])\s*(" + "|".join(_WORD_OPERATORS) + r")\s*(?=[\d(-])", re.IGNORECASE
)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")  # "1,000" -> "1000"
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RUN = re.compile(rf"(?:(?:{_NUMBER}|[-+*/%()])\s*)+")
_OPERATOR = re.compile(r"(?<=[\d)\s])[-+*/%]")
_CALL = re.compile(r"[A-Za-z_]\w*\(|(?:[A-Za-z_]\w*|\))\.[A-Za-z_]\w*")
_FUNCTIONS = re.compile(
    r"\b(sqrt|sin|cos|tan|log|ln|exp|abs|round|pow|min|max|floor|ceil|factorial|pi)\b", re.I
)
_WORD = re.compile(r"[^\W\d]\w*")
_WORD_BEFORE = re.compile(r"([^\W\d]\w*)\s*$")


class CalculationError(ValueError):
    """Why an expression was not evaluated, as a sentence for the user."""


def calculate(text: str) -> tuple[str, Number]:
    """The arithmetic expression found in `text` and its value.
    Raises CalculationError with a sentence saying what to change."""
    expression = extract(text)
    try:
        tree = ast.parse(expression, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise CalculationError(
            f"{expression!r} is not a valid arithmetic expression: use numbers, "
            "+ - * / // % ** and balanced parentheses, e.g. 12 * (3 + 4)."
        ) from None
    return expression, evaluate(tree.body)


def extract(text: str) -> str:
    """The one arithmetic expression in `text`, with surrounding words dropped and a
    missing closing parenthesis at the end added (models drop it along with the "?")."""
    if len(text) > MAX_LENGTH:
        raise CalculationError(f"The expression is too long (over {MAX_LENGTH} characters).")
    text = unicodedata.normalize("NFKC", text).translate(_SYMBOLS)
    text = _SPELLED.sub(lambda m: f" {_WORD_OPERATORS[m.group(1).lower()]} ", text)
    text = _THOUSANDS.sub("", text)
    code = _CALL.search(text) or _FUNCTIONS.search(text)
    if code:
        raise CalculationError(
            f"Functions, names and attributes ({code.group().strip('()')}) are not "
            "supported: use only numbers, + - * / // % ** and parentheses, e.g. 2 ** 0.5 "
            "for a square root."
        )
    runs = [m for m in _RUN.finditer(text) if any(ch.isdigit() for ch in m.group())]
    if not runs:
        raise CalculationError(
            f"No arithmetic expression found in {text.strip()!r}: give numbers and "
            "operators, e.g. 12 * (3 + 4)."
        )
    with_operators = [m for m in runs if _OPERATOR.search(m.group().strip())]
    if len(with_operators) > 1:
        found = ", ".join(repr(m.group().strip()) for m in with_operators)
        raise CalculationError(f"Found more than one expression ({found}); ask for one.")
    if with_operators:
        match = with_operators[0]
    elif len(runs) == 1:
        match = runs[0]  # a bare number is its own value
    else:
        numbers = ", ".join(m.group().strip() for m in runs)
        raise CalculationError(f"Found numbers ({numbers}) but no operator between them.")
    _refuse_names_around(text, match)
    expression = match.group().strip()
    missing = expression.count("(") - expression.count(")")
    return expression + ")" * missing if missing > 0 else expression


def _refuse_names_around(text: str, match: re.Match[str]) -> None:
    """Refuse "x + 1" rather than compute "+ 1": an operator with a word operand is a name."""
    expression = match.group().strip()
    before = _WORD_BEFORE.search(text, 0, match.start())
    after = _WORD.match(text, match.end())
    if before and (expression[0] in "*/%" or re.match(r"[-+]\s", expression)):
        name = before.group(1)
    elif after and expression[-1] in "+-*/%":
        name = after.group()
    else:
        return
    raise CalculationError(
        f"Names such as {name!r} are not supported: use only numbers, + - * / // % ** "
        "and parentheses."
    )


def evaluate(node: ast.AST) -> Number:
    """The value of an expression tree made only of numbers and arithmetic operators."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](evaluate(node.operand))
    if isinstance(node, ast.BinOp) and (type(node.op) in _BINARY or isinstance(node.op, ast.Pow)):
        left, right = evaluate(node.left), evaluate(node.right)
        try:
            if isinstance(node.op, ast.Pow):
                return _bounded(power(left, right))
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise CalculationError(
                "Division by zero: the expression divides by 0 (or raises 0 to a negative "
                "power), which has no value."
            ) from None
        except OverflowError:
            raise _too_large() from None
    raise CalculationError(
        f"{_describe(node)} is not allowed: use only numbers, + - * / // % ** and parentheses."
    )


def power(base: Number, exponent: Number) -> Number:
    """``base ** exponent``, refused before computing when the result would be huge."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if exponent * (abs(base).bit_length() - 1) >= MAX_BITS:  # at least that many bits
            raise _too_large()
    result = base**exponent
    if isinstance(result, complex):
        raise CalculationError(
            f"({format_number(base)}) ** {format_number(exponent)} is not a real number "
            "(a negative number to a fractional power)."
        )
    return result


def format_number(value: Number, digits: int = 12) -> str:
    """A number as people write it: 84, 0.3 (not 0.30000000000000004), 1.5e+20."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.{digits}g}"


def _bounded(value: Number) -> Number:
    if isinstance(value, float) and not math.isfinite(value):
        raise _too_large()
    if isinstance(value, int) and value.bit_length() > MAX_BITS:
        raise _too_large()
    return value


def _too_large() -> CalculationError:
    return CalculationError(
        f"The result is too large to compute (the limit is about {MAX_BITS * 3 // 10:,} "
        "digits); 9**9**9 and the like are refused."
    )


def _describe(node: ast.AST) -> str:
    """What a refused node is, in words."""
    if isinstance(node, ast.Name):
        return f"The name {node.id!r}"
    kinds = {
        ast.Call: "A function call (write the operator, e.g. 2 * (3) not 2(3))",
        ast.Attribute: "An attribute",
        ast.Compare: "A comparison",
        ast.BoolOp: "A boolean operator",
        ast.Constant: "A value that is not a number",
    }
    for kind, words in kinds.items():
        if isinstance(node, kind):
            return words
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"The operator {type(node.op).__name__}"
    return f"A {type(node).__name__} expression"
