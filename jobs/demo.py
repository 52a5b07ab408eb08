"""The main demo: capture two runs of an example job, the second with a known fault, and explain the change.

    python jobs/demo.py [--fault fx|drift|mix|nulls|volume|discount] [--store DIR] [--keep]

Run 1 (baseline) and run 2 (current) read freshly generated data (different seeds, same
distribution) except for the injected fault. Both runs execute jobs/example_job.py unmodified under
``spark_causal.capture.run_script``, exactly as ``spark-causal capture -- job.py`` would; then the
change of total revenue is attributed and printed.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from example_data import generate  # noqa: E402

from spark_causal import attribute  # noqa: E402
from spark_causal.capture import run_script  # noqa: E402

EXPECTED = {"fx": "fx.rate", "drift": "orders.amount", "mix": "orders.currency", "nulls": "orders.amount",
            "volume": "orders.__rows__", "discount": "customers.discount"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fault", choices=sorted(EXPECTED), default="fx")
    ap.add_argument("--store", help="store folder (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder and print its path")
    args = ap.parse_args()
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master("local[2]").appName("spark-causal-demo")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    tmp = Path(tempfile.mkdtemp(prefix="spark-causal-demo-"))
    store = args.store or str(tmp / "store")
    try:
        t0 = time.perf_counter()
        for run, seed, faults in (("baseline", 1, ()), ("current", 2, (args.fault,))):
            data = generate(tmp / run, seed=seed, n_orders=20_000, faults=faults)
            print(f"capturing run {run!r}{' with fault ' + args.fault if faults else ''} ...", flush=True)
            code = run_script(str(HERE / "example_job.py"), [str(data), str(tmp / f"out-{run}")],
                              store=store, run=run, replace=True)
            if code != 0:
                print(f"the example job failed with exit code {code}", file=sys.stderr)
                return code
        res = attribute(store, "baseline", "current", "revenue.revenue")
        print()
        print(res.to_pandas().to_string(index=False, float_format=lambda x: f"{x:,.1f}"))
        print()
        print(res.summary())
        print(f"(injected fault: {args.fault}, expected cause: {EXPECTED[args.fault]}; "
              f"{time.perf_counter() - t0:.0f} s in all)")
        print(f"\nexplore further: spark-causal attribute --store {store} --baseline baseline --current current "
              f"--target revenue.revenue --html report.html")
    finally:
        if args.keep or args.store:
            print(f"files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
