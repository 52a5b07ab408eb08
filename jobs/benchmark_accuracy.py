"""Fault-injection benchmark: how often does spark-causal name the true cause of a metric shift?

    python jobs/benchmark_accuracy.py [--quick] [--seeds N] [--seed-base 1000] [--out DIR]
                                      [--scenarios PATTERN ...] [--dowhy auto|all|none]
                                      [--workdir DIR [--reuse]]

For every scenario of ``jobs/scenarios.py`` and every seed, the benchmark generates baseline data and
current data (different data seeds; the current run also gets the scenario's faults or code change),
runs the pipeline under ``spark_causal.capture`` for both runs in one SparkSession, and asks each method
for a ranked list of causes of the change of the target metric:

* ``spark-causal``: ``spark_causal.attribute`` (nodes ranked by |contribution|, zero contributions dropped);
* ``marginal-drift``: every node of the target's segments ranked by the two-sample drift of its marginal
  between the runs' sample tables (weighted KS statistic for numeric columns, total variation distance
  for categorical ones and selections) plus a volume candidate ``<driving>.__rows__`` ranked by the
  relative change in driving rows; "significant" when any p-value passes Bonferroni at 1%;
* ``upstream-drift``: the significantly drifted nodes that have no significantly drifted ancestor on the
  DAG first (by drift), then the other significant nodes, then the rest;
* ``dowhy``: ``dowhy.gcm.distribution_change`` with default settings on the same samples (at most 2,000
  units per run, drawn with probability proportional to the sample weights, since dowhy takes no weights)
  and the target segment's DAG (join keys -> looked-up columns added), the unit's contribution as the
  target node; "significant" when it reports any mechanism change. It is slow, so it runs on a subset
  (see ``--dowhy``); its rows say on how many pairs it ran.

Every method sees the same stored graph and samples, and nothing else: the true cause is derived from
the graphs afterwards (see ``scenarios.py``) and used only for scoring. Reported seeds start at 1000;
development used seeds below 100.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
from scipy import stats as sstats

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import scenarios as S

METHODS = ("spark-causal", "marginal-drift", "upstream-drift", "dowhy")
ALPHA = 0.01
MAX_CATEGORIES = 100


# ============================================================================ truth (scoring only)
def truth_nodes(scenario: S.Scenario, g_base: nx.DiGraph, g_cur: nx.DiGraph, target: str) -> list[str]:
    """The true root-cause node ids, by the scenario's rules, from the two captured graphs."""
    out = []
    for rule in scenario.truth:
        if rule[0] == "column":
            node = f"{rule[1]}.{rule[2]}"
            if node not in g_cur:
                raise RuntimeError(f"true cause {node} is not a node of the captured graph")
            out.append(node)
        elif rule[0] == "code":
            changed = [n for n, d in g_cur.nodes(data=True) if n in g_base and d.get("kind") != "source"
                       and d.get("fingerprint") != g_base.nodes[n].get("fingerprint")]
            top = [n for n in changed if not (nx.ancestors(g_cur, n) & set(changed))]
            if len(top) != 1:
                raise RuntimeError(f"expected one changed fingerprint, found {changed}")
            out.append(top[0])
        elif rule[0] == "volume":
            seg = _target_segment(g_cur, target)
            out.append(f"{seg['driving']}.__rows__")
        elif rule[0] == "rows":
            out.append(f"{rule[1]}.__rows__")
        elif rule[0] == "join":
            joins = [n for n in g_cur.successors(f"{rule[1]}.{rule[2]}") if g_cur.nodes[n].get("subtype") == "join"]
            if len(joins) != 1:
                raise RuntimeError(f"expected one join reading {rule[1]}.{rule[2]}, found {joins}")
            out.append(joins[0])
    return out


def _target_segment(graph: nx.DiGraph, target: str) -> dict:
    segs = graph.graph.get("segments", [])
    for seg in segs:
        if target in seg.get("aggregates", {}):
            return seg
    output = target.split(".", 1)[0]
    for seg in segs:
        if seg.get("output") == output:
            return seg
    raise RuntimeError(f"no segment for {target}")


# ============================================================================ methods
class Inputs:
    """What every method sees: the two runs' graphs, segment descriptions and sample tables."""

    def __init__(self, store_path: str, base: str, cur: str, target: str):
        from spark_causal.store import Store

        self.store_path, self.base, self.cur, self.target = store_path, base, cur, target
        store = Store(store_path)
        self.g_base, self.g_cur = store.graph(base), store.graph(cur)
        output = target.split(".", 1)[0]
        tseg = _target_segment(self.g_cur, target)
        others = [s for s in self.g_cur.graph["segments"] if s.get("output") == output and s["id"] != tseg["id"]]
        self.segments = [tseg] + others
        base_ids = {s["id"] for s in self.g_base.graph["segments"]}
        self.samples = {}
        for seg in self.segments:
            if seg["id"] in base_ids:
                self.samples[seg["id"]] = (store.read_parquet(base, f"samples/{seg['id']}.parquet"),
                                           store.read_parquet(cur, f"samples/{seg['id']}.parquet"))
        self.base_rows = {s["id"]: s["rows"] for s in self.g_base.graph["segments"]}


def method_spark_causal(inp: Inputs, seed: int) -> tuple[list[str], bool, dict]:
    import spark_causal
    from spark_causal.attribution import AttributionConfig

    res = spark_causal.attribute(inp.store_path, inp.base, inp.cur, inp.target, config=AttributionConfig(seed=seed))
    ranked = [a.node for a in res.attributions if a.contribution != 0]
    info = {"top": [(a.node, round(float(a.contribution), 3)) for a in res.attributions[:4]],
            "change": res.change, "unexplained": res.unexplained}
    return ranked, bool(res.significant), info


def _weighted_ks(x0, w0, x1, w1) -> float:
    allv = np.concatenate([x0, x1])
    order = np.argsort(allv, kind="mergesort")
    grid = allv[order]
    def cdf(x, w):
        o = np.argsort(x, kind="mergesort")
        cw = np.cumsum(w[o]) / w.sum()
        idx = np.searchsorted(x[o], grid, side="right")
        return np.where(idx > 0, cw[np.maximum(idx - 1, 0)], 0.0)
    return float(np.max(np.abs(cdf(x0, w0) - cdf(x1, w1)))) if len(grid) else 0.0


def _kish(w: np.ndarray) -> float:
    return float(w.sum() ** 2 / (w ** 2).sum()) if len(w) and (w ** 2).sum() > 0 else 0.0


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _drift(col0: pd.Series, w0: np.ndarray, col1: pd.Series, w1: np.ndarray, selection: bool) -> tuple[float, float]:
    """(statistic, p-value) of the drift of one marginal, NULL treated as a value of its own."""
    n0, n1 = _kish(w0), _kish(w1)
    if n0 < 2 or n1 < 2:
        return 0.0, 1.0
    null0, null1 = col0.isna().to_numpy(), col1.isna().to_numpy()
    if _is_numeric(col0) and _is_numeric(col1) and not selection and col0.nunique() > 10:
        # numeric: KS on the non-NULL values, combined with the NULL share by taking the larger TVD-like gap
        x0, x1 = col0.to_numpy(float)[~null0], col1.to_numpy(float)[~null1]
        d = _weighted_ks(x0, w0[~null0], x1, w1[~null1]) if len(x0) and len(x1) else 0.0
        nn0, nn1 = w0[null0].sum() / w0.sum(), w1[null1].sum() / w1.sum()
        stat = max(d, abs(nn0 - nn1))
        ne = n0 * n1 / (n0 + n1)
        p = float(sstats.kstwo.sf(stat, max(1, round(ne)))) if stat > 0 else 1.0
        return stat, p
    a0 = col0.astype(str).where(~null0, "<NULL>")
    a1 = col1.astype(str).where(~null1, "<NULL>")
    s0 = pd.Series(w0, index=a0.to_numpy()).groupby(level=0).sum()
    s1 = pd.Series(w1, index=a1.to_numpy()).groupby(level=0).sum()
    both = pd.concat([s0, s1], axis=1).fillna(0.0)
    cats = both.index
    p0 = both.iloc[:, 0].to_numpy() / w0.sum()
    p1 = both.iloc[:, 1].to_numpy() / w1.sum()
    tvd = 0.5 * float(np.abs(p0 - p1).sum())
    if len(cats) < 2:
        return tvd, 1.0
    table = np.vstack([p0 * n0, p1 * n1])
    table = table[:, table.sum(axis=0) > 0]
    try:
        p = float(sstats.chi2_contingency(table, correction=False)[1])
    except ValueError:
        p = 1.0
    return tvd, p


def _drift_table(inp: Inputs) -> list[dict]:
    """Drift of every candidate node's marginal, plus the volume candidate."""
    rows, seen = [], set()
    for seg in inp.segments:
        if seg["id"] not in inp.samples:
            continue
        t0, t1 = inp.samples[seg["id"]]
        w0 = t0["__weight__"].to_numpy(float)
        w1 = t1["__weight__"].to_numpy(float)
        ids = set(seg.get("identifiers", []))
        for node in list(seg["nodes"]) + list(seg["selections"]):
            if node in seen or node in ids or node not in t0 or node not in t1:
                continue
            seen.add(node)
            c0, c1 = t0[node], t1[node]
            if pd.api.types.is_integer_dtype(c0) and c1.nunique() > 20:  # keys of new facts are not drift
                new = ~c1.dropna().isin(set(c0.dropna().unique()))
                if new.mean() > 0.5:
                    continue
            if not _is_numeric(c0) and pd.concat([c0, c1]).nunique() > MAX_CATEGORIES:
                continue  # free text and keys: a marginal comparison of them means nothing
            stat, p = _drift(c0, w0, c1, w1, node in seg["selections"])
            rows.append({"node": node, "stat": stat, "p": p})
        vol = f"{seg['driving']}.__rows__"
        if vol not in seen:
            seen.add(vol)
            nb, nc = inp.base_rows.get(seg["id"]) or 0, seg.get("rows") or 0
            if nb and nc:
                z = (nc - nb) / math.sqrt(nc + nb)
                rows.append({"node": vol, "stat": abs(nc / nb - 1), "p": float(2 * sstats.norm.sf(abs(z)))})
    m = max(1, len(rows))
    for r in rows:
        r["significant"] = r["p"] < ALPHA / m
    return rows


def method_marginal_drift(inp: Inputs, seed: int) -> tuple[list[str], bool, dict]:
    rows = sorted(_drift_table(inp), key=lambda r: (-r["stat"], r["p"]))
    return [r["node"] for r in rows if r["stat"] > 0], any(r["significant"] for r in rows), \
        {"top": [(r["node"], round(r["stat"], 4)) for r in rows[:4]]}


def method_upstream_drift(inp: Inputs, seed: int) -> tuple[list[str], bool, dict]:
    rows = _drift_table(inp)
    sig = {r["node"] for r in rows if r["significant"]}
    g = inp.g_cur

    def upstream(node: str) -> bool:
        return node not in g or not (nx.ancestors(g, node) & sig)

    key = lambda r: (0 if r["node"] in sig and upstream(r["node"]) else 1 if r["node"] in sig else 2, -r["stat"])
    rows.sort(key=key)
    return [r["node"] for r in rows if r["stat"] > 0], bool(sig), \
        {"top": [(r["node"], round(r["stat"], 4), r["node"] in sig) for r in rows[:4]]}


def _dowhy_frame(t: pd.DataFrame, cols: list[str], target_col: str, n: int, rng) -> pd.DataFrame:
    w = t["__weight__"].to_numpy(float)
    idx = rng.choice(len(t), size=min(n, len(t)), replace=True, p=w / w.sum())
    df = t.iloc[idx][cols + [target_col]].reset_index(drop=True)
    for c in df.columns:
        s = df[c]
        if _is_numeric(s):
            df[c] = s.astype(float).fillna(0.0)
        elif pd.api.types.is_bool_dtype(s):
            df[c] = s.astype(float)
        elif len(s) and hasattr(s.dropna().iloc[0] if s.notna().any() else None, "toordinal"):
            df[c] = s.map(lambda v: float(v.toordinal()) if v is not None and pd.notna(v) else 0.0)
        else:
            df[c] = s.astype(str).where(s.notna(), "NULL")
    return df


def dowhy_pair(store_path: str, base: str, cur: str, target: str, seed: int) -> dict:
    """dowhy on one pair, in a worker process (it is slow; the main process goes on capturing)."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("dowhy").setLevel(logging.ERROR)
    t = time.perf_counter()
    try:
        inp = Inputs(store_path, base, cur, target)
        ranked, significant, info = method_dowhy(inp, seed)
        err = None
    except Exception as exc:  # noqa: BLE001
        ranked, significant, info, err = [], False, {}, f"{type(exc).__name__}: {str(exc)[:200]}"
    return {"ranked": ranked, "significant": significant, "info": info, "error": err,
            "seconds": time.perf_counter() - t}


def method_dowhy(inp: Inputs, seed: int) -> tuple[list[str], bool, dict]:
    from dowhy import gcm

    gcm.config.disable_progress_bars()
    gcm.config.set_default_n_jobs(1)  # one core: the benchmark's Spark session needs the others

    seg = inp.segments[0]
    t0, t1 = inp.samples[seg["id"]]
    ids = set(seg.get("identifiers", []))
    cand = [n for n in list(seg["nodes"]) + list(seg["selections"]) if n not in ids and n in t0 and n in t1]
    # drop columns that are constant in both runs (nothing to learn, and kernel tests fail on them)
    cand = [n for n in cand if pd.concat([t0[n], t1[n]]).astype(str).nunique() > 1]
    cand = [n for n in cand if _is_numeric(t0[n]) or pd.concat([t0[n], t1[n]]).nunique() <= MAX_CATEGORIES]
    target_col = f"__contrib__:{inp.target}"
    target_node = "__contribution__"
    g = inp.g_cur
    dag = nx.DiGraph()
    dag.add_nodes_from(cand + [target_node])
    cset = set(cand)
    for v in cand:  # nearest ancestors of v inside the candidate set
        stack, seen = list(g.predecessors(v)) if v in g else [], set()
        while stack:
            u = stack.pop()
            if u in seen:
                continue
            seen.add(u)
            if u in cset:
                dag.add_edge(u, v)
            elif u in g:
                stack.extend(g.predecessors(u))
    for j in seg.get("joins", []):  # a looked-up column is a function of the driving-side keys
        for k in j.get("keys", []):
            for c in list(j.get("columns", [])) + [j["selection"]]:
                if k in cset and c in cset and k != c:
                    dag.add_edge(k, c)
    agg = seg["aggregates"].get(inp.target, {})
    parents = [agg.get("input")] + list(seg["selections"])
    for p in parents:
        if p in cset:
            dag.add_edge(p, target_node)
    if not nx.is_directed_acyclic_graph(dag):
        raise RuntimeError("segment graph is not acyclic")
    rng = np.random.default_rng(seed)
    old = _dowhy_frame(t0, cand, target_col, 2000, rng).rename(columns={target_col: target_node})
    new = _dowhy_frame(t1, cand, target_col, 2000, rng).rename(columns={target_col: target_node})
    np.random.seed(seed)
    gcm.util.general.set_random_seed(seed)
    model = gcm.InvertibleStructuralCausalModel(dag)
    gcm.auto.assign_causal_mechanisms(model, old)
    contrib, changed, _, _ = gcm.distribution_change(model, old, new, target_node, return_additional_info=True)
    ranked = sorted(((n, v) for n, v in contrib.items() if n != target_node and v != 0), key=lambda kv: -abs(kv[1]))
    return [n for n, _ in ranked], any(changed.get(n, False) for n in cand), \
        {"top": [(n, round(float(v), 5)) for n, v in ranked[:4]], "nodes": len(cand)}


METHOD_FNS: dict[str, Callable[[Inputs, int], tuple[list[str], bool, dict]]] = {
    "spark-causal": method_spark_causal, "marginal-drift": method_marginal_drift,
    "upstream-drift": method_upstream_drift, "dowhy": method_dowhy,
}


# ============================================================================ the run
def _select(patterns: list[str] | None, quick: bool) -> list[S.Scenario]:
    chosen = [s for s in S.SCENARIOS if s.quick or not quick]
    if patterns:
        chosen = [s for s in chosen if any(fnmatch.fnmatch(s.id, p) or s.pipeline == p or s.id == p
                                           for p in patterns)]
    return chosen


def _dowhy_wanted(mode: str, quick: bool, scenario: S.Scenario, seed_index: int) -> bool:
    """Which pairs dowhy runs on (fixed in advance, never from results): it costs 10-100 s a pair."""
    if mode == "none":
        return False
    if mode == "all":
        return True
    if quick:  # the fault pairs of the two-segment pipeline (smallest graph; it runs first, so they overlap)
        return scenario.pipeline == "rebates" and scenario.kind != "aa" and seed_index == 0
    # every scenario at the first seed, except TPC-H (a 20-node segment: minutes per pair)
    return seed_index == 0 and scenario.pipeline != "tpch"


def _capture(spark, pipeline: S.Pipeline, store: str, run: str, data: Path, out: Path, code: dict,
             sample_size: int, reuse: bool = False) -> float:
    import spark_causal

    if reuse and (Path(store) / "runs" / run / "_SUCCESS").exists():
        return 0.0  # captured by an earlier invocation with the same --workdir: only the methods run again
    t = time.perf_counter()
    with spark_causal.capture(spark, store=store, run=run, sample_size=sample_size, seed=0, replace=True):
        pipeline.job(spark, str(data), str(out), **code)
    return time.perf_counter() - t


def run_benchmark(spark, *, quick: bool = False, seeds: int | None = None, seed_base: int = 1000,
                  out: str | None = None, scenarios: list[str] | None = None, dowhy: str = "auto",
                  workdir: str | None = None, sample_size: int = 20_000, reuse: bool = False,
                  log: Callable[[str], None] = print) -> dict:
    """Run the benchmark in ``spark``; returns the report dict (also written to ``out`` when given)."""
    n_seeds = seeds if seeds is not None else (1 if quick else 5)
    seed_list = [seed_base + i for i in range(n_seeds)]
    chosen = _select(scenarios, quick)
    own_tmp = workdir is None
    work = Path(workdir or tempfile.mkdtemp(prefix="spark-causal-bench-"))
    cache = Path(os.environ.get("SPARK_CAUSAL_BENCH_CACHE", str(Path(tempfile.gettempdir()) / "spark-causal-bench-cache")))
    results: list[dict] = []
    pending: list[tuple[dict, Any]] = []
    t_start = time.perf_counter()
    import concurrent.futures as cf
    import multiprocessing as mp

    pool = cf.ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) if dowhy != "none" else None
    try:
        for pname in S.PIPELINES:
            pscen = [s for s in chosen if s.pipeline == pname]
            if not pscen:
                continue
            pipeline = S.PIPELINES[pname]
            store = str(work / pname / "store")
            for si, seed in enumerate(seed_list):
                base_run = f"base-{seed}"
                bdata = work / pname / f"data-{base_run}"
                if not (reuse and (Path(store) / "runs" / base_run / "_SUCCESS").exists()):
                    pipeline.data(bdata, seed * 100, (), cache=cache)
                tb = _capture(spark, pipeline, store, base_run, bdata, work / pname / "out", {}, sample_size, reuse)
                shutil.rmtree(bdata, ignore_errors=True)
                for k, sc in enumerate(S.SCENARIOS):
                    if sc not in pscen:
                        continue
                    cur_run = f"{sc.name}-{seed}"
                    cdata = work / pname / f"data-{cur_run}"
                    if not (reuse and (Path(store) / "runs" / cur_run / "_SUCCESS").exists()):
                        pipeline.data(cdata, seed * 100 + k + 1, sc.faults, cache=cache)
                    tc = _capture(spark, pipeline, store, cur_run, cdata, work / pname / "out", sc.code, sample_size,
                                  reuse)
                    shutil.rmtree(cdata, ignore_errors=True)
                    rec = _evaluate(sc, pipeline, store, base_run, cur_run, seed)
                    rec["capture_s"] = round(tb + tc, 2)
                    results.append(rec)
                    log(_line(rec))
                    if pool is not None and "error" not in rec and _dowhy_wanted(dowhy, quick, sc, si):
                        pending.append((rec, pool.submit(dowhy_pair, store, base_run, cur_run, pipeline.target, seed)))
        if pending:
            log(f"waiting for dowhy ({sum(not f.done() for _, f in pending)} of {len(pending)} pairs left) ...")
        for rec, fut in pending:
            r = fut.result()
            _score(rec, "dowhy", r["ranked"], r["significant"], r["info"], r["error"], r["seconds"])
            log(_line(rec, only="dowhy"))
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)
    report = summarize(results, quick=quick, seeds=seed_list, dowhy=dowhy,
                       elapsed=time.perf_counter() - t_start)
    if out:
        write_report(report, out)
    return report


def _evaluate(sc: S.Scenario, pipeline: S.Pipeline, store: str, base_run: str, cur_run: str, seed: int) -> dict:
    rec: dict[str, Any] = {"scenario": sc.id, "kind": sc.kind, "seed": seed, "aa": sc.kind == "aa", "methods": {}}
    try:
        inp = Inputs(store, base_run, cur_run, pipeline.target)
        truth = truth_nodes(sc, inp.g_base, inp.g_cur, pipeline.target)
    except Exception as exc:  # noqa: BLE001 - a broken capture is a failure of the pair, reported as such
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    rec["truth"] = truth
    for name, fn in METHOD_FNS.items():
        if name == "dowhy":  # run apart, in a worker process
            continue
        t = time.perf_counter()
        try:
            ranked, significant, info = fn(inp, seed)
            err = None
        except Exception as exc:  # noqa: BLE001 - a method that fails scores a miss
            ranked, significant, info, err = [], False, {}, f"{type(exc).__name__}: {str(exc)[:200]}"
            if os.environ.get("SPARK_CAUSAL_BENCH_DEBUG"):
                traceback.print_exc()
        _score(rec, name, ranked, significant, info, err, time.perf_counter() - t)
    return rec


def _score(rec: dict, name: str, ranked: list[str], significant: bool, info: dict, err: str | None,
           elapsed: float) -> None:
    truth = rec["truth"]
    m = {"seconds": round(elapsed, 3), "significant": significant, "first": ranked[0] if ranked else None,
         "info": info}
    if err:
        m["error"] = err
    if not rec["aa"]:
        ranks = {n: (ranked.index(n) + 1 if n in ranked else None) for n in truth}
        m["ranks"] = ranks
        m["top1"] = bool(ranked) and ranked[0] in truth
        m["top3"] = all(r is not None and r <= 3 for r in ranks.values())
    rec["methods"][name] = m


def _line(rec: dict, only: str | None = None) -> str:
    if "error" in rec:
        return f"{rec['scenario']:<36} seed {rec['seed']}: ERROR {rec['error']}"
    parts = []
    for name, m in rec["methods"].items():
        if only and name != only:
            continue
        if rec["aa"]:
            parts.append(f"{name}={'ALARM' if m['significant'] else 'quiet'}")
        else:
            parts.append(f"{name}={'ok' if m['top1'] else 'top3' if m['top3'] else 'MISS'}")
    tail = "" if only else f"  (capture {rec['capture_s']:.0f}s)"
    return f"{rec['scenario']:<36} seed {rec['seed']}: " + " ".join(parts) + tail


# ============================================================================ report
def summarize(results: list[dict], *, quick: bool, seeds: list[int], dowhy: str, elapsed: float) -> dict:
    methods = {}
    for name in METHODS:
        faults = [r["methods"][name] for r in results if not r["aa"] and name in r.get("methods", {})]
        if name != "dowhy":  # a pair that failed to capture is a miss for every method that runs on all pairs
            faults += [{"top1": False, "top3": False} for r in results if not r["aa"] and "error" in r]
        aas = [r["methods"][name] for r in results if r["aa"] and name in r.get("methods", {})]
        times = [m["seconds"] for r in results for n, m in r.get("methods", {}).items() if n == name]
        if not faults and not aas:
            continue
        methods[name] = {
            "pairs": len(faults), "top1": _rate([m["top1"] for m in faults]), "top3": _rate([m["top3"] for m in faults]),
            "aa_pairs": len(aas), "aa_false_alarms": sum(bool(m["significant"]) for m in aas),
            "aa_false_alarm_rate": _rate([bool(m["significant"]) for m in aas]),
            "median_s": statistics.median(times) if times else None, "max_s": max(times) if times else None,
        }
    per_scenario: dict[str, dict] = {}
    for r in results:
        row = per_scenario.setdefault(r["scenario"], {"kind": r["kind"], "seeds": 0, "errors": 0})
        row["seeds"] += 1
        if "error" in r:
            row["errors"] += 1
            continue
        row.setdefault("truth", r["truth"])
        for name, m in r["methods"].items():
            cell = row.setdefault(name, {"n": 0, "hits": 0, "top3": 0})
            cell["n"] += 1
            if r["aa"]:
                cell["hits"] += int(not m["significant"])  # quiet = right on A/A
            else:
                cell["hits"] += int(m["top1"])
                cell["top3"] += int(m["top3"])
    failures = []
    for r in results:
        if "error" in r:
            failures.append({"scenario": r["scenario"], "seed": r["seed"], "method": "*", "error": r["error"]})
            continue
        for name, m in r["methods"].items():
            bad = m["significant"] if r["aa"] else not m["top1"]
            if bad:
                failures.append({"scenario": r["scenario"], "seed": r["seed"], "method": name,
                                 "truth": r.get("truth"), "first": m.get("first"), "ranks": m.get("ranks"),
                                 "significant": m["significant"], "top": m.get("info", {}).get("top"),
                                 "error": m.get("error")})
    return {"quick": quick, "seeds": seeds, "dowhy_mode": dowhy, "elapsed_s": round(elapsed, 1),
            "methods": methods, "scenarios": per_scenario, "failures": failures, "results": results}


def _rate(xs: list[bool]) -> float | None:
    return round(sum(map(bool, xs)) / len(xs), 4) if xs else None


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def markdown(report: dict) -> str:
    title = (f"Accuracy benchmark ({'quick' if report['quick'] else 'full'}; seeds {report['seeds'][0]}"
             f"..{report['seeds'][-1]}; {report['elapsed_s']:.0f} s)")
    lines = [title, "",
             "| method | fault pairs | top-1 | top-3 | A/A false alarms | median s | max s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, m in report["methods"].items():
        fa = f"{m['aa_false_alarms']}/{m['aa_pairs']} ({_pct(m['aa_false_alarm_rate'])})" if m["aa_pairs"] else "n/a"
        lines.append(f"| {name} | {m['pairs']} | {_pct(m['top1'])} | {_pct(m['top3'])} | {fa} | "
                     f"{m['median_s']:.2f} | {m['max_s']:.2f} |")
    lines += ["", "Per scenario: top-1 hits / pairs (A/A rows: pairs without a false alarm / pairs).", "",
              "| scenario | true cause | " + " | ".join(METHODS) + " |", "|---|---|" + "---:|" * len(METHODS)]
    for sid, row in report["scenarios"].items():
        cells = []
        for name in METHODS:
            c = row.get(name)
            cells.append("-" if c is None else f"{c['hits']}/{c['n']}")
        truth = ", ".join(row.get("truth", [])) or ("(none: A/A)" if row["kind"] == "aa" else "?")
        if row["errors"]:
            truth += f" ({row['errors']} pair(s) failed to capture)"
        lines.append(f"| {sid} | {truth} | " + " | ".join(cells) + " |")
    sc_fail = [f for f in report["failures"] if f["method"] in ("spark-causal", "*")]
    if sc_fail:
        lines += ["", "spark-causal failures:", ""]
        for f in sc_fail:
            if f.get("method") == "*":
                lines.append(f"- {f['scenario']} seed {f['seed']}: pair failed: {f['error']}")
            elif f.get("truth"):
                lines.append(f"- {f['scenario']} seed {f['seed']}: ranked first {f['first']}, truth {f['truth']} "
                             f"at rank {f['ranks']}" + (f" (error: {f['error']})" if f.get("error") else ""))
            else:
                lines.append(f"- {f['scenario']} seed {f['seed']}: A/A false alarm (top: {f['top']})")
    lines += ["", (f"dowhy ran on the pairs chosen by --dowhy {report['dowhy_mode']} "
                   "(auto: quick = the rebates pipeline's fault pairs, first seed; full = every scenario at the "
                   "first seed, TPC-H excepted); its top-1 is over those pairs only.")]
    return "\n".join(lines) + "\n"


def write_report(report: dict, out: str) -> None:
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "benchmark_accuracy.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (Path(out) / "benchmark_accuracy.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small set the test suite runs (a few minutes)")
    ap.add_argument("--seeds", type=int, help="seeds per scenario (default 5, quick 1)")
    ap.add_argument("--seed-base", type=int, default=1000, help="first seed (reported figures: 1000)")
    ap.add_argument("--out", default="benchmark-out", help="folder for benchmark_accuracy.{md,json}")
    ap.add_argument("--scenarios", nargs="*", help="scenario ids, globs or pipeline names")
    ap.add_argument("--dowhy", choices=["auto", "all", "none"], default="auto")
    ap.add_argument("--workdir", help="keep generated data and stores here (default: a temporary folder)")
    ap.add_argument("--reuse", action="store_true",
                    help="with --workdir: reuse runs already captured there, re-running only the methods")
    args = ap.parse_args(argv)
    if args.reuse and not args.workdir:
        ap.error("--reuse needs --workdir")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.appName("spark-causal-benchmark-accuracy")
             .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    import logging

    logging.getLogger("spark_causal").setLevel(logging.CRITICAL)
    report = run_benchmark(spark, quick=args.quick, seeds=args.seeds, seed_base=args.seed_base, out=args.out,
                           scenarios=args.scenarios, dowhy=args.dowhy, workdir=args.workdir, reuse=args.reuse,
                           log=lambda s: print(s, flush=True))
    print()
    print(markdown(report))
    print(f"written to {args.out}/benchmark_accuracy.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
