"""Clustered units: orders of the same customer share the customer's attributes, so they are not
independent draws. Two runs of the same job over different customers (A/A) must not look changed,
while a real change in the customers' mix must still be named."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

import spark_causal
from spark_causal.attribution import _design_effect, _resample, _Run, _row_variance


def _run(groups: list[np.ndarray], n: int, w: float = 1.0) -> _Run:
    return _Run({}, np.full(n, w), n, n * w, None, groups)


def test_design_effect_is_one_for_independent_units_and_the_cluster_size_for_shared_values():
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(500), 8)  # 500 clusters of 8 units
    independent = rng.normal(size=4000)
    shared = rng.normal(size=500)[clusters]
    r = _run([clusters], 4000)
    assert _design_effect([(independent, r)]) == pytest.approx(1.0, abs=0.2)
    assert _design_effect([(shared, r)]) == pytest.approx(8.0, rel=0.15)
    assert _design_effect([(shared, _run([], 4000))]) == 1.0  # no key: independent units


def test_row_variance_is_the_sum_of_squared_cluster_sizes():
    clusters = np.repeat(np.arange(100), 4)
    assert _row_variance(_run([clusters], 400)) == pytest.approx(100 * 16)
    assert _row_variance(_run([np.arange(400)], 400)) == pytest.approx(400)  # singletons: Poisson
    # a half sample (weights 2) estimates the same squared sizes without bias
    rng = np.random.default_rng(1)
    est = []
    for _ in range(200):
        keep = rng.random(400) < 0.5
        est.append(_row_variance(_run([clusters[keep]], int(keep.sum()), 2.0)))
    assert np.mean(est) == pytest.approx(1600, rel=0.1)


def test_cluster_bootstrap_draws_whole_clusters():
    rng = np.random.default_rng(2)
    clusters = np.array([2, 0, 2, 1, 1, 1, 0, 3, 3, 3])
    sizes = np.bincount(clusters)
    for _ in range(20):
        idx = _resample(len(clusters), clusters, rng)
        drawn = clusters[idx]
        # every cluster drawn comes with all its units, as many times as it was drawn
        counts = np.bincount(drawn, minlength=len(sizes))
        assert np.all(counts % sizes == 0)
        assert (counts // sizes).sum() == len(sizes)
    assert len(_resample(7, None, rng)) == 7


def _write(spark, folder, seed: int, *, vip_share: float = 0.3, app_factor: float = 1.0) -> None:
    """600 customers with a segment and a spend level (vips spend 2x); 20 orders each on average, a
    quarter of them through the app (amounts do not depend on the channel unless ``app_factor``)."""
    rng = np.random.default_rng(seed)
    n_cust = 600
    customers = pd.DataFrame({
        "customer_id": np.arange(n_cust) + seed * 1000,
        "segment": rng.choice(["vip", "regular", "new"], n_cust, p=[vip_share, 0.5, 0.5 - vip_share]),
        "level": rng.lognormal(0, 0.25, n_cust),
    })
    customers["level"] *= np.where(customers.segment == "vip", 2.0, 1.0)  # vips spend more
    n = 12_000
    cust = rng.integers(0, n_cust, n)
    channel = rng.choice(["web", "app"], n, p=[0.75, 0.25])
    amount = rng.lognormal(3, 0.6, n) * customers.level.to_numpy()[cust] * np.where(channel == "app", app_factor, 1.0)
    orders = pd.DataFrame({"order_id": np.arange(n) + seed * 100_000,
                           "customer_id": customers.customer_id.to_numpy()[cust],
                           "channel": channel, "amount": np.round(amount, 2)})
    spark.createDataFrame(customers).write.mode("overwrite").parquet(f"{folder}/customers")
    spark.createDataFrame(orders).write.mode("overwrite").parquet(f"{folder}/orders")


def _job(spark, folder, out) -> None:
    orders = spark.read.parquet(f"{folder}/orders")
    customers = spark.read.parquet(f"{folder}/customers")
    (orders.filter(F.col("channel") != "test").join(customers, "customer_id").groupBy("segment")
     .agg(F.sum("amount").alias("revenue")).write.mode("overwrite").parquet(out))


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory):
    """Runs r1-r3 of the same job on fresh data (A/A), ``shift`` with fewer vips, ``app`` with app
    amounts 40% higher."""
    tmp = tmp_path_factory.mktemp("clustered")
    path = str(tmp / "store")
    runs = {"r1": (11, {}), "r2": (12, {}), "r3": (13, {}), "shift": (14, {"vip_share": 0.1}),
            "app": (15, {"app_factor": 1.4})}
    for run, (seed, fault) in runs.items():
        _write(spark, tmp / run, seed, **fault)
        with spark_causal.capture(spark, store=path, run=run, sample_size=5000, seed=3):
            _job(spark, tmp / run, str(tmp / "report"))
    return path


@pytest.mark.parametrize("pair", [("r1", "r2"), ("r2", "r3")])
def test_clustered_aa_runs_are_quiet(store, pair):
    res = spark_causal.attribute(store, *pair, "report.revenue", where="segment = 'vip'")
    assert not res.significant, [(x.node, x.p_value) for x in res.attributions[:3]]


def test_a_shift_in_the_customers_mix_is_found(store):
    res = spark_causal.attribute(store, "r1", "shift", "report.revenue", where="segment = 'vip'")
    assert res.significant
    assert res.attributions[0].node == "customers.segment", [(x.node, x.contribution) for x in res.attributions[:3]]


def test_a_drift_confined_to_one_channel_is_found(store):
    """Amounts do not depend on the channel in the baseline, so the model does not condition on it;
    the change test still compares each channel's amounts on their own."""
    res = spark_causal.attribute(store, "r1", "app", "report.revenue")
    assert res.significant
    assert res.attributions[0].node == "orders.amount", [(x.node, x.contribution) for x in res.attributions[:3]]
    assert res.attributions[0].contribution > 0
