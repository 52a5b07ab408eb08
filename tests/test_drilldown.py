"""Drill-down across aggregation boundaries: the rebate moved because the per-customer total moved,
and the total moved because orders.amount drifted."""
from __future__ import annotations

import numpy as np
import pandas as pd
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
