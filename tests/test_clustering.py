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
    clusters = np.repeat(np.arange(500), 8)  # 500 clusters of 8 units in each run
    other = clusters + 500  # ... drawn afresh: none of the baseline's

    def pair(x_b, x_c, g_c=other):
        return _design_effect(x_b, _run([clusters], 4000), x_c, _run([g_c], 4000))

    assert pair(rng.normal(size=4000), rng.normal(size=4000)) == pytest.approx(1.0, abs=0.2)
    fresh = pair(rng.normal(size=500)[clusters], rng.normal(size=500)[clusters])
    assert fresh == pytest.approx(8.0, rel=0.15)
    # the same 500 keys in both runs, each with a value of its own in both (a product's price): its
    # units are compared with its own, so what sets the keys apart is no noise
    fixed = rng.normal(size=500)
    assert pair(fixed[clusters] + 0.1 * rng.normal(size=4000), fixed[clusters] + 0.1 * rng.normal(size=4000),
                g_c=clusters) == pytest.approx(1.0, abs=0.2)
    # ... but keys whose shared value is drawn again each run (a customer's mood) still cluster
    again = pair(rng.normal(size=500)[clusters], rng.normal(size=500)[clusters], g_c=clusters)
    assert again == pytest.approx(8.0, rel=0.15)
    assert _design_effect(fixed[clusters], _run([], 4000), fixed[clusters], _run([], 4000)) == 1.0  # no key


def test_row_variance_is_the_sum_of_squared_cluster_sizes():
    clusters = np.repeat(np.arange(100), 4)
    assert _row_variance(_run([clusters], 400), _run([clusters + 100], 400)) == pytest.approx(2 * 100 * 16)
    assert _row_variance(_run([np.arange(400)], 400), _run([np.arange(400, 800)], 400)) == pytest.approx(800)
    # the same orders with as many line items in both runs: no cluster moved, only units count
    assert _row_variance(_run([clusters], 400), _run([clusters], 400)) == pytest.approx(800)
    # a half sample (weights 2) estimates the same squared sizes without bias
    rng = np.random.default_rng(1)
    est = []
    for _ in range(200):
        keep_b, keep_c = rng.random(400) < 0.5, rng.random(400) < 0.5
        est.append(_row_variance(_run([clusters[keep_b]], int(keep_b.sum()), 2.0),
                                 _run([clusters[keep_c] + 100], int(keep_c.sum()), 2.0)))
    assert np.mean(est) == pytest.approx(3200, rel=0.1)


def test_cluster_bootstrap_draws_whole_clusters():
    rng = np.random.default_rng(2)
    clusters = np.array([2, 0, 2, 1, 1, 1, 0, 3, 3, 3])
    current = np.array([4, 2, 2, 1, 4])  # shares keys 1 and 2 with the baseline
    sizes = np.bincount(clusters, minlength=5)
    for _ in range(20):
        ib, ic = _resample(len(clusters), len(current), (clusters, current), rng)
        drawn = np.bincount(clusters[ib], minlength=5)
        # every cluster drawn comes with all its units, as many times as it was drawn
        assert np.all(drawn[:4] % sizes[:4] == 0)
        assert (drawn[:4] // sizes[:4]).sum() == 4
        # a key both runs hold is drawn for both at once
        times_c = np.bincount(current[ic], minlength=5) // np.bincount(current, minlength=5).clip(1)
        assert np.array_equal(times_c[[1, 2]], (drawn // sizes.clip(1))[[1, 2]])
    ib, ic = _resample(7, 3, None, rng)
    assert (len(ib), len(ic)) == (7, 3)


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


def _retail(folder, seed: int, *, north_price: float = 1.0, demand: float = 1.0, spark=None) -> None:
    """The same 300 products (a price each) and 40 stores (a region each, named in a table of regions) in
    every run; 12,000 line items drawn afresh per run, priced at their product's price +-10%, less a
    promotion some days (a lookup by product and day, each of which few units share). ``north_price``
    multiplies the northern stores' prices; ``demand`` the demand for the toys."""
    fixed = np.random.default_rng(0)
    products = pd.DataFrame({"product_id": np.arange(300),
                             "category": fixed.choice(["toys", "food", "tools", "books"], 300),
                             "list_price": np.round(fixed.lognormal(3, 1, 300), 2)})
    stores = pd.DataFrame({"store_id": np.arange(40), "region_id": np.repeat(np.arange(4), 10)})
    regions = pd.DataFrame({"region_id": np.arange(4), "region": ["north", "south", "east", "west"]})
    promoted = fixed.choice(300 * 28, 800, replace=False)  # a discount on some products some days
    promotions = pd.DataFrame({"product_id": promoted // 28, "day": promoted % 28,
                               "promo_pct": np.round(fixed.uniform(0.05, 0.3, 800), 2)})
    rng = np.random.default_rng(seed)
    like = np.where(products.category == "toys", demand, 1.0)
    n = 12_000
    product = rng.choice(300, n, p=like / like.sum())
    store = rng.integers(0, 40, n)
    price = (products.list_price.to_numpy()[product] * rng.uniform(0.9, 1.1, n)
             * np.where(store < 10, north_price, 1.0))
    lines = pd.DataFrame({"line_id": np.arange(n), "product_id": product, "store_id": store,
                          "day": rng.integers(0, 28, n), "qty": rng.integers(1, 5, n),
                          "unit_price": np.round(price, 2)})
    for name, df in (("products", products), ("stores", stores), ("lines", lines), ("promotions", promotions),
                     ("regions", regions)):
        spark.createDataFrame(df).write.mode("overwrite").parquet(f"{folder}/{name}")


@pytest.fixture(scope="module")
def retail(spark, tmp_path_factory):
    """A/A runs a1-a3, ``north`` with the northern prices 30% higher, ``toys`` with toys in 3x demand."""
    tmp = tmp_path_factory.mktemp("fixed_products")
    path = str(tmp / "store")
    runs = {"a1": (21, {}), "a2": (22, {}), "a3": (23, {}), "north": (24, {"north_price": 1.3}),
            "toys": (25, {"demand": 3.0})}
    for run, (seed, fault) in runs.items():
        _retail(tmp / run, seed, spark=spark, **fault)
        with spark_causal.capture(spark, store=path, run=run, seed=3):
            lines = spark.read.parquet(f"{tmp / run}/lines")
            (lines.join(spark.read.parquet(f"{tmp / run}/products"), "product_id")
             .join(spark.read.parquet(f"{tmp / run}/stores"), "store_id")
             .join(spark.read.parquet(f"{tmp / run}/regions"), "region_id")
             .join(spark.read.parquet(f"{tmp / run}/promotions"), ["product_id", "day"], "left")
             .withColumn("value", F.col("qty") * F.col("unit_price") * (1 - F.coalesce("promo_pct", F.lit(0.0))))
             .groupBy("region", "category").agg(F.sum("value").alias("revenue"), F.count("*").alias("lines"))
             .write.mode("overwrite").parquet(str(tmp / "sales")))
    return path


@pytest.mark.parametrize("pair", [("a1", "a2"), ("a2", "a3")])
def test_line_items_of_fixed_products_are_quiet_when_nothing_changed(retail, pair):
    for target in ("sales.revenue", "sales.lines"):
        res = spark_causal.attribute(retail, *pair, target)
        assert not res.significant, (target, [(x.node, x.p_value) for x in res.attributions[:3]])


def test_a_regional_price_rise_is_seen_through_the_fixed_products_that_set_prices(retail):
    """Prices are mostly their product's, and the products are the same rows in both runs: counted as
    clusters drawn afresh, the price's design effect was ~50 and the rise read 'not significant'."""
    res = spark_causal.attribute(retail, "a1", "north", "sales.revenue")
    assert res.significant
    top = res.attributions[0]
    assert top.node == "lines.unit_price", [(x.node, x.contribution) for x in res.attributions[:3]]
    assert top.contribution == pytest.approx(res.change, rel=0.35)
    # the region is the store's region's name, which no root can be conditioned on: whether a unit is in
    # the slice is (the model drew the north's prices from every region's, and found a quarter of the rise)
    res = spark_causal.attribute(retail, "a1", "north", "sales.revenue", where="region = 'north'")
    assert res.significant and res.attributions[0].node == "lines.unit_price"
    assert res.attributions[0].contribution == pytest.approx(res.change, rel=0.25), res.summary()


def test_more_toys_sold_is_the_product_mix_not_their_prices(retail):
    res = spark_causal.attribute(retail, "a1", "toys", "sales.lines", where="category = 'toys'")
    assert res.significant
    assert res.attributions[0].node == "lines.product_id", [(x.node, x.contribution) for x in res.attributions[:3]]
    res = spark_causal.attribute(retail, "a1", "toys", "sales.revenue")
    assert "lines.unit_price" not in [x.node for x in res.attributions if x.mechanism_changed], \
        [(x.node, x.contribution, x.p_value) for x in res.attributions[:3]]
