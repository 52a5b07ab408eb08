"""Synthetic inputs for ``example_job.py``, with faults that can be switched on one at a time.

The generator knows nothing about spark-causal: it writes parquet folders that a real job reads.
Faults (each a name with an optional value): ``drift`` (order amounts of one country x1.4),
``mix`` (currency mix shifts to GBP), ``fx`` (one FX rate x100), ``nulls`` (20% of amounts NULL),
``volume`` (30% more orders), ``discount`` (one customer tier's discount raised).

Optional, for benchmarks (defaults keep the original behaviour): ``orphan_rate`` makes that fraction of
orders reference customer ids missing from the customers table (an inner join drops them);
``drift_factor`` is the multiplier of the ``drift`` fault.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

CURRENCIES = ["EUR", "USD", "GBP"]
RATES = {"EUR": 1.08, "USD": 1.0, "GBP": 1.27}
COUNTRIES = ["DE", "US", "UK", "FR"]


def generate(folder: str | Path, *, seed: int, n_orders: int = 20_000, faults: tuple[str, ...] = (),
             orphan_rate: float = 0.0, drift_factor: float = 1.4) -> Path:
    """Write orders/customers/fx under ``folder``; returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    n = int(n_orders * (1.3 if "volume" in faults else 1.0))
    n_customers = 500
    # Dimension tables are the same in every run (as in real life); only the facts are redrawn per seed.
    tiers = np.random.default_rng(12345).choice(["gold", "silver", "bronze"], n_customers, p=[0.2, 0.3, 0.5])
    customers = pd.DataFrame({"customer_id": np.arange(n_customers), "tier": tiers,
                              "discount": np.select([tiers == "gold", tiers == "silver"], [0.10, 0.05], 0.0)})
    if "discount" in faults:
        customers.loc[customers.tier == "silver", "discount"] = 0.25
    p_cur = [0.2, 0.3, 0.5] if "mix" in faults else [0.45, 0.35, 0.2]
    orders = pd.DataFrame({
        "order_id": np.arange(n) + seed * 10_000_000,
        "customer_id": rng.integers(0, n_customers, n),
        "country": rng.choice(COUNTRIES, n, p=[0.3, 0.3, 0.2, 0.2]),
        "currency": rng.choice(CURRENCIES, n, p=p_cur),
        "amount": rng.lognormal(3.5, 0.8, n).round(2),
    })
    if orphan_rate > 0:
        orphans = rng.random(n) < orphan_rate
        orders.loc[orphans, "customer_id"] = n_customers + rng.integers(0, 50, int(orphans.sum()))
    if "drift" in faults:
        de = orders.country == "DE"
        orders.loc[de, "amount"] = (orders.loc[de, "amount"] * drift_factor).round(2)
    if "nulls" in faults:
        orders.loc[rng.random(n) < 0.2, "amount"] = np.nan
    rates = dict(RATES)
    if "fx" in faults:
        rates["GBP"] = rates["GBP"] * 100
    fx = pd.DataFrame({"currency": list(rates), "rate": list(rates.values())})
    for name, frame in (("orders", orders), ("customers", customers), ("fx", fx)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        frame.to_parquet(folder / name / "part-0.parquet", index=False)
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--orders", type=int, default=20_000)
    ap.add_argument("--fault", action="append", default=[])
    a = ap.parse_args()
    print(generate(a.folder, seed=a.seed, n_orders=a.orders, faults=tuple(a.fault)))
