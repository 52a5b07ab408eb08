"""Column lineage of TPC-H queries 1, 3, 5, 6, 10 and 18 captured from ``spark.sql``.

For every output column the expected upstream source columns are written down from the
SQL's semantics, split into

* ``direct``: sources that some expression chain copies or computes into the column;
* ``indirect``: sources that only decide which rows (or groups) exist: WHERE predicates
  (the comma joins' equalities are WHERE predicates too), IN-subqueries, GROUP BY keys
  (for aggregates) and ORDER BY keys under a LIMIT (a top-N keeps rows by them);
* ``optional``: sources whose link is a modelling choice the SQL does not settle, allowed
  but not required. Only two cases: a GROUP BY key output and the *other* GROUP BY keys
  (DESIGN 5 draws group keys -> aggregates), and ORDER BY keys without a LIMIT (a sort
  alone changes no value; OpenLineage nonetheless lists it as INDIRECT/SORT).

The direct set and the required indirect set are asserted exactly; nothing outside
``direct | indirect | optional`` may appear, so a source the SQL never reads for that
column is a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import pytest

try:
    from tpch import TPCH_QUERIES, generate_tpch, register_views
except ImportError:  # tests/ imported as a package
    from tests.tpch import TPCH_QUERIES, generate_tpch, register_views

REPO = Path(__file__).resolve().parent.parent
JOB = REPO / "jobs" / "tpch_job.py"


def cols(table: str, *names: str) -> set[str]:
    return {f"{table}.{n}" for n in names}


def L(*names: str) -> set[str]:
    return cols("lineitem", *names)


def O(*names: str) -> set[str]:  # noqa: E743 - TPC-H table initial
    return cols("orders", *names)


def C(*names: str) -> set[str]:
    return cols("customer", *names)


def S(*names: str) -> set[str]:
    return cols("supplier", *names)


def N(*names: str) -> set[str]:
    return cols("nation", *names)


def R(*names: str) -> set[str]:
    return cols("region", *names)


@dataclass(frozen=True)
class Expect:
    direct: set[str]
    indirect: set[str]
    optional: set[str] = field(default_factory=set)


def everything_but(direct: set[str], read: set[str], optional: set[str] = frozenset()) -> Expect:
    """``direct`` sources; every other column the query reads is required as indirect."""
    return Expect(set(direct), set(read) - set(direct) - set(optional), set(optional))


# ---------------------------------------------------------------------------------------
# Q1: one table, a WHERE on l_shipdate, GROUP BY returnflag, linestatus, ORDER BY (no LIMIT).
Q1_FILTER = L("l_shipdate")
Q1_GROUP = L("l_returnflag", "l_linestatus")


def _q1_agg(*direct: str) -> Expect:
    return Expect(L(*direct), Q1_FILTER | Q1_GROUP)


Q1 = {
    "l_returnflag": Expect(L("l_returnflag"), Q1_FILTER, optional=L("l_linestatus")),
    "l_linestatus": Expect(L("l_linestatus"), Q1_FILTER, optional=L("l_returnflag")),
    "sum_qty": _q1_agg("l_quantity"),
    "sum_base_price": _q1_agg("l_extendedprice"),
    "sum_disc_price": _q1_agg("l_extendedprice", "l_discount"),
    "sum_charge": _q1_agg("l_extendedprice", "l_discount", "l_tax"),
    "avg_qty": _q1_agg("l_quantity"),
    "avg_price": _q1_agg("l_extendedprice"),
    "avg_disc": _q1_agg("l_discount"),
    "count_order": _q1_agg(),  # count(*) reads no column: only rows and groups matter
}

# ---------------------------------------------------------------------------------------
# Q3: ORDER BY revenue DESC, o_orderdate LIMIT 10. The top-10 is chosen by revenue, which
# depends on every GROUP BY key and every WHERE column, so every column the query reads
# decides which rows every output column shows: all of them are (at least) indirect.
Q3_READ = (
    C("c_mktsegment", "c_custkey")
    | O("o_custkey", "o_orderkey", "o_orderdate", "o_shippriority")
    | L("l_orderkey", "l_extendedprice", "l_discount", "l_shipdate")
)
Q3 = {
    "l_orderkey": everything_but(L("l_orderkey"), Q3_READ),
    "revenue": everything_but(L("l_extendedprice", "l_discount"), Q3_READ),
    "o_orderdate": everything_but(O("o_orderdate"), Q3_READ),
    "o_shippriority": everything_but(O("o_shippriority"), Q3_READ),
}

# ---------------------------------------------------------------------------------------
# Q5: six-way comma join, WHERE on region and order date, GROUP BY n_name, ORDER BY
# revenue without LIMIT.
Q5_WHERE = (
    C("c_custkey", "c_nationkey")
    | O("o_custkey", "o_orderkey", "o_orderdate")
    | L("l_orderkey", "l_suppkey")
    | S("s_suppkey", "s_nationkey")
    | N("n_nationkey", "n_regionkey")
    | R("r_regionkey", "r_name")
)
Q5 = {
    "n_name": Expect(N("n_name"), Q5_WHERE, optional=L("l_extendedprice", "l_discount")),
    "revenue": Expect(L("l_extendedprice", "l_discount"), Q5_WHERE | N("n_name")),
}

# ---------------------------------------------------------------------------------------
# Q6: global aggregate; l_discount is both summed and filtered on: direct wins.
Q6 = {
    "revenue": Expect(L("l_extendedprice", "l_discount"), L("l_shipdate", "l_quantity")),
}

# ---------------------------------------------------------------------------------------
# Q10: ORDER BY revenue DESC LIMIT 20, so (as in Q3) every column read is a cause of every
# output column.
Q10_READ = (
    C("c_custkey", "c_name", "c_acctbal", "c_phone", "c_address", "c_comment", "c_nationkey")
    | O("o_custkey", "o_orderkey", "o_orderdate")
    | L("l_orderkey", "l_returnflag", "l_extendedprice", "l_discount")
    | N("n_nationkey", "n_name")
)
Q10 = {
    "c_custkey": everything_but(C("c_custkey"), Q10_READ),
    "c_name": everything_but(C("c_name"), Q10_READ),
    "revenue": everything_but(L("l_extendedprice", "l_discount"), Q10_READ),
    "c_acctbal": everything_but(C("c_acctbal"), Q10_READ),
    "n_name": everything_but(N("n_name"), Q10_READ),
    "c_address": everything_but(C("c_address"), Q10_READ),
    "c_phone": everything_but(C("c_phone"), Q10_READ),
    "c_comment": everything_but(C("c_comment"), Q10_READ),
}

# ---------------------------------------------------------------------------------------
# Q18: the IN-subquery (lineitem grouped by l_orderkey, HAVING sum(l_quantity) > 300)
# filters orders, so lineitem.l_quantity and lineitem.l_orderkey reach every output through
# it. ORDER BY o_totalprice DESC, o_orderdate LIMIT 100: those two sort keys decide which
# rows survive. The only unsettled link is c_name (a GROUP BY key that is neither in the
# WHERE nor a sort key) to the other GROUP BY key outputs.
Q18_READ = (
    C("c_name", "c_custkey")
    | O("o_orderkey", "o_custkey", "o_orderdate", "o_totalprice")
    | L("l_orderkey", "l_quantity")
)
Q18 = {
    "c_name": everything_but(C("c_name"), Q18_READ),
    "c_custkey": everything_but(C("c_custkey"), Q18_READ, optional=C("c_name")),
    "o_orderkey": everything_but(O("o_orderkey"), Q18_READ, optional=C("c_name")),
    "o_orderdate": everything_but(O("o_orderdate"), Q18_READ, optional=C("c_name")),
    "o_totalprice": everything_but(O("o_totalprice"), Q18_READ, optional=C("c_name")),
    "sum_qty": everything_but(L("l_quantity"), Q18_READ),
}

EXPECTED: dict[str, dict[str, Expect]] = {
    "q1": Q1,
    "q3": Q3,
    "q5": Q5,
    "q6": Q6,
    "q10": Q10,
    "q18": Q18,
}


# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tpch_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tpch")
    generate_tpch(folder)
    return folder


@pytest.fixture(scope="module")
def tpch_paths(tpch_dir) -> dict[str, str]:
    return generate_tpch(tpch_dir)  # cached: returns at once


@dataclass
class Captured:
    graph: nx.DiGraph
    columns: list[str]
    rows: int


@pytest.fixture(scope="module")
def captured(spark, tpch_paths, tmp_path_factory):
    """``captured(query)``: the query run once under capture (cached for the module)."""
    import spark_causal

    cache: dict[str, Captured] = {}

    def run(query: str) -> Captured:
        if query not in cache:
            register_views(spark, tpch_paths)  # other tests may reuse these view names
            base = tmp_path_factory.mktemp(f"tpch_{query}")
            out = base / "out" / query
            with spark_causal.capture(spark, store=str(base / "store"), run="r1") as cap:
                df = spark.sql(TPCH_QUERIES[query])
                df.write.mode("overwrite").parquet(str(out))
            rows = spark.read.parquet(str(out)).count()
            cache[query] = Captured(cap.graph, df.columns, rows)
        return cache[query]

    return run


def reference_upstream(G: nx.DiGraph, node: str) -> dict[str, str]:
    """The contract of ``upstream_sources``, computed independently from the edges."""
    direct_only = nx.DiGraph(
        (u, v) for u, v, kind in G.edges(data="kind") if kind == "direct"
    )
    direct_anc = nx.ancestors(direct_only, node) if node in direct_only else set()
    return {
        a: ("direct" if a in direct_anc else "indirect")
        for a in nx.ancestors(G, node)
        if G.nodes[a].get("kind") == "source"
    }


def output_column_problems(G: nx.DiGraph, output: str, column: str, expect: Expect) -> list[str]:
    """What is wrong with one output column's upstream sources (empty when all is right)."""
    from spark_causal.lineage import upstream_sources

    node = f"{output}.{column}"
    if node not in G:
        return [f"{node}: missing from the graph"]
    got = upstream_sources(G, node)
    problems = []
    if got != reference_upstream(G, node):
        problems.append(f"{node}: upstream_sources disagrees with the edges: {got}")
    direct = {s for s, how in got.items() if how == "direct"}
    indirect = {s for s, how in got.items() if how == "indirect"}
    if direct != expect.direct:
        problems.append(f"{node}: direct sources: missing {sorted(expect.direct - direct)}, "
                        f"unexpected {sorted(direct - expect.direct)}")
    missing = expect.indirect - indirect
    extra = indirect - expect.indirect - expect.optional
    if missing or extra:
        problems.append(f"{node}: indirect sources: missing {sorted(missing)}, "
                        f"unexpected {sorted(extra)}")
    return problems


def check_output_column(G: nx.DiGraph, output: str, column: str, expect: Expect) -> None:
    problems = output_column_problems(G, output, column, expect)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("query", list(EXPECTED))
def test_tpch_query_lineage(captured, query):
    run = captured(query)
    G = run.graph
    assert run.rows > 0, "the query kept no rows: the TPC-H scale is too small"

    expected = EXPECTED[query]
    assert list(expected) == run.columns, "the expectations must cover every output column"
    assert G.graph["outputs"][query]["columns"] == [f"{query}.{c}" for c in run.columns]
    for column in run.columns:
        assert G.nodes[f"{query}.{column}"].get("output") == query
    problems = [p for column, expect in expected.items()
                for p in output_column_problems(G, query, column, expect)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("query", "source", "target"),
    [
        ("q5", "orders.o_orderdate", "q5.revenue"),  # WHERE predicate
        ("q5", "region.r_name", "q5.revenue"),  # WHERE predicate on a joined dimension
        ("q5", "supplier.s_nationkey", "q5.revenue"),  # join key (a comma join's equality)
        ("q6", "lineitem.l_quantity", "q6.revenue"),  # WHERE predicate
        ("q18", "lineitem.l_quantity", "q18.c_name"),  # the IN-subquery's HAVING
        ("q18", "lineitem.l_quantity", "q18.o_orderkey"),  # the IN-subquery's HAVING
    ],
)
def test_tpch_row_filters_pass_through_a_selection(captured, query, source, target):
    """A WHERE / join / IN-subquery column reaches the output only through a selection node."""
    G = captured(query).graph
    assert source in G and target in G
    assert nx.has_path(G, source, target), f"no path from {source} to {target}"
    without = G.subgraph(n for n, kind in G.nodes(data="kind") if kind != "selection")
    assert not nx.has_path(without, source, target), (
        f"a path from {source} to {target} avoids every selection node"
    )


def test_tpch_job_under_cli_capture(spark, tpch_dir, tpch_paths, tmp_path):
    """The unmodified job under ``spark-causal capture``: same result, graph readable by the CLI."""
    store, out = tmp_path / "store", tmp_path / "out"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYSPARK_SUBMIT_ARGS"] = (
        "--master local[2] --conf spark.ui.enabled=false "
        "--conf spark.sql.shuffle.partitions=4 pyspark-shell"
    )
    cli = [sys.executable, "-m", "spark_causal.cli"]
    captured = subprocess.run(
        [*cli, "capture", "--store", str(store), "--run", "r1", "--",
         str(JOB), str(tpch_dir), str(out), "q3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert captured.returncode == 0, captured.stderr[-4000:]
    assert (out / "q3").is_dir()
    register_views(spark, tpch_paths)
    expected_rows = sorted(map(tuple, spark.sql(TPCH_QUERIES["q3"]).collect()))
    assert sorted(map(tuple, spark.read.parquet(str(out / "q3")).collect())) == expected_rows

    shown = subprocess.run(
        [*cli, "graph", "--store", str(store), "--run", "r1", "--format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert shown.returncode == 0, shown.stderr[-4000:]
    data = json.loads(shown.stdout)
    G = nx.node_link_graph(data, edges="edges")
    assert "q3.revenue" in G
    # The stored graph of the unmodified job says what the in-process capture says.
    for column, expect in Q3.items():
        check_output_column(G, "q3", column, expect)
