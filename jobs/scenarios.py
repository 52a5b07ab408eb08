"""Pipelines and fault scenarios of the accuracy benchmark (``jobs/benchmark_accuracy.py``).

Four pipelines, written the way ordinary PySpark jobs are written (they know nothing about
spark-causal), each with a data generator that takes a seed and a tuple of faults, and a set of
scenarios. A scenario says which faults the *current* run's data gets and which code variant the
current run's job uses; the baseline run always gets fault-free data from another seed and the
default code.

The true root cause is never written here as a node id: it is derived from the captured graphs by a
rule that does not look at any method's answer (see ``truth_nodes`` in the benchmark):

* ``("column", table, column)``: the source column whose generator was perturbed, ``<table>.<column>``;
* ``("code",)``: the node whose fingerprint differs between the baseline and the current graph;
* ``("volume",)``: ``<driving table>.__rows__`` of the target's segment;
* ``("rows", table)``: ``<table>.__rows__``, a joined table whose rows per driving row changed;
* ``("join", table, column)``: the join selection that reads ``<table>.<column>`` (its keys stopped matching).

Pipelines:

``revenue``  DataFrame API: orders filtered, left-joined to FX rates, inner-joined to customers,
             two derived columns, revenue per country and tier (``jobs/example_data.py`` makes the data).
``tpch``     SQL over TPC-H tables (a query-5 style "revenue per Asian nation" with ANSI joins, a derived
             table for the line revenue and a date window; a CTE instead of the derived table makes
             capture fail on Spark 4.3, see the benchmark's notes), on ``tpchgen-cli`` data: every run reads a different
             ``--part`` of orders/lineitem (so two seeds are two samples of one distribution) and the full
             dimension tables.
``rebates``  an aggregation joined back to its own input and aggregated again: spend per customer
             decides a customer's tier, each order earns a rebate by its customer's tier, rebates are
             summed per tier (two segments).
``ads``      SQL: a day's clicks (new ids every day) left-joined to their conversions by click id, joined
             to active campaigns, revenue per channel with a HAVING on the channel's clicks.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from example_data import generate as generate_revenue_data


# ============================================================================ pipeline 1: revenue
def revenue_job(spark, data: str, out: str, *, min_amount: float = 1.0, customer_join: str = "inner",
                net_formula: str = "standard") -> None:
    """Revenue per country and customer tier, in USD, net of the customer's discount."""
    from pyspark.sql import functions as F

    orders = spark.read.parquet(f"{data}/orders")
    customers = spark.read.parquet(f"{data}/customers")
    fx = spark.read.parquet(f"{data}/fx")
    valid = orders.filter(F.col("amount") >= min_amount)
    enriched = (valid.join(fx, "currency", "left")
                .join(customers, "customer_id", customer_join)
                .withColumn("amount_usd", F.col("amount") * F.col("rate")))
    discount = F.coalesce(F.col("discount"), F.lit(0.0))
    if net_formula == "standard":
        net = F.col("amount_usd") * (1 - discount)
    else:  # the "refactored" formula: the discount applied twice
        net = F.col("amount_usd") * (1 - 2 * discount)
    revenue = (enriched.withColumn("net_usd", net)
               .groupBy("country", "tier")
               .agg(F.sum("net_usd").alias("revenue"), F.count(F.lit(1)).alias("orders")))
    revenue.write.mode("overwrite").parquet(f"{out}/revenue")


def revenue_data(folder: Path, seed: int, faults: tuple[str, ...], **_: Any) -> None:
    generate_revenue_data(folder, seed=seed, n_orders=20_000, faults=faults, orphan_rate=0.05, drift_factor=1.3)


# ============================================================================ pipeline 2: TPC-H
TPCH_SCALE = 0.1
TPCH_PARTS = 20
ASIA_REVENUE_SQL = """
SELECT n_name, sum(volume) AS revenue, count(*) AS lines
FROM (SELECT l_orderkey, l_suppkey, l_shipmode, {volume} AS volume FROM lineitem) AS line_revenue
JOIN orders ON l_orderkey = o_orderkey
JOIN customer ON o_custkey = c_custkey
JOIN nation ON c_nationkey = n_nationkey
JOIN region ON n_regionkey = r_regionkey
WHERE r_name = 'ASIA'
  AND o_orderdate >= DATE '1994-01-01'
  AND o_orderdate < DATE '{until}'
GROUP BY n_name
"""
TPCH_VOLUME = {"standard": "l_extendedprice * (1 - l_discount)",
               "with_tax": "l_extendedprice * (1 - l_discount) * (1 + l_tax)"}


def tpch_job(spark, data: str, out: str, *, until: str = "1996-01-01", volume: str = "standard") -> None:
    """Revenue per Asian customer nation over two years (TPC-H query 5 style)."""
    for table in ("lineitem", "orders", "customer", "nation", "region"):
        spark.read.parquet(f"{data}/{table}").createOrReplaceTempView(table)
    result = spark.sql(ASIA_REVENUE_SQL.format(volume=TPCH_VOLUME[volume], until=until))
    result.write.mode("overwrite").parquet(f"{out}/asia_revenue")


def tpch_base(cache: Path) -> Path:
    """tpchgen-cli output at TPCH_SCALE: orders/lineitem in TPCH_PARTS parts, dimensions whole (cached)."""
    base = Path(cache) / f"tpch-sf{TPCH_SCALE}-p{TPCH_PARTS}"
    marker = base / "_DONE"
    if marker.exists():
        return base
    if shutil.which("tpchgen-cli") is None:
        raise RuntimeError("tpchgen-cli not found: pip install tpchgen-cli")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    common = ["--scale-factor", str(TPCH_SCALE), "--output-dir", str(base), "--quiet", "--overwrite"]
    subprocess.run(["tpchgen-cli", "parquet", *common, "--tables", "orders,lineitem", "--parts", str(TPCH_PARTS)],
                   check=True, capture_output=True)
    subprocess.run(["tpchgen-cli", "parquet", *common, "--tables", "customer,nation,region"],
                   check=True, capture_output=True)
    marker.write_text("ok")
    return base


def _floats(df: pd.DataFrame) -> pd.DataFrame:
    """TPC-H decimals (read by pandas as Decimal objects) as doubles."""
    for col in df.columns:
        if df[col].dtype == object and len(df) and type(df[col].iloc[0]).__name__ == "Decimal":
            df[col] = df[col].astype(float)
    return df


def _read_part(base: Path, table: str, part: int) -> pd.DataFrame:
    return _floats(pd.read_parquet(base / table / f"{table}.{part}.parquet"))


def tpch_data(folder: Path, seed: int, faults: tuple[str, ...], *, cache: Path, **_: Any) -> None:
    """One run's TPC-H data: orders/lineitem of one part chosen by ``seed``, dimensions whole."""
    base = tpch_base(cache)
    rng = np.random.default_rng(seed)
    part = int(rng.integers(1, TPCH_PARTS + 1))
    orders, lineitem = _read_part(base, "orders", part), _read_part(base, "lineitem", part)
    if "volume" in faults:  # 30% more orders (with their lines) from another part
        extra = 1 + (part % TPCH_PARTS)
        o2, l2 = _read_part(base, "orders", extra), _read_part(base, "lineitem", extra)
        keep = o2.o_orderkey[rng.random(len(o2)) < 0.3]
        orders = pd.concat([orders, o2[o2.o_orderkey.isin(keep)]], ignore_index=True)
        lineitem = pd.concat([lineitem, l2[l2.l_orderkey.isin(keep)]], ignore_index=True)
    if "drift" in faults:  # air freight prices up 30%
        air = lineitem.l_shipmode.isin(["AIR", "REG AIR"])
        lineitem.loc[air, "l_extendedprice"] = (lineitem.loc[air, "l_extendedprice"] * 1.3).round(2)
    nation = pd.read_parquet(base / "nation.parquet")
    if "region" in faults:  # JAPAN filed under EUROPE in the nation dimension
        nation.loc[nation.n_name == "JAPAN", "n_regionkey"] = 3
    frames = {"orders": orders, "lineitem": lineitem, "nation": nation,
              "customer": _floats(pd.read_parquet(base / "customer.parquet")),
              "region": pd.read_parquet(base / "region.parquet")}
    for name, frame in frames.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / name / "part-0.parquet", index=False)


# ============================================================================ pipeline 3: rebates
CHANNELS = ["web", "store", "app", "test"]


def rebates_job(spark, data: str, out: str, *, vip_threshold: float = 800.0) -> None:
    """Loyalty rebates: a customer's spend decides the tier; each order earns a rebate by tier."""
    from pyspark.sql import functions as F

    orders = spark.read.parquet(f"{data}/orders")
    valid = orders.filter((F.col("channel") != "test") & (F.col("amount") > 0))
    spend = valid.groupBy("customer_id").agg(F.sum("amount").alias("spend"))
    tiers = spend.withColumn("tier", F.when(F.col("spend") >= vip_threshold, "vip").otherwise("regular"))
    rebates = (valid.join(tiers.select("customer_id", "tier"), "customer_id")
               .withColumn("rebate", F.col("amount") * F.when(F.col("tier") == "vip", 0.10).otherwise(0.02)))
    report = rebates.groupBy("tier").agg(F.sum("rebate").alias("rebate"), F.count(F.lit(1)).alias("orders"))
    report.write.mode("overwrite").parquet(f"{out}/rebates")


def rebates_data(folder: Path, seed: int, faults: tuple[str, ...], **_: Any) -> None:
    rng = np.random.default_rng(seed)
    n_customers = 2_000 * (13 if "volume" in faults else 10) // 10
    n = 10 * n_customers
    p_channel = [0.35, 0.3, 0.2, 0.15] if "mix" in faults else [0.45, 0.3, 0.2, 0.05]
    orders = pd.DataFrame({
        "order_id": np.arange(n) + seed * 10_000_000,
        "customer_id": rng.integers(0, n_customers, n),
        "channel": rng.choice(CHANNELS, n, p=p_channel),
        "amount": rng.lognormal(3.8, 0.9, n).round(2),
    })
    if "drift" in faults:  # app orders 30% larger
        app = orders.channel == "app"
        orders.loc[app, "amount"] = (orders.loc[app, "amount"] * 1.3).round(2)
    if "nulls" in faults:  # 15% of amounts lost upstream (dropped by the job's amount > 0 filter)
        orders.loc[rng.random(n) < 0.15, "amount"] = np.nan
    (folder / "orders").mkdir(parents=True, exist_ok=True)
    orders.to_parquet(folder / "orders" / "part-0.parquet", index=False)


# ============================================================================ pipeline 4: ads
ADS_SQL = """
SELECT c.channel, SUM(COALESCE(v.revenue, 0)) AS revenue, COUNT(*) AS clicks
FROM clicks c
LEFT JOIN conversions v ON c.click_id = v.click_id
JOIN campaigns k ON c.campaign_id = k.campaign_id
WHERE k.active
GROUP BY c.channel
HAVING COUNT(*) >= {min_clicks}
"""
ADS_CHANNELS = ["search", "social", "display", "email"]


def ads_job(spark, data: str, out: str, *, min_clicks: int = 100) -> None:
    """Revenue of a day's ad clicks per channel: each click's conversion (if any) looked up by click id,
    clicks of inactive campaigns left out, channels with too few clicks left out."""
    for table in ("clicks", "conversions", "campaigns"):
        spark.read.parquet(f"{data}/{table}").createOrReplaceTempView(table)
    spark.sql(ADS_SQL.format(min_clicks=min_clicks)).write.mode("overwrite").parquet(f"{out}/ads")


def ads_data(folder: Path, seed: int, faults: tuple[str, ...], **_: Any) -> None:
    rng = np.random.default_rng(seed)
    n = 15_000
    clicks = pd.DataFrame({"click_id": [f"k{seed}-{i:07d}" for i in range(n)],  # a day's own click ids
                           "channel": rng.choice(ADS_CHANNELS, n, p=[0.45, 0.25, 0.2, 0.1]),
                           "campaign_id": rng.integers(1, 41, n)})
    conv = clicks.sample(frac=0.3, random_state=int(rng.integers(1 << 31)))[["click_id"]].reset_index(drop=True)
    conv["revenue"] = rng.lognormal(3.0, 0.6, len(conv)).round(2)
    hit = rng.random(len(conv))
    if "key_format" in faults:  # a source system's new id format: 40% of conversions no longer match
        conv.loc[hit < 0.4, "click_id"] = conv.loc[hit < 0.4, "click_id"].str.upper()
    if "duplicated" in faults:  # a fifth of the conversions delivered twice
        conv = pd.concat([conv, conv[hit < 0.2]], ignore_index=True)
    if "drift" in faults:  # conversions worth 30% more
        conv["revenue"] = (conv["revenue"] * 1.3).round(2)
    campaigns = pd.DataFrame({"campaign_id": np.arange(1, 41), "active": np.arange(1, 41) % 8 != 0})
    for name, df in (("clicks", clicks), ("conversions", conv), ("campaigns", campaigns)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        df.to_parquet(folder / name / "part-0.parquet", index=False)


# ============================================================================ registry
@dataclass(frozen=True)
class Pipeline:
    name: str
    job: Callable[..., None]
    data: Callable[..., None]
    target: str                      # output column id
    driving: str                     # the table whose rows are the units (for documentation only)


@dataclass(frozen=True)
class Scenario:
    pipeline: str
    name: str
    kind: str                        # drift | mix | dimension | formula | filter | join | nulls | volume | two | aa
    faults: tuple[str, ...] = ()     # data faults of the current run
    code: dict = field(default_factory=dict)   # job options of the current run (a code change)
    truth: tuple[tuple, ...] = ()    # rules (see module docstring); empty for A/A
    quick: bool = True               # part of the --quick set

    @property
    def id(self) -> str:
        return f"{self.pipeline}/{self.name}"


PIPELINES = {
    "rebates": Pipeline("rebates", rebates_job, rebates_data, "rebates.rebate", "orders"),
    "revenue": Pipeline("revenue", revenue_job, revenue_data, "revenue.revenue", "orders"),
    "tpch": Pipeline("tpch", tpch_job, tpch_data, "asia_revenue.revenue", "lineitem"),
    "ads": Pipeline("ads", ads_job, ads_data, "ads.revenue", "clicks"),
}

# The --quick set (quick=True) is fixed by a rule: each pipeline's first two fault scenarios and its
# first A/A pair.
SCENARIOS = [
    # pipeline 3 first: the benchmark runs pipelines in this order, and dowhy's slow pairs (submitted to a
    # background process) then overlap with the captures of the other pipelines.
    # pipeline 3: rebates (aggregate joined back, two segments)
    Scenario("rebates", "app_amount_drift", "drift", ("drift",), truth=(("column", "orders", "amount"),)),
    Scenario("rebates", "channel_mix", "mix", ("mix",), truth=(("column", "orders", "channel"),)),
    Scenario("rebates", "vip_threshold", "filter", code={"vip_threshold": 600.0}, truth=(("code",),), quick=False),
    Scenario("rebates", "volume", "volume", ("volume",), truth=(("volume",),), quick=False),
    Scenario("rebates", "threshold_and_volume", "two", ("volume",), code={"vip_threshold": 600.0},
             truth=(("code",), ("volume",)), quick=False),
    Scenario("rebates", "aa", "aa"),
    Scenario("rebates", "aa2", "aa", quick=False),
    # pipeline 1: revenue (DataFrame API)
    Scenario("revenue", "drift_one_country", "drift", ("drift",), truth=(("column", "orders", "amount"),)),
    Scenario("revenue", "currency_mix", "mix", ("mix",), truth=(("column", "orders", "currency"),)),
    Scenario("revenue", "fx_rate_x100", "dimension", ("fx",), truth=(("column", "fx", "rate"),), quick=False),
    Scenario("revenue", "net_formula", "formula", code={"net_formula": "double_discount"}, truth=(("code",),),
             quick=False),
    Scenario("revenue", "filter_threshold", "filter", code={"min_amount": 20.0}, truth=(("code",),), quick=False),
    Scenario("revenue", "join_type", "join", code={"customer_join": "left"}, truth=(("code",),), quick=False),
    Scenario("revenue", "amount_nulls", "nulls", ("nulls",), truth=(("column", "orders", "amount"),), quick=False),
    Scenario("revenue", "volume", "volume", ("volume",), truth=(("volume",),), quick=False),
    Scenario("revenue", "drift_and_discount", "two", ("drift", "discount"),
             truth=(("column", "orders", "amount"), ("column", "customers", "discount")), quick=False),
    Scenario("revenue", "aa", "aa"),
    Scenario("revenue", "aa2", "aa", quick=False),
    # pipeline 2: TPC-H SQL
    Scenario("tpch", "air_price_drift", "drift", ("drift",), truth=(("column", "lineitem", "l_extendedprice"),)),
    Scenario("tpch", "nation_region_corrupted", "dimension", ("region",),
             truth=(("column", "nation", "n_regionkey"),)),
    Scenario("tpch", "volume_with_tax", "formula", code={"volume": "with_tax"}, truth=(("code",),), quick=False),
    Scenario("tpch", "volume", "volume", ("volume",), truth=(("volume",),), quick=False),
    Scenario("tpch", "drift_and_region", "two", ("drift", "region"),
             truth=(("column", "lineitem", "l_extendedprice"), ("column", "nation", "n_regionkey")), quick=False),
    Scenario("tpch", "aa", "aa"),
    Scenario("tpch", "aa2", "aa", quick=False),
    # pipeline 4: ads (SQL: a left join per click, HAVING over the groups)
    Scenario("ads", "key_format", "join", ("key_format",), truth=(("join", "conversions", "click_id"),)),
    Scenario("ads", "duplicated_conversions", "volume", ("duplicated",), truth=(("rows", "conversions"),)),
    Scenario("ads", "revenue_drift", "drift", ("drift",), truth=(("column", "conversions", "revenue"),),
             quick=False),
    Scenario("ads", "having_threshold", "filter", code={"min_clicks": 2_000}, truth=(("code",),), quick=False),
    Scenario("ads", "aa", "aa"),
    Scenario("ads", "aa2", "aa", quick=False),
]
