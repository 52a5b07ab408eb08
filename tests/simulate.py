"""A known structural model of a revenue job, written out in the formats of ``docs/internals.md``.

The job: ``orders`` (order_id, amount, currency, country) inner/left-joined to ``fx`` (currency -> rate),
filtered on ``amount > 0``, ``amount_usd = amount * rate``, ``revenue = sum(amount_usd)`` by country,
written to the output ``report``. ``make_pair(fault, seed)`` gives (graph, baseline, current) with one
injected fault; the attribution only ever sees the graph and the sample tables.

Faults and the node that is their true cause:
"""
from __future__ import annotations

import hashlib

import networkx as nx
import numpy as np
import pandas as pd

from spark_causal.attribution import RunSamples, SegmentSamples

FAULTS = {
    "amount_drift": "orders.amount",      # one country's amounts rise 30%
    "currency_mix": "orders.currency",    # EUR/GBP -> USD shift in DE, FR and GB
    "fx_corrupt": "fx.rate",              # one FX rate x100
    "formula": "report.amount_usd",       # amount * rate -> amount * rate * 0.9 (code change)
    "filter": "report.filter1",           # amount > 0 -> amount > 40 (code change)
    "nulls": "orders.amount",             # 10% of amounts become NULL (dropped by the filter)
    "volume": "orders.__rows__",          # 20% more orders, same distribution
    "aa": None,                           # nothing changed (different seed only)
}

COUNTRIES = ["DE", "FR", "US", "GB", "JP"]
COUNTRY_P = [0.3, 0.2, 0.3, 0.12, 0.08]
CURRENCY_GIVEN_COUNTRY = {
    "DE": {"EUR": 0.88, "USD": 0.1, "CHF": 0.02},
    "FR": {"EUR": 0.9, "USD": 0.1},
    "US": {"USD": 0.95, "EUR": 0.05},
    "GB": {"GBP": 0.85, "EUR": 0.1, "USD": 0.05},
    "JP": {"JPY": 0.9, "USD": 0.1},
}
FX = {"EUR": 1.08, "USD": 1.0, "GBP": 1.27, "JPY": 0.0067}  # CHF is missing: unmatched by the join


def _fp(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def build_graph(*, formula: str = "(amount * rate)", threshold: str = "0.0", join: str = "inner",
                extra: int = 0) -> nx.DiGraph:
    g = nx.DiGraph()

    def src(table, col, dtype):
        g.add_node(f"{table}.{col}", kind="source", column=col, dtype=dtype, table=table,
                   subtype="column", fingerprint=_fp(f"{table}.{col}:{dtype}"), expr=col)

    def stage(col, expr, kind="stage", subtype="transformation", dtype="double", **kw):
        g.add_node(f"report.{col}", kind=kind, column=col, dtype=dtype, stage="report", subtype=subtype,
                   expr=expr, fingerprint=_fp(expr), **kw)

    for col, dt in (("order_id", "bigint"), ("amount", "double"), ("currency", "string"),
                    ("country", "string")):
        src("orders", col, dt)
    src("fx", "currency", "string")
    src("fx", "rate", "double")
    usd_expr = formula
    for i in range(1, extra + 1):
        src("orders", f"x{i}", "double")
        prev = f"s{i - 1} + " if i > 1 else ""
        stage(f"s{i}", f"({prev}(x{i} * 0.001))")
    if extra:
        usd_expr = f"({formula} + s{extra})"
    stage("join1", "(currency = currency)", kind="selection", subtype="join", dtype="boolean",
          join_type=join)
    stage("filter1", f"(amount > {threshold})", kind="selection", subtype="filter", dtype="boolean")
    stage("amount_usd", usd_expr)
    g.add_node("report.country", kind="stage", column="country", dtype="string", stage="report",
               subtype="identity", expr="country", fingerprint=_fp("country"), output="report")
    g.add_node("report.revenue", kind="aggregate", column="revenue", dtype="double", stage="report",
               subtype="sum", expr="sum(amount_usd)", fingerprint=_fp("sum(amount_usd)"),
               output="report")
    e = g.add_edge
    e("orders.currency", "report.join1", kind="join", subtype="join")
    e("fx.currency", "report.join1", kind="join", subtype="join")
    e("orders.amount", "report.filter1", kind="filter", subtype="filter")
    e("orders.amount", "report.amount_usd", kind="direct", subtype="transformation")
    e("fx.rate", "report.amount_usd", kind="direct", subtype="transformation")
    e("report.join1", "report.amount_usd", kind="join", subtype="join")
    for i in range(1, extra + 1):
        e(f"orders.x{i}", f"report.s{i}", kind="direct", subtype="transformation")
        if i > 1:
            e(f"report.s{i - 1}", f"report.s{i}", kind="direct", subtype="transformation")
    if extra:
        e(f"report.s{extra}", "report.amount_usd", kind="direct", subtype="transformation")
    e("report.amount_usd", "report.revenue", kind="direct", subtype="aggregation")
    e("orders.country", "report.revenue", kind="group", subtype="group_by")
    e("orders.country", "report.country", kind="direct", subtype="identity")
    e("report.filter1", "report.revenue", kind="filter", subtype="filter")
    e("report.join1", "report.revenue", kind="join", subtype="join")
    nodes = ["orders.order_id", "orders.amount", "orders.currency", "orders.country", "fx.rate"]
    nodes += [f"orders.x{i}" for i in range(1, extra + 1)]
    nodes += [f"report.s{i}" for i in range(1, extra + 1)] + ["report.amount_usd"]
    g.graph["outputs"] = {"report": {"columns": ["report.country", "report.revenue"], "path": None,
                                     "table": "report", "format": "parquet", "mode": "overwrite"}}
    g.graph["sources"] = {"orders": {"path": None, "format": None}, "fx": {"path": None, "format": None}}
    g.graph["segments"] = [{
        "id": "report.seg0", "driving": "orders", "rows": None, "sampled": None, "nodes": nodes,
        "selections": ["report.join1", "report.filter1"],
        "aggregates": {"report.revenue": {"fn": "sum", "input": "report.amount_usd"}},
        "group_keys": ["orders.country"], "output": "report",
        "joins": [{"selection": "report.join1", "type": join, "keys": ["orders.currency"],
                   "other_keys": ["fx.currency"], "columns": ["fx.rate"]}],
    }]
    return g


def simulate_run(run: str, seed: int, *, n: int = 5000, fault: str | None = None,
                 sample_frac: float = 1.0, extra: int = 0, join: str = "inner") -> RunSamples:
    """One run of the job: generate the data, compute every node, keep a hashed sample of units."""
    rng = np.random.default_rng(seed)
    N = int(rng.poisson(n * (1.2 if fault == "volume" else 1.0)))
    country = rng.choice(COUNTRIES, size=N, p=COUNTRY_P)
    currency = np.empty(N, dtype=object)
    for ct in COUNTRIES:
        m = country == ct
        dist = dict(CURRENCY_GIVEN_COUNTRY[ct])
        if fault == "currency_mix" and ct in ("DE", "FR"):
            dist = {k: v for k, v in dist.items()}
            dist["EUR"] -= 0.5
            dist["USD"] += 0.5
        if fault == "currency_mix" and ct == "GB":
            dist = {"GBP": 0.35, "EUR": 0.1, "USD": 0.55}
        currency[m] = rng.choice(list(dist), size=int(m.sum()), p=list(dist.values()))
    fx = dict(FX)
    if fault == "fx_corrupt":
        fx["GBP"] *= 100
    # list prices are set per currency (same nominal level, JPY x150), so the currency matters in USD
    nominal = rng.lognormal(4.0, 0.6, N) * np.where(country == "US", 1.2, 1.0)
    amount = nominal * np.where(currency == "JPY", 150.0, 1.0)
    amount = np.round(amount * np.where(rng.random(N) < 0.06, -1, 1), 2)
    if fault == "amount_drift":
        amount = np.where(country == "DE", np.round(amount * 1.3, 2), amount)
    if fault == "nulls":
        amount = np.where(rng.random(N) < 0.10, np.nan, amount)
    xs = {f"orders.x{i}": rng.normal(10, 2, N) for i in range(1, extra + 1)}
    matched = np.array([c in fx for c in currency])
    rate = np.array([fx.get(c, np.nan) for c in currency])
    if join != "inner":
        pass  # left join: unmatched units keep a NULL rate and still reach the output
    threshold = 40.0 if fault == "filter" else 0.0
    with np.errstate(invalid="ignore"):
        filt = (amount > threshold).astype(int)
    usd = amount * rate
    if fault == "formula":
        usd = usd * 0.9
    s = np.zeros(N)
    stages = {}
    for i in range(1, extra + 1):
        s = s + xs[f"orders.x{i}"] * 0.001
        stages[f"report.s{i}"] = s.copy()
    usd = usd + s
    reach = filt * (matched.astype(int) if join == "inner" else 1)
    contrib = np.where(reach == 1, np.nan_to_num(usd, nan=0.0), 0.0)
    order_id = seed * 10_000_000 + np.arange(N)
    table = pd.DataFrame({
        "orders.order_id": order_id, "orders.amount": amount, "orders.currency": currency,
        "orders.country": country, "fx.rate": rate, **xs, **stages, "report.amount_usd": usd,
        "report.join1": matched.astype(int), "report.filter1": filt,
    })
    h = pd.util.hash_array(order_id.astype(np.int64) % 1_000_003).astype(np.int64)
    table["__unit__"] = h
    table["__weight__"] = 1.0 / sample_frac
    table[f"__contrib__:report.revenue"] = contrib
    if sample_frac < 1.0:
        keep = (np.abs(h) % 10_000) < sample_frac * 10_000
        table = table[keep].reset_index(drop=True)
        table["__weight__"] = N / max(len(table), 1)
    graph = build_graph(formula="((amount * rate) * 0.9)" if fault == "formula" else "(amount * rate)",
                        threshold="40.0" if fault == "filter" else "0.0", join=join, extra=extra)
    # ``sum``/``mean``: the metric over every row, what the run's exact statistics would tell (``attribution.Exact``)
    desc = dict(graph.graph["segments"][0], rows=N, sampled=len(table), sum=float(contrib.sum()),
                mean=float(contrib.sum() / max(reach.sum(), 1)))
    graph.graph["segments"] = [desc]
    return RunSamples(run=run, graph=graph, segments={desc["id"]: SegmentSamples(desc, table)})


def make_pair(fault: str, seed: int, *, n: int = 5000, sample_frac: float = 1.0, extra: int = 0,
              join: str = "inner"):
    """(graph, baseline, current) with ``fault`` injected in the current run."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")
    base = simulate_run("baseline", 2 * seed + 1, n=n, sample_frac=sample_frac, extra=extra, join=join)
    cur = simulate_run("current", 2 * seed + 2, n=n, fault=None if fault == "aa" else fault,
                       sample_frac=sample_frac, extra=extra, join=join)
    return cur.graph, base, cur


def accuracy(seeds=range(5), n: int = 5000, **kw) -> dict:
    """Top-1 / top-3 per fault and the A/A false-alarm rate; prints a table."""
    import time

    from spark_causal.attribution import attribute_samples

    rows = {}
    for fault, truth in FAULTS.items():
        top1 = top3 = sig = 0
        times = []
        for s in seeds:
            g, b, c = make_pair(fault, 1000 + s, n=n, **kw)
            t0 = time.perf_counter()
            res = attribute_samples(g, b, c, "report.revenue")
            times.append(time.perf_counter() - t0)
            nodes = [a.node for a in res.attributions]
            top1 += bool(nodes and nodes[0] == truth)
            top3 += truth in nodes[:3]
            sig += res.significant
        k = len(list(seeds))
        rows[fault] = {"truth": truth, "top1": top1 / k, "top3": top3 / k, "significant": sig / k,
                       "median_s": float(np.median(times)), "max_s": float(np.max(times))}
    return rows


if __name__ == "__main__":  # python -m tests.simulate [n] [seeds]
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    k = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    res = accuracy(range(k), n=n)
    print(f"{'fault':14s} {'truth':20s} top1  top3  significant  median_s  max_s")
    for f, r in res.items():
        print(f"{f:14s} {str(r['truth']):20s} {r['top1']:.2f}  {r['top3']:.2f}  {r['significant']:.2f}"
              f"         {r['median_s']:.2f}      {r['max_s']:.2f}")
