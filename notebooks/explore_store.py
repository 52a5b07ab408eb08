# Databricks notebook source
# MAGIC %md
# MAGIC # Exploring a store: runs, graph differences, statistics over time
# MAGIC
# MAGIC A store holds one folder per captured run: its meta data, the job's causal graph, exact per-stage
# MAGIC statistics and unit samples. This notebook captures three daily runs of `jobs/example_job.py` (day 2
# MAGIC with 30% more orders, day 3 deployed with a higher minimum order amount) and then looks through the
# MAGIC store the way one would on a real job: which runs exist, how the graph changed between runs, how each
# MAGIC node's statistics evolve.

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
WORK, STORE = workspace("sc-explore-")
print("working in", WORK)

# COMMAND ----------

from spark_causal.capture import run_script

JOB = str(JOBS / "example_job.py")  # run unmodified, as spark-submit would; its spark.stop() leaves ours running
# day 2: 30% more orders; day 3: the job deployed with a higher minimum order amount
for run, seed, faults, options in (("day1", 41, (), []), ("day2", 42, ("volume",), []),
                                   ("day3", 43, (), ["--min-amount", "20"])):
    data = generate(WORK / f"data-{run}", seed=seed, n_orders=4000, faults=faults)
    code = run_script(JOB, [spark_path(data), spark_path(WORK / f"out-{run}"), *options],
                      store=STORE, run=run, replace=True)
    assert code == 0, f"the job failed in run {run} (exit code {code})"

# COMMAND ----------

# MAGIC %md
# MAGIC ## The runs

# COMMAND ----------

import pandas as pd

store = Store(STORE)
runs = pd.DataFrame(store.runs())[["run", "status", "started", "ended", "outputs", "samples", "sample_size"]]
show(runs.to_html(index=False))
runs

# COMMAND ----------

# MAGIC %md
# MAGIC ## How the graph changed between runs
# MAGIC Node ids are stable across runs of the same job, and each node carries a fingerprint of its code:
# MAGIC a changed fingerprint is a code change. Day 3's deploy changed the filter's threshold.

# COMMAND ----------

def graph_diff(a, b):
    ga, gb = store.graph(a), store.graph(b)
    rows = [{"node": n, "change": "added"} for n in sorted(set(gb) - set(ga))]
    rows += [{"node": n, "change": "removed"} for n in sorted(set(ga) - set(gb))]
    for n in sorted(set(ga) & set(gb)):
        if ga.nodes[n].get("fingerprint") != gb.nodes[n].get("fingerprint"):
            rows.append({"node": n, "change": f"code: {ga.nodes[n].get('expr')}  ->  {gb.nodes[n].get('expr')}"})
    return pd.DataFrame(rows, columns=["node", "change"])


for a, b in (("day1", "day2"), ("day2", "day3")):
    diff = graph_diff(a, b)
    print(f"{a} -> {b}: {len(diff)} difference(s)")
    show(f"<b>{a} &rarr; {b}</b>" + diff.to_html(index=False))
assert len(graph_diff("day1", "day2")) == 0 and len(graph_diff("day2", "day3")) >= 1

# COMMAND ----------

# MAGIC %md
# MAGIC ## Statistics over time
# MAGIC Every run keeps exact statistics of every node; stacking them gives each column's history.

# COMMAND ----------

history = pd.concat([store.read_parquet(r, "stats.parquet").assign(run=r) for r in runs["run"]])
history["total"] = history["mean"] * history["count"]
watch = {"orders.amount": "count", "revenue.net_usd": "mean", "revenue.revenue": "total"}
table = pd.DataFrame({f"{node} ({stat})": history[history.node == node].set_index("run")[stat]
                      for node, stat in watch.items()})
show(table.round(2).to_html())

from matplotlib.figure import Figure

fig = Figure(figsize=(10, 3))
for i, (label, series) in enumerate(table.items(), start=1):
    ax = fig.add_subplot(1, len(table.columns), i)
    ax.plot(series.index, series.values, marker="o")
    ax.set_title(label, fontsize=9)
fig.tight_layout()
show(fig)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Explaining the last change
# MAGIC Day 2 to day 3: the volume went back to normal and the filter changed. The graph marks the changed code.

# COMMAND ----------

res = spark_causal.attribute(STORE, "day2", "day3", "revenue.revenue")
print(res.summary())
show(res)
show(render.plot_graph(store.graph("day3"), attribution=res))
