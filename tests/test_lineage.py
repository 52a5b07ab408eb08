"""Plan -> DAG, operator by operator, with the edges asserted."""

import networkx as nx
import pytest
from pyspark.sql import Window
from pyspark.sql import functions as F

from spark_causal import plan as P
from spark_causal.lineage import LineageBuilder, upstream_sources


@pytest.fixture(scope="module")
def tables(spark, tmp_path_factory):
    """Two small parquet sources (orders, customers) and a temp-view dimension (fx)."""
    root = tmp_path_factory.mktemp("lineage")
    orders = spark.createDataFrame(
        [(1, 10, "EUR", 100.0, "DE", "2026-01-01"), (2, 11, "USD", 50.0, "US", "2026-01-02"),
         (3, 10, "EUR", -5.0, "DE", "2026-01-03"), (4, 12, "GBP", 70.0, "UK", "2026-01-04")],
        "order_id long, customer_id long, currency string, amount double, country string, day string")
    customers = spark.createDataFrame([(10, "gold"), (11, "silver"), (13, "none")],
                                      "customer_id long, tier string")
    orders.write.parquet(str(root / "orders"))
    customers.write.parquet(str(root / "customers"))
    spark.createDataFrame([("EUR", 1.1), ("USD", 1.0), ("GBP", 1.3)], "currency string, rate double") \
        .createOrReplaceTempView("fx")
    o = spark.read.parquet(str(root / "orders"))
    c = spark.read.parquet(str(root / "customers"))
    o.createOrReplaceTempView("orders")
    c.createOrReplaceTempView("customers")
    return o, c


def graph_of(df, name="out") -> nx.DiGraph:
    b = LineageBuilder()
    b.add_output(name, P.analyzed(df))
    return b.graph


def edges(G, kind=None):
    return {(u, v) for u, v, k in G.edges(data="kind") if kind is None or k == kind}


def test_project_filter_aggregate(tables, spark):
    o, _ = tables
    df = (o.filter(F.col("amount") > 0).withColumn("double_amount", F.col("amount") * 2)
          .groupBy("country").agg(F.sum("double_amount").alias("revenue")))
    G = graph_of(df, "report")
    assert G.nodes["orders.amount"]["kind"] == "source"
    assert G.nodes["report.double_amount"]["kind"] == "stage"
    assert G.nodes["report.filter1"]["kind"] == "selection"
    assert G.nodes["report.revenue"]["kind"] == "aggregate"
    assert G.nodes["report.revenue"]["output"] == "report"
    assert ("orders.amount", "report.double_amount") in edges(G, "direct")
    assert ("orders.amount", "report.filter1") in edges(G, "filter")
    assert ("report.filter1", "report.revenue") in edges(G, "filter")
    assert ("orders.country", "report.revenue") in edges(G, "group")
    assert ("report.double_amount", "report.revenue") in edges(G, "direct")
    assert upstream_sources(G, "report.revenue") == {"orders.amount": "direct", "orders.country": "indirect"}
    assert nx.is_directed_acyclic_graph(G)


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "left_semi", "left_anti", "cross"])
def test_join_types(tables, how):
    o, c = tables
    if how == "cross":
        df = o.crossJoin(c.select("tier")).select("order_id", "tier")
        G = graph_of(df)
        assert not [n for n, d in G.nodes(data=True) if d["kind"] == "selection"]
        assert upstream_sources(G, "out.tier") == {"customers.tier": "direct"}
        return
    df = o.join(c, "customer_id", how)
    G = graph_of(df)
    sel = "out.join1"
    assert G.nodes[sel]["join_type"] in {"inner", "leftouter", "rightouter", "fullouter", "leftsemi", "leftanti"}
    assert {("orders.customer_id", sel), ("customers.customer_id", sel)} <= edges(G, "join")
    assert ("out.join1", "out.amount") in edges(G, "join")
    if how not in ("left_semi", "left_anti"):
        assert upstream_sources(G, "out.tier")["customers.tier"] == "direct"


def test_window_union_distinct_limit(tables):
    o, _ = tables
    w = Window.partitionBy("country").orderBy(F.desc("amount"))
    ranked = o.withColumn("rank", F.row_number().over(w))
    G = graph_of(ranked)
    assert {("orders.country", "out.rank"), ("orders.amount", "out.rank")} <= edges(G, "window")
    assert G.nodes["out.rank"]["subtype"] == "window"

    u = o.select("country", "amount").union(o.select("country", (F.col("amount") * 3).alias("amount")))
    G = graph_of(u.distinct().orderBy("amount").limit(2))
    assert G.nodes["out.amount"]["subtype"] == "union"
    assert ("orders.amount", "out.amount") in edges(G, "direct")
    sels = {n: d["subtype"] for n, d in G.nodes(data=True) if d["kind"] == "selection"}
    assert set(sels.values()) == {"dedup", "limit"}
    limit = next(n for n, s in sels.items() if s == "limit")
    assert ("out.amount", limit) in edges(G, "filter")  # the sort key decides which rows the limit keeps
    assert (limit, "out.country") in edges(G, "filter")


def test_generate_expand_dedup(tables, spark):
    o, _ = tables
    G = graph_of(o.withColumn("part", F.explode(F.split("day", "-"))))
    assert G.nodes["out.part"]["subtype"] == "generate"
    assert upstream_sources(G, "out.part") == {"orders.day": "direct"}

    cube = o.rollup("country").agg(F.sum("amount").alias("total"))
    G = graph_of(cube)
    assert G.nodes["out.country"]["subtype"] == "expand"
    assert upstream_sources(G, "out.total") == {"orders.amount": "direct", "orders.country": "indirect"}

    G = graph_of(o.dropDuplicates(["customer_id"]))
    dedup = [n for n, d in G.nodes(data=True) if d.get("subtype") == "dedup"]
    assert dedup and ("orders.customer_id", dedup[0]) in edges(G, "filter")


def test_views_ctes_and_subqueries(tables, spark):
    df = spark.sql("""
        WITH eu AS (SELECT order_id, amount * 2 AS amount2, currency, customer_id FROM orders
                    WHERE country = 'DE')
        SELECT e.order_id, e.amount2 * (SELECT max(rate) FROM fx) AS scaled
        FROM eu e
        WHERE e.customer_id IN (SELECT customer_id FROM customers WHERE tier = 'gold')
          AND EXISTS (SELECT 1 FROM fx WHERE fx.currency = e.currency)
    """)
    G = graph_of(df, "q")
    assert G.nodes["eu.amount2"]["stage"] == "eu"  # the CTE names its stage
    ups = upstream_sources(G, "q.scaled")
    assert ups["orders.amount"] == "direct" and ups["fx.rate"] == "direct"  # scalar subquery
    assert ups["orders.country"] == "indirect"  # the CTE's filter
    assert ups["customers.tier"] == "indirect" and ups["customers.customer_id"] == "indirect"  # IN subquery
    assert ups["fx.currency"] == "indirect" and ups["orders.currency"] == "indirect"  # correlated EXISTS
    # an unnamed derived table gets Spark's alias __auto_generated_subquery_name: not a stage name
    G = graph_of(spark.sql("SELECT SUM(net) AS total FROM (SELECT amount * 0.9 AS net FROM orders)"), "q")
    assert "q.net" in G and G.nodes["q.net"]["stage"] == "q"


def test_a_temporary_views_casts_to_its_columns_own_types_are_those_columns(tables, spark):
    """A SQL temporary view casts each column to its stored type; a formula's node took the name with
    an @2 (``enriched.net@2``), its no-op cast the plain one. A cast that changes the type stays a node."""
    spark.sql("CREATE OR REPLACE TEMP VIEW enriched AS SELECT day, amount * 0.9 AS net, "
              "CAST(customer_id AS string) AS cid FROM orders")
    G = graph_of(spark.sql("SELECT day, SUM(net) AS total, COUNT(DISTINCT cid) AS buyers FROM enriched GROUP BY day"), "q")
    assert "enriched.net" in G and "enriched.net@2" not in G
    assert G.nodes["enriched.net"]["expr"].startswith("(orders.amount *")
    assert G.nodes["enriched.cid"]["expr"].startswith("CAST(")


def test_python_and_pandas_udfs_are_opaque(tables):
    import pandas as pd

    o, _ = tables

    @F.udf("double")
    def bonus(amount, country):
        return amount * (2.0 if country == "DE" else 1.0)

    @F.pandas_udf("double")
    def half(x: pd.Series) -> pd.Series:
        return x / 2

    G = graph_of(o.select(bonus("amount", "country").alias("b"), half("amount").alias("h")))
    assert {("orders.amount", "out.b"), ("orders.country", "out.b"), ("orders.amount", "out.h")} <= edges(G, "udf")
    assert G.nodes["out.b"]["subtype"] == "udf"

    def double_it(batches):
        for b in batches:
            yield b.assign(amount=b.amount * 2)

    G = graph_of(o.mapInPandas(double_it, o.schema))
    assert ("orders.amount", "out.amount") in edges(G, "udf")


def test_a_python_udf_body_is_part_of_its_fingerprint(tables):
    """A changed UDF body is a code change of its node; the same body, defined again, is not."""
    o, _ = tables

    def fingerprint(factor: float) -> str:
        scaled = F.udf(lambda x: x * factor, "double")
        return graph_of(o.select(scaled("amount").alias("s")), "f").nodes["f.s"]["fingerprint"]

    assert fingerprint(2.0) == fingerprint(2.0) != fingerprint(3.0)


def test_dataframe_and_sql_give_the_same_graph(tables, spark):
    o, c = tables
    api = (o.filter(F.col("amount") > 0).join(c, "customer_id")
           .withColumn("eur", F.col("amount") * 1.1).groupBy("tier").agg(F.sum("eur").alias("revenue")))
    sql = spark.sql("""SELECT c.tier, sum(o.amount * 1.1) AS revenue FROM orders o JOIN customers c
                       ON o.customer_id = c.customer_id WHERE o.amount > 0 GROUP BY c.tier""")

    def shape(G):
        """The graph up to stage names and intermediate stage columns: source-to-output reachability by kind."""
        outs = [n for n, d in G.nodes(data=True) if d.get("output")]
        return {G.nodes[n]["column"]: upstream_sources(G, n) for n in outs}, \
            sorted(d["kind"] for _, d in G.nodes(data=True))

    shape_api, kinds_api = shape(graph_of(api, "r"))
    shape_sql, kinds_sql = shape(graph_of(sql, "r"))
    assert shape_api == shape_sql
    assert shape_api["revenue"] == {"orders.amount": "direct", "orders.customer_id": "indirect",
                                    "customers.customer_id": "indirect", "customers.tier": "indirect"}
    # the API version names its derived column (eur), SQL computes inside sum(): one stage node apart
    assert sorted(k for k in kinds_api if k != "stage") == sorted(k for k in kinds_sql if k != "stage")


def test_ids_and_fingerprints_are_stable_and_local(tables):
    o, _ = tables

    def job(threshold, factor):
        return (o.filter(F.col("amount") > threshold).withColumn("usd", F.col("amount") * factor)
                .withColumn("tax", F.col("usd") * 0.2).groupBy("country").agg(F.sum("usd").alias("revenue")))

    def fps(df):
        return {n: d["fingerprint"] for n, d in graph_of(df, "report").nodes(data=True)}

    a, b = fps(job(0, 1.5)), fps(job(0, 1.5))
    assert a == b
    changed = fps(job(0, 2.0))
    assert set(changed) == set(a)
    assert {n for n in a if a[n] != changed[n]} == {"report.usd"}
    thr = fps(job(10, 1.5))
    assert {n for n in a if a[n] != thr[n]} == {"report.filter1"}


def test_outputs_are_linked_not_duplicated(tables, spark, tmp_path):
    o, _ = tables
    b = LineageBuilder()
    report = o.groupBy("country").agg(F.sum("amount").alias("revenue"))
    b.add_output("report", P.analyzed(report))
    report.write.parquet(str(tmp_path / "report"))
    again = spark.read.parquet(str(tmp_path / "report")).withColumn("k", F.col("revenue") / 1000)
    b.add_output("kpi", P.analyzed(again))
    G = b.graph
    assert G.nodes["report.revenue"]["kind"] == "aggregate"  # read back: the same node, not a new source
    assert ("report.revenue", "kpi.k") in edges(G, "direct")
    assert upstream_sources(G, "kpi.k") == {"orders.amount": "direct", "orders.country": "indirect"}
    # the same DataFrame written twice shares its nodes
    b.add_output("copy", P.analyzed(report))
    assert G.nodes["copy.revenue"]["subtype"] == "identity"
    assert ("report.revenue", "copy.revenue") in edges(G, "direct")


def test_path_table_names_skip_partitions():
    assert P.path_table_name("s3://b/wh/orders/date=2026-11-24/") == "orders"
    assert P.path_table_name("/data/orders/2026-11-24") == "orders"
    assert P.path_table_name("file:/tmp/x/fx.parquet") == "fx"


def test_output_attributes_parse_names_and_ids_like_the_jvm(spark):
    """``plan.output`` reads names and exprIds from one string; odd names must give what the JVM says."""
    df = spark.range(2).select(F.col("id").alias("a#b, c"), F.lit("x").alias("#7"), F.col("id").alias("ünï côde"),
                               F.lit(1.5).alias("x#12L"), F.col("id").cast("int").alias("i"))
    plan = P.analyzed(df)
    attrs = P.output(plan)
    assert [P.name(a) for a in attrs] == ["a#b, c", "#7", "ünï côde", "x#12L", "i"]
    assert [P.expr_id(a) for a in attrs] == [int(a.exprId().id()) for a in P.seq(plan.output())]
    assert P.output(plan)[0] is attrs[0]  # the same proxies: asked once per node


def test_removing_an_upstream_node_renames_nothing_below_it(tables):
    """Two columns of one name in one stage need an ``@k`` id; the downstream one keeps the plain id, so
    a code change that removes an upstream one (a branch's derived column) leaves the others' ids."""
    o, _ = tables

    def graph(first_derived: bool) -> nx.DiGraph:
        a = o.select((F.col("amount") * 2).alias("amount") if first_derived else F.col("amount"), "country")
        b = o.select((F.col("amount") + 1).alias("amount"), "country")
        return graph_of(a.unionByName(b).groupBy("country").agg(F.sum("amount").alias("total")), "r")

    before, after = graph(True), graph(False)
    ids = [{d["fingerprint"]: n for n, d in G.nodes(data=True)} for G in (before, after)]
    assert {fp: n for fp, n in ids[1].items()} == {fp: ids[0][fp] for fp in ids[1]}
    assert before.nodes["r.amount"]["subtype"] == after.nodes["r.amount"]["subtype"] == "union"


def test_a_selection_reading_its_own_outputs_column_keeps_the_graph_acyclic(tables, spark):
    """``filter(x > 0)`` over a derived output column ``x``, and HAVING over an aggregate the output
    writes: the selection gates the other columns, and is still found as a cause of ``x``'s rows."""
    from spark_causal.lineage import gating_selections

    o, _ = tables
    G = graph_of(o.withColumn("usd", F.col("amount") * 1.1).filter("usd > 0"), "rows")
    assert nx.is_directed_acyclic_graph(G)
    assert ("rows.usd", "rows.filter1") in edges(G, "filter")
    assert ("rows.filter1", "rows.amount") in edges(G, "filter")
    assert ("rows.filter1", "rows.usd") not in edges(G)
    assert gating_selections(G, "rows.usd") == {"rows.filter1", "orders.amount"}
    G = graph_of(spark.sql("SELECT country, SUM(amount) AS total, COUNT(*) AS n FROM orders "
                           "GROUP BY country HAVING COUNT(*) >= 2"), "kpis")
    assert nx.is_directed_acyclic_graph(G)
    assert ("kpis.n", "kpis.filter1") in edges(G, "filter")
    assert ("kpis.filter1", "kpis.total") in edges(G, "filter")
    assert "kpis.filter1" in gating_selections(G, "kpis.n")


def test_a_cyclic_graph_of_an_older_version_is_read_as_a_dag(tmp_path):
    """Stores written before session 12 hold the selection -> column edge of the case above, which
    closes a cycle: reading the graph drops it, so rendering and attribution see a DAG."""
    from spark_causal.store import Store

    G = nx.DiGraph(outputs={"rows": {"columns": ["rows.usd"]}}, sources={}, segments=[], warnings=[])
    G.add_node("src.amount", kind="source")
    G.add_node("rows.usd", kind="stage", output="rows")
    G.add_node("rows.filter1", kind="selection", subtype="filter")
    G.add_edges_from([("src.amount", "rows.usd"), ("rows.usd", "rows.filter1"), ("rows.filter1", "rows.usd")])
    store = Store(str(tmp_path / "store"))
    with store.begin("old") as w:
        w.write_json("graph.json", nx.node_link_data(G, edges="edges"))
        w.commit({})
    got = store.graph("old")
    assert nx.is_directed_acyclic_graph(got)
    assert set(got.edges) == {("src.amount", "rows.usd"), ("rows.usd", "rows.filter1")}
    from spark_causal.errors import SparkCausalError
    from spark_causal.render import draw_png

    draw_png(got, str(tmp_path / "old.png"))
    assert (tmp_path / "old.png").stat().st_size > 1000
    G.add_edge("rows.usd", "src.amount")  # a cycle of no selection: refused in one line, not a traceback
    with pytest.raises(SparkCausalError, match="cycle"):
        draw_png(G, str(tmp_path / "cyclic.png"))
