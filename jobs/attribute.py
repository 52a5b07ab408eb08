"""Attribution as a spark-submit job: reads the store through Spark, so it works on HDFS, S3, DBFS, volumes.

    spark-submit jobs/attribute.py --store s3a://bucket/causal --baseline 2026-11-23 --current 2026-11-24 \\
        --target revenue.revenue [--agg sum|count|mean] [--where "country = 'DE'"] [--json FILE] [--html FILE]

It takes exactly the arguments of ``spark-causal attribute``. The session is created first, so the
store's Hadoop paths resolve with the cluster's configuration (credentials, file systems).
"""
import sys

from pyspark.sql import SparkSession

from spark_causal.cli import main

if __name__ == "__main__":
    spark = SparkSession.builder.appName("spark-causal-attribute").getOrCreate()
    try:
        code = main(["attribute", *sys.argv[1:]])
    finally:
        spark.stop()
    sys.exit(code)
