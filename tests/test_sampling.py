"""Unit samples hold what the job computed, estimate the metric without bias, and keep every type."""
from __future__ import annotations

import datetime as dt
import decimal

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

import spark_causal
from spark_causal.store import Store


@pytest.fixture(scope="module")
def data(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("sampling")
    rng = np.random.default_rng(7)
    n = 4000
    orders = pd.DataFrame({"order_id": np.arange(n), "amount": rng.lognormal(3, 1, n).round(2),
                           "currency": rng.choice(["EUR", "USD", "GBP", "JPY"], n),
                           "country": rng.choice(["DE", "US", "UK"], n)})
    fx = pd.DataFrame({"currency": ["EUR", "USD", "GBP"], "rate": [1.1, 1.0, 1.3]})  # JPY has no rate
    orders.to_parquet(root / "orders.parquet")
    fx.to_parquet(root / "fx.parquet")
    return root, orders


def job(spark, root):
    orders = spark.read.parquet(str(root / "orders.parquet"))
    fx = spark.read.parquet(str(root / "fx.parquet"))
    return (orders.filter(F.col("amount") > 15).join(fx, "currency")
            .withColumn("amount_usd", F.round(F.col("amount") * F.col("rate"), 4)))


def test_sampled_values_are_what_the_job_computed(spark, data, tmp_path):
    root, orders = data
    rows = job(spark, root)
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r1", sample_size=1000) as cap:
        rows.write.parquet(str(tmp_path / "out" / "rows"))
    seg = cap.graph.graph["segments"][0]
    table = Store(str(tmp_path / "s")).read_parquet("r1", f"samples/{seg['id']}.parquet")
    assert seg["driving"] == "orders" and seg["rows"] == len(orders)
    assert 700 < len(table) < 1300  # about the asked size, by a hash rule
    assert set(seg["selections"]) == {"rows.filter1", "rows.join1"}
    written = spark.read.parquet(str(tmp_path / "out" / "rows")).toPandas().set_index("order_id")
    passed = table[(table["rows.filter1"] == 1) & (table["rows.join1"] == 1)].set_index("orders.order_id")
    assert len(passed) > 200
    assert set(passed.index) <= set(written.index)
    np.testing.assert_allclose(passed["rows.amount_usd"], written.loc[passed.index, "amount_usd"])
    dropped = table[(table["rows.filter1"] == 0) | (table["rows.join1"] == 0)]
    assert not set(dropped["orders.order_id"]) & set(written.index)  # units the job dropped are kept, marked
    jpy = table[table["orders.currency"] == "JPY"]
    assert (jpy["rows.join1"] == 0).all() and jpy["fx.rate"].isna().all()
    assert seg["joins"][0]["keys"] == ["orders.currency"]
    assert "orders.order_id" in seg["identifiers"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sum_estimate_is_unbiased_and_exact_at_full_coverage(spark, data, tmp_path, seed):
    root, _ = data
    report = job(spark, root).groupBy("country").agg(F.sum("amount_usd").alias("revenue"),
                                                     F.count(F.lit(1)).alias("n"))
    size = 10_000 if seed == 0 else 800
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=size, seed=seed) as cap:
        report.write.parquet(str(tmp_path / "report"))
    seg = cap.graph.graph["segments"][0]
    t = Store(str(tmp_path / "s")).read_parquet("r", f"samples/{seg['id']}.parquet")
    exact = report.agg(F.sum("revenue"), F.sum("n")).collect()[0]
    est = float((t["__weight__"] * t["__contrib__:report.revenue"]).sum())
    est_n = float((t["__weight__"] * t["__contrib__:report.n"]).sum())
    if seed == 0:  # the sample covers every row: the estimate is the metric
        assert est == pytest.approx(exact[0], rel=1e-9) and est_n == exact[1]
    else:
        w = t["__weight__"].to_numpy()
        se = np.sqrt(len(t)) * w[0] * t["__contrib__:report.revenue"].std()
        assert abs(est - exact[0]) < 4 * se
    assert seg["aggregates"]["report.revenue"] == {"fn": "sum", "input": "report.amount_usd"}


def test_rows_that_repeat_in_the_columns_read_are_sampled_one_by_one(spark, tmp_path):
    """20,000 rows of 91 distinct (country, amount) pairs: a hash of the columns alone would take every
    copy of a pair or none (a sample of a handful of values); each row is a unit of its own."""
    rows = spark.range(20_000).select((F.col("id") % 7).cast("string").alias("country"),
                                      (F.col("id") % 13 + 1).cast("double").alias("amount"))
    rows.write.parquet(str(tmp_path / "orders"))
    report = spark.read.parquet(str(tmp_path / "orders")).groupBy("country").agg(F.sum("amount").alias("revenue"))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=2000) as cap:
        report.write.parquet(str(tmp_path / "report"))
    seg = cap.graph.graph["segments"][0]
    t = Store(str(tmp_path / "s")).read_parquet("r", f"samples/{seg['id']}.parquet")
    assert abs(len(t) - 2000) < 4 * np.sqrt(2000) and t["__unit__"].nunique() == len(t)
    assert t.groupby(["orders.country", "orders.amount"]).size().max() < 60  # ~22 of each pair's 220
    est = float((t["__weight__"] * t["__contrib__:report.revenue"]).sum())
    assert est == pytest.approx(float(rows.agg(F.sum("amount")).collect()[0][0]), rel=0.05)


def test_types_survive_the_round_trip(spark, tmp_path):
    rows = [(1, None, float("nan"), "a", True, dt.date(2026, 1, 1), dt.datetime(2026, 1, 1, 12),
             decimal.Decimal("1.25"), [1, 2], {"k": 1}),
            (2, 2.0, 1.5, None, None, None, None, None, None, None)]
    df = spark.createDataFrame(rows, "id int, x double, y double, s string, b boolean, d date, ts timestamp, "
                                     "dec decimal(10,2), arr array<int>, m map<string,int>")
    df.createOrReplaceTempView("typed")
    out = spark.table("typed").withColumn("z", F.col("x") + 1)
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        out.write.parquet(str(tmp_path / "typed_out"))  # "typed" would make the view the source typed_input
    store = Store(str(tmp_path / "s"))
    t = store.read_parquet("r", f"samples/{cap.graph.graph['segments'][0]['id']}.parquet").sort_values("typed.id")
    assert t["typed.x"].isna().tolist() == [True, False]
    assert np.isnan(t["typed.y"].iloc[0])
    assert t["typed.s"].tolist()[0] == "a" and t["typed.s"].isna().tolist()[1]
    assert pd.api.types.is_datetime64_any_dtype(t["typed.ts"])
    assert t["typed.dec"].tolist()[0] == 1.25
    assert t["typed.arr"].tolist()[0] == "[1,2]"
    assert t["typed.m"].tolist()[0] == '{"k":1}'  # a map is sampled too (Spark cannot hash one)
    stats = {s["node"]: s for s in store.read_parquet("r", "stats.parquet").to_dict("records")}
    assert stats["typed.x"]["count"] == 2 and stats["typed.x"]["nulls"] == 1
    assert stats["typed.d"]["min"] == "2026-01-01"


def test_empty_inputs_give_a_valid_run(spark, tmp_path):
    empty = spark.createDataFrame([], "k string, v double")
    empty.createOrReplaceTempView("empty_src")
    agg = spark.table("empty_src").groupBy("k").agg(F.sum("v").alias("total"))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        agg.write.parquet(str(tmp_path / "e"))
    meta = Store(str(tmp_path / "s")).meta("r")
    assert meta["status"] == "succeeded", meta
    seg = cap.graph.graph["segments"][0]
    assert seg["rows"] == 0 and seg["sampled"] == 0
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="nothing"):
        agg.collect()  # collected, never written nor registered: the run says so
    meta = Store(str(tmp_path / "s")).meta("nothing")
    assert meta["status"] == "incomplete" and "no output" in meta["capture_errors"][0], meta


def test_aggregate_joined_back_gives_two_segments(spark, data, tmp_path):
    """An aggregate whose result is joined back and aggregated again: one sample table per segment."""
    root, _ = data
    rows = job(spark, root)
    per_customer = rows.groupBy("country").agg(F.avg("amount_usd").alias("avg_usd"))
    final = (rows.join(per_customer, "country").withColumn("above", (F.col("amount_usd") > F.col("avg_usd")).cast("int"))
             .groupBy("currency").agg(F.sum("above").alias("n_above")))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=500) as cap:
        final.write.parquet(str(tmp_path / "final"))
    segs = {s["id"]: s for s in cap.graph.graph["segments"]}
    assert set(segs) == {"final.seg1", "final.seg2"}
    assert segs["final.seg1"]["aggregates"] == {"final.avg_usd": {"fn": "avg", "input": "final.amount_usd"}}
    assert "final.n_above" in segs["final.seg2"]["aggregates"]
    assert "final.avg_usd" in segs["final.seg2"]["nodes"]  # the first segment's aggregate feeds the second
    t2 = Store(str(tmp_path / "s")).read_parquet("r", "samples/final.seg2.parquet")
    est = float((t2["__weight__"] * t2["__contrib__:final.n_above"]).sum())
    exact = final.agg(F.sum("n_above")).collect()[0][0]
    assert abs(est - exact) < 0.25 * exact


def test_sql_with_ctes_left_and_anti_joins_and_derived_tables(spark, data, tmp_path):
    """A SQL job with CTEs, a left join (unmatched units still count), an anti join (matched units are
    dropped) and a derived table whose column exists only inside an expression."""
    root, orders = data
    spark.read.parquet(str(root / "orders.parquet")).createOrReplaceTempView("s_orders")
    spark.read.parquet(str(root / "fx.parquet")).createOrReplaceTempView("s_fx")
    spark.createDataFrame([("UK",)], "country string").createOrReplaceTempView("s_blocked")
    report = spark.sql("""
        WITH conv AS (SELECT o.order_id, o.country, o.amount * COALESCE(f.rate, 1.0) AS usd
                      FROM s_orders o LEFT JOIN s_fx f ON o.currency = f.currency),
             kept AS (SELECT * FROM conv c LEFT ANTI JOIN s_blocked b ON c.country = b.country)
        SELECT country, SUM(usd) AS revenue, COUNT(*) AS n
        FROM (SELECT country, usd FROM kept WHERE usd > 12) t GROUP BY country""")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=10_000) as cap:
        report.write.parquet(str(tmp_path / "report"))
    assert Store(str(tmp_path / "s")).meta("r")["capture_errors"] == []
    seg = cap.graph.graph["segments"][0]
    t = Store(str(tmp_path / "s")).read_parquet("r", f"samples/{seg['id']}.parquet")
    assert len(t) == len(orders) and seg["driving"] == "orders"  # a file source is named by its path
    assert {j["type"]: j["drops"] for j in seg["joins"]} == {"leftouter": False, "leftanti": True}
    assert "orders.amount" in seg["nodes"] and "orders.currency" in seg["nodes"]
    exact = report.agg(F.sum("revenue"), F.sum("n")).collect()[0]
    assert float((t["__weight__"] * t["__contrib__:report.revenue"]).sum()) == pytest.approx(exact[0], rel=1e-9)
    assert float((t["__weight__"] * t["__contrib__:report.n"]).sum()) == exact[1]
    jpy = t[(t["orders.currency"] == "JPY") & (t["orders.country"] != "UK") & (t["orders.amount"] > 12)]
    assert len(jpy) > 50  # no FX rate: the left join keeps them at rate 1
    np.testing.assert_allclose(jpy["__contrib__:report.revenue"], jpy["orders.amount"])
    uk = t[t["orders.country"] == "UK"]
    assert len(uk) > 500 and (uk["__contrib__:report.n"] == 0).all()


def test_a_window_over_few_partitions_runs_over_every_row_and_is_sampled_after(spark, data, tmp_path):
    """A window needs every row of its partition, and 4 countries are too few to sample whole: every row
    goes through the window as in the job, the units (orders) are sampled after it, with its values."""
    from pyspark.sql import Window

    root, _ = data
    fx = spark.read.parquet(str(root / "fx.parquet"))
    ranked = (spark.read.parquet(str(root / "orders.parquet"))
              .withColumn("rank", F.row_number().over(Window.partitionBy("country").orderBy("order_id")))
              .join(fx, "currency", "left").withColumn("usd", F.col("amount") * F.col("rate")))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=600) as cap:
        ranked.write.parquet(str(tmp_path / "ranked"))
    seg = cap.graph.graph["segments"][0]
    t = Store(str(tmp_path / "s")).read_parquet("r", f"samples/{seg['id']}.parquet")
    assert 300 < len(t) < 900 and seg["joins"][0]["drops"] is False
    assert seg["driving"] == "orders" and seg["window_mode"] == "after" and not seg["clusters"]
    written = spark.read.parquet(str(tmp_path / "ranked")).toPandas().set_index("order_id")
    rank_col = next(c for c in t.columns if c.endswith(".rank"))
    np.testing.assert_array_equal(t[rank_col].to_numpy(), written.loc[t["orders.order_id"], "rank"].to_numpy())


def test_the_sample_carries_only_the_columns_the_job_reads(spark, data, tmp_path):
    """A wide fact table is scanned for the few columns the job uses, as the job itself scans it; a
    column derived but never used (``shout``) is left out with its input."""
    root, orders = data
    wide = orders.assign(note=[f"note {i}" for i in range(len(orders))], spare=np.arange(len(orders)) * 2.0)
    wide.to_parquet(tmp_path / "wide.parquet")
    report = (spark.read.parquet(str(tmp_path / "wide.parquet")).withColumn("shout", F.upper("note"))
              .filter(F.col("amount") > 15).groupBy("country").agg(F.sum("amount").alias("revenue")))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=10_000) as cap:
        report.write.parquet(str(tmp_path / "report"))
    assert not Store(str(tmp_path / "s")).meta("r")["capture_errors"]
    seg = cap.graph.graph["segments"][0]
    t = Store(str(tmp_path / "s")).read_parquet("r", f"samples/{seg['id']}.parquet")
    nodes = {c for c in t.columns if not c.startswith("__")}
    assert {"wide.amount", "wide.country"} <= nodes
    assert not nodes & {"wide.note", "wide.spare", "wide.order_id", "wide.currency", "report.shout"}
    exact = report.agg(F.sum("revenue")).collect()[0][0]
    assert float((t["__weight__"] * t["__contrib__:report.revenue"]).sum()) == pytest.approx(exact, rel=1e-9)
