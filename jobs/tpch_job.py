"""TPC-H queries 1, 3, 5, 6, 10 and 18 as a plain PySpark job.

Usage::

    python jobs/tpch_job.py DATA_DIR OUT_DIR [QUERY ...]

``DATA_DIR`` holds one Parquet file or folder per TPC-H table, named after the table
(``lineitem.parquet`` or ``lineitem/``), as written by ``tpchgen-cli parquet``. Each
query's result is written to ``OUT_DIR/q<n>`` (Parquet, overwrite). ``QUERY`` is ``q5``
or ``5``; without it every query runs.

The job knows nothing about spark-causal: ``spark-causal capture --store S --run R --
jobs/tpch_job.py DATA OUT q5`` captures it unmodified. The SQL below is the single copy
of the queries; ``tests/tpch.py`` imports it from here.

The SQL is written from the public TPC-H specification (revision 3), with the
specification's default substitution parameters (its "validation" values). Differences
from the spec's text, all harmless for lineage:

* dates are typed ``date`` columns (that is what ``tpchgen-cli`` writes), so date
  literals are ``DATE 'yyyy-mm-dd'`` and intervals are Spark SQL intervals;
* the unnamed ``sum(l_quantity)`` column of Q18 is aliased ``sum_qty`` so that the output
  column has a plain name;
* the row limits of Q3 (10), Q10 (20) and Q18 (100) are in the SQL, as the spec asks.
"""

from __future__ import annotations

import os
import sys

TPCH_TABLES = (
    "lineitem",
    "orders",
    "customer",
    "supplier",
    "nation",
    "region",
    "part",
    "partsupp",
)

# Q18's QUANTITY parameter. The spec's default is 300; at scale factor 0.01 this keeps
# 2 orders, enough to show the IN-subquery at work.
Q18_QUANTITY = 300

TPCH_QUERIES: dict[str, str] = {
    # Pricing Summary Report. DELTA = 90.
    "q1": """
SELECT
    l_returnflag,
    l_linestatus,
    sum(l_quantity) AS sum_qty,
    sum(l_extendedprice) AS sum_base_price,
    sum(l_extendedprice * (1 - l_discount)) AS sum_disc_price,
    sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
    avg(l_quantity) AS avg_qty,
    avg(l_extendedprice) AS avg_price,
    avg(l_discount) AS avg_disc,
    count(*) AS count_order
FROM lineitem
WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY
GROUP BY l_returnflag, l_linestatus
ORDER BY l_returnflag, l_linestatus
""",
    # Shipping Priority. SEGMENT = BUILDING, DATE = 1995-03-15.
    "q3": """
SELECT
    l_orderkey,
    sum(l_extendedprice * (1 - l_discount)) AS revenue,
    o_orderdate,
    o_shippriority
FROM customer, orders, lineitem
WHERE c_mktsegment = 'BUILDING'
  AND c_custkey = o_custkey
  AND l_orderkey = o_orderkey
  AND o_orderdate < DATE '1995-03-15'
  AND l_shipdate > DATE '1995-03-15'
GROUP BY l_orderkey, o_orderdate, o_shippriority
ORDER BY revenue DESC, o_orderdate
LIMIT 10
""",
    # Local Supplier Volume. REGION = ASIA, DATE = 1994-01-01.
    "q5": """
SELECT
    n_name,
    sum(l_extendedprice * (1 - l_discount)) AS revenue
FROM customer, orders, lineitem, supplier, nation, region
WHERE c_custkey = o_custkey
  AND l_orderkey = o_orderkey
  AND l_suppkey = s_suppkey
  AND c_nationkey = s_nationkey
  AND s_nationkey = n_nationkey
  AND n_regionkey = r_regionkey
  AND r_name = 'ASIA'
  AND o_orderdate >= DATE '1994-01-01'
  AND o_orderdate < DATE '1994-01-01' + INTERVAL '1' YEAR
GROUP BY n_name
ORDER BY revenue DESC
""",
    # Forecasting Revenue Change. DATE = 1994-01-01, DISCOUNT = 0.06, QUANTITY = 24.
    "q6": """
SELECT
    sum(l_extendedprice * l_discount) AS revenue
FROM lineitem
WHERE l_shipdate >= DATE '1994-01-01'
  AND l_shipdate < DATE '1994-01-01' + INTERVAL '1' YEAR
  AND l_discount BETWEEN 0.06 - 0.01 AND 0.06 + 0.01
  AND l_quantity < 24
""",
    # Returned Item Reporting. DATE = 1993-10-01.
    "q10": """
SELECT
    c_custkey,
    c_name,
    sum(l_extendedprice * (1 - l_discount)) AS revenue,
    c_acctbal,
    n_name,
    c_address,
    c_phone,
    c_comment
FROM customer, orders, lineitem, nation
WHERE c_custkey = o_custkey
  AND l_orderkey = o_orderkey
  AND o_orderdate >= DATE '1993-10-01'
  AND o_orderdate < DATE '1993-10-01' + INTERVAL '3' MONTH
  AND l_returnflag = 'R'
  AND c_nationkey = n_nationkey
GROUP BY c_custkey, c_name, c_acctbal, c_phone, n_name, c_address, c_comment
ORDER BY revenue DESC
LIMIT 20
""",
    # Large Volume Customer. QUANTITY = 300.
    "q18": f"""
SELECT
    c_name,
    c_custkey,
    o_orderkey,
    o_orderdate,
    o_totalprice,
    sum(l_quantity) AS sum_qty
FROM customer, orders, lineitem
WHERE o_orderkey IN (
        SELECT l_orderkey
        FROM lineitem
        GROUP BY l_orderkey
        HAVING sum(l_quantity) > {Q18_QUANTITY}
    )
  AND c_custkey = o_custkey
  AND o_orderkey = l_orderkey
GROUP BY c_name, c_custkey, o_orderkey, o_orderdate, o_totalprice
ORDER BY o_totalprice DESC, o_orderdate
LIMIT 100
""",
}


def table_paths(data_dir: str) -> dict[str, str]:
    """Map each TPC-H table found in ``data_dir`` to its Parquet file or folder."""
    paths: dict[str, str] = {}
    for table in TPCH_TABLES:
        for name in (table, f"{table}.parquet"):
            path = os.path.join(data_dir, name)
            if os.path.exists(path):
                paths[table] = path
                break
    return paths


def register_views(spark, paths: dict[str, str]) -> None:
    """Read each table's Parquet and register it as a temp view named after the table."""
    for table, path in paths.items():
        spark.read.parquet(str(path)).createOrReplaceTempView(table)


def query_name(arg: str) -> str:
    """``"5"``, ``"q5"`` or ``"Q5"`` -> ``"q5"``; exits with a message on an unknown query."""
    name = arg.lower()
    if not name.startswith("q"):
        name = "q" + name
    if name not in TPCH_QUERIES:
        known = ", ".join(TPCH_QUERIES)
        raise SystemExit(f"tpch_job: unknown query {arg!r}; choose among {known}")
    return name


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    data_dir, out_dir = argv[0], argv[1].rstrip("/")
    names = [query_name(a) for a in argv[2:]] or list(TPCH_QUERIES)

    paths = table_paths(data_dir)
    missing = [t for t in TPCH_TABLES if t not in paths]
    if missing:
        print(f"tpch_job: tables missing in {data_dir}: {', '.join(missing)}", file=sys.stderr)
        return 2

    from pyspark.sql import SparkSession

    spark = SparkSession.builder.appName("tpch").getOrCreate()
    register_views(spark, paths)
    for name in names:
        spark.sql(TPCH_QUERIES[name]).write.mode("overwrite").parquet(f"{out_dir}/{name}")
        print(f"tpch_job: wrote {out_dir}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
