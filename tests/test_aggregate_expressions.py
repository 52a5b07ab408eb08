"""An aggregate of an expression (``SUM(amount * qty)``, the usual SQL style) is attributed through the
expression: to the source column that drifted, or to the aggregate itself when its code changed."""
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
