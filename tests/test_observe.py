"""Inline statistics: probes in the job's own plan measure exactly what a plain aggregation measures,
and capturing a job no longer runs its plan a second time, unsampled."""
from __future__ import annotations

import datetime as dt
import decimal
import importlib
import json
import math

import networkx as nx
import pytest
from pyspark.sql import functions as F

import spark_causal
from spark_causal import observe as observe_module
from spark_causal import sampling
from spark_causal.store import Store

capture_module = importlib.import_module("spark_causal.capture")  # the package exports the function capture


@pytest.fixture()
def tables(spark, tmp_path):
    orders = [
        (1, 10, 5.0, float("nan"), "a", dt.date(2026, 1, 3), decimal.Decimal("1.25"), True, 1767225600000),
        (2, 10, None, 1.0, "b", dt.date(2026, 1, 1), decimal.Decimal("2.50"), False, 1767225601001),
        (3, 20, 7.5, 2.0, None, None, None, None, 1767225602004),
        (4, 30, 0.5, 3.0, "a", dt.date(2026, 1, 2), decimal.Decimal("-1.00"), True, 1767225603009),
        (5, 20, 12.0, 4.0, "a", dt.date(2026, 1, 5), decimal.Decimal("0.10"), True, 1767225604016),
        (6, 99, 9.0, None, "c", dt.date(2026, 1, 4), decimal.Decimal("3.00"), False, 1767225605025),
    ]
    spark.createDataFrame(orders, "id long, cust int, amount double, y double, s string, d date, "
                                  "dec decimal(10,2), b boolean, ms long").write.parquet(str(tmp_path / "orders"))
    spark.createDataFrame([(10, "DE"), (20, "US"), (30, None)], "cust int, country string") \
        .write.parquet(str(tmp_path / "customers"))
    return spark.read.parquet(str(tmp_path / "orders")), spark.read.parquet(str(tmp_path / "customers"))


def exact(df, column: str) -> dict:
    """The contract's statistics of one column by plain Spark aggregation, independent of spark-causal."""
    dtype = dict(df.dtypes)[column]
    c = F.col(column)
    aggs = [F.count(F.lit(1)).alias("count"), F.sum(c.isNull().cast("int")).alias("nulls")]
    numeric = dtype in ("int", "bigint", "double", "boolean") or dtype.startswith("decimal")
    if numeric:
        aggs += [F.avg(c.cast("double")).alias("mean"), F.stddev(c.cast("double")).alias("std")]
    if numeric or dtype in ("date", "timestamp"):
        aggs += [F.min(c).cast("string").alias("min"), F.max(c).cast("string").alias("max")]
    row = df.agg(*aggs).collect()[0].asDict()
    out = {"count": row["count"], "nulls": row["nulls"] or 0, "mean": row.get("mean"), "std": row.get("std"),
           "min": row.get("min"), "max": row.get("max"), "top": None}
    for k in ("mean", "std"):
        if out[k] is not None and math.isnan(out[k]):
            out[k] = None
    if dtype in ("string", "boolean"):
        counts = df.groupBy(c.cast("string").alias("v")).count().collect()
        ranked = sorted(((r["v"], r["count"]) for r in counts), key=lambda vc: (-vc[1], vc[0] is None, vc[0] or ""))
        out["top"] = [[v, n] for v, n in ranked[:10]]
    return out


def assert_matches(record: dict, expected: dict) -> None:
    got = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in record.items()}  # parquet: NULL -> NaN
    got["top"] = json.loads(got["top"]) if got["top"] else None
    for key, want in expected.items():
        if isinstance(want, float):
            assert got[key] == pytest.approx(want, rel=1e-12), key
        else:
            assert got[key] == want, (key, got[key], want)


@pytest.mark.parametrize("reread", [False, True], ids=["probes", "reread"])
def test_inline_stats_equal_a_plain_aggregation(spark, tables, tmp_path, monkeypatch, reread):
    """Probes measure small sources; Parquet sources over REREAD_BYTES are read again after the write
    (made 0 here): both give the exact statistics."""
    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1 if reread else 1 << 60)
    orders, customers = tables
    stage = orders.filter(F.col("amount") > 1).join(customers, "cust").withColumn("x", F.col("amount") * 2)
    report = stage.groupBy("country").agg(F.sum("x").alias("total"), F.min("d").alias("first_day"),
                                          F.sum("y").alias("ys"), F.max("s").alias("smax"),
                                          F.sum("dec").alias("decs"), F.count_if("b").alias("nb"),
                                          F.max("ms").alias("last_ms"))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        report.write.parquet(str(tmp_path / "report"))
    assert not cap.errors  # only columns the job reads are measured: the scan reads no more than before
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    for col in ("amount", "y", "s", "d", "dec", "b", "cust", "ms"):  # ms: a large mean against its spread
        assert_matches(stats[f"orders.{col}"], exact(orders, col))
    assert_matches(stats["customers.country"], exact(customers, "country"))
    x = next(s for s in stats.values() if s["column"] == "x" and s["kind"] == "stage")
    assert_matches(x, exact(stage, "x"))
    written = spark.read.parquet(str(tmp_path / "report"))
    for col in ("country", "total", "first_day", "smax", "decs", "nb"):  # nb: never NULL, so no count asked
        assert_matches(stats[f"report.{col}"], exact(written, col))
    y = stats["orders.y"]  # NaN is a value, not a NULL; it makes the mean undefined
    assert y["count"] == 6 and y["nulls"] == 1 and math.isnan(y["mean"])


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "global"])
def test_columns_measured_inside_the_jobs_aggregation_are_exact(spark, tables, tmp_path, monkeypatch, grouped):
    """Where the output's previous run made few groups of many rows, the columns flowing into the job's
    own Aggregate are measured by aggregates added to it, combined over its groups: the same statistics
    as a plain aggregation, the job's rows unchanged. A column whose mean dwarfs its spread (epoch
    milliseconds) cannot be combined exactly: it alone is measured apart."""
    orders, _ = tables
    monkeypatch.setattr(observe_module, "FEW_GROUPS", 1.0)  # 6 rows: 4 groups or 1 are "few" here
    folds, apart = [], []
    real_fold, real_apart = observe_module._Builder.fold, capture_module.Capture._measure_by_extra_pass
    monkeypatch.setattr(observe_module._Builder, "fold", lambda self, p, top, few: folds.append(few) or
                        real_fold(self, p, top, few))
    monkeypatch.setattr(capture_module.Capture, "_measure_by_extra_pass",
                        lambda self, *a, **k: apart.append(1) or real_apart(self, *a, **k))
    stage = (orders.withColumn("x", F.col("amount") * 2).withColumn("flag", F.col("amount") > 6)
             .withColumn("seven", F.lit(7.0) + F.col("id") * 0).withColumn("late", F.date_add("d", 1))
             .withColumn("cents", F.col("dec") * 100)
             .withColumn("gap", F.when(F.col("s") != "a", F.col("amount")))  # no value in group "a"
             .withColumn("vast", F.col("amount") * 1e153))  # its squares overflow: measured apart
    keys = ["s"] if grouped else []
    report = stage.groupBy(*keys).agg(F.sum("x").alias("total"), F.count_if("flag").alias("flags"),
                                      F.max("seven").alias("seven"), F.min("late").alias("late"),
                                      F.sum("cents").alias("cents"), F.sum("gap").alias("gap"),
                                      F.max("vast").alias("vast"))
    store = str(tmp_path / "s")
    for run in ("first", "second"):
        apart.clear()
        with spark_causal.capture(spark, store=store, run=run, sample_size=0) as cap:
            report.write.mode("overwrite").parquet(str(tmp_path / "report"))
        assert not cap.errors and len(apart) == (run == "second" or not grouped)  # "vast", when folded
        shares = Store(store).graph(run).graph["outputs"]["report"]["group_shares"]
        assert list(shares.values()) == [(4 if grouped else 1) / 6]
        stats = {s["column"]: s for s in Store(store).read_parquet(run, "stats.parquet").to_dict("records")
                 if s["kind"] == "stage"}
        for col in ("x", "flag", "seven", "late", "cents", "gap", "vast"):
            assert_matches(stats[col], exact(stage, col))
    assert folds == [not grouped, True]  # a first run has no previous run to size its groups by, but one group is few
    assert sorted(map(repr, spark.read.parquet(str(tmp_path / "report")).collect())) == \
        sorted(map(repr, report.collect()))

    epoch = orders.withColumn("at", F.col("ms") * 1000 + F.col("id")).groupBy(*keys).agg(F.max("at").alias("last"))
    apart.clear()
    for run in ("e1", "e2"):
        with spark_causal.capture(spark, store=store, run=run, sample_size=0) as cap:
            epoch.write.mode("overwrite").parquet(str(tmp_path / "epoch"))
        assert not cap.errors
    assert len(apart) == 1 + (not grouped) and folds[-1] is True  # folded, found inexact, measured apart
    at = next(s for s in Store(store).read_parquet("e2", "stats.parquet").to_dict("records") if s["column"] == "at")
    assert_matches(at, exact(orders.withColumn("at", F.col("ms") * 1000 + F.col("id")), "at"))


def test_capture_does_not_run_the_plan_again_unsampled(spark, tables, tmp_path, monkeypatch):
    """The only extra Spark work of a captured V1 write is the sampled pass: no unsampled provenance, no
    extra statistics job, no count of the driving table. Counted in Spark jobs and in calls."""
    orders, _ = tables
    calls: list = []
    real = sampling.provenance
    monkeypatch.setattr(sampling, "provenance", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(capture_module, "compute_stats", lambda *a, **k: pytest.fail("extra statistics pass"))
    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)  # the sources read again after the write
    job = orders.filter(F.col("amount") > 1).withColumn("x", F.col("amount") * 2).groupBy("s").agg(F.sum("x").alias("t"))
    sc = spark.sparkContext

    def jobs(group: str, block) -> int:
        sc.setJobGroup(group, group)
        try:
            block()
        finally:
            sc.setLocalProperty("spark.jobGroup.id", None)
        return len(sc.statusTracker().getJobIdsForGroup(group))

    plain = jobs("plain", lambda: job.write.parquet(str(tmp_path / "plain")))

    def captured(run: str = "r") -> None:
        with spark_causal.capture(spark, store=str(tmp_path / "s"), run=run, sample_size=3):
            job.write.mode("overwrite").parquet(str(tmp_path / "captured"))

    real_reread = observe_module.Observed.reread

    def reread(self, *a):  # the sources' own statistics, a separate aggregation: its jobs counted apart
        before = sc.getLocalProperty("spark.jobGroup.id")
        sc.setJobGroup("reread", "reread")
        try:
            return real_reread(self, *a)
        finally:
            sc.setJobGroup(before, before)

    monkeypatch.setattr(observe_module.Observed, "reread", reread)
    real_keep = capture_module.Capture._keep_rows

    def keep(self, *a, **k):  # the small output read back (the rows a where slice sums), counted apart
        before = sc.getLocalProperty("spark.jobGroup.id")
        sc.setJobGroup("kept", "kept")
        try:
            return real_keep(self, *a, **k)
        finally:
            sc.setJobGroup(before, before)

    monkeypatch.setattr(capture_module.Capture, "_keep_rows", keep)
    sampled = jobs("captured", captured) - plain
    assert [k["sample_size"] for k in calls] == [3] and 6 not in calls[0]["known"].values()  # sampled first
    assert 2 <= sampled <= 3  # a count of the driving files (their footers), the sampled pass (toPandas)
    assert len(sc.statusTracker().getJobIdsForGroup("reread")) <= 5  # aggregates (2 jobs with AQE), top values (3)
    assert len(sc.statusTracker().getJobIdsForGroup("kept")) == 0  # a local Parquet folder: read by pyarrow
    assert Store(str(tmp_path / "s")).meta("r")["status"] == "succeeded"
    # a later run reads its sources first, their strings counted by the values the first run saw, and
    # the sampled pass takes their row count from there: no count, no grouping of strings
    first_reread = len(sc.statusTracker().getJobIdsForGroup("reread"))
    assert jobs("captured2", lambda: captured("r2")) - plain == 1  # the sampled pass alone
    assert 6 in calls[1]["known"].values()
    assert len(sc.statusTracker().getJobIdsForGroup("reread")) - first_reread <= 2  # aggregates only
    s1, s2 = (Store(str(tmp_path / "s")).read_parquet(r, "stats.parquet").set_index("node") for r in ("r", "r2"))
    assert s2.loc["orders.s", "top"] == s1.loc["orders.s", "top"] and s2.loc["orders.s", "count"] == 6
    first = Store(str(tmp_path / "s")).graph("r").graph["outputs"]["captured"]
    assert first["string_values"] == {"orders.s": ["a", "b", "c"]}  # every value, NULL aside: the hints
    assert Store(str(tmp_path / "s")).graph("r2").graph["segments"][0]["rows"] == 6


def test_a_later_run_counts_the_values_its_previous_run_saw(spark, tmp_path, monkeypatch):
    """A string of 30 values in a source read again. The first run's sample tells its values; every run
    keeps them (``string_values``); the next run counts them one by one in its one aggregation, before
    its sampled pass. A value new in a run is still counted exactly (the counts fall short, the column
    is grouped). After another job's run, which did not read the string, the sample tells them again."""
    from spark_causal import stats as stats_module

    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)
    grouped: list = []
    real = stats_module._top_values
    monkeypatch.setattr(stats_module, "_top_values",
                        lambda rel: grouped.extend(c for _, cols in rel for c in cols) or real(rel))
    store, src = str(tmp_path / "s"), str(tmp_path / "src")  # the same table every run, as a daily job reads it
    for run, n, reads in (("r1", 30, "s"), ("r2", 30, "s"), ("r3", 31, "s"), ("other", 31, "k"), ("r4", 31, "s")):
        spark.range(600).select((F.col("id") % 7).alias("k"), F.when(F.col("id") % 11 == 0, F.lit(None)).otherwise(
            F.concat(F.lit("v"), (F.col("id") % n).cast("string"))).alias("s")).write.mode("overwrite").parquet(src)
        df = spark.read.parquet(src)
        grouped.clear()
        with spark_causal.capture(spark, store=store, run=run, sample_size=600) as cap:
            df.filter(F.col("k") > 0).groupBy(reads).count().write.mode("overwrite").parquet(str(tmp_path / reads))
        assert not cap.errors
        if reads == "k":
            continue
        got = next(r for r in Store(store).read_parquet(run, "stats.parquet").to_dict("records") if r["node"] == "src.s")
        assert_matches(got, exact(df, "s"))
        assert cap.graph.graph["outputs"]["s"]["string_values"]["src.s"] == sorted(f"v{i}" for i in range(n))
        assert cap.graph.graph["segments"][0]["rows"] == 600
        assert grouped == (["s"] if run == "r3" else []), run  # r3's v30 is new to r2's values


def test_a_table_read_twice_counts_each_read_apart(spark, tmp_path, monkeypatch):
    """Two partitions of one table joined (today against yesterday) are two relations with the same
    nodes: a later run, which takes the driving relation's rows from reading the sources again, must
    take today's rows, not yesterday's (helper-26's repro)."""
    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)
    src = str(tmp_path / "src")
    spark.range(4000).select("id", F.when(F.col("id") < 1000, F.lit("y")).otherwise((F.col("id") % 2).cast("string"))
                             .alias("s"), (F.col("id") % 97).cast("double")
                             .alias("amount"), F.when(F.col("id") < 1000, 1).otherwise(2).alias("day")) \
        .write.partitionBy("day").parquet(src)
    for run in ("r1", "r2"):
        with spark_causal.capture(spark, store=str(tmp_path / "s"), run=run, sample_size=300) as cap:
            t = spark.read.parquet(src)
            cur, prev = t.filter("day = 2").select("id", "s", "amount"), t.filter("day = 1").select(
                "id", F.col("amount").alias("prev_amount"), F.col("s").alias("prev_s"))
            cur.join(prev, "id", "left").groupBy("s", "prev_s").agg(F.sum("amount").alias("t"),
                                                                    F.sum("prev_amount").alias("pt")) \
                .write.mode("overwrite").parquet(str(tmp_path / "out"))
        assert not cap.errors
        seg = Store(str(tmp_path / "s")).graph(run).graph["segments"][0]
        assert seg["rows"] == 3000 and 200 < seg["sampled"] < 400, (run, seg["rows"], seg["sampled"])
        # the values that hint the next run are both reads' ("y" only yesterday), as both are read again
        assert cap.graph.graph["outputs"]["out"]["string_values"]["src.s"] == ["0", "1", "y"]


def test_every_value_of_a_string_is_known_up_to_64_null_aside():
    from spark_causal.stats import _every_value

    values = [(f"w{i:02d}", 3) for i in range(64)]
    assert _every_value(values + [(None, 5)], 65) == tuple(v for v, _ in values)  # NULL is no 65th value
    assert _every_value(values + [("x", 1)], 65) is None  # 65 values: too many to hint
    assert _every_value(values[:10], 11) is None  # top values that are not all of them
    assert _every_value([(None, 7)], 1) is None  # no value at all


def test_probes_that_cannot_be_built_leave_the_write_alone(spark, tables, tmp_path, monkeypatch):
    orders, _ = tables
    monkeypatch.setattr(capture_module, "observe", lambda *a, **k: 1 / 0)
    df = orders.withColumn("z", F.col("id") + 1)
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        df.write.parquet(str(tmp_path / "out"))
    written = spark.read.parquet(str(tmp_path / "out"))
    assert written.exceptAll(df).count() == 0 and df.exceptAll(written).count() == 0  # NaN-safe equality
    assert any("inline statistics could not be set up" in e for e in cap.errors)
    stats = {s["node"] for s in cap.stats}  # measured by the extra pass instead
    assert {"out.z", "orders.id"} <= stats
    assert Store(str(tmp_path / "s")).meta("r")["status"] == "incomplete"


def test_reread_top_values_are_exact_and_identifiers_get_none(spark, tmp_path, monkeypatch):
    """Sources read again for their statistics: exact top values (NULL a value), booleans included, and
    a column with more than MAX_TOP_DISTINCT values has none, whether the prefix check or the full
    grouping finds it (the prefix rows made small so both paths run on small data)."""
    from spark_causal import stats as stats_module

    monkeypatch.setattr(stats_module, "_PREFIX_BYTES", -1)  # always check the prefix
    monkeypatch.setattr(stats_module, "_PREFIX_ROWS", 12_000)
    n = 22_000  # 'key': 22,000 values, 12,000 in the prefix; 'late': 12,001 values, 2,001 in the prefix
    # 'late' repeats one value over the first 10,000 rows (a prefix that hides its spread), then is unique
    df = (spark.range(n).repartition(1).sortWithinPartitions("id")
          .withColumn("key", F.concat(F.lit("k"), F.col("id").cast("string")))
          .withColumn("cat", F.when(F.col("id") % 7 == 0, F.lit(None)).otherwise((F.col("id") % 3).cast("string")))
          .withColumn("flag", F.col("id") % 4 == 0)
          .withColumn("late", F.when(F.col("id") < 10_000, F.lit("x")).otherwise(F.col("id").cast("string"))))
    df.write.parquet(str(tmp_path / "t"))
    t = spark.read.parquet(str(tmp_path / "t"))
    got = {s["column"]: s for s in stats_module.compute_stats(
        nx.DiGraph(), [(t, {c: c for c in ("id", "key", "cat", "flag", "late")})], sketches=False)}
    for col in ("cat", "flag"):
        assert json.loads(got[col]["top"]) == exact(t, col)["top"]
    assert stats_module.MAX_TOP_DISTINCT == 10_000
    assert got["key"]["top"] is None and got["late"]["top"] is None
    assert got["id"]["mean"] == pytest.approx((n - 1) / 2) and got["cat"]["nulls"] == n // 7 + 1


@pytest.mark.parametrize("inline", [True, False], ids=["probes", "extra-pass"])
def test_sql_write_stats_are_exact(spark, tables, tmp_path, monkeypatch, inline):
    """A SQL write statement is analysed before it runs and writes its query with probes; when that
    cannot be set up (forced here), it runs as given and one extra query measures sources and output,
    in generated code with exact top values (strings grouped, booleans counted: NULL a value)."""
    if inline:
        monkeypatch.setattr(capture_module.Capture, "_measure_by_extra_pass", lambda *a, **k: pytest.fail("extra pass"))
    else:
        monkeypatch.setattr(capture_module.Capture, "observe_sql", lambda *a, **k: None)
    orders, customers = tables
    orders.createOrReplaceTempView("obs_orders")
    customers.createOrReplaceTempView("obs_customers")
    spark.sql("DROP TABLE IF EXISTS obs_report")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        spark.sql("CREATE TABLE obs_report USING parquet AS SELECT country, s, b, SUM(x) AS total FROM ("
                  "SELECT c.country, o.s, o.b, o.amount * 2 AS x FROM obs_orders o "
                  "JOIN obs_customers c ON o.cust = c.cust WHERE o.amount > 1) GROUP BY country, s, b")
    assert not cap.errors
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    for col in ("amount", "s", "b", "cust"):
        assert_matches(stats[f"orders.{col}"], exact(orders, col))
    assert_matches(stats["customers.country"], exact(customers, "country"))
    stage = orders.filter(F.col("amount") > 1).join(customers, "cust").withColumn("x", F.col("amount") * 2)
    x = next(s for s in stats.values() if s["column"] == "x" and s["kind"] == "stage")
    assert_matches(x, exact(stage, "x"))  # the rows the job computed x for, not every unit
    written = spark.table("obs_report")
    for col in ("country", "s", "b", "total"):
        assert_matches(stats[f"obs_report.{col}"], exact(written, col))
    assert json.loads(stats["orders.b"]["top"]) == [["true", 3], ["false", 2], [None, 1]]
    spark.sql("DROP TABLE obs_report")


@pytest.fixture()
def many(spark, tmp_path):
    """2,000 rows: two few-valued strings (one with NULLs), an identifier string, numbers with NaN and
    NULL, an epoch-ms long (large mean, small spread), a date, a decimal, a boolean."""
    df = spark.range(2000).select(
        F.col("id"),
        F.element_at(F.array(*[F.lit(c) for c in ("EUR", "USD", "GBP")]), (F.col("id") % 3 + 1).cast("int")).alias("cur"),
        F.when(F.col("id") % 7 == 0, None).otherwise(F.when(F.col("id") % 2 == 0, "a").otherwise("b")).alias("kind"),
        F.concat(F.lit("u"), F.col("id").cast("string")).alias("uid"),
        F.when(F.col("id") % 11 == 0, None).when(F.col("id") == 5, float("nan"))
         .otherwise(F.sin(F.col("id")) * 100).alias("x"),
        (F.lit(1767225600000) + F.col("id") % 13).alias("ms"),
        F.date_add(F.lit("2026-01-01"), (F.col("id") % 40).cast("int")).alias("d"),
        (F.col("id") / 8).cast("decimal(12,2)").alias("dec"),
        F.when(F.col("id") % 5 == 0, None).otherwise(F.col("id") % 3 == 0).alias("flag"),
    )
    df.write.parquet(str(tmp_path / "many"))
    return spark.read.parquet(str(tmp_path / "many"))


def test_strings_counted_value_by_value_give_the_same_statistics(spark, many):
    """``compute_stats`` counting the values a sample saw of a string equals the plain aggregation,
    and falls back to grouping when the sample missed a value."""
    from spark_causal import stats as stats_module

    G = nx.DiGraph()
    mapping = {c: f"t.{c}" for c in many.columns}
    seen = {"t.cur": ("EUR", "GBP", "USD"), "t.kind": ("a", "b")}
    got = {s["node"]: s for s in stats_module.compute_stats(G, [(many, mapping)], sketches=False,
                                                            hints=stats_module.SampleHints(values=seen))}
    for col in many.columns:
        want = exact(many, col)
        if col == "uid":
            del want["top"]  # 2,000 values seen once: which ten are the top is a tie
        if col == "x":
            want["std"] = None  # NaN among the values: Spark's stddev is NaN, stored as no value
        assert_matches(got[f"t.{col}"], want)
    missed = stats_module.SampleHints(values={"t.cur": ("EUR", "USD"), "t.kind": ("a", "b")})
    again = {s["node"]: s for s in stats_module.compute_stats(G, [(many, mapping)], sketches=False, hints=missed)}
    assert {n: s for n, s in again.items() if n != "t.uid"} == {n: s for n, s in got.items() if n != "t.uid"}
    empty = many.filter(F.lit(False))
    none = {s["node"]: s for s in stats_module.compute_stats(G, [(empty, mapping)], sketches=False,
                                                             hints=stats_module.SampleHints(values=seen))}
    assert none["t.cur"]["count"] == 0 and none["t.x"]["mean"] is None and none["t.cur"]["top"] == "[]"


def test_few_valued_strings_are_read_from_the_sample(spark, many, tmp_path, monkeypatch):
    """A large Parquet source is read again once, grouped by the strings its sample saw every value of."""
    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)
    seen: list = []
    real = observe_module.compute_stats
    monkeypatch.setattr(observe_module, "compute_stats", lambda *a, **k: seen.append(k["hints"]) or real(*a, **k))
    job = many.filter(F.col("id") > 10).groupBy("cur").agg(F.sum("x").alias("sx"), F.max("uid").alias("mu"))
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=1000) as cap:
        job.write.parquet(str(tmp_path / "out"))
    assert not cap.errors and seen[0].values["many.cur"] == ("EUR", "GBP", "USD")
    assert "many.uid" not in seen[0].values  # every sampled value is unique
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    for col in ("cur", "x", "uid", "id"):
        want = exact(many, col)
        if col == "uid":
            del want["top"]
        assert_matches(stats[f"many.{col}"], {k: v for k, v in want.items() if k != "std" or col != "x"})


@pytest.mark.parametrize("api", ["dataframe", "sql"])
def test_a_source_the_job_appends_to_is_measured_as_read(spark, tables, tmp_path, monkeypatch, api):
    """A large Parquet source is read again after the write, unless the write goes where it is read
    from: then it is probed while the job reads it, so its statistics are of the rows read."""
    monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)
    orders, _ = tables
    folder = tmp_path / "self"
    orders.write.parquet(str(folder))
    spark.sql("DROP TABLE IF EXISTS obs_self")
    spark.sql(f"CREATE TABLE obs_self USING parquet LOCATION '{folder}'")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=100) as cap:
        if api == "dataframe":
            spark.read.parquet(str(folder)).filter(F.col("amount") > 1).write.mode("append").parquet(str(folder))
        else:
            spark.sql("INSERT INTO obs_self SELECT * FROM obs_self WHERE amount > 1")
    assert not cap.errors and spark.read.parquet(str(folder)).count() == 10
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    source = ("self" if api == "dataframe" else "obs_self") + "_input"  # the output keeps the plain name
    assert stats[f"{source}.amount"]["count"] == 6 and cap.graph.graph["segments"][0]["rows"] == 6
    spark.sql("DROP TABLE obs_self")


@pytest.mark.parametrize("shape", ["keyed", "limited", "top", "nothing", "twice"])
def test_each_node_is_measured_over_its_own_rows(spark, tables, tmp_path, monkeypatch, shape):
    """A group key derived in the job is one node with the column before the aggregation: its stats are
    the written rows'. A source under a LIMIT (with a sort or not) is measured over all its rows, not
    the rows the limit pulled; and so is the source of an output that ends up empty (adaptive execution
    drops the branch its probe was in once the first stage has run: the probe reports nothing); and a
    source the plan reads twice, both times read again after the write, has one stats row."""
    orders, _ = tables
    if shape == "twice":
        monkeypatch.setattr(observe_module, "REREAD_BYTES", -1)
    job = {
        "keyed": lambda: orders.withColumn("week", F.date_trunc("week", "d")).groupBy("week").agg(
            F.sum("amount").alias("total")),
        "limited": lambda: orders.limit(2).groupBy("cust").agg(F.sum("amount").alias("total")),
        "top": lambda: orders.orderBy(F.desc("amount")).limit(2).select("id", "amount"),
        "nothing": lambda: orders.filter(F.col("amount") < 0).groupBy("cust").agg(F.sum("amount").alias("total")),
        "twice": lambda: orders.unionByName(orders.limit(2)).groupBy("cust").agg(F.sum("amount").alias("total")),
    }[shape]()
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        job.write.parquet(str(tmp_path / shape))
    assert not cap.errors
    rows = Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")
    stats = {s["node"]: s for s in rows}
    assert len(stats) == len(rows)  # one row per node, though "twice" reads the source twice
    for col in ("amount", "cust", "id", "d"):
        if f"orders.{col}" in stats:
            assert_matches(stats[f"orders.{col}"], exact(orders, col))
    written = spark.read.parquet(str(tmp_path / shape))
    for col in written.columns:
        assert_matches(stats[f"{shape}.{col}"], exact(written, col))
    assert stats["orders.amount"]["count"] == 6


@pytest.mark.parametrize("api", ["dataframe", "sql", "sql_extra_pass"])
def test_union_branches_and_union_columns_are_measured_apart(spark, tables, tmp_path, api):
    """Spark's Union outputs its first child's exprIds: the first branch's source and the union's own
    columns are still different nodes, each measured over its own rows (inline or by the extra pass)."""
    orders, _ = tables
    other = spark.createDataFrame([(7, 10, 2.0), (8, 40, 4.0)], "id long, cust int, amount double")
    other.write.parquet(str(tmp_path / "more"))
    more = spark.read.parquet(str(tmp_path / "more"))
    orders.createOrReplaceTempView("u_orders")
    more.createOrReplaceTempView("u_more")
    query = ("SELECT cust, SUM(amount) AS total FROM (SELECT cust, amount FROM u_orders UNION ALL "
             "SELECT cust, amount FROM u_more) AS u GROUP BY cust")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        if api == "dataframe":
            orders.select("cust", "amount").unionByName(more.select("cust", "amount")).groupBy("cust").agg(
                F.sum("amount").alias("total")).write.parquet(str(tmp_path / "out"))
        elif api == "sql":
            spark.sql(f"INSERT OVERWRITE DIRECTORY '{tmp_path / 'out'}' USING parquet {query}")
        else:  # a parameterised statement is measured after it ran
            spark.sql(f"INSERT OVERWRITE DIRECTORY '{tmp_path / 'out'}' USING parquet {query.replace('SUM(amount)', 'SUM(amount) * :one')}",
                      args={"one": 1})
    assert not cap.errors
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    both = orders.select("cust", "amount").unionByName(more.select("cust", "amount"))
    for source, df in (("orders", orders), ("more", more)):
        for col in ("cust", "amount"):
            assert_matches(stats[f"{source}.{col}"], exact(df, col))
    union = [n for n in cap.graph.nodes if cap.graph.nodes[n].get("subtype") == "union"
             and cap.graph.nodes[n]["column"] == "amount"]
    assert len(union) == 1 and union[0] in stats
    assert_matches(stats[union[0]], exact(both, "amount"))


@pytest.mark.parametrize("how", ["inline", "parameters"])
def test_an_insert_into_a_table_with_rows_measures_the_rows_it_inserted(spark, tables, tmp_path, how):
    """The output's statistics are of the rows the write wrote, however the statement was measured: a
    parameterised INSERT (measured after it ran) must not read the whole table back."""
    orders, _ = tables
    orders.createOrReplaceTempView("ins_orders")
    spark.sql("DROP TABLE IF EXISTS ins_report")
    spark.sql("CREATE TABLE ins_report (cust INT, total DOUBLE) USING parquet")
    spark.sql("INSERT INTO ins_report VALUES (1, 1000.0), (2, NULL)")
    with spark_causal.capture(spark, store=str(tmp_path / "s"), run="r", sample_size=0) as cap:
        if how == "inline":
            spark.sql("INSERT INTO ins_report SELECT cust, SUM(amount) FROM ins_orders GROUP BY cust")
        else:
            spark.sql("INSERT INTO ins_report SELECT cust, SUM(amount) * :one FROM ins_orders GROUP BY cust",
                      args={"one": 1})
    assert not cap.errors and cap.graph.graph["outputs"]["ins_report"]["mode"] == "append"
    stats = {s["node"]: s for s in Store(str(tmp_path / "s")).read_parquet("r", "stats.parquet").to_dict("records")}
    inserted = orders.groupBy("cust").agg(F.sum("amount").alias("total"))
    for col in ("cust", "total"):
        assert_matches(stats[f"ins_report.{col}"], exact(inserted, col))
    spark.sql("DROP TABLE ins_report")


def test_sources_read_only_in_subqueries_are_measured(spark, tables, tmp_path):
    """A threshold from a scalar subquery and an IN (SELECT ...) list: their tables carry no probe, yet
    their columns get exact statistics like any source's."""
    orders, _ = tables
    cfg = spark.createDataFrame([(1.0,), (2.0,)], "th double")
    allowed = spark.createDataFrame([("a",), ("b",), (None,)], "s string")
    cfg.write.parquet(str(tmp_path / "cfg"))
    allowed.write.parquet(str(tmp_path / "allowed"))
    orders.createOrReplaceTempView("sq_orders")
    spark.read.parquet(str(tmp_path / "cfg")).createOrReplaceTempView("sq_cfg")
    spark.read.parquet(str(tmp_path / "allowed")).createOrReplaceTempView("sq_allowed")
    with spark_causal.capture(spark, store=str(tmp_path / "st"), run="r") as cap:
        spark.sql("SELECT s, SUM(amount) AS total FROM sq_orders WHERE amount > (SELECT MIN(th) FROM sq_cfg) "
                  "AND s IN (SELECT s FROM sq_allowed) GROUP BY s").write.parquet(str(tmp_path / "out"))
    assert not cap.errors
    stats = {r["node"]: r for r in Store(str(tmp_path / "st")).read_parquet("r", "stats.parquet").to_dict("records")}
    assert_matches(stats["cfg.th"], exact(cfg, "th"))
    assert_matches(stats["allowed.s"], exact(allowed, "s"))
