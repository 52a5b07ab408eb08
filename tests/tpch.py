"""TPC-H test helpers: tiny data from ``tpchgen-cli`` and the queries of ``jobs/tpch_job.py``.

The SQL has one home, ``jobs/tpch_job.py`` (a plain PySpark job that must run without the
test suite); it is loaded here by path so that tests and job share one copy.

Scale: the default 0.005 (7,500 orders, about 30,000 line items) generates in well under
a second and is the smallest scale at which Q5 (5 nations) and Q18 (2 orders, with the
spec's QUANTITY = 300) still return rows; at 0.002 Q5 and Q18 keep 1 row each, at 0.001
none.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from pathlib import Path

JOB_PATH = Path(__file__).resolve().parent.parent / "jobs" / "tpch_job.py"
DEFAULT_SCALE = 0.005


def _load_job():
    spec = importlib.util.spec_from_file_location("spark_causal_tpch_job", JOB_PATH)
    if spec is None or spec.loader is None:  # pragma: no cover - the file is in the repo
        raise ImportError(f"cannot load {JOB_PATH}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_job = _load_job()
TPCH_QUERIES: dict[str, str] = _job.TPCH_QUERIES
TPCH_TABLES: tuple[str, ...] = _job.TPCH_TABLES
register_views = _job.register_views

_MARKER = "_TPCH_SCALE"


def _paths(folder: Path) -> dict[str, str]:
    return {table: str(folder / f"{table}.parquet") for table in TPCH_TABLES}


def generate_tpch(folder: Path, scale: float = DEFAULT_SCALE) -> dict[str, str]:
    """Write the eight TPC-H tables as ``folder/<table>.parquet`` and return ``{table: path}``.

    Generation is skipped when ``folder`` already holds all tables made at the same
    ``scale`` (a marker file records it), so a shared cache folder costs nothing the
    second time. Files appear atomically: they are generated in a temporary folder next
    to ``folder`` and moved in one by one, the marker last.
    """
    folder = Path(folder)
    paths = _paths(folder)
    marker = folder / _MARKER
    if marker.exists() and marker.read_text().strip() == repr(float(scale)):
        if all(Path(p).exists() for p in paths.values()):
            return paths

    if shutil.which("tpchgen-cli") is None:
        raise RuntimeError("tpchgen-cli not found: pip install tpchgen-cli (or the 'test' extra)")
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".tpchgen-") as tmp:
        subprocess.run(
            [
                "tpchgen-cli",
                "parquet",
                "--scale-factor",
                str(scale),
                "--output-dir",
                tmp,
                "--quiet",
                "--overwrite",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        for table, path in paths.items():
            Path(tmp, f"{table}.parquet").replace(path)
    marker.write_text(repr(float(scale)))
    return paths


__all__ = ["TPCH_QUERIES", "TPCH_TABLES", "DEFAULT_SCALE", "generate_tpch", "register_views"]
