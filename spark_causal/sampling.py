"""Unit-level joint samples and per-node statistics of one captured output.

Why a rewritten plan: a GCM needs, for each unit (a driving row), the value of every node on its path
*including the units the job dropped*, or a filter that changed is invisible. So the segment's plan is
rebuilt (through ``plan``): the driving relation is sampled by a hash of its row (the same rule in
every run), every Filter on the driving path becomes a 0/1 selection column instead of dropping rows,
and every join on it becomes an outer join from the driving side plus a match column. One sampled
pass then yields all node values, selections and contributions; the driver holds only the sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from . import plan as P
from .lineage import LineageBuilder
from .stats import SampleHints

JObject = Any
UNIT = "__unit__"
WEIGHT = "__weight__"
HASH_BUCKETS = 1 << 20
# window partitions a sample must hold to be sampled by partition (``window_keys``): a few hundred clusters
# make cluster-robust errors; fewer (a window per country) are cells, and the sample is taken after the window
MIN_WINDOW_PARTITIONS = 200
# How a segment's units relate to the windows on its driving path (``provenance``): sampled by whole
# partitions below them (their values computed again from the units), sampled after them over every
# row (their values part of each unit), or their result rows the units (a store's older runs; an
# operator the rewrite cannot carry units through)
PARTITIONS, AFTER, ROWS = "partitions", "after", "rows"
# Operators the driving path may cross; anything else ends the path (its result is the driving relation).
_UNARY_THROUGH = {"Project", "Filter", "SubqueryAlias", "View", "Sort", "Repartition", "RepartitionByExpression",
                  "ResolvedHint", "Generate", "Expand"}


class _Package:
    """A JVM package whose classes resolve once (``plan.jclass``), not at every constructor call."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, cls: str) -> JObject:
        return P.jclass(f"{self.name}.{cls}")


class _Catalyst:
    """Constructors of the Catalyst classes the rewrite needs."""

    E = _Package("org.apache.spark.sql.catalyst.expressions")
    L = _Package("org.apache.spark.sql.catalyst.plans.logical")

    def seq(self, items: list) -> JObject:
        return P.scala_seq(items)

    def alias(self, expr: JObject, name: str) -> JObject:
        return self.E.Alias(expr, name, self.E.NamedExpression.newExprId(), self.seq([]),
                            P.jclass("scala.Option").empty(), self.seq([]))

    def lit(self, value: Any) -> JObject:
        return getattr(self.E, "Literal$").__getattr__("MODULE$").apply(value)

    def project(self, exprs: list, child: JObject) -> JObject:
        return self.L.Project(self.seq(exprs), child)


@dataclass
class Segment:
    """One segment's sample: its description (docs/internals.md) and its unit table."""

    description: dict
    table: pd.DataFrame
    stats: list[dict] = field(default_factory=list)


class _Rewriter:
    def __init__(self, cat: _Catalyst, selections: dict[int, str], env: dict[int, str], driving: JObject,
                 sample_pred) -> None:
        self.c = cat
        self.selections = selections
        self.env = env
        self.driving_hash = int(driving.hashCode())
        self.sample_pred = sample_pred
        self.extra: dict[int, str] = {}  # exprId of an added column -> its name in the sample table
        self.drops: dict[str, bool] = {}  # selection column -> whether a 0 drops the unit in the job
        self.joins: list[dict] = []
        self.windows: dict[str, dict] = {}  # window node -> how to compute it again (``_describe_window``)
        self.guarded: dict[str, list[str]] = {}  # a UDF's node -> the gates its rows passed (``_guarded``)

    def on_path(self, p: JObject) -> bool:
        return _reaches(p, self.driving_hash)

    def add(self, expr: JObject, name: str) -> JObject:
        a = self.c.alias(expr, name)
        self.extra[P.expr_id(a)] = name
        return a

    def rewrite(self, p: JObject) -> JObject:
        c = P.cls(p)
        if int(p.hashCode()) == self.driving_hash:
            return self.sample_pred(p, self)
        kids = P.children(p)
        if c == "Join":
            return self._join(p)
        if c == "Window":
            return self._window(p)
        if c == "Expand":
            return self._expand(p)
        if c not in _UNARY_THROUGH or len(kids) != 1:
            raise _Unsupported(c)
        child = self.rewrite(kids[0])
        if c == "Filter":
            sel = self.selections.get(int(p.hashCode())) or f"__filter{len(self.extra)}"
            cond = self.c.E.Coalesce(self.c.seq([p.condition(), self.c.lit(False)]))
            out = self._guarded(P.output(child) + [self.add(cond, sel)], child,
                                lambda e: self.c.alias(self.c.lit(False), e.name()))
            self.drops[sel] = True
            return out
        if c == "Project":
            # carry what the projection drops but the graph names: added columns, and node columns used only
            # inside this derived table's expressions (``l_extendedprice`` of ``volume``) stay in the sample
            have = {P.expr_id(a) for a in P.output(child)}  # the driving relation's used columns
            kept = [e for e in P.seq(p.projectList())
                    if {P.expr_id(a) for a in P.inspect_expr(e).attrs} <= have]
            ids = {P.expr_id(e) for e in kept if P.cls(e) in ("Alias", "AttributeReference")}
            carried = [a for a in P.output(child) if P.expr_id(a) not in ids and
                       (P.expr_id(a) in self.extra or P.expr_id(a) in self.env)]
            return self._guarded(kept + carried, child,
                                 lambda e: self.c.alias(self.c.E.Literal(None, e.dataType()), e.name()))
        return p.withNewChildren(self.c.seq([child]))

    def _guarded(self, exprs: list, child: JObject, when_dropped: Callable[[JObject], JObject]) -> JObject:
        """``exprs`` over ``child``, with a user function among them called only on the rows that every
        gate below (a filter, an inner join) passes; the rest get ``when_dropped(expr)`` instead.

        Why: the job calls its UDFs only on the rows it keeps, and a UDF may rely on it (a Python
        function of ``temp`` under ``temp IS NOT NULL`` raises on None). The sampled pass keeps every
        unit, so it would call the UDF on rows the job never gave it, and one exception loses the run's
        samples. A CASE WHEN would not protect it: Spark evaluates Python UDFs on all the rows of their
        operator's input. So the rows are split by the gates and the two halves put back together."""
        gates = [a for a in P.output(child) if self.drops.get(self.extra.get(P.expr_id(a)))]
        udf = [bool(P.inspect_expr(e).classes & P.UDF_CLASSES) for e in exprs]
        if not gates or not any(udf):
            return self.c.project(exprs, child)
        E, L = self.c.E, self.c.L
        passes = gates[0]
        for g in gates[1:]:
            passes = E.And(passes, g)
        dropped = [when_dropped(e) if u else e for e, u in zip(exprs, udf)]
        # the child analysed on its own first: analysing the union of two copies of an unanalysed
        # subtree renews one copy's attributes (a scan's position id is not deterministic) and leaves
        # its projections pointing at the old ones (MISSING_ATTRIBUTES over a sampled dropDuplicates)
        child = P.analyzed_plan(child)
        names = [self.extra[P.expr_id(g)] for g in gates]
        for e in (e for e, u in zip(exprs, udf) if u):
            node = self.env.get(P.expr_id(e)) or self.extra.get(P.expr_id(e))
            if node is not None:
                self.guarded[node] = names
        return L.Union(self.c.seq([self.c.project(exprs, L.Filter(passes, child)),
                                   self.c.project(dropped, L.Filter(E.Not(passes), child))]), False, False)

    def _join(self, p: JObject) -> JObject:
        left, right = p.left(), p.right()
        jtype = str(p.joinType().toString()).lower().replace(" ", "")
        drive_left = self.on_path(left)
        sel = self.selections.get(int(p.hashCode()), f"__join{len(self.joins)}")
        semi = jtype in ("leftsemi", "leftanti")
        if semi or "existence" in jtype:
            if not drive_left or not semi:
                raise _Unsupported(f"{jtype} join driven from the right" if semi else jtype)
        driving, other = (left, right) if drive_left else (right, left)
        new_driving = self.rewrite(driving)
        if semi:  # a unit matches at most once: the other side reduced to its distinct join keys
            other = self._distinct_keys(p)
        marker = self.c.alias(self.c.lit(True), "__match")
        new_other = self.c.project(P.output(other) + [marker], other)
        L = self.c.L
        jt = P.jclass("org.apache.spark.sql.catalyst.plans.JoinType").apply("leftouter" if drive_left else "rightouter")
        pair = (new_driving, new_other) if drive_left else (new_other, new_driving)
        joined = L.Join(pair[0], pair[1], jt, p.condition(), L.JoinHint.NONE())
        match_attr = [a for a in P.output(new_other) if P.expr_id(a) == P.expr_id(marker)][0]
        if semi:  # the job keeps only the driving side's columns
            kept = P.output(new_driving)
        else:
            kept = [a for a in P.output(joined) if P.expr_id(a) != P.expr_id(marker)]
        match = self.c.E.IsNotNull(match_attr)
        if jtype == "leftanti":
            match = self.c.E.Not(match)
        # an unmatched unit leaves the job only if the join keeps unmatched rows of no side it is on
        keeps_driving = jtype in ("fullouter", "full") or jtype == ("leftouter" if drive_left else "rightouter")
        self.drops[sel] = not keeps_driving
        self.joins.append({"selection": sel, "type": jtype, "plan": p, "drive_left": drive_left,
                           "drops": not keeps_driving})
        return self.c.project(kept + [self.add(match, sel)], joined)

    def _window(self, p: JObject) -> JObject:
        """A window over units, partitioned also by the gates below it (a filter, an inner join), so that a
        unit the job kept sees exactly the rows of its partition the job's window saw; whole partitions
        are sampled (``window_keys``)."""
        before = set(self.drops)
        child = self.rewrite(p.child())
        gates = [a for a in P.output(child) if (n := self.extra.get(P.expr_id(a))) is not None
                 and n not in before and self.drops.get(n)]
        for ne in P.seq(p.windowExpressions()):
            described = _describe_window(ne, self.env, [self.extra[P.expr_id(g)] for g in gates])
            if described is not None:
                self.windows[described[0]] = described[1]
        if not gates:
            return p.withNewChildren(self.c.seq([child]))
        E = self.c.E
        spec_keys = P.seq(p.partitionSpec()) + gates
        exprs = []
        for ne in P.seq(p.windowExpressions()):
            we = ne.child() if P.cls(ne) == "Alias" else None
            if we is None or P.cls(we) != "WindowExpression":
                raise _Unsupported(f"window expression {P.sql(ne)}")
            spec = we.windowSpec()
            new_we = E.WindowExpression(we.windowFunction(), E.WindowSpecDefinition(
                self.c.seq(spec_keys), spec.orderSpec(), spec.frameSpecification()))
            exprs.append(E.Alias(new_we, ne.name(), ne.exprId(), ne.qualifier(), ne.explicitMetadata(),
                                 ne.nonInheritableMetadataKeys()))
        rest = [p.productElement(i) for i in range(4, p.productArity())]  # fields newer Sparks add (a hint)
        return self.c.L.Window(self.c.seq(exprs), self.c.seq(spec_keys), p.orderSpec(), child, *rest)

    def _expand(self, p: JObject) -> JObject:
        """ROLLUP/CUBE/GROUPING SETS copy each row once per grouping set: the copies carry the unit, its
        selections and carried columns, so that they are one unit's rows (a cluster, as an explode's)
        and not independent units. Sampled as copies, a ROLLUP's units outnumbered its rows and two runs
        of one distribution looked different."""
        child = self.rewrite(p.child())
        before = {P.expr_id(a) for a in P.output(p.child())}
        added = [a for a in P.output(child) if P.expr_id(a) not in before]
        if not added:
            return p.withNewChildren(self.c.seq([child]))
        rows = [self.c.seq(P.seq(row) + added) for row in P.seq(p.projections())]
        return self.c.L.Expand(self.c.seq(rows), self.c.seq(P.output(p) + added), child)

    def _distinct_keys(self, p: JObject) -> JObject:
        """The right side of a semi/anti equi-join as its distinct key columns (one match per unit at most)."""
        cond = P.option(p.condition())
        right_ids = {P.expr_id(a) for a in P.output(p.right())}
        keys: list = []
        for e in P.conjuncts(cond) if cond is not None else []:
            if P.cls(e) not in ("EqualTo", "EqualNullSafe"):
                raise _Unsupported(f"semi join on {P.sql(e)}")
            for side in P.children(e):
                refs = {P.expr_id(a) for a in P.inspect_expr(side).attrs}
                if refs and refs <= right_ids:
                    if P.cls(side) != "AttributeReference":
                        raise _Unsupported(f"semi join on {P.sql(e)}")
                    keys.append(side)
        if not keys:
            raise _Unsupported("semi join without equality keys")
        unique = list({P.expr_id(k): k for k in keys}.values())
        return self.c.L.Distinct(self.c.project(unique, p.right()))


_WINDOW_FUNCTIONS = {"RowNumber": "row_number", "Rank": "rank", "DenseRank": "dense_rank", "Lag": "shift",
                     "Lead": "shift", "Sum": "sum", "Count": "count", "Min": "min", "Max": "max", "Average": "avg"}


def _describe_window(ne: JObject, env: dict[int, str], gates: list[str]) -> tuple[str, dict] | None:
    """(node, description) of a window column attribution can compute again from the units of whole
    partitions: the function, its argument, the partition and order columns as node ids, and the gates
    below that also partition it. None for anything else (a frame of n rows, an expression argument)."""
    we = ne.child() if P.cls(ne) == "Alias" else None
    node = env.get(P.expr_id(ne))
    if we is None or P.cls(we) != "WindowExpression" or node is None:
        return None
    fn, spec = we.windowFunction(), we.windowSpec()
    agg = P.cls(fn) == "AggregateExpression"
    kind = _WINDOW_FUNCTIONS.get(P.cls(fn.aggregateFunction() if agg else fn))
    frame = spec.frameSpecification()
    if kind is None or (agg and bool(fn.isDistinct())) or P.cls(frame) != "SpecifiedWindowFrame":
        return None
    lower, upper = P.cls(frame.lower()).rstrip("$"), P.cls(frame.upper()).rstrip("$")
    entry: dict[str, Any] = {"fn": kind, "arg": None, "frame": None, "offset": 0}
    if kind == "shift":
        if P.cls(frame.lower()) != "Literal" or P.cls(fn.default()) != "Literal" or fn.default().value() is not None:
            return None
        entry["offset"] = int(str(frame.lower().value()))
        arg = fn.input()
    elif agg:
        frames = {("UnboundedPreceding", "UnboundedFollowing"): "partition",
                  ("UnboundedPreceding", "CurrentRow"): P.cls(frame.frameType()).rstrip("$")}
        entry["frame"] = frames.get((lower, upper))
        kids = P.children(fn.aggregateFunction())
        arg = kids[0] if kids and P.cls(kids[0]) != "Literal" else None
        if entry["frame"] is None or len(kids) != 1:
            return None
    else:
        arg = None
    if arg is not None:
        if P.cls(arg) != "AttributeReference" or P.expr_id(arg) not in env:
            return None
        entry["arg"] = env[P.expr_id(arg)]
    order = []
    for so in P.seq(spec.orderSpec()):
        if P.cls(so.child()) != "AttributeReference" or P.expr_id(so.child()) not in env:
            return None
        order.append([env[P.expr_id(so.child())], str(so.direction().sql()) == "ASC",
                      str(so.nullOrdering().sql()) == "NULLS FIRST"])
    part = [env.get(P.expr_id(e)) for e in P.seq(spec.partitionSpec())]
    if None in part:
        return None
    entry.update(partition=part, order=order, gates=gates)
    return node, entry


class _Unsupported(Exception):
    """An operator the provenance rewrite cannot carry units through (yet)."""


def _segment_root(plan: JObject) -> tuple[JObject | None, JObject]:
    """(top Aggregate or None, the row-level body below it)."""
    p = plan
    while True:
        c = P.cls(p)
        if c == "Aggregate":
            return p, p.child()
        if c in ("Project", "Filter", "Sort", "SubqueryAlias", "View", "GlobalLimit", "LocalLimit",
                 "Repartition", "RepartitionByExpression") and len(P.children(p)) == 1:
            p = P.children(p)[0]
            continue
        return None, plan


def _driving_candidates(p: JObject, windows: str = PARTITIONS) -> list[JObject]:
    """Relations the units of a segment may come from: leaves and sub-aggregates reachable by the rewrite
    (through windows partitioned by columns under ``PARTITIONS``, through any window under ``AFTER``)."""
    c = P.cls(p)
    if c == "Join":  # the rows of a semi/anti join are its left side's
        semi = str(p.joinType().toString()).lower().replace(" ", "") in ("leftsemi", "leftanti")
        return _driving_candidates(p.left(), windows) + ([] if semi else _driving_candidates(p.right(), windows))
    kids = P.children(p)
    through = c == "Window" and (windows == AFTER or windows == PARTITIONS and _window_keys(p) is not None)
    if (c in _UNARY_THROUGH or through) and len(kids) == 1:
        return _driving_candidates(kids[0], windows)
    return [p]


def _window_keys(p: JObject) -> set[int] | None:
    """ExprIds of a Window's partition columns; None when it has none, or partitions by an expression."""
    spec = P.seq(p.partitionSpec())
    if not spec or any(P.cls(e) != "AttributeReference" for e in spec):
        return None
    return {P.expr_id(e) for e in spec}


def _rows(spark: Any, p: JObject) -> int:
    """Rows of a candidate driving relation: the one with the most rows gives the units. Catalyst's row
    count when it knows it, else counted: file sizes are no guide (a compressed fact table can be smaller
    than a dimension of long strings), and a count of a file source reads only its footers."""
    try:
        rows = P.option(p.stats().rowCount())
        if rows is not None:
            return int(str(rows))
    except Exception:  # noqa: BLE001 - fall back to counting
        pass
    return int(P.to_dataframe(spark, p).count())


def driving_relation(spark: Any, plan: JObject, known: dict[int, int] | None = None,
                     partitions: dict[int, JObject] | None = None, windows: str = PARTITIONS,
                     prefer: Callable[[JObject], bool] | None = None) -> tuple[JObject, int | None]:
    """The relation whose rows are the units of the segment that ``plan`` ends, and its row count when
    known or counted (``known``: row counts by relation hashCode, from the job's own probes; a relation
    counts only its partitions the job reads, ``plan.partition_filters``).

    The relation over the largest source gives the units: a sub-aggregate counts the rows it was
    aggregated from, so per-customer totals of 40,000 orders drive a segment that joins them to 2,000
    customers, whichever way the join goes (a LEFT join changed to INNER keeps the same units), and
    an aggregate joined back to its own input ties with it and gives way: the input's rows are the units.
    A candidate ``prefer`` picks (the previous run's units) stays the driving relation while it has at
    least half the rows of the largest: units must mean the same in the runs compared, and 15%
    duplicated payments must not turn orders LEFT JOIN payments into a sample of payments.
    """
    _, body = _segment_root(plan)
    candidates = _driving_candidates(body, windows)
    known = known or {}
    if len(candidates) == 1:
        return candidates[0], known.get(int(candidates[0].hashCode()))

    def rows(c: JObject) -> int:
        h = int(c.hashCode())
        return known[h] if h in known else _rows(spark, P.restrict(c, partitions or {}))

    def source_rows(c: JObject) -> int:
        if P.cls(c) != "Aggregate":
            return rows(c)
        return max((source_rows(x) for x in _driving_candidates(c.child(), windows)), default=0)

    counts = [rows(c) for c in candidates]
    sources = [source_rows(c) for c in candidates]
    def size(i: int) -> tuple:
        return sources[i], P.cls(candidates[i]) != "Aggregate", counts[i]

    best = max(range(len(candidates)), key=size)
    kept = [i for i in range(len(candidates)) if prefer is not None and prefer(candidates[i])
            and 2 * sources[i] >= sources[best]]
    if kept:
        best = max(kept, key=size)
    return candidates[best], counts[best]


@dataclass
class Provenance:
    """The rewritten segment plan as a DataFrame with node-id columns, before any collect."""

    df: Any
    names: list[str]
    aggregates: dict[str, dict]
    group_keys: list[str]
    joins: list[dict]
    driving: str
    rows: int  # -1 when not counted
    rate: float
    driving_hash: int
    drops: dict[str, bool]  # selection column -> whether a 0 means the job dropped the unit
    clusters: list[str]  # the driving columns windows partition by: units are sampled by them, whole
    windows: dict[str, dict]  # window nodes over units, described to be computed again (``_describe_window``)
    guarded: dict[str, list[str]]  # UDF nodes computed only where these selections pass (``_Rewriter._guarded``)
    inside: list[str] = field(default_factory=list)  # selections inside a driving relation not a source
    mode: str = PARTITIONS  # how the units relate to the windows on the driving path (``provenance``)


def provenance(spark: Any, builder: LineageBuilder, output: str, plan: JObject, *, sample_size: int | None,
               seed: int, known: dict[int, int] | None = None, windows: str = PARTITIONS,
               prefer: str | None = None) -> Provenance:
    """The provenance query of the segment that ``plan`` ends, sampled to about ``sample_size`` driving
    rows (all rows when None). ``known``, row counts by relation hashCode, saves counting them.

    ``windows`` is how units relate to the windows on the driving path (``PARTITIONS``, ``AFTER``,
    ``ROWS``); a window the first cannot carry units through is tried with the next."""
    modes = (PARTITIONS, AFTER, ROWS)
    for mode in modes[modes.index(windows):-1]:
        try:
            return _provenance(spark, builder, output, plan, sample_size=sample_size, seed=seed, known=known,
                               windows=mode, prefer=prefer)
        except _Unsupported:
            continue
    return _provenance(spark, builder, output, plan, sample_size=sample_size, seed=seed, known=known,
                       windows=ROWS, prefer=prefer)


def _provenance(spark: Any, builder: LineageBuilder, output: str, plan: JObject, *, sample_size: int | None,
                seed: int, known: dict[int, int] | None, windows: str, prefer: str | None) -> Provenance:
    cat = _Catalyst()
    walk = builder.walks[output]
    G = builder.graph
    agg, body = _segment_root(plan)
    partitions = P.partition_filters(plan)  # the partitions the job reads are the source: kept as filters
    driving, counted = driving_relation(spark, plan, known, partitions, windows,
                                        prefer=(lambda r: _relation_table(r, walk.env, G) == prefer) if prefer else None)
    if windows == PARTITIONS and P.cls(driving) == "Window":  # by an expression, or by nothing: no partitions
        raise _Unsupported("a window partitioned by no column")  # to sample whole
    driving_name = _relation_table(driving, walk.env, G)
    n_rows = counted
    if n_rows is None and sample_size is not None:
        n_rows = P.to_dataframe(spark, P.restrict(driving, partitions)).count()
    rate = 1.0 if sample_size is None or not n_rows or sample_size >= n_rows else sample_size / n_rows
    threshold = int(math.ceil(rate * HASH_BUCKETS))
    needed = P.needed_ids(plan)
    keys = window_keys(body, driving) if windows == PARTITIONS else set()
    after = windows == AFTER and rate < 1.0  # the units are sampled above the windows, over every row

    def sample_pred(leaf: JObject, rw: _Rewriter) -> JObject:
        E = cat.E
        scan = P.cls(leaf) in P.LEAF_CLASSES
        leaf = P.restrict(leaf, partitions)
        # only the columns the job reads: a wide fact table is scanned for its few used columns, as the
        # job scans it, not whole. A unit of a scan is hashed by its position in the scan alone, which is
        # the same rule for every row, repeated or not: hashing the columns read too cost 0.45 s more
        # at 10M rows (1.06 s against 0.60 s for the pass, 2 cores). Other relations (a sub-aggregate's
        # groups) are small; their units are hashed by their values as well.
        cols = [a for a in P.output(leaf) if P.expr_id(a) in needed] or P.output(leaf)
        hashable = [] if scan else [a for a in cols if "map<" not in P.dtype(a)]  # Spark hashes no map
        h = E.XxHash64(cat.seq(hashable + [E.MonotonicallyIncreasingID()]), seed)
        unit = rw.add(h, UNIT)
        with_unit = cat.project(cols + [unit], leaf)
        if rate >= 1.0 or after:
            return with_unit
        unit_attr = [a for a in P.output(with_unit) if P.expr_id(a) == P.expr_id(unit)][0]
        by = E.XxHash64(cat.seq([a for a in cols if P.expr_id(a) in keys]), seed) if keys else unit_attr
        return cat.L.Filter(kept(by), with_unit)

    def kept(by: JObject) -> JObject:
        return cat.E.LessThan(cat.E.Pmod(by, cat.lit(HASH_BUCKETS)), cat.lit(threshold))

    rw = _Rewriter(cat, walk.selections, walk.env, driving, sample_pred)
    new_body = rw.rewrite(body)
    top: list = []
    aggregates: dict[str, dict] = {}
    group_keys: list[str] = []
    def entry_of(nid: str, expr: JObject, fn: str) -> dict:
        """How the segment computes aggregate ``nid`` (``expr``), its argument added to ``top``."""
        terms = P.linear_sums(expr) if fn == "sum" else None
        if terms and len(terms) > 1:  # SUM(revenue) - SUM(cost): the sum of each row's revenue - cost
            for i, (_, a) in enumerate(terms):
                top.append(rw.add(a, f"__arg__:{nid}#{i}"))
            return {"fn": "sum", "input": None, "terms": [k for k, _ in terms],
                    "arg": " ".join(f"{'-' if k < 0 else '+'} coalesce({P.sql(a)}, 0) * {abs(k)!r}"
                                    for k, a in terms).lstrip("+ ")}
        arg = P.aggregate_argument(expr) if fn != "other" else None  # only sum-like aggregates get contributions
        a, b = P.outer_affine(expr) if arg is not None and fn in ("sum", "avg") else (1.0, 0.0)
        b = b if fn == "avg" else 0.0  # a sum's constant is added per group, not per row
        entry = {"fn": fn, "input": walk.env.get(P.expr_id(arg)) if arg is not None and
                 P.cls(arg) == "AttributeReference" and (a, b) == (1.0, 0.0) else None}
        if arg is not None:
            top.append(rw.add(arg, f"__arg__:{nid}"))
            if (a, b) != (1.0, 0.0):  # 100 * AVG(x): each unit's x * 100, the values the output's are
                entry["affine"] = [a, b]
            if entry["input"] is None:  # SUM(price * qty): the argument's own definition, and values
                entry["arg"] = P.sql(arg) if "affine" not in entry else f"({P.sql(arg)}) * {a!r} + {b!r}"
        return entry

    if agg is not None:
        for e in P.seq(agg.aggregateExpressions()):
            nid = walk.env.get(P.expr_id(e))
            expr = e.child() if P.cls(e) == "Alias" else e
            fn = P.aggregate_function(expr)
            if fn is None or nid is None:
                continue
            aggregates[nid] = entry_of(nid, expr, fn)
            parts = G.nodes[nid].get("ratio") if nid in G else None
            found = P.ratio_of_sums(expr) if parts else None
            if found is not None:  # SUM(a) / COUNT(*): each part a sum over the units (``lineage``)
                aggregates[nid]["ratio"] = list(parts)
                for part_id, part in zip(parts[:2], found[1:]):
                    aggregates[part_id] = entry_of(part_id, part, P.aggregate_function(part) or "sum")
        for g in P.seq(agg.groupingExpressions()):
            info = P.inspect_expr(g)
            group_keys.extend(walk.env[P.expr_id(a)] for a in info.attrs if P.expr_id(a) in walk.env)
    mid = cat.project(P.output(new_body) + top, new_body)
    if after:  # every row went through the windows as in the job; the units are sampled by the same rule
        mid = cat.L.Filter(kept(next(a for a in P.output(mid) if rw.extra.get(P.expr_id(a)) == UNIT)), mid)
    names: list[str] = []
    named: list = []
    for a in P.output(mid):
        nm = rw.extra.get(P.expr_id(a)) or walk.env.get(P.expr_id(a))
        if nm is None or nm in names:
            continue
        names.append(nm)
        named.append(cat.alias(a, nm))
    return Provenance(df=P.to_dataframe(spark, cat.project(named, mid)), names=names, aggregates=aggregates,
                      group_keys=list(dict.fromkeys(group_keys)),
                      joins=[_join_description(j, walk.env, rw) for j in rw.joins], driving=driving_name,
                      rows=-1 if n_rows is None else int(n_rows), rate=rate, driving_hash=int(driving.hashCode()),
                      drops=dict(rw.drops), clusters=[walk.env[k] for k in sorted(keys) if k in walk.env],
                      windows={} if after else rw.windows, guarded=rw.guarded,
                      inside=_inside(driving, walk.selections), mode=windows)


def window_keys(body: JObject, driving: JObject) -> set[int]:
    """The driving relation's columns that every window between it and ``body`` partitions by: units are
    sampled by their hash, so each sampled unit's partition is sampled whole and its window values are
    the job's. Empty when no window is on the way."""
    path: list[JObject] = []
    p, target = body, int(driving.hashCode())
    while int(p.hashCode()) != target:
        kids = [ch for ch in P.children(p) if _reaches(ch, target)]
        if not kids:
            return set()
        path.append(p)
        p = kids[0]
    keys = []
    for i, w in enumerate(path):
        if P.cls(w) == "Window":
            ks = _window_keys(w) or set()
            for below in path[i + 1:]:  # a key renamed on the way (withColumnRenamed) is the column it names
                renamed = _renames(below)
                ks = {renamed.get(k, k) for k in ks}
            keys.append(ks)
    common = set.intersection(*keys) & {P.expr_id(a) for a in P.output(driving)} if keys else set()
    if keys and not common:
        raise _Unsupported("windows partitioned by no common column of the driving relation")
    return common


def _renames(p: JObject) -> dict[int, int]:
    """A Project's plain renames: the new column's exprId -> the exprId of the column it names."""
    if P.cls(p) != "Project":
        return {}
    return {P.expr_id(e): P.expr_id(e.child()) for e in P.seq(p.projectList())
            if P.cls(e) == "Alias" and P.cls(e.child()) == "AttributeReference"}


def _reaches(p: JObject, target: int) -> bool:
    """Is the relation of hashCode ``target`` ``p`` or below it?"""
    return int(p.hashCode()) == target or any(_reaches(ch, target) for ch in P.children(p))


def segment_plans(plan: JObject) -> list[JObject]:
    """The sub-plans that end a segment, innermost first: every Aggregate, and the output itself when
    its top is row-level. Each becomes one sample table; across an Aggregate the unit changes."""
    found: list[JObject] = []

    def walk(p: JObject) -> None:
        for ch in P.children(p):
            walk(ch)
        if P.cls(p) == "Aggregate":
            found.append(p)

    walk(plan)
    top, _ = _segment_root(plan)
    if top is None:
        found.append(plan)
    return found


def sample_output(spark: Any, builder: LineageBuilder, output: str, plan: JObject, *, segment: str,
                  sample_size: int, seed: int, known: dict[int, int] | None = None,
                  prefer: str | None = None, windowed: str | None = None) -> Segment:
    """The unit sample of one segment: one sampled provenance query, collected to the driver.
    ``prefer``: the driving table of the segment's previous run (see ``driving_relation``);
    ``windowed``: how that run's units related to the windows on its driving path (``provenance``).
    A run whose previous run's units were a window's result rows (``ROWS``) follows it, so that two
    runs are units of the same kind: otherwise the filters below the window are selections in one run
    and part of the driving relation in the other, which reads as code added or removed. Units sampled
    below the windows or above them are the same rows of the driving relation either way."""
    G = builder.graph
    mode = ROWS if windowed == ROWS else PARTITIONS
    prov = provenance(spark, builder, output, plan, sample_size=sample_size, seed=seed, known=known, prefer=prefer,
                      windows=mode)
    table = _to_pandas(prov.df)
    few = prov.clusters and prov.rate < 1 and len(table[prov.clusters].drop_duplicates()) < MIN_WINDOW_PARTITIONS
    if few:
        # a window over few partitions (a LAG per campaign): too few to sample whole, so every row goes
        # through the window as in the job, and the units are sampled after it: the filters and joins
        # below stay selections, and the window's values are part of each unit
        prov = provenance(spark, builder, output, plan, sample_size=sample_size, seed=seed, known=known,
                          windows=AFTER, prefer=prefer)
        table = _to_pandas(prov.df)
    names, aggregates, rate = prov.names, prov.aggregates, prov.rate
    selections = [n for n in names if n in G and G.nodes[n]["kind"] == "selection"]
    for s in selections + [n for n in names if n.startswith("__filter") or n.startswith("__join")]:
        table[s] = table[s].fillna(False).astype("int8")
    table[WEIGHT] = 1.0 / rate if rate > 0 else 0.0
    passed = np.ones(len(table), dtype=bool)  # the units that reach the aggregate or the output
    for s, drops in prov.drops.items():
        if drops and s in table:
            passed &= table[s].to_numpy() == 1
    for nid, entry in aggregates.items():
        col = f"__arg__:{nid}"
        if "terms" in entry:  # each row's part of a sum of SUMs (a NULL term adds nothing, as in its SUM)
            table[col] = sum(k * pd.to_numeric(table.pop(f"{col}#{i}"), errors="coerce").astype("float64").fillna(0.0)
                             for i, k in enumerate(entry["terms"]))
        if "affine" in entry and col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").astype("float64") * entry["affine"][0] + entry["affine"][1]
        arg = None if col not in table else table[col] if "arg" in entry else table.pop(col)
        if entry["fn"] == "other":  # DISTINCT, percentiles, collect_list ...: no per-unit contribution
            continue
        table[f"__contrib__:{nid}"] = _contribution(entry["fn"], arg, passed)
        if entry["fn"] == "avg" and arg is not None:
            table[f"__count__:{nid}"] = (passed & arg.notna().to_numpy()).astype("float64")
    if not aggregates:
        for oid in builder.graph.graph["outputs"][output]["columns"]:
            if oid in table and pd.api.types.is_numeric_dtype(table[oid]):
                table[f"__contrib__:{oid}"] = np.where(passed, pd.to_numeric(table[oid]).fillna(0).to_numpy(), 0.0)
    desc = {
        "id": segment, "output": output, "driving": prov.driving, "rows": prov.rows,
        "sampled": int(len(table)), "rate": rate, "seed": seed,
        "nodes": [n for n in names if n in G and G.nodes[n]["kind"] != "selection"],
        "selections": selections, "aggregates": aggregates, "group_keys": prov.group_keys,
        "joins": prov.joins, "clusters": prov.clusters, "windows": prov.windows, "guarded": prov.guarded,
        "inside": prov.inside, "window_mode": prov.mode,
        "identifiers": _identifiers(table, [n for n in names if n in G]),
    }
    return Segment(description=desc, table=table)


def reread_hints(segment: Segment, G: Any, *, most: int, min_units: int = 500) -> SampleHints:
    """What the sample says about its driving relation's string columns, for reading it again: the
    values of each one whose values it has all seen, i.e. at most ``most`` of them and none seen once.

    The units are a uniform sample of the relation's rows, so a value no other unit shares is a sign of
    unseen ones (Good-Turing: the share of rows with unseen values is about the share of units whose
    value is unique in the sample). The statistics pass checks that its counts add up, so a miss
    costs time, never a wrong number.
    """
    table, desc = segment.table, segment.description
    values: dict[str, tuple[str, ...]] = {}
    if len(table) < min_units:
        return SampleHints()
    for n in desc["nodes"]:
        node = G.nodes[n] if n in G else {}
        if n not in table or node.get("kind") != "source" or node.get("table") != desc["driving"] \
                or node.get("dtype") != "string":
            continue
        counts = table[n].value_counts(dropna=True)
        if len(counts) <= most and not (counts == 1).any():
            values[n] = tuple(sorted(str(v) for v in counts.index))
    return SampleHints(values=values)


def _contribution(fn: str, arg: pd.Series | None, passed: np.ndarray) -> np.ndarray:
    if fn == "count":
        ok = passed if arg is None else passed & arg.notna().to_numpy()
        return ok.astype("float64")
    if arg is None:
        return passed.astype("float64")
    values = pd.to_numeric(arg, errors="coerce").astype("float64").fillna(0.0).to_numpy()
    return np.where(passed, values, 0.0)


def _join_description(j: dict, env: dict[int, str], rw: _Rewriter) -> dict:
    p = j["plan"]
    driving, other = (p.left(), p.right()) if j["drive_left"] else (p.right(), p.left())
    cond = P.option(p.condition())
    refs = P.inspect_expr(cond).attrs if cond is not None else []
    d_ids = {P.expr_id(a) for a in P.output(driving)}
    o_ids = {P.expr_id(a) for a in P.output(other)}
    keys = [env[P.expr_id(a)] for a in refs if P.expr_id(a) in d_ids and P.expr_id(a) in env]
    other_keys = [env[P.expr_id(a)] for a in refs if P.expr_id(a) in o_ids and P.expr_id(a) in env]
    columns = [env[P.expr_id(a)] for a in P.output(other) if P.expr_id(a) in env]
    conjuncts = P.conjuncts(cond) if cond is not None else []
    # the driving side's columns compared otherwise than by equality across the sides (``c.contract =
    # t.contract AND hour(r.ts) BETWEEN t.start_hour AND t.end_hour``): what they take is no key value
    ranged = []
    for e in conjuncts:
        ids = [P.expr_id(a) for a in P.inspect_expr(e).attrs]
        if set(ids) & o_ids and not _side_equality(e, d_ids, o_ids):
            ranged += [env[i] for i in ids if i in d_ids and i in env]
    return {"selection": j["selection"], "type": j["type"], "drops": j["drops"], "keys": list(dict.fromkeys(keys)),
            "other_keys": list(dict.fromkeys(other_keys)), "columns": list(dict.fromkeys(columns)),
            "equi": any(_side_equality(e, d_ids, o_ids) for e in conjuncts), "ranged": list(dict.fromkeys(ranged))}


def _side_equality(e: JObject, d_ids: set[int], o_ids: set[int]) -> bool:
    """Whether a join condition's conjunct equates an expression of the driving side with one of the
    other side (a key lookup), rather than comparing them otherwise (a range join)."""
    if P.cls(e) not in ("EqualTo", "EqualNullSafe"):
        return False
    a, b = ({P.expr_id(x) for x in P.inspect_expr(side).attrs} for side in P.children(e))
    return bool(a and b) and ((a <= d_ids and b <= o_ids) or (b <= d_ids and a <= o_ids))


def _relation_table(rel: JObject, env: dict[int, str], G: Any) -> str:
    """The name of a driving relation: its table's, or for a table or folder the run wrote earlier and
    reads back, that output's (whose columns may have been defined in an upstream view: a dedup view's
    name would hide the output whose own segment explains a change in its rows). The result rows of a
    window over few partitions (or of a DISTINCT) are named by the largest table below them: a LAG per
    campaign over impressions joined to 40 campaigns is rows of impressions, not of campaigns."""
    leaves = _leaves_below(rel)
    if leaves is not None and len(leaves) > 1:
        sizes = []
        for leaf in leaves:
            try:
                sizes.append(P.size_in_bytes(leaf))
            except Exception:  # noqa: BLE001 - no estimate: its columns' name, as before
                return _first_table(rel, env, G)
        return _first_table(leaves[max(range(len(leaves)), key=sizes.__getitem__)], env, G)
    return _first_table(rel, env, G)


def _leaves_below(rel: JObject) -> list[JObject] | None:
    """The source relations under a driving relation that is neither a source nor made of groups or
    branches (an Aggregate or a Union below: their own names tell them); None for those."""
    if P.cls(rel) in P.LEAF_CLASSES:
        return None
    found, stack = [], [rel]
    while stack:
        p = stack.pop()
        c = P.cls(p)
        if c in ("Aggregate", "Union"):
            return None
        if c in P.LEAF_CLASSES:
            found.append(p)
        else:
            stack.extend(P.children(p))
    return found


def _inside(rel: JObject, selections: dict[int, str]) -> list[str]:
    """The selections (filters, joins) inside a driving relation that is not a source: rows they drop
    or add are the units' volume, whose cause they may be (``compare._within_the_units``). Not those
    of groups or branches below (an Aggregate, a Union): their own segments and branches tell them."""
    if _leaves_below(rel) is None:
        return []
    found, stack = [], [rel]
    while stack:
        p = stack.pop()
        if (nid := selections.get(int(p.hashCode()))) is not None and nid not in found:
            found.append(nid)
        stack.extend(P.children(p))
    return found


def _first_table(rel: JObject, env: dict[int, str], G: Any) -> str:
    """:func:`_relation_table` by the relation's own columns."""
    nodes = [(nid, G.nodes[nid]) for a in P.output(rel) if (nid := env.get(P.expr_id(a))) is not None and nid in G]
    written = [d["output"] for _, d in nodes if d.get("output")] if P.cls(rel) in P.LEAF_CLASSES else []
    if written:
        return written[0]
    if nodes:
        nid, node = nodes[0]
        return node.get("table") or node.get("stage") or nid.split(".")[0]
    return "driving"


def _identifiers(table: pd.DataFrame, nodes: list[str]) -> list[str]:
    """High-cardinality keys (nearly one distinct value per unit): identifiers are not causes."""
    out = []
    n = len(table)
    for c in nodes:
        if c not in table or n < 50:
            continue
        s = table[c]
        if s.dtype.kind in "OUSi" or str(s.dtype).startswith("string"):
            if s.nunique(dropna=True) >= 0.95 * n:
                out.append(c)
    return out


def _to_pandas(df: Any) -> pd.DataFrame:
    """Collect a bounded result; decimals become floats and dates/timestamps stay datetime64.

    Through Arrow whatever the session says (its setting is put back): for 20,000 units of 17 columns
    it takes 0.5 s less than unpickling rows, a third of the sampled pass over 10M rows.
    """
    from pyspark.sql.types import ArrayType, DecimalType, MapType, StructType

    # as SQL text, and only when a column needs it: pyspark's Column wrappers cost a dozen py4j round
    # trips per column (call sites, session lookups), ~0.1 s for a sample of 30 columns
    exprs, converted = [], False
    for f in df.schema.fields:
        q = P.quoted(f.name)
        if isinstance(f.dataType, DecimalType):
            exprs.append(f"CAST({q} AS DOUBLE) AS {q}")
        elif isinstance(f.dataType, (ArrayType, MapType, StructType)):
            exprs.append(f"to_json({q}) AS {q}")
        else:
            exprs.append(q)
            continue
        converted = True
    conf, key = df.sparkSession.conf, "spark.sql.execution.arrow.pyspark.enabled"
    before = conf.get(key, "false")
    conf.set(key, "true")
    try:
        return (df.selectExpr(*exprs) if converted else df).toPandas()
    finally:
        conf.set(key, before)
