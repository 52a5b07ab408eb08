# Databricks notebook source
# MAGIC %md
# MAGIC # What if: experimenting with the fitted model
# MAGIC
# MAGIC Scenario 3 of spark-causal. Two things went wrong at once between two runs of `jobs/example_job.py`: the
# MAGIC GBP rate in the `fx` table is off by 100x, and the silver tier's discount was raised to 25% in the
# MAGIC `customers` table. Before fixing anything, ask the model: what would today's revenue be if the FX table
# MAGIC were repaired? If only the discounts were? If both were?
# MAGIC
# MAGIC `what_if` keeps the current run's units and switches the named mechanisms (sources, lookups, stages) back to
# MAGIC their baseline version, everything else as it is today; the interval is a bootstrap interval.

# COMMAND ----------

import sys

import spark_causal
from spark_causal.notebook import example_jobs_folder, show, spark_path, workspace

try:
    spark  # Databricks (and the test suite) provide a session
except NameError:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.config("spark.sql.shuffle.partitions", "4").getOrCreate()

JOBS = example_jobs_folder()  # the repository's jobs/ folder: the example job and its data generator
sys.path.insert(0, str(JOBS))
from example_data import generate  # noqa: E402

# a scratch folder for data, outputs and the store: on DBFS on Databricks (so executors read the data)
WORK, STORE = workspace("sc-whatif-")
print("working in", WORK)

# COMMAND ----------

from spark_causal.capture import run_script

JOB = str(JOBS / "example_job.py")  # run unmodified, as spark-submit would; its spark.stop() leaves ours running
for run, seed, faults in (("yesterday", 31, ()), ("today", 32, ("fx", "discount"))):
    data = generate(WORK / f"data-{run}", seed=seed, n_orders=4000, faults=faults)
    code = run_script(JOB, [spark_path(data), spark_path(WORK / f"out-{run}")], store=STORE, run=run, replace=True)
    assert code == 0, f"the job failed in run {run} (exit code {code})"
res = spark_causal.attribute(STORE, "yesterday", "today", "revenue.revenue")
print(res.summary())
show(res)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Counterfactuals

# COMMAND ----------

import pandas as pd
from spark_causal.whatif import what_if

scenarios = {"repair fx": ["fx.rate"], "restore discounts": ["customers.discount"],
             "both": ["fx.rate", "customers.discount"], "yesterday's volume": ["orders.__rows__"]}
answers = {name: what_if(STORE, "yesterday", "today", "revenue.revenue", revert=revert)
           for name, revert in scenarios.items()}
table = pd.DataFrame([{"scenario": name, "revert": ", ".join(w.reverted), "revenue": round(w.counterfactual_value),
                       "low": round(w.ci_low), "high": round(w.ci_high), "effect": round(w.effect)}
                      for name, w in answers.items()])
for w in answers.values():
    print(w.summary())
assert abs(answers["both"].counterfactual_value - res.baseline_value) < 0.2 * res.baseline_value
show(table.to_html(index=False))
table

# COMMAND ----------

# MAGIC %md
# MAGIC ## As a picture
# MAGIC Yesterday's and today's revenue beside each scenario, with intervals.

# COMMAND ----------

from matplotlib.figure import Figure

fig = Figure(figsize=(8, 3.6))
ax = fig.add_subplot(1, 1, 1)
names = ["yesterday", "today"] + list(answers)
values = [res.baseline_value, res.current_value] + [w.counterfactual_value for w in answers.values()]
err = [[0, 0] + [w.counterfactual_value - w.ci_low for w in answers.values()],
       [0, 0] + [w.ci_high - w.counterfactual_value for w in answers.values()]]
ax.bar(range(len(names)), values, yerr=err, capsize=4,
       color=["#7f8c8d", "#34495e"] + ["#2e86c1"] * len(answers))
ax.set_yscale("log")
ax.set_xticks(range(len(names)))
ax.set_xticklabels(names, rotation=15)
ax.set_ylabel("revenue (log scale)")
ax.set_title("what would today's revenue be?")
fig.tight_layout()
show(fig)

# COMMAND ----------

# MAGIC %md
# MAGIC Reverting a mechanism that did not change only moves the metric within sampling noise, and the answer says
# MAGIC so; asking for a node that is not part of the metric's model is refused with the list of what can be
# MAGIC reverted.

# COMMAND ----------

try:
    what_if(STORE, "yesterday", "today", "revenue.revenue", revert=["revenue.country"])
except spark_causal.SparkCausalError as e:
    print(type(e).__name__, "-", e)
