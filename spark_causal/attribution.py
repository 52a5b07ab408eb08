"""Attribution: why did a metric move between two runs?

Everything here works on pandas sample tables (one per segment, the format of ``docs/internals.md``)
and the run's ``networkx`` graph; nothing touches Spark.

The model of a segment (the unit is one row of the driving source):

* **roots**: the driving source's columns. A table's columns are not independent, so they are
  modelled jointly as a chain ``P(c1) P(c2 | c1) ...`` (discrete columns first, numeric columns
  conditioned on the cell of the discrete ones), each link being an empirical, weighted conditional
  distribution. Identifiers (near-unique keys) are not causes and are carried along unchanged.
* **lookups**: a column a join brings in (``fx.rate``) and the join's match indicator are functions of
  the driving-side join keys, i.e. a per-key table.
* **deterministic nodes**: stage columns and selections are functions of their graph parents. Their
  mechanism is the node's own SQL expression when it can be evaluated (and reproduces the recorded
  values), else an exact table on the parents' values with a nearest-neighbour fallback.

Change tests per mechanism use the whole sample and take milliseconds: chi-square / weighted KS per
conditioning cell for roots, per-key comparison for lookups, the code fingerprint and an exact
comparison for deterministic nodes; Holm's method controls the family-wise error. The change in the
metric (mean contribution per driving row) is split over the changed mechanisms with exact Shapley
values (sampled permutations when many) using common random numbers: every baseline unit keeps its own
uniforms, and a root column is re-drawn by quantile coupling, so the empty coalition reproduces the
baseline exactly. The volume term (change in the number of driving rows) is added for sum/count
metrics; bootstrap replicates (units resampled in both runs) give the intervals.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Callable

import networkx as nx
import numpy as np
import pandas as pd
from scipy import stats

from .errors import SparkCausalError, UnknownOutputError
from .result import Attribution, AttributionItem

__all__ = ["SegmentSamples", "RunSamples", "AttributionConfig", "attribute_samples"]


# ============================================================================ public data types
@dataclass(frozen=True)
class SegmentSamples:
    """One segment's description (as in ``G.graph["segments"]``) and its unit-level sample table."""

    description: dict
    table: pd.DataFrame


@dataclass(frozen=True)
class RunSamples:
    """Everything attribution needs from one run: its id, graph and per-segment samples."""

    run: str
    graph: nx.DiGraph
    segments: dict[str, SegmentSamples]


@dataclass(frozen=True)
class AttributionConfig:
    """Options of :func:`attribute_samples` (all randomness derives from ``seed``).

    alpha: family-wise level of the mechanism-change tests and of the ``significant`` verdict.
    n_bootstrap: bootstrap replicates for the intervals (0 disables them).
    ci_level: coverage of the reported intervals.
    max_exact_players: up to this many changed mechanisms, Shapley values are exact (2^k coalitions);
        above, ``n_permutations`` sampled permutations (antithetic pairs) are used.
    min_cell: a conditioning cell needs this many units in both runs, else it joins the rest cell.
    max_cond_discrete: at most this many discrete columns condition a root column.
    max_cells: at most this many conditioning cells per root column.
    rescue: when the metric moved significantly but the flagged mechanisms explain less than half of
        it, the most suspicious unflagged mechanisms (raw p < 0.05, at most 3) join the attribution.
    """

    seed: int = 0
    alpha: float = 0.01
    n_bootstrap: int = 20
    ci_level: float = 0.95
    max_exact_players: int = 7
    n_permutations: int = 32
    min_cell: int = 20
    max_cond_discrete: int = 3
    max_cells: int = 60
    discrete_max_values: int = 20
    rescue: bool = True


# ============================================================================ SQL expressions
class _ExprError(Exception):
    """The expression cannot be compiled; the caller falls back to a fitted mechanism."""


_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<bt>`(?:[^`]|``)*`)
  | (?P<str>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*")
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?:BD|bd|[LlDdSsYyFf])?(?![A-Za-z_]))
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*(?:\#\d+L?)?)
  | (?P<op><=>|<=|>=|<>|!=|==|\|\||[-+*/%=<>(),.!])
""", re.X)

_KEYWORDS = {"and", "or", "not", "is", "null", "in", "between", "like", "case", "when", "then",
             "else", "end", "cast", "as", "true", "false", "div", "rlike"}


def _tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m:
            raise _ExprError(f"cannot tokenize at {text[pos:pos + 10]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind == "ws":
            continue
        out.append((kind, m.group(kind)))
    out.append(("eof", ""))
    return out


def _isnull(v: Any, n: int) -> np.ndarray:
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f":
            return np.isnan(v)
        if v.dtype == object:
            return np.asarray(pd.isna(v), dtype=bool)
        return np.zeros(len(v), dtype=bool)
    return np.full(n, v is None or (isinstance(v, float) and math.isnan(v)))


def _num(v: Any, n: int) -> np.ndarray:
    if isinstance(v, np.ndarray):
        if v.dtype.kind in "fiub":
            return v.astype(float)
        return pd.to_numeric(pd.Series(v), errors="coerce").to_numpy(dtype=float)
    if v is None:
        return np.full(n, np.nan)
    if isinstance(v, str):
        try:
            return np.full(n, float(v))
        except ValueError:
            return np.full(n, np.nan)
    return np.full(n, float(v))


def _bool(v: Any, n: int) -> np.ndarray:
    """Three-valued logic as floats: 1.0 true, 0.0 false, NaN unknown."""
    x = _num(v, n)
    return np.where(np.isnan(x), np.nan, (x != 0).astype(float))


def _arr(v: Any, n: int) -> np.ndarray:
    if isinstance(v, np.ndarray):
        return v
    if isinstance(v, str) or v is None:
        out = np.empty(n, dtype=object)
        out[:] = v
        return out
    return np.full(n, float(v))


def _is_textual(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype == object)


def _compare(a: Any, b: Any, op: str, n: int) -> np.ndarray:
    null = _isnull(a, n) | _isnull(b, n)
    if _is_textual(a) or _is_textual(b):
        sa = pd.Series(_arr(a, n), dtype=object).where(~null, "")
        sb = pd.Series(_arr(b, n), dtype=object).where(~null, "")
        if not (_is_textual(a) and _is_textual(b)):  # text against number: compare as numbers
            sa, sb = pd.Series(_num(a, n)), pd.Series(_num(b, n))
        sa, sb = sa.astype(str) if sa.dtype == object else sa, sb.astype(str) if sb.dtype == object else sb
        x, y = sa.to_numpy(), sb.to_numpy()
    else:
        x, y = _num(a, n), _num(b, n)
    with np.errstate(invalid="ignore"):
        if op in ("=", "==", "<=>"):
            r = x == y
        elif op in ("<>", "!="):
            r = x != y
        elif op == "<":
            r = x < y
        elif op == "<=":
            r = x <= y
        elif op == ">":
            r = x > y
        else:
            r = x >= y
    r = np.asarray(r, dtype=float)
    if op == "<=>":  # null-safe equality
        both = _isnull(a, n) & _isnull(b, n)
        return np.where(null, both.astype(float), r)
    return np.where(null, np.nan, r)


def _and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where((a == 0) | (b == 0), 0.0, np.where(np.isnan(a) | np.isnan(b), np.nan, 1.0))


def _or(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where((a == 1) | (b == 1), 1.0, np.where(np.isnan(a) | np.isnan(b), np.nan, 0.0))


def _coalesce(args: list, n: int):
    out = _arr(args[0], n).copy()
    if out.dtype.kind != "f" and out.dtype != object:
        out = out.astype(float)
    for a in args[1:]:
        m = _isnull(out, n)
        if not m.any():
            break
        out[m] = _arr(a, n)[m]
    return out


def _round_half_up(x: np.ndarray, d: int) -> np.ndarray:
    s = 10.0 ** d
    return np.sign(x) * np.floor(np.abs(x) * s + 0.5) / s


_NUMERIC_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "abs": np.abs, "sqrt": np.sqrt, "exp": np.exp, "ln": np.log, "log10": np.log10,
    "floor": np.floor, "ceil": np.ceil, "ceiling": np.ceil, "sign": np.sign, "signum": np.sign,
}


class _Compiler:
    """A recursive-descent parser of Spark SQL expressions into vectorised numpy closures.

    ``resolve(name)`` maps an identifier (without backticks or ``#exprId``) to a node id or raises
    ``_ExprError``. The closures take ``(env, n)`` with ``env`` a dict node id -> array.
    """

    def __init__(self, text: str, resolve: Callable[[str], str]) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.used: set[str] = set()

    # -- token helpers
    def _peek(self, k: int = 0) -> tuple[str, str]:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def _is_kw(self, word: str, k: int = 0) -> bool:
        kind, val = self._peek(k)
        return kind == "id" and val.lower() == word

    def _is_op(self, op: str, k: int = 0) -> bool:
        kind, val = self._peek(k)
        return kind == "op" and val == op

    def _take(self) -> tuple[str, str]:
        t = self._peek()
        self.i += 1
        return t

    def _expect_op(self, op: str) -> None:
        if not self._is_op(op):
            raise _ExprError(f"expected {op!r}, got {self._peek()[1]!r}")
        self.i += 1

    def _expect_kw(self, word: str) -> None:
        if not self._is_kw(word):
            raise _ExprError(f"expected {word.upper()}, got {self._peek()[1]!r}")
        self.i += 1

    def compile(self) -> Callable[[dict, int], Any]:
        f = self._or()
        if self._peek()[0] != "eof":
            raise _ExprError(f"unexpected {self._peek()[1]!r}")
        return f

    # -- grammar
    def _or(self):
        left = self._and()
        while self._is_kw("or"):
            self.i += 1
            right, l0 = self._and(), left
            left = (lambda l, r: lambda e, n: _or(_bool(l(e, n), n), _bool(r(e, n), n)))(l0, right)
        return left

    def _and(self):
        left = self._not()
        while self._is_kw("and"):
            self.i += 1
            right, l0 = self._not(), left
            left = (lambda l, r: lambda e, n: _and(_bool(l(e, n), n), _bool(r(e, n), n)))(l0, right)
        return left

    def _not(self):
        if self._is_kw("not") or self._is_op("!"):
            self.i += 1
            inner = self._not()
            return lambda e, n: 1.0 - _bool(inner(e, n), n)
        return self._cmp()

    def _cmp(self):
        left = self._add()
        while True:
            kind, val = self._peek()
            if kind == "op" and val in ("=", "==", "<>", "!=", "<", "<=", ">", ">=", "<=>"):
                self.i += 1
                right, l0 = self._add(), left
                left = (lambda l, r, o: lambda e, n: _compare(l(e, n), r(e, n), o, n))(l0, right, val)
                continue
            if self._is_kw("is"):
                self.i += 1
                neg = False
                if self._is_kw("not"):
                    neg = True
                    self.i += 1
                self._expect_kw("null")
                l0 = left
                left = (lambda l, ng: lambda e, n: (
                    (~_isnull(l(e, n), n)) if ng else _isnull(l(e, n), n)).astype(float))(l0, neg)
                continue
            neg = False
            if self._is_kw("not") and (self._is_kw("in", 1) or self._is_kw("between", 1)
                                       or self._is_kw("like", 1)):
                neg = True
                self.i += 1
            if self._is_kw("in"):
                self.i += 1
                self._expect_op("(")
                items = [self._or()]
                while self._is_op(","):
                    self.i += 1
                    items.append(self._or())
                self._expect_op(")")
                l0 = left

                def _in(e, n, l=l0, its=items, ng=neg):
                    x = l(e, n)
                    acc = np.zeros(n)
                    for it in its:
                        acc = _or(acc, _compare(x, it(e, n), "=", n))
                    acc = np.where(_isnull(x, n), np.nan, np.where(np.isnan(acc), np.nan, acc))
                    return 1.0 - acc if ng else acc
                left = _in
                continue
            if self._is_kw("between"):
                self.i += 1
                lo = self._add()
                self._expect_kw("and")
                hi = self._add()
                l0 = left

                def _between(e, n, l=l0, a=lo, b=hi, ng=neg):
                    x = l(e, n)
                    r = _and(_compare(x, a(e, n), ">=", n), _compare(x, b(e, n), "<=", n))
                    return 1.0 - r if ng else r
                left = _between
                continue
            if self._is_kw("like"):
                self.i += 1
                kind2, pat = self._take()
                if kind2 != "str":
                    raise _ExprError("LIKE needs a literal pattern")
                rx = re.compile("^" + re.escape(_unquote(pat)).replace("%", ".*").replace("_", ".")
                                + "$", re.S)
                l0 = left

                def _like(e, n, l=l0, r=rx, ng=neg):
                    x = _arr(l(e, n), n)
                    null = _isnull(x, n)
                    m = np.array([bool(r.match(str(v))) if not nl else False
                                  for v, nl in zip(x, null)], dtype=float)
                    m = np.where(null, np.nan, m)
                    return 1.0 - m if ng else m
                left = _like
                continue
            if neg:
                raise _ExprError("dangling NOT")
            return left

    def _add(self):
        left = self._mul()
        while True:
            kind, val = self._peek()
            if kind == "op" and val in ("+", "-", "||"):
                self.i += 1
                right, l0 = self._mul(), left
                if val == "||":
                    left = (lambda l, r: lambda e, n: _concat([l(e, n), r(e, n)], n))(l0, right)
                elif val == "+":
                    left = (lambda l, r: lambda e, n: _num(l(e, n), n) + _num(r(e, n), n))(l0, right)
                else:
                    left = (lambda l, r: lambda e, n: _num(l(e, n), n) - _num(r(e, n), n))(l0, right)
                continue
            return left

    def _mul(self):
        left = self._unary()
        while True:
            kind, val = self._peek()
            if (kind == "op" and val in ("*", "/", "%")) or self._is_kw("div"):
                self.i += 1
                right, l0 = self._unary(), left
                op = "div" if kind == "id" else val
                left = (lambda l, r, o: lambda e, n: _arith(_num(l(e, n), n), _num(r(e, n), n), o))(
                    l0, right, op)
                continue
            return left

    def _unary(self):
        if self._is_op("-"):
            self.i += 1
            inner = self._unary()
            return lambda e, n: -_num(inner(e, n), n)
        if self._is_op("+"):
            self.i += 1
            return self._unary()
        return self._primary()

    def _primary(self):
        kind, val = self._take()
        if kind == "num":
            x = float(re.sub(r"(BD|bd|[LlDdSsYyFf])$", "", val))
            return lambda e, n: x
        if kind == "str":
            s = _unquote(val)
            return lambda e, n: s
        if kind == "op" and val == "(":
            inner = self._or()
            self._expect_op(")")
            return inner
        if kind == "bt":
            return self._column(val[1:-1].replace("``", "`"))
        if kind != "id":
            raise _ExprError(f"unexpected {val!r}")
        low = val.lower()
        if low in ("true", "false"):
            x = 1.0 if low == "true" else 0.0
            return lambda e, n: x
        if low == "null":
            return lambda e, n: None
        if low == "case":
            return self._case()
        if low == "cast" and self._is_op("("):
            return self._cast()
        if self._is_op("("):
            return self._call(low)
        if low in _KEYWORDS:
            raise _ExprError(f"unexpected keyword {val!r}")
        return self._column(val)

    def _column(self, first: str):
        parts = [re.sub(r"#\d+L?$", "", first)]
        while self._is_op(".") and self._peek(1)[0] in ("id", "bt"):
            self.i += 1
            k, v = self._take()
            parts.append(v[1:-1].replace("``", "`") if k == "bt" else re.sub(r"#\d+L?$", "", v))
        node = None
        for cand in (".".join(parts), parts[-1]):
            try:
                node = self.resolve(cand)
                break
            except _ExprError:
                continue
        if node is None:
            raise _ExprError(f"unknown column {'.'.join(parts)!r}")
        self.used.add(node)
        return lambda e, n, k=node: e[k]

    def _case(self):
        subject = None
        if not self._is_kw("when"):
            subject = self._or()
        branches = []
        while self._is_kw("when"):
            self.i += 1
            cond = self._or()
            self._expect_kw("then")
            branches.append((cond, self._or()))
        default = None
        if self._is_kw("else"):
            self.i += 1
            default = self._or()
        self._expect_kw("end")

        def _eval(e, n, subj=subject, brs=branches, dflt=default):
            vals = [v(e, n) for _, v in brs] + ([dflt(e, n)] if dflt else [])
            textual = any(_is_textual(v) for v in vals)
            out = np.empty(n, dtype=object) if textual else np.full(n, np.nan)
            if dflt is not None:
                out[:] = _arr(vals[-1], n) if textual else _num(vals[-1], n)
            done = np.zeros(n, dtype=bool)
            s = subj(e, n) if subj is not None else None
            for (c, _), v in zip(brs, vals):
                cv = _compare(s, c(e, n), "=", n) if s is not None else _bool(c(e, n), n)
                hit = (cv == 1) & ~done
                out[hit] = (_arr(v, n) if textual else _num(v, n))[hit]
                done |= hit
            if dflt is None and textual:
                out[~done] = None
            return out
        return _eval

    def _cast(self):
        self._expect_op("(")
        inner = self._or()
        self._expect_kw("as")
        kind, typ = self._take()
        if kind != "id":
            raise _ExprError("bad CAST type")
        typ = typ.lower()
        scale = None
        if self._is_op("("):
            self.i += 1
            args = []
            while not self._is_op(")"):
                k, v = self._take()
                if k == "num":
                    args.append(int(float(v.rstrip("LlDd"))))
                elif k == "eof":
                    raise _ExprError("unterminated CAST")
            self.i += 1
            if typ == "decimal" and len(args) == 2:
                scale = args[1]
        self._expect_op(")")
        if typ in ("double", "float", "real"):
            return lambda e, n: _num(inner(e, n), n)
        if typ in ("decimal", "numeric", "dec"):
            sc = 0 if scale is None else scale
            return lambda e, n: _round_half_up(_num(inner(e, n), n), sc)
        if typ in ("int", "integer", "bigint", "long", "smallint", "tinyint", "short", "byte"):
            return lambda e, n: np.trunc(_num(inner(e, n), n))
        if typ in ("string", "varchar", "char"):
            def _str(e, n):
                v = inner(e, n)
                if _is_textual(v):
                    return v
                x = _num(v, n)
                out = np.empty(n, dtype=object)
                for i, xi in enumerate(x):
                    out[i] = None if math.isnan(xi) else (str(int(xi)) if xi == int(xi) else repr(xi))
                return out
            return _str
        if typ == "boolean":
            return lambda e, n: _bool(inner(e, n), n)
        raise _ExprError(f"CAST to {typ} not supported")

    def _call(self, name: str):
        self._expect_op("(")
        args = []
        if not self._is_op(")"):
            args.append(self._or())
            while self._is_op(","):
                self.i += 1
                args.append(self._or())
        self._expect_op(")")
        if name in _NUMERIC_FUNCS and len(args) == 1:
            fn, a = _NUMERIC_FUNCS[name], args[0]

            def _f(e, n, fn=fn, a=a):
                with np.errstate(all="ignore"):
                    return fn(_num(a(e, n), n))
            return _f
        if name == "round" and len(args) in (1, 2):
            a = args[0]
            d = args[1] if len(args) == 2 else (lambda e, n: 0.0)
            return lambda e, n: _round_half_up(_num(a(e, n), n), int(np.nanmax(_num(d(e, n), 1))))
        if name in ("pow", "power") and len(args) == 2:
            return lambda e, n: np.power(_num(args[0](e, n), n), _num(args[1](e, n), n))
        if name in ("coalesce", "nvl", "ifnull") and args:
            return lambda e, n: _coalesce([a(e, n) for a in args], n)
        if name == "isnull" and len(args) == 1:
            return lambda e, n: _isnull(args[0](e, n), n).astype(float)
        if name == "isnotnull" and len(args) == 1:
            return lambda e, n: (~_isnull(args[0](e, n), n)).astype(float)
        if name in ("greatest", "least") and args:
            red = np.fmax if name == "greatest" else np.fmin

            def _gl(e, n, red=red):
                vals = [_num(a(e, n), n) for a in args]
                out = vals[0]
                for v in vals[1:]:
                    out = red(out, v)
                return out
            return _gl
        if name in ("if", "iff") and len(args) == 3:
            c, a, b = args

            def _if(e, n):
                cv = _bool(c(e, n), n) == 1
                va, vb = a(e, n), b(e, n)
                if _is_textual(va) or _is_textual(vb):
                    return np.where(cv, _arr(va, n), _arr(vb, n))
                return np.where(cv, _num(va, n), _num(vb, n))
            return _if
        if name in ("upper", "lower", "trim") and len(args) == 1:
            a = args[0]
            meth = {"upper": str.upper, "lower": str.lower, "trim": str.strip}[name]

            def _s(e, n, a=a, meth=meth):
                x = _arr(a(e, n), n)
                return np.array([None if (v is None or (isinstance(v, float) and math.isnan(v)))
                                 else meth(str(v)) for v in x], dtype=object)
            return _s
        if name == "concat" and args:
            return lambda e, n: _concat([a(e, n) for a in args], n)
        raise _ExprError(f"function {name}() not supported")


def _concat(vals: list, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    null = np.zeros(n, dtype=bool)
    parts = []
    for v in vals:
        null |= _isnull(v, n)
        parts.append(_arr(v, n))
    for i in range(n):
        out[i] = None if null[i] else "".join(str(p[i]) for p in parts)
    return out


def _arith(a: np.ndarray, b: np.ndarray, op: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        if op == "*":
            return a * b
        bad = b == 0
        if op == "/":
            r = a / b
        elif op == "%":
            r = np.fmod(a, b)
        else:
            r = np.trunc(a / b)
    return np.where(bad, np.nan, r)


def _unquote(s: str) -> str:
    q = s[0]
    body = s[1:-1]
    if q == "'":
        body = body.replace("''", "'")
    return re.sub(r"\\(.)", r"\1", body)


def compile_expression(text: str, resolve: Callable[[str], str]) -> tuple[Callable, set[str]]:
    """Compile a SQL expression; returns (fn(env, n) -> array or scalar, node ids it reads)."""
    c = _Compiler(text, resolve)
    fn = c.compile()
    return fn, c.used


# ============================================================================ small helpers
def _to_array(s: pd.Series) -> np.ndarray:
    """A sample column as float64 (numbers, booleans, decimals, dates) or an object array."""
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return (s.astype("int64").to_numpy() / 86400e9).astype(float)
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("decimal", "integer", "floating", "mixed-integer-float", "boolean"):
        return pd.to_numeric(s.astype(object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if kind in ("date", "datetime", "datetime64"):
        return (pd.to_datetime(s, errors="coerce").astype("int64").to_numpy() / 86400e9).astype(float)
    out = s.astype(object).to_numpy(copy=True)
    out[np.asarray(pd.isna(out), dtype=bool)] = None
    return out


def _neq(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise 'differs', with NULL equal to NULL and a tiny tolerance for floats."""
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            same = np.isclose(a, b, rtol=1e-9, atol=1e-12) | (np.isnan(a) & np.isnan(b))
        return ~same
    na, nb = np.asarray(pd.isna(a), bool), np.asarray(pd.isna(b), bool)
    eq = np.asarray(a.astype(object) == b.astype(object), dtype=bool)
    return ~(eq | (na & nb))


def _is_numeric(a: np.ndarray) -> bool:
    return a.dtype.kind == "f"


def _codes(x: np.ndarray, cats: pd.Index) -> np.ndarray:
    """Category codes: index in ``cats``, len(cats) for NULL, -1 for unseen."""
    null = np.asarray(pd.isna(x), dtype=bool)
    codes = np.full(len(x), -1, dtype=np.int64)
    if (~null).any():
        codes[~null] = cats.get_indexer(x[~null])
    codes[null] = len(cats)
    return codes


def _cats(x: np.ndarray) -> pd.Index:
    vals = pd.unique(x[~np.asarray(pd.isna(x), dtype=bool)])
    try:
        vals = np.sort(vals)
    except TypeError:
        vals = np.array(sorted(vals, key=str), dtype=object)
    return pd.Index(vals)


def _kish(w: np.ndarray) -> float:
    s = w.sum()
    return float(s * s / max((w * w).sum(), 1e-300))


def _weighted_ks(xb, wb, xc, wc) -> float:
    """p-value of a weighted two-sample KS test (NULL sorts last, as +inf)."""
    xb = np.where(np.isnan(xb), np.inf, xb)
    xc = np.where(np.isnan(xc), np.inf, xc)
    allx = np.concatenate([xb, xc])
    order = np.argsort(allx, kind="mergesort")
    wsb = np.concatenate([wb / wb.sum(), np.zeros(len(xc))])[order]
    wsc = np.concatenate([np.zeros(len(xb)), wc / wc.sum()])[order]
    diff = np.cumsum(wsb) - np.cumsum(wsc)
    xs = allx[order]
    last = np.r_[xs[1:] != xs[:-1], True]  # evaluate the ECDFs only after ties
    d = float(np.max(np.abs(diff[last]))) if last.any() else 0.0
    nb, nc = _kish(wb), _kish(wc)
    en = math.sqrt(nb * nc / (nb + nc))
    return float(stats.kstwobign.sf(d * en)) if d > 0 else 1.0


def _weighted_chi2(cb, wb, cc, wc) -> float:
    """p-value of a chi-square homogeneity test on weighted category counts (scaled to Kish n)."""
    k = int(max(cb.max(initial=0), cc.max(initial=0))) + 1
    tb = np.bincount(cb, weights=wb, minlength=k)
    tc = np.bincount(cc, weights=wc, minlength=k)
    tb = tb / tb.sum() * _kish(wb)
    tc = tc / tc.sum() * _kish(wc)
    keep = (tb + tc) > 0
    if keep.sum() < 2:
        return 1.0
    table = np.vstack([tb[keep], tc[keep]])
    exp = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi = float(((table - exp) ** 2 / np.maximum(exp, 1e-12)).sum())
    return float(stats.chi2.sf(chi, keep.sum() - 1))


def _holm(pvals: list[float]) -> list[float]:
    m = len(pvals)
    order = np.argsort(pvals)
    adj = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvals[i]))
        adj[i] = running
    return adj.tolist()


# ============================================================================ the run data
@dataclass
class _Run:
    values: dict[str, np.ndarray]
    w: np.ndarray
    n: int
    N: float
    recorded: np.ndarray | None  # the recorded __contrib__ column of the target, if any

    def take(self, idx: np.ndarray) -> "_Run":
        return _Run({k: v[idx] for k, v in self.values.items()}, self.w[idx], len(idx), self.N,
                    None if self.recorded is None else self.recorded[idx])


# ============================================================================ fitted mechanisms
class _Table:
    """Exact map from parent-value tuples to a value, with an optional nearest-neighbour fallback."""

    def __init__(self, parents: list[str], X: dict[str, np.ndarray], y: np.ndarray, *,
                 knn: bool, binary: bool = False) -> None:
        self.parents = parents
        self.binary = binary
        self.numeric_out = _is_numeric(y)
        self.cats = [_cats(X[p]) for p in parents]
        codes = [_codes(X[p], c) for p, c in zip(parents, self.cats)]
        key = self._key(codes)
        df = pd.DataFrame({"k": key, "y": y})
        g = df.groupby("k", sort=True)["y"]
        if self.numeric_out:
            agg = g.mean()
            if binary:
                agg = (agg >= 0.5).astype(float)
        else:
            agg = g.first()
        self.index = pd.Index(agg.index)
        self.vals = agg.to_numpy()
        fitted = self.vals[self.index.get_indexer(key)]
        self.inconsistency = float(_neq(np.asarray(fitted), y).mean()) if len(y) else 0.0
        self.tree = None
        if knn and len(self.vals):
            # one feature row per distinct key: numeric parents standardised, discrete far apart
            first = df.drop_duplicates("k").set_index("k").index
            pos = pd.Index(key).get_indexer(first)  # any row of each key
            self._num = [p for p in parents if _is_numeric(X[p])]
            self._loc = {p: (np.nanmean(X[p]) if np.isfinite(X[p]).any() else 0.0,
                             (np.nanstd(X[p]) or 1.0) if np.isfinite(X[p]).any() else 1.0)
                         for p in self._num}
            feats = self._features({p: X[p][pos] for p in parents})
            from scipy.spatial import cKDTree
            self.tree = cKDTree(feats)
            self.tree_vals = self.vals[self.index.get_indexer(first)]

    def _key(self, codes: list[np.ndarray]) -> np.ndarray:
        if len(codes) == 1:
            return codes[0]
        radix = [len(c) + 2 for c in self.cats]
        if np.prod([float(r) for r in radix]) < 2 ** 62:
            key = np.zeros(len(codes[0]), dtype=np.int64)
            for c, r in zip(codes, radix):
                key = key * r + (c + 1)
            return key
        return pd.MultiIndex.from_arrays(codes).to_flat_index().map(hash).to_numpy()

    def _features(self, X: dict[str, np.ndarray]) -> np.ndarray:
        cols = []
        for p, cats in zip(self.parents, self.cats):
            x = X[p]
            if p in self._loc:
                m, s = self._loc[p]
                z = (x - m) / s
                cols.append(np.where(np.isnan(z), 0.0, z))
                cols.append(np.isnan(x) * 1e3)
            else:
                cols.append(_codes(x, cats) * 1e3)
        return np.column_stack(cols) if cols else np.zeros((len(next(iter(X.values()))), 1))

    def lookup(self, X: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        codes = [_codes(X[p], c) for p, c in zip(self.parents, self.cats)]
        unseen = np.zeros(len(codes[0]), dtype=bool)
        for c in codes:
            unseen |= c < 0
        pos = self.index.get_indexer(self._key(codes))
        pos[unseen] = -1
        found = pos >= 0
        out = np.full(len(pos), np.nan) if self.numeric_out else np.empty(len(pos), dtype=object)
        out[found] = self.vals[pos[found]]
        return out, found

    def __call__(self, X: dict[str, np.ndarray]) -> np.ndarray:
        out, found = self.lookup(X)
        if (~found).any() and self.tree is not None:
            miss = ~found
            feats = self._features({p: X[p][miss] for p in self.parents})
            _, j = self.tree.query(feats, k=1)
            out[miss] = self.tree_vals[j]
        return out


@dataclass
class _RootSpec:
    name: str
    discrete: bool
    cond: list[str]


class _RootModel:
    """Weighted empirical conditionals of one root column given the cell of its conditioning columns,
    for both runs, with quantile coupling through per-unit uniforms."""

    def __init__(self, spec: _RootSpec, b: _Run, c: _Run, discrete: dict[str, bool], cfg, rng) -> None:
        self.spec = spec
        self.enc = []
        for col in spec.cond:
            pooled = np.concatenate([b.values[col], c.values[col]])
            if discrete[col]:
                self.enc.append(("d", _cats(pooled)))
            else:
                fin = pooled[np.isfinite(pooled)]
                edges = np.unique(np.quantile(fin, [0.25, 0.5, 0.75])) if len(fin) else np.array([])
                self.enc.append(("n", edges))
        kb, kc = self._keys(b.values), self._keys(c.values)
        # main cells: enough units in both runs
        ub, nb = np.unique(kb, return_counts=True)
        uc, nc = np.unique(kc, return_counts=True)
        cnt = pd.DataFrame({"b": pd.Series(nb, ub), "c": pd.Series(nc, uc)}).fillna(0)
        main = cnt[(cnt.b >= cfg.min_cell) & (cnt.c >= cfg.min_cell)]
        main = main.assign(t=main.b + main.c).sort_values("t", ascending=False).head(cfg.max_cells)
        self.cell_index = pd.Index(np.sort(main.index.to_numpy()))
        self.rest = len(self.cell_index)
        self.marg = self.rest + 1
        x_all = np.concatenate([b.values[spec.name], c.values[spec.name]])
        self.value_cats = _cats(x_all) if spec.discrete else None
        self.tables = {}
        cells_b, cells_c = self._cells(kb), self._cells(kc)
        self.cells_b = cells_b
        for tag, run, cells in (("b", b, cells_b), ("c", c, cells_c)):
            x = run.values[spec.name]
            sortkey = self._sortkey(x)
            # marginal copy appended as cell `marg`
            cells2 = np.concatenate([cells, np.full(len(x), self.marg)])
            sk2 = np.concatenate([sortkey, sortkey])
            w2 = np.concatenate([run.w, run.w])
            order = np.lexsort((sk2, cells2))
            cs, ws = cells2[order], w2[order]
            tot = np.bincount(cs, weights=ws, minlength=self.marg + 1)
            cum = np.cumsum(ws)
            start = np.r_[0.0, np.cumsum(tot)][cs]
            frac = (cum - start) / np.maximum(tot[cs], 1e-300)
            present = tot > 0
            self.tables[tag] = dict(g=cs + frac, vals=np.concatenate([x, x])[order],
                                    present=present, order=order)
        # per-unit uniforms of the baseline units (their own rank in their own cell)
        t = self.tables["b"]
        inv = np.empty(len(t["order"]), dtype=np.int64)
        inv[t["order"]] = np.arange(len(t["order"]))
        pos = inv[: b.n]
        g_end = t["g"][pos]
        wpos = b.w / np.maximum(np.bincount(cells_b, weights=b.w, minlength=self.marg + 1)[cells_b],
                                1e-300)
        jitter = rng.uniform(0.02, 0.98, size=b.n)
        self.u = (g_end - cells_b) - wpos * (1 - jitter)
        self.u = np.clip(self.u, 1e-12, 1 - 1e-12)

    def _sortkey(self, x: np.ndarray) -> np.ndarray:
        if self.spec.discrete:
            return _codes(x, self.value_cats).astype(float)
        return np.where(np.isnan(x), np.inf, x)

    def _keys(self, values: dict[str, np.ndarray]) -> np.ndarray:
        n = len(values[self.spec.name])
        key = np.zeros(n, dtype=np.int64)
        for col, (kind, e) in zip(self.spec.cond, self.enc):
            x = values[col]
            if kind == "d":
                code, radix = _codes(x, e) + 1, len(e) + 2
            else:
                code = np.where(np.isnan(x), len(e) + 1, np.searchsorted(e, x, side="right"))
                radix = len(e) + 2
            key = key * radix + code
        return key

    def _cells(self, keys: np.ndarray) -> np.ndarray:
        pos = self.cell_index.get_indexer(keys)
        return np.where(pos < 0, self.rest, pos).astype(np.int64)

    def draw(self, tag: str, values: dict[str, np.ndarray]) -> np.ndarray:
        cells = self._cells(self._keys(values)) if self.spec.cond else np.zeros(
            len(self.u), dtype=np.int64)
        t = self.tables[tag]
        cells = np.where(t["present"][cells], cells, self.marg)
        j = np.searchsorted(t["g"], cells + self.u, side="left")
        j = np.minimum(j, len(t["g"]) - 1)
        return t["vals"][j]

    def test(self, b: _Run, c: _Run) -> float:
        """p-value that this column's conditional distribution changed (Bonferroni over cells)."""
        cb = self._cells(self._keys(b.values)) if self.spec.cond else np.zeros(b.n, np.int64)
        cc = self._cells(self._keys(c.values)) if self.spec.cond else np.zeros(c.n, np.int64)
        xb, xc = b.values[self.spec.name], c.values[self.spec.name]
        ps = []
        for cell in np.unique(np.concatenate([cb, cc])):
            mb, mc = cb == cell, cc == cell
            if mb.sum() < 2 or mc.sum() < 2:
                continue
            if self.spec.discrete:
                p = _weighted_chi2(_codes(xb[mb], self.value_cats) + 1, b.w[mb],
                                   _codes(xc[mc], self.value_cats) + 1, c.w[mc])
            else:
                p = _weighted_ks(xb[mb], b.w[mb], xc[mc], c.w[mc])
            ps.append(p)
        if not ps:
            return 1.0
        return float(min(1.0, min(ps) * len(ps)))


# ============================================================================ the segment model
@dataclass
class _DetSpec:
    node: str
    parents: list[str]
    selection: bool
    fn: dict[str, Callable | None]  # compiled expression per run tag ('b', 'c'), when it verified
    code_changed: bool


@dataclass
class _Spec:
    target: str
    agg: str
    fn: str
    input: str | None
    reach: list[str]
    where_fn: Callable | None
    roots: list[_RootSpec]
    discrete: dict[str, bool]
    lookups: dict[str, list[str]]
    det: dict[str, _DetSpec]
    order: list[str]  # lookups and deterministic nodes, topologically sorted
    parents: dict[str, list[str]]  # of lookups and deterministic nodes


class _Fitted:
    """The data-dependent part of the model (rebuilt for every bootstrap replicate)."""

    def __init__(self, spec: _Spec, b: _Run, c: _Run, cfg: AttributionConfig, rng) -> None:
        self.roots = {r.name: _RootModel(r, b, c, spec.discrete, cfg, rng) for r in spec.roots}
        self.tables: dict[str, dict[str, _Table]] = {}
        for node, keys in spec.lookups.items():
            sel = node in spec.det or node.endswith("__never__")
            self.tables[node] = {
                tag: _Table(keys, {k: r.values[k] for k in keys}, r.values[node], knn=False)
                for tag, r in (("b", b), ("c", c))}
        for node, d in spec.det.items():
            ps = d.parents
            fits: dict[str, _Table] = {}
            need = {"b", "c"} if d.code_changed or d.fn["b"] is None or d.fn["c"] is None else set()
            for tag, r in (("b", b), ("c", c)):
                if tag in need and d.fn[tag] is None:
                    fits[tag] = _Table(ps, {p: r.values[p] for p in ps}, r.values[node], knn=True,
                                       binary=d.selection)
            if d.fn["b"] is None and d.fn["c"] is None and not d.code_changed:
                pooled = {p: np.concatenate([b.values[p], c.values[p]]) for p in ps}
                y = np.concatenate([b.values[node], c.values[node]]) if _is_numeric(
                    b.values[node]) == _is_numeric(c.values[node]) else b.values[node]
                fits["pool"] = _Table(ps, pooled, y, knn=True, binary=d.selection)
            self.tables[node] = fits


def _mechanism_fn(spec: _Spec, fit: _Fitted, node: str, tag: str) -> Callable[[dict, int], np.ndarray]:
    """The function computing ``node`` from its parents under run ``tag``'s mechanism."""
    if node in spec.lookups:
        own, other = fit.tables[node][tag], fit.tables[node]["c" if tag == "b" else "b"]

        def _lk(env, n):
            v, found = own.lookup(env)
            if (~found).any():
                v2, f2 = other.lookup({k: x[~found] for k, x in env.items()})
                v[~found] = v2
            if node in spec.det and spec.det[node].selection:
                v = np.where(np.isnan(v.astype(float)), 0.0, v.astype(float))
            return v
        return _lk
    d = spec.det[node]
    if not d.code_changed and d.fn["b"] is None and d.fn["c"] is None:
        tab = fit.tables[node]["pool"]
        return lambda env, n: tab(env)
    if not d.code_changed:  # same code: use whichever run's compiled expression verified
        f = d.fn["b"] or d.fn["c"]
    else:
        f = d.fn[tag]
    if f is not None:
        def _ex(env, n, f=f, sel=d.selection):
            v = f(env, n)
            v = _arr(v, n) if not isinstance(v, np.ndarray) else v
            if sel:
                v = (_bool(v, n) == 1).astype(float)
            return v
        return _ex
    tab = fit.tables[node][tag]
    return lambda env, n: tab(env)


def _contrib(spec: _Spec, env: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    reach = np.ones(n)
    for s in spec.reach:
        reach = reach * (_num(env[s], n) == 1)
    if spec.where_fn is not None:
        reach = reach * (_bool(spec.where_fn(env, n), n) == 1)
    if spec.input is not None:
        x = _num(env[spec.input], n)
        ok = ~np.isnan(x)
        x0 = np.where(ok, x, 0.0)
    else:
        ok, x0 = np.ones(n, dtype=bool), np.ones(n)
    d = reach * ok
    c = d.astype(float) if spec.fn == "count" or spec.agg == "count" else x0 * reach
    return c, d.astype(float)


def _metric_from(spec: _Spec, c: np.ndarray, d: np.ndarray, w: np.ndarray) -> float:
    """Mean contribution per driving row (sum/count) or the ratio of sums (mean)."""
    if spec.agg == "mean":
        den = float((w * d).sum())
        return float((w * c).sum()) / den if den else float("nan")
    return float((w * c).sum() / w.sum())


def _evaluate(spec: _Spec, fit: _Fitted, base: _Run, switched: frozenset) -> float:
    env = dict(base.values)
    changed: dict[str, np.ndarray] = {}
    n = base.n
    for r in spec.roots:
        if r.name not in switched and not any(cn in changed for cn in r.cond):
            continue
        new = fit.roots[r.name].draw("c" if r.name in switched else "b", env)
        diff = _neq(new, base.values[r.name])
        if diff.any():
            env[r.name] = new
            changed[r.name] = diff
    for node in spec.order:
        if node in switched:
            dirty = np.ones(n, dtype=bool)
        else:
            dirty = None
            for p in spec.parents[node]:
                if p in changed:
                    dirty = changed[p] if dirty is None else (dirty | changed[p])
            if dirty is None:
                continue
        idx = np.flatnonzero(dirty)
        fn = _mechanism_fn(spec, fit, node, "c" if node in switched else "b")
        sub = {p: env[p][idx] for p in spec.parents[node]}
        val = fn(sub, len(idx))
        old = base.values[node]
        new = old.copy() if old.dtype == object or _is_numeric(np.asarray(val)) else old.astype(object)
        if new.dtype.kind == "f" and not _is_numeric(np.asarray(val)):
            val = _num(val, len(idx))
        new[idx] = val
        diff = _neq(new, old)
        if diff.any():
            env[node] = new
            changed[node] = diff
    c, d = _contrib(spec, env, n)
    return _metric_from(spec, c, d, base.w)


def _shapley(spec, fit, base, players: list[str], cfg: AttributionConfig, rng) -> tuple[
        np.ndarray, float, float]:
    """Shapley values of the players for the metric; also v(empty) and v(all)."""
    k = len(players)
    cache: dict[frozenset, float] = {}

    def v(s: frozenset) -> float:
        if s not in cache:
            cache[s] = _evaluate(spec, fit, base, s)
        return cache[s]

    phi = np.zeros(k)
    if k == 0:
        return phi, v(frozenset()), v(frozenset())
    if k <= cfg.max_exact_players:
        fact = [math.factorial(i) for i in range(k + 1)]
        for j, pj in enumerate(players):
            others = [p for p in players if p != pj]
            for size in range(k):
                wgt = fact[size] * fact[k - size - 1] / fact[k]
                for s in combinations(others, size):
                    fs = frozenset(s)
                    phi[j] += wgt * (v(fs | {pj}) - v(fs))
    else:
        perms = []
        for _ in range(max(1, cfg.n_permutations // 2)):
            p = list(rng.permutation(k))
            perms += [p, p[::-1]]
        for perm in perms:
            cur: frozenset = frozenset()
            prev = v(cur)
            for j in perm:
                cur = cur | {players[j]}
                val = v(cur)
                phi[j] += val - prev
                prev = val
        phi /= len(perms)
    return phi, v(frozenset()), v(frozenset(players))
