"""Cost of capture: wall time captured/plain, driver memory, and rows brought to the driver.

    python jobs/benchmark_capture.py [--rows 10000000 --rows 1000000] [--rounds 3] [--sample-size 20000]
                                     [--api dataframe|sql]

For each data size it generates a pipeline's inputs (a fact table of N orders, two dimension tables)
into a temporary folder, then runs the same job plain and under capture alternately in one Spark
session (so JVM warm-up and machine noise hit both), and prints the median wall-time ratio and the
median ratio of CPU time (Python + Spark JVM), which moves much less on a noisy machine, over the
rounds after the first. The first captured run of an output has no earlier run to size its
aggregations by (``observe.FEW_GROUPS``) and measures their inputs by probes: its ratio is printed apart.
Rows brought to the driver are counted from what capture collects: statistics rows and sampled units.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

import spark_causal
from spark_causal.store import Store


def make_inputs(spark: SparkSession, folder: Path, rows: int) -> None:
    orders = (spark.range(rows).withColumnRenamed("id", "order_id")
              .withColumn("customer_id", (F.rand(1) * 100_000).cast("long"))
              .withColumn("currency", F.element_at(F.array(*[F.lit(c) for c in ("EUR", "USD", "GBP", "JPY")]),
                                                   (F.rand(2) * 4).cast("int") + 1))
              .withColumn("amount", F.round(F.exp(F.randn(3) * 0.8 + 3.5), 2))
              .withColumn("day", F.date_add(F.lit("2026-01-01"), (F.rand(4) * 28).cast("int"))))
    orders.write.mode("overwrite").parquet(str(folder / "orders"))
    customers = (spark.range(100_000).withColumnRenamed("id", "customer_id")
                 .withColumn("country", F.element_at(F.array(*[F.lit(c) for c in ("DE", "US", "UK", "FR")]),
                                                     (F.rand(5) * 4).cast("int") + 1))
                 .withColumn("discount", F.round(F.rand(6) * 0.2, 2)))
    customers.write.mode("overwrite").parquet(str(folder / "customers"))
    spark.createDataFrame([("EUR", 1.08), ("USD", 1.0), ("GBP", 1.27), ("JPY", 0.0067)], "currency string, rate double") \
        .write.mode("overwrite").parquet(str(folder / "fx"))


def job(spark: SparkSession, folder: Path, out: Path) -> None:
    orders = spark.read.parquet(str(folder / "orders"))
    customers = spark.read.parquet(str(folder / "customers"))
    fx = spark.read.parquet(str(folder / "fx"))
    (orders.filter(F.col("amount") > 5).join(fx, "currency").join(customers, "customer_id", "left")
     .withColumn("amount_usd", F.col("amount") * F.col("rate"))
     .withColumn("net_usd", F.col("amount_usd") * (1 - F.coalesce(F.col("discount"), F.lit(0.0))))
     .groupBy("country", "day").agg(F.sum("net_usd").alias("revenue"), F.count(F.lit(1)).alias("orders"))
     .write.mode("overwrite").parquet(str(out)))


_SQL = """SELECT c.country, o.day, SUM(o.amount * f.rate * (1 - COALESCE(c.discount, 0.0))) AS revenue,
       COUNT(*) AS orders
FROM bench_orders o JOIN bench_fx f ON o.currency = f.currency
LEFT JOIN bench_customers c ON o.customer_id = c.customer_id
WHERE o.amount > 5 GROUP BY c.country, o.day"""


def sql_job(spark: SparkSession, folder: Path, out: Path) -> None:
    """The same pipeline as one SQL statement (CTAS): capture measures it after the write."""
    for name in ("orders", "customers", "fx"):
        spark.read.parquet(str(folder / name)).createOrReplaceTempView(f"bench_{name}")
    table = f"bench_{out.name}"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    spark.sql(f"CREATE TABLE {table} USING parquet LOCATION '{out}' AS {_SQL}")


def cpu_seconds(spark: SparkSession) -> float | None:
    """CPU time used so far by this Python process and the Spark JVM (Linux /proc; None elsewhere).

    Wall time on a shared 2-core machine moves by a second between identical runs; the CPU the job
    burns moves much less, so its captured/plain ratio is printed next to the wall-time one.
    """
    try:
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") + own.ru_utime + own.ru_stime


def measure(spark: SparkSession, rows: int, rounds: int, sample_size: int, job=job) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(spark, folder / "in", rows)
        job(spark, folder / "in", folder / "warmup")
        times: dict[str, list[tuple[float, float | None]]] = {"plain": [], "captured": []}
        collected = 0
        for r in range(rounds):
            for kind in ("plain", "captured"):
                t, c = time.perf_counter(), cpu_seconds(spark)
                if kind == "plain":
                    job(spark, folder / "in", folder / f"plain{r}" / "report")
                else:  # the same output name every round, as a daily job's: later runs size by earlier ones
                    with spark_causal.capture(spark, store=str(folder / "store"), run=f"r{r}", sample_size=sample_size):
                        job(spark, folder / "in", folder / f"cap{r}" / "report")
                c2 = cpu_seconds(spark)
                times[kind].append((time.perf_counter() - t, c2 - c if c is not None and c2 is not None else None))
            store = Store(str(folder / "store"))
            collected = len(store.read_parquet(f"r{r}", "stats.parquet"))
            for seg in store.graph(f"r{r}").graph["segments"]:
                collected += len(store.read_parquet(f"r{r}", f"samples/{seg['id']}.parquet"))
    jvm = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    first, pairs = (times["captured"][0], times["plain"][0]), list(zip(times["captured"], times["plain"]))[1:]
    cpu = [c[1] / p[1] for c, p in pairs if c[1] is not None and p[1]]
    return {"rows": rows, "plain_s": statistics.median(p[0] for _, p in pairs),
            "captured_s": statistics.median(c[0] for c, _ in pairs),
            "ratio": statistics.median(c[0] / p[0] for c, p in pairs),
            "cpu_ratio": statistics.median(cpu) if cpu else float("nan"), "first_ratio": first[0][0] / first[1][0],
            "driver_rows": collected, "python_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jvm_used_mb": (jvm.totalMemory() - jvm.freeMemory()) / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--rounds", type=int, default=3, help="2 or more: the first is a first run")
    ap.add_argument("--sample-size", type=int, default=20_000)
    ap.add_argument("--api", choices=("dataframe", "sql"), default="dataframe",
                    help="write with DataFrameWriter (statistics inline) or a SQL CTAS (an extra pass)")
    args = ap.parse_args()
    spark = (SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.driver.memory", "4g").config("spark.sql.shuffle.partitions", "8").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    print(f"{'rows':>12} {'plain s':>9} {'captured s':>11} {'ratio':>6} {'CPU ratio':>10} {'first run':>10} "
          f"{'rows to driver':>15} {'py peak MB':>11} {'JVM used MB':>12}")
    for rows in args.rows or [1_000_000, 10_000_000]:
        m = measure(spark, rows, args.rounds, args.sample_size, job=sql_job if args.api == "sql" else job)
        print(f"{m['rows']:>12,} {m['plain_s']:>9.1f} {m['captured_s']:>11.1f} {m['ratio']:>6.2f} {m['cpu_ratio']:>10.2f} "
              f"{m['first_ratio']:>10.2f} {m['driver_rows']:>15,} {m['python_peak_mb']:>11.0f} {m['jvm_used_mb']:>12.0f}", flush=True)


if __name__ == "__main__":
    main()
