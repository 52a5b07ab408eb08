"""Compare two stored runs: load what attribution needs, check the runs are comparable, attribute.

Why a module apart from ``attribution``: attribution works on pandas tables and knows nothing of
stores; this layer owns the user-facing checks (unknown runs, failed runs, runs without samples,
unrelated jobs, graphs that differ) so that every entry point (Python, CLI, spark-submit job,
notebook) gives the same clear errors.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable

import networkx as nx
import numpy as np
import pandas as pd
from scipy.stats import norm

from .attribution import (
    AttributionConfig,
    Exact,
    RunSamples,
    SegmentSamples,
    _bool,
    _ExprError,
    _find_segment,
    _to_array,
    attribute_samples,
    compile_expression,
    fit_model,
)
from .chain import parts as chain_parts
from .errors import SparkCausalError, UnknownOutputError
from .lineage import gating_selections
from .ratio import attribute_linear, attribute_ratio, linear_of, ratio_of
from .result import Attribution, AttributionItem, _fmt
from .sampling import WEIGHT
from .store import Store, file_name

NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")


def _refuse_failed(run: str, meta: dict) -> None:
    if meta.get("status") == "failed":
        raise SparkCausalError(f"run {run!r} failed ({meta.get('error') or 'no reason recorded'})",
                               hint="attribute between runs whose job succeeded; recapture it with --replace")


def load_samples(store: Store, run: str) -> RunSamples:
    """A run's graph and unit samples, refused clearly when the run cannot be compared."""
    meta = store.meta(run)
    _refuse_failed(run, meta)
    if meta.get("samples") != "present":
        failed = [e for e in meta.get("capture_errors") or [] if "samples of output" in e]
        raise SparkCausalError(f"run {run!r} has no unit samples (samples: {meta.get('samples')})" +
                               (f": capture failed while sampling ({failed[0][:300]})" if failed else ""),
                               hint="capture it again with --replace" if failed else
                               "capture it again without --no-samples and with --sample-size > 0")
    graph = store.graph(run)
    segments = {}
    for desc in graph.graph.get("segments", []):
        name = f"samples/{file_name(desc['id'])}.parquet"
        segments[desc["id"]] = SegmentSamples(description=desc, table=store.read_parquet(run, name))
    return RunSamples(run=run, graph=graph, segments=segments)


def graph_differences(baseline: nx.DiGraph, current: nx.DiGraph) -> list[str]:
    """Nodes added or removed between two runs' graphs, as readable warnings."""
    added = sorted(set(current) - set(baseline))
    removed = sorted(set(baseline) - set(current))
    out = []
    if added:
        out.append(f"nodes only in the current run: {', '.join(added[:10])}" + (" ..." if len(added) > 10 else ""))
    if removed:
        out.append(f"nodes only in the baseline run: {', '.join(removed[:10])}" + (" ..." if len(removed) > 10 else ""))
    return out


def load_pair(store: str | Store, baseline: str, current: str, target: str, agg: str = "sum", *,
              spark: Any = None) -> tuple[RunSamples, RunSamples]:
    """Both runs' samples, after every check that makes them comparable for ``agg(target)``."""
    s = store if isinstance(store, Store) else Store(str(store), spark=spark)
    if baseline == current:
        raise SparkCausalError(f"baseline and current are the same run {baseline!r}",
                               hint="pass two different run ids (see: spark-causal runs --store ...)")
    base_meta, cur_meta = s.meta(baseline), s.meta(current)
    _refuse_failed(baseline, base_meta)  # a failed job wrote nothing: say why, not that the jobs differ
    _refuse_failed(current, cur_meta)
    if not set(base_meta.get("outputs", [])) & set(cur_meta.get("outputs", [])):
        raise SparkCausalError(
            f"runs {baseline!r} and {current!r} share no output: they look like different jobs",
            hint="compare two runs of the same job")
    b, c = load_samples(s, baseline), load_samples(s, current)
    node = c.graph.nodes.get(target)
    # an aggregate the output does not write (a ratio's part, revenue of ``revenue / 1000 AS revenue_k``)
    part = any(target in (d.get("aggregates") or {}) for d in c.graph.graph.get("segments", []))
    if node is None or not (node.get("output") or part):
        outs = [n for n, d in c.graph.nodes(data=True) if d.get("output")]
        raise UnknownOutputError(f"unknown target {target!r} in run {current!r}",
                                 hint=f"use an output column id, e.g. {', '.join(outs[:8])}")
    if target not in b.graph:
        raise UnknownOutputError(f"target {target!r} is not in the baseline run {baseline!r}",
                                 hint="the job's outputs changed between the runs; pick a column both runs have")
    out = node.get("output")
    for run, meta in ((baseline, base_meta), (current, cur_meta)):
        # a segment whose sampled pass raised is missing from the run: say so, not that the runs differ
        failed = [e for e in meta.get("capture_errors") or []
                  if e.startswith((f"samples of output {out!r}", f"statistics or samples of output {out!r}"))]
        if failed:
            raise SparkCausalError(f"run {run!r} lacks samples of output {out!r}: capture failed while "
                                   f"sampling it ({failed[0][:300]})",
                                   hint="the job's own output is intact; capture the run again with --replace "
                                        "(--strict fails the job with the whole error)")
    dtype = str(node.get("dtype", ""))
    if agg != "count" and not (dtype in NUMERIC or dtype.startswith("decimal")):
        raise SparkCausalError(f"target {target!r} is not numeric (type {dtype})",
                               hint="choose a numeric output column (--agg count counts the units it is computed from)")
    return b, c


def attribute(store: str | Store, baseline: str, current: str, target: str, agg: str = "sum",
              where: str | None = None, *, spark: Any = None, config: AttributionConfig | None = None) -> Attribution:
    """Why did ``agg(target)`` move from run ``baseline`` to run ``current``?

    >>> res = spark_causal.attribute("./store", "2026-11-23", "2026-11-24", "revenue.revenue")  # doctest: +SKIP
    >>> print(res.summary())                                                                   # doctest: +SKIP

    ``target`` is an output column id (``<output>.<column>``); ``where`` a SQL predicate on the
    output's columns (``"country = 'DE'"``). Nothing is written into the runs read.
    """
    s = store if isinstance(store, Store) else Store(str(store), spark=spark)
    b, c = load_pair(s, baseline, current, target, agg, spark=spark)
    held = {a: meta for d in c.graph.graph.get("segments", []) for a, meta in (d.get("aggregates") or {}).items()}
    ratio = ratio_of(c.graph, target, held) if agg != "count" else None
    if ratio is not None:  # one aggregate over another, per row: their sums' ratio, from theirs
        try:
            return attribute_ratio(ratio, target, lambda node: attribute(s, baseline, current, node, "sum", where,
                                                                         config=config),
                                   (config or AttributionConfig()).alpha)
        except ZeroDivisionError as exc:
            raise SparkCausalError(f"cannot attribute {target}: {exc}",
                                   hint=f"attribute {ratio.numerator} or {ratio.denominator} instead") from None
    lin = linear_of(c.graph, target, held) if agg != "count" else None
    if lin is not None:  # revenue / 1000, revenue - cost after the aggregation: from its parts'
        how = "mean" if lin.mean else "sum"
        result = attribute_linear(lin, target, lambda node: attribute(s, baseline, current, node, how, where,
                                                                      config=config),
                                  (config or AttributionConfig()).alpha)
        # a slice of a sum: the rows the output wrote (the parts it does not write have none)
        values = _slice_values(s, (baseline, current), c.graph.nodes[target].get("output") or "", target, where) \
            if where is not None and not lin.mean else None
        return _with_values(result, values) if values else result
    fns = _aggregate_fns(c, target)
    averaged = agg == "sum" and bool(fns) and fns <= {"avg", "mean", "average"}
    if averaged:  # a total of averages is no figure the job wrote: its overall average is the metric
        agg = "mean"
    stats = _run_stats(s, baseline, current)
    exact, values, notes = _exact_of(s, (baseline, current), stats, (b, c), target, agg, where)
    result = attribute_samples(c.graph, b, c, target, agg=agg, where=where, config=config, exact=exact)
    if averaged:
        result = dataclasses.replace(result, warnings=[f"{target} is an avg() aggregate: attributed as its overall "
                                                       "average (agg='mean'), not a sum"] + list(result.warnings))
    # the segments below are judged by their exact figures too (a read-back weekly sum of daily ones
    # whose 168 rows cannot show what the daily rows' own statistics do)
    below = {"exact": lambda node, how: _exact_of(s, (baseline, current), stats, (b, c), node, how, None)[0]}
    result = drill_down(result, b, c, config=config, _cache=below)
    if below.get(("se_below", target)) is not None:
        # (a ratio of such sums is judged by it: a read-back output's rows differ ~25x more between
        # days and countries than a day's sum does between runs)
        result = dataclasses.replace(result, details={**(result.details or {}),
                                                      "se_below": below[("se_below", target)]})
    if values:
        result = _with_values(result, values)
    if notes:
        result = dataclasses.replace(result, warnings=list(result.warnings) + notes)
    result = _above_the_aggregation(result, b.graph, c.graph, target, config or AttributionConfig())
    if stats is not None:
        result = _through_unions(result, stats, c.graph)
        result = _through_fanout(result, stats, c.graph)
        result = _through_filtered_joins(result, stats, b.graph, c.graph)
        result = _within_the_units(result, stats, b.graph, c.graph)
        result = _through_lookups(result, stats, b.graph, c.graph)
    result = _named_at_sources(result, c.graph)
    extra = graph_differences(b.graph, c.graph)
    return dataclasses.replace(result, warnings=list(result.warnings) + extra) if extra else result


def _named_at_sources(result: Attribution, graph: nx.DiGraph) -> Attribution:
    """Items of stage columns computed from one source column alone (``CAST(fee_rate AS DOUBLE)`` in a
    ``selectExpr`` over a CSV read, a union branch's ``wh / 1000``, ``item.unit_price`` of
    ``explode(items) AS item``, through each column between) named as that source column, where the
    data changed: the stage column is where the model met the values (a union's rows, a dedup's rows
    are its units), the source is what a user looks for. A column whose code changed on the way keeps
    the item."""
    changed = {cc.get("node") for cc in result.code_changes}

    def source_of(node: str, copies: bool) -> str | None:
        for _ in range(len(graph)):
            d = graph.nodes.get(node) or {}
            if d.get("kind") == "source":
                return node
            inputs = [p for p in graph.predecessors(node) if graph.nodes[p].get("kind") != "selection"]
            if d.get("kind") != "stage" or node in changed or len(inputs) != 1 or not (
                    (not copies and d.get("subtype") in ("transformation", "udf", "generate"))
                    or _COPY.match(str(d.get("expr") or ""))):
                return None
            node = inputs[0]
        return None

    merged: dict[str, AttributionItem] = {}
    renamed = False
    for a in result.attributions:
        # (an item with no share is a mechanism the model tested, listed under its own name unless it
        # copies its source: a UDF of a temperature that did not change is the UDF's listing)
        src_id = source_of(a.node, copies=not a.contribution) \
            if (graph.nodes.get(a.node) or {}).get("kind") == "stage" else None
        if src_id is not None:
            src = graph.nodes[src_id]
            a = dataclasses.replace(a, node=src_id, kind="source", table=src.get("table"), stage=None,
                                    column=src.get("column") or src_id.rsplit(".", 1)[-1])
            renamed = True
        _merge(merged, a)
    return dataclasses.replace(result, attributions=_ranked(list(merged.values()))) if renamed else result


def _above_the_aggregation(result: Attribution, baseline: nx.DiGraph, graph: nx.DiGraph, target: str,
                           cfg: AttributionConfig) -> Attribution:
    """The groups a selection above the segment's aggregation dropped (HAVING, a LIMIT over sorted
    groups), as that selection's item.

    Units are the rows below the aggregation, so the samples sum every group; the exact values are the
    groups the selection kept. What the exact change adds to the samples' estimated change is what the
    selection dropped in one run and not the other: its contribution when its code changed. With its
    code unchanged, groups crossed its threshold because of what changed below: that part is scaled into
    the items the samples name, or, when they name none, is the selection's item beyond the estimate's
    sampling error."""
    est = (result.details or {}).get("estimated")
    above = _selected_above(graph, target, _segment_of(result, graph))
    if not est or not above:
        return result
    dropped = result.change - float(est["change"])
    se = float((result.details or {}).get("se_change") or 0.0)
    z = float(norm.ppf(1 - cfg.alpha / 2))
    changed = [s for s in above if _recoded(baseline, graph, s)]
    # rounding of two sums of the same rows is no dropped group (a threshold that drops none in either run)
    scale = max(abs(result.baseline_value), abs(result.current_value), abs(float(est["baseline"])), 1.0)
    if abs(dropped) <= 1e-9 * scale or (not changed and abs(dropped) <= z * se):
        return result
    explained = sum(a.contribution for a in result.attributions)
    if not changed and explained and (explained + dropped) / explained > 0:
        # an unchanged threshold only passes on what changed below (a drift lifts more customers over
        # it, or lifts other products into the top 10): the groups it kept or dropped are theirs
        f = (explained + dropped) / explained
        items = _scaled(result.attributions, f)
        note = (f"{above[0]} selects among the aggregated groups with unchanged code: the groups it kept or "
                f"dropped because of the changes below ({dropped:+,.6g}) are added to those changes")
        return dataclasses.replace(result, attributions=items, unexplained=result.unexplained - dropped,
                                   warnings=list(result.warnings) + [note])
    node = (changed or above)[0]
    d = graph.nodes[node]
    item = AttributionItem(node=node, kind="selection", table=None, stage=d.get("stage"),
                           column=d.get("column") or node.rsplit(".", 1)[-1], contribution=dropped,
                           ci_low=dropped - z * se, ci_high=dropped + z * se, mechanism_changed=bool(changed),
                           p_value=0.0 if changed else float(2 * norm.sf(abs(dropped) / se)) if se else 0.0)
    items = _ranked([a for a in result.attributions if a.node != node] + [item])
    note = (f"{node} selects among the aggregated groups, which the samples cannot see: it is sized by what "
            f"the exact change adds to the samples' estimate ({dropped:+,.6g})")
    return dataclasses.replace(result, attributions=items, unexplained=result.unexplained - dropped,
                               significant=result.significant or bool(changed),
                               warnings=list(result.warnings) + [note])


def _selected_above(graph: nx.DiGraph, target: str, desc: dict | None) -> list[str]:
    """The selections above the segment's aggregation that decide which of its groups ``target``'s
    output keeps (HAVING, a LIMIT over sorted groups)."""
    if desc is None or target not in graph:
        return []
    aggregates = set(desc.get("aggregates") or {})
    return sorted(s for s in gating_selections(graph, target)
                  if graph.nodes[s].get("kind") == "selection" and s not in (desc.get("selections") or [])
                  and aggregates & nx.ancestors(graph, s))


def _run_stats(store: Store, baseline: str, current: str) -> tuple[Any, Any] | None:
    """Both runs' statistics indexed by node, read once for what uses them; None when a run has none."""
    try:
        return tuple(store.read_parquet(run, "stats.parquet").drop_duplicates("node").set_index("node")
                     for run in (baseline, current))
    except Exception:  # noqa: BLE001 - an old or partial run: the samples' estimates stand
        return None


def _aggregate_fns(c: RunSamples, target: str) -> set[str]:
    """The functions (sum, count, avg ...) the run's segments aggregate ``target`` by (none for a
    column of a row-level output)."""
    return {str(meta.get("fn", "")).lower() for d in c.graph.graph.get("segments", [])
            for a, meta in (d.get("aggregates") or {}).items() if a == target}


def _exact_of(store: Store, runs: tuple[str, str], stats: tuple[Any, Any] | None,
              pair: tuple[RunSamples, RunSamples], target: str, agg: str,
              where: str | None) -> tuple[Exact | None, list[float] | None, list[str]]:
    """(the exact figures ``agg(target)`` is judged by, or None; the values the job wrote, or None;
    notes on them). What the samples sum is the column's sum; so is what they count of a count
    aggregate; an ``avg()``'s overall average is its input column's mean over the rows it took in."""
    c = pair[1]
    fns = _aggregate_fns(c, target)
    summed = agg == "sum" and fns <= {"sum", "count"} or agg == "count" and fns == {"count"}
    values, notes = None, []
    if stats is not None and where is None and summed:
        values, notes = _exact_pair(stats, target)
        if values is None and not notes:  # a ratio's part, which no column holds
            values = _ratio_part_totals(pair, target)
    elif where is not None and summed:
        values = _slice_values(store, runs, c.graph.nodes[target].get("output") or target.rsplit(".", 1)[0],
                               target, where)
    elif where is None and agg == "mean" and fns == {"avg"}:
        values = _exact_mean(pair, target)
    # groups a HAVING or LIMIT keeps are no sum of the units: a group crossing it by chance moves the
    # exact values by its whole total, which is the selection's to tell (``_above_the_aggregation``)
    found = _find_segment(c, target, c.graph.nodes[target].get("output") if target in c.graph else None)
    desc = found[1].description if found else None
    judged = values is not None and (not _selected_above(c.graph, target, desc) or (
        stats is not None and desc is not None and _kept_whole(stats, desc, target, pair)))
    exact = Exact(values[0], values[1], _exact_shifts(*stats) if stats is not None else {}) if judged else None
    return exact, values, notes


def _kept_whole(stats: tuple[Any, Any], desc: dict, target: str,
                pair: tuple[RunSamples, RunSamples] | None = None) -> bool:
    """Whether a HAVING (or LIMIT) above the aggregation kept every row of ``target``'s sum in both
    runs: the output column's exact total is its input's over the rows below (``HAVING COUNT(*) >= 5``
    of groups of a thousand sessions drops none). Equal totals of floating sums, or a count equal to
    the rows of a column the segment measured, tell it; then the exact figures judge the change."""
    meta = (desc.get("aggregates") or {}).get(target) or {}
    fn, inp = str(meta.get("fn", "")).lower(), meta.get("input")
    if fn == "avg":  # an average over the rows a COUNT(*) beside it kept whole, or counts as many
        counted = [t for t, m in (desc.get("aggregates") or {}).items() if str(m.get("fn", "")).lower() == "count"
                   and m.get("input") is None and not m.get("arg")]
        averaged = [_probed(r.graph, target, "averaged_inputs") for r in pair] if pair else [None, None]
        return any(_kept_whole(stats, desc, t) or (
            all(averaged) and (totals := _exact_pair(stats, t)[0]) is not None
            and all(abs(n[0] - x) < 0.5 for n, x in zip(averaged, totals))) for t in counted)
    if fn not in ("sum", "count") or (fn == "sum" and inp is None) or meta.get("arg"):
        return False
    out, _ = _exact_pair(stats, target)
    if out is None:
        return False
    for total, run_stats in zip(out, stats):
        if inp is not None:
            if inp not in run_stats.index:
                return False
            r = run_stats.loc[inp]
            valued = float(r["count"]) - float(r["nulls"])
            below = {valued} if fn == "count" else {float(r["mean"]) * valued if valued else 0.0}
        else:  # COUNT(*): the rows of any column the segment measured where it aggregates
            below = {float(run_stats.loc[n, "count"]) for n in desc.get("nodes") or [] if n in run_stats.index}
        if not any(abs(x - total) <= 1e-9 * max(abs(total), 1.0) for x in below if x == x):
            return False
    return True


def _exact_mean(pair: tuple[RunSamples, RunSamples], target: str) -> list[float] | None:
    """The overall average of the ``avg()`` aggregate ``target`` in both runs: its argument's count and
    sum over the rows the Aggregate took in (``averaged_inputs`` in the run's graph, a probe right below
    it); None when a run has none (an average of a UDF's result, an older run) or no non-NULL value."""
    means = []
    for r in pair:
        n, total = _probed(r.graph, target, "averaged_inputs") or (0, 0.0)
        if not n or not math.isfinite(total):
            return None
        means.append(total / n)
    return means


def _probed(graph: nx.DiGraph, node: str, kind: str) -> list[float] | None:
    """The probe's figures (``averaged_inputs``, ``ratio_totals``) of aggregate ``node``, kept with the
    output whose plan aggregates it (which may write only a column computed from it)."""
    output = next((d.get("output") for d in graph.graph.get("segments", []) if node in (d.get("aggregates") or {})),
                  None)
    return (((graph.graph.get("outputs") or {}).get(output) or {}).get(kind) or {}).get(node)


def _ratio_part_totals(pair: tuple[RunSamples, RunSamples], target: str) -> list[float] | None:
    """Both runs' totals of ``target``, a part (numerator or denominator) of a ratio of two sums in one
    expression, which no column holds: its probe's (``ratio_totals``); None without them."""
    totals = []
    for r in pair:
        ratio, side = next(((n, d["ratio"].index(target)) for n, d in r.graph.nodes(data=True)
                            if target in (d.get("ratio") or [])[:2]), (None, None))
        found = _probed(r.graph, ratio, "ratio_totals") if ratio is not None else None
        if not found or not math.isfinite(found[side]):
            return None
        totals.append(found[side])
    return totals


def _exact_pair(stats: tuple[Any, Any], target: str) -> tuple[list[float] | None, list[str]]:
    """The metric's values as the job wrote them (the output column's exact statistics: mean x
    non-NULL count), with notes; None when a run has no statistics of it, or a NaN or infinity there
    (Spark's sum over a NaN input is NaN: the samples' finite estimate stands, said so)."""
    exact, notes = [], []
    for name, run_stats in zip(("baseline", "current"), stats):
        if target not in run_stats.index:
            return None, []
        r = run_stats.loc[target]
        valued = int(r["count"]) - int(r["nulls"])
        if not valued and int(r["count"]):
            notes.append(f"{target} is NULL in every row of the {name} run's output: its sum there is taken as 0")
        if valued and (r["mean"] is None or r["mean"] != r["mean"] or not math.isfinite(float(r["mean"]))):
            return None, [f"{target} is NaN or infinite in the {name} run's output (a NaN or infinite input "
                          "value): the figures are the samples' estimates over finite values"]
        exact.append(float(r["mean"]) * valued if valued else 0.0)
    return exact, notes


def _slice_values(store: Store, runs: tuple[str, str], output: str, target: str, where: str) -> list[float] | None:
    """The values of a ``where`` slice summed over the rows of ``output`` as written, which capture
    keeps for a small output (``outputs/<name>.parquet``); None without them. A name in ``where`` is
    a column of the output (which may hold a dot), else its last dotted part (``report.country``)."""
    exact = []
    for run in runs:
        try:
            rows = store.read_parquet(run, f"outputs/{file_name(output)}.parquet")
        except SparkCausalError:  # none kept (a large output, an older run): the estimates stand
            return None
        env = {c: _to_array(rows[c]) for c in rows.columns}

        def resolve(name: str) -> str:
            node = f"{output}.{name}" if f"{output}.{name}" in env else f"{output}.{name.split('.')[-1]}"
            if node not in env:
                raise _ExprError(name)
            return node
        try:
            keep, _ = compile_expression(where, resolve, {})
            mask = _bool(keep(env, len(rows)), len(rows)) == 1
        except (_ExprError, RecursionError):
            return None
        if target not in env:
            return None
        exact.append(float(np.nansum(np.asarray(env[target], float)[mask])))
    return exact


_FEW_ROWS = 50


def _exact_shifts(sb: Any, sc: Any) -> dict[str, float]:
    """How far each node's exact mean and NULL share moved between the runs, in standard errors of
    whole runs of independent rows (the larger of the two): statistics over every row have no
    sampling noise, so a drift of 1.5% over 300,000 rows is tens of errors while the samples' test
    of it is at chance."""
    both = sb.index.intersection(sc.index)
    b, c = sb.loc[both], sc.loc[both]
    nb, nc = b["count"].astype(float), c["count"].astype(float)
    vb, vc = nb - b["nulls"].astype(float), nc - c["nulls"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mb, mc = pd.to_numeric(b["mean"], errors="coerce"), pd.to_numeric(c["mean"], errors="coerce")
        sdb, sdc = pd.to_numeric(b["std"], errors="coerce"), pd.to_numeric(c["std"], errors="coerce")
        z_mean = (mc - mb).abs() / np.sqrt(sdb ** 2 / vb + sdc ** 2 / vc)
        pb, pc = b["nulls"].astype(float) / nb, c["nulls"].astype(float) / nc
        pool = (b["nulls"].astype(float) + c["nulls"].astype(float)) / (nb + nc)
        z_null = (pc - pb).abs() / np.sqrt(pool * (1 - pool) * (1 / nb + 1 / nc))
    z = pd.concat([z_mean, z_null], axis=1).replace([np.inf, -np.inf], np.nan).max(axis=1).fillna(0.0)
    z[(vb < _FEW_ROWS) | (vc < _FEW_ROWS)] = 0.0  # a normal z of a handful of rows is no test
    return {str(k): float(v) for k, v in z.items()}


def _with_values(result: Attribution, exact: list[float]) -> Attribution:
    """``result`` with the exact baseline and current values; the contributions stay the samples', and
    what they leave of the exact change is unexplained."""
    change = exact[1] - exact[0]
    explained = result.change - result.unexplained
    details = dict(result.details or {})
    details["estimated"] = {"baseline": result.baseline_value, "current": result.current_value,
                            "change": result.change}
    return dataclasses.replace(result, baseline_value=exact[0], current_value=exact[1], change=change,
                               unexplained=change - explained, details=details)


# ============================================================================ through unions
def _through_unions(result: Attribution, stats: tuple[Any, Any], graph: nx.DiGraph,
                    dominance: float = 3.0) -> Attribution:
    """Items naming a union's column, or its rows (the units of a segment driven by a union), refined to
    the branch that changed, by the exact statistics of the union's inputs in both runs.

    Units are the union's rows, so a drift in one branch (online prices, not store prices) is a change
    of the union column; the branches' own statistics say which one moved: the branch column whose
    mean (in standard deviations), NULL share or top values moved ``dominance`` times more than any
    other's, or the branch table whose row count did. Without such a branch the item stays as it was.
    """
    unions = {n for n, d in graph.nodes(data=True) if d.get("subtype") == "union"}
    if not unions:
        return result
    sb, sc = stats

    def branch(a: AttributionItem) -> str | None:
        if a.kind == "volume":
            stage = a.node.rsplit(".", 1)[0]
            tables = {graph.nodes[p].get("table") for u in unions if graph.nodes[u].get("stage") == stage
                      for p in nx.ancestors(graph, u) if graph.nodes[p].get("kind") == "source"} - {None}
            rows = {t: _rows_change(sb, sc, graph, t) for t in tables}
            found = _dominant({t: v for t, v in rows.items() if v is not None}, dominance)
            return f"{found}.__rows__" if found else None
        if a.node in unions and a.contribution:
            # (statistics' moves beyond chance only: any of them is above noise)
            return _dominant({p: _stats_change(sb, sc, p) for p in graph.predecessors(a.node)}, dominance, 0.0)
        return None

    return _refined(result, branch, graph, "of the union's inputs, its statistics changed")


def _through_fanout(result: Attribution, stats: tuple[Any, Any], graph: nx.DiGraph) -> Attribution:
    """The volume of the rows refined to the joined table whose row count moved, when the driving
    table's exact row count explains little of it: a key repeated in a lookup table (fx with two EUR
    rows) multiplies the rows a join gives each driving row, which the rows' volume term counts. So is
    the item of the rows beyond units' first (``details["fanout"]``), which attribution names by the
    segment's first joined table."""
    sb, sc = stats
    details = result.details or {}
    desc = _segment_of(result, graph)
    rows = details.get("rows") or {}
    if desc is None or not rows.get("baseline"):
        return result
    driving = str(desc.get("driving"))
    moved = abs(float(rows["current"]) - float(rows["baseline"])) / float(rows["baseline"])
    own = _rows_change(sb, sc, graph, driving)
    tables = set().union(*(_other_tables(graph, j) for j in desc.get("joins", []))) - {driving}
    # a joined table whose rows moved by a share of the units' own move at least (a filter below that
    # dropped orders moves the units, and a joined table's chance wiggle does not explain them)
    changes = {t: v for t in sorted(tables) if (v := _rows_change(sb, sc, graph, t)) and v >= 0.5 * moved}
    fanned = own is not None and moved > 3 * own + 0.01 and changes

    fanout = (details.get("fanout") or {}).get("node")

    def table(a: AttributionItem) -> str | None:
        if a.kind != "volume" or not a.mechanism_changed or not changes:
            return None
        best = f"{max(changes, key=lambda t: changes[t])}.__rows__"
        if a.node == fanout:  # named by the segment's first join: the table whose rows moved is the one
            return best if best != a.node else None
        return best if fanned and a.node == f"{driving}.__rows__" else None

    return _refined(result, table, graph, "the driving rows did not change as much, the rows this joined "
                                          "table gives each of them did")


def _refined(result: Attribution, pick: Callable[[AttributionItem], str | None], graph: nx.DiGraph,
             why: str) -> Attribution:
    """The result with each item that ``pick`` names another node for renamed to it (items renamed to
    one node are one item), and a note why."""
    items: dict[str, AttributionItem] = {}
    notes = []
    for a in result.attributions:
        found = pick(a)
        _merge(items, a if found is None else _renamed(a, found, graph))
        if found is not None:
            notes.append(f"{a.node} refined to {found}: {why}")
    if not notes:
        return result
    return dataclasses.replace(result, attributions=_ranked(list(items.values())), warnings=list(result.warnings) + notes)


def _dominant(scores: dict[str, float], dominance: float, floor: float = 0.02) -> str | None:
    """The key whose score is ``dominance`` times any other's (and above ``floor``), else None."""
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    if not ranked or ranked[0][1] <= floor or (len(ranked) > 1 and ranked[0][1] < dominance * ranked[1][1]):
        return None
    return ranked[0][0]


def _renamed(a: AttributionItem, node_id: str, graph: nx.DiGraph) -> AttributionItem:
    node = graph.nodes[node_id] if node_id in graph else {}
    return dataclasses.replace(a, node=node_id, kind=node.get("kind", a.kind),
                               table=node.get("table", node_id.split(".")[0]), stage=node.get("stage"),
                               column=node.get("column", a.column))


# ============================================================================ through filtered joins
def _through_filtered_joins(result: Attribution, stats: tuple[Any, Any], baseline: nx.DiGraph,
                            graph: nx.DiGraph, dominance: float = 3.0) -> Attribution:
    """Items naming a selection refined to the filter, off the units' path, that changed its outcome.

    A unit's join match says whether its key found a row of the other side *as the job filtered it*:
    ``JOIN customers c ... WHERE c.segment IN (SELECT segment FROM segments WHERE active)`` is
    planned with the filter inside the customers side (so is ``orders.join(customers.filter(...))``);
    a filter ``product_id IN (SELECT ... WHERE k.active)`` passes a unit by what its subquery read. The
    sample cannot see those tables apart from the selection. Which one moved it is told by the runs'
    graphs and exact statistics: a filter among them whose code (fingerprint) changed, or the source
    column under them whose statistics moved ``dominance`` times more than anything else there (and,
    for a join, than its side's keys and row count: customers missing from the dimension stay the
    join's change). When the selection's own code changed, the item stays its own.
    """
    sb, sc = stats
    inputs = _outside_inputs(graph)
    if not inputs:
        return result

    def cause(a: AttributionItem) -> str | None:
        side = inputs.get(a.node)
        if side is None or not a.contribution or _recoded(baseline, graph, a.node):
            return None
        filters, per_unit, tables, keys = side
        changed = [f for f in filters if _recoded(baseline, graph, f)]
        if changed:
            return changed[0]
        # a join's candidates are its other side's (the units' own keys, read from their tables, are the
        # units' and their top values move with any fresh data); a path filter's, whatever it reads
        roots = {r for f in filters + [a.node] for r in nx.ancestors(graph, f)
                 if graph.nodes[r].get("kind") == "source"
                 and (not tables or f != a.node or graph.nodes[r].get("table") in tables)} - set(keys) - per_unit
        # identifiers match rows, they do not describe them: a correlated subquery's key
        # (``t.emp_id = outer(p.emp_id)``) or ids fresh in every run always "move", and are never the cause
        roots -= _correlation_keys(graph, filters + [a.node]) | {r for r in roots if _fresh_ids(sb, sc, r, graph)}
        scores = {r: _stats_change(sb, sc, r) for r in roots}
        scores.update({k: _stats_change(sb, sc, k) for k in keys})
        scores.update({f"{t}.__rows__": _rows_change(sb, sc, graph, t) or 0.0 for t in tables})
        best = _dominant(scores, dominance)
        return best if best in roots else None

    return _refined(result, cause, graph, "it decides what the selection passes, and it changed")


def _within_the_units(result: Attribution, stats: tuple[Any, Any], baseline: nx.DiGraph, graph: nx.DiGraph,
                      dominance: float = 3.0) -> Attribution:
    """The volume item of units that are a relation's result rows (a window over few partitions, a
    DISTINCT), refined to what inside that relation changed them: a DISTINCT above whose keys changed
    in code, a filter or join there whose code changed (a bid floor raised, a LEFT join made INNER),
    else the source column under those
    selections whose exact statistics moved ``dominance`` times more than anything else there and
    than the driving table's rows (NULL prices a filter drops). Those selections are no columns of
    the units, so the sample sees only fewer rows; the graphs and statistics tell which."""
    desc = _segment_of(result, graph)
    sb, sc = stats
    old = _segment(baseline, desc.get("id")) if desc else None
    inside = list(dict.fromkeys((desc or {}).get("inside") or [])) + [
        s for s in (old or {}).get("inside") or [] if s not in ((desc or {}).get("inside") or [])]
    # the DISTINCT / dropDuplicates itself: keys changed in code decide other rows (a dedup by order
    # only, not order and SKU, keeps one line an order)
    dedups = [n for n in nx.ancestors(graph, result.target) if graph.nodes[n].get("subtype") == "dedup"] \
        if result.target in graph and desc else []
    if not inside and not dedups:
        return result
    rows = f"{desc.get('driving')}.__rows__"

    def code_changed(node: str) -> bool:  # (a selection one run lacks is changed code too)
        return (node in baseline) != (node in graph) or _recoded(baseline, graph, node)

    # columns of the units that moved among them, not where they were measured, before those selections
    among = {x.node for x in result.attributions if x.kind != "volume" and x.mechanism_changed and _unmoved(sb, sc, x.node)}
    units = (result.details or {}).get("rows") or {}

    def cause(a: AttributionItem) -> str | None:
        if not a.contribution:
            return None
        changed = [s for s in sorted(dedups) + inside if code_changed(s)]
        if a.node != rows or a.kind != "volume":
            # such a column's move is the changed code's that decides which rows the units are (a price
            # floor raised below a dedup lifted the units' prices, not the prices)
            return changed[0] if changed and a.kind != "volume" and _unmoved(sb, sc, a.node) else None
        if changed:
            return changed[0]
        roots = {r for s in inside if s in graph for r in nx.ancestors(graph, s)
                 if graph.nodes[r].get("kind") == "source"}
        roots -= {r for r in roots if _fresh_ids(sb, sc, r, graph)}
        scores = {r: _stats_change(sb, sc, r) for r in roots}
        scores[rows] = _rows_change(sb, sc, graph, str(desc.get("driving"))) or 0.0
        best = _dominant(scores, dominance)
        if best in roots:
            return best
        # units that moved far more than the driving table's rows, and one selection there reading the
        # columns that moved among them only: it passes other rows (sellers' ids upper-cased in the
        # dimension a join below a dedup looks them up in: the units lost those sellers' lines)
        moved = abs(units["current"] / units["baseline"] - 1) if units.get("baseline") else 0.0
        readers = {s for s in inside if s in graph and among & nx.ancestors(graph, s)}
        return readers.pop() if moved > 3 * scores[rows] + 0.01 and len(readers) == 1 else None

    return _refined(result, cause, graph, "the units are the rows of a relation it decides (a window's or "
                                          "DISTINCT's result rows), and it changed")


def _through_lookups(result: Attribution, stats: tuple[Any, Any], baseline: nx.DiGraph,
                     graph: nx.DiGraph) -> Attribution:
    """Items naming a column a join brings, whose own exact statistics did not move: the units looked
    other rows up. That is the join's when its code changed (a tariff band's end hour made exclusive
    gave the readings of boundary hours the next band's price, the tariffs unchanged); for a join
    below the units' relation (a DISTINCT's rows), whose lookups the units' model cannot see, it is
    the units' key whose exact statistics moved (more Polish orders moved the euro rates the orders
    were converted at, the rates unchanged)."""
    desc = _segment_of(result, graph) or {}
    sb, sc = stats
    brought: dict[str, tuple[str, list[str]]] = {}  # column -> (join, the units' keys: below the units only)
    for j in desc.get("joins") or []:
        for col in j.get("columns") or []:
            brought.setdefault(col, (j["selection"], []))
    for sel in desc.get("inside") or []:
        if (graph.nodes.get(sel) or {}).get("subtype") != "join":
            continue
        tables = {graph.nodes[p].get("table") for p in graph.predecessors(sel)}
        for t in tables - {desc.get("driving"), None}:
            keys = [p for p in graph.predecessors(sel) if graph.nodes[p].get("table") != t]
            for col in (n for n, d in graph.nodes(data=True) if d.get("kind") == "source" and d.get("table") == t):
                brought.setdefault(col, (sel, keys))

    def cause(a: AttributionItem) -> str | None:
        if not a.contribution or a.node not in brought or not _unmoved(sb, sc, a.node):
            return None
        join, keys = brought[a.node]
        if _recoded(baseline, graph, join):
            return join
        return next((k for k in keys if k in sb.index and not _unmoved(sb, sc, k)), None)

    return _refined(result, cause, graph, "the units looked it up by what changed, and it did not") \
        if brought else result


def _recoded(baseline: nx.DiGraph, graph: nx.DiGraph, node: str) -> bool:
    """Whether both runs' graphs hold ``node`` and its code (fingerprint) differs between them."""
    return node in baseline and node in graph and \
        baseline.nodes[node].get("fingerprint") != graph.nodes[node].get("fingerprint")


def _unmoved(sb: Any, sc: Any, node: str) -> bool:
    """Whether the node's values have exact statistics in both runs (a mean, top values), and they did
    not move (:func:`_stats_change`)."""
    if node not in sb.index or node not in sc.index:
        return False
    described = sb.loc[node, "mean"] == sb.loc[node, "mean"] or isinstance(sb.loc[node, "top"], str)
    return bool(described) and _stats_change(sb, sc, node) < 0.01


def _outside_inputs(graph: nx.DiGraph) -> dict[str, tuple[list[str], set[str], set[str], list[str]]]:
    """Each selection of a segment that reads tables the units do not hold: (the filters off the
    units' path it depends on, the segment's per-unit nodes, and for a join the source tables of its
    other side and that side's key columns).

    A join's other side counts the filters off the path that read its tables (and the tables those
    read: a semi-joined table's filter); a path filter, its subqueries' filters (its ancestors)."""
    on_paths = {s for d in graph.graph.get("segments", []) for s in d.get("selections", [])}
    out = {}
    for desc in graph.graph.get("segments", []):
        per_unit = set(desc.get("nodes") or [])
        results = [n for n in list(desc.get("aggregates") or {}) + list(desc.get("group_keys") or []) if n in graph]
        results += [n for n, d in graph.nodes(data=True) if d.get("output") and d.get("output") == desc.get("output")]
        reach = set().union(*(nx.ancestors(graph, n) for n in results)) if results else set()
        off = sorted(n for n in reach - on_paths if graph.nodes[n].get("kind") == "selection")
        joins = {j.get("selection"): j for j in desc.get("joins", []) if j.get("selection")}
        for sel in desc.get("selections") or []:
            if sel not in graph:
                continue
            if sel not in joins:
                above = sorted(n for n in nx.ancestors(graph, sel) if n in off)
                outside = {r for r in nx.ancestors(graph, sel) if graph.nodes[r].get("kind") == "source"} - per_unit
                if outside:
                    out[sel] = (above, per_unit, set(), [])
                continue
            j = joins[sel]
            tables = _other_tables(graph, j)
            filters, read = [], set(tables)
            while True:  # a filter of a table semi-joined to the other side filters it too
                more = [n for n in off if n not in filters
                        and any(graph.nodes[r].get("table") in read for r in graph.predecessors(n))]
                if not more:
                    break
                filters += more
                read |= {graph.nodes[r].get("table") for n in more for r in graph.predecessors(n)} - {None}
            if filters:
                out[sel] = (sorted(filters), set(), tables, [k for k in j.get("other_keys", []) if k in graph])
    return out


def _correlation_keys(graph: nx.DiGraph, filters: list[str]) -> set[str]:
    """Source columns a correlated subquery's filter equates with the outer query's columns
    (``t.emp_id = outer(p.emp_id)`` of ``NOT EXISTS (SELECT 1 FROM terminated t WHERE ...)``): keys."""
    out = set()
    for f in filters:
        expr = str(graph.nodes[f].get("expr") or "") if f in graph else ""
        if "outer(" not in expr.lower():
            continue
        for part in re.split(r"(?i)\s+and\s+", expr):
            if "outer(" not in part.lower() or not re.search(r"(?<![<>!=])=(?!=)|<=>", part):
                continue
            for p in graph.predecessors(f):
                col = str(graph.nodes[p].get("column") or "")
                if graph.nodes[p].get("kind") == "source" and col and \
                        re.search(rf"(?<![\w(])(\w+\.)?`?{re.escape(col)}`?(?![\w(])", re.sub(r"(?i)outer\([^)]*\)", "", part)):
                    out.add(p)
    return out


def _fresh_ids(sb: Any, sc: Any, node: str, graph: nx.DiGraph) -> bool:
    """An integer column whose values in the two runs do not overlap at all, with the same spread
    (``100000 * day + i``): each run's own ids, whose statistics move with any fresh data."""
    if node not in sb.index or node not in sc.index or \
            str(graph.nodes[node].get("dtype", "")) not in ("tinyint", "smallint", "int", "bigint"):
        return False
    b, c = sb.loc[node], sc.loc[node]
    try:
        lo_b, hi_b, lo_c, hi_c = (float(x) for x in (b["min"], b["max"], c["min"], c["max"]))
        sd_b, sd_c = float(b["std"]), float(c["std"])
    except (TypeError, ValueError):
        return False
    if min(float(b["count"] or 0), float(c["count"] or 0)) < 50 or not (sd_b > 0 and sd_c > 0):
        return False
    return (hi_b < lo_c or hi_c < lo_b) and 0.8 <= sd_c / sd_b <= 1.25


def _other_tables(graph: nx.DiGraph, join: dict) -> set[str]:
    """The source tables of a join's other side (of its keys and the columns it brings)."""
    cols = list(join.get("other_keys", [])) + list(join.get("columns", []))
    return {graph.nodes[c].get("table") for c in cols if c in graph} - {None}


def _stats_change(sb: Any, sc: Any, node: str, noise: float = 2.0) -> float:
    """How far a node's exact statistics moved between runs: mean shift in standard deviations beyond
    ``noise`` times what two draws of that many rows move it by, change of the NULL share, total
    variation of the top values as shares of the valued rows, those beyond the listed top ones being
    one more value (the largest of them; at least 0).

    Why: the top 10 of 2,000 SKUs in 5,000 returns, as shares of themselves, differ wholly between two
    days (0.65), which beat every other column 3 to 1 and took the volume of rows a dedup kept (A/A
    pairs included). A drift of one region's readings, a mean shift of 0.013 sd among heavy-tailed
    glitches, did not beat the other union branch's 0.007, of which 0.008 is chance. A flag flipped in
    a dimension of 5 rows is no draw: shares and NULLs are compared as they are."""
    if node not in sb.index or node not in sc.index:
        return 0.0
    b, c = sb.loc[node], sc.loc[node]
    out = []
    nb, nc = float(b["count"] or 0), float(c["count"] or 0)
    if nb and nc:
        out.append(abs(float(c["nulls"]) / nc - float(b["nulls"]) / nb))
        vb, vc = 1 - float(b["nulls"]) / nb, 1 - float(c["nulls"]) / nc
        if vb > 0:  # a mostly-NULL column (amounts of purchases only): its valued share, relatively
            out.append(abs(vc / vb - 1))
    vb_n, vc_n = nb - float(b["nulls"] or 0), nc - float(c["nulls"] or 0)
    spread = max(float(b["std"] or 0) if b["std"] == b["std"] else 0.0, 1e-12)
    if b["mean"] == b["mean"] and c["mean"] == c["mean"] and b["mean"] is not None and c["mean"] is not None \
            and vb_n > 0 and vc_n > 0:
        out.append(abs(float(c["mean"]) - float(b["mean"])) / spread - noise * math.sqrt(1 / vb_n + 1 / vc_n))
    tops = [dict((str(v), n) for v, n in json.loads(t)) if isinstance(t, str) else None for t in (b["top"], c["top"])]
    if tops[0] and tops[1]:
        out.append(_least_top_move(tops[0], max(vb_n, sum(tops[0].values()), 1.0),
                                   tops[1], max(vc_n, sum(tops[1].values()), 1.0)))
    return max(max(out, default=0.0), 0.0)


def _least_top_move(top_b: dict[str, float], nb: float, top_c: dict[str, float], nc: float) -> float:
    """The least total variation between two runs' value shares that their top values allow.

    A value listed in one run only has, in the other, a share of at most that run's smallest listed
    one (0 when the list holds every value), and is taken as near its listed share as that allows;
    the values beyond both lists are one more value. Why: which 10 of 40 shops, each about 2.5% of
    the lines, are listed is chance, and counting the unlisted ones at 0 put two days 0.18 apart, a
    move larger than a real one-shop mix shift."""
    sb = {k: v / nb for k, v in top_b.items()}
    sc = {k: v / nc for k, v in top_c.items()}
    cap_b = 0.0 if sum(top_b.values()) >= nb else min(sb.values())
    cap_c = 0.0 if sum(top_c.values()) >= nc else min(sc.values())
    keys = set(sb) | set(sc)
    xb = {k: sb[k] if k in sb else min(sc[k], cap_b) for k in keys}
    xc = {k: sc[k] if k in sc else min(sb[k], cap_c) for k in keys}
    rest = abs(max(1 - sum(xb.values()), 0.0) - max(1 - sum(xc.values()), 0.0))
    return 0.5 * (sum(abs(xc[k] - xb[k]) for k in keys) + rest)


def _rows_change(sb: Any, sc: Any, graph: nx.DiGraph, table: str) -> float | None:
    """Relative change of a source table's row count (any of its measured columns' count)."""
    cols = [n for n, d in graph.nodes(data=True) if d.get("kind") == "source" and d.get("table") == table
            and n in sb.index and n in sc.index]
    if not cols:
        return None
    b, c = float(sb.loc[cols[0], "count"]), float(sc.loc[cols[0], "count"])
    return abs(c - b) / b if b else None


# ============================================================================ drill-down across segments
MAX_DRILL_DEPTH = 3


def _segment_of(result: Attribution, graph: nx.DiGraph) -> dict | None:
    """The description of the segment ``result`` was attributed in, as ``graph`` records it."""
    return _segment(graph, (result.details or {}).get("segment"))


def _segment(graph: nx.DiGraph, sid: str | None) -> dict | None:
    """The description of segment ``sid`` as ``graph`` records it."""
    return next((d for d in graph.graph.get("segments", []) if d.get("id") == sid), None)


def _ranked(items: list[AttributionItem]) -> list[AttributionItem]:
    """Items in the order results list them: largest contribution first, then smallest p-value."""
    return sorted(items, key=lambda a: (-abs(a.contribution), a.p_value if a.p_value is not None else 1.0, a.node))


def _upstream_aggregate(graph: nx.DiGraph, node: str, candidates: dict[str, Any]) -> str | None:
    """The aggregate of another segment that ``node`` is (or derives from), the nearest if several
    (or, given other candidates, the nearest of those: a changed code above a group key)."""
    if node not in graph:
        return None
    found = ({node} | nx.ancestors(graph, node)) & set(candidates)
    if not found:
        return None
    dist = dict(nx.single_target_shortest_path_length(graph, node))
    return min(found, key=lambda a: (dist.get(a, 1 << 30), a))


def _significant_item(a: AttributionItem) -> bool:
    """A changed mechanism worth explaining from below. Its interval is not asked to exclude 0: the
    bootstrap of a few hundred aggregated units under a top-N window is too rough for that, and an
    aggregate that moved by chance is found out by the inner attribution (not significant: demoted)."""
    return bool(a.kind not in ("source", "volume") and a.contribution != 0 and a.mechanism_changed)


def _row_level_target(item: AttributionItem, desc: dict, row_level: dict[str, dict],
                      graph: nx.DiGraph) -> tuple[str, str] | None:
    """(target, agg) that explains ``item`` in the segment of another, row-level output this segment
    reads (``CREATE TABLE enriched AS SELECT ...`` then ``SELECT ... FROM enriched GROUP BY ...``):
    the sum of that output's numeric column the item names, or, for a change in the rows this segment
    is driven by, the count of that output's rows. None when the item is not such a significant change."""
    if not item.contribution or not item.mechanism_changed or item.ci_low < 0 < item.ci_high:
        return None
    if item.kind == "volume":
        inner = row_level.get(desc.get("driving"))
        if inner is None or item.node != f"{desc.get('driving')}.__rows__":
            return None
        columns = sorted(n for n, d in graph.nodes(data=True) if d.get("output") == inner.get("output"))
        return (columns[0], "count") if columns else None
    node = graph.nodes[item.node] if item.node in graph else {}
    dtype = str(node.get("dtype", "")).lower()
    if node.get("output") in row_level and (dtype in NUMERIC or dtype.startswith("decimal")):
        return item.node, "sum"
    return None


def _group_count_target(item: AttributionItem, desc: dict, c: RunSamples) -> tuple[str, str] | None:
    """(target, "count") in the segment whose groups are this segment's units, for a change in their
    number (``orders.__rows__`` of per-order rows a first aggregation made from exploded lines): see
    ``_counted_groups``. None when the item is no significant volume change, or no segment's groups
    are these units."""
    if item.kind != "volume" or not item.contribution or not item.mechanism_changed or \
            item.ci_low < 0 < item.ci_high or item.node != f"{desc.get('driving')}.__rows__":
        return None
    counted = _counted_groups(desc, c)
    return (counted, "count") if counted else None


def _grouped_below(desc: dict, c: RunSamples) -> list[dict] | None:
    """[the description of the one other segment whose groups are this segment's units], or None."""
    nodes = set(desc.get("nodes") or [])
    # the driving table's columns here are all group keys below: a unit is a group, not a driving row
    # with an aggregate joined back to it (``orders`` joined to per-customer totals keeps orders.amount)
    own = {n for n in nodes if n.startswith(f"{desc.get('driving')}.")}
    inner = [d for d in c.graph.graph.get("segments", []) if d.get("id") != desc.get("id") and
             d.get("driving") == desc.get("driving") and set(d.get("aggregates") or {}) & nodes and
             own <= set(d.get("group_keys") or [])]
    if len(inner) > 1:  # the same aggregation in two outputs (account bills, and the summary over them)
        inner = [d for d in inner if d.get("output") == desc.get("output")]
    return inner if len(inner) == 1 and inner[0].get("id") in c.segments else None


def _flag_input(agg_node: str, others: dict[str, dict], c: RunSamples) -> str | None:
    """The input of ``MAX(flag)`` over a 0/1 column (a session with a purchase): whether a group has
    any such row. More groups have one when more rows do, so its move is drilled as the flag's sum
    below, shares of the rows standing for shares of the groups (as a count of groups is). None for
    any other max."""
    inp = (others.get(agg_node) or {}).get("input")
    for d in c.graph.graph.get("segments", []):
        if agg_node in (d.get("aggregates") or {}) and d.get("id") in c.segments:
            table = c.segments[d["id"]].table
            if inp in table.columns:
                values = pd.to_numeric(table[inp], errors="coerce").dropna()
                return inp if len(values) and values.isin([0, 1]).all() else None
    return None


def _regrouped(result: Attribution, desc: dict, b: RunSamples, c: RunSamples,
               config: AttributionConfig | None) -> Attribution | None:
    """Units that are another segment's groups, more (or fewer) of them while the rows below them are
    about as many: the groups were cut differently. When the code that makes their keys changed (a
    session gap rule, read by the running sum that numbers a user's sessions), what moved with the cut
    is that code's: the volume of units (sessions +23% read as events.__rows__, the events unchanged)
    and the groups' aggregates (a session's first and last event, for the mean session length). Not
    for fewer than z^2 groups (``_groups_below``), nor when those items made less than half the move.
    None otherwise."""
    inner = _grouped_below(desc, c)
    counts = _group_counts(desc, inner, b) if inner is not None and result.change else None
    if counts is None:
        return None
    units, rows = counts[1] / counts[0] - 1, counts[3] / counts[2] - 1
    z = float(norm.ppf(1 - (config or AttributionConfig()).alpha / 2))
    if abs(counts[1] - counts[0]) <= z * z or abs(rows) >= 0.5 * abs(units):  # more rows below, so more groups: a volume after all
        return None
    changed = dict.fromkeys(cc["node"] for cc in result.code_changes)
    pick = next((p for key in inner[0].get("group_keys") or []  # the changed code nearest to a key
                 if (p := _upstream_aggregate(c.graph, key, changed)) is not None), None)
    aggregates = set(inner[0].get("aggregates") or {})
    moved = [a for a in result.attributions if a.contribution and (a.kind == "volume" or a.node in aggregates)]
    if pick is None or sum(abs(a.contribution) for a in moved) < 0.5 * abs(result.change):
        return None
    d = c.graph.nodes[pick]
    item = dataclasses.replace(moved[0], node=pick, kind=d.get("kind") or "stage", table=d.get("table"),
                               stage=d.get("stage"), column=d.get("column") or pick.rsplit(".", 1)[-1],
                               contribution=sum(a.contribution for a in moved),
                               ci_low=sum(a.ci_low for a in moved), ci_high=sum(a.ci_high for a in moved),
                               mechanism_changed=True, p_value=0.0)
    return dataclasses.replace(
        result, attributions=_ranked([a for a in result.attributions if a not in moved] + [item]),
        significant=True,
        warnings=list(result.warnings) + [
            f"the units ({desc.get('driving')} groups of {inner[0].get('id')}) went from {counts[0]:,} to "
            f"{counts[1]:,} while the rows below went from {counts[2]:,} to {counts[3]:,}: the groups were "
            f"cut differently, by the changed code of {pick}"])


def _group_counts(desc: dict, inner: list[dict], b: RunSamples) -> list[float] | None:
    """[units in the baseline, today; rows below them in the baseline, today] of a segment whose
    units are the groups of ``inner`` (``_grouped_below``), None when a count is missing."""
    counts = [x.get("rows") if x else None for x in (_segment(b.graph, desc.get("id")), desc,
                                                     _segment(b.graph, inner[0].get("id")), inner[0])]
    return counts if all(isinstance(x, (int, float)) and x > 0 for x in counts) else None


def _rows_per_group(result: Attribution, desc: dict, b: RunSamples, c: RunSamples,
                    config: AttributionConfig | None, cache: dict) -> Attribution | None:
    """A metric of groups (the mean session length: the last event's time less the first's) that
    moved with nothing of the groups' own model to explain it, while each group holds fewer (or more)
    rows below: a filter dropping short events, or NULL pages a ``dropna`` drops, thin every session
    out, and its first and last times move by minutes that no test of times spread over days sees.
    What changed the rows per group is then the cause: the count of the rows below, attributed and
    drilled (``_groups_below``'s count), its parts shared out to the metric's move. Only when the rows
    below (estimated from their sample) moved beyond what today's number of groups carries at the
    baseline's rows per group, by 2% of them at least and beyond their sampling error, and the count
    below moved the same way through a changed mechanism. None otherwise."""
    inner = _grouped_below(desc, c) if result.significant and result.change else None
    counted = _counted_groups(desc, c) if inner is not None else None
    units = [(_segment(b.graph, desc.get("id")) or {}).get("rows"), desc.get("rows")]
    if counted is None or not all(isinstance(u, (int, float)) and u > 0 for u in units):
        return None
    rows, var = [], []
    for r in (b, c):
        t = _segment_table(r, inner[0].get("id"))
        if t is None or f"__contrib__:{counted}" not in t.columns:
            return None
        x = pd.to_numeric(t[f"__contrib__:{counted}"], errors="coerce").fillna(0.0).to_numpy(float)
        w = pd.to_numeric(t[WEIGHT], errors="coerce").fillna(1.0).to_numpy(float) if WEIGHT in t.columns \
            else np.ones(len(x))
        rows.append(float(np.sum(w * x)))
        var.append(float(np.sum(w * np.maximum(w - 1.0, 0.0) * x * x)))  # Poisson sampling of the units
    scale = units[1] / units[0]
    moved = rows[1] - rows[0] * scale
    z = float(norm.ppf(1 - (config or AttributionConfig()).alpha / 2))
    if abs(moved) < 0.02 * abs(rows[0] * scale) or abs(moved) <= z * math.sqrt(var[1] + var[0] * scale ** 2):
        return None
    found = _groups_below(result, desc, moved, b, c, config, cache)
    if found is None:
        return None
    per = [rows[0] / units[0], rows[1] / units[1]]
    return _shared_from_below(result, *found, lambda counted, below: (
        f"no mechanism of {desc.get('id')}'s groups explains the move of {result.target}, while their rows "
        f"below went from {per[0]:.4g} to {per[1]:.4g} per group: attributed as what changed the rows "
        f"of {counted} ({below.change:+,.6g})"))


def _shared_from_below(result: Attribution, counted: str, below: Attribution,
                       why: Callable[[str, Attribution], str]) -> Attribution:
    """``result`` attributed as the count of ``counted``'s units below (``below``, attributed and
    drilled): its parts scaled to the result's change, shares of the rows standing for shares of it."""
    parts = _scaled(below.attributions, result.change / below.change)
    total = sum(a.contribution for a in parts)
    details = dict(result.details or {})
    details["drilldown"] = [{"node": result.target, "aggregate": counted, "explained": True,
                             "contribution": result.change, "parts": {a.node: a.contribution for a in parts if a.contribution}}]
    return dataclasses.replace(
        result, attributions=_ranked(parts), significant=True, unexplained=result.change - total, details=details,
        code_changes=_code_changes(result, below), warnings=list(result.warnings) + [why(counted, below)])


def _counted_groups(desc: dict, c: RunSamples) -> str | None:
    """The aggregate whose count of units below stands for the number of this segment's units, when
    they are the groups of one other segment. A unit here exists because at least one row of its group
    passed that segment's selections: orders whose status a NULL filter drops below the first
    aggregation vanish there, and so does their group. The units' count below moves with the groups'
    and names what dropped them; shares of the rows stand for shares of the groups. The counted
    aggregate is a ``count(*)`` if there is one, else the one whose input is least often NULL (a NULL
    input is not counted, its row still makes the group), a count or a sum before any other (a
    ``first()`` or ``max()`` cannot be attributed as a count of rows)."""
    inner = _grouped_below(desc, c)
    if inner is None:
        return None
    table = c.segments[inner[0]["id"]].table

    def nulls(agg: str) -> float:
        inp = (inner[0]["aggregates"][agg] or {}).get("input")
        return 0.0 if inp is None else float(table[inp].isna().mean()) if inp in table.columns else 1.0
    def additive(agg: str) -> int:
        return {"count": 0, "sum": 1}.get(str((inner[0]["aggregates"][agg] or {}).get("fn", "")).lower(), 2)
    return min(sorted(inner[0]["aggregates"]), key=lambda agg: (nulls(agg), additive(agg)))


def _relay_count(result: Attribution, desc: dict, b: RunSamples, c: RunSamples,
                 config: AttributionConfig | None, cache: dict) -> Attribution | None:
    """``COUNT(*)`` of units that are another segment's groups (accounts per region and tier, counted
    over per-account bills) is the number of groups that segment's selections kept: a threshold that
    drops every call of 4% of the accounts is a certain change there, where here it is only fewer units,
    a volume too small to be sure of. The count of the units below, attributed and drilled, its parts
    scaled to this count's change (shares of the rows standing for shares of the groups). None when
    this segment drops units itself or ``_groups_below`` finds no cause."""
    entry = (desc.get("aggregates") or {}).get(result.target) or {}
    if str(entry.get("fn", "")).lower() != "count" or entry.get("input") is not None or result.agg != "sum" \
            or not result.change or _drops_rows(desc, b, c):
        return None
    found = _groups_below(result, desc, result.change, b, c, config, cache)
    if found is None:
        return None
    return _shared_from_below(result, *found, lambda counted, below: (
        f"{result.target} counts the groups of {counted}'s units: attributed as their count "
        f"({below.change:+,.6g} units for {result.change:+,.6g} groups)"))


def _groups_below(result: Attribution, desc: dict, groups: float, b: RunSamples, c: RunSamples,
                  config: AttributionConfig | None, cache: dict) -> tuple[str, Attribution] | None:
    """The count of the units below whose groups are this segment's units (``_counted_groups``),
    attributed and drilled, when their number moved by ``groups``: what made accounts come or go is
    what dropped or added their calls. None when no segment's groups are these units, the count below
    did not move significantly the same way through a changed mechanism, or the groups moved by too
    few to tell from chance."""
    counted = _counted_groups(desc, c)
    # groups that came and went by chance move their count by a Skellam variable of variance (new + lost)
    # >= |change|: a change below z^2 groups cannot be told from chance, whatever moved below (a tier mix
    # that moved 0.2% of the calls and one account of 5,375 read significant)
    z = float(norm.ppf(1 - (config or AttributionConfig()).alpha / 2))
    if counted is None or abs(groups) <= z * z:
        return None
    try:
        below = _attributed_below(result, counted, "count", result.where, b, c, config,
                                  exact=_exact_below(cache, counted, "count", result.where))
        below = drill_down(below, b, c, config=config, _depth=1, _cache=cache)
    except SparkCausalError:
        return None
    if not below.significant or below.change * groups <= 0 or \
            not any(a.contribution and a.mechanism_changed for a in below.attributions):
        return None
    return counted, below


def _code_changes(result: Attribution, *below: Attribution) -> list[dict]:
    """The code changes of ``result`` and of the attributions below it, each once."""
    out = list(result.code_changes)
    for inner in below:
        out += [cc for cc in inner.code_changes if cc not in out]
    return out


def _scaled(items: list[AttributionItem], f: float) -> list[AttributionItem]:
    """Items of an attribution below taken as shares of an item above: contributions and intervals
    times ``f`` (the interval's ends swapped when ``f`` is negative)."""
    return [dataclasses.replace(a, contribution=a.contribution * f, ci_low=min(a.ci_low * f, a.ci_high * f),
                                ci_high=max(a.ci_low * f, a.ci_high * f)) for a in items]


def _exact_below(cache: dict, target: str, agg: str, where: str | None) -> Exact | None:
    """The exact figures of ``agg(target)`` in a segment below (``attribute`` leaves the way to them in
    the drill-down's cache), for the whole of it; None for a slice, whose units the drill-down chose."""
    of = cache.get("exact")
    return of(target, agg) if of is not None and where is None else None


def _cached_below(cache: dict, node: str, agg: str, where: str | None, b: RunSamples, c: RunSamples,
                  config: AttributionConfig | None, depth: int) -> Attribution | Exception:
    """``agg(node)`` over ``where`` in its own segment, drilled down from ``depth``: once per
    drill-down (the error, when it cannot be attributed, kept in its place)."""
    if (node, agg, where) not in cache:
        try:
            inner = attribute_samples(c.graph, b, c, node, agg=agg, where=where, config=config,
                                      exact=_exact_below(cache, node, agg, where))
            cache[(node, agg, where)] = drill_down(inner, b, c, config=config, _depth=depth, _cache=cache)
        except SparkCausalError as exc:
            cache[(node, agg, where)] = exc
    return cache[(node, agg, where)]

def _attributed_below(result: Attribution, target: str, agg: str, where: str | None, b: RunSamples,
                      c: RunSamples, config: AttributionConfig | None, translate: bool = True,
                      exact: Exact | None = None) -> Attribution:
    """``agg(target)`` in the segment below, over the slice ``where`` (the outer rows' keys are
    usually the units' own columns); when the units below cannot be sliced so, over the slice by the
    group keys the outer rows carry (``_inner_where``), if ``translate``."""
    try:
        return attribute_samples(c.graph, b, c, target, agg=agg, where=where, config=config, exact=exact)
    except SparkCausalError:
        inner = _inner_where(result, target, b, c) if result.where and translate else None
        if inner is None:
            raise
        return attribute_samples(c.graph, b, c, target, agg=agg, where=inner, config=config)


def _merge(into: dict[str, AttributionItem], a: AttributionItem) -> None:
    old = into.get(a.node)
    if old is None:
        into[a.node] = a
        return
    ps = [p for p in (old.p_value, a.p_value) if p is not None]
    into[a.node] = dataclasses.replace(
        old, contribution=old.contribution + a.contribution, ci_low=old.ci_low + a.ci_low,
        ci_high=old.ci_high + a.ci_high, mechanism_changed=old.mechanism_changed or a.mechanism_changed,
        p_value=min(ps) if ps else None)


def _relay(result: Attribution, desc: dict, others: dict[str, dict], row_level: dict[str, dict], b: RunSamples,
           c: RunSamples, config: AttributionConfig | None, cache: dict) -> Attribution | None:
    """A plain re-aggregation (``SELECT region, SUM(revenue) FROM daily GROUP BY region``, daily being
    another output or aggregation; or ``SUM(COALESCE(actual, 0))`` of actuals joined to a budget), or an
    output whose rows copy an aggregate's, sums the very units another segment sums, in far fewer rows: a
    shift its few rows cannot show may be plain in the segment below. So does a sum of a column of a
    row-level output the run wrote and reads back (``stock_moves``, priced by a join to a dimension): its
    rows are that segment's units, where a corrupted price is a per-key change, found for certain, that
    a distribution test of the read-back values (in and out movements cancelling out) can miss. Its
    attribution there, when that one is significant; None otherwise (or when a filter or join of the
    re-aggregation drops rows). The read-back rows being the units the outer output aggregates, a
    ``where`` slice by columns the output copies from them is the same slice of those rows, and a mean
    (the ratio of the column's sum to its non-NULL rows, ``AVG(ship_cost)``) is the mean of that column
    over them: both are attributed there as they are."""
    entry = (desc.get("aggregates") or {}).get(result.target)
    fn = str(entry.get("fn", "")).lower() if entry else ""
    # the summed column, or the target itself when the output has a row per row of an aggregate (two
    # aggregates joined on their keys); either copies an aggregate of the segment below
    # a mean over every group of an aggregate below (the average bill of accounts billed from their
    # calls) is that aggregate's sum over as many groups: the sum below, shared out to the mean's move
    averaged = result.agg == "mean" and fn in _MEANS and not result.where
    start = (entry.get("input") if fn == "sum" or averaged else None) if entry else result.target
    drops = _drops_rows(desc, b, c)
    inp = _copied_aggregate(c.graph, start, others) if start and not (averaged and drops) else None
    kept = None
    if inp is not None and drops:
        # a selection among the aggregated groups (``WHERE rk <= 5`` over a RANK() of per-product
        # revenue, a HAVING-like filter, an inner join of the groups): the outer rows sum the groups
        # it kept, which are the inner units of those groups' keys
        kept = _kept_groups(result, desc, inp, b, c)
        if kept is None:
            inp = None
    # a read-back column, summed (or averaged, for a mean) over the read-back rows
    column = entry.get("input") if entry and (fn == "sum" or result.agg == "mean" and fn in _MEANS) else None
    output = c.graph.nodes[column].get("output") if column in c.graph else None
    read_back = inp is None and column is not None and not drops and output in row_level
    where = result.where
    if read_back and where:
        where = _read_back_where(result, c.graph, output)
        read_back = where is not None
    if read_back:
        inp, others = column, {column: {"fn": "sum"}}  # the read-back column, over its own rows
    elif result.agg != "sum" and not (averaged and inp is not None):
        return None
    if inp not in others or str(others[inp].get("fn", "")).lower() not in ("sum", "count"):
        return None
    agg = "mean" if read_back and result.agg == "mean" else "sum"
    try:
        if kept is not None:
            inner = attribute_samples(c.graph, b, c, inp, agg="sum", where=kept, config=config)
        else:
            inner = _attributed_below(result, inp, agg, where, b, c, config, translate=not read_back,
                                      exact=_exact_below(cache, inp, agg, where))
        inner = drill_down(inner, b, c, config=config, _depth=1, _cache=cache)
    except SparkCausalError:
        return None
    if not averaged:  # the runs' spread of the sum over the units below, moved or not (``attribute``)
        cache[("se_below", result.target)] = (inner.details or {}).get("se_whole")
    if not inner.significant or (read_back and not any(a.contribution and a.mechanism_changed for a in inner.attributions)):
        return None  # a read-back column's segment must name a change: a metric that moved by chance is no cause
    attributions = list(inner.attributions)
    total = sum(a.contribution for a in attributions)
    notes = [f"{result.target} sums {inp}, computed over far more units upstream: attributed there"]
    if averaged and not read_back:
        shared = _mean_of_sum(result, desc, inner, b, c, config, cache)
        if shared is None:
            return None
        attributions, notes, groups = shared
        total = sum(a.contribution for a in attributions)
        if groups is not None:
            inner = dataclasses.replace(inner, code_changes=_code_changes(inner, groups))
    if kept is not None:
        # the groups kept in one run only (a product lifted into the top 5 displaces another) move the
        # outer sum and not the slice's: with the selection's code unchanged they moved because of the
        # changes below, as in ``_above_the_aggregation``; their share is added to those changes
        moved = result.change - inner.change
        if total and moved and (total + moved) / total > 0:
            f = (total + moved) / total
            attributions = _scaled(attributions, f)
            total *= f
        notes.append(f"a selection among {inp}'s groups keeps {kept.count(',') + 1} of them in either run: "
                     f"attributed over those; the groups it kept in one run only ({moved:+,.6g}) are added to "
                     "the changes below")
    details = dict(result.details or {})
    details["drilldown"] = [{"node": inp, "aggregate": inp, "explained": True, "contribution": result.change,
                             "parts": {a.node: a.contribution for a in attributions if a.contribution}}
                            | ({"where": kept} if kept is not None else {})]
    return dataclasses.replace(
        result, attributions=attributions, significant=True, unexplained=result.change - total,
        code_changes=_code_changes(result, inner), details=details, warnings=list(result.warnings) + notes)


def _through_rows(result: Attribution, desc: dict, others: dict[str, dict], b: RunSamples, c: RunSamples,
                  config: AttributionConfig | None, cache: dict) -> Attribution | None:
    """A sum of a column computed per row from aggregates of the segment below (a share of the day's
    total over a window, a ratio, any expression of them), over outer rows all sampled: its move split
    by the chain rule into parts of groups below (``chain.parts``), each explained by the attribution
    of the aggregate's sum over those groups, scaled to the part. Significant when a part's
    attribution is and the move exceeds the parts' spread, each part's error scaled by what a unit
    of it is worth. None when the target is an aggregate of its own segment, the outer rows are a
    sample or not told apart by the keys of the groups below, or the parts do not add up."""
    rows, units = (result.details or {}).get("rows") or {}, (result.details or {}).get("units") or {}
    if result.agg != "sum" or result.target in (desc.get("aggregates") or {}) or not rows or \
            any(float(rows.get(k) or 0) != float(units.get(k) or -1) for k in ("baseline", "current")):
        return None
    try:
        model = fit_model(c.graph, b, c, result.target, agg="sum", where=result.where, config=config)
    except SparkCausalError:
        return None
    aggregates = [r.name for r in model.spec.roots if r.name in others
                  and str(others[r.name].get("fn", "")).lower() in ("sum", "count")]
    inner = next((d for d in c.graph.graph.get("segments", []) if aggregates and aggregates[0] in
                  (d.get("aggregates") or {})), None)
    tables = [_segment_table(r, desc.get("id")) for r in (b, c)]
    if inner is None or any(t is None for t in tables) or any(r.n != len(t) for r, t in zip(
            (model.baseline, model.current), tables)):
        return None
    names = [_column_name(c.graph, k) for k in inner.get("group_keys") or []]
    cols = [{_column_name(c.graph, x): x for x in t.columns if not x.startswith("__")} for t in tables]
    if not names or not all(nm in cs for nm in names for cs in cols):
        return None
    keys = [list(zip(*(t[cs[nm]].astype(object).tolist() for nm in names))) for t, cs in zip(tables, cols)]
    if any(v is None or v != v for ks in keys for k in ks for v in k):
        return None
    try:
        found = chain_parts(model, aggregates, keys[0], keys[1])
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError):
        return None  # a row function the outer model cannot evaluate so: the outer answer stands
    if found is None:
        return None
    cfg = config or AttributionConfig()
    z = float(norm.ppf(1 - cfg.alpha / 2))
    merged: dict[str, AttributionItem] = {}
    notes, spread, named = [], 0.0, False
    explained: list[Attribution] = []
    left = found[1]
    for part in found[0]:
        where = _rows_where(names, part.rows)
        below = _cached_below(cache, _summed_below(c.graph, part.aggregate, names, b, c), "sum", where, b, c,
                              config, 1)
        if isinstance(below, Exception):
            return None
        d = below.details or {}
        # (the runs' spread of the aggregates, which the job wrote exactly, not the samples' error)
        se = d.get("se_whole")
        spread += (part.weight * float(se or 0.0)) ** 2
        total = sum(a.contribution for a in below.attributions)
        if not below.significant or not total:
            left += part.value  # chance variation below stays unexplained here
            continue
        named = named or any(a.mechanism_changed and a.contribution for a in below.attributions)
        explained.append(below)
        base = below.change if below.change * total > 0 and abs(below.change) >= 0.5 * abs(total) else total
        scaled = _scaled([a for a in below.attributions if abs(a.contribution) > 1e-9 * abs(total)],
                         part.value / base)
        for a in scaled:
            _merge(merged, a)
        left += part.value - sum(a.contribution for a in scaled)
        notes.append({"node": part.aggregate, "aggregate": part.aggregate, "explained": True,
                      "contribution": part.value, "groups": len(part.rows), "weight": part.weight,
                      "parts": {a.node: a.contribution for a in scaled}})
    if not notes:
        return None
    se_t = math.sqrt(spread)
    details = dict(result.details or {})
    details["drilldown"] = notes
    details["chain"] = {"se": se_t, "z": result.change / se_t if se_t else None}
    return dataclasses.replace(
        result, attributions=_ranked(list(merged.values())), unexplained=left,
        significant=bool(named and abs(result.change) > z * se_t),
        code_changes=_code_changes(result, *explained),
        details=details, warnings=list(result.warnings) + [
            f"{result.target} is computed per row from {', '.join(aggregates)} of far more units below: its "
            f"move is split by the rows' derivatives into {len(found[0])} part(s) of their groups, each "
            "attributed there"])


def _summed_below(graph: nx.DiGraph, aggregate: str, names: list[str], b: RunSamples, c: RunSamples) -> str:
    """The sum at the bottom of plain re-aggregations of ``aggregate`` (a carrier's day from its
    zones' days from the shipments) whose segments keep every unit and group by the key columns
    ``names`` too: its units are the most there are, and its spread the runs' own."""
    segments = graph.graph.get("segments", [])
    node = aggregate
    for _ in range(MAX_DRILL_DEPTH):
        seg = next((d for d in segments if node in (d.get("aggregates") or {})), None)
        entry = ((seg or {}).get("aggregates") or {}).get(node) or {}
        if seg is None or str(entry.get("fn", "")).lower() != "sum" or _drops_rows(seg, b, c):
            break
        others = {a: m for d in segments if d is not seg for a, m in (d.get("aggregates") or {}).items()}
        below = _copied_aggregate(graph, entry.get("input"), others) if entry.get("input") else None
        lower = next((d for d in segments if below in (d.get("aggregates") or {})), None)
        if below is None or lower is None or not set(names) <= {
                _column_name(graph, k) for k in lower.get("group_keys") or []}:
            break
        node = below
    return node


def _rows_where(names: list[str], rows: tuple[tuple, ...]) -> str:
    """A predicate that holds for the groups ``rows`` (values of the key columns ``names``)."""
    if len(names) == 1:
        return f"`{names[0]}` IN ({', '.join(sorted({_key_literal(r[0]) for r in rows}))})"
    by: dict[Any, list[tuple]] = {}
    for r in rows:
        by.setdefault(r[0], []).append(r[1:])
    return " OR ".join(f"(`{names[0]}` = {_key_literal(v)} AND {_rows_where(names[1:], tuple(rest))})"
                       for v, rest in sorted(by.items(), key=lambda kv: str(kv[0])))


def _key_literal(v: Any) -> str:
    """A group key's literal: a date or midnight timestamp as its day, anything else as a sample value."""
    if hasattr(v, "isoformat"):  # a date, a datetime, a Timestamp
        t = pd.Timestamp(v)
        return f"'{t.date().isoformat()}'" if t == t.normalize() else f"'{t}'"
    return _literal(v)


def _mean_of_sum(result: Attribution, desc: dict, inner: Attribution, b: RunSamples, c: RunSamples,
                 config: AttributionConfig | None, cache: dict
                 ) -> tuple[list[AttributionItem], list[str], Attribution | None] | None:
    """A mean over the groups of an aggregate below (the average bill of accounts) moves by its sum
    (``by_sum``, the sum's change over the mean number of groups) and by the number of groups
    (``by_count``, the rest): the sum below, attributed, is shared out to ``by_sum``; when the groups
    made more than a fifth of as much, the count of the units below that make the groups
    (``_groups_below``) is shared out to ``by_count`` too (a join that keeps 588 more accounts with
    small bills: more billed in all, less per account). Then the net of a cause over both parts must
    be worth explaining: a certain change (changed code), or an interval that excludes 0 and a size of
    at least ``min_effect`` of the baseline; more accounts of the same bills move both parts and not
    the mean. The items, the notes saying how, and the count's attribution if used; None otherwise."""
    rows = (result.details or {}).get("rows") or {}
    nb, nc = float(rows.get("baseline") or 0), float(rows.get("current") or 0)
    if not (nb and nc and inner.change) or not all(map(math.isfinite, (result.baseline_value, result.current_value))):
        return None
    by_sum = (result.current_value * nc - result.baseline_value * nb) / ((nb + nc) / 2)
    by_count = result.change - by_sum
    if by_sum * inner.change <= 0:
        return None
    parts = _scaled(inner.attributions, by_sum / inner.change)
    note = f"{result.target} averages the groups of {inner.target}: their sum, computed over far more units " \
           "upstream, attributed there and shared out to the mean"
    if abs(by_count) <= 0.2 * abs(by_sum):
        return (parts, [note + ", the number of groups did not move"], None) if by_sum * result.change > 0 else None
    found = _groups_below(result, desc, nc - nb, b, c, config, cache)
    if found is None:
        return None
    counted, below = found
    net: dict[str, AttributionItem] = {}
    for a in parts + _scaled(below.attributions, by_count / below.change):
        _merge(net, a)
    cfg = config or AttributionConfig()
    if not any(a.mechanism_changed and a.contribution and (a.p_value == 0.0 or (
            (a.ci_low > 0 or a.ci_high < 0) and abs(a.contribution) >= cfg.min_effect * abs(result.baseline_value)))
            for a in net.values()):
        return None
    return _ranked(list(net.values())), [
        note + f" ({by_sum:+,.6g}), and the number of groups ({nc - nb:+,.6g}) as the count of {counted}'s "
               f"units ({by_count:+,.6g})"], below


def _kept_groups(result: Attribution, desc: dict, aggregate: str, b: RunSamples, c: RunSamples) -> str | None:
    """The groups of ``aggregate`` (another segment's) that the outer segment's dropping selections kept in
    either run, as a predicate on one of its group keys (``product_id IN (3, 17, ...)``), for a segment
    whose units are those groups, one row each, sampled whole. None when no key says which units are
    kept (a key value both kept and dropped in one run), when the outer units are a sample of the groups,
    or when a selection's code changed (then it is a cause in itself, not a relay)."""
    inner = next((d for d in c.graph.graph.get("segments", []) if aggregate in (d.get("aggregates") or {})), None)
    descs = [next((d for d in r.graph.graph.get("segments", []) if d.get("id") == desc.get("id")), None) for r in (b, c)]
    tables = [_segment_table(r, desc.get("id")) for r in (b, c)]
    if inner is None or any(d is None or float(d.get("rate") or 0) < 1 for d in descs) or any(t is None for t in tables):
        return None
    joins = {j.get("selection"): j for j in desc.get("joins") or []}
    gates = [s for s in desc.get("selections") or [] if joins.get(s, {}).get("drops", True)]
    for s in gates:
        if s not in b.graph or s not in c.graph or \
                b.graph.nodes[s].get("fingerprint") != c.graph.nodes[s].get("fingerprint"):
            return None
    masks = []
    for t in tables:
        m = np.ones(len(t), dtype=bool)
        for s in gates:
            if s not in t.columns:
                return None
            m &= pd.to_numeric(t[s], errors="coerce").fillna(0).to_numpy() == 1
        masks.append(m)
    if result.where:  # the slice of the outer rows, as a mask on the same units
        sliced = _where_masks(result, c, tables)
        if sliced is None:
            return None
        masks = [m & w for m, w in zip(masks, sliced[0])]

    for key in inner.get("group_keys") or []:
        if not all(key in t.columns for t in tables):
            continue
        # one outer unit per group: the outer rows are the groups themselves, not rows joined to them
        if any(t[key].isna().any() or not t[key].is_unique for t in tables):
            continue
        chosen = sorted(set(pd.concat([t.loc[m, key] for t, m in zip(tables, masks)]).astype(object)), key=str)
        if chosen:
            return f"{_column_name(c.graph, key)} IN ({', '.join(_literal(v) for v in chosen)})"
    return None


def _column_name(graph: nx.DiGraph, node: str) -> str:
    """A node's column name as a ``where`` names it (lower case)."""
    return str(graph.nodes[node].get("column") if node in graph else node.rsplit(".", 1)[-1]).lower()


def _where_masks(result: Attribution, c: RunSamples,
                 tables: list[pd.DataFrame]) -> tuple[list[np.ndarray], list[dict[str, str]]] | None:
    """``result.where`` evaluated on each table of the target's units, and each table's columns by the
    name a ``where`` uses (the output's own column before an input's of the same name); None when it
    cannot be evaluated there."""
    graph = c.graph
    output = graph.nodes[result.target].get("output") if result.target in graph else None

    def own(x: str) -> bool:  # the output's own column of a name before an input's of the same name
        return x in graph and output is not None and output in (graph.nodes[x].get("stage"), graph.nodes[x].get("output"))

    masks, keyed = [], []
    for t in tables:
        cols = {_column_name(graph, x): x for x in sorted((x for x in t.columns if not x.startswith("__")), key=own)}
        env = {x: _to_array(t[x]) for x in cols.values()}

        def resolve(nm: str) -> str:
            if nm.lower().split(".")[-1] not in cols:
                raise _ExprError(nm)
            return cols[nm.lower().split(".")[-1]]
        try:
            keep, _ = compile_expression(str(result.where), resolve, {})
            masks.append(_bool(keep(env, len(t)), len(t)) == 1)
        except (_ExprError, RecursionError):
            return None
        keyed.append(cols)
    return masks, keyed


_COPY = re.compile(r"^\s*(?:CAST\(\s*)?(?:coalesce\(\s*)?[\w.`@#]+"
                   r"(?:\s*,\s*(?:CAST\(\s*)?0(?:\.0)?D?(?:\s+AS\s+\w+\))?\s*\))?(?:\s+AS\s+[\w(),]+\))?\s*$",
                   re.IGNORECASE)


_MEANS = ("avg", "mean", "average")


def _read_back_where(result: Attribution, graph: nx.DiGraph, output: str) -> str | None:
    """``result.where`` as a predicate on the columns of ``output``, a row-level output the target's
    output reads back: the same text, when each column it names is one the target's output copies
    unchanged from the read-back column of the same name (``region_weekly.region`` of
    ``shipment_costs.region``). None when a column is derived (``date_trunc('month', week)``),
    renamed, or not the read-back rows' at all."""
    outer = graph.nodes[result.target].get("output") if result.target in graph else None
    columns = ((graph.graph.get("outputs") or {}).get(outer) or {}).get("columns") or []
    cols = {_column_name(graph, x): x for x in columns if x in graph and graph.nodes[x].get("kind") != "aggregate"}
    used: list[tuple[str, str]] = []

    def resolve(nm: str) -> str:
        if nm.lower() not in cols:
            raise _ExprError(nm)
        used.append((nm.lower(), cols[nm.lower()]))
        return cols[nm.lower()]
    try:
        compile_expression(str(result.where), resolve, {})
    except (_ExprError, RecursionError):
        return None
    if not used:
        return None

    def copies(node: str) -> list[str]:  # the column, then the columns it holds as they are
        chain = [node]
        for _ in range(len(graph)):
            copied = [p for p in graph.predecessors(node) if graph.edges[p, node].get("kind") == "direct"]
            if graph.nodes[node].get("subtype") != "identity" or len(copied) != 1 or copied[0] in chain:
                break
            node = copied[0]
            chain.append(node)
        return chain

    # a read-back column, and the columns it holds as they are (the reader may name a view's column)
    held: dict[str, set[str]] = {}
    for x in ((graph.graph.get("outputs") or {}).get(output) or {}).get("columns") or []:
        if x in graph:
            for y in copies(x):
                held.setdefault(y, set()).add(_column_name(graph, x))
    for nm, node in used:
        found = next((held[y] for y in copies(node) if y in held), None)
        if found is None or found != {nm}:
            return None
    return result.where


def _inner_where(result: Attribution, aggregate: str, b: RunSamples, c: RunSamples) -> str | None:
    """``result.where`` (a predicate on the outer output's columns, ``region = 'north'``) as a predicate
    on a group key of the segment that computes ``aggregate`` (``lane_id IN (1, 4, 9)``): the outer
    units carry that key, so the outer sample says which of its values the slice holds. None when no
    single key decides the slice (a key value in the slice in one unit and out of it in another)."""
    inner = next((d for d in c.graph.graph.get("segments", []) if aggregate in (d.get("aggregates") or {})), None)
    outer_b, outer_c = (_segment_table(r, (result.details or {}).get("segment")) for r in (b, c))
    if inner is None or outer_b is None or outer_c is None:
        return None
    found = _where_masks(result, c, [outer_b, outer_c])
    if found is None:
        return None
    masks, keyed = found
    for key in inner.get("group_keys") or []:
        nm = _column_name(c.graph, key)
        if not all(nm in cols for cols in keyed):
            continue
        values = pd.concat([pd.DataFrame({"v": t[cols[nm]].astype(object), "in": m})
                            for t, cols, m in zip((outer_b, outer_c), keyed, masks)]).dropna()
        decided = values.groupby("v")["in"].nunique()
        if len(decided) and (decided == 1).all():
            chosen = sorted(values.loc[values["in"], "v"].unique(), key=str)
            if chosen:
                return f"{nm} IN ({', '.join(_literal(v) for v in chosen)})"
    return _carried_where(result, inner, keyed[-1], b, c)


_CARRIERS = ("max", "min", "first", "first_value", "any_value", "last", "last_value")
_IDENT = re.compile(r"'(?:[^']|'')*'|`[^`]*`|[A-Za-z_][\w.]*")


def _carried_where(result: Attribution, inner: dict, outer_cols: dict[str, str], b: RunSamples,
                   c: RunSamples) -> str | None:
    """``result.where`` on the units below, when each column it names is one the outer units carry
    up from them by ``max()``/``first()`` (a session's device type, the same on each of its events):
    the same predicate on that unit column, by its node id. None when a named column is anything
    else, or when it is not one value per group below in 95% of the groups of both runs' samples
    (a user whose session changed device: the slice of events would not be the slice of sessions)."""
    carried: dict[str, str] = {}
    for token in _IDENT.findall(str(result.where)):
        nm = token.lower().split(".")[-1]
        if token[0] in "'`" or nm not in outer_cols or nm in carried:
            continue
        entry = (inner.get("aggregates") or {}).get(outer_cols[nm]) or {}
        x = entry.get("input")
        if str(entry.get("fn", "")).lower() not in _CARRIERS or not x:
            return None
        carried[nm] = x
    if not carried:
        return None
    keys = list(inner.get("group_keys") or [])
    for run in (b, c):
        t = _segment_table(run, inner.get("id"))
        if t is None or not keys or not set(keys + list(carried.values())) <= set(t.columns):
            return None
        if t.empty:
            continue
        spread = t.groupby(keys, dropna=False)[list(carried.values())].nunique(dropna=False)
        if (spread > 1).any(axis=1).mean() > 0.05:
            return None
    return _IDENT.sub(lambda m: f"`{carried[m.group(0).lower().split('.')[-1]]}`"
                      if m.group(0)[0] not in "'`" and m.group(0).lower().split(".")[-1] in carried
                      else m.group(0), str(result.where))


def _segment_table(run: RunSamples, segment: str | None) -> Any:
    seg = run.segments.get(segment) if segment else None
    return seg.table if seg is not None else None


def _literal(v: Any) -> str:
    """A SQL literal of a sample value: a number as written, anything else (text, a date) quoted."""
    if isinstance(v, (bool, np.bool_)):
        return "TRUE" if v else "FALSE"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return repr(int(v)) if float(v).is_integer() else repr(float(v))
    return "'" + str(v).replace("'", "''") + "'"


def _drops_rows(desc: dict, b: RunSamples, c: RunSamples) -> bool:
    """Whether a segment's selections drop units in either run: a filter, or a join that keeps only
    matches, that some sampled unit failed (an inner join to a dimension every key is in drops none)."""
    joins = {j.get("selection"): j for j in desc.get("joins") or []}
    tables = [_segment_table(r, desc.get("id")) for r in (b, c)]
    for s in desc.get("selections") or []:
        if not joins.get(s, {}).get("drops", True):
            continue
        if any(t is None or s not in t.columns or (pd.to_numeric(t[s], errors="coerce").fillna(0) != 1).any()
               for t in tables):
            return True
    return False


def _copied_aggregate(graph: nx.DiGraph, target: str, others: dict[str, dict]) -> str | None:
    """The aggregate of another segment that a row-level column copies: through columns that each
    hold one other column as it is (``x``, ``CAST(x AS BIGINT)``, ``coalesce(x, 0)``: the same sum).
    Two aggregates joined on their keys (sessions per day LEFT JOIN conversions per day) give an output
    whose columns are such copies; their sum is the aggregate's, over all of its units."""
    node = target
    for _ in range(len(graph)):
        if node in others:
            return node
        d = graph.nodes.get(node) or {}
        inputs = [p for p in graph.predecessors(node) if graph.nodes[p].get("kind") != "selection"] \
            if node in graph else []
        if len(inputs) != 1 or d.get("kind") == "source" or (d.get("expr") and not _COPY.match(str(d["expr"]))):
            return None
        node = inputs[0]
    return None


def drill_down(result: Attribution, b: RunSamples, c: RunSamples, *,
               config: AttributionConfig | None = None, _depth: int = 0,
               _cache: dict | None = None) -> Attribution:
    """Explain items that are aggregates of another segment by that segment's own attribution.

    "The metric moved because the per-customer total moved; the total moved because orders.amount
    drifted": an item whose node is (or derives from) an aggregate ``A`` computed in another
    segment of the same output is replaced by the attribution of ``sum(A)`` (or ``mean(A)`` for an
    avg) in that segment, scaled so that the parts add up to the item's contribution. When that
    inner attribution is not significant the item is kept, with a warning: the aggregate moved by
    chance variation, not through a significant change upstream of it. ``significant`` is then re-judged without that item.
    """
    if _depth >= MAX_DRILL_DEPTH:
        return result
    cache = {} if _cache is None else _cache
    desc = _segment_of(result, c.graph)
    if desc is None:
        return result
    others = {a: meta for d in c.graph.graph.get("segments", []) if d.get("id") != desc.get("id")
              for a, meta in (d.get("aggregates") or {}).items()}
    row_level = {d.get("output"): d for d in c.graph.graph.get("segments", [])
                 if d.get("id") != desc.get("id") and not d.get("aggregates") and d.get("output")}
    if not others and not row_level:
        return result
    # ... or when its own model leaves most of the change unexplained (a slice whose few outer rows
    # moved with the units below them) and the units below explain more of it
    poor = abs(result.unexplained) > 0.5 * abs(result.change)
    if _depth == 0:
        result = _regrouped(result, desc, b, c, config) or result
    # ... or when what it names is mostly its units' number, the rows of an output read back whose rows
    # are groups below (a missing day's groups: the claims it lost are the cause, not the groups)
    # (not a row-level output's: its rows are the units below, whose own attribution it already reads)
    top = result.attributions[0] if result.attributions else None
    rows_only = top is not None and top.node == f"{desc.get('driving')}.__rows__" and \
        desc.get("driving") not in row_level and abs(top.contribution) >= 0.8 * abs(result.change) > 0
    if (not result.significant or poor or rows_only) and _depth == 0:
        relayed = _relay(result, desc, others, row_level, b, c, config, cache) or \
            _relay_count(result, desc, b, c, config, cache) or \
            (_rows_per_group(result, desc, b, c, config, cache) if poor else None) or \
            _through_rows(result, desc, others, b, c, config, cache)
        if relayed is not None and (not result.significant or rows_only or
                                    abs(relayed.unexplained) < abs(result.unexplained)):
            return relayed
    merged: dict[str, AttributionItem] = {}
    order: list[AttributionItem] = []
    warnings = list(result.warnings)
    notes: list[dict] = []
    demoted: set[str] = set()
    confirmed: set[str] = set()  # changed aggregates whose move a significant attribution below explains
    unexplained = result.unexplained
    own_code = {cc.get("node") for cc in result.code_changes}
    # a weakly changed aggregate added because nothing else explained the move (one product's cost
    # x100 shifts 4% of the per-store days below) is explained from below like a changed one
    rescued = set((result.details or {}).get("rescued") or [])
    for item in result.attributions:
        wanted = _significant_item(item) or (item.node in rescued and item.contribution != 0)
        agg_node = _upstream_aggregate(c.graph, item.node, others) if wanted else None
        inner_agg, read_back = None, None
        if agg_node is not None:
            fn = str(others[agg_node].get("fn", "sum")).lower()
            inner_agg = {"sum": "sum", "count": "sum", "avg": "mean", "mean": "mean", "average": "mean"}.get(fn)
            if fn == "max" and (flag := _flag_input(agg_node, others, c)) is not None:
                agg_node, inner_agg = flag, "sum"
        elif (found := _row_level_target(item, desc, row_level, c.graph)) is not None:
            agg_node, inner_agg = found
            read_back = c.graph.nodes[agg_node].get("output") if agg_node in c.graph else None
        elif (found := _group_count_target(item, desc, c)) is not None:
            agg_node, inner_agg = found
        if agg_node is None or inner_agg is None:
            order.append(item)
            continue
        if item.node in own_code:  # its own expression changed: that is a cause in itself, not a relay
            warnings.append(f"{item.node} changed its code; not drilled down into {agg_node}, whose change "
                            "may carry part of its contribution")
            order.append(item)
            continue
        # a slice of the outer rows is the slice of the units below whose group key values they carry
        if result.where and ("where", agg_node) not in cache:
            # (the rows of a read-back output carry the columns the slice names: the same slice of them)
            cache[("where", agg_node)] = _read_back_where(result, c.graph, read_back) if read_back \
                else _inner_where(result, agg_node, b, c)
        where = cache.get(("where", agg_node))
        if result.where and where is None:
            warnings.append(f"the slice {result.where!r} is not a set of {agg_node}'s group keys: its "
                            f"drill-down shares out the whole of {agg_node}'s change")
        inner = _cached_below(cache, agg_node, inner_agg, where, b, c, config, _depth + 1)
        if isinstance(inner, Exception):
            warnings.append(f"could not drill down from {item.node} into {agg_node}: {inner}")
            order.append(item)
            continue
        total = sum(a.contribution for a in inner.attributions)
        if not inner.significant or total == 0 or not any(a.contribution for a in inner.attributions):
            warnings.append(
                f"{item.node} ({_fmt(item.contribution, signed=True)}) is not explained by a significant "
                f"change upstream of {agg_node}: the aggregate's change looks like chance variation")
            notes.append({"node": item.node, "aggregate": agg_node, "explained": False,
                          "contribution": item.contribution})
            # chance variation of an aggregate is not a changed mechanism: it must not raise an alarm
            order.append(dataclasses.replace(item, mechanism_changed=False))
            demoted.add(item.node)
            continue
        # the item is a share of the aggregate's change (all of it, for a plain re-aggregation): each
        # part takes that share, and so does what the parts leave unexplained below (chance variation
        # there stays unexplained here, not spread over the causes). Shares of a change the parts
        # largely cancel out are shares of the parts' total instead
        below = inner.change if inner.change * total > 0 and abs(inner.change) >= 0.5 * abs(total) else total
        f = item.contribution / below
        # (not the float noise of a term that did not move)
        parts = _scaled([a for a in inner.attributions if abs(a.contribution) > 1e-9 * abs(total)], f)
        order.extend(parts)
        unexplained += item.contribution - sum(a.contribution for a in parts)
        text = ", ".join(f"{a.node} ({_fmt(a.contribution, signed=True)})" for a in parts[:5])
        warnings.append(f"drilled down: {item.node} ({_fmt(item.contribution, signed=True)}) -> {text}")
        notes.append({"node": item.node, "aggregate": agg_node, "explained": True,
                      "contribution": item.contribution,
                      "parts": {a.node: a.contribution for a in parts}})
        # ... when the metric itself moved its way, by half of it at least: a ratio of two sums that a
        # price rise scaled alike did not move, and a model's small error in one of them is no cause
        if item.mechanism_changed and (where is not None or not result.where) and \
                abs(item.contribution) >= (config or AttributionConfig()).min_effect * abs(result.baseline_value) \
                and item.contribution * result.change > 0 and abs(result.change) >= 0.5 * abs(item.contribution):
            confirmed.add(item.node)
    if not notes:
        return result
    for a in order:
        _merge(merged, a)
    items = _ranked(list(merged.values()))
    details = dict(result.details or {})
    details["drilldown"] = notes
    significant = result.significant
    sig = details.get("significance")
    if demoted and sig:
        still = {k: v for k, v in sig["items"].items() if k not in demoted}
        significant = bool(significant and (sig["metric"] or any(still.values())))  # demoting never raises it
    if confirmed and sig:
        # the bootstrap of a few aggregated units (the top 3 products of each of 3 regions) is too rough
        # to tell their aggregate's share from 0; the units below it, many more, can: a move of the
        # aggregate they explain significantly is real, as it was before intervals were asked to exclude 0
        details["significance"] = {**sig, "items": {**sig["items"], **{k: True for k in confirmed}}}
        significant = True
    return dataclasses.replace(result, attributions=items, warnings=warnings, details=details,
                               significant=significant, unexplained=unexplained)
