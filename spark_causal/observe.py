"""Statistics measured by the job's own write: ``CollectMetrics`` probes placed at stage boundaries.

Why inline: exact per-stage statistics computed by separate queries cost a pass over the data per
query, i.e. several times the job. A ``CollectMetrics`` node (what ``Dataset.observe`` builds) only
aggregates the rows that flow through it while the job runs, and Spark hands the result to a
registered ``Observation`` when the action ends. So the plan the job writes is rebuilt with probes:

- over every source relation (its columns as read, all rows: the source's own statistics);
- at the top of every chain of row-preserving operators (Project, Window, Sort, aliases ...), i.e. at
  each stage boundary, for the columns defined in that chain (lower, if a Project drops one first);
- at the top of the plan, for the output's columns;
- inside an Aggregate that made few groups of many rows in the output's previous run: the columns of
  the chain below it, by aggregates added to the job's own aggregation (``_Builder.fold``).

Except over large sources that are cheap to read again (Parquet, ORC: ``plan.columnar_file``, files over
``REREAD_BYTES``): those are left without a probe and measured after the write by a separate aggregation
(``Observed.reread``). A probe's aggregates run row by row outside Spark's generated code, a separate
query runs inside it but costs a query's fixed overhead. Measured on 2 cores: over 10M rows of 5 columns
(~120 MB) the probe added 3.1 s to a 3 s job, reading the columns again 1.7 s. At 1M rows (12 MB, a
4-valued string among 4 columns) a later run took 3.14 s with the probe and 2.64 s reading it again
(CPU 5.58 s against 4.67 s; 1.2 s plain; session 13, alternated in one process): the read runs before
the sampled pass and counts its rows for it, and the string's top-values sketch is dear per row. And
without a probe over the scan the job keeps its filter pushdown into the files. Sources under a LIMIT
(or a sample) are read again too, whatever their size: a probe there would see only the rows the limit
pulls.

A probe stops Catalyst from pushing a Filter below it, which is why probes sit at the top of chains and
over the scans themselves, never between a Filter and the relation it filters except at a source, whose
statistics must see every row anyway. The rebuilt plan has the same rows; probes only add observations.
"""
from __future__ import annotations

import collections
import itertools
import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from . import plan as P
from .lineage import WalkResult
from .stats import SampleHints, column_aggregates, compute_stats, is_numeric, record

JObject = Any

# Operators that stop pulling rows from their child: a probe below one sees only the rows pulled, so the
# sources under one are measured after the write instead, by reading them again.
_LIMITING = {"GlobalLimit", "LocalLimit", "Tail", "Offset", "Sample"}
_counter = itertools.count()
REREAD_BYTES = 4 << 20  # below the 1M-row measurement above: a smaller source keeps a probe, which saves a query
# A folded variance is trusted while the rounding of its sums of squared means (a few units of double
# precision per group, at worst) is under this share of it (``_Probe.value``)
_ROUNDING, _TRUSTED = 8 * 2.0 ** -52, 1e-9
FEW_GROUPS = 1e-3  # groups per input row under which an Aggregate measures its input (``_Builder.few_groups``)


class _Untrusted(Exception):
    """A folded statistic that lost its precision: the node is measured apart."""


@dataclass
class _Column:
    expr_id: int
    dtype: str
    name: str
    nullable: bool
    position: int | None = None  # the output column it is (its node id is the output's), else None
    unions: int = 0  # Unions above it that output its exprId (``lineage.WalkResult.node``)


@dataclass
class _Probe:
    observation: Any  # pyspark.sql.Observation
    columns: list[_Column]
    rows_of: list[int]  # hashCodes of the original plan nodes whose row count this probe counts
    folded: bool = False  # measured by aggregates added to the job's Aggregate (``_Builder.fold``)
    averaged: list[int] = field(default_factory=list)  # ``_Builder.averages``: avg() exprIds, no columns
    ratios: list[int] = field(default_factory=list)  # ``_Builder.averages``: exprIds of ratios of two sums

    def value(self, metrics: dict, i: int) -> Callable[[str], Any]:
        """The ``column_aggregates`` values of column ``i``; a folded probe's standard deviation from
        its groups' sums of squared deviations: the groups' own plus the spread of their means.

        The spread is a difference of two sums of squared means, exact only while the mean is not too
        large against the deviations (an epoch in milliseconds varying by seconds): when the rounding
        of those sums may exceed ``_TRUSTED`` of the variance, or when they overflow (values over
        ~1e154), the column is measured apart."""
        p = f"c{i}_"
        if not self.folded or p + "within" not in metrics:
            return lambda k: metrics.get(p + k)

        def value(k: str) -> Any:
            if k != "s":
                return metrics.get(p + k)
            n = metrics.get(p + "v", metrics["rows"])
            total, within, between = metrics.get(p + "sum"), metrics.get(p + "within"), metrics.get(p + "between")
            if not n or n < 2 or total is None or within is None or between is None:
                return None
            if math.isnan(total):  # a NaN (or +inf and -inf) among the values: Spark's stddev is NaN too
                return math.nan
            if metrics.get(p + "lo") == metrics.get(p + "hi"):
                return 0.0
            spread = between - total * total / n
            if not (math.isfinite(spread) and math.isfinite(within)):  # an infinity, or squares that overflow
                raise _Untrusted
            if _ROUNDING * metrics["groups"] * abs(between) > _TRUSTED * (within + max(spread, 0.0)):
                raise _Untrusted
            return math.sqrt((within + max(spread, 0.0)) / (n - 1))
        return value


@dataclass
class Observed:
    """A job's plan with probes, and how to read them back once the job's action has run."""

    df: Any  # the DataFrame to write instead of the job's: same rows, plus observations
    probes: list[_Probe] = field(default_factory=list)
    deferred: list[tuple[JObject, list[_Column]]] = field(default_factory=list)  # sources measured after
    partitions: dict[int, JObject] = field(default_factory=dict)  # their partition predicates
    aggregates: list[tuple[str, int, int]] = field(default_factory=list)  # (names, Aggregate, child hashCodes)

    def group_shares(self, rows: dict[int, int]) -> dict[str, float]:
        """Per Aggregate of the plan, by its output column names (which outlive a code change
        elsewhere in the plan): its groups per input row, from the row counts the probes measured
        (``statistics``), where both are known. Kept with the run, the next run of the output reads it
        (``observe``'s ``history``)."""
        shares: dict[str, float] = {}
        for signature, a, c in self.aggregates:
            if rows.get(c) and a in rows:
                shares.setdefault(signature, rows[a] / rows[c])
        return shares

    def averaged_inputs(self, walk: WalkResult) -> dict[str, list[float]]:
        """Per ``avg()`` aggregate node over a column, [count, sum] of that column over the rows its
        Aggregate took in (``_Builder.averages``): the average's exact overall value, wherever the column
        itself was measured (a source column measured at its scan, before a join that drops rows)."""
        found: dict[str, list[float]] = {}
        for probe, m in self.results():
            for i, eid in enumerate(probe.averaged if m is not None else []):
                n, total = m[f"a{i}_n"], m[f"a{i}_s"]
                if (nid := walk.node(eid)) is not None and n is not None and (total is not None or not n):
                    found.setdefault(nid, [float(n), float(total or 0.0)])
        return found

    def ratio_totals(self, walk: WalkResult) -> dict[str, list[float]]:
        """Per aggregate node that is a ratio of two sums in one expression (``SUM(a) / SUM(b)``),
        [numerator total, denominator total] over the rows its Aggregate took in (``_Builder.averages``):
        the parts no column holds, whose totals are the ratio's exact overall value."""
        found: dict[str, list[float]] = {}
        for probe, m in self.results():
            for i, eid in enumerate(probe.ratios if m is not None else []):
                num, den = m[f"r{i}_n"], m[f"r{i}_d"]
                if (nid := walk.node(eid)) is not None and num is not None and den is not None:
                    found.setdefault(nid, [float(num), float(den)])
        return found

    def reread(self, spark: Any, G: Any, walk: WalkResult,
               hints: SampleHints = SampleHints()) -> tuple[list[dict], dict[int, int]]:
        """(stats rows of the deferred sources' columns, their row counts by plan hashCode), by one
        aggregation over them as the job read them (its partitions), once the job has written; ``hints``
        save it a read of their few-valued strings (``stats.compute_stats``). A source's row count is
        its columns' ``count``, so the sampled pass need not count it again."""
        relations, leaves = [], []
        for leaf, columns in self.deferred:
            mapping = {col.name: nid for col in columns if (nid := walk.node(col.expr_id, col.unions))}
            if mapping:
                df = P.to_dataframe(spark, P.restrict(leaf, self.partitions))
                relations.append((df.select([P.quoted(c) for c in mapping]), mapping))
                leaves.append(int(leaf.hashCode()))
        found = compute_stats(G, relations, sketches=False, hints=hints)
        # one row per column, relation by relation: a table read twice (a self-join of two partitions)
        # has the same nodes twice, so a relation's count is its own rows', not its nodes'
        counts, start = {}, 0
        for h, (_, mapping) in zip(leaves, relations):
            mine = found[start:start + len(mapping)]
            start += len(mapping)
            if [s["node"] for s in mine] == list(mapping.values()):
                counts[h] = int(mine[0]["count"])
        return found, counts

    def results(self) -> list[tuple[_Probe, dict | None]]:
        """Each probe with its metrics, None for a probe that Spark completed with an empty row; a
        probe the action did not complete is left out.

        Spark completes a probe with an empty row when the plan that ran no longer had it: the optimiser
        removed a branch it proved empty, or adaptive execution dropped a branch at run time after its
        first stage (and the probe's rows) had run: a job that filters everything out still read its
        sources. The two look alike, so an empty row measures nothing.
        """
        out = []
        for probe in self.probes:
            jo = probe.observation._jo
            if jo is None or not jo.future().isCompleted():
                continue
            out.append((probe, probe.observation.get if jo.getRow().size() else None))
        return out

    def statistics(self, G: Any, walk: WalkResult,
                   output_columns: list[str]) -> tuple[list[dict], dict[int, int], list[str]]:
        """(stats rows, one per node; row counts by plan node hashCode; nodes the probes did not measure,
        to be measured apart: an empty probe's, and output columns no probe reported).

        An output column is its output node, measured by the top probe, and, if no lower probe measured
        it, its lineage node (a column defined in the top chain, or a source read straight into the
        output). The output's own measurement comes first: a group key derived in the job is one node
        with the column before the aggregation, and the output's statistics are of the rows written.
        Otherwise the first probe wins.
        """
        stats: list[dict] = []
        rows: dict[int, int] = {}
        seen: set[str] = set()
        lost: list[str] = []
        results = self.results()
        measured = [(lineage, nid, i, col, m, probe) for probe, m in results for i, col in enumerate(probe.columns)
                    for lineage, nid in ([(False, output_columns[col.position])] if col.position is not None else [])
                    + [(True, walk.node(col.expr_id, col.unions))] if nid is not None]
        for _, nid, i, col, m, probe in sorted(measured, key=lambda t: t[0]):  # stable: probe order within each
            if nid in seen:
                continue
            seen.add(nid)
            if m is None:
                lost.append(nid)
                continue
            try:
                stats.append(record(G, nid, col.name, col.dtype, m["rows"], probe.value(m, i)))
            except _Untrusted:
                lost.append(nid)
        for probe, m in results:
            for h in probe.rows_of if m is not None else []:
                rows.setdefault(h, int(m["rows"]))
        return stats, rows, lost + [c for c in output_columns if c not in seen]


class _Builder:
    def __init__(self, spark: Any, root: JObject, target: tuple[str | None, str | None],
                 history: dict[str, float]) -> None:
        self.spark = spark
        self.target = target  # (path, table) the plan is written to
        self.probes: list[_Probe] = []
        self.used = P.needed_ids(root)
        self.partitions = P.partition_filters(root)  # kept right over their relations: partition pruning
        self.deferred: list[tuple[JObject, list[_Column]]] = []
        self.limited = 0  # how many limits are above the node being rebuilt
        self.unions: collections.Counter = collections.Counter()  # exprId -> Unions above that output it
        self.tag = uuid.uuid4().hex[:8]
        self.history = history  # group shares of the Aggregates in the output's previous run
        self.aggregates: list[tuple[str, int, int]] = []  # (output column names, Aggregate and child hashCodes)

    def probe(self, plan: JObject, columns: list[_Column], rows_of: list[int]) -> JObject:
        """``plan`` under a CollectMetrics node measuring ``columns`` (and its row count)."""
        from pyspark.sql import Column, Observation
        from pyspark.sql import functions as F

        utils = P.jclass("org.apache.spark.sql.classic.ExpressionUtils")
        by_id = {P.expr_id(a): a for a in P.output(plan)}
        metrics = [F.count(F.lit(1)).alias("rows")]
        for i, col in enumerate(columns):
            metrics += column_aggregates(Column(utils.column(by_id[col.expr_id])), col.dtype, f"c{i}_",
                                         nullable=col.nullable)
        obs = Observation(f"spark_causal_{self.tag}_{next(_counter)}")
        observed = P.to_dataframe(self.spark, plan).observe(obs, *metrics)
        self.probes.append(_Probe(obs, columns, rows_of))
        return observed._jdf.queryExecution().analyzed()

    def rebuild(self, p: JObject, top: bool) -> tuple[JObject, list[_Column], list[int]]:
        """(new plan, columns of the current chain not yet probed, hashCodes of the chain's nodes)."""
        c = P.cls(p)
        kids = P.children(p)
        if c == "Aggregate":
            signature = ",".join(P.name(a) for a in P.output(p))
            self.aggregates.append((signature, int(p.hashCode()), int(kids[0].hashCode())))
            if not self.limited and _foldable(p):
                few = self.few_groups(signature) or not P.seq(p.groupingExpressions())  # one group: always few
                return self.fold(p, top, few=few)
        through = c in P.ROW_PRESERVING and len(kids) == 1
        pending: list[_Column] = []
        chain = [int(p.hashCode())]
        new_kids = []
        self.limited += c in _LIMITING
        for k, ch in enumerate(kids):
            reused = P.reused_ids(p, k)
            self.unions.update(reused)
            new, below, below_chain = self.rebuild(ch, top=not through)
            self.unions.subtract(reused)
            if through:
                keep = {P.expr_id(a) for a in P.output(p)}
                dropped = [col for col in below if col.expr_id not in keep]
                if dropped:  # a Project drops them: measure them just below it
                    new = self.probe(new, dropped, below_chain)
                pending = [col for col in below if col.expr_id in keep]
                chain += below_chain
            new_kids.append(new)
        self.limited -= c in _LIMITING
        pending += self.defined(p, kids)
        if c == "Aggregate":
            new_kids = [self.averages(p, new_kids[0])]
        new_p = p.withNewChildren(P.scala_seq(new_kids)) if kids else P.restrict(p, self.partitions)
        read_after = self.limited or (P.columnar_file(p) and P.size_in_bytes(p) > REREAD_BYTES)
        if not kids and read_after and not P.reads_from(p, *self.target):
            self.deferred.append((p, pending))
            return new_p, [], chain
        if top and (pending or c in P.LEAF_CLASSES):
            return self.probe(new_p, pending, chain), [], chain
        return new_p, pending, chain

    def averages(self, p: JObject, child: JObject) -> JObject:
        """``child`` (the Aggregate ``p``'s rebuilt input) under a probe of the count and sum of each
        ``avg()`` argument of ``p`` (a column, an expression of the child's columns, ``IF(c, x, NULL)``
        for a FILTER clause), through the constants around the avg (``plan.outer_affine``): that
        average's exact overall value (``Observed.averaged_inputs``). A
        column's own statistics are over the rows where it was measured, which a join or filter below
        the Aggregate may have thinned since, and an expression has none. An argument calling a UDF,
        a subquery or anything non-deterministic is left out (the probe would compute it again), and
        so is one not a number (an interval). The same probe totals both parts of each ratio of two
        sums in one expression (``SUM(a) / SUM(b)``, ``Observed.ratio_totals``), which no column holds."""
        from pyspark.sql import Column, Observation
        from pyspark.sql import functions as F

        visible = {P.expr_id(a) for a in P.output(child)}

        def computable(expr: JObject, numeric: bool = True) -> bool:
            info = P.inspect_expr(expr)
            return ((not numeric or is_numeric(P.dtype(expr))) and expr.deterministic() and not info.subqueries
                    and not info.classes & P.UDF_CLASSES and {P.expr_id(a) for a in info.attrs} <= visible)

        pairs, ratios = [], []
        for e in P.seq(p.aggregateExpressions()):
            fn = P.aggregate_function(e.child()) if P.cls(e) == "Alias" else None
            if fn == "avg":
                arg = P.aggregate_argument(e.child())
                if arg is not None and computable(arg):
                    pairs.append((P.expr_id(e), arg, P.outer_affine(e.child())))
            elif fn == "other" and (found := P.ratio_of_sums(e.child())) is not None \
                    and all(computable(part, numeric=False) for part in found[1:]):
                ratios.append((P.expr_id(e), found[1], found[2]))  # SUM(a) / SUM(b): each part's total
        if not pairs and not ratios:
            return child
        utils = P.jclass("org.apache.spark.sql.classic.ExpressionUtils")
        metrics = []
        for i, (_, arg, (a, b)) in enumerate(pairs):  # 100 * AVG(x) - 1: the average of x * 100 - 1
            col = Column(utils.column(arg))
            metrics += [F.count(col).alias(f"a{i}_n"), F.sum(col.cast("double") * a + b).alias(f"a{i}_s")]
        for i, (_, num, den) in enumerate(ratios):
            metrics += [Column(utils.column(num)).cast("double").alias(f"r{i}_n"),
                        Column(utils.column(den)).cast("double").alias(f"r{i}_d")]
        obs = Observation(f"spark_causal_{self.tag}_{next(_counter)}")
        observed = P.to_dataframe(self.spark, child).observe(obs, *metrics)
        self.probes.append(_Probe(obs, [], [], averaged=[e for e, _, _ in pairs], ratios=[e for e, _, _ in ratios]))
        return observed._jdf.queryExecution().analyzed()

    def few_groups(self, signature: str) -> bool:
        """Whether the Aggregate with these output columns had few groups for its rows in the output's
        previous run (``Observed.group_shares``): only then does it take the statistics' aggregates.

        Why: when most input rows are groups of their own (a dedup by order id), the partial
        aggregation before the shuffle does not shrink them and every row carries the statistics'
        partial values through the shuffle: measured at 10M rows grouped by order id, +12 s against
        +5 s for a probe below the Aggregate (grouped by day: +0.4 s against +1.7 s). The plan alone does
        not tell how many groups there will be, the previous run does; a first run takes the probe."""
        share = self.history.get(signature)
        return isinstance(share, (int, float)) and share <= FEW_GROUPS

    def fold(self, p: JObject, top: bool, few: bool) -> tuple[JObject, list[_Column], list[int]]:
        """An Aggregate whose input chain's numeric, boolean and time columns are measured inside it.

        Why: a probe runs its aggregates row by row outside Spark's generated code, and it cuts the
        job's codegen pipeline in two; the job's own hash aggregation updates buffers in generated code
        at a fraction of the cost per row (10M rows, 2 cores: ten aggregates in the job's Aggregate
        +0.34 s, five in a probe over the same rows +0.58 s). So the Aggregate computes, per group, each
        column's count, sum, variance, min and max next to the job's own aggregates, and a probe over
        its output (one row per group) combines the groups: counts and sums add, the sum of squared
        deviations is the groups' own plus their means' spread around the whole mean. A Project on top
        keeps the job's columns only. Strings (top values need a sketch, which would take the job's
        aggregation off generated code) keep a probe below it. Without ``few`` (``few_groups``) only the
        Aggregate's input rows are counted inside it, and only when no probe below counts them.
        """
        from pyspark.sql import Column
        from pyspark.sql import functions as F

        child = P.children(p)[0]
        new_child, below, child_chain = self.rebuild(child, top=False)
        chain = [int(p.hashCode())]
        folded = [col for col in below if few and (col.dtype == "boolean" or is_numeric(col.dtype)
                                                   or col.dtype.startswith(("date", "timestamp")))]
        rest = [col for col in below if col not in folded]
        if rest:
            new_child = self.probe(new_child, rest, child_chain)
        new_child = self.averages(p, new_child)
        if rest and not few:  # a probe below, as over any chain; it counts the Aggregate's input rows
            return self.finish(p, top, p.withNewChildren(P.scala_seq([new_child])), chain)
        utils = P.jclass("org.apache.spark.sql.classic.ExpressionUtils")
        f = P.jclass("org.apache.spark.sql.functions")
        by_id = {P.expr_id(a): a for a in P.output(new_child)}
        key = f"__spark_causal_{self.tag}_{next(_counter)}_"
        extra = [f.count(f.lit(1)).alias(key + "r")]
        rows = F.sum(F.col(key + "r"))
        metrics = [F.coalesce(rows, F.lit(0)).alias("rows"), F.count(F.lit(1)).alias("groups")]
        for i, col in enumerate(folded):
            a, k, m = utils.column(by_id[col.expr_id]), f"{key}{i}", f"c{i}_"
            n = F.col(k + "n") if col.nullable else F.col(key + "r")
            if col.nullable:
                extra.append(f.count(a).alias(k + "n"))
                metrics.append(F.coalesce(F.sum(n), F.lit(0)).alias(m + "v"))
            if col.dtype == "boolean" or is_numeric(col.dtype):
                x = a.cast("double")
                extra.append(f.sum(x).alias(k + "s"))
                metrics.append(F.sum(F.col(k + "s")).alias(m + "sum"))
            if is_numeric(col.dtype):
                extra.append(f.var_pop(x).multiply(f.count(x)).alias(k + "m2"))
                s = F.col(k + "s")
                metrics += [F.sum(F.col(k + "m2")).alias(m + "within"),  # a group of NULLs only: no division
                            F.sum(F.when(n > 0, s * s / n)).alias(m + "between")]
            if col.dtype != "boolean":
                extra += [f.min(a).alias(k + "lo"), f.max(a).alias(k + "hi")]
                metrics += [F.min(F.col(k + "lo")).cast("string").alias(m + "lo"),
                            F.max(F.col(k + "hi")).cast("string").alias(m + "hi")]
        # resolved by analysing them as a global aggregation of the same child, then added to the job's
        extra = P.seq(P.to_dataframe(self.spark, new_child).agg(*[Column(e) for e in extra])
                      ._jdf.queryExecution().analyzed().aggregateExpressions())
        aggregate = P.jclass("org.apache.spark.sql.catalyst.plans.logical.Aggregate")(
            p.groupingExpressions(), P.scala_seq(P.seq(p.aggregateExpressions()) + extra), new_child, p.hint())
        from pyspark.sql import Observation
        obs = Observation(f"spark_causal_{self.tag}_{next(_counter)}")
        measured = P.to_dataframe(self.spark, aggregate).observe(obs, *metrics)
        self.probes.append(_Probe(obs, folded, child_chain if not rest else [], folded=True))
        new_p = P.jclass("org.apache.spark.sql.catalyst.plans.logical.Project")(
            P.scala_seq(P.output(p)), measured._jdf.queryExecution().analyzed())
        return self.finish(p, top, new_p, chain)

    def finish(self, p: JObject, top: bool, new_p: JObject, chain: list[int]) -> tuple[JObject, list[_Column], list[int]]:
        """An Aggregate rebuilt: its own columns probed over it at the top of a chain, else passed up."""
        pending = self.defined(p, P.children(p))
        if top and pending:
            return self.probe(new_p, pending, chain), [], chain
        return new_p, pending, chain

    def defined(self, p: JObject, kids: list[JObject]) -> list[_Column]:
        """Columns ``p`` creates (renames of a column are the same node and are skipped). A Union's
        are new nodes, though Spark gives them its first child's exprIds."""
        inherited = {P.expr_id(a) for ch in kids for a in P.output(ch)} if P.cls(p) != "Union" else set()
        if P.cls(p) == "Project":
            inherited |= {P.expr_id(e) for e in P.seq(p.projectList())
                          if P.cls(e) == "Alias" and P.cls(e.child()) == "AttributeReference"}
        return [_Column(P.expr_id(a), P.dtype(a), P.name(a), P.nullable(a), unions=self.unions[P.expr_id(a)])
                for a in P.output(p) if P.expr_id(a) not in inherited and P.expr_id(a) in self.used]


def _foldable(p: JObject) -> bool:
    """Whether an Aggregate can take more aggregates: not a DISTINCT one (planned as an expansion of
    the rows), no Python aggregate (Spark runs those apart and refuses to mix them), not over an
    Expand (GROUPING SETS: its input rows are copies of the chain's)."""
    def distinct(e: JObject) -> bool:
        return bool(e.isDistinct()) if P.cls(e) == "AggregateExpression" else any(map(distinct, P.children(e)))

    exprs = P.seq(p.aggregateExpressions())
    return (P.cls(P.children(p)[0]) != "Expand" and not P.inspect_exprs(exprs).classes & P.UDF_CLASSES
            and not any(map(distinct, exprs)))


def observe(spark: Any, plan: JObject, target: tuple[str | None, str | None] = (None, None),
            history: dict[str, float] | None = None) -> Observed:
    """The job's ``plan`` rebuilt with probes. ``plan`` must be the very plan object lineage walks
    (``plan.analyzed``), so that the probes' exprIds are keys of the lineage env. ``target``, the
    (path, table) the write goes to: a source read from there is probed, never read again after.
    ``history``, the ``Observed.group_shares`` of the output's previous run, says which Aggregates
    measure the columns they aggregate (``_Builder.few_groups``).

    The top probe measures the output's columns by position; the columns the top chain defines are
    among them, so it needs no others.
    """
    b = _Builder(spark, plan, target, dict(history or {}))
    new, _, chain = b.rebuild(plan, top=False)
    outs = [_Column(P.expr_id(a), P.dtype(a), P.name(a), P.nullable(a), position=i)
            for i, a in enumerate(P.output(plan))]
    return Observed(df=P.to_dataframe(spark, b.probe(new, outs, chain)), probes=b.probes, deferred=b.deferred,
                    partitions=b.partitions, aggregates=b.aggregates)
