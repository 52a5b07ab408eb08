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

import dataclasses
import json
import math
import re
import time
import warnings
import zlib
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Callable

import networkx as nx
import numpy as np
import pandas as pd
from scipy import stats

from .errors import SparkCausalError, UnknownOutputError
from .result import Attribution, AttributionItem
from .sampling import UNIT
from .lineage import gating_selections

__all__ = ["SegmentSamples", "RunSamples", "AttributionConfig", "attribute_samples", "FittedModel",
           "fit_model", "evaluate", "observed_metric", "refit"]


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
class Exact:
    """What the runs' exact statistics (measured over every row, ``stats.parquet``) tell of a target:
    its values as the job wrote them, and how far each measured node's mean or NULL share moved, in
    standard errors of the whole data (``compare._exact_shifts``).

    Why: a sample of 20,000 of 300,000 rows estimates the metric's change with 4x the run-to-run
    spread of the metric itself, so a 1.5% rise that the job's own numbers put at 5 spreads read
    "no significant change"; the exact figures carry none of that noise."""

    baseline: float
    current: float
    shifts: dict[str, float] = field(default_factory=dict)


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
    rescue: when the metric moved significantly but no mechanism was flagged, the most suspicious
        unflagged mechanisms (unadjusted p < alpha, at most 3) join the attribution.
    min_effect: a mechanism that changed significantly makes the verdict ``significant`` when its
        contribution is beyond its bootstrap error, or at least this fraction of the baseline value,
        and its bootstrap interval excludes 0 (an aggregate whose interval does not is confirmed by
        its drill-down instead, ``compare.drill_down``).
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
    min_effect: float = 0.01


# ============================================================================ SQL expressions
class _ExprError(Exception):
    """The expression cannot be compiled; the caller falls back to a fitted mechanism."""


class _NoRows(Exception):
    """A run's driving relation had no rows at all (yesterday's partition never arrived)."""

    def __init__(self, driving: str, values: list[float]) -> None:
        super().__init__(driving)
        self.driving, self.values = driving, values


def _no_rows_result(e: _NoRows, target: str, agg: str, baseline: str, current: str, seed: int) -> Attribution:
    """With no driving rows in one run there is nothing to model: the whole change is the volume."""
    vb, vc = (float(v) for v in e.values)
    change = vc - vb
    empty = "current" if vc == 0 and vb != 0 else "baseline" if vb == 0 and vc != 0 else "both"
    item = AttributionItem(node=f"{e.driving}.__rows__", kind="volume", table=e.driving, stage=None,
                           column="__rows__", contribution=change, ci_low=change, ci_high=change,
                           mechanism_changed=True, p_value=0.0)
    return Attribution(target=target, agg=agg, where=None, baseline_run=baseline, current_run=current,
                       baseline_value=vb, current_value=vc, change=change, significant=bool(change),
                       attributions=[item], code_changes=[],
                       warnings=[f"{e.driving} had no rows in the {empty} run: the whole change is its volume"],
                       seed=seed, unexplained=0.0, details={"no_rows": empty})


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


def _days(text: str) -> float | None:
    """A date or timestamp written as text, as the samples hold dates: days since 1970-01-01."""
    try:  # whole seconds, not nanoseconds: an open end written as 9999-12-31 is beyond pandas' ns range
        seconds = pd.Timestamp(text).to_datetime64().astype("datetime64[s]").astype(np.int64)
    except (ValueError, TypeError, OverflowError):
        return None
    return float(seconds) / 86400


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


def _num_or_day(v: Any, n: int) -> np.ndarray:
    """``_num``, except that a text literal that is a date (``'2026-11-02'``) is its day number: the
    samples hold date and timestamp columns as days, and SQL compares them with such literals."""
    if isinstance(v, str) and (day := _days(v)) is not None and np.isnan(_num(v, 1)[0]):
        return np.full(n, day)
    return _num(v, n)


def _is_textual(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, np.ndarray) and v.dtype == object)


def _compare(a: Any, b: Any, op: str, n: int) -> np.ndarray:
    null = _isnull(a, n) | _isnull(b, n)
    if _is_textual(a) or _is_textual(b):
        sa = pd.Series(_arr(a, n), dtype=object).where(~null, "")
        sb = pd.Series(_arr(b, n), dtype=object).where(~null, "")
        if not (_is_textual(a) and _is_textual(b)):  # text against number: compare as numbers
            sa, sb = pd.Series(_num_or_day(a, n)), pd.Series(_num_or_day(b, n))
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


def _in_list(x: Any, values: list, n: int) -> np.ndarray | None:
    """``x IN (literals)`` at once, when the literals are numbers against numbers or text against text
    and none is NULL (a slice of the thousands of users an outer slice keeps took minutes as a chain of
    ORs); None for any other list, which is compared item by item."""
    if not values or any(np.ndim(v) or v is None for v in values) or any(_isnull(v, 1)[0] for v in values):
        return None
    if _is_textual(x) and all(isinstance(v, str) for v in values):
        return np.isin(_arr(x, n).astype(str), [str(v) for v in values]).astype(float)
    if not _is_textual(x) and not any(_is_textual(v) for v in values):
        return np.isin(_num(x, n), [float(_num(v, 1)[0]) for v in values]).astype(float)
    return None


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

    def __init__(self, text: str, resolve: Callable[[str], str],
                 decoders: dict[str, np.ndarray] | None = None, fields: bool = False) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.resolve = resolve
        self.decoders = decoders or {}
        self.fields = fields  # ``addr.region`` may be a field of a struct column held as JSON text
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
                    values = [it(e, n) for it in its]
                    acc = _in_list(x, values, n)
                    if acc is None:
                        acc = np.zeros(n)
                        for v in values:
                            acc = _or(acc, _compare(x, v, "=", n))
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
        if low in ("date", "timestamp") and self._peek(0)[0] == "str":  # DATE '2026-11-02'
            day = _days(_unquote(self._take()[1]))
            if day is None:
                raise _ExprError(f"not a {low}: {val}")
            return lambda e, n: day
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
        if node is None and self.fields and len(parts) > 1:
            return self._field(parts)
        if node is None:
            raise _ExprError(f"unknown column {'.'.join(parts)!r}")
        self.used.add(node)
        if node in self.decoders:
            cats = self.decoders[node]
            return lambda e, n, k=node: _decode(e[k], cats)
        return lambda e, n, k=node: e[k]

    def _field(self, parts: list[str]):
        """A field of a struct column (``addr.region``): each category's JSON text, read once."""
        try:
            node = self.resolve(parts[0])
        except _ExprError:
            node = None
        if node is None or node not in self.decoders:
            raise _ExprError(f"unknown column {'.'.join(parts)!r}")
        self.used.add(node)
        values = np.empty(len(self.decoders[node]), dtype=object)
        values[:] = [_json_field(text, parts[1:]) for text in self.decoders[node]]
        return lambda e, n, k=node: _decode(e[k], values)

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
        if typ in ("date", "timestamp"):  # held as days since 1970-01-01 (``_days``); a date is a whole day
            whole = np.floor if typ == "date" else (lambda x: x)
            return lambda e, n: whole(_as_days(inner(e, n), n))
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
        if name == "to_date" and len(args) == 1:
            return lambda e, n: np.floor(_as_days(args[0](e, n), n))
        if name in ("date_trunc", "trunc") and len(args) == 2:  # date_trunc('month', ts), trunc(day, 'MM')
            unit, x = (args[0], args[1]) if name == "date_trunc" else (args[1], args[0])
            return lambda e, n: _truncated_days(_as_days(x(e, n), n), str(_arr(unit(e, 1), 1)[0]))
        raise _ExprError(f"function {name}() not supported")


def _as_days(v: Any, n: int) -> np.ndarray:
    """Dates and times as the samples hold them (days since 1970-01-01), from numbers or text."""
    if _is_textual(v):
        days = [None if _isnull(np.array([x], dtype=object), 1)[0] else _days(str(x)) for x in _arr(v, n)]
        return np.array([np.nan if d is None else d for d in days], dtype=float)
    return _num(v, n)


# Spark's date_trunc/trunc units -> numpy's datetime units (a quarter and a week are whole months and days)
_TRUNC_UNITS = {"year": "Y", "yyyy": "Y", "yy": "Y", "quarter": "Q", "month": "M", "mon": "M", "mm": "M",
                "week": "W", "day": "D", "dd": "D", "hour": "h", "minute": "m", "second": "s"}


def _truncated_days(x: np.ndarray, unit: str) -> np.ndarray:
    """``date_trunc(unit, x)`` of days since 1970-01-01: the start of the year, quarter, month, week
    (Monday), day, hour, minute or second holding it, in the same days."""
    u = _TRUNC_UNITS.get(unit.strip().lower())
    if u is None:
        raise _ExprError(f"date_trunc unit {unit!r} not supported")
    out = np.full(len(x), np.nan)
    ok = np.isfinite(x)
    t = np.round(x[ok] * 86400).astype(np.int64).astype("datetime64[s]")
    if u == "W":  # 1970-01-05 was a Monday
        d = np.floor(x[ok])
        out[ok] = d - (d + 3) % 7
        return out
    if u == "Q":
        months = t.astype("datetime64[M]").astype(np.int64)
        t = (months - months % 3).astype("datetime64[M]")
    else:
        t = t.astype(f"datetime64[{u}]")
    out[ok] = t.astype("datetime64[s]").astype(np.int64) / 86400
    return out


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


def compile_expression(text: str, resolve: Callable[[str], str],
                       decoders: dict[str, np.ndarray] | None = None, fields: bool = False) -> tuple[Callable, set[str]]:
    """Compile a SQL expression; returns (fn(env, n) -> array or scalar, node ids it reads).

    ``decoders`` maps node ids whose values are category codes to their category arrays. With
    ``fields``, ``a.b`` that names no column is field ``b`` of a struct column ``a`` (coded JSON text):
    for the keys a ``where`` slices by, not for the model's functions, whose struct stays one value."""
    c = _Compiler(text, resolve, decoders, fields)
    fn = c.compile()
    return fn, c.used


# ============================================================================ small helpers
def _to_array(s: pd.Series) -> np.ndarray:
    """A sample column as float64 (numbers, booleans, decimals, dates) or an object array."""
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return _nat_days(s)
    kind = pd.api.types.infer_dtype(s, skipna=True)
    if kind in ("decimal", "integer", "floating", "mixed-integer-float", "boolean"):
        return pd.to_numeric(s.astype(object), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if kind in ("date", "datetime", "datetime64"):
        return _nat_days(pd.to_datetime(s, errors="coerce"))
    out = s.astype(object).to_numpy(copy=True)
    out[np.asarray(pd.isna(out), dtype=bool)] = None
    return out


_IN_SLICE = "__in_slice__"  # a unit's membership of a ``where`` slice by derived keys (``fit_model``)


def _nat_days(s: pd.Series) -> np.ndarray:
    """Dates and times as days since 1970-01-01, a NULL (NaT) as NaN: as int64 a NaT is the smallest
    integer, a date 292,000 years ago (the NULL first day of each LAG window made the job's window
    look unreproducible, and NULL dates moved means and ranges)."""
    days = s.astype("int64").to_numpy() / 86400e9
    days[np.asarray(s.isna(), dtype=bool)] = np.nan
    return days.astype(float)


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


def _numeric_text(runs: list[np.ndarray]) -> list[np.ndarray] | None:
    """A source column of numbers written as text (a CSV read without a schema) as numbers in every
    run, so that it is compared and modelled as one (as text every value is a category of its own);
    None unless 99% of one run's non-NULL values parse and at least half of every other run's. Text
    that does not parse ('n/a', '12,50' once a feed changed its decimal separator) becomes NULL, as a
    cast would make it: a run whose format changed has more NULLs in a numeric column, a change its
    tests see, instead of labels of its own."""
    def parsed_numbers(text: pd.Series) -> pd.Series:
        return pd.to_numeric(text, errors="coerce")

    def parsed_days(text: pd.Series) -> pd.Series:
        # dates and times written as text (JSON has no timestamp type): day numbers, as the samples
        # hold a date or timestamp column, so that events moved to yesterday are a shift, not new labels
        return pd.Series(_day_numbers(text), index=text.index)

    for parse in (parsed_numbers, parsed_days):
        out, shares = [], []
        for a in runs:
            if _is_numeric(a):
                out.append(a)
                shares.append(1.0 if parse is parsed_numbers else 0.0)
                continue
            given = pd.Series(a, dtype=object)
            given = given[given.notna()]
            values = parse(given.astype(str).str.strip()) if not given.empty else pd.Series(dtype=float)
            shares.append(float(values.notna().mean()) if not given.empty else math.nan)
            full = np.full(len(a), np.nan)
            full[given.index.to_numpy()] = values.to_numpy(dtype=float, na_value=np.nan)
            out.append(full)
        known = [x for x in shares if not math.isnan(x)]
        if known and max(known) >= 0.99 and min(known) >= 0.5:
            return out
    return None


def _day_numbers(text: pd.Series) -> np.ndarray:
    """ISO dates and timestamps as days since 1970-01-01 (UTC where an offset is given; NaN where the
    text is no such thing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    ok = ts.notna().to_numpy()
    out = np.full(len(text), np.nan)
    out[ok] = ts[ok].dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64) / 86400
    return out


def _json_field(text: Any, path: list[str]) -> Any:
    """Field ``path`` of a struct held as JSON text (case-insensitive, as Spark resolves it), else None."""
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    for name in path:
        if not isinstance(value, dict):
            return None
        value = next((v for k, v in value.items() if k.lower() == name.lower()), None)
    return None if isinstance(value, (dict, list)) else value


def _decode(codes: np.ndarray, cats: np.ndarray) -> np.ndarray:
    """Category codes (float, NaN for NULL, len(cats) for unseen) back to values."""
    out = np.empty(len(codes), dtype=object)
    ok = ~np.isnan(codes)
    ci = codes[ok].astype(np.int64)
    vals = np.empty(len(ci), dtype=object)
    inside = ci < len(cats)
    vals[inside] = cats[ci[inside]]
    out[ok] = vals
    return out


def _encode(values: np.ndarray, index: pd.Index) -> np.ndarray:
    """Values to float category codes (NaN for NULL, len(index) for a value never seen)."""
    null = np.asarray(pd.isna(values), dtype=bool)
    out = np.full(len(values), np.nan)
    if (~null).any():
        pos = index.get_indexer(values[~null]).astype(float)
        pos[pos < 0] = len(index)
        out[~null] = pos
    return out


def _codes(x: np.ndarray, cats: pd.Index) -> np.ndarray:
    """Category codes: index in ``cats``, len(cats) for NULL, -1 for unseen."""
    if x.dtype.kind == "f" and cats.dtype.kind in "fiu":
        cv = cats.to_numpy(dtype=float)
        codes = np.full(len(x), -1, dtype=np.int64)
        null = np.isnan(x)
        if len(cv):
            pos = np.minimum(np.searchsorted(cv, x), len(cv) - 1)
            hit = cv[pos] == x
            codes[hit] = pos[hit]
        codes[null] = len(cats)
        return codes
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


def _pure(node: str, graph: nx.DiGraph, sampled: set[str]) -> bool:
    """A row-wise function of columns that are all in the sample (not a UDF, window, limit, subquery)."""
    if node not in graph:
        return False
    if graph.nodes[node].get("subtype") not in ("transformation", "identity", "expand", "filter"):
        return False
    inputs = [p for p in graph.predecessors(node) if graph.nodes[p].get("kind") != "selection"]
    return bool(inputs) and all(p in sampled for p in inputs)


def _threshold_inputs(node: str, graph: nx.DiGraph, aggregates: set[str], roots: set[str],
                      changed_code: set[str]) -> list[str]:
    """The roots a selection's scalar subquery is computed from (``salary > (SELECT AVG(salary) FROM
    pay)``), when every source it reads is a root of the units and no code of the subquery changed;
    else []. Such a threshold moves with the data (by chance on fresh data of the same distribution):
    it is a function of those roots, not a mechanism of its own that could change."""
    if node not in graph or "scalarsubquery(" not in str(graph.nodes[node].get("expr") or "").lower():
        return []
    subs = [p for p in graph.predecessors(node)
            if graph.nodes[p].get("kind") == "aggregate" and p not in aggregates]
    if not subs:
        return []
    above = set(subs).union(*(nx.ancestors(graph, q) for q in subs))
    if above & changed_code:
        return []
    sources = {a for a in above if graph.nodes[a].get("kind") == "source"}
    return sorted(sources) if sources and sources <= roots else []


def _many_keys(keys: list[str], b: "_Run", c: "_Run") -> bool:
    """True when the join keys take so many values that a typical key has only a few units.

    Counted over both runs pooled: a key seen in both runs (the same customer ids) is an entity whose
    looked-up value can be compared between them, and pooling counts it twice as often."""
    pooled = np.stack([np.concatenate([b.values[k], c.values[k]]).astype(float) for k in keys], axis=1)
    pooled = pooled[~np.isnan(pooled).any(axis=1)]
    if len(pooled) == 0:
        return False
    distinct = len(np.unique(pooled, axis=0))
    return distinct >= 50 and len(pooled) / distinct < 20


def _same_table(keys: list[str], cols: list[str], b: "_Run", c: "_Run", share: float = 0.9) -> bool:
    """Did both runs look ``cols`` up in the same table? At least ``share`` of the keys both runs saw
    (50 at least) got the same values in both, and every key one value per run."""
    if not cols:
        return False

    def table(r: "_Run") -> pd.DataFrame:
        df = pd.DataFrame({f"k{i}": r.values[k] for i, k in enumerate(keys)} | {f"y{j}": r.values[col]
                                                                                for j, col in enumerate(cols)})
        t = df.groupby([f"k{i}" for i in range(len(keys))], dropna=True).agg(["first", "nunique"])
        t.columns = [f"{col}_{how}" for col, how in t.columns]
        return t

    both = table(b).join(table(c), how="inner", lsuffix="_b", rsuffix="_c")
    if len(both) < 50:
        return False
    same = np.ones(len(both), dtype=bool)
    for j in range(len(cols)):
        if (both[f"y{j}_nunique_b"] > 1).any() or (both[f"y{j}_nunique_c"] > 1).any():
            return False
        same &= ~_neq(both[f"y{j}_first_b"].to_numpy(), both[f"y{j}_first_c"].to_numpy())
    return float(same.mean()) >= share


def _per_run_labels(b: "_Run", c: "_Run", x: str) -> bool:
    """Whether text column ``x`` holds labels of each run's own (order ids ``W1-17`` on Monday and
    ``W2-17`` on Tuesday, two lines per order): under 5% of either run's values occur in the other.
    They name units, they do not describe them: a test of their categories only says the days differ."""
    vb, vc = (set(np.unique(r.values[x][~np.isnan(r.values[x])])) for r in (b, c))
    return bool(vb and vc) and len(vb & vc) < 0.05 * min(len(vb), len(vc))


def _run_ids(b: "_Run", c: "_Run", x: str) -> bool:
    """Whether ``x`` holds whole numbers naming each run's own units (employee ids ``100000 * day + i``):
    a function fitted to them on one run says nothing of the other's."""
    vb, vc = b.values[x], c.values[x]
    return _is_numeric(vb) and _is_numeric(vc) and _many_keys([x], b, c) and \
        not any(np.mod(v[np.isfinite(v)], 1).any() for v in (vb, vc)) and _per_run_labels(b, c, x)


def _kish(w: np.ndarray) -> float:
    s = w.sum()
    return float(s * s / max((w * w).sum(), 1e-300))


def _weighted_ks(xb, wb, xc, wc, deff: float = 1.0) -> float:
    """p-value of a weighted two-sample KS test (NULL sorts last, as +inf); ``deff`` divides the
    effective sample sizes (clustered units, ``_design_effect``)."""
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
    nb, nc = _kish(wb) / deff, _kish(wc) / deff
    en = math.sqrt(nb * nc / (nb + nc))
    return float(stats.kstwobign.sf(d * en)) if d > 0 else 1.0


def _weighted_chi2(cb, wb, cc, wc, deff: float = 1.0) -> float:
    """p-value of a chi-square homogeneity test on weighted category counts (scaled to Kish n, over
    the design effect ``deff`` of clustered units)."""
    k = int(max(cb.max(initial=0), cc.max(initial=0))) + 1
    tb = np.bincount(cb, weights=wb, minlength=k)
    tc = np.bincount(cc, weights=wc, minlength=k)
    tb = tb / tb.sum() * _kish(wb) / deff
    tc = tc / tc.sum() * _kish(wc) / deff
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
class _Fanout:
    """A changed number of rows per unit (a join side that repeats keys it did not repeat before): what
    the rows beyond each unit's first add to the metric in each run, and the runs cut to first rows."""

    node: str            # the joined table's rows (``<table>.__rows__``) it is named by
    extra_b: float       # the metric's part in the rows beyond the first, per run
    extra_c: float
    se: float            # standard error of extra_c - extra_b
    p: float             # test of equal mean rows per unit
    rows_b: float        # mean rows per unit, per run
    rows_c: float
    first_b: "_Run"
    first_c: "_Run"


@dataclass
class _Run:
    values: dict[str, np.ndarray]
    w: np.ndarray
    n: int
    N: float
    recorded: np.ndarray | None  # the recorded __contrib__ column of the target, if any
    # cluster codes of the unit, one array per many-valued join key: units sharing a key value share
    # everything looked up through it, so they are not independent (see ``_paired_ss``)
    groups: list[np.ndarray] = field(default_factory=list)
    # which copy of its unit each unit is, in a resample that draws units more than once: a window
    # computed again must not merge the copies of one partition into one partition twice the size
    copies: np.ndarray | None = None
    units: np.ndarray | None = None  # the driving row of each sample row, when an explode repeats them
    # the ``groups`` (their positions) whose key values the sample took whole (a window's partitions): a
    # value's weighted total is then one draw of w times its size, not a sum of independent units'
    whole: frozenset[int] = frozenset()

    def take(self, idx: np.ndarray) -> "_Run":
        copies = pd.Series(idx).groupby(idx).cumcount().to_numpy(float)
        if self.copies is not None:
            copies = copies * (1 + self.copies.max()) + self.copies[idx]
        return _Run({k: v[idx] for k, v in self.values.items()}, self.w[idx], len(idx), self.N,
                    None if self.recorded is None else self.recorded[idx], [g[idx] for g in self.groups], copies,
                    whole=self.whole)


def _fanout(spec: "_Spec", b: _Run, c: _Run, tb: pd.DataFrame, tc: pd.DataFrame, desc: dict,
            graphs: list[nx.DiGraph], cfg: "AttributionConfig") -> _Fanout | None:
    """The runs' rows per unit compared: when a join gives units more (or fewer) rows than before, the
    rows it added are not average rows (duplicated conversions are matched rows, the rows that carry
    revenue), so a volume of rows times the mean row, or the shares of matched rows, would misstate
    them. Their whole part of the metric is theirs; the units' first rows are modelled as usual."""
    if UNIT not in tb.columns or UNIT not in tc.columns or b.n < 2 or c.n < 2:
        return None
    parts = []
    for r, t in ((b, tb), (c, tc)):
        units = pd.Series(_cluster_codes(t[UNIT].to_numpy()))
        first = ~units.duplicated().to_numpy()
        k = units.map(units.value_counts()).to_numpy(float)[first]
        contrib, _ = _observed_contrib(spec, r)
        extra = np.bincount(units.to_numpy(), weights=np.where(first, 0.0, r.w * contrib),
                            minlength=int(units.max()) + 1)[units.to_numpy()[first]]
        wu = r.w[first]
        mean_k = float((wu * k).sum() / wu.sum())
        var_k = float((wu * (k - mean_k) ** 2).sum() / wu.sum())
        parts.append((first, mean_k, var_k / max(int(first.sum()) - 1, 1), float(extra.sum()),
                      float(((extra - extra.mean()) ** 2).sum())))
    (fb, kb, vb, xb, sb), (fc, kc, vc, xc, sc) = parts
    if kb == kc or abs(kc - kb) < 0.005 * max(kb, kc):
        return None
    p = float(2 * stats.norm.sf(abs(kc - kb) / math.sqrt(max(vb + vc, 1e-300))))
    if p >= cfg.alpha:
        return None

    def first_rows(r: _Run, first: np.ndarray) -> _Run:
        w = r.w[first]
        return _Run({x: v[first] for x, v in r.values.items()}, w, int(first.sum()), float(w.sum()),
                    None if r.recorded is None else r.recorded[first],
                    [g[first] for g in r.groups if g is not r.units])  # one row per unit: no unit clusters

    tables = []
    for j in desc.get("joins") or []:
        tables += [t for col in list(j.get("columns") or []) + list(j.get("other_keys") or [])
                   if (t := _node_attr(graphs, col, "table")) and t != desc.get("driving")]
    if not tables:
        return None
    return _Fanout(f"{tables[0]}.__rows__", xb, xc, math.sqrt(sb + sc), p, kb, kc, first_rows(b, fb), first_rows(c, fc))


def _paired_ss(zb: np.ndarray, zc: np.ndarray, gb: list[np.ndarray], gc: list[np.ndarray],
               wb: np.ndarray | None = None, wc: np.ndarray | None = None,
               whole: frozenset[int] = frozenset()) -> float:
    """Sum of squares that a cluster-robust variance of sum(zc) - sum(zb) uses, for per-unit scores
    centred within their run (n, or n x k): the largest over the cluster keys of the sum over key
    values of (sum of zc - sum of zb over the value's units)^2, and at least the independent-units
    value sum(zb^2) + sum(zc^2). ``gb``/``gc``: each key's codes in both runs, one code space.

    Why: units that joined the same dimension row (line items of one order, orders of one customer)
    carry the same looked-up values and often similar others. Counted as independent units, tests and
    standard errors are too sure of themselves: a customer attribute seen through 20,000 orders of
    3,000 customers drawn afresh each run is a sample of 3,000. But a key value both runs hold (the
    same product, priced the same in both) is no draw of either: its units are compared with its own
    units of the other run, and what sets it apart from the other products cancels. Taken as drawn
    clusters, 300 fixed products made a price's design effect 329 and a 40% regional price rise
    invisible. A value one run lacks is a cluster of that run alone, as before.

    With the sampling weights ``wb``/``wc`` (a sampled unit stands for w rows), the same sum of squares
    of the runs' *whole* data, estimated from the sample: each unit's square counts w times, and a key
    value's squared sum loses what the sampling itself adds to it (sum of w(w-1)z^2). That is the spread
    of the exact metric from run to run, which the sample's own noise does not add to; a key value the
    sample took whole (``whole``: positions in ``gb``) is one draw, so its square is divided by its weight."""
    zb, zc = zb.reshape(len(zb), -1), zc.reshape(len(zc), -1)
    wb = np.ones(len(zb)) if wb is None else np.asarray(wb, float)
    wc = np.ones(len(zc)) if wc is None else np.asarray(wc, float)
    sb, sc = wb[:, None] * zb, wc[:, None] * zc
    best = float((sb * zb).sum() + (sc * zc).sum())
    noise = float(((wb - 1)[:, None] * sb * zb).sum() + ((wc - 1)[:, None] * sc * zc).sum())
    sums = []
    for i, (b_, c_) in enumerate(zip(gb, gc)):
        k = int(max(b_.max(initial=-1), c_.max(initial=-1))) + 1
        d = np.zeros((k, zb.shape[1]))
        np.add.at(d, c_, sc)
        np.subtract.at(d, b_, sb)
        sums.append((i in whole, float(((d * d) / _value_weights(b_, c_, wb, wc, k)[:, None]).sum()) if i in whole
                     else float((d * d).sum()) - noise))
    # the sample's own clusters are its design: their spread is the units', not at least the independent
    # one (a parcel's scans of which the window keeps one: its own sum is near 0, the scans' far from it)
    design = [v for is_design, v in sums if is_design]
    return max([max(design) if design else best] + [v for is_design, v in sums if not is_design])


def _row_variance(b: "_Run", c: "_Run") -> float:
    """Run-to-run variance of the change in the number of units when nothing changed: N_b + N_c if
    units arrive one by one (Poisson), more if they arrive in clusters (the line items of an order
    come together). Per key value, the squared change of its units beyond its share of the whole
    change; a value one run lacks counts its squared size. The sample's own noise is taken out: for
    units sampled with probability 1/w, sum of w(w-1) over a value's sampled units is what it adds; for
    values the sample took whole (``_Run.whole``), their square is w times their size's, so it is divided
    by w (parcels of 3.5 scans each, sampled whole at w 12.6, made the rows' spread 24x Poisson's, the
    metric's error 3x the real one, and a 10-sd drift "no significant change")."""
    best = b.N + c.N
    dn = c.N - b.N
    for i, (gb, gc) in enumerate(zip(b.groups, c.groups)):
        k = int(max(gb.max(initial=-1), gc.max(initial=-1))) + 1
        tb, tc = np.bincount(gb, weights=b.w, minlength=k), np.bincount(gc, weights=c.w, minlength=k)
        share = (tb + tc) / max(b.N + c.N, 1e-300)
        sq = (tc - tb - dn * share) ** 2
        if i in b.whole:
            best = max(best, float((sq / _value_weights(gb, gc, b.w, c.w, k)).sum()))
            continue
        noise = (np.bincount(gb, weights=b.w * (b.w - 1), minlength=k).sum()
                 + np.bincount(gc, weights=c.w * (c.w - 1), minlength=k).sum())
        best = max(best, float(sq.sum() - noise))
    return best


def _value_weights(gb: np.ndarray, gc: np.ndarray, wb: np.ndarray, wc: np.ndarray, k: int) -> np.ndarray:
    """Each key value's sampling weight (the mean over its units in both runs; 1 for a value neither holds)."""
    n = np.bincount(gb, minlength=k) + np.bincount(gc, minlength=k)
    t = np.bincount(gb, weights=wb, minlength=k) + np.bincount(gc, weights=wc, minlength=k)
    return np.where(n > 0, t / np.maximum(n, 1), 1.0)


def _bootstrap_clusters(b: "_Run", c: "_Run", cb: np.ndarray, cc: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray] | None:
    """The clusters (each run's codes of one key) a bootstrap resamples whole: those of the key that
    clusters the units' contributions most, when it inflates their variance by over 20%; else None."""
    zb, zc = b.w * cb, c.w * cc
    zb, zc = zb - zb.mean(), zc - zc.mean()
    best, pick = 1.2 * _paired_ss(zb, zc, [], []), None
    for gb, gc in zip(b.groups, c.groups):
        ss = _paired_ss(zb, zc, [gb], [gc])
        if ss > best:
            best, pick = ss, (gb, gc)
    return pick


def _resample(nb: int, nc: int, clusters: tuple[np.ndarray, np.ndarray] | None,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Positions of a bootstrap resample of both runs: units drawn with replacement, or whole clusters
    when units cluster. A key value both runs hold is drawn once for both (its units in each run come
    together, as ``_paired_ss`` compares them); the values of one run alone are drawn within it."""
    if clusters is None:
        return rng.integers(0, nb, nb), rng.integers(0, nc, nc)
    gb, gc = clusters
    ub, uc = np.unique(gb), np.unique(gc)
    shared = np.intersect1d(ub, uc, assume_unique=True)
    both = rng.choice(shared, len(shared)) if len(shared) else shared
    picks = [np.concatenate([both, rng.choice(own, len(own)) if len(own) else own])
             for own in (np.setdiff1d(ub, shared, True), np.setdiff1d(uc, shared, True))]
    return _members(gb, picks[0]), _members(gc, picks[1])


def _members(g: np.ndarray, picks: np.ndarray) -> np.ndarray:
    """Positions of the units of each picked cluster code, as many times as it was picked."""
    order = np.argsort(g, kind="stable")
    sizes = np.bincount(g, minlength=int(max(g.max(initial=-1), picks.max(initial=-1))) + 1)
    starts = np.cumsum(sizes) - sizes
    n = sizes[picks]
    first = np.repeat(starts[picks], n)
    within = np.arange(len(first)) - np.repeat(np.cumsum(n) - n, n)
    return order[first + within]


def _large_groups(gb: np.ndarray, gc: np.ndarray, min_units: int, most: int = 20) -> list[float]:
    """Values of a discrete column that are worth a test of their own: at most ``most`` of them, the
    largest, each with ``min_units`` units in both runs and leaving as many outside it."""
    sizes = []
    vb, nb = np.unique(np.where(np.isnan(gb), np.inf, gb), return_counts=True)
    vc, nc = np.unique(np.where(np.isnan(gc), np.inf, gc), return_counts=True)
    count_c = dict(zip(vc.tolist(), nc.tolist()))
    for v, k in zip(vb.tolist(), nb.tolist()):
        kc = count_c.get(v, 0)
        if min(k, kc) >= min_units and min(len(gb) - k, len(gc) - kc) >= min_units:
            sizes.append((k + kc, v))
    return [np.nan if np.isinf(v) else v for _, v in sorted(sizes, reverse=True)[:most]]


def _constant(xb: np.ndarray, xc: np.ndarray) -> bool:
    """One value (or only NULL) in both runs' units of a cell together: no test there can find a
    change, whatever the data, so it takes no share of the Bonferroni correction (Tarone's rule for
    tests that cannot reach significance). The non-purchase events of a mostly-NULL amount were 5
    of 21 tests of a German drift's p-value."""
    x = np.concatenate([xb, xc])
    return len(x) == 0 or bool(np.all(x == x[0]) or np.all(np.isnan(x)))


def _same(x: np.ndarray, value: float) -> np.ndarray:
    """x == value, with NULL (NaN) equal to NULL."""
    return np.isnan(x) if np.isnan(value) else x == value


def _cluster_codes(key: np.ndarray) -> np.ndarray:
    """Cluster index of each unit by its key value (n, or n x k for a key of k columns); a unit
    without a key (NULL in any column) is a cluster alone."""
    key = key.reshape(len(key), -1)
    null = np.isnan(key).any(axis=1)
    codes = np.unique(np.where(null[:, None], 0.0, key), axis=0, return_inverse=True)[1].astype(np.int64).reshape(-1)
    codes[null] = codes.max(initial=-1) + 1 + np.arange(int(null.sum()))
    return codes


def _design_effect(sb: np.ndarray, b: "_Run", sc: np.ndarray, c: "_Run",
                   groups: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> float:
    """Design effect of the difference between the runs' weighted mean scores (per-unit scores,
    n or n x k): the ratio >= 1 of its cluster-robust (``_paired_ss``) to its independent-units
    variance. ``groups``: the keys' codes in each run, if not all of the runs' keys."""
    if not (len(sb) and len(sc)):
        return 1.0

    def centred(s: np.ndarray, r: "_Run") -> np.ndarray:
        s = s.reshape(len(s), -1)
        return r.w[:, None] * (s - np.average(s, axis=0, weights=r.w)) / r.w.sum()

    zb, zc = centred(sb, b), centred(sc, c)
    iid = float((zb * zb).sum() + (zc * zc).sum())
    gb, gc = groups if groups is not None else (b.groups, c.groups)
    return max(1.0, _paired_ss(zb, zc, gb, gc) / iid) if iid > 0 else 1.0


def _attribute_of_shared_keys(xb: np.ndarray, xc: np.ndarray, gb: np.ndarray, gc: np.ndarray) -> bool:
    """Is a column one value per key value (the key itself, or what it looks up), over key values
    that 90% of each run's units share with the other (a fixed set of products)? Then its units'
    clustering by that key is only how many units each value got, which the column's own test is
    about: a product mix that tripled the toys' share moves each toy's count, and counted as the
    clusters' spread it hid itself."""
    if not (np.isin(gb, gc).mean() >= 0.9 and np.isin(gc, gb).mean() >= 0.9):
        return False  # (users drawn afresh, some again: how many units each got varies beyond chance)
    g, x = np.concatenate([gb, gc]), np.concatenate([xb, xc]).astype(float)
    x = np.where(np.isnan(x), np.inf, x)
    order = np.lexsort((x, g))
    g, x = g[order], x[order]
    new_key = np.r_[True, g[1:] != g[:-1]]
    return bool(np.all(new_key | (x == np.r_[x[:1], x[:-1]])))


# ============================================================================ fitted mechanisms
_FEW_CODES = 100  # a discrete parent of more values is an identifier: its codes' order means nothing


class _Table:
    """Exact map from parent-value tuples to a value, with an optional nearest-neighbour fallback."""

    def __init__(self, parents: list[str], X: dict[str, np.ndarray], y: np.ndarray, *,
                 knn: bool, binary: bool = False, discrete: set[str] | frozenset = frozenset(),
                 y_discrete: bool = False) -> None:
        self.parents = parents
        self.binary = binary
        self.numeric_out = _is_numeric(y)
        self.cats = [_cats(X[p]) for p in parents]
        codes = [_codes(X[p], c) for p, c in zip(parents, self.cats)]
        key = self._key(codes)
        df = pd.DataFrame({"k": key, "y": y})
        g = df.groupby("k", sort=True)["y"]
        if self.numeric_out and not y_discrete:
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
            first, pos = np.unique(key, return_index=True)  # one row of each distinct key
            self._num = [p for p in parents if _is_numeric(X[p]) and p not in discrete]
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
            if p in self._num:
                m, s = self._loc[p]
                z = (x - m) / s
                cols.append(np.where(np.isnan(z), 0.0, z))
                cols.append(np.isnan(x) * 1e3)
            else:  # far apart; an identifier's codes (a policy's) nearer than a category's (a status's)
                cols.append(_codes(x, cats) * (1e3 if len(cats) <= _FEW_CODES else 1e-3))
        return np.column_stack(cols) if cols else np.zeros((len(next(iter(X.values()))), 1))

    def discrete_columns(self) -> list[int]:
        """The feature columns of the discrete parents (codes), whose nearest neighbours are alike only
        where they are equal."""
        out, at = [], 0
        for p in self.parents:
            if p in self._num:
                at += 2
            else:
                out.append(at)
                at += 1
        return out

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
    # other discrete columns before it in the chain: its change test also looks within their groups,
    # so a change confined to one group (one channel's amounts) is seen even when the column is not
    # modelled as depending on that group
    split: list[str] = field(default_factory=list)
    max_cells: int | None = None  # cells of its conditioning kept apart (the rest merge); cfg.max_cells by default
    # cells (their keys; -1: the merged rest) where it did not change though it changed elsewhere: there
    # the other run's version is the reference one's, so their sampling noise is not the change's
    kept: frozenset[int] = frozenset()
    # only its share of NULLs changed (its values did not): the other run's version takes that share
    # and keeps the reference values, so their sampling noise is not the change's either
    nulls_only: bool = False
    # conditioned on a column that changed too, added last (``fit_model``'s invariance step): its test
    # within each group of ``split`` compares the group's units cell by cell (the baseline's reweighted
    # to the current cells' shares), since a group whose mix of that column moved is no change of it;
    # and a combination too rare for a cell of its own falls back to its cell without that column, not
    # to the rest of every cell (invoices moved to a rare plan in one currency were drawn amounts of the
    # rest cell, yen among them: 12,020 for a plan whose amounts there average 549)
    given_last: bool = False


class _RootModel:
    """Weighted empirical conditionals of one root column given the cell of its conditioning columns,
    for both runs, with quantile coupling through per-unit uniforms."""

    def __init__(self, spec: _RootSpec, b: _Run, c: _Run, discrete: dict[str, bool], cfg, rng) -> None:
        self.spec = spec
        self.min_cell = cfg.min_cell
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
        main = main.assign(t=main.b + main.c).sort_values("t", ascending=False).head(spec.max_cells or cfg.max_cells)
        self.cell_index = pd.Index(np.sort(main.index.to_numpy()))
        # (``given_last``) cells of the other columns alone, for the units of combinations left out
        self.tail, self.prefix_index = 1, pd.Index([], dtype=np.int64)
        if spec.given_last and len(spec.cond) > 1:
            self.tail = len(self.enc[-1][1]) + 2
            # (however few their units: a rare plan's amounts in one currency are closer to that
            # currency's other rare plans than to every currency's)
            left = np.concatenate([k[self.cell_index.get_indexer(k) < 0] // self.tail for k in (kb, kc)])
            self.prefix_index = pd.Index(np.unique(left).astype(np.int64))
        self.rest = len(self.cell_index) + len(self.prefix_index)
        self.marg = self.rest + 1
        x_all = np.concatenate([b.values[spec.name], c.values[spec.name]])
        self.value_cats = _cats(x_all) if spec.discrete else None
        self.tables = {}
        cells_b, cells_c = self._cells(kb), self._cells(kc)
        self.cells_b = cells_b
        # NULL is not a value of the order: which units a run's NULL share takes is drawn apart (``v``),
        # so 15% more NULLs in a distance are 15% of the trips at random, not the longest ones
        for tag, run, cells in (("b", b, cells_b), ("c", c, cells_c)):
            x = run.values[spec.name]
            # marginal copy appended as cell `marg`
            cells2 = np.concatenate([cells, np.full(len(x), self.marg)])
            w2 = np.concatenate([run.w, run.w])
            valued = ~np.isnan(np.concatenate([x, x]))
            tot = np.bincount(cells2, weights=w2, minlength=self.marg + 1)
            tot_v = np.bincount(cells2[valued], weights=w2[valued], minlength=self.marg + 1)
            at = np.flatnonzero(valued)
            # ties (the units of one category) in an order of this column's own: by sample position,
            # every discrete root would rank the same units at the top of their blocks, and the units
            # a shift of channel moves would be the ones an event type's draw turns into purchases
            tie = np.random.default_rng(zlib.crc32(spec.name.encode())).permutation(len(at))
            order = np.lexsort((tie, self._sortkey(np.concatenate([x, x])[at]), cells2[at]))
            cs, ws = cells2[at][order], w2[at][order]
            start = np.r_[0.0, np.cumsum(tot_v)][cs]
            frac = (np.cumsum(ws) - start) / np.maximum(tot_v[cs], 1e-300)
            self.tables[tag] = dict(g=cs + frac, vals=np.concatenate([x, x])[at][order], present=tot > 0,
                                    nulls=np.where(tot > 0, 1 - tot_v / np.maximum(tot, 1e-300), 0.0),
                                    sorted_at=at[order])
        # per-unit uniforms of the baseline units: their own rank among their cell's values (``u``),
        # and where they fall in their cell's NULL share (``v``: below it exactly when NULL)
        t = self.tables["b"]
        rank = np.full(2 * b.n, -1, dtype=np.int64)
        rank[t["sorted_at"]] = np.arange(len(t["sorted_at"]))
        pos = rank[: b.n]
        valued = pos >= 0
        tot_v = np.bincount(cells_b[valued], weights=b.w[valued], minlength=self.marg + 1)
        jitter = rng.uniform(0.02, 0.98, size=b.n)
        u = jitter.copy()  # a NULL unit's value, should a run's share of NULLs not take it
        u[valued] = (t["g"][pos[valued]] - cells_b[valued]) - b.w[valued] / np.maximum(
            tot_v[cells_b[valued]], 1e-300) * (1 - jitter[valued])
        self.u = np.clip(u, 1e-12, 1 - 1e-12)
        share = t["nulls"][cells_b]
        spread = rng.uniform(size=b.n)
        self.v = np.where(valued, share + (1 - share) * spread, share * spread)

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
        if len(self.prefix_index):
            pre = self.prefix_index.get_indexer(keys // self.tail)
            pos = np.where(pos >= 0, pos, np.where(pre >= 0, len(self.cell_index) + pre, -1))
        return np.where(pos < 0, self.rest, pos).astype(np.int64)

    def _key_of_cell(self) -> np.ndarray:
        """Each cell's key (-1 for the merged rest and the marginal copy; -2 - k for the cell of the other
        columns' key k alone)."""
        return np.r_[self.cell_index.to_numpy().astype(np.int64), -2 - self.prefix_index.to_numpy().astype(np.int64),
                     -1, -1]

    def draw(self, tag: str, values: dict[str, np.ndarray]) -> np.ndarray:
        cells = self._cells(self._keys(values)) if self.spec.cond else np.zeros(
            len(self.u), dtype=np.int64)
        if tag == "c" and self.spec.nulls_only:
            return self._draw("b", cells, self.u, self.v, nulls="c")
        out = self._draw(tag, cells, self.u, self.v)
        if tag == "c" and self.spec.kept:
            kept = np.isin(self._key_of_cell(), list(self.spec.kept))[cells]
            if kept.any():
                out[kept] = self._draw("b", cells[kept], self.u[kept], self.v[kept])
        return out

    def _draw(self, tag: str, cells: np.ndarray, u: np.ndarray, v: np.ndarray,
              nulls: str | None = None) -> np.ndarray:
        """Values of run ``tag``'s conditionals at the units' uniforms, NULL where ``v`` falls below
        the NULL share of run ``nulls`` (``tag``'s own by default).

        A cell run ``tag`` has no unit in is drawn from the other run's units in it, when it has some:
        they are all that tells that conditional. A promotion's percentage given a match, where today's
        changed join key matches nothing, is the baseline's percentages; the run's marginal (NULL, as
        nothing matched) made switching the match back worth nothing."""
        other = "c" if tag == "b" else "b"
        theirs = ~self.tables[tag]["present"][cells] & self.tables[other]["present"][cells]
        if not theirs.any():
            return self._draw_in(tag, nulls or tag, cells, u, v)
        out = np.empty(len(u))
        out[~theirs] = self._draw_in(tag, nulls or tag, cells[~theirs], u[~theirs], v[~theirs])
        out[theirs] = self._draw_in(other, nulls or other, cells[theirs], u[theirs], v[theirs])
        return out

    def _draw_in(self, tag: str, nulls: str, cells: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """:meth:`_draw` from run ``tag``'s tables alone (a cell it lacks: its marginal)."""
        t, tn = self.tables[tag], self.tables[nulls]
        share = tn["nulls"][np.where(tn["present"][cells], cells, self.marg)]
        cells = np.where(t["present"][cells], cells, self.marg)
        if not len(t["g"]):  # every value NULL
            return np.full(len(u), np.nan)
        j = np.searchsorted(t["g"], cells + u, side="left")
        j = np.minimum(j, len(t["g"]) - 1)
        return np.where(v < share, np.nan, t["vals"][j])

    def values_calm(self, b: _Run, c: _Run, alpha: float) -> bool:
        """True when a numeric column's values, NULLs aside, show no change by the column's own test:
        15% of amounts lost to a format the cast cannot read, at random, changed how many are NULL,
        not what the others are."""
        if self.spec.discrete:
            return False
        vb, vc = ~np.isnan(b.values[self.spec.name]), ~np.isnan(c.values[self.spec.name])
        if (vb.all() and vc.all()) or vb.sum() < 2 or vc.sum() < 2:
            return False
        return self.test_effect(b, c, (vb, vc))[0] >= alpha

    def settled(self, b: _Run, c: _Run, alpha: float) -> frozenset[int]:
        """The cells (keys) where a column that changed did not: a drift of one country's amounts
        leaves the other countries' amounts as they were, and switching them too would add their
        sampling noise (times whatever multiplies them: a corrupted rate) to the drift. Those whose own
        test, Bonferroni over the cells, finds no change, unless they still differ taken together (a
        change spread thinly over every cell): then none.

        "Differ together" is judged at ``_CALM_TOGETHER``, not at the tests' level: holding back cells
        that did change drops their share (a price rise in one of four regions, the column conditioned
        on 60 products: 15 products flagged, 46 held back at p 0.02-0.05 together, the rise sized at a
        fifth of itself), while switching cells that did not only adds their noise."""
        if not self.spec.cond:
            return frozenset()
        cb, cc = self._cells(self._keys(b.values)), self._cells(self._keys(c.values))
        xb, xc = b.values[self.spec.name], c.values[self.spec.name]
        deff = self.design_effect(b, c)
        ps = {}
        for cell in np.unique(np.concatenate([cb, cc])):
            mb, mc = cb == cell, cc == cell
            if mb.sum() >= 2 and mc.sum() >= 2:
                ps[int(cell)] = self._compare(xb[mb], b.w[mb], xc[mc], c.w[mc], deff)[0]
        calm = [cell for cell, p in ps.items() if p * len(ps) >= alpha]
        if not calm or len(calm) == len(ps):
            return frozenset()
        mb, mc = np.isin(cb, calm), np.isin(cc, calm)
        together = (self._standardised(cb[mb], cc[mc], xb[mb], b.w[mb], xc[mc], c.w[mc], deff) if len(calm) > 1
                    else self._compare(xb[mb], b.w[mb], xc[mc], c.w[mc], deff)[0])
        if together < max(alpha, _CALM_TOGETHER):
            return frozenset()
        return frozenset(int(k) for k in self._key_of_cell()[calm])

    def test(self, b: _Run, c: _Run) -> float:
        return self.test_effect(b, c)[0]

    def design_effect(self, b: _Run, c: _Run) -> float:
        """How much clustering of units inflates this column's test statistic: the design effect of
        its category shares (discrete; the 20 commonest categories) or of its pooled ranks (numeric,
        what the KS test compares)."""
        xb, xc = b.values[self.spec.name], c.values[self.spec.name]
        kept = [(gb, gc) for gb, gc in zip(b.groups, c.groups) if not _attribute_of_shared_keys(xb, xc, gb, gc)]
        if not kept:
            return 1.0
        if self.spec.discrete:
            kb, kc = _codes(xb, self.value_cats), _codes(xc, self.value_cats)
            common = np.argsort(-np.bincount(np.concatenate([kb, kc]) + 1))[:20] - 1
            sb, sc = [(k[:, None] == common[None, :]).astype(float) for k in (kb, kc)]
        else:
            def last(x):  # NULL ranks last, as in the KS test
                return np.where(np.isnan(x), np.inf, x)
            pooled = np.sort(last(np.concatenate([xb, xc])))
            sb, sc = [np.searchsorted(pooled, last(x), side="right") / len(pooled) for x in (xb, xc)]
        return _design_effect(sb, b, sc, c, ([gb for gb, _ in kept], [gc for _, gc in kept]))

    def test_effect(self, b: _Run, c: _Run, only: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float]:
        """p-value that this column's conditional distribution changed, and an effect size: the
        cell-share-weighted total-variation (discrete) or KS distance.

        Two tests, Bonferroni-combined: the smallest p of every cell and group (Bonferroni: a change
        confined to one cell), and the whole sample at once, the baseline's units reweighted to the
        current run's cell shares (direct standardisation: with the conditionals unchanged, the two
        then have one distribution, whatever the cells' own shares did). The second sees a change
        spread thinly over every cell, such as a shift of the product mix within each day and channel,
        where no cell of a few hundred units is significant (measured on one: 0.25 by the first test,
        ~1e-5 by the second, as by a plain marginal test).

        ``only``: masks of the units of each run to compare (its valued ones, ``values_calm``).
        """
        ob, oc = only if only is not None else (slice(None), slice(None))
        cb = self._cells(self._keys(b.values))[ob] if self.spec.cond else np.zeros(b.n, np.int64)[ob]
        cc = self._cells(self._keys(c.values))[oc] if self.spec.cond else np.zeros(c.n, np.int64)[oc]
        xb, xc = b.values[self.spec.name][ob], c.values[self.spec.name][oc]
        wb, wc = b.w[ob], c.w[oc]
        deff = self.design_effect(b, c)
        ps, effect = [], 0.0
        for cell in np.unique(np.concatenate([cb, cc])):
            mb, mc = cb == cell, cc == cell
            if mb.sum() < 2 or mc.sum() < 2 or _constant(xb[mb], xc[mc]):
                continue
            share = 0.5 * (wb[mb].sum() / wb.sum() + wc[mc].sum() / wc.sum())
            p, eff = self._compare(xb[mb], wb[mb], xc[mc], wc[mc], deff)
            effect += share * eff
            ps.append(p)
        pooled = self._standardised(cb, cc, xb, wb, xc, wc, deff) if len(ps) > 1 else None
        min_cell = 2 * self.min_cell  # a group and the rest, in both runs
        for col in self.spec.split:  # groups of the other discrete columns, each tested on its own
            gb, gc = b.values[col][ob], c.values[col][oc]
            for g in _large_groups(gb, gc, min_cell):
                mb, mc = _same(gb, g), _same(gc, g)
                if self.spec.given_last:
                    ps.append(self._standardised(cb[mb], cc[mc], xb[mb], wb[mb], xc[mc], wc[mc], deff))
                elif not _constant(xb[mb], xc[mc]):
                    ps.append(self._compare(xb[mb], wb[mb], xc[mc], wc[mc], deff)[0])
        if not ps:
            return 1.0, 0.0
        smallest = min(ps) * len(ps)
        return float(min(1.0, smallest if pooled is None else 2 * min(smallest, pooled))), effect

    def _standardised(self, cb, cc, xb, wb, xc, wc, deff: float) -> float:
        """p-value of the whole-sample comparison with the baseline reweighted to the current cell
        shares (cells that one run lacks are left out of both)."""
        k = int(max(cb.max(initial=0), cc.max(initial=0))) + 1
        tb, tc = np.bincount(cb, weights=wb, minlength=k), np.bincount(cc, weights=wc, minlength=k)
        both = (tb > 0) & (tc > 0)
        if both.sum() < 2:
            return 1.0
        ratio = np.where(both, (tc / tc[both].sum()) / np.maximum(tb / tb[both].sum(), 1e-300), 0.0)
        keep_b, keep_c = both[cb], both[cc]
        return self._compare(xb[keep_b], (wb * ratio[cb])[keep_b], xc[keep_c], wc[keep_c], deff)[0]

    def _compare(self, xb, wb, xc, wc, deff: float) -> tuple[float, float]:
        """(p-value that two weighted samples of this column differ, the discrete effect size)."""
        if not self.spec.discrete:
            nb, nc = np.isnan(xb), np.isnan(xc)
            if not (nb.any() or nc.any()):
                return _weighted_ks(xb, wb, xc, wc, deff), 0.0
            # the NULL share and the values tested apart: in a mostly-NULL column (amounts of purchases
            # only, 92% NULL) a fifth of the values lost moves the KS distance over all rows by 0.012,
            # and German purchases' amounts x2 moved it too little to see (p 0.24), the values' own far more
            p_null = _weighted_chi2(nb.astype(np.int64), wb, nc.astype(np.int64), wc, deff)
            if (~nb).sum() < 2 or (~nc).sum() < 2:
                return p_null, 0.0
            p_values = _weighted_ks(xb[~nb], wb[~nb], xc[~nc], wc[~nc], deff)
            return float(min(1.0, 2 * min(p_values, p_null))), 0.0
        kb, kc = _codes(xb, self.value_cats) + 1, _codes(xc, self.value_cats) + 1
        k = int(max(kb.max(), kc.max())) + 1
        fb = np.bincount(kb, weights=wb, minlength=k)
        fc = np.bincount(kc, weights=wc, minlength=k)
        return (_weighted_chi2(kb, wb, kc, wc, deff),
                0.5 * float(np.abs(fb / fb.sum() - fc / fc.sum()).sum()))


# ============================================================================ the segment model
@dataclass
class _DetSpec:
    node: str
    parents: list[str]
    selection: bool
    fn: dict[str, Callable | None]  # compiled expression per run tag ('b', 'c'), when it verified
    code_changed: bool
    per_run: bool = False  # the mechanism differs between the runs (code change or a failed test)
    # roots a threshold read from a scalar subquery is computed from (``salary > (SELECT AVG(salary) FROM
    # pay)``): the run's own version applies whenever they are switched, so its move is theirs
    follows: tuple[str, ...] = ()


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
    selections: set[str] = field(default_factory=set)
    coded: dict[str, np.ndarray] = field(default_factory=dict)  # string columns -> categories
    # looked-up columns of a left join -> its match indicator: NULL where the unit found no row
    gates: dict[str, str] = field(default_factory=dict)
    windows: set[str] = field(default_factory=set)  # window nodes computed again over whole partitions
    # the windows' partitions are the bootstrap's clusters (sampled whole): a resample's copies of one
    # stay apart; otherwise units are resampled one by one within a few large partitions (per region)
    copies_apart: bool = False
    # the roots a ``where`` slice's keys are computed or looked up from, when no key is a root itself
    # (``_moved_across``): a day's events stamped on the day before leave the day's slice by their time
    slice_roots: list[str] = field(default_factory=list)


class _Fitted:
    """The data-dependent part of the model (rebuilt for every bootstrap replicate)."""

    def __init__(self, spec: _Spec, b: _Run, c: _Run, cfg: AttributionConfig, rng) -> None:
        # root models are built on first use: a bootstrap replicate only needs the ones it re-draws
        specs = {r.name: r for r in spec.roots}

        class _Lazy(dict):
            def __missing__(self, key):
                self[key] = _RootModel(specs[key], b, c, spec.discrete, cfg, rng)
                return self[key]
        self.roots = _Lazy()
        self.tables: dict[str, dict[str, _Table]] = {}
        for node, keys in spec.lookups.items():
            self.tables[node] = {}
            for tag, r in (("b", b), ("c", c)):
                found = _matched(spec.gates, node, r)  # a gated column's values where a row was found
                self.tables[node][tag] = _Table(keys, {k: r.values[k][found] for k in keys}, r.values[node][found],
                                                knn=False, y_discrete=node in spec.coded)
        for node, d in spec.det.items():
            ps = d.parents
            fits: dict[str, _Table] = {}
            for tag, r in (("b", b), ("c", c)):
                if d.per_run and d.fn[tag] is None:
                    fits[tag] = _Table(ps, {p: r.values[p] for p in ps}, r.values[node], knn=True,
                                       binary=d.selection, discrete=set(spec.coded) | spec.selections,
                                       y_discrete=node in spec.coded)
            if d.fn["b"] is None and d.fn["c"] is None and not d.per_run:
                pooled = {p: np.concatenate([b.values[p], c.values[p]]) for p in ps}
                y = np.concatenate([b.values[node], c.values[node]]) if _is_numeric(
                    b.values[node]) == _is_numeric(c.values[node]) else b.values[node]
                fits["pool"] = _Table(ps, pooled, y, knn=True, binary=d.selection,
                                      discrete=set(spec.coded) | spec.selections, y_discrete=node in spec.coded)
            self.tables[node] = fits


@dataclass(frozen=True)
class FittedModel:
    """The fitted model of one segment for ``agg(target)`` between two runs (see :func:`fit_model`).

    Coalitions are evaluated on the units of the *reference* run: the baseline run's, or the current
    run's in a model from ``refit(model, reverse=True)`` (``reversed``). In ``spec`` and ``fit`` the
    mechanisms tagged ``"b"`` are the reference run's and those tagged ``"c"`` the other run's.
    ``spec``, the unit tables and ``fit`` are internal objects of this module: read them, do not
    change them.
    """

    target: str
    agg: str  # sum | count | mean
    where: str | None
    segment: dict  # the current run's segment description (docs/internals.md)
    segment_id: str
    driving: str | None  # the driving table
    spec: _Spec
    baseline: _Run  # the baseline run's units (values, weights, N = driving rows in the run)
    current: _Run
    fit: _Fitted
    config: AttributionConfig
    tests: dict[str, dict[str, Any]]  # per mechanism: p, p_adj, changed, certain, how (, note)
    mechanisms: dict[str, str]  # every node of the model -> how it is modelled
    code_changes: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = ()
    graphs: tuple[nx.DiGraph, ...] = ()  # the comparison graph, then the current and baseline graphs
    baseline_run: str = ""
    current_run: str = ""
    reversed: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    fanout: _Fanout | None = None  # rows per unit changed: the part of the rows beyond units' first
    stand_ins: dict[str, str] = field(default_factory=dict)  # a root reported as the source column it reads

    @property
    def reference(self) -> _Run:
        """The units coalitions are evaluated on."""
        return self.current if self.reversed else self.baseline

    @property
    def other(self) -> _Run:
        """The run a switched mechanism takes its version from."""
        return self.baseline if self.reversed else self.current

    @property
    def mechanism_ids(self) -> list[str]:
        """Every mechanism :func:`evaluate` can switch: root columns, lookups, deterministic nodes."""
        return [r.name for r in self.spec.roots] + list(self.spec.lookups) + list(self.spec.det)

    @property
    def changed(self) -> list[str]:
        """The mechanisms whose change test is significant (after Holm's adjustment)."""
        return [k for k, t in self.tests.items() if t["changed"]]

    @property
    def volume_id(self) -> str:
        """The id of the volume term (the number of driving rows): ``<driving table>.__rows__``."""
        return f"{self.driving}.__rows__"


def _mechanism_fn(spec: _Spec, fit: _Fitted, node: str, tag: str) -> Callable[[dict, int], np.ndarray]:
    """The function computing ``node`` from its parents under run ``tag``'s mechanism."""
    if node in spec.lookups:
        own, other = fit.tables[node][tag], fit.tables[node]["c" if tag == "b" else "b"]

        def _lk(env, n):
            v, found = own.lookup(env)
            if (~found).any():
                v2, f2 = other.lookup({k: x[~found] for k, x in env.items()})
                v[~found] = v2
            if node in spec.selections:
                v = np.where(np.isnan(v.astype(float)), 0.0, v.astype(float))
            if node in spec.gates:  # no row found, no value: NULL as the join gives it
                v[_num(env[spec.gates[node]], n) != 1] = np.nan if _is_numeric(v) else None
            return v
        return _lk
    d = spec.det[node]
    if not d.per_run and d.fn["b"] is None and d.fn["c"] is None:
        tab = fit.tables[node]["pool"]
        return lambda env, n: tab(env)
    if not d.per_run:  # same code: use whichever run's compiled expression verified
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


def _upstream_of(named: set[str], computed: dict[str, tuple[Any, set[str]]], parents: dict[str, list[str]],
                 model_nodes: list[str]) -> list[str]:
    """The columns of the units with no parent in the model that the ``where`` columns ``named`` are
    computed from (through keys the slice derives, and the model's functions and lookups)."""
    seen, stack, found = set(), list(named), set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        ups = list(computed[x][1]) if x in computed else parents.get(x) or []
        if not ups and x in model_nodes:
            found.add(x)
        stack.extend(ups)
    return sorted(found)


def _moved_across(rows: tuple[float, float, float, float, float] | None, z: float) -> tuple[float, float] | None:
    """(what the rows that moved between a ``where`` slice and the rest of the run add to the slice's
    sum, its standard error) when the slice's keys are no roots of the model (a key of many values,
    ``_IN_SLICE``; a looked-up or derived one): the rows it lost that the rest gained (or the other
    way round), both beyond their sampling error, at the slice's mean row. None otherwise: a missing
    day's slice lost rows the others did not gain, which is the volume's. Why: each unit's membership
    is then a key the model holds fixed, so 20% of the last day's shipments stamped on the day before
    were 97% of that day's change unexplained, and German users' sessions given to Brazilian users
    all of the German slice's. ``rows``: ``_slice_rows``."""
    if rows is None:
        return None
    ds, do, se_s, per_row, _ = rows
    if ds * do >= 0 or min(abs(ds), abs(do)) <= z * se_s:
        return None
    moved = math.copysign(min(abs(ds), abs(do)), ds)
    return moved * per_row, se_s * abs(per_row)


def _own_rows(rows: tuple[float, float, float, float, float] | None, b: "_Run", c: "_Run", z: float) -> float | None:
    """The volume of a ``where`` slice whose keys are no roots of the model, when its rows changed
    unlike its share of the table's and the rest did not take them up (``_moved_across`` then): the
    slice's own row change at its mean row. None otherwise. Why: the volume term is the table's row
    change shared out by the units, the model holding each unit's membership; a missing day's own
    slice lost all its rows, of which that share gave it a sixth (91% of its loss unexplained).
    ``rows``: ``_slice_rows``."""
    if rows is None:
        return None
    ds, do, se_s, per_row, inside = rows
    if ds * do < 0 and min(abs(ds), abs(do)) > z * se_s:
        return None
    if abs(ds - (c.N - b.N) * inside / (b.N + c.N)) <= z * se_s:
        return None
    return ds * per_row


def _slice_mask(spec: _Spec, r: "_Run") -> np.ndarray:
    """Which units are in the ``where`` slice (1.0) or not (0.0), as the model holds them."""
    if _IN_SLICE in r.values:
        return np.asarray(r.values[_IN_SLICE], dtype=float)
    return (_bool(spec.where_fn(r.values, r.n), r.n) == 1).astype(float)


def _slice_rows(spec: _Spec, b: "_Run", c: "_Run", cb: np.ndarray, cc: np.ndarray
                ) -> tuple[float, float, float, float, float] | None:
    """(the ``where`` slice's row change, the rest's, the slice count's standard error, the slice's
    mean row, its rows in both runs together), for a slice whose keys are no roots of the model;
    None otherwise."""
    if not spec.slice_roots or spec.where_fn is None:
        return None
    inside = [r.w * _slice_mask(spec, r) for r in (b, c)]
    # the rest's change is the runs' exact row change less the slice's, whose estimate has the error
    ds = float(inside[1].sum() - inside[0].sum())
    do = c.N - b.N - ds
    se_s = math.sqrt(sum(float((r.w * x).sum()) for r, x in zip((b, c), inside)))
    means = [float((cx * i).sum()) / float(i.sum())
             for cx, i in ((cb, inside[0]), (cc, inside[1])) if float(i.sum()) > 0]
    return ds, do, se_s, sum(means) / len(means) if means else 0.0, float(inside[0].sum() + inside[1].sum())


def _metric_from(spec: _Spec, c: np.ndarray, d: np.ndarray, w: np.ndarray) -> float:
    """Mean contribution per driving row (sum/count) or the ratio of sums (mean)."""
    if spec.agg == "mean":
        den = float((w * d).sum())
        return float((w * c).sum()) / den if den else float("nan")
    return float((w * c).sum() / w.sum())


def _observed_contrib(spec: _Spec, r: _Run) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit contributions (numerator, denominator) of a run as observed: the recorded
    contributions when the job wrote them and they are the metric's (a plain sum)."""
    c, d = _contrib(spec, r.values, r.n)
    if r.recorded is not None and spec.agg == "sum" and spec.where_fn is None:
        c = r.recorded
    return c, d


def observed_metric(model: FittedModel, run: str = "current") -> float:
    """The metric of ``run`` (``"baseline"`` or ``"current"``) as observed on its units, per driving
    row for sum/count (multiply by the run's ``N`` for the total), the ratio of sums for a mean."""
    if run not in ("baseline", "current"):
        raise ValueError(f"run must be 'baseline' or 'current', not {run!r}")
    r = model.baseline if run == "baseline" else model.current
    c, d = _observed_contrib(model.spec, r)
    return _metric_from(model.spec, c, d, r.w)


def evaluate(model: FittedModel, switched: set[str] | frozenset[str] | list[str] | tuple[str, ...]) -> float:
    """``v(S)``: the model's metric on the reference run's units (per driving row for sum/count, the
    ratio of sums for a mean) with the mechanisms in ``switched`` (ids from ``model.mechanism_ids``)
    in the other run's version and every other one in the reference run's version.

    Every unit keeps its own random draws (common random numbers), so ``evaluate(model, set())``
    reproduces the reference run's units exactly; the difference of two coalitions is the effect of
    the mechanisms they differ by. Ids that are not mechanisms of the model are ignored.
    """
    switched = frozenset(switched)
    spec, fit, base = model.spec, model.fit, model.reference
    env = dict(base.values)
    changed: dict[str, np.ndarray] = {}
    for r in spec.roots:
        if r.name not in switched and not any(cn in changed for cn in r.cond):
            continue
        new = fit.roots[r.name].draw("c" if r.name in switched else "b", env)
        diff = _neq(new, base.values[r.name])
        if diff.any():
            env[r.name] = new
            changed[r.name] = diff
    env = _propagate(model, env, changed, switched)
    c, d = _contrib(spec, env, base.n)
    return _metric_from(spec, c, d, base.w)


def _propagate(model: FittedModel, env: dict[str, np.ndarray], changed: dict[str, np.ndarray],
               switched: frozenset[str] = frozenset()) -> dict[str, np.ndarray]:
    """``env`` (the reference units' columns, the ``changed`` ones replaced: unit masks) with every
    deterministic node and lookup below them computed again, those in ``switched`` in the other
    run's version."""
    spec, fit, base = model.spec, model.fit, model.reference
    n = base.n
    for node in spec.order:
        d = spec.det.get(node)
        if d is not None and d.follows and switched & set(d.follows):
            switched = switched | {node}  # a threshold computed from switched roots is theirs too
        if node in switched:
            dirty = np.ones(n, dtype=bool)
        else:
            dirty = None
            for p in spec.parents[node]:
                if p in changed:
                    dirty = changed[p] if dirty is None else (dirty | changed[p])
            if dirty is None:
                continue
        if node in spec.windows:  # its value depends on the other units of the partition
            dirty = np.ones(n, dtype=bool)
        idx = np.flatnonzero(dirty)
        fn = _mechanism_fn(spec, fit, node, "c" if node in switched else "b")
        sub = {p: env[p][idx] for p in spec.parents[node]}
        if node in spec.windows and base.copies is not None and spec.copies_apart:
            sub[_COPY] = base.copies
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
    return env


def metric_at(model: FittedModel, columns: dict[str, np.ndarray]) -> tuple[float, np.ndarray, np.ndarray]:
    """The sum over the reference run's units with the root ``columns`` given and every node
    computed from them again (windows over their partitions, expressions, lookups) in the reference
    run's version; each unit's part of it; and whether the unit has a value to sum at all (not: a
    share of a day whose cost is 0). Why: the chain rule from an output computed over aggregates
    down to the units of those aggregates (``chain``) needs the output as a function of them, and
    this model is that function."""
    base = model.reference
    env = dict(base.values)
    env.update(columns)
    env = _propagate(model, env, {k: np.ones(base.n, dtype=bool) for k in columns})
    c, _ = _contrib(model.spec, env, base.n)
    x = _num(env[model.spec.input], base.n) if model.spec.input is not None else np.ones(base.n)
    return float((base.w * c).sum()), base.w * c, np.isfinite(x)


def unit_contributions(model: FittedModel, run: str) -> np.ndarray:
    """Each unit's part of the sum in ``run`` (``"baseline"`` or ``"current"``), as observed."""
    r = model.baseline if run == "baseline" else model.current
    return r.w * _observed_contrib(model.spec, r)[0]

def refit(model: FittedModel, *, baseline: np.ndarray | None = None, current: np.ndarray | None = None,
          reverse: bool = False, rng: np.random.Generator | None = None) -> FittedModel:
    """The same model specification fitted again: on the units ``baseline``/``current`` (integer
    positions into each run's units, e.g. a bootstrap resample; all units when None) and, with
    ``reverse``, with the roles of the runs swapped (the other run becomes the reference one).
    ``rng`` (default: seeded with ``config.seed``) draws the new units' uniforms."""
    b = model.baseline if baseline is None else model.baseline.take(np.asarray(baseline))
    c = model.current if current is None else model.current.take(np.asarray(current))
    spec = _reversed(model.spec) if reverse else model.spec
    rev = model.reversed != bool(reverse)
    ref, oth = (c, b) if rev else (b, c)
    fit = _Fitted(spec, ref, oth, model.config,
                  rng if rng is not None else np.random.default_rng(model.config.seed))
    return dataclasses.replace(model, spec=spec, baseline=b, current=c, fit=fit, reversed=rev)


def _reversed(spec: _Spec) -> _Spec:
    """The same specification with the run tags swapped (a code change's versions trade places)."""
    det = {k: dataclasses.replace(d, fn={"b": d.fn.get("c"), "c": d.fn.get("b")}) for k, d in spec.det.items()}
    return dataclasses.replace(spec, det=det)


def _shapley(model: FittedModel, players: list[str], rng) -> tuple[np.ndarray, float, float]:
    """Shapley values of the players for the metric; also v(empty) and v(all)."""
    cfg = model.config
    k = len(players)
    cache: dict[frozenset, float] = {}

    def v(s: frozenset) -> float:
        if s not in cache:
            cache[s] = evaluate(model, s)
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


def _forward_shapley(model: FittedModel, players: list[str], rng) -> tuple[np.ndarray, float, float]:
    """:func:`_shapley` signed from the baseline to the current run whichever run is the reference:
    (values, the metric with every player in its baseline version, in its current version)."""
    phi, v0, v1 = _shapley(model, players, rng)
    return (-phi, v1, v0) if model.reversed else (phi, v0, v1)


def _nearer_split(model: FittedModel, players: list[str], current: float,
                  rng) -> tuple[FittedModel, np.ndarray, float, float]:
    """The Shapley split of the change on the baseline's units, or on the current run's if that
    leaves clearly less unexplained: (the model used, :func:`_forward_shapley`'s triple).

    Why: the mechanisms that did not change are evaluated on one run's units, and their own noise is
    what the players leave unexplained. It interacts with a change of a rare key: a corrupted customer
    with 1 order in the baseline and 8 today is worth 8 orders of the corruption today, not 1 (the
    baseline's units said 1/8 of it). A corruption that zeroes a key with 8 orders in the baseline
    and 1 today is the baseline's 8. Of the two evaluations, the one whose players reproduce the
    observed metric more closely credits the least to unchanged mechanisms, which is what they are.
    """
    phi, v0, v1 = _forward_shapley(model, players, rng)
    if not players:
        return model, phi, v0, v1
    rev = refit(model, reverse=True, rng=np.random.default_rng([model.config.seed, 1]))
    phi_r, v0_r, v1_r = _forward_shapley(rev, players, rng)
    # forward: v0 is the baseline's observed metric, v1 its model of today; reverse: v1_r is today's
    # observed metric, v0_r the model of the baseline on today's units
    left, left_r = abs(current - v1), abs(v0_r - v0)
    if left_r < 0.5 * left and left - left_r > 0.05 * abs(current - v0):
        return rev, phi_r, v0, v0 + (v1_r - v0_r)
    return model, phi, v0, v1


# ============================================================================ building the model
_NON_DROPPING_JOINS = {"leftouter", "left", "fullouter", "full", "outer", "fullouterjoin", "leftouterjoin"}


def _find_segment(run: RunSamples, target: str, output: str | None = None) -> tuple[str, SegmentSamples] | None:
    """The segment holding ``target``: among several (an aggregate two outputs share), ``output``'s."""
    for key in ("aggregates", "nodes"):
        found = [(sid, seg) for sid, seg in run.segments.items() if target in (seg.description.get(key) or {})]
        if found:
            return next(((sid, seg) for sid, seg in found if seg.description.get("output") == output), found[0])
    return None


def _copied_column(graph: nx.DiGraph, target: str) -> str | None:
    """The column a row-level output column copies unchanged (its one ``identity`` input), if any."""
    if target not in graph or graph.nodes[target].get("kind") == "aggregate":
        return None
    copied = [p for p in graph.predecessors(target)
              if graph.edges[p, target].get("subtype") == "identity" and graph.nodes[p].get("kind") != "selection"]
    return copied[0] if len(copied) == 1 else None


def _output_columns(graph: nx.DiGraph) -> list[str]:
    out = []
    for name, o in (graph.graph.get("outputs") or {}).items():
        out += list(o.get("columns") or [])
    return out


def _node_attr(graphs: list[nx.DiGraph], node: str, key: str, default=None):
    for g in graphs:
        if node in g.nodes and g.nodes[node].get(key) is not None:
            return g.nodes[node][key]
    return default


def _resolver(primary: list[str], everything: list[str], graph: nx.DiGraph) -> Callable[[str], str]:
    def names(nid: str) -> set[str]:
        col = graph.nodes[nid].get("column") if nid in graph.nodes else None
        return {nid.lower(), nid.rsplit(".", 1)[-1].lower()} | ({str(col).lower()} if col else set())

    maps = []
    for ids in (primary, everything):
        mp: dict[str, set[str]] = {}
        for nid in ids:
            for nm in names(nid):
                mp.setdefault(nm, set()).add(nid)
        maps.append(mp)

    def resolve(name: str) -> str:
        low = name.lower()
        for mp in maps:
            ids = mp.get(low)
            if ids and len(ids) == 1:
                return next(iter(ids))
        raise _ExprError(f"cannot resolve {name!r}")
    return resolve


def _decimal_scale(dtype: str | None) -> int | None:
    m = re.match(r"decimal\(\s*\d+\s*,\s*(\d+)\s*\)", str(dtype or "").lower())
    return int(m.group(1)) if m else None


def _passes_all(env: dict, n: int) -> np.ndarray:
    """The mechanism of a filter in the run whose code has none: every unit passes."""
    return np.ones(n)


def _filled_cells(cols: list[str], b: _Run, c: _Run) -> int:
    """How many combinations of the discrete columns ``cols`` the units of either run hold."""
    both = pd.DataFrame({k: np.concatenate([b.values[k], c.values[k]]) for k in cols})
    return len(both.drop_duplicates())


_CALM_TOGETHER = 0.1  # level at which cells no test flags still changed, taken together (``settled``)


def _offsetting(parts: list[float], noise: float) -> bool:
    """Whether significant parts offset each other: two at least, whose sum is within the metric's noise
    and well under the largest of them (a large mix shift next to a small opposite item does not
    offset, however noisy the metric)."""
    net = abs(sum(parts))
    return len(parts) >= 2 and net <= noise and net <= 0.5 * max(abs(x) for x in parts)


def _nested(graphs: list[nx.DiGraph], node: str) -> bool:
    """Whether ``node`` is a struct, array or map column, which a sample holds as JSON text."""
    return str(_node_attr(graphs, node, "dtype") or "").startswith(_NESTED)


def _nested_source(graph: nx.DiGraph, node: str) -> str | None:
    """The source column a nested value comes from, through the explodes between (None if another
    stage computes it)."""
    seen = {node}
    while node in graph and graph.nodes[node].get("kind") != "source":
        up = [p for p in graph.predecessors(node) if graph.edges[p, node].get("kind") == "direct"]
        if graph.nodes[node].get("subtype") != "generate" or len(up) != 1 or up[0] in seen:
            return None
        node = up[0]
        seen.add(node)
    return node if node in graph else None


_WEAK = 5  # the rescue's last tier: a mechanism at p below this many alphas (``attribute_samples``)
_FEW_UNITS = 200  # units of a run below which an attribution says its sample is too small to tell much
_NESTED = ("struct", "array", "map")  # Spark types of columns a sample holds as JSON text
_COPY = "__copy__"  # the env key of ``_Run.copies`` for a window's function


def _window_spec(node: str, runs: dict[str, tuple[dict, "_Run"]], model_nodes: list[str],
                 code_changed: bool) -> _DetSpec | None:
    """The mechanism of a window column over units sampled by whole partitions: each run's window
    (``sampling._describe_window``) computed again over its units, when it reproduces what the job
    computed; None otherwise (the column is then part of the unit)."""
    fns: dict[str, Callable | None] = {}
    parents: list[str] = []
    for tag, (desc, r) in runs.items():
        w = (desc.get("windows") or {}).get(node)
        if not w:
            return None
        uses = list(w["partition"]) + [o[0] for o in w["order"]] + list(w["gates"]) + ([w["arg"]] if w["arg"] else [])
        if any(u not in model_nodes for u in uses):
            return None
        f = _window_fn(w)
        if not _verify(f, r, node, False, None):
            return None
        fns[tag] = f
        parents += [u for u in uses if u not in parents]
    return _DetSpec(node, parents, False, fns, code_changed, code_changed)


def _window_fn(w: dict) -> Callable[[dict, int], np.ndarray]:
    """A window function over units: partitions by the partition columns, the gates below the window
    (a unit a filter dropped shares no partition with kept ones, as in the sampled pass) and the copy in
    a resample; rows ordered as the job orders them, ties kept in unit order."""
    kind, frame, offset = w["fn"], w.get("frame"), int(w.get("offset") or 0)

    def f(env: dict, n: int) -> np.ndarray:
        keys = [np.asarray(env[k], float) for k in w["partition"]]
        keys += [(_bool(env[g], n) == 1).astype(float) for g in w["gates"]]
        if _COPY in env:
            keys.append(np.asarray(env[_COPY], float))
        gid = (np.unique(np.nan_to_num(np.column_stack(keys), nan=-np.inf), axis=0, return_inverse=True)[1].ravel()
               if keys else np.zeros(n, dtype=np.int64))
        order = []
        for name, asc, nulls_first in w["order"]:
            v = np.asarray(env[name], float) * (1.0 if asc else -1.0)
            order.append(np.where(np.isnan(v), -np.inf if nulls_first else np.inf, v))
        perm = np.lexsort(tuple(reversed(order)) + (gid,)) if n else np.arange(0)
        g = gid[perm]
        idx = np.arange(n)
        start = np.r_[True, g[1:] != g[:-1]] if n else np.zeros(0, bool)
        first = np.maximum.accumulate(np.where(start, idx, 0)) if n else idx
        peer = start.copy()
        for o in order:
            peer |= np.r_[True, o[perm][1:] != o[perm][:-1]]
        if kind == "row_number":
            out = idx - first + 1.0
        elif kind == "rank":
            out = np.maximum.accumulate(np.where(peer, idx, 0)) - first + 1.0
        elif kind == "dense_rank":
            c = np.cumsum(peer)
            out = (c - c[first] + 1).astype(float)
        else:
            a = np.asarray(env[w["arg"]], float)[perm] if w["arg"] else np.ones(n)
            if kind == "shift":
                j = idx + offset
                ok = (j >= 0) & (j < n)
                ok[ok] &= g[j[ok]] == g[ok]
                out = np.full(n, np.nan)
                out[ok] = a[j[ok]]
            else:
                out = _window_aggregate(kind, a, g, frame, peer)
        res = np.empty(n)
        res[perm] = out
        return res
    return f


def _window_aggregate(kind: str, a: np.ndarray, g: np.ndarray, frame: str | None, peer: np.ndarray) -> np.ndarray:
    """sum/count/min/max/avg of ``a`` (units sorted by partition ``g``, then order) over the whole
    partition, or running up to the current row (``RowFrame``) or its last peer (``RangeFrame``)."""
    valued = ~np.isnan(a)
    fill = {"min": np.inf, "max": -np.inf}.get(kind, 0.0)
    s = pd.Series(np.where(valued, a, fill))
    by = pd.Series(valued.astype(float)).groupby(g)
    if frame == "partition":
        count = by.transform("sum").to_numpy()
        total = s.groupby(g).transform({"min": "min", "max": "max"}.get(kind, "sum")).to_numpy()
    else:
        count = by.cumsum().to_numpy()
        total = getattr(s.groupby(g), {"min": "cummin", "max": "cummax"}.get(kind, "cumsum"))().to_numpy()
        if frame == "RangeFrame":  # peers of the current row are in its frame: the value at the last peer
            last = np.r_[np.flatnonzero(peer)[1:] - 1, len(a) - 1] if len(a) else np.zeros(0, int)
            at = np.repeat(last, np.diff(np.r_[np.flatnonzero(peer), len(a)]))
            count, total = count[at], total[at]
    if kind == "count":
        return count.astype(float)
    with np.errstate(all="ignore"):
        return np.where(count > 0, total / count if kind == "avg" else total, np.nan)


def _verify(fn: Callable, run: _Run, node: str, selection: bool, scale: int | None, *,
            share: float = 0.999, rtol: float = 1e-6) -> bool:
    """Whether ``fn`` reproduces the run's values of ``node`` (``share`` of its units, to ``rtol``).
    ``scale``: the node is a DECIMAL of that scale, and a value one unit of it away counts as the same:
    a product of decimals lands exactly on a half that Spark rounds up, where the doubles the sample
    holds land a hair below it (and the same product of doubles is rounded down by Spark too)."""
    try:
        with np.errstate(all="ignore"):
            v = fn(run.values, run.n)
    except Exception:  # noqa: BLE001 - an expression we cannot evaluate is simply not used
        return False
    y = run.values[node]
    if selection:
        got = (_bool(v, run.n) == 1)
        return float((got == (_num(y, run.n) == 1)).mean()) >= share
    v = _arr(v, run.n) if not isinstance(v, np.ndarray) else v
    if _is_numeric(y):
        if not (isinstance(v, np.ndarray) and v.dtype.kind in "fiub"):
            return False
        v = v.astype(float)
        ok = np.isclose(v, y, rtol=rtol, atol=_unit(scale)) | (np.isnan(v) & np.isnan(y))
        return float(ok.mean()) >= share
    return float((~_neq(_arr(v, run.n).astype(object), y)).mean()) >= share


def _computes_the_same(d: "_DetSpec", b: _Run, c: _Run, scale: int | None) -> bool:
    """Whether a node whose code changed computes every unit of both runs as the other code does: a
    column's type changed (DECIMAL -> DOUBLE, the casts in its SQL with it), a rewrite of the same
    formula. Equal to the precision the column is stored at (one unit of its decimal scale), else to
    1e-9 relative; a code change that moves a single unit is a change."""
    return all(f is not None and _verify(f, run, d.node, d.selection, scale, share=1.0, rtol=1e-9)
               for f, run in ((d.fn["c"], b), (d.fn["b"], c)))


def _aggregate_def(desc: dict, node: str) -> dict:
    """How a segment computes aggregate ``node`` (``fn``, ``input`` column, ``arg`` expression); {} if not."""
    return (desc.get("aggregates") or {}).get(node) or {}


def _unit(scale: int | None) -> float:
    """The absolute tolerance for values of a DECIMAL of ``scale`` (one unit of it), else ~0."""
    return 1.01 * 10.0 ** -scale if scale is not None else 1e-9


def _wrap_scale(fn: Callable, scale: int | None) -> Callable:
    if scale is None:
        return fn

    def _f(env, n):
        v = fn(env, n)
        return _round_half_up(_num(v, n), scale)
    return _f


# ============================================================================ change tests
def _key_text(key: Any, keys: list[str], coded: dict[str, np.ndarray]) -> str:
    """A join key (one value, or a tuple for several key columns) as the values the job saw."""
    parts = []
    for k, v in zip(keys, key if isinstance(key, tuple) else (key,)):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            parts.append("NULL")
        elif k in coded:
            cats = coded[k]
            parts.append(str(cats[int(v)]) if 0 <= int(v) < len(cats) else "?")
        elif isinstance(v, float) and v.is_integer():
            parts.append(str(int(v)))
        else:
            parts.append(str(v))
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _matched(gates: dict[str, str], node: str, r: _Run) -> np.ndarray | slice:
    """The units whose row a looked-up column's join found (its values there are the table's), all
    units for a column no join gates: a key that found no row is the join's change, not the table's."""
    return _num(r.values[gates[node]], r.n) == 1 if node in gates else slice(None)


def _lookup_test(node: str, keys: list[str], b: _Run, c: _Run, coded: dict[str, np.ndarray] | None = None,
                 gates: dict[str, str] | None = None) -> tuple[float, bool, str]:
    """Did the looked-up values of ``node`` change, key by key? Over the rows found: a key that stopped
    matching (an upper-cased id format) is its join's change, not its columns'."""
    def table(r: _Run) -> pd.DataFrame:
        found = _matched(gates or {}, node, r)
        df = pd.DataFrame({f"k{i}": r.values[k][found] for i, k in enumerate(keys)})
        df["y"] = r.values[node][found]
        g = df.groupby([f"k{i}" for i in range(len(keys))], dropna=False)["y"]
        return pd.DataFrame({"first": g.first(), "nuniq": g.nunique(dropna=False)})

    tb, tc = table(b), table(c)
    both = tb.join(tc, how="inner", lsuffix="_b", rsuffix="_c")
    if both.empty:
        return 1.0, False, "no join key in common"
    det = (tb.nuniq.max() <= 1) and (tc.nuniq.max() <= 1)
    if det:
        fb, fc = both.first_b.to_numpy(), both.first_c.to_numpy()
        if _is_numeric(b.values[node]):
            fb, fc = fb.astype(float), fc.astype(float)
        else:
            fb, fc = fb.astype(object), fc.astype(object)
        diff = _neq(fb, fc)
        k = int(diff.sum())
        note = f"{k} of {len(both)} keys changed" if k else "no key changed"
        if k:
            changed = [_key_text(x, keys, coded or {}) for x in both.index[diff][:5]]
            note += f" ({', '.join(changed)})"
        return (0.0 if k else 1.0), bool(k), note
    # several values per key: compare the per-key distributions
    ps = []
    kb = pd.MultiIndex.from_arrays([b.values[k] for k in keys])
    kc = pd.MultiIndex.from_arrays([c.values[k] for k in keys])
    yb, yc = b.values[node], c.values[node]
    for key in both.index[:200]:
        key = key if isinstance(key, tuple) else (key,)
        mb = np.asarray(kb.isin([key]))
        mc = np.asarray(kc.isin([key]))
        if mb.sum() < 5 or mc.sum() < 5:
            continue
        if _is_numeric(yb):
            ps.append(_weighted_ks(yb[mb], b.w[mb], yc[mc], c.w[mc]))
        else:
            cats = _cats(np.concatenate([yb[mb], yc[mc]]))
            ps.append(_weighted_chi2(_codes(yb[mb], cats) + 1, b.w[mb], _codes(yc[mc], cats) + 1,
                                     c.w[mc]))
    if not ps:
        return 1.0, False, "too few units per key"
    return float(min(1.0, min(ps) * len(ps))), False, "per-key distributions compared"


def _det_test(d: _DetSpec, b: _Run, c: _Run, coded: dict, gates: set[str] = frozenset()) -> float:
    """Same code, no usable expression: do units with the same parents (the same ``gates``, selections
    matched exactly) get the same value?"""
    ps = d.parents
    tb = _Table(ps, {p: b.values[p] for p in ps}, b.values[d.node], knn=True, binary=d.selection,
                discrete=set(coded) | set(gates), y_discrete=d.node in coded)
    xc = {p: c.values[p] for p in ps}
    vals, found = tb.lookup(xc)
    yc = c.values[d.node]
    p1 = p2 = 1.0
    m = int(found.sum())
    if m:
        k = int(_neq(np.asarray(vals[found]), yc[found]).sum())
        r0 = max(tb.inconsistency, 1e-3)
        p1 = float(stats.binom.sf(k - 1, m, r0)) if k else 1.0
    miss = ~found
    if miss.sum() >= 20 and tb.tree is not None and len(tb.tree_vals) >= 3:
        feats = tb._features({p: xc[p][miss] for p in ps})
        dist, j = tb.tree.query(feats, k=1)
        own = tb.tree.data
        d2, j2 = tb.tree.query(own, k=2)
        # only units inside the baseline's support are evidence: far from every baseline unit, a
        # nearest-neighbour prediction extrapolates and its error says nothing about a change. So is a
        # neighbour of another value of a discrete parent: policy ids a neighbour apart are no alike
        # policies (an EXISTS on the policy read "changed", p 1e-33, between two draws of one job)
        dc = tb.discrete_columns()
        alike = (feats[:, dc] == own[j][:, dc]).all(axis=1)
        alike_b = (own[:, dc] == own[j2[:, 1]][:, dc]).all(axis=1)
        inside = (dist <= np.quantile(d2[:, 1], 0.9)) & alike
        if inside.sum() < 20 or alike_b.sum() < 20:
            return float(min(1.0, 2 * p1))
        j = j[inside]
        miss = np.flatnonzero(miss)[inside]
        if _is_numeric(yc):
            def gap(x: np.ndarray, y: np.ndarray) -> np.ndarray:  # NULL against NULL is no error
                x, y = x.astype(float), y.astype(float)
                return np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))
            res_c = gap(tb.tree_vals[j], yc[miss])
            res_b = gap(tb.tree_vals[j2[:, 1]], tb.tree_vals)[alike_b]
        else:
            res_c = _neq(tb.tree_vals[j].astype(object), yc[miss].astype(object)).astype(float)
            res_b = _neq(tb.tree_vals[j2[:, 1]].astype(object), tb.tree_vals.astype(object)).astype(float)[alike_b]
        res_c, res_b = np.nan_to_num(res_c, nan=1e300), np.nan_to_num(res_b, nan=1e300)
        if np.ptp(np.concatenate([res_b, res_c])) > 0:
            p2 = float(stats.mannwhitneyu(res_c, res_b, alternative="greater").pvalue)
    return float(min(1.0, 2 * min(p1, p2)))


def _order_discrete(disc: list[str], cond_of, b: _Run, c: _Run, discrete: dict[str, bool],
                    cfg: AttributionConfig) -> list[str]:
    """Order a table's discrete columns for the chain by the sparse-mechanism-shift principle: of all
    orders, take the one in which the fewest conditionals changed (then the smallest total change).
    A shift of currency within countries is one changed conditional in the order country -> currency
    but two in the order currency -> country. Exact dynamic programming over subsets."""
    rng = np.random.default_rng(0)
    cost: dict[tuple, tuple[int, float]] = {}

    def cost_of(x: str, preds: frozenset) -> tuple[int, float]:
        key = (x, tuple(cond_of(preds)))
        if key not in cost:
            rm = _RootModel(_RootSpec(x, True, list(key[1])), b, c, discrete, cfg, rng)
            p, eff = rm.test_effect(b, c)
            cost[key] = (int(p < cfg.alpha), eff)
        return cost[key]

    best: dict[frozenset, tuple[tuple[int, float], list[str]]] = {frozenset(): ((0, 0.0), [])}
    for size in range(1, len(disc) + 1):
        for subset in combinations(disc, size):
            fs = frozenset(subset)
            cand = None
            for x in subset:  # x is the last column of the order of `subset`
                rest = fs - {x}
                (n0, e0), order = best[rest]
                n1, e1 = cost_of(x, rest)
                score = (n0 + n1, e0 + e1)
                if cand is None or score < cand[0]:
                    cand = (score, order + [x])
            best[fs] = cand
    return best[frozenset(disc)][1]


def _dependence(x: str, d: str, b: _Run, c: _Run, cfg: AttributionConfig) -> float:
    """How much numeric column x depends on discrete column d (pooled over both runs): the largest
    ratio of a category's ECDF distance from the overall one to a KS critical value; above 1 it does."""
    xs = np.concatenate([b.values[x], c.values[x]])
    ds = np.concatenate([b.values[d], c.values[d]])
    xs = np.where(np.isnan(xs), np.inf, xs)
    allsorted = np.sort(xs)
    n = len(xs)
    ds = np.where(np.isnan(ds), -1.0, ds)
    most = 0.0
    for cat in np.unique(ds):
        m = ds == cat
        k = int(m.sum())
        if k < cfg.min_cell or k > n - cfg.min_cell:
            continue
        sub = np.sort(xs[m])
        # ECDF distance between the category and everything, evaluated at the category's points
        f_all = np.searchsorted(allsorted, sub, side="right") / n
        f_sub = np.arange(1, k + 1) / k
        dist = float(np.max(np.abs(f_all - f_sub)))
        most = max(most, dist / max(0.05, 2.0 / math.sqrt(k)))
    return most


def _spearman(x: str, y: str, b: _Run, c: _Run, cache: dict | None = None) -> float:
    xs = np.concatenate([b.values[x], c.values[x]])
    ys = np.concatenate([b.values[y], c.values[y]])
    ok = ~(np.isnan(xs) | np.isnan(ys))
    if ok.sum() < 10:
        return 0.0
    if ok.all() and cache is not None:
        for k, v in ((x, xs), (y, ys)):
            if k not in cache:
                cache[k] = stats.rankdata(v)
        rx, ry = cache[x], cache[y]
    else:
        rx = stats.rankdata(xs[ok])
        ry = stats.rankdata(ys[ok])
    r = np.corrcoef(rx, ry)[0, 1]
    return 0.0 if np.isnan(r) else float(r)


# ============================================================================ the entry point
def fit_model(graph: nx.DiGraph, baseline: RunSamples, current: RunSamples, target: str, *,
              agg: str = "sum", where: str | None = None, config: AttributionConfig | None = None,
              rng: np.random.Generator | None = None) -> FittedModel:
    """Build and fit the model of ``agg(target)``'s segment on both runs and test its mechanisms.

    This is the first half of :func:`attribute_samples` (which calls it with the same arguments):
    the segment's units are read from both runs, every mechanism (root conditionals, lookups,
    deterministic nodes) is specified and fitted on both runs, and each is tested for a change
    (``model.tests``, ``model.changed``). The result feeds :func:`evaluate` (the metric under a
    coalition of switched mechanisms), :func:`observed_metric` and :func:`refit` (bootstrap
    resamples, or the roles of the runs swapped).

    ``rng`` is the generator the fit draws from (the per-unit uniforms of the root columns); by
    default a fresh one seeded with ``config.seed``. Errors are those of :func:`attribute_samples`.
    """
    cfg = config or AttributionConfig()
    t0 = time.perf_counter()
    agg = (agg or "sum").lower()
    if agg not in ("sum", "count", "mean"):
        raise SparkCausalError(f"unknown agg {agg!r}", hint="use one of sum, count, mean")
    if baseline.run == current.run:
        raise SparkCausalError(f"baseline and current are the same run {baseline.run!r}",
                               hint="compare two different runs")
    warnings: list[str] = []
    graphs = [graph, current.graph, baseline.graph]

    # an output column that is a source or stage column written unchanged (SELECT amount ... ) is not a
    # node of its own in the sample: its values are those of the column it copies
    held = _copied_column(graph, target) or target
    output = graph.nodes[target].get("output") if target in graph else None
    found_b, found_c = _find_segment(baseline, held, output), _find_segment(current, held, output)
    if found_b is None or found_c is None:
        known = [n for g in graphs for n in g.nodes]
        if target not in known:
            outs = _output_columns(graph) or sorted(n for n in graph.nodes
                                                    if graph.nodes[n].get("kind") == "aggregate")
            raise UnknownOutputError(f"unknown target {target!r}",
                                     hint=f"use an output column id, one of: {', '.join(outs[:20])}")
        missing = baseline if found_b is None else current
        if missing.segments:  # sampled, but the target is computed above every segment's aggregation
            g = missing.graph
            held = {a for seg in missing.segments.values() for a in (seg.description.get("aggregates") or {})}
            upstream = sorted(held & nx.ancestors(g, target)) if target in g else []
            raise SparkCausalError(
                f"{target!r} is computed from aggregates after the aggregation (a pivot, or an expression "
                f"over aggregates), so no unit-level sample holds it",
                hint=f"attribute an aggregate it is computed from: {', '.join(upstream[:10])}" if upstream
                else "attribute an aggregate or a row-level output column")
        raise SparkCausalError(f"run {missing.run!r} has no samples for the segment of {target!r}",
                               hint="capture both runs with samples enabled")
    seg_id, seg_b = found_b
    _, seg_c = found_c
    desc = seg_c.description
    desc_b = seg_b.description
    if held != target and held in (desc.get("aggregates") or {}):
        # the output's column is an aggregate another output computes too (the same SUM ... GROUP BY,
        # one node): its units are this output's segment's, under that aggregate's id
        target = held
    if desc.get("id") != desc_b.get("id"):
        warnings.append(f"segment ids differ: {desc_b.get('id')} vs {desc.get('id')}")

    # ---------------------------------------------------------------- target definition
    aggs = desc.get("aggregates") or {}
    if target in aggs:
        fn = str(aggs[target].get("fn", "sum")).lower()
        inp = aggs[target].get("input")
        if fn in ("mean", "average"):
            fn = "avg"
        if fn not in ("sum", "count", "avg"):
            what = f"a {fn}()" if fn in ("min", "max") else \
                "a DISTINCT, a ratio of aggregates or another non-additive aggregate"
            raise SparkCausalError(f"aggregate {target!r} is {what}, which is not a sum over units",
                                   hint="attribute a sum, count or avg aggregate, or its input column")
        if fn == "avg" and agg == "sum":
            warnings.append(f"{target} is an avg() aggregate; agg='mean' gives its ratio of sums")
    else:
        fn, inp = "sum", held
    tb_, tc_ = seg_b.table, seg_c.table
    common_cols = set(tb_.columns) & set(tc_.columns)
    # a filter the code added (or removed) is in one run only: where it is absent it passes every unit
    one_sided = sorted(x for x in set(desc.get("selections") or []) ^ set(desc_b.get("selections") or [])
                       if str(_node_attr(graphs, x, "column", "")).startswith("filter")
                       and x in (tc_.columns if x in (desc.get("selections") or []) else tb_.columns))
    model_nodes = [x for x in list(desc.get("nodes") or []) + list(desc.get("selections") or [])
                   if x in common_cols or x in one_sided]
    model_nodes += [x for x in one_sided if x not in model_nodes]
    # an aggregate of an expression (SUM(price * qty)): the target itself is modelled, per unit, as its
    # argument, a deterministic node of the columns it reads (its code may change like any stage's)
    # So is one whose argument the code changed (SUM(net) -> SUM(net / 1.2), SUM(net) -> SUM(gross)):
    # per unit, each run's own argument, a column or an expression
    arg_col = f"__arg__:{target}"
    defs = [_aggregate_def(d, target) for d in (desc_b, desc)]
    # (a count of an expression, ``COUNT(CASE WHEN amount > 25 THEN 1 END)``, counts the units where it
    # is not NULL: the usual conditional count)
    if all(x.get("arg") or x.get("input") for x in defs) and (
            inp is None and arg_col in common_cols and all(x.get("arg") for x in defs)
            or len({(x.get("input"), x.get("arg")) for x in defs}) > 1):
        inp = target
        model_nodes.append(target)
    only = sorted((set(desc.get("nodes") or []) ^ set(desc_b.get("nodes") or [])))
    if only:
        warnings.append(f"nodes present in one run only (compared on the common ones): {', '.join(only)}")
    if inp is not None and inp not in model_nodes:
        raise SparkCausalError(f"the input {inp!r} of {target!r} is not in both runs' samples",
                               hint="capture both runs with the same job version")

    def prep(seg: SegmentSamples) -> _Run:
        t = seg.table
        own = _aggregate_def(seg.description, target)
        vals = {x: _to_array(t[x]) if x in t.columns else np.ones(len(t)) if x in one_sided
                else _to_array(t[own["input"]]) if x == target and arg_col not in t.columns
                else _to_array(t[f"__arg__:{x}"]) for x in model_nodes}
        for x, v in vals.items():  # an infinity is no amount: counted like a NaN (Spark's sum would be inf)
            if v.dtype.kind == "f" and np.isinf(v).any():
                vals[x] = np.where(np.isinf(v), np.nan, v)
                said = f"{x} holds infinite values in {seg.description.get('id')}; they count as NaN"
                if said not in warnings:
                    warnings.append(said)
        # a join that keeps unmatched units (left join from the driving side) lets every unit through:
        # as a gate its value is 1, so a join whose type changed (inner -> left) is a changed mechanism
        for j in seg.description.get("joins") or []:
            if j.get("drops") is False and j.get("selection") in vals:
                vals[j["selection"]] = np.ones(len(t))
        w = (pd.to_numeric(t["__weight__"], errors="coerce").fillna(1.0).to_numpy(float)
             if "__weight__" in t.columns else np.ones(len(t)))
        # an explode on the driving path gives a driving row (a unit) several sample rows: the units
        # are counted once each, and the rows of one unit are a cluster
        units = t[UNIT].to_numpy() if UNIT in t.columns else None
        first = ~pd.Series(units).duplicated().to_numpy() if units is not None else np.ones(len(t), bool)
        repeated = not first.all()
        n_units, w_units = int(first.sum()), float(w[first].sum())  # rows are weighted per row
        rows = seg.description.get("rows")
        if isinstance(rows, (int, float)) and rows > 0 and w_units > 0:
            # the driving rows are counted exactly: weights that add up to them remove the sample
            # size's own noise (a 0.2% sample of 10M rows misstates the rows by ~0.7%) from the
            # metric and from the volume term, which then compares true row counts. A count the
            # sample contradicts (a stale catalog statistic) is not trusted.
            q = min(1.0, n_units / w_units)
            # (units sampled by whole window partitions, one driver's 1,500 trips in or out, vary the
            # count by their partitions' sizes: 14% between two draws of one job, no contradiction)
            keys = [k for k in seg.description.get("clusters") or [] if k in t.columns]
            sizes = pd.Series(w[first]).groupby([t[k].to_numpy()[first] for k in keys], dropna=False).sum() \
                if keys else pd.Series(w[first])
            if abs(w_units - rows) <= 6 * math.sqrt(float((sizes ** 2).sum()) * (1 - q)) + 1:
                w = w * (float(rows) / w_units)
            else:
                warnings.append(f"{seg.description.get('id')}: the sample implies {w_units:,.0f} driving "
                                f"rows, not the {rows:,} recorded; the sample's own count is used")
        col = f"__contrib__:{target}"
        rec = (pd.to_numeric(t[col], errors="coerce").replace([np.inf, -np.inf], np.nan).fillna(0.0).to_numpy(float)
               if col in t.columns else None)
        return _Run(vals, w, len(t), float(w.sum()), rec, units=_cluster_codes(units) if repeated else None)

    b, c = prep(seg_b), prep(seg_c)
    if b.n == 0 or c.n == 0:
        empty = [seg for seg, r in ((seg_b, b), (seg_c, c)) if r.n == 0]
        no_rows = all(seg.description.get("rows") == 0 for seg in empty)
        if agg != "mean" and where is None and no_rows:
            raise _NoRows(desc.get("driving") or "driving", [(r.w * r.recorded).sum() if r.recorded is not None
                                                             else float("nan") for r in (b, c)])
        if no_rows:  # a mean, or a slice, of no rows has nothing to compare
            raise SparkCausalError(f"{desc.get('driving') or 'the driving table'} has no rows in run "
                                   f"{'baseline' if b.n == 0 else 'current'}: a {agg if agg == 'mean' else 'where slice'} "
                                   "of it has nothing to compare", hint="attribute the whole sum, which is all volume")
        runs = " and ".join(r for r, u in ((baseline.run, b), (current.run, c)) if u.n == 0)
        raise SparkCausalError(f"the sample of {seg_id} in run {runs} holds no units, though its table has rows",
                               hint="capture the run again with a larger --sample-size (the default is 20,000)")
    if inp is not None and not (_is_numeric(b.values[inp]) and _is_numeric(c.values[inp])) and \
            fn != "count" and agg != "count":
        raise SparkCausalError(f"target {target!r} is not numeric", hint="use agg='count' or a numeric column")
    selections = set(x for x in (desc.get("selections") or []) if x in model_nodes) | set(one_sided)
    # string columns become float category codes (pooled over both runs): fast to compare, sort, look up
    coded: dict[str, np.ndarray] = {}
    from_text: set[str] = set()  # numbers or times read from text: capture took them for identifiers
    for x in model_nodes:
        if _node_attr(graphs, x, "kind") == "source" and not (_is_numeric(b.values[x]) and _is_numeric(c.values[x])):
            numbers = _numeric_text([b.values[x], c.values[x]])
            if numbers is not None:
                b.values[x], c.values[x] = numbers
                from_text.add(x)
        if not (_is_numeric(b.values[x]) and _is_numeric(c.values[x])):
            pooled = np.concatenate([b.values[x].astype(object), c.values[x].astype(object)])
            cats = np.asarray(_cats(pooled), dtype=object)
            index = pd.Index(cats)
            b.values[x], c.values[x] = _encode(b.values[x].astype(object), index), _encode(
                c.values[x].astype(object), index)
            coded[x] = cats

    # ---------------------------------------------------------------- node classes
    lookups: dict[str, list[str]] = {}
    free: set[str] = set()        # joined columns of a many-key join: part of the unit, not a lookup
    matched: dict[str, list[str]] = {}  # of those, a left join's match indicator -> the columns it brings
    key_ids: set[str] = set()     # many-valued join keys: identifiers, not causes
    ranged: dict[str, list[str]] = {}  # columns a range (non-equi) join brings: functions of what it compares
    # keys (each join's, whole) of lookups in many-keyed tables: units sharing a key value are clustered
    clustering: set[tuple[str, ...]] = set()
    gates: dict[str, str] = {}    # looked-up columns of a join -> its match indicator (NULL where none)

    def keeps_all(d: dict, sel: Any) -> bool:  # a join that keeps its match as a 0/1 column, dropping no unit
        return any(x.get("selection") == sel and x.get("drops") is False for x in d.get("joins") or [])

    def left(sel: Any) -> bool:  # ... in both runs
        return keeps_all(desc_b, sel) and keeps_all(desc, sel)

    def found(sel: str, into: str | None = None) -> None:  # whether each unit found a row (not its gate of 1)
        for r, seg in ((b, seg_b), (c, seg_c)):
            r.values[into or sel] = np.nan_to_num(_to_array(seg.table[sel]).astype(float), nan=0.0)

    # a join whose type changed (LEFT -> INNER): whether a unit finds a row is the same in both runs, only
    # the gate differs (1 for the left join, the match for the inner one). The match is a root of its own
    # (``<selection>#found``, reported as the join), the gate a function of it per run, so the columns the
    # join brings keep their own conditional on the match instead of looking changed with the gate
    retyped: dict[str, str] = {}  # such a join's selection -> its match root

    def retype(sel: str, cols: list[str]) -> None:
        retyped[sel] = f"{sel}#found"
        found(sel, into=retyped[sel])
        model_nodes.append(retyped[sel])
        free.discard(sel)
        free.add(retyped[sel])
        matched[retyped[sel]] = [col for col in cols if col != sel]

    # aggregates of the same driving rows in another segment (a customer's spend, joined back to each of
    # her orders): what they bring a unit is shared by every unit of the key, and drawn afresh each run
    joined_back = {a for d in graph.graph.get("segments", []) if d.get("id") != desc.get("id") and
                   d.get("driving") == desc.get("driving") for a in d.get("aggregates") or {}}
    for j in desc.get("joins") or []:
        keys = [k for k in j.get("keys") or [] if k in model_nodes]
        if not keys:
            continue
        cols = [col for col in list(j.get("columns") or []) + [j.get("selection")]
                if col in model_nodes and col not in keys]
        if any(({col} | (nx.ancestors(graph, col) if col in graph else set())) & joined_back for col in cols):
            # the units of one key then vary together (a customer's tier follows her orders' sum): the
            # metric's error counts the keys, not the units (rebates of a VIP tier: the error was 0.6x
            # the run-to-run spread, and A/A pairs raised alarms)
            clustering.add(tuple(keys))
        equal = [k for k in keys if k not in (j.get("ranged") or [])]
        if j.get("equi") is False or (len(equal) < len(keys) and not (equal and _many_keys(equal, b, c))):
            # amount BETWEEN lo AND hi: the tier a unit gets follows its amount, which is a cause in its
            # own right, not a key naming an entity; the table is a fitted mechanism of the amount (and
            # of the few keys an equality matches beside it: a contract's tariff band by the hour of a
            # reading, not a lookup keyed by each reading's time, whose keys no two runs share)
            ranged.update((col, keys) for col in cols)
            continue
        if _many_keys(keys, b, c):
            if not _same_table(keys, cols, b, c):
                # A per-key table is only a mechanism when each key has many units (fx rate by currency).
                # With about one unit per key (orders by order key) the joined values are simply part of
                # what a unit is: resampling units redraws the keys, and a per-key comparison would flag
                # every pair of runs. Model them with the unit's other columns instead.
                free.update(cols)
                key_ids.update(keys)
                clustering.add(tuple(keys))
                sel = j.get("selection")
                if sel in cols and left(sel):
                    # whether a unit found a row there is part of it too (a gate of 1 for the job, which
                    # keeps it either way): its share moves when that side's keys stop matching
                    found(sel)
                    matched[sel] = [col for col in cols if col != sel]
                    if fn == "count" and agg == "sum" and inp in (j.get("other_keys") or []):
                        fn, inp = "sum", sel  # the other side's key is set exactly where a row was found
                elif sel in cols and (keeps_all(desc_b, sel) or keeps_all(desc, sel)):
                    retype(sel, cols)
                elif sel in cols:
                    # an inner join's match decides which units it drops: it comes before the values its
                    # row brings (NULL where none was found), which would otherwise take its change (a
                    # quarter of the user ids upper-cased in the dimension read as their country's)
                    matched[sel] = [col for col in cols if col != sel]
                continue
            # ... unless the runs looked up the same table (a customer dimension both runs joined): then
            # it is one, and the keys the runs share say exactly which of its rows changed
            clustering.add(tuple(keys))
        for col in cols:
            lookups[col] = keys
        if j.get("selection") in cols:  # a per-key lookup's row found or not
            if left(j["selection"]):
                found(j["selection"])
            gates.update((col, j["selection"]) for col in cols if col != j["selection"])
    # units that are the groups of another segment by several keys (sessions: a user's, numbered) share
    # what a coarser key holds (the user's device, drawn once for her sessions): each many-valued one of
    # those keys the units carry clusters them (a device mix of the users a run drew read as changed)
    below = [d for d in graph.graph.get("segments", []) if d.get("id") != desc.get("id") and
             d.get("driving") == desc.get("driving") and set(d.get("aggregates") or {}) & set(model_nodes)]
    for d in below:
        keys = [k for k in d.get("group_keys") or [] if k in model_nodes]
        if len(keys) > 1:
            clustering.update((k,) for k in keys if _many_keys([k], b, c))
    # units sampled by the partitions of a window (whole partitions) are clustered by its keys
    windowed = [k for d in (desc, desc_b) for k in d.get("clusters") or [] if k in model_nodes]
    # (sampled by partition, 15 events of each of 1,300 users, they are the design's clusters however large)
    partial = any(float(d.get("rate") or 1.0) < 1.0 for d in (desc, desc_b))
    if windowed and (partial or _many_keys(sorted(set(windowed)), b, c)):  # a few large partitions (per country) are
        key_ids.update(windowed)  # no clusters of the design: with every unit sampled, they are cells
        clustering.add(tuple(sorted(set(windowed))))
    # one code space for both runs: a key value both hold is one cluster, compared with itself
    for keys in sorted(clustering):
        if windowed and partial and keys == tuple(sorted(set(windowed))):  # the sample took them whole
            b.whole = c.whole = b.whole | {len(b.groups)}
        codes = _cluster_codes(np.stack([np.concatenate([b.values[k], c.values[k]]) for k in keys], axis=1))
        b.groups.append(codes[:b.n])
        c.groups.append(codes[b.n:])
    if b.units is not None or c.units is not None:  # an explode's rows of one unit: never shared by the runs
        ub = b.units if b.units is not None else np.arange(b.n)
        uc = c.units if c.units is not None else np.arange(c.n)
        b.units, c.units = ub, uc + int(ub.max(initial=-1)) + 1
        b.groups.append(b.units)
        c.groups.append(c.units)
    aggregates = set(aggs)

    def fparents(v: str) -> list[str]:
        out = []
        g = graph if v in graph else baseline.graph  # a filter the current code removed
        for p in g.predecessors(v) if v in g else []:
            if p in model_nodes and p not in selections and p not in aggregates and p != v:
                out.append(p)
        return out

    def few_values(x: str) -> bool:
        """Whether column ``x`` holds few distinct values over both runs' units (a function can be
        fitted to it as to any category)."""
        if x not in b.values or x not in c.values:
            return False
        both = np.concatenate([_arr(b.values[x], b.n), _arr(c.values[x], c.n)]).astype(str)
        return len(np.unique(both)) <= cfg.discrete_max_values

    driving = desc.get("driving")
    det: dict[str, _DetSpec] = {}
    parents: dict[str, list[str]] = {}
    code_changes: list[dict[str, Any]] = []
    for node in sorted(set(baseline.graph.nodes) & set(current.graph.nodes)):
        fb = baseline.graph.nodes[node].get("fingerprint")
        fc = current.graph.nodes[node].get("fingerprint")
        if fb and fc and fb != fc:
            code_changes.append({"node": node,
                                 "baseline": baseline.graph.nodes[node].get("expr") or fb,
                                 "current": current.graph.nodes[node].get("expr") or fc,
                                 "baseline_fingerprint": fb, "current_fingerprint": fc})
    both = set(baseline.graph.nodes) & set(current.graph.nodes)
    for node in sorted(both - {cc["node"] for cc in code_changes}):
        # a selection of the same text over other columns (a join on the FX table's date moved by a
        # day: ``fx.withColumn("date", date_add("date", 1))``) is code that changed too
        if current.graph.nodes[node].get("kind") != "selection":
            continue
        ins = [set(g.predecessors(node)) for g in (baseline.graph, current.graph)]
        if ins[0] != ins[1] and (ins[0] ^ ins[1]) - both:
            expr = current.graph.nodes[node].get("expr") or node
            code_changes.append({"node": node, "baseline": f"{expr} over {', '.join(sorted(ins[0] - ins[1]))}",
                                 "current": f"{expr} over {', '.join(sorted(ins[1] - ins[0]))}",
                                 "baseline_fingerprint": baseline.graph.nodes[node].get("fingerprint"),
                                 "current_fingerprint": current.graph.nodes[node].get("fingerprint")})
    for node in one_sided:
        now = node in (desc.get("selections") or [])  # the current code has it, the baseline's not
        attrs = (current.graph if now else baseline.graph).nodes[node]
        expr, fp, absent = attrs.get("expr"), attrs.get("fingerprint"), "(no such filter)"
        code_changes.append({"node": node, "baseline": absent if now else expr, "current": expr if now else absent,
                             "baseline_fingerprint": None if now else fp, "current_fingerprint": fp if now else None})
    # code that changed where it cannot reach the target (another output's column) is listed, not
    # offered as a reason the target's move may hide
    reach = {n for g in (baseline.graph, current.graph) if target in g
             for n in nx.ancestors(g, target) | gating_selections(g, target) | {target}}
    for cc in code_changes:
        cc["upstream"] = cc["node"] in reach
    changed_code = {cc["node"] for cc in code_changes}
    how: dict[str, str] = {}
    stand_ins: dict[str, str] = {}  # a root that is a nested source's field -> that source column
    windows: set[str] = set()
    for node in model_nodes:
        if node in lookups:
            parents[node] = lookups[node] + ([gates[node]] if node in gates else [])
            how[node] = "lookup"
            continue
        if node in retyped:
            gate = {tag: (lambda env, n: np.ones(n)) if keeps_all(d, node) else
                    (lambda env, n, m=retyped[node]: env[m]) for tag, d in (("b", desc_b), ("c", desc))}
            det[node] = _DetSpec(node, [retyped[node]], True, gate, True, True)
            parents[node], how[node] = [retyped[node]], "join type"
            continue
        if node in ranged:
            det[node] = _DetSpec(node, ranged[node], node in selections, {"b": None, "c": None}, False)
            parents[node] = ranged[node]
            how[node] = "fitted (range join)"
            continue
        kind = _node_attr(graphs, node, "kind")
        ps = fparents(node)
        if _node_attr(graphs, node, "subtype") == "window":
            # units sampled by whole partitions: the job's window computed again over them, else (units
            # sampled after the window, ``sampling.AFTER``) the window's values are part of the unit
            wspec = _window_spec(node, {"b": (desc_b, b), "c": (desc, c)}, model_nodes,
                                 node in changed_code) if windowed else None
            if wspec is not None:
                det[node], parents[node], how[node] = wspec, wspec.parents, "window"
                windows.add(node)
            continue
        if kind == "aggregate" and node not in aggregates:
            continue  # computed in the segment below (per-customer totals): a value of the unit here
        if node in one_sided and not ps:  # its inputs are not read in the other run: its pass/drop
            free.add(node)                # values are part of the unit, ones where the filter is absent
        if kind == "source" or not ps or node in free:
            continue
        is_sel = node in selections
        fns: dict[str, Callable | None] = {"b": None, "c": None}
        used: set[str] = set(ps)
        scale = _decimal_scale(_node_attr(graphs, node, "dtype"))
        for tag, rg, r, d in (("b", baseline.graph, b, desc_b), ("c", current.graph, c, desc)):
            if node in one_sided and node not in (d.get("selections") or []):
                fns[tag] = _passes_all  # no such filter in this run's code
                continue
            expr = rg.nodes[node].get("expr") if node in rg.nodes else None
            own = _aggregate_def(d, node) if node == target == inp else {}
            expr = own.get("arg") or expr
            if not expr and not own.get("input"):
                continue
            try:
                f, u = (compile_expression(str(expr), _resolver(ps, model_nodes, rg), coded) if expr else
                        ((lambda col: lambda env, n: env[col])(own["input"]), {own["input"]}))
            except (_ExprError, RecursionError):
                continue
            u = {x for x in u if x in model_nodes}
            if not u or u & aggregates or node in u:  # ``payload.price`` read as its own column ``price``
                continue
            f = _wrap_scale(f, None if is_sel else scale)
            if node in coded and not is_sel:
                f = (lambda g, idx: lambda env, n: _encode(_arr(g(env, n), n).astype(object), idx))(
                    f, pd.Index(coded[node]))
            if _verify(f, r, node, is_sel, None if is_sel else scale):
                fns[tag] = f
                used |= u
        used -= selections - {node}
        used.discard(node)
        if not (fns["b"] or fns["c"]):
            # a UDF the sampled pass called only where the gates below it pass (NULL elsewhere): the
            # gates are inputs of its fitted function, or a unit a filter drops looks like its value changed
            used |= {g for d in (desc_b, desc) for g in (d.get("guarded") or {}).get(node, []) if g in model_nodes}
        if not (fns["b"] or fns["c"]) and any(_nested(graphs, p) and not few_values(p) for p in used):
            # a struct's field (``payload.price``) or an expression of several: the struct is held as JSON
            # text, which no function can be fitted to (each unit's text its own), so its values are the
            # unit's own; a nested column of few values (tags) is a category like any other. Unless its code
            # changed, a change of them is the change of the one nested source column it reads
            # (through the explodes between: ``item.price`` of ``explode(items) AS item`` is ``orders.items``)
            nested = {_nested_source(graph, p) for p in used if _nested(graphs, p)}
            if len(nested) == 1 and None not in nested and node not in changed_code and \
                    all(_node_attr(graphs, p, "kind") == "source" or p in graph and
                        graph.nodes[p].get("subtype") == "generate" for p in used):
                stand_ins[node] = nested.pop()
            continue
        if is_sel and not (fns["b"] or fns["c"]) and node not in changed_code and used and \
                all(_run_ids(b, c, p) for p in used):
            # ``NOT EXISTS (SELECT 1 FROM terminated t WHERE t.emp_id = p.emp_id)`` over each run's own
            # employee ids: no function of an id carries from one run to the other, so whether a unit
            # passes is part of it, and more terminations are a larger share of units dropped
            free.add(node)
            continue
        det[node] = _DetSpec(node, sorted(used, key=model_nodes.index), is_sel, fns,
                             node in changed_code, node in changed_code)
        parents[node] = det[node].parents
        how[node] = ("expression" if fns["b"] or fns["c"] else "fitted")

    # ---------------------------------------------------------------- reach (which selections drop units)
    def dropping(s: str) -> bool:
        jt = _node_attr(graphs, s, "join_type")
        flags = [bool(j["drops"]) for d in (desc, desc_b) for j in d.get("joins") or []
                 if j.get("selection") == s and "drops" in j]
        if flags:
            return any(flags)
        for j in desc.get("joins") or []:
            if j.get("selection") == s and j.get("type"):
                jt = j["type"]
        return jt is None or str(jt).lower().replace("_", "").replace(" ", "") not in _NON_DROPPING_JOINS

    anc = nx.ancestors(graph, target) | gating_selections(graph, target) if target in graph else set(selections)
    cands = []
    for cand in ([s for s in selections if s in anc and dropping(s)], [s for s in selections if dropping(s)],
                 [s for s in selections if s in anc], sorted(selections)):
        cand = sorted(cand, key=model_nodes.index)
        if cand not in cands:
            cands.append(cand)
    spec = _Spec(target, agg, fn, inp, cands[0], None, [], {}, lookups, det, [], parents, selections,
                 coded, windows, copies_apart=bool(windowed) and set(windowed) <= key_ids)
    if b.recorded is not None and agg == "sum":
        best, best_rate = cands[0], -1.0
        for cand in cands:
            spec.reach = cand
            rates = []
            for r in (b, c):
                cc_, _ = _contrib(spec, r.values, r.n)
                rates.append(float(np.isclose(cc_, r.recorded, rtol=1e-6, atol=1e-9).mean()))
            if min(rates) > best_rate + 1e-12:
                best, best_rate = cand, min(rates)
        spec.reach = best
        if best_rate < 0.999:
            warnings.append(f"the recorded contributions of {target} are reproduced for only "
                            f"{best_rate:.1%} of the units; part of the change may stay unexplained")

    # ---------------------------------------------------------------- where
    where_nodes: set[str] = set()
    derived_keys: set[str] = set()  # output columns a where slices by, computed per unit (``computed`` below)
    named: set[str] = set()  # the columns a where names (not the inputs of those the job derives)
    if where:
        out_name = _node_attr(graphs, target, "output") or desc.get("output")
        names: dict[str, str] = {}
        out_cols = list(((graph.graph.get("outputs") or {}).get(out_name) or {}).get("columns") or [])
        group_keys = [k for k in desc.get("group_keys") or [] if k in model_nodes]
        computed: dict[str, tuple[Callable, set[str]]] = {}  # output columns computed from the units' columns
        underived: dict[str, SparkCausalError] = {}  # and those that cannot be
        for col in out_cols:
            nm = str(_node_attr(graphs, col, "column") or col.rsplit(".", 1)[-1])
            if _node_attr(graphs, col, "kind") == "aggregate":  # a unit has no value of it to slice by
                continue
            if col in model_nodes:
                names[nm.lower()] = col
                continue
            # the nearest column of the units it comes from, and whether it is that column unchanged
            same, frontier, hit, derived = {col: True}, [col], None, False
            while frontier and hit is None:
                nxt = []
                for x in frontier:
                    for p in (graph.predecessors(x) if x in graph else []):
                        kept = same[x] and graph.edges[p, x].get("subtype") in ("identity", "group_by", None)
                        if p in group_keys or (p in model_nodes and p not in aggregates
                                               and p not in selections and not group_keys):
                            hit, derived = (hit, derived) if hit else (p, not kept)  # the nearest wins
                        if p not in same:
                            same[p] = kept
                            nxt.append(p)
                frontier = nxt
            if hit and derived:  # a key the job derives (date_trunc('month', ts) AS month): its own expression
                # (of the node it copies, if another output computes the same key: ``daily.qty``)
                src = col
                while _node_attr(graphs, src, "subtype") == "identity" and src not in model_nodes:
                    copied = [p for p in graph.predecessors(src) if graph.edges[p, src].get("kind") == "direct"]
                    if len(copied) != 1:
                        break
                    src = copied[0]
                try:
                    compute, used = compile_expression(str(_node_attr(graphs, src, "expr")),
                                                       _resolver([hit], model_nodes, graph), coded, fields=True)
                except (_ExprError, RecursionError):
                    used = {col}
                if not used or not used <= set(model_nodes):  # said if the slice asks for it
                    underived[col] = SparkCausalError(
                        f"where: {nm} is derived by the job ({_node_attr(graphs, col, 'expr')}), which cannot be "
                        "computed from the sampled units", hint=f"slice by {hit.rsplit('.', 1)[-1]} instead")
                else:
                    computed[col] = (compute, used)
                names[nm.lower()] = col
            elif hit:
                names[nm.lower()] = hit
        for k in group_keys:
            names.setdefault(str(_node_attr(graphs, k, "column") or k.rsplit(".", 1)[-1]).lower(), k)

        def resolve(name: str) -> str:
            if names.get(name.lower()) in underived:
                raise underived[names[name.lower()]]
            if name.lower() in names:
                return names[name.lower()]
            if name in model_nodes and name not in aggregates and name not in selections:
                return name  # a column of the units by its node id (``compare._carried_where``)
            raise _ExprError(name)
        try:
            wfn, where_nodes = compile_expression(where, resolve, coded)
            named = set(where_nodes)
            if computed:  # computed for the units as they are then (a coalition redraws their columns)
                wfn = (lambda f: lambda env, n: f({**env, **{k: g(env, n) for k, (g, _) in computed.items()}}, n))(wfn)
                sliced = where_nodes & set(computed)
                for k in sliced:  # each unit's own value, a column the roots may be conditioned on
                    vals = [_arr(computed[k][0](r.values, r.n), r.n) for r in (b, c)]
                    if not all(_is_numeric(v) for v in vals):
                        index = pd.Index(_cats(np.concatenate([v.astype(object) for v in vals])))
                        vals = [_encode(v.astype(object), index) for v in vals]
                    b.values[k], c.values[k] = vals
                    derived_keys.add(k)
                # (not a struct a key is a field of: JSON text, whose field the key's own values hold)
                where_nodes = where_nodes | {u for k in where_nodes if k in computed for u in computed[k][1]
                                             if not _nested(graphs, u)}
        except _ExprError as e:
            if str(e).startswith("unknown column"):
                raise UnknownOutputError(
                    f"where: {e} is not a group-key column of the output",
                    hint=f"use one of: {', '.join(sorted(names))}") from None
            raise SparkCausalError(f"cannot parse where {where!r}: {e}",
                                   hint="write a SQL predicate such as country = 'DE'") from None
        many = [k for k in named if k in b.values and k in c.values and
                len(np.unique(np.concatenate([b.values[k], c.values[k]]).astype(str))) > cfg.discrete_max_values]
        # a column looked up through another lookup (a store's region's name), which no root may be
        # conditioned on: a northern price rise was a quarter of itself in the north's slice
        deep = [k for k in named if k not in derived_keys and _node_attr(graphs, k, "table") != driving and
                not (k in lookups and all(_node_attr(graphs, x, "table") == driving for x in lookups[k]))]
        if many or deep:
            # too many values to condition on (hours; the accounts of a region an outer slice keeps,
            # ``account_id IN (...)``): whether the unit is in the slice does the same, so a drift on the
            # day before stays out of this day's hours, and one of northern calls in the north's accounts
            # (was: a quarter of it there, the north a quarter of the calls)
            for r in (b, c):
                r.values[_IN_SLICE] = (_bool(wfn(r.values, r.n), r.n) == 1).astype(float)
            derived_keys.add(_IN_SLICE)
            where_nodes = where_nodes | {_IN_SLICE}
        if not any((_bool(wfn(r.values, r.n), r.n) == 1).any() for r in (b, c)):
            raise SparkCausalError(f"where {where!r} matches no unit of either run",
                                   hint="check the values and their types, e.g. country = 'DE', "
                                        "day >= '2026-11-02'")
        spec.where_fn = wfn
        # (a key the model draws as a root moves units across the slice itself: none then)
        roots_of_keys = _upstream_of(named, computed, parents, model_nodes)
        spec.slice_roots = [] if named & set(roots_of_keys) else roots_of_keys

    # ---------------------------------------------------------------- rows per unit
    fanout = None
    if agg != "mean" and not any(_node_attr(graphs, x, "subtype") == "generate" for x in model_nodes):
        fanout = _fanout(spec, b, c, seg_b.table, seg_c.table, desc, graphs, cfg)
        if fanout is not None:
            b, c = fanout.first_b, fanout.first_c
            warnings.append(f"the rows each {driving} row gets moved ({fanout.rows_b:.3g} -> {fanout.rows_c:.3g} "
                            f"per unit): the rows beyond a unit's first are {fanout.node}, the model is of "
                            "the first")

    # ---------------------------------------------------------------- relevant part of the segment
    start = ({inp} if inp else set()) | set(spec.reach) | set(where_nodes)
    relevant, stack = set(), list(start)
    while stack:
        x = stack.pop()
        if x in relevant:
            continue
        relevant.add(x)
        stack += parents.get(x, [])
    fg = nx.DiGraph()
    for x in relevant:
        if x in parents:
            fg.add_node(x)
            for p in parents[x]:
                if p in parents:
                    fg.add_edge(p, x)
    try:
        spec.order = [x for x in nx.topological_sort(fg)]
    except nx.NetworkXUnfeasible:
        raise SparkCausalError("the segment's graph has a cycle", hint="report this as a bug") from None
    spec.det = {k: v for k, v in det.items() if k in relevant}
    spec.lookups = {k: v for k, v in lookups.items() if k in relevant}
    spec.gates = {k: v for k, v in gates.items() if k in spec.lookups}
    # a table's columns are modelled jointly: every column of the driving table joins the chain, so
    # that a drift confined to one group (one country's amounts) stays a change of one conditional
    # (not a struct/map/array nothing in the model reads: it is JSON text, which a field added to it
    # changes without changing a value the job uses)
    root_nodes = [x for x in model_nodes if x not in parents and (x not in selections or x in free) and (
        x in relevant or x in matched and set(matched[x]) & relevant
        or (_node_attr(graphs, x, "table") or _node_attr(graphs, x, "stage")) == driving
        and not _nested(graphs, x))]
    discrete, identifiers, nuniq = {}, [], {}
    declared_ids = set(desc.get("identifiers") or []) | set(desc_b.get("identifiers") or []) | key_ids
    lookup_keys = {k for keys in lookups.values() for k in keys}
    for x in root_nodes:
        pooled = np.concatenate([b.values[x], c.values[x]])
        nn = int(len(np.unique(pooled[~np.isnan(pooled)])))
        nonnull = int((~np.isnan(pooled)).sum())
        nuniq[x] = nn
        dtype = str(_node_attr(graphs, x, "dtype") or "").lower()
        # (text is coded, or numbers and times read from text, judged by its values)
        integral = x in coded or dtype in ("int", "bigint", "smallint", "tinyint", "long", "integer") or (
            nonnull and np.all(np.mod(pooled[np.isfinite(pooled)], 1) == 0))
        if (x in declared_ids and (integral or x not in from_text)) or (
                integral and nonnull >= 50 and nn >= 0.95 * nonnull) or (
                x in coded and x not in lookup_keys and nn > cfg.discrete_max_values and _per_run_labels(b, c, x)):
            identifiers.append(x)
            continue
        # a key of a per-key lookup names dimension rows (products, stores): its numbers are labels, and
        # a change of its mix is a change of category shares, which a KS test of the labels barely sees
        discrete[x] = x in coded or nn <= cfg.discrete_max_values or x in lookup_keys
    disc = sorted([x for x in discrete if discrete[x]], key=lambda x: (nuniq[x], model_nodes.index(x)))
    rank = {x: i for i, x in enumerate(disc)}

    def cond_of(preds) -> list[str]:
        return sorted(preds, key=rank.get)[: cfg.max_cond_discrete]

    chain = _order_discrete(disc, cond_of, b, c, discrete, cfg) if 2 <= len(disc) <= 5 else disc
    # whether a unit found a row of a left-joined side comes before the values that row brings
    chain = [x for x in chain if x in matched] + [x for x in chain if x not in matched]
    chain += [x for x in root_nodes if x in discrete and not discrete[x]]
    # few-valued source columns of a dimension, looked up by the unit's keys (a customer's country): a
    # unit keeps its own, so a numeric root may be conditioned on them too (a drift of German customers'
    # amounts is then a change within Germany, not spread over every country that pays in euros). Not a
    # column the job derives (a tier from the customer's total spend): it may follow from the root itself.
    # Nor one whose own values changed (a corrupted VAT rate): the units it moves into a new cell would
    # make the root look changed within the cells, where it did not change by the key
    lookup_tests = {node: _lookup_test(node, keys, b, c, spec.coded, spec.gates) for node, keys in spec.lookups.items()}
    # A key a where slices by, derived by the job from a time (a month), is one too: each month keeps its amounts
    def few_valued(x: str) -> bool:
        pooled = np.concatenate([b.values[x], c.values[x]])
        nuniq[x] = int(len(np.unique(pooled[~np.isnan(pooled)])))
        return 2 <= nuniq[x] <= cfg.discrete_max_values

    looked_up = [x for x in sorted(derived_keys) + [
        x for x in lookups if x in relevant and lookup_tests[x][0] >= cfg.alpha and
        _node_attr(graphs, x, "kind") == "source" and all(k in identifiers or k in discrete for k in lookups[x])]
        if few_valued(x)]
    # the output's few-valued group keys looked up from a dimension (revenue per country and day, the
    # country a user's): a numeric root's test also looks within each of their values (as within the
    # looked-up columns the metric depends on), though the metric does not depend on them. German
    # customers' amounts x2 moved revenue 13% and no test saw it until a slice by country put country
    # in the model
    by_key = [x for x in desc.get("group_keys") or [] if
              x in lookups and x not in looked_up and _node_attr(graphs, x, "kind") == "source" and
              all(k in b.values for k in lookups[x]) and
              _lookup_test(x, lookups[x], b, c, spec.coded, gates)[0] >= cfg.alpha and few_valued(x)]
    roots = []
    disc_before: list[str] = []
    num_before: list[str] = []
    rank_cache: dict[str, np.ndarray] = {}
    for x in chain:
        cond, budget = cond_of(disc_before), cfg.max_cells
        if not discrete[x]:
            # a numeric column is conditioned only on the columns it depends on: conditioning on an
            # independent column would re-draw it for nothing (noise, time) when that column changes.
            # Chosen before the cap, so that independent few-valued columns (status, channel) do not
            # take the places of the one it depends on (country), whose mix shift would then be its own;
            # the strongest first, while their cells fit: cells beyond ``max_cells`` merge into one
            # rest cell, and a 60-valued key would dilute the 3 quantities that matter into it
            # (not on whether the unit is in a slice by this column itself: a lane mix that emptied the
            # north's lanes is no change within the north's slice and its rest)
            strength = {d: _dependence(x, d, b, c, cfg) for d in disc_before + looked_up
                        if not (d == _IN_SLICE and x in named)}
            # a column the ``where`` slices by comes first, dependent or not: each slice keeps its own
            # distribution (a German drift must not leak into the French slice)
            strength.update({d: math.inf for d in strength if d in where_nodes})
            strong = sorted((d for d in strength if strength[d] > 1),
                            key=lambda d: (-strength[d], rank.get(d, len(rank)), d))
            # the strongest that fits (a customer's country before the 2,000 customers it groups, whose
            # cells would mostly merge into the rest cell), else the strongest, whatever it takes
            fits = [d for d in strong if nuniq[d] + 1 <= cfg.max_cells]
            strong = fits[:1] + [d for d in strong if d not in fits[:1]]
            cond = strong[:1]
            # a slice's columns multiply the cells without taking the others' places: a drift of one
            # city's fares stays in that city's cells within the motorbike slice
            budget = cfg.max_cells * math.prod(nuniq[d] + 1 for d in cond if d in where_nodes)
            # the cells the units fill, not the product of the values: a currency's looked-up rate
            # is one cell per currency, and adds nothing to it (it took the budget of the fare class
            # whose mix then read as a change of the fares within each currency)
            filled = _filled_cells(cond, b, c) if cond else 0
            for d in strong[1:]:
                if len(cond) >= cfg.max_cond_discrete:
                    break
                more = _filled_cells(cond + [d], b, c)
                if more > filled and more + 1 <= budget:
                    cond.append(d)
                    filled = more
            rho = [(abs(_spearman(x, y, b, c, rank_cache)), y) for y in num_before]
            rho = [t for t in rho if t[0] >= max(0.05, 4 / math.sqrt(b.n + c.n))]
            if rho:
                cond.append(max(rho)[1])
        split = [d for d in disc_before + (looked_up + by_key if not discrete[x] else []) if d not in cond]
        roots.append(_RootSpec(x, discrete[x], cond, split, budget))
        (disc_before if discrete[x] else num_before).append(x)
    spec.roots = roots
    spec.discrete = {**discrete, **{x: True for x in looked_up}}
    for x in root_nodes:
        how[x] = "identifier (carried)" if x in identifiers else "root"

    # ---------------------------------------------------------------- change tests
    if rng is None:
        rng = np.random.default_rng(cfg.seed)
    fit = _Fitted(spec, b, c, cfg, rng)
    t_fit = time.perf_counter()
    tests: dict[str, dict[str, Any]] = {}
    for r in spec.roots:
        # a root computed upstream (a column of a table the run wrote and reads back, an aggregate of the
        # segment below) whose code, or the code of a column it derives from, changed: its values come
        # from other code now. A distribution test could miss it (a commission applied twice to the 27%
        # of sessions that bought, the rest 0) and leave the change unexplained
        above = {r.name} | (nx.ancestors(graph, r.name) if r.name in graph else set())
        # (a source's own fingerprint is its type: DECIMAL read as DOUBLE is the same values, not new code)
        if any(a in changed_code and graph.nodes[a].get("kind") not in ("selection", "source") for a in above if a in graph):
            tests[r.name] = {"p": 0.0, "certain": True, "how": "code changed upstream"}
        else:
            tests[r.name] = {"p": fit.roots[r.name].test(b, c), "certain": False, "how": "root"}
    # a root that changed only given another root that changed (amounts conditioned on a quantity keyed
    # in wrong in one region, the amounts themselves as they were) keeps its own distribution: it did
    # not change, the other did. The sparser explanation is kept: conditioned on the unchanged roots only
    moved = {r.name for r in spec.roots if tests[r.name]["p"] < cfg.alpha}
    apart = []
    for r in spec.roots:
        if r.name not in moved or tests[r.name]["certain"] or not set(r.cond) & moved:
            continue
        alone = dataclasses.replace(r, cond=[x for x in r.cond if x not in moved],
                                    split=[x for x in r.split if x not in moved])
        p_alone = _RootModel(alone, b, c, spec.discrete, cfg, rng).test(b, c)
        if p_alone >= cfg.alpha:
            apart.append((r, alone, p_alone, sorted(set(r.cond) & moved)))
    for r, alone, p_alone, given in apart:
        r.cond, r.split = alone.cond, alone.split
        tests[r.name] = {"p": p_alone, "certain": False, "how": f"root (its change given {', '.join(given)} is theirs)"}
    # the converse: a numeric root that changed given its cells but not given a discrete root that changed
    # too, which its cells left out (invoices billed at their plan's price, a third of the basic accounts
    # moved to pro plans: the amounts per currency rose, the amounts per currency and plan did not). A
    # mechanism stays the same given its true parents; the plans' change is the cause, not the amounts
    moved = {r.name for r in spec.roots if tests[r.name]["p"] < cfg.alpha}
    given = []
    for r in spec.roots:
        if r.discrete or r.name not in moved or tests[r.name]["certain"]:
            continue
        found = []
        for d in (d for d in r.split if d in moved and spec.discrete.get(d) and nuniq.get(d, math.inf) <= cfg.max_cells):
            alt = dataclasses.replace(r, cond=r.cond + [d], split=[x for x in r.split if x != d],
                                      max_cells=(r.max_cells or cfg.max_cells) * (nuniq[d] + 1), given_last=True)
            found.append((_RootModel(alt, b, c, spec.discrete, cfg, rng).test(b, c), d, alt))
        if found and max(found)[0] >= cfg.alpha:
            given.append((r, *max(found, key=lambda t: t[0])))
    for r, p_given, d, alt in given:
        r.cond, r.split, r.max_cells, r.given_last = alt.cond, alt.split, alt.max_cells, True
        tests[r.name] = {"p": p_given, "certain": False, "how": f"root (unchanged given {d}, which changed)"}
    for node, (p, certain, note) in lookup_tests.items():
        tests[node] = {"p": p, "certain": certain, "how": "lookup", "note": note}
    refit = bool(apart or given)
    for node, d in spec.det.items():
        if d.code_changed and _computes_the_same(d, b, c, _decimal_scale(_node_attr(graphs, node, "dtype"))):
            tests[node] = {"p": 1.0, "certain": False, "untested": True,
                           "how": "code changed, same values on both runs' units"}
        elif d.code_changed:
            tests[node] = {"p": 0.0, "certain": True, "how": "code change"}
        elif d.fn["b"] is not None and d.fn["c"] is not None:
            # the same code evaluated on both runs reproduces both: unchanged by construction
            tests[node] = {"p": 1.0, "certain": False, "how": "same code, reproduces both runs",
                           "untested": True}
        elif d.selection and d.fn["b"] is None and d.fn["c"] is None and (follows := _threshold_inputs(
                node, graph, aggregates, {r.name for r in spec.roots}, changed_code)):
            # a threshold from a scalar subquery over the units' own roots: each run's is fitted, and
            # the current one applies with those roots (a chance move of an average is no change)
            d.follows, d.per_run, refit = tuple(follows), True, True
            how[node] = f"threshold computed from {', '.join(follows)}"
            tests[node] = {"p": 1.0, "certain": False, "untested": True,
                           "how": f"same code, a threshold computed from {', '.join(follows)}"}
        elif _pure(node, graph, set(model_nodes)):
            # same fingerprint, a row-wise expression whose inputs are all in the sample: the code is
            # the mechanism, so it did not change; a fitted comparison would only measure fitting noise
            tests[node] = {"p": 1.0, "certain": False, "how": "same code over the same inputs",
                           "untested": True}
        else:
            tests[node] = {"p": _det_test(d, b, c, spec.coded, spec.selections), "certain": False,
                           "how": "exact comparison"}
    uncertain = [k for k, t in tests.items() if not t["certain"] and not t.get("untested")]
    adj = dict(zip(uncertain, _holm([tests[k]["p"] for k in uncertain]))) if uncertain else {}
    for k, t in tests.items():
        t["p_adj"] = 0.0 if t["certain"] else adj.get(k, t["p"])
        t["changed"] = bool(t["certain"] or t["p_adj"] < cfg.alpha)
    for node, d in spec.det.items():
        if tests.get(node, {}).get("changed") and not d.per_run:
            d.per_run = refit = True
    for r in spec.roots:
        if tests.get(r.name, {}).get("changed") and not tests[r.name]["certain"]:
            r.nulls_only = fit.roots[r.name].values_calm(b, c, cfg.alpha)
            r.kept = frozenset() if r.nulls_only else fit.roots[r.name].settled(b, c, cfg.alpha)
            refit = refit or bool(r.kept) or r.nulls_only
    if refit:
        fit = _Fitted(spec, b, c, cfg, np.random.default_rng(cfg.seed))
    t_test = time.perf_counter()
    return FittedModel(
        target=target, agg=agg, where=where, segment=desc, segment_id=seg_id, driving=driving,
        spec=spec, baseline=b, current=c, fit=fit, config=cfg, tests=tests,
        mechanisms={k: how.get(k, "root") for k in sorted(relevant)},
        code_changes=tuple(code_changes), warnings=tuple(warnings), graphs=tuple(graphs),
        baseline_run=baseline.run, current_run=current.run,
        seconds={"fit": t_fit - t0, "tests": t_test - t_fit}, fanout=fanout,
        stand_ins={**{k: v for k, v in stand_ins.items() if k in tests and v not in tests},
                   **{m: sel for sel, m in retyped.items()}})


def attribute_samples(graph: nx.DiGraph, baseline: RunSamples, current: RunSamples, target: str, *,
                      agg: str = "sum", where: str | None = None,
                      config: AttributionConfig | None = None, exact: Exact | None = None) -> Attribution:
    """Attribute the change of ``agg(target)`` between two runs to mechanisms and volume.

    ``graph`` is the DAG both runs are compared on (normally the current run's, or their common
    part); ``baseline.graph``/``current.graph`` supply each run's code (fingerprints, expressions).
    ``target`` is an output column node id (an aggregate, or a row-level output column); ``where``
    is a SQL predicate on the output's group-key columns, e.g. ``"country = 'DE'"``.

    The model comes from :func:`fit_model`; the change is split with Shapley values over
    :func:`evaluate` and the intervals come from :func:`refit` on bootstrap resamples.
    With ``exact`` (a sum or count the job wrote, an average's exact mean), whether the metric moved is told by its exact
    change against the spread of the whole runs' metric, not by the samples' estimate of it.

    >>> res = attribute_samples(g, base, cur, "report.revenue")     # doctest: +SKIP
    >>> res.summary()                                               # doctest: +SKIP
    'revenue fell 9,300 (from 102,000 to 92,700); 8,120 of it from fx.rate, ...'
    """
    cfg = config or AttributionConfig()
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    try:
        model = fit_model(graph, baseline, current, target, agg=agg, where=where, config=cfg, rng=rng)
    except _NoRows as e:
        return _no_rows_result(e, target, agg, baseline.run, current.run, cfg.seed)
    agg, spec, b, c, tests = model.agg, model.spec, model.baseline, model.current, model.tests
    driving, graphs, selections = model.driving, list(model.graphs), spec.selections
    warnings = list(model.warnings)
    t_test = time.perf_counter()

    # ---------------------------------------------------------------- metric values and volume
    def metric_values(r: _Run) -> tuple[float, np.ndarray, np.ndarray]:
        cc_, dd_ = _observed_contrib(spec, r)
        if agg == "mean":
            den = float((r.w * dd_).sum())
            return (float((r.w * cc_).sum()) / den if den else float("nan")), cc_, dd_
        return float((r.w * cc_).sum()), cc_, dd_

    vb, cb_, db_ = metric_values(b)
    vc, cc_, dc_ = metric_values(c)
    change = vc - vb
    z = stats.norm.ppf(1 - cfg.alpha / 2)

    def se_of_change(whole: bool = False) -> float:
        """Standard error of the metric's change: the units' spread (cluster-robust, each key value
        against itself in the other run) and, for sums and counts, the run-to-run variation of the
        number of units (``_row_variance``) at the mean unit's value. ``whole``: the
        spread of the runs' exact metric (the sample's own noise taken out, ``_paired_ss``), not of
        the samples' estimate of it."""
        if agg == "mean":  # linearised: each unit's share of the ratio's error
            dens = [float((r.w * dd).sum()) for r, dd in ((b, db_), (c, dc_))]
            if not all(dens) or b.n < 2 or c.n < 2:
                return float("nan")
            ub, uc = [(cc - val * dd) / den for cc, dd, val, den in
                      ((cb_, db_, vb, dens[0]), (cc_, dc_, vc, dens[1]))]
            if whole:
                return math.sqrt(_paired_ss(ub, uc, b.groups, c.groups, b.w, c.w, b.whole))
            ub, uc = b.w * ub, c.w * uc
            return math.sqrt(_paired_ss(ub - ub.mean(), uc - uc.mean(), b.groups, c.groups))
        per_unit = ((vb / b.N) ** 2 if b.N else 0.0) + ((vc / c.N) ** 2 if c.N else 0.0)
        rows = per_unit / 2 * _row_variance(b, c)
        if whole:
            zb, zc = (cc - float((r.w * cc).sum()) / max(float(r.w.sum()), 1e-300) for r, cc in ((b, cb_), (c, cc_)))
            return math.sqrt(_paired_ss(zb, zc, b.groups, c.groups, b.w, c.w, b.whole) + rows)
        ub, uc = b.w * cb_, c.w * cc_
        return math.sqrt(_paired_ss(ub - ub.mean(), uc - uc.mean(), b.groups, c.groups) + rows)

    se_change, se_whole = se_of_change(), se_of_change(whole=True)
    # what the units' model has to explain: with a changed fan-out, the change of their first rows
    sig_model = bool(np.isfinite(se_change) and abs(change) > z * max(se_change, 1e-300))
    fan = model.fanout
    if fan is not None:  # the model's units are the first rows; the metric is every row's
        vb, vc = vb + fan.extra_b, vc + fan.extra_c
        change = vc - vb
        se_change, se_whole = math.sqrt(se_change ** 2 + fan.se ** 2), math.sqrt(se_whole ** 2 + fan.se ** 2)
    sig_metric = sig_samples = bool(np.isfinite(se_change) and abs(change) > z * max(se_change, 1e-300))
    z_whole = None
    if exact is not None and np.isfinite(se_whole) and se_whole > 0:
        z_whole = (exact.current - exact.baseline) / se_whole
        sig_metric = abs(z_whole) > z
        sig_model = sig_model or sig_metric
    vol_p = 1.0
    if agg != "mean":
        dn = c.N - b.N
        sd_n = math.sqrt(max(_row_variance(b, c), 1e-300))
        vol_p = float(2 * stats.norm.sf(abs(dn) / sd_n))

    # ---------------------------------------------------------------- Shapley over changed mechanisms
    players = [k for k, t in tests.items() if t["changed"]]
    mb, mc = _metric_from(spec, cb_, db_, b.w), _metric_from(spec, cc_, dc_, c.w)
    nbar = (b.N + c.N) / 2 if agg != "mean" else 1.0
    split, phi, v0, v1 = _nearer_split(model, players, mc, rng)
    rescued: list[str] = []
    explained = nbar * (v1 - v0)
    mech_change = nbar * (mc - mb)
    def weakest(below: float, most: int) -> list[str]:
        """At most ``most`` mechanisms their tests did not flag, at p under ``below``, least likely unchanged first."""
        return sorted((k for k, t in tests.items() if not t["changed"] and t["p"] < below),
                      key=lambda k: tests[k]["p"])[:most]

    by_shift = False  # one column found by its exact statistics alone: the samples cannot size it
    # (the rows alone moving it most of the way, at the mean row, leave nothing to rescue: 15% more
    # readings took a weakly tested meter id's -86,250 into a +13,676 move)
    moved = exact.current - exact.baseline if exact is not None else change
    by_rows = agg != "mean" and bool(b.n + c.n) and \
        abs(moved - (c.N - b.N) * (b.n * mb + c.n * mc) / (b.n + c.n)) < 0.5 * abs(moved)
    if cfg.rescue and sig_model and not players and not by_rows and abs(explained) < 0.5 * abs(mech_change):
        extra = weakest(cfg.alpha, 3)
        how = "weakly changed ones were added"
        if not extra and exact is not None and any(r.N > r.n + 0.5 for r in (b, c)):
            # too weak for a sample of part of the rows, a drift of every row is plain in the exact
            # statistics: the driving table's columns whose whole-data mean or NULL share moved beyond
            # chance (with every row sampled, the samples' own tests saw all there is)
            shifted = {r.name: exact.shifts.get(r.name, 0.0) for r in spec.roots}
            extra = sorted((k for k, v in shifted.items() if v > z), key=lambda k: -shifted[k])[:3]
            how = "the columns whose exact statistics moved were added"
            by_shift = len(extra) == 1
        if not extra:
            # a drift of one country's amounts among amounts in many currencies: its whole-sample test
            # at p 0.015, the exact mean at chance. The least unlikely mechanism below 5 alpha is named
            # if, alone, it moves the metric the way it moved by at least half (never by chance alone:
            # the metric itself moved beyond its noise)
            weak = weakest(_WEAK * cfg.alpha, 1)
            if weak:
                _, phi_w, w0, w1 = _nearer_split(model, weak, mc, rng)
                if nbar * (w1 - w0) * mech_change > 0 and abs(nbar * phi_w[0]) >= 0.5 * abs(mech_change):
                    extra, how = weak, "the mechanism least likely unchanged, which alone moves it so, was added"
        if extra:
            rescued = extra
            players = players + extra
            split, phi, v0, v1 = _nearer_split(model, players, mc, rng)
            warnings.append("the metric moved significantly but the significantly changed mechanisms "
                            f"explain little of it; {how}: {', '.join(extra)}")
    elif cfg.rescue and sig_metric and players and len(players) < cfg.max_exact_players:
        # a second fault far smaller than the first (one country's amounts x1.3 next to a rate x100, 1% of
        # the move) is tested at p 0.003, under the Holm line: weakly changed mechanisms share the move
        # with the changed ones, reported as changed or not by their own tests
        weak = weakest(cfg.alpha, cfg.max_exact_players - len(players))
        if weak:
            rescued = weak
            players = players + weak
            split, phi, v0, v1 = _nearer_split(model, players, mc, rng)
    contrib = {p: float(nbar * phi[i]) for i, p in enumerate(players)}

    def priced(m_b: float, m_c: float) -> float:
        """The volume term: the change in rows at the mean row. With mechanisms changed, their mean rows
        differ and each run's counts half (the Shapley split of rows x mean row). With none changed, the
        rows are alike and their mean is best told by all units together: a source shrunk to a few rows
        has a noisy mean of its own, which the halves would multiply by every row it lost."""
        if agg == "mean":
            return 0.0
        if players or not (b.n + c.n):
            return (c.N - b.N) * (m_b + m_c) / 2
        return (c.N - b.N) * (b.n * m_b + c.n * m_c) / (b.n + c.n)

    volume = priced(mb, mc)
    slice_rows = _slice_rows(spec, b, c, cb_, cc_) if agg != "mean" else None
    own = _own_rows(slice_rows, b, c, z)
    own_shift = 0.0 if own is None else own - volume  # (the slice's own rows: its draws move with it)
    volume += own_shift
    t_shap = time.perf_counter()

    # ---------------------------------------------------------------- bootstrap
    boots: dict[str, list[float]] = {p: [] for p in players}
    boots["__volume__"] = []
    n_boot = cfg.n_bootstrap if (players or agg != "mean") else 0
    clusters = _bootstrap_clusters(b, c, cb_, cc_)
    for _ in range(n_boot):
        ib, ic = _resample(b.n, c.n, clusters, rng)
        mb2 = _metric_from(spec, cb_[ib], db_[ib], b.w[ib])
        mc2 = _metric_from(spec, cc_[ic], dc_[ic], c.w[ic])
        boots["__volume__"].append(priced(mb2, mc2) + own_shift)
        if players:
            try:
                ph2, _, _ = _forward_shapley(refit(split, baseline=ib, current=ic, rng=rng), players, rng)
            except Exception:  # noqa: BLE001 - a degenerate resample: skip it
                continue
            for i, p in enumerate(players):
                boots[p].append(float(nbar * ph2[i]))
    t_boot = time.perf_counter()
    lo_q, hi_q = (1 - cfg.ci_level) / 2, 1 - (1 - cfg.ci_level) / 2
    movers = players if by_shift else [p for p in players if contrib[p] != 0]
    # (so is the one changed mechanism with a share, when the job's figures moved beyond their noise and
    # the samples' own estimate did not: a price floor raised below a dedup lifted an average of heavy-
    # tailed prices +1.61, which 20,000 of 233,000 units put at -1.1, their share -0.05, error 1.47)
    by_shift = by_shift or (sig_metric and not sig_samples and len(movers) == 1)
    if by_shift and z_whole is not None:
        # a drift the samples cannot tell from their noise (a 4% price rise over 1,000 of 40,000 rows:
        # -406 of +14,282) is sized by the exact change less the volume, where the samples' own share of
        # it lies within their error of that: their bootstrap draws move with it
        (only,), sized = movers, exact.current - exact.baseline - volume - (fan.extra_c - fan.extra_b if fan else 0.0)
        if abs(sized - contrib[only]) <= z * se_change:
            boots[only] = [x + sized - contrib[only] for x in boots[only]]
            contrib[only] = sized
            warnings.append(f"{only} is sized by the exact change less the volume ({sized:+,.6g}): the samples' "
                            "estimate of its share lies within their error of it")

    def interval(key: str, point: float) -> tuple[float, float, float]:
        xs = np.asarray(boots.get(key) or [], float)
        if len(xs) < 3:
            return point, point, 0.0
        lo, hi = np.quantile(xs, [lo_q, hi_q])
        return float(min(lo, point)), float(max(hi, point)), float(np.std(xs, ddof=1))

    # ---------------------------------------------------------------- items
    def item(node: str, kind: str, value: float, changed: bool, p: float | None,
             ci: tuple[float, float, float] | None) -> AttributionItem:
        lo, hi = (ci[0], ci[1]) if ci else (value, value)
        return AttributionItem(node=node, kind=kind,
                               table=_node_attr(graphs, node, "table") if kind != "volume" else node.rsplit(".", 1)[0],
                               stage=_node_attr(graphs, node, "stage"),
                               column=_node_attr(graphs, node, "column") or node.rsplit(".", 1)[-1],
                               contribution=float(value), ci_low=float(lo), ci_high=float(hi),
                               mechanism_changed=bool(changed), p_value=None if p is None else float(p))

    def report_kind(node: str) -> str:
        k = _node_attr(graphs, node, "kind")
        if node in selections or k == "selection":
            return "selection"
        return "source" if k == "source" else "stage"

    items: list[AttributionItem] = []
    item_sig: dict[str, bool] = {}
    quiet_mean = agg == "mean" and z_whole is not None and not sig_metric
    certain: set[str] = set()  # shown items of a certain change: changed code, a dimension row seen changed
    shown_as: dict[str, list[str]] = {}  # a reported node -> the mechanisms it stands for
    for node in tests:
        shown_as.setdefault(model.stand_ins.get(node, node), []).append(node)
    for shown, nodes in shown_as.items():
        val = sum(contrib.get(x, 0.0) for x in nodes)
        if len(nodes) > 1 and any(x in contrib for x in nodes):  # one bootstrap draw: their sum's interval
            boots[shown] = list(np.sum([boots[x] for x in nodes if x in contrib], axis=0))
            contrib[shown] = val
        ci = interval(shown, val) if shown in contrib else None
        t = {"changed": any(tests[x]["changed"] for x in nodes), "p_adj": min(tests[x]["p_adj"] for x in nodes),
             "certain": any(tests[x]["certain"] for x in nodes)}
        items.append(item(shown, report_kind(shown), val, t["changed"], t["p_adj"], ci))
        if t["certain"]:
            certain.add(shown)
        # a slice (``where``) of a mechanism that changed elsewhere (a drift in another country) gets
        # only resampling noise: there, only a contribution beyond its bootstrap error counts. Either
        # way a tested change's bootstrap interval must exclude 0 (unless it has no spread): a share of
        # +0.47 in [-0.33, 1.18] made a mean that moved +0.107 with an error of 0.244 read significant.
        # A certain one (changed code, a dimension row seen changed) needs no interval: one customer of
        # 1,000 is in 63% of resamples by customer, and its orders' move is no less real
        # When an average's exact figures say it did not move, a tested change must agree with them to
        # count: a mechanism switched between the runs carries the two samples' own difference (an
        # average whose amounts turned NULL at random: +0.60 of a mean that moved +0.04 in the job's
        # figures, against their spread of 0.17), while a drift of one region's amounts the figures put
        # at z 2.1 (their spread counts fixed accounts' rows from the overall mean) is +11.2 in both.
        # Not so for sums and counts (a drift of one channel's amounts, an offsetting volume)
        item_sig[shown] = bool(t["changed"] and ci is not None and val != 0 and (
            abs(val) > z * ci[2] or (where is None and abs(val) >= cfg.min_effect * abs(vb)))
            and (t["certain"] or ((ci[2] == 0 or ci[0] > 0 or ci[1] < 0) and not (
                quiet_mean and abs(val - (exact.current - exact.baseline)) > z * se_whole))))
    vol_changed = agg != "mean" and vol_p < cfg.alpha
    if agg != "mean":
        ci = interval("__volume__", volume)
        items.append(item(f"{driving}.__rows__", "volume", volume, vol_changed, vol_p, ci))
        # (a slice's volume is the driving table's row change shared out by the slice's units, no count
        # of its own rows: when the slice's exact figures did not move, it is no move of them. 1.8% more
        # readings made a region's revenue "significant" at z_whole -0.3. A whole metric's rows are
        # counted: a missing day's lost orders are a move however noisy their amounts)
        item_sig["__volume__"] = bool(vol_changed and volume != 0 and abs(volume) > z * ci[2]
                                      and (z_whole is None or sig_metric or where is None))
    across = _moved_across(slice_rows, z)
    # (the rows that moved are a test of that root's change themselves, when the slice moved beyond its
    # noise: 20% of a day's sessions stamped on the day before, p 0.11; so with other mechanisms changed
    # that leave most of the move, a time tested given a promo code that moved by chance, p_adj 0.19: 99%
    # unexplained; not when they explain it, a campaign's channel remapped moving sessions across)
    left = abs(change - sum(a.contribution for a in items)) > 0.5 * abs(change)  # (what the others leave)
    root = next((r for r in spec.slice_roots if r in players or tests.get(r, {}).get("changed")
                 or (sig_metric and r in tests and (not players or left))), None)
    if across is not None and root is not None:
        # units that left the slice for the rest of the run (or came from it) by the root its key is
        # computed from: the slice's rows at its mean row (the model holds each unit's membership)
        shown = model.stand_ins.get(root, root)
        at = next(i for i, a in enumerate(items) if a.node == shown)
        a = items[at]
        items[at] = dataclasses.replace(a, contribution=a.contribution + across[0], mechanism_changed=True,
                                        ci_low=a.ci_low + across[0] - z * across[1],
                                        ci_high=a.ci_high + across[0] + z * across[1])
        item_sig[shown] = True
    if fan is not None:
        extra = fan.extra_c - fan.extra_b
        items.append(item(fan.node, "volume", extra, True, fan.p, (extra - z * fan.se, extra + z * fan.se, fan.se)))
        item_sig[fan.node] = bool(extra != 0 and abs(extra) > z * fan.se)
    items.sort(key=lambda a: (-abs(a.contribution), a.p_value if a.p_value is not None else 1.0, a.node))
    total = sum(a.contribution for a in items)
    unexplained = float(change - total)
    # changed mechanisms whose contributions cancel (sessions without a purchase dropped by a filter: fewer
    # sessions, a higher share with one, the same revenue) explain no movement: the metric did not move
    # (one changed mechanism, a code change of certain effect, stays significant however small). So does
    # a volume cancelled by what no mechanism explains, when the metric itself did not move: duplicated
    # rows a keep-the-latest window drops are more rows each worth less, through no changed mechanism
    sig_items = [a for a in items if item_sig.get("__volume__" if a.node == f"{driving}.__rows__" else a.node)]
    sig_parts = [a.contribution for a in sig_items]
    # (the rows of a slice of days one missing day left whole: the volume the whole table lost, offset by
    # the larger share of units in the slice, a change of the dates' mix that no cell of them tests)
    offset = not sig_metric and all(a.kind == "volume" for a in sig_items)
    # (a certain change among them happened whatever it nets with: a product's cost x6 next to a price
    # rise of the same size is two faults, not one cause's parts, and its row is no chance)
    cancel = _offsetting(sig_parts + ([unexplained] if offset else []), z * se_change) and \
        not any(a.node in certain for a in sig_items)
    if cancel and offset and sig_parts:
        warnings.append(f"a change of {sum(sig_parts):+,.6g} in rows is offset by {unexplained:+,.6g} that no "
                        "changed mechanism explains (rows a dedup or window drops, say): the metric did not move")
    # (an average whose exact figures are short even of the weak line, ``_WEAK`` x alpha, moved only by
    # a certain change: NULL durations a filter drops at random, tested changed and put at +6.09 by the
    # samples, moved the exact average +2.96 at z 1.69; German amounts x1.3 at z 2.46 still count)
    weak_line = stats.norm.ppf(1 - _WEAK * cfg.alpha / 2)
    significant = bool(sig_metric or (any(item_sig.values()) and not cancel and not (
        quiet_mean and abs(z_whole) <= weak_line and not any(a.node in certain for a in sig_items))))
    # (of the change reported: the exact one where known, which the samples' estimate may fall short of)
    shown_change = exact.current - exact.baseline if z_whole is not None else change
    shown_rest = shown_change - total
    if shown_change and abs(shown_rest) > 0.2 * abs(shown_change) and sig_metric:
        warnings.append(f"{abs(shown_rest) / abs(shown_change):.0%} of the change ({shown_rest:+,.6g}) is not "
                        "explained by the significantly changed mechanisms")
    if min(b.n, c.n) < _FEW_UNITS and any(r.N > r.n + 0.5 for r in (b, c)):  # a few of many units
        warnings.append(f"only {min(b.n, c.n)} units were sampled in a run: too few to tell a change from "
                        "sampling noise; capture with a larger --sample-size (the default is 20,000)")
    if sig_model and not players and not vol_changed:
        warnings.append("the metric moved beyond its sampling error but no mechanism changed significantly")
    details = {
        "segment": model.segment_id, "driving": driving, "units": {"baseline": b.n, "current": c.n},
        "rows": {"baseline": b.N, "current": c.N}, "reach": spec.reach,
        "mechanisms": dict(model.mechanisms),
        "tests": {k: {kk: vv for kk, vv in t.items()} for k, t in tests.items()},
        "players": players, "rescued": rescued, "z_change": change / se_change if se_change else None, "z_whole": z_whole,
        "significance": {"metric": bool(sig_metric), "items": {k if k != "__volume__" else f"{driving}.__rows__": v
                                                               for k, v in item_sig.items()}},
        "se_change": se_change, "se_whole": se_whole, "v_empty": v0, "v_all": v1,
        "reference": "current" if split.reversed else "baseline",
        "seconds": {"fit": model.seconds["fit"], "tests": model.seconds["tests"],
                    "shapley": t_shap - t_test,
                    "bootstrap": t_boot - t_shap, "total": time.perf_counter() - t0},
        "n_bootstrap": n_boot,
    }
    if fan is not None:
        details["fanout"] = {"node": fan.node, "rows_per_unit": {"baseline": fan.rows_b, "current": fan.rows_c},
                             "extra": {"baseline": fan.extra_b, "current": fan.extra_c}, "p": fan.p}
    return Attribution(target=target, agg=agg, where=where, baseline_run=baseline.run,
                       current_run=current.run, baseline_value=float(vb), current_value=float(vc),
                       change=float(change), significant=significant, attributions=items,
                       code_changes=list(model.code_changes), warnings=warnings, seed=cfg.seed,
                       unexplained=unexplained, details=details)
