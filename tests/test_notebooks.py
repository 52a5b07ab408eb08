"""Every notebook in notebooks/ runs top to bottom on local Spark, cell by cell, in one namespace.

The notebooks are in Databricks source format (``# Databricks notebook source`` first, cells
separated by ``# COMMAND ----------``, markdown cells made of ``# MAGIC`` lines). Here each code cell
is compiled and executed in-process with the shared ``spark`` session and a ``displayHTML`` that
collects what the notebook shows, as Databricks would provide them; a failing cell fails the test
and names the cell.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
HEADER = "# Databricks notebook source"
SEPARATOR = re.compile(r"^# COMMAND -{10}\s*$", re.M)
MAX_SECONDS = 90  # per notebook once Spark is up: a notebook that takes longer is too slow to try


def parse(path: Path) -> list[tuple[str, str]]:
    """The cells of a Databricks source notebook as (kind, text), kind ``code`` or ``md``."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER + "\n"), f"{path.name} must start with {HEADER!r}"
    cells = []
    for chunk in SEPARATOR.split(text[len(HEADER) + 1:]):
        body = chunk.strip("\n")
        if not body.strip():
            continue
        lines = body.splitlines()
        if all(line.startswith("# MAGIC") for line in lines if line.strip()):
            magic = lines[0][len("# MAGIC"):].strip()
            assert magic.startswith("%md"), f"{path.name}: only %md magic cells are supported, got {magic!r}"
            cells.append(("md", body))
        else:
            assert not any(line.startswith("# MAGIC") for line in lines), \
                f"{path.name}: a cell mixes code and MAGIC lines:\n{body[:200]}"
            cells.append(("code", body))
    return cells


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.py"))


def test_the_notebooks_exist_and_parse():
    names = {p.stem for p in notebook_paths()}
    assert {"quickstart", "fault_localisation", "business_analysis", "what_if", "explore_store"} <= names
    for path in notebook_paths():
        cells = parse(path)
        assert cells[0][0] == "md", f"{path.name} should open with a markdown cell saying what it shows"
        assert sum(kind == "code" for kind, _ in cells) >= 3


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(spark, path, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' scratch folders land in tmp_path
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    shown: list[str] = []
    namespace = {"__name__": "__main__", "spark": spark, "displayHTML": shown.append}
    t0 = time.perf_counter()
    for i, (kind, body) in enumerate(parse(path), start=1):
        if kind != "code":
            continue
        try:
            exec(compile(body, f"{path.name}[cell {i}]", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - report which cell failed, with its source
            pytest.fail(f"{path.name} cell {i} failed: {type(exc).__name__}: {exc}\n--- cell ---\n{body}")
    seconds = time.perf_counter() - t0
    assert shown, f"{path.name} displayed nothing"
    assert all(isinstance(h, str) and h.strip() for h in shown)
    assert any("<img" in h and "data:image/png;base64," in h for h in shown), f"{path.name} showed no picture"
    assert seconds < MAX_SECONDS, f"{path.name} took {seconds:.0f} s"
