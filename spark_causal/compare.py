"""Compare two stored runs: load what attribution needs, check the runs are comparable, attribute.

Why a module apart from ``attribution``: attribution works on pandas tables and knows nothing of
stores; this layer owns the user-facing checks (unknown runs, failed runs, runs without samples,
unrelated jobs, graphs that differ) so that every entry point (Python, CLI, spark-submit job,
notebook) gives the same clear errors.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import networkx as nx

from .attribution import AttributionConfig, RunSamples, SegmentSamples, attribute_samples
from .errors import SparkCausalError, UnknownOutputError
from .result import Attribution
from .store import Store

NUMERIC = ("tinyint", "smallint", "int", "bigint", "float", "double", "boolean")


def load_samples(store: Store, run: str) -> RunSamples:
    """A run's graph and unit samples, refused clearly when the run cannot be compared."""
    meta = store.meta(run)
    if meta.get("status") == "failed":
        raise SparkCausalError(f"run {run!r} failed ({meta.get('error') or 'no reason recorded'})",
                               hint="attribute between runs whose job succeeded; recapture it with --replace")
    if meta.get("samples") != "present":
        raise SparkCausalError(f"run {run!r} has no unit samples (samples: {meta.get('samples')})",
                               hint="capture it again without --no-samples and with --sample-size > 0")
    graph = store.graph(run)
    segments = {}
    for desc in graph.graph.get("segments", []):
        name = f"samples/{desc['id']}.parquet"
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
    if not set(base_meta.get("outputs", [])) & set(cur_meta.get("outputs", [])):
        raise SparkCausalError(
            f"runs {baseline!r} and {current!r} share no output: they look like different jobs",
            hint="compare two runs of the same job")
    b, c = load_samples(s, baseline), load_samples(s, current)
    node = c.graph.nodes.get(target)
    if node is None or not node.get("output"):
        outs = [n for n, d in c.graph.nodes(data=True) if d.get("output")]
        raise UnknownOutputError(f"unknown target {target!r} in run {current!r}",
                                 hint=f"use an output column id, e.g. {', '.join(outs[:8])}")
    if target not in b.graph:
        raise UnknownOutputError(f"target {target!r} is not in the baseline run {baseline!r}",
                                 hint="the job's outputs changed between the runs; pick a column both runs have")
    dtype = str(node.get("dtype", ""))
    if agg != "count" and not (dtype in NUMERIC or dtype.startswith("decimal")):
        raise SparkCausalError(f"target {target!r} is not numeric (type {dtype})",
                               hint="choose a numeric output column, or use --agg count")
    return b, c


def attribute(store: str | Store, baseline: str, current: str, target: str, agg: str = "sum",
              where: str | None = None, *, spark: Any = None, config: AttributionConfig | None = None) -> Attribution:
    """Why did ``agg(target)`` move from run ``baseline`` to run ``current``?

    >>> res = spark_causal.attribute("./store", "2026-11-23", "2026-11-24", "revenue.revenue")  # doctest: +SKIP
    >>> print(res.summary())                                                                   # doctest: +SKIP

    ``target`` is an output column id (``<output>.<column>``); ``where`` a SQL predicate on the
    output's columns (``"country = 'DE'"``). Nothing is written into the runs read.
    """
    b, c = load_pair(store, baseline, current, target, agg, spark=spark)
    result = attribute_samples(c.graph, b, c, target, agg=agg, where=where, config=config)
    extra = graph_differences(b.graph, c.graph)
    return dataclasses.replace(result, warnings=list(result.warnings) + extra) if extra else result
