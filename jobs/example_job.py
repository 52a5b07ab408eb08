"""An ordinary PySpark revenue job: the kind spark-causal captures without any change to it.

    python jobs/example_job.py DATA_DIR OUT_DIR [--min-amount 1.0]

Reads orders, customers and fx rates (parquet folders under DATA_DIR), keeps valid orders, converts
amounts to USD, and writes revenue per country and customer tier to OUT_DIR/revenue.
"""
import argparse

from pyspark.sql import SparkSession
from pyspark.sql import functions as F


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--min-amount", type=float, default=1.0)
    args = ap.parse_args()
    spark = SparkSession.builder.appName("example-revenue-job").getOrCreate()
    orders = spark.read.parquet(f"{args.data}/orders")
    customers = spark.read.parquet(f"{args.data}/customers")
    fx = spark.read.parquet(f"{args.data}/fx")
    revenue = (orders.filter(F.col("amount") >= args.min_amount)
               .join(fx, "currency", "left")
               .join(customers, "customer_id")
               .withColumn("amount_usd", F.col("amount") * F.col("rate"))
               .withColumn("net_usd", F.col("amount_usd") * (1 - F.col("discount")))
               .groupBy("country", "tier")
               .agg(F.sum("net_usd").alias("revenue"), F.count(F.lit(1)).alias("orders")))
    revenue.write.mode("overwrite").parquet(f"{args.out}/revenue")
    spark.stop()


if __name__ == "__main__":
    main()
