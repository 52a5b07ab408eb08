"""The CLI (exit codes, outputs of runs/graph/stats) and the graph rendering it prints.

The store holds a small hand-built graph, so nothing here starts Spark.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from spark_causal import cli, render
from spark_causal.errors import UnknownOutputError
from spark_causal.store import Store

STATS_KEYS = ["node", "kind", "stage", "column", "count", "nulls", "mean", "std", "min", "max", "top"]


def revenue_graph() -> nx.DiGraph:
    """orders x fx x customers -> filter -> revenue by country and segment, plus a second output."""
    G = nx.DiGraph()
    for table, columns in {"orders": ["amount", "currency", "country", "status", "c_id"],
                           "fx": ["currency", "rate"], "customers": ["c_id", "segment"]}.items():
        for c in columns:
            G.add_node(f"{table}.{c}", kind="source", table=table, column=c, dtype="string", fingerprint="0" * 16)

    def node(node_id: str, kind: str, **attrs: str) -> None:
        stage, column = node_id.rsplit(".", 1)
        G.add_node(node_id, kind=kind, stage=stage, column=column, dtype="double", fingerprint="1" * 16, **attrs)

    node("paid.filter1", "selection", expr="status = 'paid'")
    node("with_fx.join1", "selection", join_type="inner")
    node("with_fx.amount_usd", "stage", expr="amount * rate")
    node("with_cust.join2", "selection", join_type="leftouter")
    node("with_cust.segment", "stage")
    node("revenue.country", "stage", output="revenue")
    node("revenue.segment", "stage", output="revenue")
    node("revenue.revenue", "aggregate", output="revenue")
    node("fx_audit.rate", "stage", output="fx_audit")
    edges = [("orders.status", "paid.filter1", "direct"), ("orders.currency", "with_fx.join1", "direct"),
             ("fx.currency", "with_fx.join1", "direct"), ("orders.amount", "with_fx.amount_usd", "direct"),
             ("fx.rate", "with_fx.amount_usd", "direct"), ("orders.c_id", "with_cust.join2", "direct"),
             ("customers.c_id", "with_cust.join2", "direct"), ("customers.segment", "with_cust.segment", "direct"),
             ("with_cust.join2", "with_cust.segment", "join"), ("with_fx.amount_usd", "revenue.revenue", "direct"),
             ("paid.filter1", "revenue.revenue", "filter"), ("with_fx.join1", "revenue.revenue", "join"),
             ("orders.country", "revenue.revenue", "group"), ("with_cust.segment", "revenue.revenue", "group"),
             ("orders.country", "revenue.country", "direct"), ("with_cust.segment", "revenue.segment", "direct"),
             ("fx.rate", "fx_audit.rate", "direct")]
    for u, v, kind in edges:
        G.add_edge(u, v, kind=kind, subtype="identity" if kind == "direct" else kind)
    G.graph["outputs"] = {
        "revenue": {"columns": ["revenue.country", "revenue.segment", "revenue.revenue"], "path": "/out/revenue",
                    "table": None, "format": "parquet", "mode": "overwrite"},
        "fx_audit": {"columns": ["fx_audit.rate"], "path": None, "table": "fx_audit", "format": None, "mode": None},
    }
    G.graph["sources"] = {t: {"path": f"/data/{t}", "format": "parquet"} for t in ("orders", "fx", "customers")}
    G.graph["segments"] = [{"id": "revenue.seg0", "output": "revenue"}, {"id": "fx_audit.seg0", "output": "fx_audit"}]
    return G


def stats_frame(G: nx.DiGraph) -> pd.DataFrame:
    rows = []
    for n, a in G.nodes(data=True):
        categorical = n in ("orders.country", "revenue.country")
        rows.append({"node": n, "kind": a["kind"], "stage": a.get("stage"), "column": a["column"],
                     "count": 100, "nulls": 3, "mean": np.nan if categorical else 12.5,
                     "std": np.nan if categorical else 2.0, "min": "DE" if categorical else "1.5",
                     "max": "US" if categorical else "99.0",
                     "top": json.dumps([["US", 60], ["DE", 40]]) if categorical else None})
    return pd.DataFrame(rows)


@pytest.fixture()
def store_dir(tmp_path):
    store, G = Store(str(tmp_path)), revenue_graph()
    for run, with_stats in (("2026-11-23", True), ("2026-11-24", False)):
        w = store.begin(run)
        w.write_json("graph.json", nx.node_link_data(G, edges="edges"))
        if with_stats:
            w.write_parquet("stats.parquet", stats_frame(G))
        w.commit({"started": f"{run}T01:00:00Z", "ended": f"{run}T01:05:00Z", "status": "succeeded",
                  "outputs": list(G.graph["outputs"]), "samples": "present"})
    return str(tmp_path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- exit codes and errors


@pytest.mark.parametrize("argv, message", [
    (["runs", "--store", "{missing}"], "does not exist"),
    (["runs", "--store", "{store}/runs/2026-11-23/_SUCCESS"], "is a file"),  # was: "no runs", exit 0
    (["graph", "--store", "{store}", "--run", "nope"], "no run 'nope'"),
    (["graph", "--store", "{store}", "--run", "2026-11-23", "--output", "nope"], "no output 'nope'"),
    (["stats", "--store", "{store}", "--run", "2026-11-24"], "has no statistics"),
])
def test_errors_are_one_line_with_hint_and_exit_2(capsys, store_dir, tmp_path, argv, message):
    argv = [a.format(store=store_dir, missing=str(tmp_path / "missing")) for a in argv]
    code, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 2
    assert lines[0].startswith("spark-causal: error: ") and message in lines[0]
    assert lines[1].startswith("hint: ")


def test_unknown_output_hint_names_the_outputs(capsys, store_dir):
    _, _, err = run_cli(capsys, "graph", "--store", store_dir, "--run", "2026-11-23", "--output", "x")
    assert "fx_audit, revenue" in err


def test_module_entry_point_exit_codes(store_dir):
    result = subprocess.run([sys.executable, "-m", "spark_causal.cli", "graph", "--store", store_dir,
                             "--run", "nope"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "spark-causal: error: no run 'nope'" in result.stderr and "2026-11-24" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_shows_examples_and_usage_errors_exit_2(capsys):
    for command in ("capture", "runs", "graph", "stats"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "examples:\n  spark-causal " + command in out
    assert run_cli(capsys, "graph", "--store", "x")[0] == 2  # --run missing
    assert run_cli(capsys)[0] == 2  # no command


def test_capture_passes_options_to_run_script(monkeypatch):
    capture_module = importlib.import_module("spark_causal.capture")  # the package re-exports a function of that name
    calls = []
    monkeypatch.setattr(capture_module, "run_script", lambda script, args, **kw: calls.append((script, args, kw)) or 3)
    code = cli.main(["capture", "--store", "s", "--run", "r", "--no-samples", "--seed", "7", "--",
                     "job.py", "--date", "x", "--", "y"])
    assert code == 3
    assert calls == [("job.py", ["--date", "x", "--", "y"], {
        "store": "s", "run": "r", "replace": False, "sample_size": 20000, "seed": 7, "samples": False,
        "strict": False})]


# ---------------------------------------------------------------- runs


def test_runs_table_and_json(capsys, store_dir):
    code, out, _ = run_cli(capsys, "runs", "--store", store_dir)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["run", "status", "started", "ended", "outputs", "samples"]
    assert lines[2].split() == ["2026-11-23", "succeeded", "2026-11-23T01:00:00Z", "2026-11-23T01:05:00Z",
                                "revenue,fx_audit", "present"]
    code, out, _ = run_cli(capsys, "runs", "--store", store_dir, "--json")
    assert code == 0 and [m["run"] for m in json.loads(out)] == ["2026-11-23", "2026-11-24"]


# ---------------------------------------------------------------- graph


def test_graph_json_is_the_contract(capsys, store_dir):
    code, out, _ = run_cli(capsys, "graph", "--store", store_dir, "--run", "2026-11-23", "--format", "json")
    assert code == 0
    G = nx.node_link_graph(json.loads(out), edges="edges")
    assert nx.utils.graphs_equal(G, revenue_graph())
    assert G.graph["outputs"]["revenue"]["columns"][-1] == "revenue.revenue"


def test_graph_for_one_output_keeps_its_ancestors_only(capsys, store_dir, tmp_path):
    path = tmp_path / "g.json"
    code, _, err = run_cli(capsys, "graph", "--store", store_dir, "--run", "2026-11-23", "--output",
                           "fx_audit", "-o", str(path))
    G = nx.node_link_graph(json.loads(path.read_text()), edges="edges")
    assert code == 0 and "wrote" in err
    assert set(G) == {"fx.rate", "fx_audit.rate"}
    assert list(G.graph["outputs"]) == ["fx_audit"] and list(G.graph["sources"]) == ["fx"]
    assert [s["id"] for s in G.graph["segments"]] == ["fx_audit.seg0"]


def test_subgraph_for_output_raises_on_unknown_output():
    with pytest.raises(UnknownOutputError) as err:
        render.subgraph_for_output(revenue_graph(), "nope")
    assert err.value.hint == "outputs: fx_audit, revenue"


def test_graph_dot(capsys, store_dir):
    code, out, _ = run_cli(capsys, "graph", "--store", store_dir, "--run", "2026-11-23", "--format", "dot")
    assert code == 0 and out.startswith("digraph spark_causal {") and out.rstrip().endswith("}")
    assert "rankdir=LR;" in out and out.count("subgraph cluster_") == 3
    assert '"paid.filter1" -> "revenue.revenue" [color="#e6550d", style=dashed, label="filter"];' in out
    assert '"orders.amount" -> "with_fx.amount_usd" [color="#444444"];' in out
    assert 'label="with_fx\\namount_usd"' in out
    assert out.count("{") == out.count("}")


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_graph_picture(capsys, store_dir, tmp_path, monkeypatch, fmt):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "graph", "--store", store_dir, "--run", "2026-11-23", "--format", fmt)
    picture = tmp_path / f"2026-11-23.{fmt}"  # the default file name
    assert code == 0 and str(picture.name) in err
    if fmt == "png":
        with Image.open(picture) as im:
            width, height = im.size
            colours = len(im.convert("RGB").getcolors(maxcolors=1 << 24))
        assert width > 800 and height > 400 and colours > 50
        assert picture.stat().st_size > 30_000
    else:
        assert picture.read_text().lstrip().startswith("<?xml") and "<svg" in picture.read_text()


def test_picture_grows_with_the_graph_and_shows_highlights(tmp_path):
    small, big = tmp_path / "small.png", tmp_path / "big.png"
    render.draw_png(revenue_graph(), str(small), highlight={"orders.amount": -8120.0, "volume": 10.0})
    G = nx.DiGraph()
    for i in range(60):
        G.add_node(f"t.c{i}", kind="source", table=f"t{i // 10}", column=f"c{i}")
        G.add_node(f"s.c{i}", kind="stage", stage="s", column=f"c{i}", output="s")
        G.add_edge(f"t.c{i}", f"s.c{i}", kind="direct")
    render.draw_png(G, str(big))
    with Image.open(small) as a, Image.open(big) as b:
        assert b.size[1] > 2 * a.size[1]


# ---------------------------------------------------------------- stats


def test_stats_json_has_exactly_the_contract_keys(capsys, store_dir):
    code, out, _ = run_cli(capsys, "stats", "--store", store_dir, "--run", "2026-11-23", "--json")
    records = {r["node"]: r for r in json.loads(out)}
    assert code == 0 and len(records) == revenue_graph().number_of_nodes()
    assert all(list(r) == STATS_KEYS for r in records.values())
    country = records["orders.country"]
    assert country["top"] == [["US", 60], ["DE", 40]] and country["mean"] is None and country["count"] == 100
    assert records["with_fx.amount_usd"]["top"] is None and records["with_fx.amount_usd"]["mean"] == 12.5


def test_stats_table_and_output_filter(capsys, store_dir):
    code, out, _ = run_cli(capsys, "stats", "--store", store_dir, "--run", "2026-11-23", "--output", "fx_audit")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["node", "kind", "count", "nulls", "mean", "std", "min", "max", "top"]
    assert sorted(line.split()[0] for line in lines[2:]) == ["fx.rate", "fx_audit.rate"]
    code, out, _ = run_cli(capsys, "stats", "--store", store_dir, "--run", "2026-11-23")
    assert "US:60, DE:40" in out
