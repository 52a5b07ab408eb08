# Databricks notebook source
# MAGIC %md
# MAGIC # Fault localisation: which stage did the deploy break?
# MAGIC
# MAGIC Scenario 1 of spark-causal. A revenue job is deployed as release v2 between two daily runs. The input
# MAGIC data did not change in distribution, but revenue fell, and every column downstream of the change moved
# MAGIC with it: `amount_usd`, `net_usd`, every `revenue` cell. Data-quality monitors flag all of them. Which one
# MAGIC is the cause?
# MAGIC
# MAGIC The job is defined in this notebook (as jobs often are on Databricks); the bug of release v2 is a
# MAGIC "refactor" of the currency conversion that divides by the FX rate instead of multiplying.

# COMMAND ----------

import sys

import spark_causal
from spark_causal import render
from spark_causal.notebook import example_jobs_folder, show, spark_path, workspace
from spark_causal.store import Store

try:
    spark  # Databricks (and the test suite) provide a session
except NameError:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.config("spark.sql.shuffle.partitions", "4").getOrCreate()

JOBS = example_jobs_folder()  # the repository's jobs/ folder: the example job and its data generator
sys.path.insert(0, str(JOBS))
from example_data import generate  # noqa: E402

# a scratch folder for data, outputs and the store: on DBFS on Databricks (so executors read the data)
WORK, STORE = workspace("sc-fault-")
print("working in", WORK)

# COMMAND ----------

from pyspark.sql import functions as F


def revenue_job(data, out, *, release):
    """The revenue job; release v2 carries the bug."""
    orders = spark.read.parquet(f"{data}/orders")
    customers = spark.read.parquet(f"{data}/customers")
    fx = spark.read.parquet(f"{data}/fx")
    to_usd = F.col("amount") * F.col("rate") if release == "v1" else F.col("amount") / F.col("rate")
    revenue = (orders.filter(F.col("amount") >= 1.0)
               .join(fx, "currency", "left")
               .join(customers, "customer_id")
               .withColumn("amount_usd", to_usd)
               .withColumn("net_usd", F.col("amount_usd") * (1 - F.col("discount")))
               .groupBy("country", "tier")
               .agg(F.sum("net_usd").alias("revenue"), F.count(F.lit(1)).alias("orders")))
    revenue.write.mode("overwrite").parquet(out)


for run, seed, release in (("mon", 11, "v1"), ("tue", 12, "v2")):
    data = generate(WORK / f"data-{run}", seed=seed, n_orders=4000)
    with spark_causal.capture(spark, store=STORE, run=run, replace=True):
        revenue_job(spark_path(data), spark_path(WORK / "out" / run / "revenue"), release=release)
print("captured", [r["run"] for r in Store(STORE).runs()])

# COMMAND ----------

# MAGIC %md
# MAGIC ## Many nodes moved
# MAGIC The per-stage statistics recorded during the runs: everything downstream of the currency conversion
# MAGIC shifted, so looking at drift alone points at four columns.

# COMMAND ----------

import pandas as pd

store = Store(STORE)
stats = {run: store.read_parquet(run, "stats.parquet").set_index("node") for run in ("mon", "tue")}
cols = ["orders.amount", "fx.rate", "revenue.amount_usd", "revenue.net_usd", "revenue.revenue"]
moved = pd.DataFrame({"mean mon": stats["mon"].loc[cols, "mean"], "mean tue": stats["tue"].loc[cols, "mean"]})
moved["change %"] = (100 * (moved["mean tue"] / moved["mean mon"] - 1)).round(1)
show(moved.to_html())
moved

# COMMAND ----------

# MAGIC %md
# MAGIC ## The attribution names the stage
# MAGIC The graphs of the two runs differ in one node's code (its fingerprint): spark-causal reports the code
# MAGIC change, evaluates both versions of the expression on the same units, and attributes the change of
# MAGIC revenue to it, in USD.

# COMMAND ----------

res = spark_causal.attribute(STORE, "mon", "tue", "revenue.revenue")
print(res.summary())
for change in res.code_changes:
    print(f"code change in {change['node']}: {change['baseline']}  ->  {change['current']}")
assert res.attributions[0].node == "revenue.amount_usd", res.summary()
show(res)

# COMMAND ----------

# MAGIC %md
# MAGIC ## On the graph
# MAGIC The broken stage is framed in red with its share of the change, and marked as changed code.

# COMMAND ----------

show(render.plot_graph(store.graph("tue"), attribution=res))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Would rolling back fix it?
# MAGIC A what-if answers before anyone redeploys: the revenue of Tuesday's data under release v1's formula.

# COMMAND ----------

from spark_causal.whatif import what_if

rollback = what_if(STORE, "mon", "tue", "revenue.revenue", revert=["revenue.amount_usd"])
print(rollback.summary())
