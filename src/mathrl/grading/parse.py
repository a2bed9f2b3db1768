"""A safe parser from LaTeX / plain math to sympy expressions.

Model text never reaches ``eval``, ``sympify`` or ``parse_expr``: a whitelist tokenizer and a
small recursive-descent parser build sympy objects through their constructors. Anything outside
the grammar is a ParseError (and the grader then says "not equal"). Sizes are bounded before
sympy computes anything: input length, nesting depth, exponents, factorials.

Grammar (``\\cdot``, ``\\times`` and juxtaposition multiply):
    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "\\div") unary | implicit unary)*
    unary   := ("+" | "-") unary | power
    power   := postfix ("^" unary-or-group)?
    postfix := atom "!"*
    atom    := number | symbol | "(" expr ")" | "{" expr "}" | "\\frac" group group
             | "\\sqrt" ["[" expr "]"] group | function group-or-atom | "\\pi" | "\\infty"
"""

from __future__ import annotations

import re
from fractions import Fraction

import sympy

MAX_INPUT_CHARS = 400
MAX_DEPTH = 60
MAX_EXPONENT = 1000  # |exponent| of an exact numeric power
MAX_POWER_DIGITS = 2000  # digits of an exact numeric power's result
MAX_FACTORIAL = 500


class ParseError(ValueError):
    pass


_TOKEN = re.compile(r"""
    (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+(?![a-zA-Z]))?|\.\d+)
  | (?P<command>\\[a-zA-Z]+)
  | (?P<letter>[a-zA-Z])
  | (?P<op>\*\*|\\\\|[-+*/^!(){}\[\]_|,&])
  | (?P<space>\s+)
""", re.VERBOSE)

# Greek letters and the physics letters answers use, each a symbol (with its subscript).
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
          "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau",
          "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi",
          "Sigma", "Phi", "Psi", "Omega", "hbar", "ell"}
_FUNCTIONS = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot,
              "sec": sympy.sec, "csc": sympy.csc, "arcsin": sympy.asin, "arccos": sympy.acos,
              "arctan": sympy.atan, "ln": sympy.log, "log": sympy.log, "exp": sympy.exp}
_MULTIPLY = {"\\cdot", "\\times", "*"}
_DIVIDE = {"/", "\\div"}


def tokenize(text: str) -> list[tuple[str, str]]:
    if len(text) > MAX_INPUT_CHARS:
        raise ParseError("answer too long to parse")
    tokens, i = [], 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            raise ParseError(f"unexpected character {text[i]!r}")
        i = m.end()
        if m.lastgroup != "space":
            tokens.append((m.lastgroup, m.group()))
    return tokens


def parse(text: str) -> sympy.Expr:
    """Parse one expression; raises ParseError for anything outside the whitelist grammar.

    >>> parse(r"\\frac{1}{2} + \\sqrt{8}")
    1/2 + 2*sqrt(2)
    """
    parser = _Parser(tokenize(text))
    expr = parser.expr()
    if parser.i != len(parser.tokens):
        raise ParseError(f"unexpected {parser.tokens[parser.i][1]!r}")
    return expr


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]):
        self.tokens, self.i, self.depth = tokens, 0, 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise ParseError(f"expected {value or 'more input'}")
        self.i += 1
        return token

    def _nested(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("expression nested too deeply")

    def expr(self) -> sympy.Expr:
        self._nested()
        value = self.term()
        while (t := self.peek()) and t[1] in "+-":
            self.take()
            rhs = self.term()
            value = value + rhs if t[1] == "+" else value - rhs
        self.depth -= 1
        return value

    def term(self) -> sympy.Expr:
        value = self.unary()
        while (t := self.peek()) is not None:
            if t[1] in _MULTIPLY:
                self.take()
                value = value * self.unary()
            elif t[1] in _DIVIDE:
                self.take()
                divisor = self.unary()
                if divisor == 0:
                    raise ParseError("division by zero")
                value = value / divisor
            elif self._starts_atom(t):  # implicit multiplication: 2\pi, 3x, 2(x+1), \lambda^5[e^x-1]
                factor = self.power()
                if factor == 0 and value.free_symbols:  # I(0) is a function's value, not I times 0
                    raise ParseError("a letter applied to 0: a function's value, not a product")
                value = value * factor
            else:
                break
        return value

    def _starts_atom(self, t: tuple[str, str]) -> bool:
        kind, value = t
        return (kind in ("number", "letter") or value in ("(", "{", "[")
                or (kind == "command" and value not in _MULTIPLY | _DIVIDE | {"\\end"}))

    def unary(self) -> sympy.Expr:
        t = self.peek()
        if t and t[1] in "+-":
            self.take()
            self._nested()
            value = self.unary()
            self.depth -= 1
            return -value if t[1] == "-" else value
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.postfix()
        t = self.peek()
        if t and t[1] in ("^", "**"):
            self.take()
            exponent = self.group() if self.peek() and self.peek()[1] == "{" else self.unary()
            return _bounded_pow(base, exponent)
        return base

    def postfix(self) -> sympy.Expr:
        value = self.atom()
        while (t := self.peek()) and t[1] == "!":
            self.take()
            if not (value.is_Integer and 0 <= value <= MAX_FACTORIAL):
                raise ParseError("factorial of a large or non-integer value")
            value = sympy.factorial(value)
        return value

    def group(self) -> sympy.Expr:
        """A braced argument, or a single token (``\\frac12``, ``\\sqrt2``)."""
        t = self.peek()
        if t and t[1] == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        return self.atom()

    def atom(self) -> sympy.Expr:
        kind, value = self.take()
        if kind == "number":
            return _number(value)
        if kind == "letter":
            return self._symbol(value)
        if value in ("(", "{", "["):
            close = {"(": ")", "{": "}", "[": "]"}[value]
            inner = self.expr()
            self.take(close)
            return inner
        if value == "|":
            inner = self.expr()
            self.take("|")
            return sympy.Abs(inner)
        if kind == "command":
            return self._command(value[1:])
        raise ParseError(f"unexpected {value!r}")

    def _symbol(self, letter: str) -> sympy.Expr:
        """A letter (or a Greek letter's name) and its subscript, if any: one symbol."""
        name = letter
        if self.peek() and self.peek()[1] == "_":
            self.take()
            kind, sub = self.take() if self.peek()[1] != "{" else ("group", self._raw_group())
            name = f"{letter}_{sub}"
        if name == "e":
            return sympy.E
        if name == "i":
            return sympy.I
        return sympy.Symbol(name)

    def _raw_group(self) -> str:
        self.take("{")
        parts = []
        while self.peek() and self.peek()[1] != "}":
            parts.append(self.take()[1])
        self.take("}")
        return "".join(parts)

    def _matrix(self) -> sympy.ImmutableMatrix:
        """``\\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}`` (any matrix or array environment)."""
        env = self._raw_group()
        if not (env.endswith("matrix") or env == "array"):
            raise ParseError(f"unsupported environment {env}")
        if env == "array" and self.peek() and self.peek()[1] == "{":
            self._raw_group()  # the column spec: {cc}
        rows, row = [], [self.expr()]
        while (t := self.take())[1] != "\\end":
            if t[1] == "&":
                row.append(self.expr())
            elif t[1] == "\\\\":
                rows.append(row)
                row = [] if self.peek() and self.peek()[1] == "\\end" else [self.expr()]
            else:
                raise ParseError(f"unexpected {t[1]!r} in a matrix")
        if row:
            rows.append(row)
        if self._raw_group() != env or len({len(r) for r in rows}) != 1:
            raise ParseError("malformed matrix")
        return sympy.ImmutableMatrix(rows)

    def _command(self, name: str) -> sympy.Expr:
        if name == "frac":
            numerator, denominator = self.group(), self.group()
            if denominator == 0:
                raise ParseError("division by zero")
            return numerator / denominator
        if name == "sqrt":
            if self.peek() and self.peek()[1] == "[":
                self.take()
                index = self.expr()
                self.take("]")
                return _bounded_pow(self.group(), 1 / index)
            return sympy.sqrt(self.group())
        if name == "begin":
            return self._matrix()
        if name == "pi":
            return sympy.pi
        if name == "infty":
            return sympy.oo
        if name in _GREEK:
            return self._symbol(name)  # with its subscript, as a letter's: \omega_{d}
        if name == "log" and self.peek() and self.peek()[1] == "_":
            self.take()
            base = self.group()
            t = self.peek()
            argument = self.group() if t and t[1] == "{" else self.power()
            return sympy.log(argument, base)
        if name in _FUNCTIONS:
            power = None
            if self.peek() and self.peek()[1] == "^":  # \sec^2 y is (\sec y)^2
                self.take()
                power = self.group()
            t = self.peek()
            argument = self.group() if t and t[1] == "{" else self.power()
            value = _FUNCTIONS[name](argument)
            return value if power is None else _bounded_pow(value, power)
        raise ParseError(f"unsupported command \\{name}")


def _number(text: str) -> sympy.Expr:
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise ParseError(f"bad number {text!r}") from None
    if abs(value.numerator) > 10 ** MAX_POWER_DIGITS:
        raise ParseError("number too large")
    return sympy.Rational(value.numerator, value.denominator)


def _bounded_pow(base: sympy.Expr, exponent: sympy.Expr) -> sympy.Expr:
    """``base ** exponent``, refusing exact numeric powers whose result would be enormous."""
    if exponent.is_Number and base.is_Number:
        if abs(exponent) > MAX_EXPONENT:
            raise ParseError("exponent too large")
        if base != 0 and abs(base) != 1:
            digits = abs(float(exponent)) * abs(float(sympy.log(abs(base), 10).evalf(10)))
            if digits > MAX_POWER_DIGITS:
                raise ParseError("power too large")
        if base == 0 and exponent.is_negative:
            raise ParseError("division by zero")
    elif exponent.is_Number and abs(exponent) > MAX_EXPONENT:
        raise ParseError("exponent too large")
    return sympy.Pow(base, exponent)
