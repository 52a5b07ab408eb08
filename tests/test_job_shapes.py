"""Common job shapes that attribution must see through: an aggregate of an expression (``SUM(amount *
qty)``, the usual SQL style), and numbers read as text (a CSV without a schema)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import spark_causal

_SQL = "SELECT country, SUM(amount * qty{factor}) AS revenue, COUNT(*) AS orders FROM agg_orders GROUP BY country"


def _orders(seed: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 4000
    country = rng.choice(["DE", "FR", "US"], n)
    amount = rng.lognormal(3, 0.4, n).round(2)
    if drift:  # German orders 1.4x as large
        amount = np.where(country == "DE", amount * 1.4, amount).round(2)
    return pd.DataFrame({"id": np.arange(n), "country": country, "amount": amount, "qty": rng.integers(1, 4, n)})


@pytest.mark.parametrize("fault", ["drift", "code"])
def test_a_sum_of_an_expression_is_attributed_through_it(spark, tmp_path, fault):
    """To the source column that drifted, or to the aggregate itself when its code changed."""
    store = str(tmp_path / "store")
    for run, seed in (("a", 21), ("b", 22)):
        folder = tmp_path / run / "orders"
        folder.mkdir(parents=True)
        _orders(seed, drift=fault == "drift" and run == "b").to_parquet(folder / "part-0.parquet")
        spark.read.parquet(str(folder)).createOrReplaceTempView("agg_orders")
        factor = " * 1.25" if fault == "code" and run == "b" else ""
        with spark_causal.capture(spark, store=store, run=run) as cap:
            spark.sql(_SQL.format(factor=factor)).write.parquet(str(tmp_path / run / "report"))
        assert not cap.errors
    seg = cap.graph.graph["segments"][0]
    assert seg["aggregates"]["report.revenue"]["input"] is None and "amount" in seg["aggregates"]["report.revenue"]["arg"]
    res = spark_causal.attribute(store, "a", "b", "report.revenue")
    assert res.significant and res.change > 0
    top = [a for a in res.attributions if a.contribution]
    assert top[0].node == ("orders.amount" if fault == "drift" else "report.revenue")
    assert top[0].contribution == pytest.approx(res.change, rel=0.35)
    if fault == "code":
        assert "report.revenue" in {c["node"] for c in res.code_changes}


def test_numbers_read_as_text_are_compared_as_numbers(spark, tmp_path):
    """A CSV read without a schema gives string columns; a drift of the amounts it holds is named."""
    from pyspark.sql import functions as F

    store = str(tmp_path / "store")
    for run, seed in (("a", 31), ("b", 32)):
        frame = _orders(seed, drift=run == "b")
        frame["amount"] = frame["amount"].astype(str).where(frame["id"] % 500 != 7, "n/a")  # stray text
        (tmp_path / run).mkdir()
        frame.to_csv(tmp_path / run / "orders.csv", index=False)
        with spark_causal.capture(spark, store=store, run=run) as cap:
            orders = spark.read.option("header", True).csv(str(tmp_path / run / "orders.csv"))
            orders.groupBy("country").agg(F.sum(F.expr("try_cast(amount AS DOUBLE)")).alias("revenue")) \
                .write.parquet(str(tmp_path / run / "report"))
        assert not cap.errors and cap.graph.nodes["orders.amount"]["dtype"] == "string"
    res = spark_causal.attribute(store, "a", "b", "report.revenue")
    assert res.significant and [a.node for a in res.attributions if a.contribution][0] == "orders.amount"


def test_a_pivoted_column_is_refused_with_the_aggregates_to_use(spark, tmp_path):
    """A pivot's columns are computed above the aggregation: the error names what can be attributed."""
    from pyspark.sql import functions as F

    from spark_causal.errors import SparkCausalError

    store = str(tmp_path / "store")
    for run, seed in (("a", 41), ("b", 42)):
        (tmp_path / run).mkdir()
        _orders(seed, drift=False).to_parquet(tmp_path / run / "orders.parquet")
        with spark_causal.capture(spark, store=store, run=run):
            spark.read.parquet(str(tmp_path / run / "orders.parquet")).groupBy("qty").pivot(
                "country", ["DE", "FR"]).agg(F.sum("amount")).write.parquet(str(tmp_path / run / "pivoted"))
    with pytest.raises(SparkCausalError, match="computed from aggregates") as err:
        spark_causal.attribute(store, "a", "b", "pivoted.DE")
    assert "pivoted.sum(amount)" in err.value.hint


def _events(seed: int, mix: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 12000
    weights = np.where(np.arange(150) % 5 == 0, 3.0 if mix else 1.0, 1.0)  # every 5th product: electronics
    return pd.DataFrame({"event_id": np.arange(n), "product_id": rng.choice(150, n, p=weights / weights.sum()),
                         "channel": rng.choice(["web", "app"], n), "status": rng.choice(["ok", "ok", "returned"], n),
                         "qty": rng.integers(1, 4, n), "day": rng.integers(1, 15, n)})


def test_a_product_mix_shift_is_named(spark, tmp_path):
    """A shift of the product mix (ids that key a lookup, scattered over the id range) is a change of
    category shares, seen by the whole-sample test, not by a KS test of the ids or per-cell tests."""
    rng = np.random.default_rng(5)
    products = pd.DataFrame({"product_id": np.arange(150),
                             "price": np.where(np.arange(150) % 5 == 0, 400.0, 20.0) * rng.uniform(0.8, 1.2, 150)})
    store = str(tmp_path / "store")
    for run, seed in (("a", 51), ("b", 52)):
        (tmp_path / run).mkdir()
        _events(seed, mix=run == "b").to_parquet(tmp_path / run / "events.parquet")
        products.to_parquet(tmp_path / run / "products.parquet")
        spark.read.parquet(str(tmp_path / run / "events.parquet")).createOrReplaceTempView("mix_events")
        spark.read.parquet(str(tmp_path / run / "products.parquet")).createOrReplaceTempView("mix_products")
        with spark_causal.capture(spark, store=store, run=run):
            spark.sql("""WITH sold AS (SELECT e.channel, e.day, e.qty * p.price AS revenue FROM mix_events e
                         JOIN mix_products p ON e.product_id = p.product_id WHERE e.status = 'ok')
                         SELECT channel, day, SUM(revenue) AS revenue FROM sold GROUP BY channel, day""") \
                .write.parquet(str(tmp_path / run / "daily"))
    res = spark_causal.attribute(store, "a", "b", "daily.revenue")
    named = [a.node for a in res.attributions if a.contribution]
    assert res.significant and named[:1] == ["events.product_id"], res.summary()


def test_a_range_join_follows_the_column_it_compares(spark, tmp_path):
    """A range (non-equi) join's columns are a fitted function of the driving column the condition
    compares: an amount drift is the amount's, a changed tier rate the tier table's, no change none."""
    from pyspark.sql import functions as F

    store = str(tmp_path / "store")
    runs = {"a": (61, False, 0.10), "drift": (62, True, 0.10), "tier": (62, False, 0.25), "same": (63, False, 0.10)}
    for run, (seed, drift, rate) in runs.items():
        (tmp_path / run).mkdir()
        _orders(seed, drift).to_parquet(tmp_path / run / "orders.parquet")
        pd.DataFrame({"lo": [0.0, 20.0, 40.0], "hi": [20.0, 40.0, 1e9], "rate": [0.0, 0.05, rate]}) \
            .to_parquet(tmp_path / run / "tiers.parquet")
        with spark_causal.capture(spark, store=store, run=run):
            o = spark.read.parquet(str(tmp_path / run / "orders.parquet"))
            t = spark.read.parquet(str(tmp_path / run / "tiers.parquet"))
            o.join(t, (o.amount >= t.lo) & (o.amount < t.hi)).withColumn("fee", F.col("amount") * F.col("rate")) \
                .groupBy("country").agg(F.sum("fee").alias("fees")).write.parquet(str(tmp_path / run / "report"))
    for run, cause in (("drift", "orders.amount"), ("tier", "tiers.rate")):
        res = spark_causal.attribute(store, "a", run, "report.fees")
        named = [a.node for a in res.attributions if a.contribution]
        assert res.significant and named[:1] == [cause], res.summary()
    assert not spark_causal.attribute(store, "a", "same", "report.fees").significant
