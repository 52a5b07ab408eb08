"""Drill-down across aggregation boundaries: the rebate moved because the per-customer total moved,
and the total moved because orders.amount drifted."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

import spark_causal


def _orders(seed: int, drift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n, customers = 3000, 300
    cust = rng.integers(0, customers, n)
    amount = rng.lognormal(4, 0.5, n).round(2)
    if drift:  # a third of the customers spend 1.5x as much
        amount = np.where(cust % 3 == 0, amount * 1.5, amount).round(2)
    return pd.DataFrame({"order_id": np.arange(n), "customer_id": cust, "amount": amount})


def _job(spark, path: str):
    orders = spark.read.parquet(path)
    totals = orders.groupBy("customer_id").agg(F.sum("amount").alias("total"))
    rows = (orders.join(totals, "customer_id")
            .withColumn("tier", F.when(F.col("total") > 700, "vip").otherwise("std"))
            .withColumn("rebate", F.col("amount") * F.when(F.col("tier") == "vip", 0.1).otherwise(0.0)))
    return rows.groupBy("tier").agg(F.sum("rebate").alias("rebate"))


def test_drill_down_reaches_the_drifted_source(spark, tmp_path):
    store = str(tmp_path / "store")
    for run, drift in (("a", False), ("b", True)):
        folder = tmp_path / run / "orders"
        folder.mkdir(parents=True)
        _orders(11 if run == "a" else 12, drift).to_parquet(folder / "part-0.parquet")
        with spark_causal.capture(spark, store=store, run=run):
            _job(spark, str(folder)).write.parquet(str(tmp_path / run / "rebates"))
    res = spark_causal.attribute(store, "a", "b", "rebates.rebate")
    assert res.significant and res.change > 0
    assert res.attributions[0].node == "orders.amount", res.to_pandas()
    assert any(w.startswith("drilled down:") for w in res.warnings), res.warnings
    assert res.details["drilldown"] and res.details["drilldown"][0]["explained"]
    # the parts still add up: nothing was created or lost by the drill-down
    assert abs(sum(a.contribution for a in res.attributions) + res.unexplained - res.change) < 1e-6 * abs(
        res.change)
    nodes = [a.node for a in res.attributions]
    assert len(nodes) == len(set(nodes))
    assert "rebates.total" not in nodes  # the joined-back aggregate was replaced by what moved it


def _retail(seed: int, bump: int | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng, fixed = np.random.default_rng(seed), np.random.default_rng(5)  # the dimension is the same in both runs
    n, products = 8000, 120
    dim = pd.DataFrame({"product_id": np.arange(products), "category": [f"c{i % 6}" for i in range(products)],
                        "price": fixed.lognormal(3, 0.6, products).round(2)})
    if bump is not None:  # one product's price typed 100x too large
        dim.loc[dim.product_id == bump, "price"] *= 100
    sales = pd.DataFrame({"sale_id": np.arange(n), "product_id": rng.integers(0, products, n),
                          "qty": rng.integers(1, 10, n)})
    return sales, dim


def test_a_price_below_a_top_n_of_aggregated_groups_is_named(spark, tmp_path):
    """Revenue per product, the top 5 per category by RANK(), summed per category: the target is two
    aggregations above the rows. One product's price x100 moves one of the outer segment's few units, too
    few to be significant there; the top-N filter drops groups, and the drill-down must still go below
    it, over the groups it kept, to the price. Seeds of the same data raise nothing."""
    store = str(tmp_path / "store")
    for run, seed, bump in (("a", 1, None), ("same", 2, None), ("price", 2, 13)):
        sales, dim = _retail(seed, bump)
        (tmp_path / run).mkdir()
        sales.to_parquet(tmp_path / run / "sales.parquet")
        dim.to_parquet(tmp_path / run / "products.parquet")
        spark.read.parquet(str(tmp_path / run / "sales.parquet")).createOrReplaceTempView("dd_sales")
        spark.read.parquet(str(tmp_path / run / "products.parquet")).createOrReplaceTempView("dd_products")
        with spark_causal.capture(spark, store=store, run=run):
            spark.sql("""WITH rev AS (SELECT p.product_id, p.category, SUM(s.qty * p.price) AS revenue
                                      FROM dd_sales s JOIN dd_products p ON s.product_id = p.product_id
                                      GROUP BY p.product_id, p.category),
                          ranked AS (SELECT product_id, category, revenue,
                                            RANK() OVER (PARTITION BY category ORDER BY revenue DESC) AS rk FROM rev)
                          SELECT category, SUM(revenue) AS revenue FROM ranked WHERE rk <= 5 GROUP BY category""") \
                .write.parquet(str(tmp_path / run / "report"))
    res = spark_causal.attribute(store, "a", "price", "report.revenue")
    assert res.significant and res.change > 0, res.summary()
    assert res.attributions[0].node == "products.price", res.to_pandas()
    assert res.attributions[0].contribution == pytest.approx(res.change, rel=0.2), res.to_pandas()
    assert res.details["drilldown"][0]["aggregate"] == "rev.revenue"
    assert abs(sum(a.contribution for a in res.attributions) + res.unexplained - res.change) < 1e-6 * abs(res.change)
    # the bumped product's category (13 % 6 = 1): the same cause, its slice's size
    sliced = spark_causal.attribute(store, "a", "price", "report.revenue", where="category = 'c1'")
    assert sliced.significant and sliced.attributions[0].node == "products.price", sliced.to_pandas()
    same = spark_causal.attribute(store, "a", "same", "report.revenue")
    assert not same.significant and not any(a.mechanism_changed for a in same.attributions), same.to_pandas()
