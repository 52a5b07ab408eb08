# Databricks notebook source
# MAGIC %md
# MAGIC # spark-causal quickstart
# MAGIC
# MAGIC A PySpark job computes revenue per country and customer tier. Between two runs the revenue jumps.
# MAGIC **Why?** This notebook
# MAGIC 1. generates two days of input data (the second one with a corrupted FX rate),
# MAGIC 2. runs the unmodified job `jobs/example_job.py` twice under `spark_causal.capture`, which records
# MAGIC    the job's column-level causal graph, per-stage statistics and unit samples as runs in a store,
# MAGIC 3. attributes the change of total revenue to the sources and stages that caused it,
# MAGIC 4. looks at the answer: a chart with intervals and the job's graph with the culprit highlighted.
# MAGIC
# MAGIC It runs as is on Databricks (where `spark` exists) and on a laptop with local Spark.

# COMMAND ----------

import sys

import spark_causal
from spark_causal import render, report
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
WORK, STORE = workspace("sc-quickstart-")
print("working in", WORK)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Two days of data, two captured runs
# MAGIC Day 2 has the same distribution as day 1 except that the GBP rate in the `fx` table is off by 100x.
# MAGIC The job itself is not changed: `run_script` runs it as `spark-submit` would, under `spark_causal.capture`
# MAGIC (on the command line: `spark-causal capture --store STORE --run day2 -- jobs/example_job.py ...`).

# COMMAND ----------

from spark_causal.capture import run_script

JOB = str(JOBS / "example_job.py")  # run unmodified, as spark-submit would; its spark.stop() leaves ours running
for run, seed, faults in (("day1", 1, ()), ("day2", 2, ("fx",))):
    data = generate(WORK / f"data-{run}", seed=seed, n_orders=4000, faults=faults)
    code = run_script(JOB, [spark_path(data), spark_path(WORK / f"out-{run}")], store=STORE, run=run, replace=True)
    assert code == 0, f"the job failed in run {run} (exit code {code})"
[r["run"] for r in Store(STORE).runs()]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Why did revenue move?
# MAGIC `attribute` compares the runs on the job's own causal graph: it tests every mechanism (each source
# MAGIC table's distributions, each lookup through a joined table, each stage's code) for a change and splits
# MAGIC the change of the metric over the changed ones with Shapley values, in the metric's own units.

# COMMAND ----------

res = spark_causal.attribute(STORE, "day1", "day2", "revenue.revenue")
print(res.summary())
assert res.attributions[0].node == "fx.rate", res.summary()
res.to_pandas().head(5)

# COMMAND ----------

# MAGIC %md
# MAGIC The result renders itself in a notebook (chart and table); the waterfall goes from day 1's revenue
# MAGIC through each contribution, with its bootstrap interval, to day 2's.

# COMMAND ----------

show(res)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Where in the job?
# MAGIC The run's graph, cut to the ancestors of `revenue.revenue`: sources on the left grouped by table,
# MAGIC stages in the middle, the output on the right. The attributed node carries its contribution and
# MAGIC its share of the change.

# COMMAND ----------

G = Store(STORE).graph("day2")
show(render.plot_graph(G, attribution=res))

# COMMAND ----------

# MAGIC %md
# MAGIC ## The full report
# MAGIC One self-contained HTML file (pictures inlined, nothing loaded from the network) with the summary,
# MAGIC chart, graph, table, code changes and the baseline-vs-current statistics of the nodes involved.
# MAGIC The CLI writes the same file: `spark-causal attribute ... --html report.html`.

# COMMAND ----------

path = WORK / "report.html"
report.write_html(res, str(path), store=STORE)
print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")
show(report.render_fragment(res, store=STORE))
