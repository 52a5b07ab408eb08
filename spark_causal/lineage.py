"""Analysed logical plan -> column-level causal DAG.

Why a DAG of columns and not of tables: the causes users look for are columns (an FX rate, an order
amount, a filter's threshold), and every arrow between columns is known from the plan itself.

Node ids are built to survive reruns: exprIds change every run, names do not, so a node is named
``<table>.<column>`` (sources) or ``<stage>.<column>`` (everything else), where the stage is the
nearest view / alias / CTE name above the operator, else the output's name. Names are given only when
an output's whole plan has been walked, so that an output's own columns always get ``<output>.<column>``
and intermediate columns with clashing names are numbered in plan order (deterministic).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from . import plan as P

JObject = Any

SELECTION_EDGE = {"filter": "filter", "join": "join", "limit": "filter", "dedup": "filter"}
# Classes that only rename or reorder, never compute: walked straight through.
PASS_THROUGH = {"SubqueryAlias", "View", "Sort", "Repartition", "RepartitionByExpression", "ResolvedHint",
                "LocalLimit", "Subquery", "RebalancePartitions", "Offset", "Tail", "EventTimeWatermark",
                "WithWindowDefinition", "UnresolvedHint", "CollectMetrics", "Project_Sampling",
                "DeserializeToObject", "SerializeFromObject", "AppendColumns"}


@dataclass
class _Frame:
    """What a visited operator hands its parent besides the exprId map: the row-set dependencies."""

    rowdeps: list[Any] = field(default_factory=list)  # selection nodes that decide which rows exist
    sort_keys: list[Any] = field(default_factory=list)


@dataclass(frozen=True)
class WalkResult:
    """How one output's analysed plan maps onto the graph: what sampling needs to name its columns."""

    env: dict[int, str]         # exprId -> node id
    selections: dict[int, str]  # hashCode of a Filter / Join operator -> its selection node id
    # exprId -> the node ids it had before each Union above reused it: Spark's Union outputs its first
    # child's attributes, so below the union (in that child) the same exprId is another node
    shadowed: dict[int, list[str]] = field(default_factory=dict)

    def node(self, expr_id: int, unions: int = 0) -> str | None:
        """The node of ``expr_id`` at a place in the plan under ``unions`` Unions that output it."""
        if not unions:
            return self.env.get(expr_id)
        before = self.shadowed.get(expr_id, [])
        return before[-unions] if len(before) >= unions else None


@dataclass
class _Pending:
    kind: str
    column: str
    stage: str
    dtype: str
    expr: str
    fingerprint: str
    subtype: str
    extra: dict


class LineageBuilder:
    """Builds one DAG per run, one output at a time; shared sub-plans are linked, not duplicated."""

    def __init__(self) -> None:
        self.graph = nx.DiGraph(outputs={}, sources={}, segments=[], warnings=[])
        self._cons: dict[tuple, str] = {}  # structural key -> final node id (hash-consing across outputs)
        self.walks: dict[str, WalkResult] = {}  # per output: how its plan maps to node ids (for sampling)

    # ------------------------------------------------------------------------------ public
    def add_output(self, name: str, plan: JObject, *, path: str | None = None, table: str | None = None,
                   fmt: str | None = None, mode: str | None = None) -> str:
        """Walk one output's analysed plan; returns the output name actually used (``name@2`` if repeated)."""
        outputs = self.graph.graph["outputs"]
        base, k = name, 1
        while name in outputs:
            k += 1
            name = f"{base}@{k}"
        walk = _Walk(self, name)
        frame = walk.visit(plan, stage=name, alias=None)
        columns = walk.finish(P.output(plan), frame.rowdeps)
        outputs[name] = {"columns": columns, "path": path, "table": table, "format": fmt, "mode": mode}
        self.walks[name] = WalkResult(env={k: walk.final(v) for k, v in walk.env.items()},
                                      selections={h: walk.final(v) for h, v in walk.plan_selection.items()},
                                      shadowed={k: [walk.final(v) for v in vs] for k, vs in walk.shadowed.items()})
        return name

    # ------------------------------------------------------------------------------ helpers
    def add_source(self, table: str, column: str, dtype: str, meta: dict) -> str:
        nid = f"{table}.{column}"
        self.graph.graph["sources"].setdefault(table, meta)
        if nid not in self.graph:  # an earlier output of this run may be read back: keep its node
            self.graph.add_node(nid, kind="source", table=table, column=column, dtype=dtype,
                                fingerprint=P.fingerprint("source", table, column, dtype),
                                subtype="column", expr=f"{table}.{column}")
        return nid


class _Walk:
    """The walk of one output's plan: temporary node keys until ``finish`` names them."""

    def __init__(self, builder: LineageBuilder, output: str) -> None:
        self.b = builder
        self.output = output
        self.env: dict[int, Any] = {}          # exprId -> node key (final id str or temp int)
        self.pending: dict[int, _Pending] = {}  # temp key -> attributes
        self.edges: list[tuple[Any, Any, str, str]] = []
        self.local_cons: dict[tuple, int] = {}
        self.cte: dict[int, list[Any]] = {}
        self.cte_rowdeps: dict[int, list[Any]] = {}
        self.plan_selection: dict[int, Any] = {}  # hashCode of a Filter/Join plan -> its selection node
        self.shadowed: dict[int, list[Any]] = {}  # exprId -> its node keys before Unions reused it
        self.unnamed_sources = 0
        self.sub_count = 0

    # ------------------------------------------------------------------------------ nodes
    def node(self, *, kind: str, column: str, stage: str, dtype: str, expr: str, subtype: str,
             inputs: list[tuple[Any, str, str]], fp_parts: tuple[str, ...] = (), extra: dict | None = None) -> Any:
        """A new node, or the existing one with the same code over the same inputs."""
        inputs = [(src, k, s) for src, k, s in inputs if src is not None]
        fp = P.fingerprint(kind, subtype, expr, *fp_parts)
        key = (kind, subtype, fp, column if kind != "selection" else "",
               tuple(sorted({(str(src), k) for src, k, _ in inputs})))
        if all(isinstance(src, str) for src, _, _ in inputs) and key in self.b._cons:
            return self.b._cons[key]
        if key in self.local_cons:  # a sub-plan used twice in one output (self-join): one set of nodes
            return self.local_cons[key]
        tmp = len(self.pending)
        self.local_cons[key] = tmp
        self.pending[tmp] = _Pending(kind, column, stage, dtype, expr, fp, subtype, dict(extra or {}))
        self.pending[tmp].extra["_key"] = key
        seen = set()
        for src, k, s in inputs:
            if (src, k) in seen or src == tmp:
                continue
            seen.add((src, k))
            self.edges.append((src, tmp, k, s))
        return tmp

    def lookup(self, attrs: list[JObject]) -> list[Any]:
        out = []
        for a in attrs:
            n = self.env.get(P.expr_id(a))
            if n is not None and n not in out:
                out.append(n)
        return out

    def selection_inputs(self, rowdeps: list[Any]) -> list[tuple[Any, str, str]]:
        return [(s, SELECTION_EDGE[self.subtype_of(s)], self.subtype_of(s)) for s in rowdeps]

    def subtype_of(self, key: Any) -> str:
        if isinstance(key, int):
            return self.pending[key].subtype
        return self.b.graph.nodes[key].get("subtype", "filter")

    def facts(self, key: Any) -> tuple[str | None, dict]:
        """(kind, attributes) of a node, pending or final."""
        if isinstance(key, int):
            return self.pending[key].kind, self.pending[key].extra
        d = self.b.graph.nodes.get(key) or {}
        return d.get("kind"), d

    def linear(self, expr: JObject) -> dict | None:
        """``{"linear": [[aggregate node, coefficient], ...], "offset": b}`` for a column computed after
        an aggregation as constants times its aggregates plus a constant (``rev / 1000``, ``ROUND(rev,
        2)``, ``rev - cost``, ``100 * avg_price``), through such columns before it; else None. Why: no
        unit holds it, but its total (or overall average) is that combination of the aggregates', and
        each of those is attributed over its units (``ratio.attribute_linear``)."""
        found = P.linear_terms(expr)
        if not found or not found[0]:
            return None
        terms: dict[Any, float] = {}
        offset = found[1]
        for coef, attr in found[0]:
            node = self.env.get(P.expr_id(attr))
            kind, attrs = self.facts(node) if node is not None else (None, {})
            if kind == "aggregate" and "ratio" not in attrs:
                terms[node] = terms.get(node, 0.0) + coef
            elif attrs.get("linear"):
                for part, k in attrs["linear"]:
                    terms[part] = terms.get(part, 0.0) + coef * k
                offset += coef * float(attrs.get("offset") or 0.0)
            else:
                return None
        return {"linear": [[n, k] for n, k in terms.items() if k], "offset": offset}

    def exprs_inputs(self, info: P.ExprInfo, stage: str, edge_kind: str, subtype: str) -> list[tuple[Any, str, str]]:
        """Inputs of an expression: its columns plus the output columns of its subqueries."""
        ins = [(n, edge_kind, subtype) for n in self.lookup(info.attrs)]
        for sub in info.subqueries:
            self.sub_count += 1
            frame = self.visit(sub, stage=stage, alias=None)
            for n in self.lookup(P.output(sub)):
                ins.append((n, edge_kind, subtype))
            ins.extend(self.selection_inputs(frame.rowdeps))
        return ins

    # ------------------------------------------------------------------------------ operators
    def visit(self, p: JObject, *, stage: str, alias: str | None) -> _Frame:
        c = P.cls(p)
        handler = getattr(self, f"_v_{c}", None)
        if handler is not None:
            return handler(p, stage, alias)
        if c in P.LEAF_CLASSES:
            return self._leaf(p, alias)
        if c in PASS_THROUGH:
            return self._pass(p, stage, alias)
        if c in P.WRITE_COMMANDS:
            query = P.call(p, "query", "child")
            return self.visit(query, stage=stage, alias=alias) if query is not None else _Frame()
        return self._generic(p, stage)

    def _children(self, p: JObject, stage: str) -> list[_Frame]:
        return [self.visit(ch, stage=stage, alias=None) for ch in P.children(p)]

    def _pass(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        c = P.cls(p)
        if c == "SubqueryAlias":
            name = str(p.alias())
            if name.startswith("__auto_generated_subquery_name"):  # Spark's, for FROM (SELECT ...) unnamed
                return self.visit(p.child(), stage=stage, alias=alias)
            return self.visit(p.child(), stage=name, alias=name)
        if c == "View":
            desc = P.call(p, "desc")
            name = str(desc.identifier().table()) if desc is not None else alias
            return self.visit(p.child(), stage=name or stage, alias=name or alias)
        frames = [self.visit(ch, stage=stage, alias=alias) for ch in P.children(p)]
        frame = _merge(frames)
        if c == "Sort":
            frame.sort_keys = self.lookup(P.inspect_exprs(P.seq(p.order())).attrs)
        return frame

    def _leaf(self, p: JObject, alias: str | None) -> _Frame:
        c = P.cls(p)
        table = P.relation_name(p)
        if c in ("LogicalRDD", "LocalRelation", "ExternalRDD", "OneRowRelation") or table is None:
            table = alias
        if table is None:
            self.unnamed_sources += 1
            table = f"{self.output}_input{self.unnamed_sources}"
        elif table == self.output:  # a table named as the output reading it (yesterday's folder of the same
            table = f"{table}_input"  # output, an insert into the table read): the output keeps its contract ids
        meta: dict = {"class": c}
        if c == "LogicalRelation":
            loc = P.call(p.relation(), "location")
            if loc is not None:
                meta["path"] = ",".join(str(x.toString()) for x in P.seq(loc.rootPaths()))
        for a in P.output(p):
            self.env[P.expr_id(a)] = self.b.add_source(table, P.name(a), P.dtype(a), meta)
        return _Frame()

    def _v_Project(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        for e in P.seq(p.projectList()):
            self._named(e, stage, frame)
        return frame

    def _named(self, e: JObject, stage: str, frame: _Frame, *, extra_inputs=(), subtype=None) -> None:
        """One named expression of a projection-like list: pass-through, rename, or a new stage node."""
        c = P.cls(e)
        if c == "AttributeReference":
            return
        if c == "Alias":
            child = e.child()
            # a cast to the type the column has is the column (a temporary view casts each column to its
            # stored type: the formula of `net_usd` was `net_usd@2`, its view's no-op cast `net_usd`)
            same = child
            while P.cls(same) in ("Cast", "UpCast") and P.children(same) and P.dtype(same) == P.dtype(P.children(same)[0]):
                same = P.children(same)[0]
            if P.cls(same) == "AttributeReference" and not extra_inputs:
                src = self.env.get(P.expr_id(same))
                if src is not None:
                    self.env[P.expr_id(e)] = src
                    return
            expr = child
        else:
            expr = e
        info = P.inspect_expr(expr)
        is_udf = bool(info.classes & P.UDF_CLASSES)
        kind_edge = "udf" if is_udf else "direct"
        ins = self.exprs_inputs(info, stage, kind_edge, "transformation")
        ins.extend(extra_inputs)
        self.env[P.expr_id(e)] = self.node(
            kind="stage", column=P.name(e), stage=stage, dtype=P.dtype(e), expr=P.sql(expr),
            subtype=subtype or ("udf" if is_udf else "transformation"), inputs=ins,
            fp_parts=tuple(info.udf_code), extra=None if extra_inputs else self.linear(expr))

    def _v_Filter(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        cond = p.condition()
        info = P.inspect_expr(cond)
        ins = self.exprs_inputs(info, stage, "filter", "filter")
        sel = self.node(kind="selection", column="filter", stage=stage, dtype="boolean", expr=P.sql(cond),
                        subtype="filter", inputs=ins)
        self.plan_selection[int(p.hashCode())] = sel
        return _Frame(rowdeps=frame.rowdeps + [sel], sort_keys=frame.sort_keys)

    def _v_Join(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        left = self.visit(p.left(), stage=stage, alias=None)
        right = self.visit(p.right(), stage=stage, alias=None)
        jtype = str(p.joinType().toString()).lower().replace(" ", "")
        cond = P.option(p.condition())
        rowdeps = left.rowdeps + right.rowdeps
        if cond is not None:
            info = P.inspect_expr(cond)
            ins = self.exprs_inputs(info, stage, "join", "join")
            sel = self.node(kind="selection", column="join", stage=stage, dtype="boolean",
                            expr=f"{jtype} join on {P.sql(cond)}", subtype="join", inputs=ins,
                            extra={"join_type": jtype})
            self.plan_selection[int(p.hashCode())] = sel
            rowdeps = rowdeps + [sel]
        return _Frame(rowdeps=rowdeps)

    def _v_Aggregate(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        groups = P.seq(p.groupingExpressions())
        ginfo = P.inspect_exprs(groups)
        group_ins = [(n, "group", "group_by") for n in self.lookup(ginfo.attrs)]
        group_sql = ", ".join(P.sql(g) for g in groups)
        sel_ins = self.selection_inputs(frame.rowdeps)
        for e in P.seq(p.aggregateExpressions()):
            if P.cls(e) == "AttributeReference":
                continue
            expr = e.child() if P.cls(e) == "Alias" else e
            fn = P.aggregate_function(expr)
            if fn is None:  # a grouping expression carried to the output
                self._named(e, stage, frame)
                continue
            info = P.inspect_expr(expr)
            is_udf = bool(info.classes & P.UDF_CLASSES)
            ins = self.exprs_inputs(info, stage, "udf" if is_udf else "direct", "aggregation")
            # one edge per pair: a column both summed and grouped by (``sum(addr.bonus)`` by
            # ``addr.region``) flows into the value, so its data edge is not replaced by a key's
            summed = {n for n, _, _ in ins}
            ratio = P.ratio_of_sums(expr) if fn == "other" else None
            extra = None
            if ratio is not None:  # SUM(a) / COUNT(*): its parts are sums over rows, nodes of their own
                parts = []
                for part, side in zip(ratio[1:], ("numerator", "denominator")):
                    pinfo = P.inspect_expr(part)
                    pins = self.exprs_inputs(pinfo, stage, "direct", "aggregation")
                    parts.append(self.node(
                        kind="aggregate", column=f"{P.name(e)}__{side}", stage=stage, dtype=P.dtype(part),
                        expr=P.sql(part), subtype=P.aggregate_function(part) or "sum",
                        inputs=pins + [g for g in group_ins if g[0] not in {n for n, _, _ in pins}] + sel_ins,
                        fp_parts=("group by", group_sql, *pinfo.udf_code)))
                extra = {"ratio": [parts[0], parts[1], ratio[0]]}
            self.env[P.expr_id(e)] = self.node(
                kind="aggregate", column=P.name(e), stage=stage, dtype=P.dtype(e), expr=P.sql(expr),
                subtype=fn, inputs=ins + [g for g in group_ins if g[0] not in summed] + sel_ins,
                fp_parts=("group by", group_sql, *info.udf_code), extra=extra)
        return _Frame(rowdeps=frame.rowdeps)  # which groups exist still depends on the selections below

    def _v_Window(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        keys = P.inspect_exprs(P.seq(p.partitionSpec()) + P.seq(p.orderSpec()))
        key_ins = [(n, "window", "window") for n in self.lookup(keys.attrs)]
        for e in P.seq(p.windowExpressions()):
            self._named(e, stage, frame, extra_inputs=key_ins + self.selection_inputs(frame.rowdeps),
                        subtype="window")
        return frame

    def _v_Union(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        kids = P.children(p)
        frames = [self.visit(ch, stage=stage, alias=None) for ch in kids]
        outs = [P.output(ch) for ch in kids]
        for i, attr in enumerate(P.output(p)):
            ins = [(n, "direct", "identity") for o in outs for n in self.lookup([o[i]])]
            if P.expr_id(attr) in self.env:  # the first child's attribute: a node below this union
                self.shadowed.setdefault(P.expr_id(attr), []).append(self.env[P.expr_id(attr)])
            self.env[P.expr_id(attr)] = self.node(kind="stage", column=P.name(attr), stage=stage,
                                                  dtype=P.dtype(attr), expr="union", subtype="union", inputs=ins)
        return _merge(frames)

    def _dedup(self, p: JObject, stage: str, keys: list[JObject]) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        ins = [(n, "filter", "filter") for n in self.lookup(keys)]
        sel = self.node(kind="selection", column="dedup", stage=stage, dtype="boolean",
                        expr="distinct " + ", ".join(P.name(k) for k in keys), subtype="dedup", inputs=ins)
        return _Frame(rowdeps=frame.rowdeps + [sel])

    def _v_Distinct(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        return self._dedup(p, stage, P.output(p))

    def _v_Deduplicate(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        return self._dedup(p, stage, P.seq(p.keys()))

    _v_DeduplicateWithinWatermark = _v_Deduplicate

    def _v_GlobalLimit(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        ins = [(n, "filter", "sort") for n in frame.sort_keys]
        sel = self.node(kind="selection", column="limit", stage=stage, dtype="boolean",
                        expr=f"limit {P.sql(p.limitExpr())}", subtype="limit", inputs=ins)
        return _Frame(rowdeps=frame.rowdeps + [sel])

    def _v_Generate(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        gen = p.generator()
        info = P.inspect_expr(gen)
        ins = self.exprs_inputs(info, stage, "direct", "transformation")
        for a in P.seq(p.generatorOutput()):
            self.env[P.expr_id(a)] = self.node(kind="stage", column=P.name(a), stage=stage, dtype=P.dtype(a),
                                               expr=P.sql(gen), subtype="generate", inputs=ins)
        return frame

    def _v_Expand(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        frame = self.visit(p.child(), stage=stage, alias=None)
        projections = [P.seq(row) for row in P.seq(p.projections())]
        for i, attr in enumerate(P.output(p)):
            column = [row[i] for row in projections]
            if all(P.cls(e) == "AttributeReference" for e in column) and \
                    len({P.expr_id(e) for e in column}) == 1 and P.expr_id(column[0]) in self.env:
                self.env[P.expr_id(attr)] = self.env[P.expr_id(column[0])]
                continue
            info = P.inspect_exprs(column)
            ins = [(n, "direct", "transformation") for n in self.lookup(info.attrs)]
            self.env[P.expr_id(attr)] = self.node(kind="stage", column=P.name(attr), stage=stage,
                                                  dtype=P.dtype(attr), expr=" | ".join(P.sql(e) for e in column),
                                                  subtype="expand", inputs=ins)
        return frame

    def _v_WithCTE(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        for d in P.seq(p.cteDefs()):
            frame = self.visit(d.child(), stage=stage, alias=None)
            cid = int(d.id())
            self.cte[cid] = [self.env.get(P.expr_id(a)) for a in P.output(d.child())]
            self.cte_rowdeps[cid] = frame.rowdeps
        return self.visit(p.plan(), stage=stage, alias=alias)

    def _v_CTERelationRef(self, p: JObject, stage: str, alias: str | None) -> _Frame:
        cid = int(p.cteId())
        for attr, node in zip(P.output(p), self.cte.get(cid, [])):
            if node is not None:
                self.env[P.expr_id(attr)] = node
        return _Frame(rowdeps=list(self.cte_rowdeps.get(cid, [])))

    def _generic(self, p: JObject, stage: str) -> _Frame:
        """An operator we do not model: every output column it creates depends on every column it reads.

        Python operators (mapInPandas, applyInPandas ...) are opaque code, like UDFs.
        """
        c = P.cls(p)
        frames = self._children(p, stage)
        frame = _merge(frames)
        info = P.inspect_exprs(P.expressions(p))
        reads = self.lookup(info.attrs) or [n for ch in P.children(p) for n in self.lookup(P.output(ch))]
        opaque = any(w in c for w in ("Python", "Pandas", "Arrow", "MapPartitions", "MapElements", "Map"))
        edge = "udf" if opaque else "direct"
        new = [a for a in P.output(p) if P.expr_id(a) not in self.env]
        for a in new:
            self.env[P.expr_id(a)] = self.node(kind="stage", column=P.name(a), stage=stage, dtype=P.dtype(a),
                                               expr=f"{c}", subtype="udf" if opaque else "transformation",
                                               inputs=[(n, edge, "transformation") for n in reads])
        if new:
            self.b.graph.graph["warnings"].append(f"operator {c} modelled as opaque in output {self.output}")
        return frame

    # ------------------------------------------------------------------------------ naming
    def finish(self, out_attrs: list[JObject], rowdeps: list[Any]) -> list[str]:
        """Give temp nodes their final ids and add them to the run's graph; returns the output's column ids."""
        G = self.b.graph
        names: dict[int, str] = {}
        taken = set(G.nodes)
        out_ids: list[str] = []
        identity: list[tuple[str, Any, str, str]] = []
        for a in out_attrs:
            col = P.name(a)
            oid = f"{self.output}.{col}"
            key = self.env.get(P.expr_id(a))
            if isinstance(key, int) and key not in names and oid not in taken:
                names[key] = oid
                taken.add(oid)
            else:
                if oid in taken:  # the same column name twice in one output
                    k = 2
                    while f"{oid}@{k}" in taken:
                        k += 1
                    oid = f"{oid}@{k}"
                taken.add(oid)
                identity.append((oid, key, col, P.dtype(a)))
            out_ids.append(oid)
        counters: dict[tuple[str, str], int] = {}
        # later nodes first: of two columns of one name in a stage the downstream one (a union of two
        # branches' columns, say) keeps the plain id, so removing an upstream one renames nothing below
        order = [t for t in self.pending if self.pending[t].kind == "selection"] + \
            [t for t in reversed(self.pending) if self.pending[t].kind != "selection"]
        for tmp in order:
            pend = self.pending[tmp]
            if tmp in names:
                continue
            if pend.kind == "selection":
                k = counters.get((pend.stage, pend.column), 0) + 1
                while f"{pend.stage}.{pend.column}{k}" in taken:
                    k += 1
                counters[(pend.stage, pend.column)] = k
                nid = f"{pend.stage}.{pend.column}{k}"
            else:
                nid, k = f"{pend.stage}.{pend.column}", 1
                while nid in taken:
                    k += 1
                    nid = f"{pend.stage}.{pend.column}@{k}"
            names[tmp] = nid
            taken.add(nid)

        self.names = names
        final = self.final

        for tmp, pend in self.pending.items():
            nid = names[tmp]
            extra = {k: v for k, v in pend.extra.items() if k != "_key"}
            if "ratio" in extra:  # its parts' node ids (``_v_Aggregate``)
                extra["ratio"] = [final(extra["ratio"][0]), final(extra["ratio"][1]), extra["ratio"][2]]
            if "linear" in extra:  # its aggregates' node ids (``linear``)
                extra["linear"] = [[final(n), k] for n, k in extra["linear"]]
            G.add_node(nid, kind=pend.kind, stage=pend.stage, column=pend.column if pend.kind != "selection"
                       else nid.split(".", 1)[1], dtype=pend.dtype, fingerprint=pend.fingerprint,
                       subtype=pend.subtype, expr=pend.expr, **extra)
        for src, dst, kind, subtype in self.edges:
            s, d = final(src), final(dst)
            if s != d:
                G.add_edge(s, d, kind=kind, subtype=subtype)
        for tmp, pend in self.pending.items():  # cons keys with final input ids, for later outputs
            key = pend.extra["_key"]
            ins = tuple(sorted({(final(s), k) for s, d, k, _ in self.edges if d == tmp}))
            self.b._cons.setdefault(key[:4] + (ins,), names[tmp])
        for oid, key, col, dt in identity:
            src = final(key) if key is not None else None
            G.add_node(oid, kind="stage", stage=self.output, column=col, dtype=dt, subtype="identity",
                       expr=src or col, fingerprint=P.fingerprint("identity", src or col))
            if src is not None:
                G.add_edge(src, oid, kind="direct", subtype="identity")
        gate_outputs(G, [final(sel) for sel in rowdeps], out_ids)
        for oid in out_ids:
            G.nodes[oid]["output"] = self.output
            G.nodes[oid]["column"] = oid.split(".", 1)[1].split("@")[0]
        return out_ids


    def final(self, key: Any) -> str:
        return self.names[key] if isinstance(key, int) else key


def _merge(frames: list[_Frame]) -> _Frame:
    out = _Frame()
    for f in frames:
        out.rowdeps.extend(x for x in f.rowdeps if x not in out.rowdeps)
        out.sort_keys.extend(f.sort_keys)
    return out


def gate_outputs(G: nx.DiGraph, selections: list[str], out_ids: list[str]) -> None:
    """A row-level output's rows exist only where its selections hold: an edge from each selection to
    each output column, except to a column the selection itself reads (``filter(x > 0)`` over a derived
    ``x``, HAVING over an aggregate): that column's node is upstream of the selection, and the edge
    would make the graph cyclic. Such a column's selection is found through ``gating_selections``."""
    for sel in selections:
        upstream = nx.ancestors(G, sel)
        kind = SELECTION_EDGE[G.nodes[sel]["subtype"]]
        for oid in out_ids:
            if oid != sel and oid not in upstream:
                G.add_edge(sel, oid, kind=kind, subtype=G.nodes[sel]["subtype"])


def gating_selections(G: nx.DiGraph, column: str) -> set[str]:
    """The selections that decide which rows of ``column``'s output exist, with their ancestors: what
    ``nx.ancestors`` misses for an output column that a selection of its own output reads."""
    output = G.nodes[column].get("output") if column in G else None
    if output is None:
        return set()
    cols = ((G.graph.get("outputs") or {}).get(output) or {}).get("columns") or []
    sels = {p for c in cols if c in G for p in G.predecessors(c) if G.nodes[p].get("kind") == "selection"}
    return sels.union(*(nx.ancestors(G, s) for s in sels)) - {column}


def drop_cycles(G: nx.DiGraph) -> nx.DiGraph:
    """Graphs stored before ``gate_outputs`` could hold a cycle selection -> output column -> selection;
    removing the selection's edge restores the DAG every reader expects (it is what ``gate_outputs``
    would not have added)."""
    while True:
        try:
            cycle = nx.find_cycle(G)
        except nx.NetworkXNoCycle:
            return G
        closing = [(u, v) for u, v, *_ in cycle if G.nodes[u].get("kind") == "selection"
                   and G.nodes[v].get("output") is not None]
        if not closing:
            return G
        G.remove_edge(*closing[0])


def upstream_sources(G: nx.DiGraph, node: str) -> dict[str, str]:
    """Every source column upstream of ``node``: ``direct`` if a path of only direct edges reaches it,
    else ``indirect`` (it matters only through selections, group, window or join keys)."""
    direct_graph = nx.DiGraph([(u, v) for u, v, k in G.edges(data="kind") if k in ("direct", "udf")])
    direct_anc = nx.ancestors(direct_graph, node) if node in direct_graph else set()
    return {n: ("direct" if n in direct_anc else "indirect")
            for n in nx.ancestors(G, node) if G.nodes[n].get("kind") == "source"}
