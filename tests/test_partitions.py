"""A job that reads some partitions of a partitioned table: capture must keep Spark's partition pruning,
and the partitions read are the run's source (statistics, units, row count), not the whole table."""
from __future__ import annotations

import importlib

import pytest
from pyspark.sql import functions as F

import spark_causal
from spark_causal.store import Store

capture_module = importlib.import_module("spark_causal.capture")


@pytest.fixture()
def events(spark, tmp_path):
    """10 days x 300 rows; day d has amounts d*1000 + i."""
    rows = [(d * 1000 + i, d, float(d * 1000 + i), "web" if i % 3 else "app") for d in range(10) for i in range(300)]
    spark.createDataFrame(rows, "id long, day int, amount double, channel string") \
        .write.partitionBy("day").parquet(str(tmp_path / "events"))
    return str(tmp_path / "events")


def _job(spark, path, out):
    spark.read.parquet(path).createOrReplaceTempView("events")
    spark.sql("SELECT channel, sum(amount) AS revenue FROM events WHERE day = 3 AND amount > 3100 GROUP BY channel") \
        .write.mode("overwrite").parquet(out)


def test_capture_reads_only_the_partitions_the_job_reads(spark, events, tmp_path, monkeypatch):
    plans = []
    original = capture_module.Capture.observe_write

    def spy(self, writer, target, name=None):
        plan, observed, restore = original(self, writer, target, name)
        if observed is not None:
            plans.append(observed.df._jdf.queryExecution().executedPlan().toString())
        return plan, observed, restore

    monkeypatch.setattr(capture_module.Capture, "observe_write", spy)
    store = str(tmp_path / "store")
    with spark_causal.capture(spark, store=store, run="r1", sample_size=100_000):
        _job(spark, events, str(tmp_path / "out"))
    assert plans and "PartitionFilters: [isnotnull(day" in plans[0] and "(day#" in plans[0], plans

    s = Store(store)
    assert s.meta("r1")["capture_errors"] == []
    stats = s.read_parquet("r1", "stats.parquet")
    src = stats.set_index("node").loc["events.amount"]
    assert int(src["count"]) == 300  # day 3 only, all its rows (the amount filter is a selection)
    assert src["min"] == "3000.0" and src["max"] == "3299.0"

    seg = s.graph("r1").graph["segments"][0]
    assert seg["rows"] == 300
    sample = s.read_parquet("r1", f"samples/{seg['id']}.parquet")
    assert len(sample) == 300 and set(sample["events.day"]) == {3}
    # the job's revenue, exactly, from the units at full coverage
    out = spark.read.parquet(str(tmp_path / "out")).agg(F.sum("revenue")).first()[0]
    contrib = sample[[c for c in sample.columns if c.startswith("__contrib__:")][0]]
    assert (sample["__weight__"] * contrib).sum() == pytest.approx(out)
