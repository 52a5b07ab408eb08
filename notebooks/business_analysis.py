# Databricks notebook source
# MAGIC %md
# MAGIC # Business analysis: which source moved the revenue?
# MAGIC
# MAGIC Scenario 2 of spark-causal. Nothing was deployed, but revenue rose between two weeks. The job's code is
# MAGIC the same (`jobs/example_job.py`); its input data shifted: German order amounts rose 40%. Revenue of every
# MAGIC tier moved, and so did the amounts in USD, the net amounts and the totals. Which source explains the
# MAGIC change, by how much, and where (which country)?

# COMMAND ----------

import os
import runpy
import sys
import tempfile
from pathlib import Path

import spark_causal
from spark_causal import render, report
from spark_causal.store import Store

try:
    spark  # Databricks (and the test suite) provide a session
except NameError:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.config("spark.sql.shuffle.partitions", "4").getOrCreate()


def show(obj):
    """Display HTML or a figure: displayHTML on Databricks, IPython in Jupyter, text elsewhere."""
    html = report.figure_html(obj, alt="figure", max_px=1400) if hasattr(obj, "savefig") else (
        obj if isinstance(obj, str) else obj._repr_html_())
    if "displayHTML" in globals():
        displayHTML(html)  # noqa: F821 - defined by Databricks
        return
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display

        if get_ipython() is not None:
            display(HTML(html))
            return
    except ImportError:
        pass
    print(obj.summary() if hasattr(obj, "summary") else "(a table or a picture: shown in a notebook)")


# the repository's jobs/ folder: next to the installed package (editable install) or to this notebook
REPO = next(p for p in (Path(spark_causal.__file__).resolve().parents[1], Path.cwd().parent, Path.cwd())
            if (p / "jobs" / "example_data.py").exists())
sys.path.insert(0, str(REPO / "jobs"))
from example_data import generate  # noqa: E402

# a scratch folder: DBFS on Databricks (so executors read the data), a temporary folder elsewhere
ON_DATABRICKS = Path("/dbfs").exists()
if ON_DATABRICKS:
    os.makedirs("/dbfs/tmp", exist_ok=True)
WORK = Path(tempfile.mkdtemp(prefix="sc-business-", dir="/dbfs/tmp" if ON_DATABRICKS else None))
STORE = str(WORK / "store")


def spark_path(p):
    """A local path as Spark must read it (``/dbfs/x`` is ``dbfs:/x`` for Spark)."""
    p = str(p)
    return "dbfs:" + p[len("/dbfs"):] if p.startswith("/dbfs/") else p


print("working in", WORK)

# COMMAND ----------

JOB = str(REPO / "jobs" / "example_job.py")


def run_job(run, data, *args):
    """Run jobs/example_job.py unmodified as a captured run of the store."""
    from pyspark.sql import SparkSession

    saved_argv, saved_stop = sys.argv, SparkSession.stop
    sys.argv = [JOB, spark_path(data), spark_path(WORK / f"out-{run}"), *args]
    SparkSession.stop = lambda self: None  # the job ends with spark.stop(): keep this notebook's session
    try:
        with spark_causal.capture(spark, store=STORE, run=run, replace=True):
            runpy.run_path(JOB, run_name="__main__")
    finally:
        sys.argv, SparkSession.stop = saved_argv, saved_stop



run_job("week1", generate(WORK / "data-week1", seed=21, n_orders=4000))
run_job("week2", generate(WORK / "data-week2", seed=22, n_orders=4000, faults=("drift",)))

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
