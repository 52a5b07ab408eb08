# Databricks notebook source
# MAGIC %md
# MAGIC # Business analysis: which source moved the revenue?
# MAGIC
# MAGIC Scenario 2 of spark-causal. Nothing was deployed, but revenue rose between two weeks. The job's code is
# MAGIC the same (`jobs/example_job.py`); its input data shifted: German order amounts rose 40%. Revenue of every
# MAGIC tier moved, and so did the amounts in USD, the net amounts and the totals. Which source explains the
# MAGIC change, by how much, and where (which country)?

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
WORK, STORE = workspace("sc-business-")
print("working in", WORK)

# COMMAND ----------

from spark_causal.capture import run_script

JOB = str(JOBS / "example_job.py")  # run unmodified, as spark-submit would; its spark.stop() leaves ours running
for run, seed, faults in (("week1", 21, ()), ("week2", 22, ("drift",))):
    data = generate(WORK / f"data-{run}", seed=seed, n_orders=4000, faults=faults)
    code = run_script(JOB, [spark_path(data), spark_path(WORK / f"out-{run}")], store=STORE, run=run, replace=True)
    assert code == 0, f"the job failed in run {run} (exit code {code})"

# COMMAND ----------

# MAGIC %md
# MAGIC ## Total revenue

# COMMAND ----------

res = spark_causal.attribute(STORE, "week1", "week2", "revenue.revenue")
print(res.summary())
assert res.attributions[0].node == "orders.amount", res.summary()
show(res)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Drill down by country
# MAGIC `where` restricts the metric to output rows whose group keys match: most of the change sits in the
# MAGIC German revenue.

# COMMAND ----------

import pandas as pd

rows = []
for where in ("country = 'DE'", "country <> 'DE'"):
    r = spark_causal.attribute(STORE, "week1", "week2", "revenue.revenue", where=where)
    top = r.attributions[0]
    rows.append({"where": where, "change": round(r.change), "significant": r.significant,
                 "top cause": top.node, "its contribution": round(top.contribution)})
    print(r.summary())
by_country = pd.DataFrame(rows)
assert abs(by_country.change[0]) > 2 * abs(by_country.change[1]), by_country
show(by_country.to_html(index=False))
by_country

# COMMAND ----------

# MAGIC %md
# MAGIC ## The source's statistics
# MAGIC The attributed source, before and after (exact statistics recorded while the job ran), and the graph with
# MAGIC the source highlighted.

# COMMAND ----------

store = Store(STORE)
amount = pd.DataFrame({run: store.read_parquet(run, "stats.parquet").set_index("node").loc["orders.amount",
                       ["count", "nulls", "mean", "std", "min", "max"]] for run in ("week1", "week2")})
show(amount.to_html())
show(render.plot_graph(store.graph("week2"), attribution=res))
