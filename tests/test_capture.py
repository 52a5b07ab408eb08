"""Capture: every kind of write is seen, the job's results are untouched, failures are kept apart."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

import spark_causal
from spark_causal.capture import run_script
from spark_causal.cli import main
from spark_causal.store import Store


@pytest.fixture()
def orders(spark, tmp_path):
    df = spark.createDataFrame([(1, "DE", 10.0), (2, "US", 20.0), (3, "DE", 5.0)],
                               "order_id long, country string, amount double")
    df.write.parquet(str(tmp_path / "orders"))
    return spark.read.parquet(str(tmp_path / "orders"))


def test_every_writer_is_an_output(spark, orders, tmp_path):
    store = str(tmp_path / "store")
    spark.sql("DROP TABLE IF EXISTS cap_t1")
    spark.sql("DROP TABLE IF EXISTS cap_t2")
    spark.sql("DROP TABLE IF EXISTS cap_t3")
    with spark_causal.capture(spark, store=store, run="r1") as cap:
        agg = orders.groupBy("country").agg(F.sum("amount").alias("revenue"))
        agg.write.mode("overwrite").parquet(str(tmp_path / "out" / "by_country.parquet"))
        orders.write.mode("overwrite").csv(str(tmp_path / "out" / "orders_csv"))
        orders.write.format("json").save(str(tmp_path / "out" / "orders_json"))
        agg.write.saveAsTable("cap_t1")
        agg.write.insertInto("cap_t1")
        agg.writeTo("cap_t3").using("parquet").create()
        spark.sql("CREATE TABLE cap_t2 USING parquet AS SELECT country, revenue * 2 AS r2 FROM cap_t1")
        spark.sql("INSERT INTO cap_t2 SELECT country, amount FROM parquet.`%s`" % (tmp_path / "orders"))
        spark_causal.register_output(orders.filter("amount > 6"), "collected")
        orders.filter("amount > 6").collect()
    outs = cap.graph.graph["outputs"]
    assert list(outs) == ["by_country", "orders_csv", "orders_json", "cap_t1", "cap_t1@2", "cap_t3", "cap_t2",
                          "cap_t2@2", "collected"]
    G = Store(store).graph("r1")
    assert G.nodes["by_country.revenue"]["kind"] == "aggregate"
    assert G.nodes["cap_t2.r2"]["kind"] == "stage"
    assert spark_causal.upstream_sources(G, "cap_t2.r2") == {"orders.amount": "direct",
                                                           "orders.country": "indirect"}
    assert Store(store).meta("r1")["status"] == "succeeded"


def _data_files(folder: Path) -> list[str]:
    return sorted(hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.glob("part-*"))


def test_capture_changes_nothing_the_job_writes(spark, orders, tmp_path):
    df = orders.filter(F.col("amount") > 6).withColumn("x", F.col("amount") * 3).coalesce(1)
    df.write.parquet(str(tmp_path / "plain"))
    with spark_causal.capture(spark, store=str(tmp_path / "store"), run="r1"):
        df.write.parquet(str(tmp_path / "captured"))
    plain, captured = _data_files(tmp_path / "plain"), _data_files(tmp_path / "captured")
    assert plain and plain == captured


JOB = """
import sys
from pyspark.sql import SparkSession, functions as F
spark = SparkSession.builder.getOrCreate()
df = spark.read.parquet(sys.argv[1]).withColumn("y", F.col("amount") + 1)
df.write.mode("overwrite").parquet(sys.argv[2])
if sys.argv[3] == "fail":
    raise ValueError("boom in the job")
if sys.argv[3] == "exit":
    sys.exit(3)
"""


def test_run_script_passes_failures_through_and_keeps_runs(spark, orders, tmp_path, capsys, caplog):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    store = str(tmp_path / "store")
    src = str(tmp_path / "orders")
    assert run_script(str(job), [src, str(tmp_path / "o1"), "ok"], store=store, run="good") == 0
    before = (Path(store) / "runs" / "good" / "graph.json").read_bytes()
    assert run_script(str(job), [src, str(tmp_path / "o2"), "fail"], store=store, run="bad") == 1
    assert "boom in the job" in capsys.readouterr().err
    assert run_script(str(job), [src, str(tmp_path / "o3"), "exit"], store=store, run="exit3") == 3
    s = Store(store)
    assert s.meta("good")["status"] == "succeeded"
    assert s.meta("bad")["status"] == "failed" and "boom" in s.meta("bad")["error"]
    assert "o2.y" in s.graph("bad")  # what was captured before the failure is kept
    assert s.meta("exit3")["status"] == "failed"
    with pytest.raises(spark_causal.SparkCausalError, match="run 'bad' failed .*boom"):  # not "no shared output"
        spark_causal.attribute(store, "bad", "exit3", "o2.y")
    assert (Path(store) / "runs" / "good" / "graph.json").read_bytes() == before
    with pytest.raises(spark_causal.RunExistsError):
        run_script(str(job), [src, str(tmp_path / "o4"), "ok"], store=store, run="good")
    assert run_script(str(job), [src, str(tmp_path / "o4"), "ok"], store=store, run="good", replace=True) == 0
    assert s.meta("good")["outputs"] == ["o4"]
    # --replace with a job that fails keeps the good run it would have replaced
    assert run_script(str(job), [src, str(tmp_path / "o5"), "fail"], store=store, run="good", replace=True) == 1
    assert s.meta("good")["outputs"] == ["o4"] and s.meta("good")["status"] == "succeeded"
    assert "kept as it was" in caplog.text


def test_cli_capture_exit_codes(orders, tmp_path):
    job = tmp_path / "job.py"
    job.write_text(JOB)
    store = str(tmp_path / "store")
    cmd = [sys.executable, "-m", "spark_causal.cli", "capture", "--store", store, "--run", "r1", "--no-samples",
           "--", str(job), str(tmp_path / "orders"), str(tmp_path / "o1"), "exit"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 3
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2
    assert "Traceback" not in again.stderr and "replace" in again.stderr
    meta = json.loads((Path(store) / "runs" / "r1" / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["samples"] == "disabled"


def test_strict_mode_and_soft_failures(spark, orders, tmp_path):
    bad_view = spark.createDataFrame([(1,)], "a int")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r1", sample_size=0) as cap:
        bad_view.write.parquet(str(tmp_path / "ok"))
    assert Store(str(tmp_path / "s")).meta("r1")["samples"] == "missing"
    assert not cap.errors
    with pytest.raises(spark_causal.CaptureError):
        with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r2", sample_size=-1):
            pass


def test_sql_statements_write_with_probes_and_nothing_else_changes(spark, orders, tmp_path, monkeypatch):
    """SQL writes run once, with probes (no extra pass); views never carry probes; parameterised
    statements run as given; a failing statement fails as it would without capture."""
    import importlib

    capture_module = importlib.import_module("spark_causal.capture")
    extra: list = []
    real = capture_module.Capture._measure_by_extra_pass
    monkeypatch.setattr(capture_module.Capture, "_measure_by_extra_pass",
                        lambda self, output, *a, **k: extra.append(output) or real(self, output, *a, **k))
    orders.createOrReplaceTempView("cap_sql_orders")
    spark.sql("DROP TABLE IF EXISTS cap_sql_t")
    with pytest.raises(Exception) as plain_error:
        spark.sql("INSERT INTO cap_sql_missing SELECT * FROM cap_sql_orders")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        spark.sql("WITH big AS (SELECT * FROM cap_sql_orders WHERE amount > 6) "
                  "INSERT OVERWRITE DIRECTORY '%s' USING parquet SELECT country, amount * 2 AS a2 FROM big"
                  % (tmp_path / "dir"))
        spark.sql("CREATE TEMP VIEW cap_sql_v AS SELECT country, amount FROM cap_sql_orders")
        spark.sql("CREATE TABLE cap_sql_t USING parquet AS SELECT country, SUM(amount) AS s FROM cap_sql_v "
                  "WHERE amount > :lo GROUP BY country", args={"lo": 6})
        with pytest.raises(Exception) as captured_error:
            spark.sql("INSERT INTO cap_sql_missing SELECT * FROM cap_sql_orders")
    assert type(captured_error.value) is type(plain_error.value)
    assert "cap_sql_v" not in cap.graph.graph["outputs"]
    assert extra == ["cap_sql_t"]  # the parameterised statement only
    assert "CollectMetrics" not in spark.table("cap_sql_v")._jdf.queryExecution().analyzed().toString()
    assert sorted(map(tuple, spark.read.parquet(str(tmp_path / "dir")).collect())) == [("DE", 20.0), ("US", 40.0)]
    assert sorted(map(tuple, spark.table("cap_sql_t").collect())) == [("DE", 10.0), ("US", 20.0)]
    stats = {s["node"] for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    assert {"dir.a2", "orders.amount", "cap_sql_t.s"} <= stats
    spark.sql("DROP TABLE cap_sql_t")


def test_partitioned_sql_writes_under_capture_write_what_they_would_without(spark, orders, tmp_path):
    """Static and dynamic partition inserts and column lists, probed, write the same rows as plain."""
    orders.createOrReplaceTempView("cap_part_orders")
    statements = ["CREATE TABLE {t} USING parquet PARTITIONED BY (country) AS "
                  "SELECT order_id, amount * 2 AS a2, country FROM cap_part_orders",
                  "INSERT OVERWRITE {t} PARTITION (country = 'DE') SELECT order_id, amount FROM cap_part_orders",
                  "INSERT INTO {t} (a2, order_id, country) SELECT amount, order_id + 10, country FROM cap_part_orders"]
    for t in ("cap_part_plain", "cap_part_captured"):
        spark.sql(f"DROP TABLE IF EXISTS {t}")
    for s in statements:
        spark.sql(s.format(t="cap_part_plain"))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        for s in statements:
            spark.sql(s.format(t="cap_part_captured"))
    assert not cap.errors and len(cap.graph.graph["outputs"]) == 3
    plain, captured = (sorted(map(tuple, spark.table(t).collect())) for t in ("cap_part_plain", "cap_part_captured"))
    assert captured == plain and len(plain) == 7
    for t in ("cap_part_plain", "cap_part_captured"):
        spark.sql(f"DROP TABLE {t}")


@pytest.mark.parametrize("shape", ["plain", "timestamp", "partitioned"])
def test_a_small_outputs_rows_are_kept_as_spark_reads_them(spark, tmp_path, shape):
    """The rows of a small output are kept with the run (a ``where`` slice's exact sums). A local Parquet
    folder is read by pyarrow, which must give what Spark's own read gives: ints, NULLs, decimals as
    floats, dates, booleans, strings; timestamps and partition folders are read by Spark."""
    from spark_causal.sampling import _to_pandas

    df = spark.createDataFrame(
        [(1, 2.5, "DE", True, "2026-01-02", "1.25", "2026-01-02 03:04:05"),
         (None, None, None, None, None, None, None),
         (3, float("nan"), "US", False, "2026-02-03", "-7.50", "2026-02-03 00:00:00")],
        "k int, x double, s string, b boolean, d string, m string, t string",
    ).select("k", "x", "s", "b", F.to_date("d").alias("d"), F.col("m").cast("decimal(10,2)").alias("m"),
             *([F.to_timestamp("t").alias("t")] if shape == "timestamp" else []))
    out = tmp_path / "out" / "small"
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        writer = df.write.mode("overwrite")
        (writer.partitionBy("s") if shape == "partitioned" else writer).parquet(str(out))
    assert not cap.errors
    kept = Store(str(tmp_path / "s")).read_parquet("r", "outputs/small.parquet")
    spark_read = _to_pandas(spark.read.parquet(str(out)))
    spark_read.columns = [f"small.{c}" for c in spark_read.columns]
    order = list(kept.columns)
    assert sorted(order) == sorted(spark_read.columns)
    a = kept.sort_values("small.k", na_position="last").reset_index(drop=True)
    b = spark_read[order].sort_values("small.k", na_position="last").reset_index(drop=True)
    assert list(a.dtypes.astype(str)) == list(b.dtypes.astype(str))
    assert a.astype(str).values.tolist() == b.astype(str).values.tolist()
    assert a["small.m"].tolist()[:1] == [1.25]


@pytest.mark.parametrize("how", ["append", "insertInto", "dynamic"])
def test_a_slice_of_an_output_added_to_is_this_runs_rows(spark, tmp_path, how):
    """A write that adds to its target (``.mode("append")``, ``insertInto``'s default, an overwrite of
    dynamic partitions) leaves earlier runs' rows there: the target read back is not this run's rows,
    so they are not kept, and a ``where`` slice is summed from this run's units (here all of them)."""
    table = f"daily_{how.lower()}"
    if how == "insertInto":
        spark.sql(f"DROP TABLE IF EXISTS {table}")
        spark.sql(f"CREATE TABLE {table} (country string, revenue double) USING parquet")
    truth = []
    for r, scale in enumerate((1.0, 1.1)):
        day = f"2026-01-0{r + 1}"
        df = spark.createDataFrame([("DE" if i % 2 else "FR", float(i % 50) * scale, day) for i in range(400)],
                                   "country string, amount double, day string")
        truth.append(df.filter("country = 'DE'").agg(F.sum("amount")).first()[0])
        daily = df.groupBy("country", "day").agg(F.sum("amount").alias("revenue"))
        with spark_causal.capture(spark, store=str(tmp_path / "s"), run=f"r{r}") as cap:
            if how == "append":
                daily.write.mode("append").parquet(str(tmp_path / table))
            elif how == "insertInto":
                daily.select("country", "revenue").write.insertInto(table)
            else:
                (daily.write.mode("overwrite").option("partitionOverwriteMode", "dynamic").partitionBy("day")
                 .parquet(str(tmp_path / table)))
        assert not cap.errors
        assert cap.graph.graph["outputs"][table]["mode"] == "append"
    assert not (tmp_path / "s" / "r1" / "outputs").exists()  # the target holds both runs' rows
    res = spark_causal.attribute(str(tmp_path / "s"), "r0", "r1", f"{table}.revenue", where="country = 'DE'")
    assert res.baseline_value == pytest.approx(truth[0]) and res.current_value == pytest.approx(truth[1])


def test_names_that_need_quoting_and_an_output_named_as_its_source(spark, tmp_path, capsys):
    """Column names with a backtick or a dot, read in the plan or only inside an IN subquery, capture
    whole (statistics, samples, the job's write); an output named like the table it reads (yesterday's
    folder of the same output) keeps the contract's ``<output>.<column>`` ids, its source takes
    ``<table>_input``; and a ``where`` on a dotted output column is summed from the rows written."""
    truth = []
    for r, scale in enumerate((1.0, 1.1)):
        src = tmp_path / "raw" / "orders"
        spark.createDataFrame([("DE" if i % 3 else "FR", float((i * 7919) % 101) * scale, i % 2) for i in range(3000)],
                              "`geo.country` string, `a``mt` double, k int").write.mode("overwrite").parquet(str(src))
        truth.append(spark.read.parquet(str(src)).filter("`geo.country` = 'DE' AND k = 1").agg(F.sum("`a``mt`")).first()[0])
        spark.createDataFrame([(1,)], "`k``ey` int").createOrReplaceTempView("keys")
        with spark_causal.capture(spark, store=str(tmp_path / "s"), run=f"r{r}", sample_size=500) as cap:
            (spark.read.parquet(str(src)).where("k IN (SELECT `k``ey` FROM keys)").groupBy("`geo.country`")
             .agg(F.sum("`a``mt`").alias("rev.total")).write.mode("overwrite").parquet(str(tmp_path / "agg" / "orders")))
        assert not cap.errors
        assert cap.graph.graph["outputs"]["orders"]["columns"] == ["orders.geo.country", "orders.rev.total"]
        assert "orders_input.a`mt" in cap.graph and "keys.k`ey" in cap.graph
        meta = Store(str(tmp_path / "s")).meta(f"r{r}")
        assert meta["status"] == "succeeded" and meta.get("samples") != "missing"
    stats = Store(str(tmp_path / "s")).read_parquet("r1", "stats.parquet").set_index("node")
    assert stats.loc["keys.k`ey", "count"] == 1 and stats.loc["orders_input.a`mt", "count"] == 3000
    res = spark_causal.attribute(str(tmp_path / "s"), "r0", "r1", "orders.rev.total", where="`geo.country` = 'DE'")
    assert res.baseline_value == pytest.approx(truth[0]) and res.current_value == pytest.approx(truth[1])
    assert res.details["estimated"]["current"] != pytest.approx(truth[1])  # 500 of 3,000 units: estimates
    # the CLI names the output's dotted column; a chart it cannot write is one line and a hint
    code = main(["attribute", "--store", str(tmp_path / "s"), "--baseline", "r0", "--current", "r1",
                 "--target", "orders.rev.total", "--plot", str(tmp_path / "no" / "such" / "chart.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-2].startswith("spark-causal: error: cannot write") and err[-1].startswith("hint: ")


def test_outputs_named_with_spaces_and_letters_beyond_ascii_are_stored(spark, tmp_path):
    """A folder ``daily umsätze`` or ``register_output(df, 'my kpis')`` names an output with characters
    a run's file names avoid: its samples and kept rows are stored under a plain name and a hash of the
    id, the run commits whole, and the output is attributed (a ``where`` from the rows it wrote)."""
    store = str(tmp_path / "s")
    truth = []
    for r, scale in enumerate((1.0, 1.5)):
        df = spark.createDataFrame([("DE" if i % 3 else "FR", float(i % 50) * (scale if i % 3 else 1.0))
                                    for i in range(2000)], "country string, amount double")
        report = df.groupBy("country").agg(F.sum("amount").alias("total"))
        truth.append(report.filter("country = 'DE'").first()["total"])
        with spark_causal.capture(spark, store=store, run=f"r{r}") as cap:
            report.write.mode("overwrite").parquet(str(tmp_path / "out" / "daily umsätze"))
            spark_causal.register_output(report, "my kpis")
        assert not cap.errors and set(cap.graph.graph["outputs"]) == {"daily umsätze", "my kpis"}
        assert Store(store).meta(f"r{r}")["samples"] == "present"
    res = spark_causal.attribute(store, "r0", "r1", "daily umsätze.total", where="country = 'DE'")
    assert (res.baseline_value, res.current_value) == pytest.approx(truth)
    assert res.significant and res.attributions[0].node == "df.amount" or res.attributions[0].kind == "source"
    assert spark_causal.attribute(store, "r0", "r1", "my kpis.total").change == pytest.approx(truth[1] - truth[0])


def test_register_output_of_a_pandas_frame_says_what_it_needs(spark, tmp_path):
    """``register_output(df.toPandas(), ...)`` is easy to write in a job that collects: the job goes on,
    and the run says what register_output needs (it said: no attribute 'sparkSession')."""
    df = spark.range(10).withColumn("x", F.col("id") * 2)
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r") as cap:
        spark_causal.register_output(df.toPandas(), "kpis")
        spark_causal.register_output(df, "kept")
    assert [e for e in cap.errors if "needs a Spark DataFrame, got pandas.core.frame.DataFrame" in e]
    assert list(cap.graph.graph["outputs"]) == ["kept"]
    assert Store(str(tmp_path / "s")).meta("r")["status"] == "incomplete"


def test_a_run_whose_sampling_failed_says_so_when_attributed(spark, orders, tmp_path, monkeypatch):
    """The sampled pass of the second run raises (as a UDF once did on rows the job drops): the job's
    output is intact, and attributing the run names the capture error, not "capture both runs with the
    same job version" nor "without --no-samples"."""
    from spark_causal import sampling

    store = str(tmp_path / "store")
    for run in ("a", "b"):
        if run == "b":
            def boom(*args, **kwargs):
                raise RuntimeError("PythonException: unsupported operand type(s) for -: 'NoneType' and 'float'")
            monkeypatch.setattr(sampling, "sample_output", boom)
        with spark_causal.capture(spark, store=store, run=run):
            orders.groupBy("country").agg(F.sum("amount").alias("revenue")).write.parquet(str(tmp_path / run / "report"))
        assert spark.read.parquet(str(tmp_path / run / "report")).count() == 2
    with pytest.raises(spark_causal.SparkCausalError) as err:
        spark_causal.attribute(store, "a", "b", "report.revenue")
    assert "capture failed while sampling" in str(err.value) and "NoneType" in str(err.value), str(err.value)
    assert "--replace" in err.value.hint
